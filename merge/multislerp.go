package merge

import (
	"context"
	"fmt"
	"math"
)

// multislerp: mergekit's Multi-SLERP: the weighted spherical mean of the
// models (of their task vectors, with a base model) on the unit sphere,
// scaled by the weighted mean of their norms. With X_i the vectors, n_i
// their norms, u_i = X_i / (n_i + eps) and m the normalized weighted sum
// of the u_i, the tangent vector tau = sum_i w_i (u_i - (u_i . m) m) gives
// the result (m cos |tau| + tau sin |tau| / |tau|) sum_i w_i n_i (|tau|
// plus eps); all of it follows from the Gram matrix of the X_i (one
// streaming pass), and the result is a combination of the inputs (an
// affine kernel). Inputs whose unit vectors cancel are refused (two are
// averaged linearly, as in mergekit).
type multislerpMethod struct{ about }

func init() {
	Register(multislerpMethod{about{name: "multislerp", doc: "Multi-SLERP: weighted spherical mean of any number of models (or task vectors)"}})
}

func (multislerpMethod) Params() []Param {
	return []Param{weightParam(),
		{Name: "normalize_weights", Kind: Bool, Default: Flag(true), Doc: "multislerp: divide the weights by their sum (default true)"},
		{Name: "eps", Kind: Number, Default: Num(1e-8), Check: AtLeast(0), Doc: "multislerp: added to the norms before dividing (default 1e-8)"},
	}
}

func (multislerpMethod) Check(p *Plan) error {
	if nonBase(p) < 1 {
		return fmt.Errorf("multislerp needs at least one model besides the base model")
	}
	return requireWeights(p)
}

func (multislerpMethod) Start(_ context.Context, j *Job) (Merger, error) {
	return multislerpMerger{normalize: j.Plan.Global("normalize_weights").Bool, eps: j.Plan.Float("eps")}, nil
}

type multislerpMerger struct {
	normalize bool
	eps       float64
}

// Tensor: one pass for the Gram matrix, then an affine kernel.
func (m multislerpMerger) Tensor(ctx context.Context, t *TensorJob) (*Kernel, error) {
	idx := t.othersIdx()
	xs := t.others()
	if len(xs) == 1 {
		return &Kernel{Inputs: xs, Coef: []float64{1}}, nil
	}
	w := t.weights(idx)
	if m.normalize {
		var sw float64
		for _, x := range w {
			sw += x
		}
		for i := range w {
			w[i] /= sw
		}
	}
	g, err := gram(ctx, t, xs, t.Base)
	if err != nil {
		return nil, err
	}
	c, err := multislerpCoef(g, w, m.eps)
	if err != nil {
		return nil, err
	}
	return combination(xs, t.Base, c), nil
}

// multislerpCoef returns the result's coefficients of the vectors X_i from
// their Gram matrix.
func multislerpCoef(g [][]float64, w []float64, eps float64) ([]float64, error) {
	n := len(w)
	nrm := make([]float64, n)
	a := make([]float64, n) // m = sum_i a_i X_i (before normalizing)
	var scale float64
	for i := range n {
		nrm[i] = math.Sqrt(g[i][i])
		a[i] = w[i] / (nrm[i] + eps)
		scale += w[i] * nrm[i]
	}
	dot := func(x, y []float64) float64 {
		var s float64
		for i := range n {
			for j := range n {
				s += x[i] * g[i][j] * y[j]
			}
		}
		return s
	}
	nm := math.Sqrt(max(dot(a, a), 0))
	if nm < eps {
		if n != 2 {
			return nil, fmt.Errorf("multislerp: the weighted sum of the models' unit vectors is zero (antipodal inputs): the spherical mean is undefined")
		}
		return []float64{w[0], w[1]}, nil
	}
	// d_i = u_i . mhat; tau = m - (sum_i w_i d_i) mhat = a * (1 - D / |m|)
	var D float64
	for i := range n {
		var s float64
		for j := range n {
			s += g[i][j] * a[j]
		}
		D += w[i] * s / (nrm[i] + eps) / nm
	}
	f := 1 - D/nm
	nu := math.Abs(f)*nm + eps
	c := make([]float64, n)
	for i := range n {
		c[i] = a[i] * (math.Cos(nu)/nm + f*math.Sin(nu)/nu) * scale
	}
	return c, nil
}
