package merge

import (
	"context"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/wtool/wtool/tensors"
)

// dellaProbsRef is the keep-probability computation DELLA had before the
// argsort (sort the keys, then per entry a binary search plus the ties
// already handed out at that position), kept to check the new one against.
func dellaProbsRef(keys []uint64, d, eps float64) []float64 {
	m := len(keys)
	sorted := slices.Clone(keys)
	slices.Sort(sorted)
	taken := make([]int32, m)
	p := make([]float64, m)
	for j, k := range keys {
		pos, _ := slices.BinarySearch(sorted, k)
		rank := pos + int(taken[pos])
		taken[pos]++
		q := d
		if m > 1 {
			q = d - eps + 2*eps*float64(rank)/float64(m-1)
		}
		p[j] = q
	}
	return p
}

// TestDellaRanksMatchReference: the keep probabilities of rows of seeded
// random task vectors — with many zeros, many ties, bf16-rounded values
// (shared low bytes: radix passes skipped), f32 values, rows of 1, 2 and
// odd lengths, keys that differ only in their lowest bytes — are bit for bit those of the sort-and-search reference.
func TestDellaRanksMatchReference(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	for _, tc := range []struct {
		name string
		m    int
		gen  func() (x, b float64)
	}{
		{"one", 1, func() (float64, float64) { return r.NormFloat64(), r.NormFloat64() }},
		{"two-equal", 2, func() (float64, float64) { return 1, 0.5 }},
		{"f64", 257, func() (float64, float64) { return r.NormFloat64(), r.NormFloat64() }},
		{"f32", 4096, func() (float64, float64) {
			return float64(float32(r.NormFloat64())), float64(float32(r.NormFloat64() * 1e-4))
		}},
		{"bf16", 4096, func() (float64, float64) {
			return float64(tensors.BF16ToFloat32(tensors.BF16FromFloat32(float32(r.NormFloat64())))),
				float64(tensors.BF16ToFloat32(tensors.BF16FromFloat32(float32(r.NormFloat64()))))
		}},
		{"zeros-and-ties", 1000, func() (float64, float64) {
			switch r.IntN(4) {
			case 0:
				return 0.25, 0.25 // zero delta
			case 1:
				return float64(r.IntN(5)), 0 // a few tied magnitudes, both signs below
			case 2:
				return -float64(r.IntN(5)), 0
			}
			return r.NormFloat64(), r.NormFloat64()
		}},
		{"low-bytes", 700, func() (float64, float64) { // keys differing only in their two low bytes, with ties
			return 1 + float64(r.IntN(400))*0x1p-52, 0
		}},
		{"wide-range", 3000, func() (float64, float64) { // keys over 80 binades: below the buckets' 32, many share bucket 0 with zeros
			if r.IntN(5) == 0 {
				return 0, 0
			}
			return math.Ldexp(1+float64(r.IntN(4))/4, -r.IntN(80)), 0
		}},
		{"all-zero", 300, func() (float64, float64) { return 3, 3 }},
		{"all-tied", 300, func() (float64, float64) { return 1, 1 + float64(1-2*r.IntN(2)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, de := range [][2]float64{{0.5, 0.15}, {0.3, 0.29}, {0.9, 0.05}} {
				x, b := make([]float64, tc.m), make([]float64, tc.m)
				for j := range x {
					x[j], b[j] = tc.gen()
				}
				in := func(v []float64) *Input {
					tt, _ := tensors.FromFloat64("w", tensors.F64, []int64{int64(len(v))}, v)
					return &Input{Tensor: "w", DType: tensors.F64, Shape: tt.Shape, Data: tt.Data}
				}
				ins := []*Input{in(x), in(b)}
				tr := &dellaTrim{ins: ins, dens: []float64{de[0]}, eps: []float64{de[1]}, sparse: []bool{true}, rows: dellaRows([]int64{int64(tc.m)}, tc.m), inv: true}
				c := &dellaRow{model: -1}
				if err := tr.row(c, 0, 0, nil, nil); err != nil {
					t.Fatal(err)
				}
				keys := make([]uint64, tc.m)
				for j := range keys {
					keys[j] = math.Float64bits(math.Abs(x[j] - b[j]))
				}
				want := dellaProbsRef(keys, de[0], de[1])
				for j := range want {
					if math.Float64bits(c.p[j]) != math.Float64bits(want[j]) {
						t.Fatalf("density %v: entry %d: p %v, reference %v", de, j, c.p[j], want[j])
					}
				}
				// without inverse rescaling only the keep decisions are
				// computed (decide: buckets, exact ranks where they matter):
				// they are those of the reference ranks, under several keys
				for key := range uint64(4) {
					td := &dellaTrim{ins: ins, keys: []uint64{key * 0x9E3779B97F4A7C15}, dens: tr.dens, eps: tr.eps, sparse: tr.sparse, rows: tr.rows,
						thr: []keepThresholds{newKeepThresholds(de[0], de[1], tc.m)}}
					cd := &dellaRow{model: -1}
					if err := td.row(cd, 0, 0, x, b); err != nil {
						t.Fatal(err)
					}
					for j := range want {
						if k := Uniform(td.keys[0], j) < want[j]; (cd.kbits[j>>6]>>(j&63)&1 == 1) != k {
							t.Fatalf("density %v key %d: entry %d kept %v, reference %v (p %v)", de, key, j, !k, k, want[j])
						}
					}
				}
				// the cache is reused: a second row through the same buffers
				x2 := slices.Clone(x)
				slices.Reverse(x2)
				tr.ins[0] = in(x2)
				c.model = -1 // the cached row is stale
				if err := tr.row(c, 0, 0, nil, nil); err != nil {
					t.Fatal(err)
				}
				for j := range keys {
					keys[j] = math.Float64bits(math.Abs(x2[j] - b[j]))
				}
				want = dellaProbsRef(keys, de[0], de[1])
				for j := range want {
					if math.Float64bits(c.p[j]) != math.Float64bits(want[j]) {
						t.Fatalf("density %v, reused buffers: entry %d: p %v, reference %v", de, j, c.p[j], want[j])
					}
				}
			}
		})
	}
}

// TestDellaTrimMatchesReference: DELLA's trim, called on chunks of random
// sizes that cross row boundaries, of a 2-D tensor (contiguous rows) and a
// 3-D one (rows strided along axis 1), gives bit for bit what the
// reference computes element by element: keep x - b (divided by p with
// inverse rescaling, times the weight) when Uniform(key, e) < p, p from
// the sort-and-search ranks of the element's row.
func TestDellaTrimMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(31, 32))
	for _, shape := range [][]int64{{7, 300}, {4, 50, 3}, {513}} {
		n := 1
		for _, s := range shape {
			n *= int(s)
		}
		mk := func() []float32 {
			v := make([]float32, n)
			for j := range v {
				v[j] = float32(r.IntN(7)) * 0.25 // many ties, zeros against the base
				if r.IntN(3) == 0 {
					v[j] = float32(r.NormFloat64())
				}
			}
			return v
		}
		xv, bv := mk(), mk()
		in := func(v []float32) *Input {
			tt, _ := tensors.FromFloat32("w", tensors.F32, shape, v)
			return &Input{Tensor: "w", DType: tensors.F32, Shape: shape, Data: tt.Data}
		}
		ins := []*Input{in(xv), in(bv)}
		tj := memJob("w", n)
		tj.Shape = shape
		for _, inv := range []bool{false, true} {
			tr0, err := dellaSparsifier{seed: 9, inverse: inv}.prepare(context.Background(), tj, ins, []float64{0.4, 0.2})
			if err != nil {
				t.Fatal(err)
			}
			tr := tr0.(*dellaTrim)
			// the reference, element by element
			rows := tr.rows
			want := make([]float64, n)
			for e := range n {
				row, pos := rows.of(e)
				keys := make([]uint64, rows.length)
				for q := range keys {
					k := rows.start(row) + q*rows.stride
					keys[q] = math.Float64bits(math.Abs(float64(xv[k]) - float64(bv[k])))
				}
				p := dellaProbsRef(keys, 0.4, 0.2)[pos]
				if Uniform(tr.keys[0], e) < p {
					v := float64(xv[e]) - float64(bv[e])
					if inv {
						v /= p
					}
					want[e] = v * 0.7
				}
			}
			x, b := make([]float64, n), make([]float64, n)
			for j := range x {
				x[j], b[j] = float64(xv[j]), float64(bv[j])
			}
			got := make([]float64, n)
			for lo := 0; lo < n; {
				hi := min(n, lo+1+r.IntN(700))
				if !tr.trim(0, got[lo:hi], x[lo:hi], b[lo:hi], lo, 0.7) {
					t.Fatal("trim did nothing")
				}
				lo = hi
			}
			for e := range want {
				if math.Float64bits(got[e]) != math.Float64bits(want[e]) {
					t.Fatalf("shape %v inverse %v: element %d: %v, reference %v", shape, inv, e, got[e], want[e])
				}
			}
		}
	}
}

// TestDellaRecordedKeepsReplay: with rescale l1 the L1 pass records DELLA's
// keep decisions and the merge pass replays them; the merged tensor is bit
// for bit the one computed deciding twice (no room to record), for a 2-D
// tensor whose rows do not fill whole words, a 3-D one (strided rows) and a
// 1-D one longer than a block, written in chunks at odd offsets.
func TestDellaRecordedKeepsReplay(t *testing.T) {
	r := rand.New(rand.NewPCG(41, 42))
	for _, shape := range [][]int64{{7, 300}, {4, 50, 3}, {9001}} {
		n := 1
		for _, s := range shape {
			n *= int(s)
		}
		mk := func() *Input {
			v := make([]float32, n)
			for j := range v {
				v[j] = float32(r.IntN(7)) * 0.25
				if r.IntN(3) == 0 {
					v[j] = float32(r.NormFloat64())
				}
			}
			tt, _ := tensors.FromFloat32("w", tensors.F32, shape, v)
			return &Input{Tensor: "w", DType: tensors.F32, Shape: shape, Data: tt.Data}
		}
		ms, base := []*Input{mk(), mk()}, mk()
		var outs [2][]byte
		for run, mem := range []int64{1 << 30, 1} {
			tj := memJob("w", n)
			tj.Shape = shape
			tj.Job.MaxMemory = mem
			k, err := taskVectorKernel(context.Background(), tj, ms, base, TaskVectorOptions{Weights: []float64{0.6, 0.9},
				Densities: []float64{0.4, 0.2, 0.6, 0.1}, Sparsify: Magnitude, Rescale: RescaleL1, Consensus: true, Normalize: true,
				sparsifier: dellaSparsifier{seed: 3}}, 1)
			if err != nil {
				t.Fatal(err)
			}
			if recorded := k.Done != nil; recorded != (run == 0) {
				t.Fatalf("shape %v, budget %d: recorded %v", shape, mem, recorded)
			}
			out := make([]byte, 4*n)
			for lo := 0; lo < n; {
				hi := min(n, lo+1+r.IntN(3000))
				if err := elementwise(context.Background(), k, lo, hi-lo, tensors.F32, out[4*lo:4*hi], nil); err != nil {
					t.Fatal(err)
				}
				lo = hi
			}
			if k.Done != nil {
				k.Done()
			}
			if b := tj.Job.keepBytes.Load(); b != 0 {
				t.Errorf("shape %v: %d bytes of recorded decisions still reserved", shape, b)
			}
			outs[run] = out
		}
		if !slices.Equal(outs[0], outs[1]) {
			t.Errorf("shape %v: replayed decisions merge differently", shape)
		}
	}
}

// TestOrBits: orBits sets exactly the bits of the source range, for
// ranges at every alignment of source and destination, next to ranges
// already written (sharing words at their edges).
func TestOrBits(t *testing.T) {
	r := rand.New(rand.NewPCG(51, 52))
	for range 500 {
		n := 300
		want := make([]bool, n)
		dst := make([]uint64, (n+63)/64)
		e := r.IntN(40)
		for range 3 {
			src := make([]uint64, 5)
			for w := range src {
				src[w] = r.Uint64()
			}
			pos := r.IntN(100)
			e += r.IntN(40)
			if r.IntN(2) == 0 { // word starts: the whole words copied
				pos &^= 63
				e = (e + 63) &^ 63
			}
			if e >= n {
				break
			}
			c := r.IntN(min(n-e, 5*64-pos) + 1)
			for q := range c {
				if src[(pos+q)>>6]>>((pos+q)&63)&1 == 1 {
					want[e+q] = true
				}
			}
			orBits(dst, e, src, pos, c)
			e += c // ranges do not overlap (orBits' contract)
		}
		for e, w := range want {
			if got := dst[e>>6]>>(e&63)&1 == 1; got != w {
				t.Fatalf("bit %d: %v, want %v", e, got, w)
			}
		}
	}
}

// TestOffHeapWords: the words are zeroed, writable, sized as asked; free
// is idempotent.
func TestOffHeapWords(t *testing.T) {
	w, free, err := offHeapWords(1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(w) != 1000 || w[0] != 0 || w[999] != 0 {
		t.Fatalf("len %d, ends %d %d", len(w), w[0], w[999])
	}
	w[999] = 7
	free()
	free()
	if w, free, err := offHeapWords(0); err != nil || w != nil {
		t.Fatalf("zero words: %v %v", w, err)
	} else {
		free()
	}
}

// TestDellaNonFiniteBase: a NaN in the base is an error, never a fault in
// the middle of a pass, whether rows fit in blocks (found by the passes'
// own decoding) or reach beyond them (the base is then checked up front,
// with the hashes), with and without inverse rescaling.
func TestDellaNonFiniteBase(t *testing.T) {
	for _, shape := range [][]int64{{4, 1024}, {2, 5000}, {3, 7, 5}} {
		n := int(shape[0] * shape[1])
		if len(shape) == 3 {
			n *= int(shape[2])
		}
		mk := func(nan int) *Input {
			v := make([]float32, n)
			for j := range v {
				v[j] = float32(j%13) * 0.1
			}
			if nan >= 0 {
				v[nan] = float32(math.NaN())
			}
			tt, _ := tensors.FromFloat32("w", tensors.F32, shape, v)
			return &Input{Tensor: "w", DType: tensors.F32, Shape: shape, Data: tt.Data}
		}
		// L1 rescaling with its decisions recorded (recordBlock returns
		// the error) or not (a budget too small: checkInputs), inverse
		// rescaling, none
		for _, c := range []struct {
			r   Rescale
			mem int64
		}{{RescaleL1, 1 << 30}, {RescaleL1, 1}, {RescaleInverse, 1 << 30}, {RescaleNone, 1 << 30}} {
			tj := memJob("w", n)
			tj.Shape = shape
			tj.Job.MaxMemory = c.mem
			o := TaskVectorOptions{Weights: []float64{1, 1}, Densities: []float64{0.5, 0.1, 0.5, 0.1}, Sparsify: Magnitude,
				Rescale: c.r, Consensus: true, Normalize: true, sparsifier: dellaSparsifier{seed: 1, inverse: c.r == RescaleInverse}}
			k, err := taskVectorKernel(context.Background(), tj, []*Input{mk(-1), mk(-1)}, mk(n-3), o, 1)
			if err == nil {
				out := make([]byte, 4*n)
				err = elementwise(context.Background(), k, 0, n, tensors.F32, out, nil)
			}
			if err == nil || !strings.Contains(err.Error(), "non-finite") {
				t.Errorf("shape %v rescale %v budget %d: %v, want a non-finite error", shape, c.r, c.mem, err)
			}
		}
	}
}

// TestSampledHashes: the hash of an input follows its values, not its
// position among the inputs nor its dtype, and changes with a value in a
// sampled block; on a tensor of 100 blocks it reads a sample (every third
// block), not the tensor.
func TestSampledHashes(t *testing.T) {
	const n = 100*BlockSize + 17
	mk := func(dt tensors.DType, seed uint64, change int) *Input {
		r := rand.New(rand.NewPCG(seed, 1))
		v := make([]float32, n)
		for j := range v {
			v[j] = float32(r.IntN(50)) * 0.5
		}
		if change >= 0 {
			v[change] += 1
		}
		tt, err := tensors.FromFloat32("w", dt, []int64{n}, v)
		if err != nil {
			t.Fatal(err)
		}
		return &Input{Tensor: "w", DType: dt, Shape: tt.Shape, Data: tt.Data}
	}
	tj := memJob("w", n)
	a, b := mk(tensors.F32, 1, -1), mk(tensors.F32, 2, -1)
	before := processed.Load()
	h1, err := sampledHashes(context.Background(), tj, []*Input{a, b})
	if err != nil {
		t.Fatal(err)
	}
	if read := processed.Load() - before; read > 40*BlockSize {
		t.Errorf("read %d elements for two inputs of %d: not a sample", read, n)
	}
	h2, _ := sampledHashes(context.Background(), tj, []*Input{b, mk(tensors.BF16, 1, -1)})
	if h1[0] == h1[1] || h2[0] != h1[1] || h2[1] != h1[0] {
		t.Errorf("hashes %x then %x: want them to follow the values", h1, h2)
	}
	h3, _ := sampledHashes(context.Background(), tj, []*Input{mk(tensors.F32, 1, 3*BlockSize+5)})
	if h3[0] == h1[0] {
		t.Error("a changed value in a sampled block leaves the hash unchanged")
	}
}
