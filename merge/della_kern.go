package merge

import (
	"math"
	"unsafe"
)

// DELLA's per-row kernels (see dellaTrim.decide), in Go, with AVX-512
// versions (della_amd64.s) used where the CPU has them; both give the same
// results bit for bit (della_kern_test.go).

// magKey is the key decide ranks an entry by: the float64 bits of |x - b|.
func magKey(x, b float64) uint64 { return math.Float64bits(x-b) &^ (1 << 63) }

// keyRange returns the largest key of a row and its smallest non-zero key
// (0 and 0 when every key is zero).
func keyRange(xs, bs []float64) (top, low uint64) {
	bs = bs[:len(xs)]
	n := 0
	lowm1 := ^uint64(0) // min(key - 1): a zero key wraps to the top
	if haveAVX512 {
		if n = len(xs) &^ 7; n > 0 {
			top, lowm1 = keyRangex512(&xs[0], &bs[0], n)
		}
	}
	t, l := keyRangeGo(xs[n:], bs[n:])
	return max(top, t), min(lowm1, l) + 1
}

// keyRangeGo returns the largest key and the smallest key - 1 (wrapping).
func keyRangeGo(xs, bs []float64) (top, lowm1 uint64) {
	bs = bs[:len(xs)]
	// two chains: the extremes do not wait on each other
	var t0, t1 uint64
	u0, u1 := ^uint64(0), ^uint64(0)
	j := 0
	for ; j+2 <= len(xs); j += 2 {
		k0, k1 := magKey(xs[j], bs[j]), magKey(xs[j+1], bs[j+1])
		t0, u0 = max(t0, k0), min(u0, k0-1)
		t1, u1 = max(t1, k1), min(u1, k1-1)
	}
	if j < len(xs) {
		k0 := magKey(xs[j], bs[j])
		t0, u0 = max(t0, k0), min(u0, k0-1)
	}
	return max(t0, t1), min(u0, u1)
}

// bucketize sets bk[j] to entry j's bucket: 0 for a zero key, else
// (key >> sh) - base.
func bucketize(bk []uint16, xs, bs []float64, sh uint, base uint64) {
	bs, bk = bs[:len(xs)], bk[:len(xs)]
	n := 0
	if haveAVX512 {
		if n = len(xs) &^ 7; n > 0 {
			bucketizex512(&bk[0], &xs[0], &bs[0], n, uint64(sh), base)
		}
	}
	bucketizeGo(bk[n:], xs[n:], bs[n:], sh, base)
}

func bucketizeGo(bk []uint16, xs, bs []float64, sh uint, base uint64) {
	bs, bk = bs[:len(xs)], bk[:len(xs)]
	for j := range xs {
		k := magKey(xs[j], bs[j])
		bk[j] = uint16((k>>sh - base) & -b2u(k != 0))
	}
}

// rankLine is a row's keep probability as a line in the rank r,
// a + slope r (dellaProb, up to rounding: bounds only).
type rankLine struct{ a, slope float64 }

func newRankLine(d, eps float64, m int) rankLine {
	if m > 1 {
		return rankLine{d - eps, 2 * eps / float64(m-1)}
	}
	return rankLine{d, 0}
}

// top returns p(r) 2^32, truncated.
func (l rankLine) top(r int) uint64 {
	return uint64(math.FMA(l.slope, float64(r), l.a) * (1 << 32))
}

// bounds returns bounds on the top 32 bits of the threshold of rank r
// (thr[r] >> 21, thr[r] = ceil(p(r) 2^53)): lo <= thr[r] >> 21 <= hi. A
// draw whose top 32 bits N are below lo is kept (n < (N + 1) 2^21 <=
// thr[r]), above hi dropped; in between it is left open. The line's
// rounding moves p(r) 2^32 by far less than the margins of 1 and 2.
func (l rankLine) bounds(r int) (lo, hi uint64) {
	return boundsOf(l.top(r), l.top(r))
}

// boundsOf returns the lo bound of a rank of top tlo and the hi bound of a
// rank of top thi.
func boundsOf(tlo, thi uint64) (lo, hi uint64) {
	return max(tlo, 1) - 1, min(thi+2, 1<<32-1)
}

// decideParams are decideBits' inputs (decideArgs in della_amd64.s).
type decideParams struct {
	ctr, step uint64  // the counter of Uniform's draw of entry 0, and its step per entry
	pk        *uint64 // by bucket: bounds lo | hi << 32 (bucketStarts)
	line      rankLine
	zc        int64 // the rank of the next zero entry
	kb, open  *byte // outputs: a bit per entry
}

// decideBits makes decide's keep decisions from the top 32 bits N of each
// entry's draw (splitmix64(ctr + j step) >> 32): entry j of bucket bk[j] is
// kept when N < lo and dropped when N > hi, with lo and hi the bounds in
// pk[bk[j]] (a bucket's ranks' thresholds lie within them); in between its
// bit in open is set (and its keep bit not). A zero entry (bucket 0) has
// the exact rank zc, the count of zeros before it, and that rank's bounds.
// kb and open must be zero; it returns zc after the row.
func decideBits(kb, open []uint64, bk []uint16, ctr, step uint64, pk []uint64, line rankLine, zc int) int {
	if len(bk) > 0 {
		_, _ = kb[(len(bk)-1)>>6], open[(len(bk)-1)>>6] // the kernel writes up to there
	}
	n := 0
	if haveAVX512 {
		if n = len(bk) &^ 7; n > 0 {
			p := decideParams{ctr: ctr, step: step, pk: &pk[0], line: line, zc: int64(zc),
				kb: (*byte)(unsafe.Pointer(&kb[0])), open: (*byte)(unsafe.Pointer(&open[0]))}
			zc = int(decideBitsx512(&bk[0], n, &p))
		}
	}
	return decideBitsGo(kb, open, bk, n, ctr+uint64(n)*step, step, pk, line, zc)
}

// decideBitsGo is decideBits from entry j0 (draw counter ctr) on, setting
// bits.
func decideBitsGo(kb, open []uint64, bk []uint16, j0 int, ctr, step uint64, pk []uint64, line rankLine, zc int) int {
	for j := j0; j < len(bk); j++ {
		b := bk[j]
		n := splitmix64(ctr) >> 32
		ctr += step
		var lo, hi uint64
		if b == 0 {
			lo, hi = line.bounds(zc)
			zc++
		} else {
			lo, hi = pk[b]&(1<<32-1), pk[b]>>32
		}
		kb[j>>6] |= b2u(n < lo) << (j & 63)
		open[j>>6] |= b2u(n >= lo && n <= hi) << (j & 63)
	}
	return zc
}

// maskDelta writes ((x - b) w) s where bit pos+q of bits is set, else +0
// (a mask, not a branch; s = 1 leaves (x - b) w as it is).
func maskDelta(d, x, b []float64, bits []uint64, pos int, w, s float64) {
	if len(d) == 0 {
		return
	}
	x, b = x[:len(d)], b[:len(d)]
	_ = bits[(pos+len(d)-1)>>6]      // the kernel reads up to there
	head := min(len(d), (8-pos&7)&7) // to a whole byte of bits
	maskDeltaGo(d[:head], x, b, bits, pos, w, s)
	if haveAVX512 {
		if n := (len(d) - head) &^ 7; n > 0 {
			maskDeltax512(&d[head], &x[head], &b[head], n, bitsAt(bits, pos+head), w, s)
			head += n
		}
	}
	maskDeltaGo(d[head:], x[head:], b[head:], bits, pos+head, w, s)
}

func maskDeltaGo(d, x, b []float64, bits []uint64, pos int, w, s float64) {
	x, b = x[:len(d)], b[:len(d)]
	for q := range d {
		keep := bits[(pos+q)>>6] >> ((pos + q) & 63) & 1
		d[q] = math.Float64frombits(math.Float64bits((x[q]-b[q])*w*s) & -keep)
	}
}

// bitsAt points at the byte of bits holding bit e (e a multiple of 8).
func bitsAt(bits []uint64, e int) *byte {
	_ = bits[(e+7)>>6] // bounds
	return (*byte)(unsafe.Add(unsafe.Pointer(&bits[0]), e>>3))
}

// absSumsMasked returns absSums(x, b, d) for d = x - b where bit lo+q of
// bits is set, else +0, without writing d (the L1 pass needs only the
// sums); lo must be a multiple of 8.
func absSumsMasked(x, b []float64, bits []uint64, lo int) (before, after float64) {
	if len(x) == 0 {
		return 0, 0
	}
	b = b[:len(x)]
	_ = bits[(lo+len(x)-1)>>6] // the kernel reads up to there
	n := 0
	if haveAVX512 {
		if n = len(x) &^ 7; n > 0 {
			before, after = absSumsMaskedx512(&x[0], &b[0], n, bitsAt(bits, lo))
		}
	}
	if n == 0 {
		before, after = absSumsMaskedGo(x, b, bits, lo)
		n = len(x) &^ 7
	}
	for j := n; j < len(x); j++ {
		v := math.Abs(x[j] - b[j])
		before += v
		after += math.Float64frombits(math.Float64bits(v) & -(bits[(lo+j)>>6] >> ((lo + j) & 63) & 1))
	}
	return before, after
}

// absSumsMaskedGo is absSumsMasked over the whole groups of eight.
func absSumsMaskedGo(x, b []float64, bits []uint64, lo int) (before, after float64) {
	var sb, sa [8]float64
	n := len(x) &^ 7
	x, b = x[:n], b[:n]
	for j := 0; j < n; j += 8 {
		for l := range 8 {
			e := lo + j + l
			v := math.Abs(x[j+l] - b[j+l])
			sb[l] += v
			sa[l] += math.Float64frombits(math.Float64bits(v) & -(bits[e>>6] >> (e & 63) & 1))
		}
	}
	return sum8(&sb), sum8(&sa)
}

// bucketMembers returns the entries of bucket b, in index order, in out's
// memory (or new memory when out is shorter than bk).
func bucketMembers(out []int32, bk []uint16, b uint16) []int32 {
	if cap(out) < len(bk) {
		out = make([]int32, len(bk))
	}
	out = out[:cap(out)]
	k, n := 0, 0
	if haveAVX512 {
		if n = len(bk) &^ 31; n > 0 {
			k = bucketMembersx512(&out[0], &bk[0], n, b)
		}
	}
	for j := n; j < len(bk); j++ {
		if bk[j] == b {
			out[k] = int32(j)
			k++
		}
	}
	return out[:k]
}

// bucketCounts adds to h (a power of two long) the count of each bucket
// of bk (each below len(h)). The scalar loop is in assembly where the
// AVX-512 kernels are: Go's bounds checks cost it half its speed.
func bucketCounts(h []int32, bk []uint16) {
	n := 0
	if haveAVX512 && len(h)&(len(h)-1) == 0 {
		if n = len(bk) &^ 3; n > 0 {
			bucketCountsx(&h[0], &bk[0], n, uint64(len(h)-1))
		}
	}
	for _, b := range bk[n:] {
		h[b]++
	}
}

// bucketStarts turns the bucket counts h[b] (b < nb = len(pk), a multiple
// of 8) into the buckets' first ranks (h[nb] = the total, the row's
// length m), and sets pk[b] to bounds on the top bits of the thresholds of
// bucket b's ranks [s, e): the lo bound of rank min(s, m-1) in its low 32
// bits and, in its high bits, the hi bound of a rank of top top(min(e,
// m-1)), at least rank e - 1's (top is monotone): each bucket's bounds
// take one top, shared with the next bucket (an empty bucket's are never
// read).
func bucketStarts(h []int32, m int, line rankLine, pk []uint64) {
	nb := len(pk)
	h = h[:nb+1]
	if haveAVX512 && nb > 0 && nb&7 == 0 {
		h[nb] = int32(bucketStartsx512(&h[0], nb, m, &line, &pk[0]))
		return
	}
	bucketStartsGo(h, m, line, pk)
}

func bucketStartsGo(h []int32, m int, line rankLine, pk []uint64) {
	nb, last := len(pk), int32(m-1)
	h = h[:nb+1]
	var s int32
	prev := line.top(0)
	for b := range nb {
		e := s + h[b]
		h[b] = s
		t := line.top(int(min(e, last)))
		lo, hi := boundsOf(prev, t)
		pk[b] = lo | hi<<32
		prev, s = t, e
	}
	h[nb] = s
}
