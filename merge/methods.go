// Package merge merges model checkpoints: the per-tensor methods of
// mergekit's family (linear, task arithmetic, TIES, DARE, SLERP), merges that
// align hidden units first (weight matching, MergeMany), PLeaS (permutations,
// then a closed-form least-squares refit, to any width between n and 2n),
// Fisher-weighted averaging and RegMean.
//
// Each method is a Method in a file of its own, registered by name, with a
// parameter schema (names, types, defaults, per-model or global) from which
// the command line's flags and the YAML configuration's keys are decoded. A
// Plan describes a merge (built from flags or from a mergekit-style YAML
// file) and Execute streams it over checkpoints: every tensor is computed
// chunk by chunk into the writer's buffers, and what needs the whole tensor
// (SLERP's angle, TIES' magnitude threshold, DARE's L1 norm, a Fisher
// floor) comes from extra streaming passes over the mapped inputs, so
// memory stays bounded whatever the size of the model or of its tensors.
//
// The per-tensor methods are also plain functions on float32 slices
// (Linear, TaskVectors, Slerp), computed in float64 per element by the same
// kernels, so other Go programs can call them on their own tensors.
package merge

import (
	"context"
	"errors"
	"fmt"
	"math"
)

// Linear writes the weighted average sum_i w_i x_i / sum_i w_i of the tensors
// xs into dst (with normalize false, the plain weighted sum). Weights summing
// to zero are an error when normalizing.
func Linear(dst []float32, xs [][]float32, weights []float64, normalize bool) error {
	if len(xs) == 0 || len(xs) != len(weights) {
		return fmt.Errorf("linear: %d tensors, %d weights", len(xs), len(weights))
	}
	var ins []*Input
	for i, x := range xs {
		if len(x) != len(dst) {
			return fmt.Errorf("tensor %d has %d values, want %d", i, len(x), len(dst))
		}
		ins = append(ins, memInput("", x))
	}
	ws, scale, err := linearScale(weights, normalize)
	if err != nil {
		return fmt.Errorf("linear: %w", err)
	}
	return runWhole(context.Background(), &Kernel{Inputs: ins, Fn: linearFn(ws, scale)}, len(dst), dst)
}

// linearFn is the weighted average sum_i w_i x_i * scale, in float64.
func linearFn(w []float64, scale float64) func(lo int, in [][]float64, out []float64) {
	return func(_ int, in [][]float64, out []float64) {
		for k := range out {
			var s float64
			for i, x := range in {
				s += w[i] * x[k]
			}
			out[k] = s * scale
		}
	}
}

// errZeroWeights reports weights whose sum vanishes.
var errZeroWeights = errors.New("the weights sum to zero, so their normalized average is undefined (give other weights, or do not normalize)")

// linearScale returns the weights and the factor that normalizes them:
// sum_i w_i x_i * scale is the weighted average. When the sum of the
// weights overflows (1e308 + 1e308), the weights are first divided by the
// largest magnitude, which changes nothing else. A sum that is zero, or
// vanishes against the weights' magnitudes (1 + -1), is an error; tiny
// weights (1e-45 each) are fine.
func linearScale(weights []float64, normalize bool) ([]float64, float64, error) {
	if !normalize {
		return weights, 1, nil
	}
	var sum, abs, big float64
	for _, w := range weights {
		sum += w
		abs += math.Abs(w)
		big = max(big, math.Abs(w))
	}
	if math.IsInf(sum, 0) || math.IsInf(abs, 0) {
		scaled := make([]float64, len(weights))
		sum, abs = 0, 0
		for i, w := range weights {
			scaled[i] = w / big
			sum += scaled[i]
			abs += math.Abs(scaled[i])
		}
		weights = scaled
	}
	if sum == 0 || math.Abs(sum) <= 1e-12*abs || math.IsNaN(sum) {
		return nil, 0, errZeroWeights
	}
	return weights, 1 / sum, nil
}

// SlerpThreshold is the |cos| above which Slerp falls back to linear
// interpolation (mergekit's DOT_THRESHOLD).
const SlerpThreshold = 0.9995

// Slerp writes the spherical interpolation of a and b at t into dst, treating
// each tensor as one vector: with theta the angle between them,
// sin((1-t) theta)/sin(theta) a + sin(t theta)/sin(theta) b, or the linear
// interpolation (1-t) a + t b when they are nearly parallel (|cos theta| >
// SlerpThreshold). t = 0 gives a, t = 1 gives b. The norms and the dot
// product are float64 sums taken block by block (BlockSize elements) and
// then over the blocks in order, exactly as Execute's streaming pass takes
// them.
func Slerp(dst, a, b []float32, t float64) error {
	if len(a) != len(dst) || len(b) != len(dst) {
		return fmt.Errorf("slerp: %d, %d and %d values", len(dst), len(a), len(b))
	}
	tj := memJob("", len(dst))
	k, err := slerpKernel(context.Background(), tj, memInput("", a), memInput("", b), t)
	if err != nil {
		return err
	}
	return runWhole(context.Background(), k, len(dst), dst)
}

// slerpKernel computes a and b's norms and dot product in one pass and
// returns the interpolation s0 a + s1 b.
func slerpKernel(ctx context.Context, t *TensorJob, a, b *Input, tt float64) (*Kernel, error) {
	ins := []*Input{a, b}
	sums, err := t.Sums(ctx, ins, 3, func(_ int, in [][]float64, acc []float64) error {
		var na, nb, dot float64
		y := in[1][:len(in[0])]
		for i, x := range in[0] {
			na += x * x
			nb += y[i] * y[i]
			dot += x * y[i]
		}
		acc[0], acc[1], acc[2] = na, nb, dot
		return nil
	})
	if err != nil {
		return nil, err
	}
	s0, s1 := slerpFactors(sums[0], sums[1], sums[2], tt)
	return &Kernel{Inputs: ins, Fn: func(_ int, in [][]float64, out []float64) {
		lerp(out, in[0], in[1], s0, s1)
	}}, nil
}

// slerpFactors returns the coefficients of a and b from the squared norms
// and the dot product.
func slerpFactors(na2, nb2, dot, t float64) (s0, s1 float64) {
	na, nb := math.Sqrt(na2), math.Sqrt(nb2)
	// mergekit normalises each vector when its norm exceeds 1e-8
	if na > 1e-8 {
		dot /= na
	}
	if nb > 1e-8 {
		dot /= nb
	}
	s0, s1 = 1-t, t
	if math.Abs(dot) <= SlerpThreshold {
		theta := math.Acos(dot)
		sin := math.Sin(theta)
		s0 = math.Sin(theta-theta*t) / sin
		s1 = math.Sin(theta*t) / sin
	}
	return s0, s1
}
