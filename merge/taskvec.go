package merge

import (
	"context"
	"fmt"
	"math"
	"sync"
)

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

var rescaleNames = map[Rescale]string{RescaleInverse: "inverse", RescaleL1: "l1", RescaleNone: "none"}

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
	// Seed and Name key Random sparsification's masks (see MaskKey): each
	// model's mask depends on them and on the model's own values, not on
	// the other models or their order.
	Seed uint64
	Name string

	sparsifier sparsifier // set by a method with its own sparsification
}

// TaskVectors merges models into dst relative to base (mergekit's
// generalized task arithmetic; see TaskVectorOptions). It computes in
// float64 and rounds once to float32; Execute streams the same computation
// over checkpoints chunk by chunk, with the same result.
func TaskVectors(dst, base []float32, models [][]float32, o TaskVectorOptions) error {
	t := memJob(o.Name, len(dst))
	if len(base) != len(dst) {
		return fmt.Errorf("the base has %d values, want %d", len(base), len(dst))
	}
	var ins []*Input
	for i, x := range models {
		if len(x) != len(dst) {
			return fmt.Errorf("tensor %d has %d values, want %d", i, len(x), len(dst))
		}
		ins = append(ins, memInput(o.Name, x))
	}
	lambda := o.Lambda
	if lambda == 0 {
		lambda = 1
	}
	k, err := taskVectorKernel(context.Background(), t, ins, memInput(o.Name, base), o, lambda)
	if err != nil {
		return err
	}
	return runWhole(context.Background(), k, len(dst), dst)
}

// taskVectorKernel prepares a task-vector merge of one tensor: the passes
// its sparsification needs (top-k selection for Magnitude; mask keys and,
// for RescaleL1, the L1 norms for Random), then the elementwise kernel.
func taskVectorKernel(ctx context.Context, t *TensorJob, models []*Input, base *Input, o TaskVectorOptions, lambda float64) (*Kernel, error) {
	n := len(models)
	if n == 0 {
		return &Kernel{Inputs: []*Input{base}, Fn: func(_ int, in [][]float64, out []float64) { copy(out, in[0]) }}, nil
	}
	if len(o.Weights) != n {
		return nil, fmt.Errorf("%d models, %d weights", n, len(o.Weights))
	}
	if o.Sparsify != NoSparsify && o.sparsifier == nil && len(o.Densities) != n {
		return nil, fmt.Errorf("%d models, %d densities", n, len(o.Densities))
	}
	ins := append(append([]*Input{}, models...), base)
	var trim trimmer
	var done func()
	if sp := builtinSparsifier(o); sp != nil {
		var err error
		if trim, err = sp.prepare(ctx, t, ins, o.Densities); err != nil {
			return nil, err
		}
		if _, own := sp.(randomSparsifier); o.Rescale == RescaleL1 && !own {
			l1, err := l1Rescaled(ctx, t, ins, trim)
			if err != nil {
				return nil, err
			}
			trim, done = l1, l1.done
		} else if ic, ok := trim.(inputChecker); ok {
			if err := ic.checkInputs(ctx, t); err != nil {
				return nil, err
			}
		}
	}
	w := o.Weights
	var wsum float64
	for _, x := range w {
		wsum += x
	}
	divisor := wsum
	if math.Abs(divisor) < 1e-8 {
		divisor = 1
	}
	dbufs := sync.Pool{New: func() any {
		d := make([][]float64, n)
		for i := range d {
			d[i] = make([]float64, BlockSize)
		}
		return &d
	}}
	// The kernel works model by model on a block (branch-free loops: the
	// keep/drop and sign decisions are data, not jumps), then combines the
	// weighted deltas element by element in model order, with exactly the
	// float64 operations of the whole-tensor formula.
	fn := func(lo int, in [][]float64, out []float64) {
		dp := dbufs.Get().(*[][]float64)
		defer dbufs.Put(dp)
		m := len(out)
		b := in[n][:m]
		d := *dp
		for i := range n {
			x, di := in[i][:m], d[i][:m]
			if trim == nil || !trim.trim(i, di, x, b, lo, w[i]) {
				for k := range di {
					di[k] = (x[k] - b[k]) * w[i]
				}
			}
		}
		switch {
		case o.Consensus:
			consensus(out, d, b, w, o.Normalize, lambda)
		case n == 2:
			linear2(out, d[0], d[1], b, divisor, o.Normalize, lambda)
		default:
			linearN(out, d, b, divisor, o.Normalize, lambda)
		}
	}
	return &Kernel{Inputs: ins, Fn: fn, Done: done}, nil
}
