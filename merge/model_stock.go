package merge

import (
	"context"
	"fmt"
	"math"
)

// model-stock: Model Stock (Jang et al., 2024) as mergekit computes it:
// with N fine-tunes and their offsets d_i = x_i - base, cos is the mean
// over pairs of the cosine of d_i and d_j (clamped to [-1, 1], norms'
// product at least 1e-6), t = N cos / (1 + (N - 1) cos), and the result is
// t * mean(x_i) + (1 - t) * base: per tensor, or per row (vectors along
// the last axis) with filter_wise.
type modelStockMethod struct{ about }

func init() {
	Register(modelStockMethod{about{name: "model-stock", doc: "Model Stock: interpolate the fine-tunes' average toward the base by their offsets' angle"}})
}

func (modelStockMethod) Params() []Param {
	return []Param{{Name: "filter_wise", Kind: Bool, Default: Flag(false),
		Doc: "model-stock: one ratio per row (vector along the last axis) instead of per tensor"}}
}

func (modelStockMethod) Check(p *Plan) error {
	if p.Base == "" {
		return fmt.Errorf("model-stock needs the base model (--base, or base_model in the config)")
	}
	if n := nonBase(p); n < 2 {
		return fmt.Errorf("model-stock needs at least 3 models (the base and two others), got %d besides the base", n)
	}
	return nil
}

func (modelStockMethod) Start(_ context.Context, j *Job) (Merger, error) {
	return modelStockMerger{filterWise: j.Plan.Global("filter_wise").Bool}, nil
}

type modelStockMerger struct{ filterWise bool }

// stockGram adds, for offsets d_i = x_i - b, the Gram matrix's upper
// triangle (i <= j, row by row) into acc. Each of the sums takes the
// elements in order (held in a register, not in acc, between two elements).
func stockGram(x [][]float64, b []float64, acc []float64) {
	n := len(x)
	m := len(b)
	if n == 2 {
		x0, x1 := x[0][:m], x[1][:m]
		a00, a01, a11 := acc[0], acc[1], acc[2]
		for k, bk := range b {
			d0, d1 := x0[k]-bk, x1[k]-bk
			a00 += d0 * d0
			a01 += d0 * d1
			a11 += d1 * d1
		}
		acc[0], acc[1], acc[2] = a00, a01, a11
		return
	}
	s := 0
	for i := range n {
		xi := x[i][:m]
		for j := i; j < n; j++ {
			xj := x[j][:m]
			a := acc[s]
			for k, bk := range b {
				a += (xi[k] - bk) * (xj[k] - bk)
			}
			acc[s] = a
			s++
		}
	}
}

// stockRatio is t from the Gram matrix's upper triangle.
func stockRatio(g []float64, n int) float64 {
	at := func(i, j int) float64 { return g[i*n-i*(i-1)/2+(j-i)] }
	var c float64
	pairs := 0
	for i := range n {
		for j := i + 1; j < n; j++ {
			c += max(-1, min(1, at(i, j)/max(math.Sqrt(at(i, i))*math.Sqrt(at(j, j)), 1e-6)))
			pairs++
		}
	}
	c /= float64(pairs)
	return float64(n) * c / (1 + float64(n-1)*c)
}

// Tensor: one pass for the offsets' Gram matrix (per tensor: an affine
// kernel follows; filter-wise: per row, N(N+1)/2 numbers a row kept, then
// an elementwise kernel).
func (m modelStockMerger) Tensor(ctx context.Context, t *TensorJob) (*Kernel, error) {
	xs := t.others()
	n := len(xs)
	ins := append(append([]*Input{}, xs...), t.Base)
	width := n * (n + 1) / 2
	if !m.filterWise || len(t.Shape) < 2 {
		g, err := t.Sums(ctx, ins, width, func(_ int, in [][]float64, acc []float64) error {
			stockGram(in[:n], in[n], acc)
			return nil
		})
		if err != nil {
			return nil, err
		}
		r := stockRatio(g, n)
		k := &Kernel{Inputs: ins}
		for range xs {
			k.Coef = append(k.Coef, r/float64(n))
		}
		k.Coef = append(k.Coef, 1-r)
		return k, nil
	}
	g, err := t.RowSums(ctx, ins, width, func(_ int, in [][]float64, acc []float64) {
		stockGram(in[:n], in[n], acc)
	})
	if err != nil {
		return nil, err
	}
	ratios := make([]float64, len(g)/width)
	for r := range ratios {
		ratios[r] = stockRatio(g[r*width:(r+1)*width], n)
	}
	m0 := rowLen(t)
	return &Kernel{Inputs: ins, Fn: func(lo int, in [][]float64, out []float64) {
		b := in[n]
		for k := range out {
			r := ratios[(lo+k)/m0]
			var avg float64
			for i := range n {
				avg += in[i][k]
			}
			out[k] = r*(avg/float64(n)) + (1-r)*b[k]
		}
	}}, nil
}
