package merge

import (
	"math"
	"math/rand/v2"
	"testing"

	"gonum.org/v1/gonum/mat"
)

// TestRegMeanFewSamples: two models whose calibration inputs (32 samples
// each, from the same 8-dimensional subspace of 40 input features) leave 32
// directions unseen. Unscaled RegMean (alpha 1) leaves the average there (it
// used to zero them: 100% away from the average); the default alpha keeps
// them near it and changes the seen directions little.
func TestRegMeanFewSamples(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const d, o, n, k = 40, 10, 32, 8
	basis := mat.NewDense(d, k, nil)
	for i := range d {
		for j := range k {
			basis.Set(i, j, rng.NormFloat64())
		}
	}
	gram := func() []float64 {
		coef := mat.NewDense(k, n, nil)
		for i := range k {
			for j := range n {
				coef.Set(i, j, rng.NormFloat64())
			}
		}
		var x, g mat.Dense
		x.Mul(basis, coef) // d x n: samples in the subspace
		g.Mul(&x, x.T())
		return g.RawMatrix().Data
	}
	randW := func() []float64 {
		w := make([]float64, o*d)
		for i := range w {
			w[i] = rng.NormFloat64()
		}
		return w
	}
	w1, w2 := randW(), randW()
	g1, g2 := gram(), gram()
	avg := mat.NewDense(o, d, nil)
	for i := range o * d {
		avg.RawMatrix().Data[i] = (w1[i] + w2[i]) / 2
	}
	// projections on the seen subspace and its complement
	var qr mat.QR
	qr.Factorize(basis)
	var q mat.Dense
	qr.QTo(&q)
	qs := q.Slice(0, d, 0, k)
	var seen, unseen mat.Dense
	seen.Mul(qs, qs.T())
	unseen.Sub(eye(d), &seen)
	dev := func(alpha float64, proj *mat.Dense) float64 {
		w, err := RegMean([][]float64{w1, w2}, [][]float64{g1, g2}, o, d, alpha, 0)
		if err != nil {
			t.Fatal(err)
		}
		var diff, num, den mat.Dense
		diff.Sub(mat.NewDense(o, d, w), avg)
		num.Mul(&diff, proj)
		den.Mul(avg, proj)
		return mat.Norm(&num, 2) / mat.Norm(&den, 2)
	}
	// alpha 1: the data's directions are fitted, the others take the
	// average (the fallback ridge pulls toward it; it used to zero them)
	u1, u, s1, s9 := dev(1, &unseen), dev(DefaultRegMeanAlpha, &unseen), dev(1, &seen), dev(DefaultRegMeanAlpha, &seen)
	if u1 > 1e-3 {
		t.Errorf("alpha 1: unseen directions %.3g away from the average", u1)
	}
	if u > 0.3 {
		t.Errorf("alpha %g: unseen directions %.3f away from the average", DefaultRegMeanAlpha, u)
	}
	if math.Abs(s9-s1) > 0.05 {
		t.Errorf("alpha %g moves the seen directions: %.3f vs %.3f at alpha 1", DefaultRegMeanAlpha, s9, s1)
	}
	t.Logf("relative distance to the average: unseen %.3f (alpha 1: %.2g), seen %.3f (alpha 1: %.3f)", u, u1, s9, s1)
}

func eye(n int) *mat.Dense {
	m := mat.NewDense(n, n, nil)
	for i := range n {
		m.Set(i, i, 1)
	}
	return m
}
