package merge

import (
	"fmt"

	"gonum.org/v1/gonum/mat"

	_ "github.com/wtool/wtool/tensors/linalg" // fast GEMM kernels for gonum
)

// DefaultRegMeanAlpha is the default scale of the Gram matrices'
// off-diagonal entries in a RegMean merge. The RegMean paper (Jin et al.,
// 2023) merges with G~ = alpha G + (1 - alpha) diag(G), alpha < 1: with
// alpha = 1 the solution fits the calibration data exactly in the
// directions the data spans and, in the directions no model's data spans
// (fewer calibration samples than input features, dead features), falls
// back to the plain average through a small ridge toward it. The diagonal
// share (1 - alpha) regularises every direction toward a feature-weighted
// average instead; how close that is to the plain average depends on the
// features (near for isotropic ones; about half the average's norm away for
// a ViT classifier's LayerNorm features in wtool's conformance test).
const DefaultRegMeanAlpha = 0.9

// RegMean returns the RegMean merge (Jin et al., 2023) of Linear layers that
// see inputs with Gram matrices grams[i] (in x in, row-major, float64):
// W* = (sum_i W_i G_i)(sum_i G_i)^-1, the W minimising
// sum_i ||W X_i - W_i X_i||^2. ws[i] are the layers' weights (out x in,
// row-major, the layer's own orientation). alpha in (0, 1] scales the Gram
// matrices' off-diagonal entries (1 leaves them; see DefaultRegMeanAlpha).
// ridge > 0 regularises the solution toward the plain average of the ws with
// weight ridge * mean(diag) (W* = (sum_i W_i G_i + r W_avg)(sum_i G_i + r I)^-1);
// with ridge 0 a small one (from 1e-8) is used only if the sum is singular,
// so that directions no Gram matrix sees take the average, never zero.
func RegMean(ws [][]float64, grams [][]float64, out, in int, alpha, ridge float64) ([]float64, error) {
	if len(ws) == 0 || len(ws) != len(grams) {
		return nil, fmt.Errorf("regmean: %d weights, %d Gram matrices", len(ws), len(grams))
	}
	for k := range ws {
		if len(ws[k]) != out*in || len(grams[k]) != in*in {
			return nil, fmt.Errorf("regmean: model %d: %d weights, %d Gram entries for %d x %d", k, len(ws[k]), len(grams[k]), out, in)
		}
	}
	sys, err := newRegmeanSystem(grams, in, alpha, ridge)
	if err != nil {
		return nil, err
	}
	rows := make([][]float64, len(ws))
	for k := range ws {
		rows[k] = ws[k]
	}
	return sys.solveRows(rows, out)
}

// regmeanSystem is the factored normal equations of one layer: the scaled
// Gram matrices and the Cholesky factor of their (ridged) sum. Output rows
// are solved independently, block by block, against it.
type regmeanSystem struct {
	in    int
	grams []*mat.Dense
	ch    mat.Cholesky
	pull  float64 // ridge * mean(diag): the weight of the average in the right-hand side
}

func newRegmeanSystem(grams [][]float64, in int, alpha, ridge float64) (*regmeanSystem, error) {
	if !(alpha > 0 && alpha <= 1) {
		return nil, fmt.Errorf("regmean: alpha %g must be in (0, 1]", alpha)
	}
	if !(ridge >= 0) {
		return nil, fmt.Errorf("regmean: ridge %g must be at least 0", ridge)
	}
	s := &regmeanSystem{in: in}
	sum := mat.NewSymDense(in, nil)
	for k := range grams {
		g := mat.NewDense(in, in, scaleOffDiagonal(grams[k], in, alpha))
		for r := range in {
			for c := r; c < in; c++ {
				sum.SetSym(r, c, sum.At(r, c)+g.At(r, c))
			}
		}
		s.grams = append(s.grams, g)
	}
	var meanDiag float64
	for i := range in {
		meanDiag += sum.At(i, i)
	}
	meanDiag /= float64(in)
	if !(meanDiag > 0) {
		return nil, fmt.Errorf("regmean: the Gram matrices are zero")
	}
	factor := func(r float64) bool {
		a := mat.NewSymDense(in, nil)
		a.CopySym(sum)
		for i := range in {
			a.SetSym(i, i, a.At(i, i)+r*meanDiag)
		}
		s.pull = 0
		if r > 0 {
			s.pull = r * meanDiag
		}
		// a near-singular factor (the solve would report a Condition
		// error) counts as a failure, and more ridge is tried
		return s.ch.Factorize(a) && s.ch.Cond() <= mat.ConditionTolerance
	}
	ok := factor(ridge)
	for r := 1e-8; !ok && r < 1; r *= 100 {
		ok = factor(ridge + r)
	}
	if !ok {
		return nil, fmt.Errorf("regmean: the summed Gram matrix is not positive definite even with a ridge")
	}
	return s, nil
}

// solveRows returns the merged rows (rows x in, row-major) for the models'
// rows w[k] (rows x in each): X = (sum_k W_k G_k) S^-1.
func (s *regmeanSystem) solveRows(w [][]float64, rows int) ([]float64, error) {
	in := s.in
	rhs := mat.NewDense(in, rows, nil) // (sum_k W_k G_k)^T = sum_k G_k W_k^T
	for k, g := range s.grams {
		var t mat.Dense
		t.Mul(g, mat.NewDense(rows, in, w[k]).T())
		rhs.Add(rhs, &t)
	}
	if s.pull > 0 { // the ridge pulls toward the plain average
		avgT := mat.NewDense(in, rows, nil)
		for k := range w {
			avgT.Add(avgT, mat.NewDense(rows, in, w[k]).T())
		}
		avgT.Scale(1/float64(len(w)), avgT)
		var br mat.Dense
		br.Scale(s.pull, avgT)
		br.Add(&br, rhs)
		rhs = &br
	}
	var x mat.Dense
	if err := s.ch.SolveTo(&x, rhs); err != nil {
		return nil, fmt.Errorf("regmean: %w", err)
	}
	res := make([]float64, rows*in)
	for o := range rows {
		for i := range in {
			res[o*in+i] = x.At(i, o)
		}
	}
	return res, nil
}

func scaleOffDiagonal(g []float64, n int, alpha float64) []float64 {
	out := make([]float64, len(g))
	for r := range n {
		for c := range n {
			v := g[r*n+c]
			if r != c {
				v *= alpha
			}
			out[r*n+c] = v
		}
	}
	return out
}
