package merge

import (
	"context"
	"fmt"
	"math"
)

// nuslerp: mergekit's NuSLERP: spherical interpolation of two models at
// t = w2 / (w1 + w2) (0.5 when the weights cancel), of the whole tensor
// (nuslerp_flatten, the default), of each vector along the last axis, or
// along the first (nuslerp_row_wise); with a base model, of the task
// vectors, added back to the base. Norms are at least 1e-7 and nearly
// parallel vectors (|sin| < 1e-8) are interpolated linearly, as in
// mergekit.
type nuslerpMethod struct{ about }

func init() {
	Register(nuslerpMethod{about{name: "nuslerp", doc: "NuSLERP: slerp of two models (or of their task vectors) by weights, per tensor, row or column"}})
}

func (nuslerpMethod) Params() []Param {
	return []Param{weightParam(),
		{Name: "nuslerp_flatten", Kind: Bool, Default: Flag(true), Doc: "nuslerp: slerp the whole tensor as one vector (default true)"},
		{Name: "nuslerp_row_wise", Kind: Bool, Default: Flag(false), Doc: "nuslerp: without flatten, slerp the vectors along the first axis instead of the last"},
	}
}

func (nuslerpMethod) Check(p *Plan) error {
	if n := nonBase(p); n != 2 {
		return fmt.Errorf("nuslerp merges exactly two models besides the base model (which cannot be one of them), got %d", n)
	}
	return requireWeights(p)
}

func (nuslerpMethod) Start(_ context.Context, j *Job) (Merger, error) {
	return nuslerpMerger{flatten: j.Plan.Global("nuslerp_flatten").Bool, rowWise: j.Plan.Global("nuslerp_row_wise").Bool}, nil
}

type nuslerpMerger struct{ flatten, rowWise bool }

// nuslerpFactors returns the coefficients of x and y from |x|^2, |y|^2
// and x . y.
func nuslerpFactors(xx, yy, xy, t float64) (float64, float64) {
	ux, uy := max(math.Sqrt(xx), 1e-7), max(math.Sqrt(yy), 1e-7)
	c := max(-1, min(1, xy/(ux*uy)))
	th := math.Acos(c)
	s := math.Sin(th)
	if math.Abs(s) < 1e-8 {
		return 1 - t, t
	}
	return math.Sin((1-t)*th) / s, math.Sin(t*th) / s
}

// sums3 adds |x|^2, |y|^2 and x . y of task vectors (x - b, y - b; b nil:
// the values).
func sums3(x, y, b []float64, acc []float64) {
	for k := range x {
		dx, dy := x[k], y[k]
		if b != nil {
			dx, dy = dx-b[k], dy-b[k]
		}
		acc[0] += dx * dx
		acc[1] += dy * dy
		acc[2] += dx * dy
	}
}

// Tensor: one pass for the norms and dot products (per tensor: 3 numbers,
// then an affine kernel; per row or column: 3 numbers a vector, then an
// elementwise kernel).
func (m nuslerpMerger) Tensor(ctx context.Context, t *TensorJob) (*Kernel, error) {
	idx := t.othersIdx()
	xs := []*Input{t.Models[idx[0]], t.Models[idx[1]]}
	w0, w1 := t.ModelNum(idx[0], "weight"), t.ModelNum(idx[1], "weight")
	tt := 0.5
	if math.Abs(w0+w1) >= 1e-6 {
		tt = w1 / (w0 + w1)
	}
	base := t.Base
	ins := append([]*Input{}, xs...)
	if base != nil {
		ins = append(ins, base)
	}
	bOf := func(in [][]float64) []float64 {
		if base != nil {
			return in[2]
		}
		return nil
	}
	if m.flatten || len(t.Shape) < 2 {
		s, err := t.Sums(ctx, ins, 3, func(_ int, in [][]float64, acc []float64) error {
			sums3(in[0], in[1], bOf(in), acc)
			return nil
		})
		if err != nil {
			return nil, err
		}
		ca, cb := nuslerpFactors(s[0], s[1], s[2], tt)
		return combination(xs, base, []float64{ca, cb}), nil
	}
	var s []float64
	var err error
	var vec func(e int) int // the vector of element e
	if m.rowWise {
		s, err = t.ColumnSums(ctx, ins, 3, func(in [][]float64, acc []float64) {
			b := bOf(in)
			for c := range in[0] {
				var bb []float64
				if b != nil {
					bb = b[c : c+1]
				}
				sums3(in[0][c:c+1], in[1][c:c+1], bb, acc[3*c:3*c+3])
			}
		})
		cols := len(s) / 3
		vec = func(e int) int { return e % cols }
	} else {
		s, err = t.RowSums(ctx, ins, 3, func(_ int, in [][]float64, acc []float64) {
			sums3(in[0], in[1], bOf(in), acc)
		})
		m0 := rowLen(t)
		vec = func(e int) int { return e / m0 }
	}
	if err != nil {
		return nil, err
	}
	coef := make([]float64, len(s)/3*2)
	for v := range len(s) / 3 {
		coef[2*v], coef[2*v+1] = nuslerpFactors(s[3*v], s[3*v+1], s[3*v+2], tt)
	}
	return &Kernel{Inputs: ins, Fn: func(lo int, in [][]float64, out []float64) {
		b := bOf(in)
		for k := range out {
			v := vec(lo + k)
			ca, cb := coef[2*v], coef[2*v+1]
			if b != nil {
				out[k] = ca*(in[0][k]-b[k]) + cb*(in[1][k]-b[k]) + b[k]
			} else {
				out[k] = ca*in[0][k] + cb*in[1][k]
			}
		}
	}}, nil
}
