package merge

import (
	"context"
	"sync/atomic"

	"github.com/wtool/wtool/internal/fault"
)

// Row-wise quantities: methods that work on the vectors of a tensor
// (model_stock's filter-wise ratios, nuslerp's row-wise slerp,
// arcee_fusion's per-row divergences) reduce every vector to a few numbers
// in a streaming pass; the numbers (one set per vector, far fewer than the
// elements) are what they keep.

// rowLen returns the length of the vectors along the last axis (the whole
// tensor for 0-D and 1-D tensors).
func rowLen(t *TensorJob) int {
	if len(t.Shape) < 2 {
		return max(t.N, 1)
	}
	return int(t.Shape[len(t.Shape)-1])
}

// RowSums reduces every vector along the last axis to width numbers: fn
// gets one row of each input (in[i], decoded whole) and writes the row's
// numbers into acc (zeroed). Rows are processed concurrently, each by one
// goroutine in element order, so the result does not depend on the number
// of goroutines. It returns out[r*width : (r+1)*width] for row r. Memory:
// one row per input and goroutine, and the result.
func (t *TensorJob) RowSums(ctx context.Context, ins []*Input, width int, fn func(row int, in [][]float64, acc []float64)) ([]float64, error) {
	m := rowLen(t)
	rows := t.N / max(m, 1)
	out := make([]float64, rows*width)
	err := claimEach(t.Workers(), rows, func() func(r int) error {
		bufs := rowBuffers(len(ins), m)
		return func(r int) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := decodeRows(ins, bufs, r*m); err != nil {
				return err
			}
			fn(r, bufs, out[r*width:(r+1)*width])
			processed.Add(int64(m))
			return nil
		}
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ColumnSums reduces every vector along the first axis (the columns of a
// matrix; for more axes, the tensor seen as shape[0] x rest) to width
// numbers: fn adds the contribution of element (r, c) of the inputs,
// whose values along row r are in[i][c], into acc[c*width : (c+1)*width].
// The rows are cut into at most 16 fixed groups summed in parallel, then
// added in group order: reproducible whatever the number of goroutines.
// Memory: 16 x columns x width numbers.
func (t *TensorJob) ColumnSums(ctx context.Context, ins []*Input, width int, fn func(in [][]float64, acc []float64)) ([]float64, error) {
	rows := 1
	if len(t.Shape) > 0 {
		rows = int(t.Shape[0])
	}
	cols := t.N / max(rows, 1)
	groups := max(1, min(rows, 16))
	part := make([][]float64, groups)
	err := claimEach(t.Workers(), groups, func() func(g int) error {
		bufs := rowBuffers(len(ins), cols)
		return func(g int) error {
			acc := make([]float64, cols*width)
			for r := g * rows / groups; r < (g+1)*rows/groups; r++ {
				if err := ctx.Err(); err != nil {
					return err
				}
				if err := decodeRows(ins, bufs, r*cols); err != nil {
					return err
				}
				fn(bufs, acc)
				processed.Add(int64(cols))
			}
			part[g] = acc
			return nil
		}
	})
	if err != nil {
		return nil, err
	}
	out := part[0]
	for _, p := range part[1:] {
		for k, v := range p {
			out[k] += v
		}
	}
	return out, nil
}

// claimEach runs the tasks 0..n-1 on up to workers goroutines (on the
// caller's when one suffices), each goroutine claiming the next task in
// turn with the function newWorker gives it (its own buffers in a closure).
// After the first error no task is claimed; that error is returned.
func claimEach(workers, n int, newWorker func() func(i int) error) error {
	var next atomic.Int64
	var failed atomic.Pointer[error]
	work := func() {
		do := newWorker()
		for {
			i := int(next.Add(1)) - 1
			if i >= n || failed.Load() != nil {
				return
			}
			if err := do(i); err != nil {
				failed.CompareAndSwap(nil, &err)
				return
			}
		}
	}
	workers = max(1, min(workers, n))
	if workers == 1 {
		work()
	} else {
		var g fault.Group
		for range workers {
			g.Go(work)
		}
		g.Wait()
	}
	if p := failed.Load(); p != nil {
		return *p
	}
	return nil
}

// rowBuffers allocates one buffer of m numbers per input.
func rowBuffers(inputs, m int) [][]float64 {
	bufs := make([][]float64, inputs)
	for i := range bufs {
		bufs[i] = make([]float64, m)
	}
	return bufs
}

// decodeRows decodes len(bufs[i]) elements of each input from element off.
func decodeRows(ins []*Input, bufs [][]float64, off int) error {
	for i, in := range ins {
		if err := in.Decode(bufs[i], off); err != nil {
			return err
		}
	}
	return nil
}

// others returns the tensor's inputs other than the base model, in plan
// order.
func (t *TensorJob) others() []*Input {
	var out []*Input
	for i, in := range t.Models {
		if i != t.Job.BaseIndex {
			out = append(out, in)
		}
	}
	return out
}

// othersIdx returns the plan indices of the models other than the base.
func (t *TensorJob) othersIdx() []int {
	var out []int
	for i := range t.Models {
		if i != t.Job.BaseIndex {
			out = append(out, i)
		}
	}
	return out
}

// nonBase counts a plan's models other than its base model.
func nonBase(p *Plan) int {
	n := 0
	for _, mi := range p.Models {
		if mi.Path != p.Base {
			n++
		}
	}
	return n
}
