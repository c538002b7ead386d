package merge

import (
	"math"
	"math/rand/v2"
	"slices"
)

// The whole-tensor implementations wtool had before chunked streaming, kept
// as the reference the streaming kernels are tested against. They compute
// in float64 and return the float64 values before the final rounding (the
// old code rounded them to float32, then to the output dtype).

func legacyLinear(xs [][]float32, weights []float64, normalize bool) []float64 {
	scale := 1.0
	if normalize {
		var sum float64
		for _, w := range weights {
			sum += w
		}
		scale = 1 / sum
	}
	out := make([]float64, len(xs[0]))
	for e := range out {
		var s float64
		for i, x := range xs {
			s += weights[i] * float64(x[e])
		}
		out[e] = s * scale
	}
	return out
}

// legacyTaskVectors is the old TaskVectors for NoSparsify and Magnitude
// (DARE's masks came from a sequential random stream, which chunks cannot
// reproduce; see legacyDARE).
func legacyTaskVectors(base []float32, models [][]float32, o TaskVectorOptions, drop func(i int, d []float64)) []float64 {
	n := len(models)
	lambda := o.Lambda
	if lambda == 0 {
		lambda = 1
	}
	deltas := make([][]float64, n)
	for i, x := range models {
		d := make([]float64, len(base))
		for e := range d {
			d[e] = float64(x[e]) - float64(base[e])
		}
		switch o.Sparsify {
		case Magnitude:
			legacyKeepTopMagnitude(d, o.Densities[i])
		case Random:
			drop(i, d)
		}
		for e := range d {
			d[e] *= o.Weights[i]
		}
		deltas[i] = d
	}
	var wsum float64
	for _, w := range o.Weights {
		wsum += w
	}
	out := make([]float64, len(base))
	for e := range out {
		var mixed, divisor float64
		if o.Consensus {
			var total float64
			for i := range n {
				total += deltas[i][e]
			}
			majority := 1.0
			if total < 0 {
				majority = -1
			}
			for i := range n {
				if d := deltas[i][e]; d != 0 && math.Signbit(d) == (majority < 0) {
					mixed += d
					divisor += o.Weights[i]
				}
			}
			if divisor == 0 {
				divisor = 1
			}
		} else {
			for i := range n {
				mixed += deltas[i][e]
			}
			divisor = wsum
			if math.Abs(divisor) < 1e-8 {
				divisor = 1
			}
		}
		if o.Normalize {
			mixed /= divisor
		}
		out[e] = float64(base[e]) + lambda*mixed
	}
	return out
}

// legacyDARE is the old whole-tensor DARE drop with the new per-element
// masks: d[e] is kept when Uniform(key, e) < density; the L1 sums are taken
// block by block (BlockSize elements), then over the blocks in order.
func legacyDARE(d []float64, density float64, rescale Rescale, key uint64) {
	if density >= 1 {
		return
	}
	var before, after float64
	for lo := 0; lo < len(d); lo += BlockSize {
		var b, a float64
		for i := lo; i < min(lo+BlockSize, len(d)); i++ {
			v := d[i]
			b += math.Abs(v)
			if Uniform(key, i) >= density {
				d[i] = 0
			} else {
				a += math.Abs(v)
			}
		}
		before += b
		after += a
	}
	switch rescale {
	case RescaleInverse:
		for i := range d {
			d[i] /= density
		}
	case RescaleL1:
		if before > 1e-7 && after > 1e-7 {
			s := before / after
			for i := range d {
				d[i] *= s
			}
		}
	}
}

func legacyKeepTopMagnitude(d []float64, density float64) {
	if density >= 1 {
		return
	}
	k := int(density * float64(len(d)))
	if k <= 0 {
		clear(d)
		return
	}
	mags := make([]float64, len(d))
	for i, v := range d {
		mags[i] = math.Abs(v)
	}
	thr := legacyKthLargest(slices.Clone(mags), k)
	above := 0
	for _, m := range mags {
		if m > thr {
			above++
		}
	}
	equalKeep := k - above
	for i, m := range mags {
		switch {
		case m > thr:
		case m == thr && equalKeep > 0:
			equalKeep--
		default:
			d[i] = 0
		}
	}
}

func legacyKthLargest(v []float64, k int) float64 {
	lo, hi := 0, len(v)-1
	target := k - 1
	r := rand.New(rand.NewPCG(uint64(len(v)), uint64(k)))
	for lo < hi {
		p := v[lo+r.IntN(hi-lo+1)]
		i, j := lo, hi
		for i <= j {
			for v[i] > p {
				i++
			}
			for v[j] < p {
				j--
			}
			if i <= j {
				v[i], v[j] = v[j], v[i]
				i++
				j--
			}
		}
		switch {
		case target <= j:
			hi = j
		case target >= i:
			lo = i
		default:
			return v[target]
		}
	}
	return v[target]
}

// legacySlerp sums the norms and the dot product sequentially.
func legacySlerp(a, b []float32, t float64) []float64 {
	var na, nb, dot float64
	for i := range a {
		x, y := float64(a[i]), float64(b[i])
		na += x * x
		nb += y * y
		dot += x * y
	}
	s0, s1 := slerpFactors(na, nb, dot, t)
	out := make([]float64, len(a))
	for i := range out {
		out[i] = s0*float64(a[i]) + s1*float64(b[i])
	}
	return out
}

// legacyFisher is the old fisherMerge.
func legacyFisher(xs, fs [][]float32, weights []float64) []float64 {
	n := len(xs[0])
	var mean float64
	for _, v := range fs {
		for _, x := range v {
			mean += float64(x)
		}
	}
	mean /= float64(n * len(xs))
	floor := 1e-6 * mean
	out := make([]float64, n)
	for e := range out {
		var num, den float64
		for i := range xs {
			f := weights[i] * (max(float64(fs[i][e]), floor) + 1e-30)
			num += f * float64(xs[i][e])
			den += f
		}
		out[e] = num / den
	}
	return out
}
