package merge

import (
	"math"
	"math/bits"
	"math/rand/v2"
	"slices"
	"testing"
)

// dellaRowInputs returns a row of x and b whose deltas mix zeros, repeated
// values, tiny and large magnitudes and both signs.
func dellaRowInputs(r *rand.Rand, m int) (x, b []float64) {
	x, b = make([]float64, m), make([]float64, m)
	for j := range m {
		b[j] = r.NormFloat64()
		switch r.IntN(5) {
		case 0:
			x[j] = b[j] // zero delta
		case 1:
			x[j] = b[j] + 0.25 // repeated magnitude
		case 2:
			x[j] = b[j] + r.NormFloat64()*1e-30
		default:
			x[j] = b[j] + r.NormFloat64()
		}
	}
	return x, b
}

// TestDellaKernelsMatchGo: the AVX-512 kernels of della_kern.go give their
// Go versions' results (on a machine without AVX-512 both are the Go code).
func TestDellaKernelsMatchGo(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, m := range []int{1, 7, 8, 9, 31, 32, 33, 64, 100, 257, 4096} {
		x, b := dellaRowInputs(r, m)
		// keyRange
		top, low := keyRange(x, b)
		t0, l0 := keyRangeGo(x, b)
		if top != t0 || low != l0+1 {
			t.Fatalf("m=%d: keyRange = %#x, %#x; Go %#x, %#x", m, top, low, t0, l0+1)
		}
		// bucketize
		sh, base := uint(40), low>>40-1
		got, want := make([]uint16, m), make([]uint16, m)
		bucketize(got, x, b, sh, base)
		bucketizeGo(want, x, b, sh, base)
		if !slices.Equal(got, want) {
			t.Fatalf("m=%d: bucketize differs", m)
		}
		// decideBits: the buckets' bounds (wide ones: buckets of many
		// ranks, so that many entries are left open)
		nb := (int(slices.Max(want)) + 8) &^ 7
		line := newRankLine(0.5, 0.45, m)
		pk := make([]uint64, nb)
		h0 := make([]int32, nb+1)
		for _, q := range want {
			h0[q]++
		}
		bucketStartsGo(h0, m, line, pk)
		words := (m + 63) / 64
		kb, open, kb0, open0 := make([]uint64, words), make([]uint64, words), make([]uint64, words), make([]uint64, words)
		step := uint64(0x9E3779B97F4A7C15) * uint64(m+2)
		zc := decideBits(kb, open, want, 12345, step, pk, line, 3)
		zc0 := decideBitsGo(kb0, open0, want, 0, 12345, step, pk, line, 3)
		if zc != zc0 || !slices.Equal(kb, kb0) || !slices.Equal(open, open0) {
			t.Fatalf("m=%d: decideBits differs (zeros %d, Go %d)", m, zc, zc0)
		}
		if m >= 257 && (popcount(kb) == 0 || popcount(open) == 0) {
			t.Fatalf("m=%d: %d kept, %d open: the case tests too little", m, popcount(kb), popcount(open))
		}
		// bucketCounts and bucketStarts, with empty buckets first and
		// last; every rank's threshold within its bucket's bounds
		thr := dellaThresholds(0.5, 0.45, m)
		for _, nb := range []int{8, 64, 2048} {
			bq := make([]uint16, m)
			for j := range bq {
				bq[j] = uint16(1 + r.IntN(nb-2))
			}
			h0 := make([]int32, nb+1)
			bucketCounts(h0[:nb], bq)
			g0 := make([]int32, nb+1)
			for _, q := range bq {
				g0[q]++
			}
			if !slices.Equal(h0, g0) {
				t.Fatalf("m=%d nb=%d: bucketCounts differs", m, nb)
			}
			p, p0 := make([]uint64, nb), make([]uint64, nb)
			bucketStarts(h0, m, line, p)
			bucketStartsGo(g0, m, line, p0)
			if !slices.Equal(h0, g0) || !slices.Equal(p, p0) || h0[nb] != int32(m) {
				t.Fatalf("m=%d nb=%d: bucketStarts differs", m, nb)
			}
			for q := range nb {
				for rank := h0[q]; rank < h0[q+1]; rank++ {
					if top := thr[rank] >> 21; top < p[q]&(1<<32-1) || top > p[q]>>32 {
						t.Fatalf("m=%d nb=%d: bucket %d, rank %d: threshold's top bits %d outside [%d, %d]", m, nb, q, rank, top, p[q]&(1<<32-1), p[q]>>32)
					}
				}
			}
		}
		// maskDelta at every bit offset
		bits := make([]uint64, (m+16+63)/64)
		for q := range bits {
			bits[q] = r.Uint64()
		}
		for pos := range 17 {
			for _, ws := range [][2]float64{{1, 1}, {-0.7, 1}, {-0.7, 1.37}} {
				d, d0 := make([]float64, m), make([]float64, m)
				maskDelta(d, x, b, bits, pos, ws[0], ws[1])
				maskDeltaGo(d0, x, b, bits, pos, ws[0], ws[1])
				sameBits(t, "maskDelta", d, d0)
				// scaled in the loop: maskDelta's deltas times s, bit for bit
				maskDelta(d0, x, b, bits, pos, ws[0], 1)
				scaleBy(d0, ws[1])
				sameBits(t, "maskDelta scaled", d, d0)
			}
		}
		// absSumsMasked: absSums of the masked deltas, at offsets of whole
		// bytes of bits
		for _, lo := range []int{0, 8, 16} {
			d := make([]float64, m)
			maskDelta(d, x, b, bits, lo, 1, 1)
			before, after := absSumsMasked(x, b, bits, lo)
			b0, a0 := absSums(x, b, d)
			sameBits(t, "absSumsMasked", []float64{before, after}, []float64{b0, a0})
			if haveAVX512 && m >= 8 {
				g0, g1 := absSumsMaskedGo(x, b, bits, lo)
				w0, w1 := absSumsGo(x, b, d)
				sameBits(t, "absSumsMaskedGo", []float64{g0, g1}, []float64{w0, w1})
			}
		}
		// absSums: the kernel's order, and close to the plain sums
		d := make([]float64, m)
		maskDeltaGo(d, x, b, bits, 3, -0.7, 1)
		before, after := absSums(x, b, d)
		b0, a0 := absSumsGo(x, b, d)
		var pb, pa float64
		for j := range m {
			if j >= m&^7 {
				b0 += math.Abs(x[j] - b[j])
				a0 += math.Abs(d[j])
			}
			pb += math.Abs(x[j] - b[j])
			pa += math.Abs(d[j])
		}
		// scaleBy
		d1, d2 := slices.Clone(d), slices.Clone(d)
		scaleBy(d1, 1.37)
		for k := range d2 {
			d2[k] *= 1.37
		}
		sameBits(t, "scaleBy", d1, d2)
		sameBits(t, "absSums", []float64{before, after}, []float64{b0, a0})
		if math.Abs(before-pb) > 1e-12*pb || math.Abs(after-pa) > 1e-12*pa {
			t.Fatalf("m=%d: absSums = %v, %v; plain sums %v, %v", m, before, after, pb, pa)
		}
		// bucketMembers
		for _, q := range []uint16{0, want[m/2], want[m-1], 65535} {
			var ref []int32
			for j, v := range want {
				if v == q {
					ref = append(ref, int32(j))
				}
			}
			if got := bucketMembers(nil, want, q); !slices.Equal(got, ref) && len(got)+len(ref) > 0 {
				t.Fatalf("m=%d: bucketMembers(%d) = %v, want %v", m, q, got, ref)
			}
		}
	}
}

// TestMagKey: the key is the magnitude's bits, for every sign.
func TestMagKey(t *testing.T) {
	for _, c := range [][2]float64{{1, 3}, {3, 1}, {0, 0}, {-0.0, 0}, {math.Inf(1), 0}} {
		if got, want := magKey(c[0], c[1]), math.Float64bits(math.Abs(c[0]-c[1])); got != want {
			t.Fatalf("magKey(%v, %v) = %#x, want %#x", c[0], c[1], got, want)
		}
	}
}

// TestRankLineBounds: the bounds hold the top 32 bits of every rank's
// exact threshold (the decisions they settle are the thresholds').
func TestRankLineBounds(t *testing.T) {
	for _, c := range []struct {
		d, eps float64
		m      int
	}{{0.5, 0.15, 4096}, {0.5, 0.15, 1}, {0.1, 0.09999, 14336}, {0.9, 0.0999, 3}, {0.3, 1e-9, 128256}, {1e-6, 1e-7, 7}} {
		thr := dellaThresholds(c.d, c.eps, c.m)
		line := newRankLine(c.d, c.eps, c.m)
		for r, th := range thr {
			lo, hi := line.bounds(r)
			if top := th >> 21; lo > top || top > hi || hi-lo > 3 {
				t.Fatalf("d=%g eps=%g m=%d rank %d: bounds [%d, %d], threshold's top bits %d", c.d, c.eps, c.m, r, lo, hi, top)
			}
		}
	}
}

func popcount(w []uint64) (n int) {
	for _, v := range w {
		n += bits.OnesCount64(v)
	}
	return n
}

// BenchmarkDecideBits: decideBits on a row of 14336 entries in 4096
// buckets (an 8B model's down_proj row), 0.5 +/- 0.15.
func BenchmarkDecideBits(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	m, nb := 14336, 4096
	bk := make([]uint16, m)
	h0 := make([]int32, nb+1)
	for j := range bk {
		bk[j] = uint16(1 + r.IntN(nb-1))
		h0[bk[j]]++
	}
	line := newRankLine(0.5, 0.15, m)
	pk := make([]uint64, nb)
	bucketStartsGo(h0, m, line, pk)
	kb, open := make([]uint64, m/64), make([]uint64, m/64)
	for b.Loop() {
		clear(kb)
		clear(open)
		decideBits(kb, open, bk, 1, 3, pk, line, 0)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(m), "ns/elem")
}

// BenchmarkBucketStarts: bucketStarts of 4096 buckets (BenchmarkDecideBits'
// row).
func BenchmarkBucketStarts(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	m, nb := 14336, 4096
	h0 := make([]int32, nb+1)
	for range m {
		h0[1+r.IntN(nb-1)]++
	}
	c0 := slices.Clone(h0)
	line := newRankLine(0.5, 0.15, m)
	pk := make([]uint64, nb)
	for b.Loop() {
		copy(h0, c0)
		bucketStarts(h0, m, line, pk)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(m), "ns/elem")
}
