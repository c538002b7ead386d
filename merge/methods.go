// Package merge merges model checkpoints: the per-tensor methods of
// mergekit's family (linear, task arithmetic, TIES, DARE, SLERP), merges that
// align hidden units first (weight matching, MergeMany), PLeaS (permutations,
// then a closed-form least-squares refit, to any width between n and 2n),
// Fisher-weighted averaging and RegMean; a Plan that describes a merge (built
// from flags or from a mergekit-style YAML file) and Execute, which streams
// it over checkpoints one tensor at a time.
//
// The per-tensor methods are plain functions on float32 slices, computed in
// float64 per element, so other Go programs can call them on their own
// tensors.
package merge

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
)

func checkLens(dst []float32, xs ...[]float32) error {
	for i, x := range xs {
		if len(x) != len(dst) {
			return fmt.Errorf("tensor %d has %d values, want %d", i, len(x), len(dst))
		}
	}
	return nil
}

// Linear writes the weighted average sum_i w_i x_i / sum_i w_i of the tensors
// xs into dst (with normalize false, the plain weighted sum). Weights summing
// to (almost) zero are an error when normalizing.
func Linear(dst []float32, xs [][]float32, weights []float64, normalize bool) error {
	if len(xs) == 0 || len(xs) != len(weights) {
		return fmt.Errorf("linear: %d tensors, %d weights", len(xs), len(weights))
	}
	if err := checkLens(dst, xs...); err != nil {
		return err
	}
	scale := 1.0
	if normalize {
		var sum float64
		for _, w := range weights {
			sum += w
		}
		if math.Abs(sum) < 1e-12 {
			return errors.New("linear: the weights sum to zero")
		}
		scale = 1 / sum
	}
	for e := range dst {
		var s float64
		for i, x := range xs {
			s += weights[i] * float64(x[e])
		}
		dst[e] = float32(s * scale)
	}
	return nil
}

// Sparsify is how a task vector is thinned before merging.
type Sparsify int

// Sparsification methods.
const (
	NoSparsify Sparsify = iota
	Magnitude           // keep the int(density*n) largest magnitudes (TIES)
	Random              // keep each entry with probability density (DARE)
)

// Rescale is how kept entries of a randomly sparsified task vector are
// scaled.
type Rescale int

// Rescaling rules for DARE.
const (
	// RescaleInverse divides kept entries by the density, as in the DARE
	// paper: the expected task vector is unchanged.
	RescaleInverse Rescale = iota
	// RescaleL1 scales the kept entries so that the task vector keeps its L1
	// norm, as mergekit does today.
	RescaleL1
	// RescaleNone keeps kept entries as they are.
	RescaleNone
)

// TaskVectorOptions describe a task-vector merge: with d_i = x_i - base,
// each d_i is optionally sparsified, weighted by w_i, optionally filtered by
// sign election (TIES), summed, optionally normalized by the weights, scaled
// by Lambda and added to the base.
type TaskVectorOptions struct {
	Weights   []float64 // per model
	Densities []float64 // per model, for sparsification (1 keeps everything)
	Sparsify  Sparsify
	Rescale   Rescale // for Random sparsification
	// Consensus elects a sign per entry by the sign of the sum of the
	// weighted (sparsified) task vectors, ties counting as positive, and
	// keeps only the entries that agree (TIES).
	Consensus bool
	// Normalize divides the merged task vector by the sum of the weights
	// (with Consensus: of the weights of the agreeing entries; a zero sum
	// counts as 1).
	Normalize bool
	Lambda    float64 // 0 means 1
	// RNGs give the random streams of Random sparsification, one per model,
	// so that a model's mask does not depend on the other models or their
	// order.
	RNGs []*rand.Rand
}

// TaskVectors merges models into dst relative to base (mergekit's
// generalized task arithmetic; see TaskVectorOptions).
func TaskVectors(dst, base []float32, models [][]float32, o TaskVectorOptions) error {
	n := len(models)
	if n == 0 {
		copy(dst, base)
		return nil
	}
	if len(o.Weights) != n {
		return fmt.Errorf("%d models, %d weights", n, len(o.Weights))
	}
	if o.Sparsify != NoSparsify && len(o.Densities) != n {
		return fmt.Errorf("%d models, %d densities", n, len(o.Densities))
	}
	if err := checkLens(dst, append([][]float32{base}, models...)...); err != nil {
		return err
	}
	lambda := o.Lambda
	if lambda == 0 {
		lambda = 1
	}
	// weighted, sparsified deltas
	deltas := make([][]float64, n)
	for i, x := range models {
		d := make([]float64, len(dst))
		for e := range d {
			d[e] = float64(x[e]) - float64(base[e])
		}
		switch o.Sparsify {
		case Magnitude:
			if err := keepTopMagnitude(d, o.Densities[i]); err != nil {
				return fmt.Errorf("model %d: %w", i, err)
			}
		case Random:
			if len(o.RNGs) != n {
				return fmt.Errorf("random sparsification needs one random stream per model")
			}
			if err := dropRandom(d, o.Densities[i], o.Rescale, o.RNGs[i]); err != nil {
				return fmt.Errorf("model %d: %w", i, err)
			}
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
	for e := range dst {
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
		dst[e] = float32(float64(base[e]) + lambda*mixed)
	}
	return nil
}

// keepTopMagnitude zeroes all but the int(density*len) entries of largest
// magnitude (ties broken by position, first kept).
func keepTopMagnitude(d []float64, density float64) error {
	if density >= 1 {
		return nil
	}
	if density < 0 || math.IsNaN(density) {
		return fmt.Errorf("density %g", density)
	}
	k := int(density * float64(len(d)))
	if k <= 0 {
		clear(d)
		return nil
	}
	mags := make([]float64, len(d))
	for i, v := range d {
		mags[i] = math.Abs(v)
	}
	thr := kthLargest(slices.Clone(mags), k)
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
	return nil
}

// kthLargest returns the k-th largest value of v (1-based), reordering v.
func kthLargest(v []float64, k int) float64 {
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

// dropRandom keeps each entry with probability density and rescales.
func dropRandom(d []float64, density float64, rescale Rescale, r *rand.Rand) error {
	if density >= 1 {
		return nil
	}
	if density <= 0 || math.IsNaN(density) {
		return fmt.Errorf("DARE density %g must be in (0, 1]", density)
	}
	var before, after float64
	for i, v := range d {
		before += math.Abs(v)
		if r.Float64() >= density {
			d[i] = 0
		} else {
			after += math.Abs(v)
		}
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
	return nil
}

// SlerpThreshold is the |cos| above which Slerp falls back to linear
// interpolation (mergekit's DOT_THRESHOLD).
const SlerpThreshold = 0.9995

// Slerp writes the spherical interpolation of a and b at t into dst, treating
// each tensor as one vector: with theta the angle between them,
// sin((1-t) theta)/sin(theta) a + sin(t theta)/sin(theta) b, or the linear
// interpolation (1-t) a + t b when they are nearly parallel (|cos theta| >
// SlerpThreshold). t = 0 gives a, t = 1 gives b.
func Slerp(dst, a, b []float32, t float64) error {
	if err := checkLens(dst, a, b); err != nil {
		return err
	}
	var na, nb, dot float64
	for i := range a {
		x, y := float64(a[i]), float64(b[i])
		na += x * x
		nb += y * y
		dot += x * y
	}
	na, nb = math.Sqrt(na), math.Sqrt(nb)
	// mergekit normalises each vector when its norm exceeds 1e-8
	if na > 1e-8 {
		dot /= na
	}
	if nb > 1e-8 {
		dot /= nb
	}
	s0, s1 := 1-t, t
	if math.Abs(dot) <= SlerpThreshold {
		theta := math.Acos(dot)
		sin := math.Sin(theta)
		s0 = math.Sin(theta-theta*t) / sin
		s1 = math.Sin(theta*t) / sin
	}
	for i := range dst {
		dst[i] = float32(s0*float64(a[i]) + s1*float64(b[i]))
	}
	return nil
}
