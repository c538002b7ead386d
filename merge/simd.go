package merge

import (
	"math"

	"github.com/wtool/wtool/tensors"
)

// Elementwise kernels on blocks of float64 values, in Go, with AVX-512
// versions (simd_amd64.s) used where the CPU has them. Both compute the same
// float64 operations in the same order, so their results are identical bit
// for bit (simd_test.go).

type keepMagParams struct {
	thr uint64
	cut int64
	lo  int64
	w   float64
}

type keepCrumbsParams struct {
	hk, hc, tk, tc uint64 // the thresholds' keys and cutoffs (as int64)
	lo             int64
	w              float64
}

type rangeParams struct{ lo, width, hi uint64 }

type keepRandParams struct {
	key   uint64
	lo    int64
	dens  float64
	mode  int64 // 0 inverse, 1 l1, 2 none
	scale float64
	w     float64
}

type combineParams struct {
	w0, w1, lambda float64
	norm           int64
	div            float64
}

func b2i(b bool) int64 { return int64(b2u(b)) }

// keepMagnitude writes w (x - b), or +0 w where |x - b| is not among the top
// (see Threshold), for elements lo, lo+1, ...
func keepMagnitude(d, x, b []float64, t Threshold, lo int, w float64) {
	n := 0
	if haveAVX512 {
		if n = len(d) &^ 7; n > 0 {
			keepMagx512(&d[0], &x[0], &b[0], n, &keepMagParams{thr: t.Key, cut: int64(t.Cutoff), lo: int64(lo), w: w})
		}
	}
	keepMagnitudeGo(d[n:], x[n:], b[n:], t, lo+n, w)
}

// keepRandom writes DARE's kept, rescaled and weighted deltas.
func keepRandom(d, x, b []float64, key uint64, lo int, density float64, r Rescale, scale, w float64) {
	n := 0
	if haveAVX512 {
		if n = len(d) &^ 7; n > 0 {
			mode := int64(r)
			if r == RescaleL1 && scale == 0 {
				mode = int64(RescaleNone)
			}
			keepRandx512(&d[0], &x[0], &b[0], n, &keepRandParams{key: key, lo: int64(lo), dens: density, mode: mode, scale: scale, w: w})
		}
	}
	keepRandomGo(d[n:], x[n:], b[n:], key, lo+n, density, r, scale, w)
}

// consensus2 is TIES' sign election for two models (see consensus).
func consensus2(out, d0, d1, b []float64, w0, w1 float64, normalize bool, lambda float64) {
	n := 0
	if haveAVX512 {
		if n = len(out) &^ 7; n > 0 {
			consensus2x512(&out[0], &d0[0], &d1[0], &b[0], n, &combineParams{w0: w0, w1: w1, lambda: lambda, norm: b2i(normalize)})
		}
	}
	consensus2Go(out[n:], d0[n:], d1[n:], b[n:], w0, w1, normalize, lambda)
}

// linear2 is b + lambda (0 + d0 + d1) [/ divisor].
func linear2(out, d0, d1, b []float64, divisor float64, normalize bool, lambda float64) {
	n := 0
	if haveAVX512 {
		if n = len(out) &^ 7; n > 0 {
			linear2x512(&out[0], &d0[0], &d1[0], &b[0], n, &combineParams{lambda: lambda, norm: b2i(normalize), div: divisor})
		}
	}
	d0, d1, b = d0[:len(out)], d1[:len(out)], b[:len(out)]
	for k := n; k < len(out); k++ {
		var mixed float64
		mixed += d0[k]
		mixed += d1[k]
		if normalize {
			mixed /= divisor
		}
		out[k] = b[k] + lambda*mixed
	}
}

// lerp is out = s0 x + s1 y.
func lerp(out, x, y []float64, s0, s1 float64) {
	n := 0
	if haveAVX512 {
		if n = len(out) &^ 7; n > 0 {
			lerpx512(&out[0], &x[0], &y[0], n, s0, s1)
		}
	}
	x, y = x[:len(out)], y[:len(out)]
	for i := n; i < len(out); i++ {
		out[i] = s0*x[i] + s1*y[i]
	}
}

// encodeBF16 rounds float64 values once to bfloat16 (tensors.BF16FromFloat64).
func encodeBF16(dst []byte, src []float64) {
	d := u16(dst)
	n := 0
	if haveAVX512 && d != nil {
		if n = len(src) &^ 7; n > 0 {
			encodeBF16x512(&d[0], &src[0], n)
		}
	}
	for i := n; i < len(src); i++ {
		h := tensors.BF16FromFloat64(src[i])
		dst[2*i], dst[2*i+1] = byte(h), byte(h>>8)
	}
}

// encode64 rounds float64 values once to dt.
func encode64(dst []byte, src []float64, dt tensors.DType) error {
	if dt == tensors.BF16 && len(dst) == 2*len(src) {
		encodeBF16(dst, src)
		return nil
	}
	return tensors.EncodeFloat64(dst, src, dt)
}

// mask64 is all ones when b, else zero (a branch-free select).
func mask64(b bool) uint64 { return -b2u(b) }

// b2u is 1 for true, 0 for false, without a jump.
func b2u(b bool) uint64 {
	var x uint64
	if b {
		x = 1
	}
	return x
}

// keepMagnitude writes w (x - b), or +0 where |x - b| is not among the top
// (see Threshold), for elements lo, lo+1, ...
func keepMagnitudeGo(d, x, b []float64, t Threshold, lo int, w float64) {
	x, b = x[:len(d)], b[:len(d)]
	for k := range d {
		v := x[k] - b[k]
		u := math.Float64bits(v)
		key := u &^ (1 << 63)
		keep := b2u(key > t.Key) | (b2u(key == t.Key) & b2u(lo+k <= t.Cutoff))
		d[k] = math.Float64frombits(u&-keep) * w
	}
}

// keepRandom writes DARE's kept, rescaled and weighted deltas.
func keepRandomGo(d, x, b []float64, key uint64, lo int, density float64, r Rescale, scale, w float64) {
	x, b = x[:len(d)], b[:len(d)]
	for k := range d {
		v := x[k] - b[k]
		keep := Uniform(key, lo+k) < density
		v = math.Float64frombits(math.Float64bits(v) & mask64(keep))
		switch r {
		case RescaleInverse:
			v /= density
		case RescaleL1:
			if scale != 0 {
				v *= scale
			}
		}
		d[k] = v * w
	}
}

// consensus is TIES' sign election: the sign of the sum of the weighted
// deltas (ties count as +), then the sum of the agreeing deltas over the sum
// of their weights (a zero sum counts as 1), added to the base.
func consensus(out []float64, d [][]float64, b, w []float64, normalize bool, lambda float64) {
	n := len(d)
	if n == 2 {
		consensus2(out, d[0], d[1], b, w[0], w[1], normalize, lambda)
		return
	}
	if haveAVX512 {
		if m := len(out) &^ 7; m > 0 {
			var pb [8]*float64
			var tb [8][]float64
			ptrs, tail := pb[:0], tb[:0]
			for i := range d {
				ptrs = append(ptrs, &d[i][0])
				tail = append(tail, d[i][m:])
			}
			consensusNx512(&out[0], &ptrs[0], &w[0], n, &b[0], m, &combineParams{lambda: lambda, norm: b2i(normalize)})
			consensusGo(out[m:], tail, b[m:], w, normalize, lambda)
			return
		}
	}
	consensusGo(out, d, b, w, normalize, lambda)
}

// linearN is b + lambda (0 + d_0 + ... ) [/ divisor] for any number of
// models.
func linearN(out []float64, d [][]float64, b []float64, divisor float64, normalize bool, lambda float64) {
	m := 0
	if haveAVX512 {
		if m = len(out) &^ 7; m > 0 {
			var pb [8]*float64
			ptrs := pb[:0]
			for i := range d {
				ptrs = append(ptrs, &d[i][0])
			}
			linearNx512(&out[0], &ptrs[0], len(d), &b[0], m, &combineParams{lambda: lambda, norm: b2i(normalize), div: divisor})
		}
	}
	for k := m; k < len(out); k++ {
		var mixed float64
		for i := range d {
			mixed += d[i][k]
		}
		if normalize {
			mixed /= divisor
		}
		out[k] = b[k] + lambda*mixed
	}
}

// consensusGo is consensus in Go.
func consensusGo(out []float64, d [][]float64, b, w []float64, normalize bool, lambda float64) {
	n := len(d)
	for k := range out {
		var total float64
		for i := range n {
			total += d[i][k]
		}
		neg := b2u(total < 0)
		var mixed, divisor float64
		for i := range n {
			u := math.Float64bits(d[i][k])
			m := -(b2u(u<<1 != 0) & b2u(u>>63 == neg))
			mixed += math.Float64frombits(u & m)
			divisor += math.Float64frombits(math.Float64bits(w[i]) & m)
		}
		if divisor == 0 {
			divisor = 1
		}
		if normalize {
			mixed /= divisor
		}
		out[k] = b[k] + lambda*mixed
	}
}

// one is the bits of 1.0.
const one = 0x3ff0000000000000

// consensus2 is consensus for two models.
func consensus2Go(out, d0, d1, b []float64, w0, w1 float64, normalize bool, lambda float64) {
	d0, d1, b = d0[:len(out)], d1[:len(out)], b[:len(out)]
	wb0, wb1 := math.Float64bits(w0), math.Float64bits(w1)
	for k := range out {
		x, y := d0[k], d1[k]
		neg := b2u(x+y < 0)
		u, v := math.Float64bits(x), math.Float64bits(y)
		mu := -(b2u(u<<1 != 0) & b2u(u>>63 == neg))
		mv := -(b2u(v<<1 != 0) & b2u(v>>63 == neg))
		mixed := 0 + math.Float64frombits(u&mu) + math.Float64frombits(v&mv)
		divisor := 0 + math.Float64frombits(wb0&mu) + math.Float64frombits(wb1&mv)
		// a zero divisor (never -0: the sum starts at +0) counts as 1
		divisor = math.Float64frombits(math.Float64bits(divisor) | -b2u(divisor == 0)&one)
		if normalize {
			mixed /= divisor
		}
		out[k] = b[k] + lambda*mixed
	}
}

// absSums returns the L1 norms of x - b and of d: eight partial sums (of
// the elements at each position mod 8 of the whole groups of eight), added
// pairwise, then the rest in order, so the AVX-512 kernel gives the same
// bits.
func absSums(x, b, d []float64) (before, after float64) {
	x, b = x[:len(d)], b[:len(d)]
	n := 0
	if haveAVX512 {
		if n = len(d) &^ 7; n > 0 {
			before, after = absSumsx512(&x[0], &b[0], &d[0], n)
		}
	}
	if n == 0 {
		before, after = absSumsGo(x, b, d)
		n = len(d) &^ 7
	}
	for j := n; j < len(d); j++ {
		before += math.Abs(x[j] - b[j])
		after += math.Abs(d[j])
	}
	return before, after
}

// absSumsGo is absSums over the whole groups of eight.
func absSumsGo(x, b, d []float64) (before, after float64) {
	var sb, sa [8]float64
	n := len(d) &^ 7
	x, b = x[:n], b[:n]
	for j := 0; j < n; j += 8 {
		for l := range 8 {
			sb[l] += math.Abs(x[j+l] - b[j+l])
			sa[l] += math.Abs(d[j+l])
		}
	}
	return sum8(&sb), sum8(&sa)
}

// sum8 adds eight partial sums as the kernels do: halves, then quarters,
// then the pair.
func sum8(s *[8]float64) float64 {
	a0, a1, a2, a3 := s[0]+s[4], s[1]+s[5], s[2]+s[6], s[3]+s[7]
	b0, b1 := a0+a2, a1+a3
	return b0 + b1
}

// scaleBy multiplies d by s.
func scaleBy(d []float64, s float64) {
	n := 0
	if haveAVX512 {
		if n = len(d) &^ 7; n > 0 {
			scaleByx512(&d[0], n, s)
		}
	}
	for k := n; k < len(d); k++ {
		d[k] *= s
	}
}
