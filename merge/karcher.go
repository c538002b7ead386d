package merge

import (
	"context"
	"math"
)

// karcher: mergekit's Karcher mean: the Riemannian (geodesic) mean of the
// models' directions on the unit sphere by Karcher's iteration (max_iter
// steps, stopping when the tangent step is below tol), scaled by the mean
// of their norms; models of norm at most tol only count toward the scale.
// The mean stays in the span of the unit vectors, so the iteration runs on
// its coordinates with the Gram matrix of the models (one streaming pass)
// and the result is a combination of the inputs (an affine kernel). The
// base model, if any, is one more input (mergekit's karcher has no base
// role).
type karcherMethod struct{ about }

func init() {
	Register(karcherMethod{about{name: "karcher", doc: "Karcher mean: geodesic mean of the models' directions, scaled by their mean norm"}})
}

func (karcherMethod) Params() []Param {
	return []Param{
		{Name: "max_iter", Kind: Int, Default: IntValue(10), Check: AtLeast(0), Doc: "karcher: iterations of the Karcher mean (default 10)"},
		{Name: "tol", Kind: Number, Default: Num(1e-5), Check: AtLeast(0), Doc: "karcher: convergence tolerance (default 1e-5)"},
	}
}

func (karcherMethod) Check(*Plan) error { return nil }

func (karcherMethod) Start(_ context.Context, j *Job) (Merger, error) {
	return karcherMerger{maxIter: int(j.Plan.Global("max_iter").Int), tol: j.Plan.Float("tol")}, nil
}

type karcherMerger struct {
	maxIter int
	tol     float64
}

// Tensor: one pass for the Gram matrix, then an affine kernel.
func (m karcherMerger) Tensor(ctx context.Context, t *TensorJob) (*Kernel, error) {
	xs := append([]*Input{}, t.Models...)
	if t.Base != nil && t.Job.BaseIndex < 0 {
		xs = append(xs, t.Base)
	}
	if len(xs) == 1 {
		return &Kernel{Inputs: xs, Coef: []float64{1}}, nil
	}
	g, err := gram(ctx, t, xs, nil)
	if err != nil {
		return nil, err
	}
	return combination(xs, nil, karcherCoef(g, m.maxIter, m.tol)), nil
}

// karcherCoef returns the result's coefficients of the inputs from their
// Gram matrix.
func karcherCoef(g [][]float64, maxIter int, tol float64) []float64 {
	n := len(g)
	alpha := 1 / float64(n)
	var units []int // inputs of norm > tol
	nrm := make([]float64, n)
	var scale float64
	for i := range n {
		nrm[i] = math.Sqrt(g[i][i])
		scale += alpha * nrm[i]
		if nrm[i] > tol {
			units = append(units, i)
		}
	}
	out := make([]float64, n)
	k := len(units)
	if k == 0 {
		return out
	}
	// U: Gram matrix of the unit vectors; u = sum_j c_j unit_j
	U := make([][]float64, k)
	for a, i := range units {
		U[a] = make([]float64, k)
		for b, j := range units {
			U[a][b] = g[i][j] / (nrm[i] * nrm[j])
		}
	}
	quad := func(x, y []float64) float64 {
		var s float64
		for a := range k {
			for b := range k {
				s += x[a] * U[a][b] * y[b]
			}
		}
		return s
	}
	aw := 1 / float64(k)
	c := make([]float64, k)
	for a := range c {
		c[a] = aw
	}
	if nu := math.Sqrt(max(quad(c, c), 0)); nu < tol {
		clear(c)
		c[0] = 1
	} else {
		for a := range c {
			c[a] /= nu
		}
	}
	T := make([]float64, k)
	for range maxIter {
		clear(T)
		for a := range k {
			var d float64 // u . unit_a
			for b := range k {
				d += c[b] * U[b][a]
			}
			d = max(-1, min(1, d))
			th := math.Acos(d)
			if th < tol {
				continue
			}
			f := aw * th / math.Sin(th)
			T[a] += f
			for b := range k {
				T[b] -= f * d * c[b]
			}
		}
		nT := math.Sqrt(max(quad(T, T), 0))
		if nT < tol {
			break
		}
		cs, sn := math.Cos(nT), math.Sin(nT)
		for a := range c {
			c[a] = cs*c[a] + sn*T[a]/nT
		}
		if nu := math.Sqrt(max(quad(c, c), 0)); nu > tol {
			for a := range c {
				c[a] /= nu
			}
		}
	}
	for a, i := range units {
		out[i] = scale * c[a] / nrm[i]
	}
	return out
}
