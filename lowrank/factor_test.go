package lowrank

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"gonum.org/v1/gonum/mat"
)

func randMatrix(r *rand.Rand, m, n int) []float32 {
	w := make([]float32, m*n)
	for i := range w {
		w[i] = float32(r.NormFloat64())
	}
	return w
}

func dense64(w []float32, m, n int) *mat.Dense {
	d := mat.NewDense(m, n, nil)
	for i := range m {
		for j := range n {
			d.Set(i, j, float64(w[i*n+j]))
		}
	}
	return d
}

// bestRankR returns the Eckart-Young optimum (rank-r truncation of the exact
// SVD) of a matrix, computed with gonum independently of this package.
func bestRankR(a *mat.Dense, r int) *mat.Dense {
	var svd mat.SVD
	if !svd.Factorize(a, mat.SVDThin) {
		panic("svd failed")
	}
	var u, v mat.Dense
	svd.UTo(&u)
	svd.VTo(&v)
	s := svd.Values(nil)
	m, n := a.Dims()
	out := mat.NewDense(m, n, nil)
	for k := range r {
		var outer mat.Dense
		outer.Outer(s[k], u.ColView(k), v.ColView(k))
		out.Add(out, &outer)
	}
	return out
}

func maxDiff(t *testing.T, got []float32, want *mat.Dense) float64 {
	t.Helper()
	m, n := want.Dims()
	var d, scale float64
	for i := range m {
		for j := range n {
			d = math.Max(d, math.Abs(float64(got[i*n+j])-want.At(i, j)))
			scale = math.Max(scale, math.Abs(want.At(i, j)))
		}
	}
	return d / scale
}

func TestRankRules(t *testing.T) {
	tests := []struct {
		rule  RankRule
		m, n  int
		want  int
		fixed bool
		err   bool
	}{
		{RankRule{Rank: 8}, 64, 32, 8, true, false},
		{RankRule{Rank: 33}, 64, 32, 0, true, true},
		{RankRule{Ratio: 0.5}, 64, 32, 10, true, false}, // floor(0.5*64*32/96) = 10
		{RankRule{Ratio: 1}, 4096, 11008, 2985, true, false},
		{RankRule{Energy: 0.9}, 64, 32, 0, false, false},
	}
	for _, tc := range tests {
		if err := tc.rule.Validate(); err != nil {
			t.Fatal(err)
		}
		got, fixed, err := tc.rule.Fixed(tc.m, tc.n)
		if (err != nil) != tc.err || fixed != tc.fixed || (!tc.err && got != tc.want) {
			t.Errorf("%+v on %dx%d: %d %v %v", tc.rule, tc.m, tc.n, got, fixed, err)
		}
	}
	for _, bad := range []RankRule{{}, {Rank: 2, Ratio: 0.5}, {Ratio: 1.5}, {Energy: -1}, {Rank: -3}} {
		if bad.Validate() == nil {
			t.Errorf("%+v must be invalid", bad)
		}
	}
	if k := EnergyRank([]float64{3, 2, 1}, 14, 0.9); k != 2 { // 9+4 = 13 >= 12.6
		t.Errorf("EnergyRank = %d", k)
	}
	if SavesParameters(10, 10, 5) || !SavesParameters(10, 10, 4) {
		t.Error("SavesParameters")
	}
}

func TestSVDFactorizeIsEckartYoung(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, sz := range [][3]int{{30, 20, 5}, {20, 45, 7}, {96, 80, 12}} {
		m, n, k := sz[0], sz[1], sz[2]
		w := randMatrix(r, m, n)
		f, err := SVDFactorize(w, m, n, RankRule{Rank: k}, SVDOptions{Exact: true})
		if err != nil {
			t.Fatal(err)
		}
		if d := maxDiff(t, f.Dense(), bestRankR(dense64(w, m, n), k)); d > 1e-4 {
			t.Errorf("%dx%d rank %d: B A differs from the best rank-r approximation by %g", m, n, k, d)
		}
		if len(f.A) != k*n || len(f.B) != m*k || f.Rank != k {
			t.Errorf("factor shapes")
		}
	}
}

func TestFWSVDUniformIsSVD(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	w := randMatrix(r, 40, 30)
	uni := make([]float64, 30)
	for i := range uni {
		uni[i] = 2.5
	}
	a, _ := SVDFactorize(w, 40, 30, RankRule{Rank: 6}, SVDOptions{Exact: true})
	b, err := FWSVD(w, 40, 30, uni, false, RankRule{Rank: 6}, SVDOptions{Exact: true})
	if err != nil {
		t.Fatal(err)
	}
	da, db := a.Dense(), b.Dense()
	for i := range da {
		if math.Abs(float64(da[i]-db[i])) > 1e-4 {
			t.Fatalf("uniform Fisher differs from SVD at %d: %v vs %v", i, da[i], db[i])
		}
	}
}

// TestScaledMethodsFormula checks FWSVD (columns and rows) and ASVD against
// the formula computed with gonum: best rank-r of W S, times S^-1.
func TestScaledMethodsFormula(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	m, n, k := 24, 18, 5
	w := randMatrix(r, m, n)
	imp := make([]float64, n)
	for i := range imp {
		imp[i] = math.Exp(2 * r.NormFloat64())
	}
	rowImp := make([]float64, m)
	for i := range rowImp {
		rowImp[i] = math.Exp(r.NormFloat64())
	}
	scaled := func(left, right []float64) *mat.Dense {
		ws := dense64(w, m, n)
		for i := range m {
			for j := range n {
				v := ws.At(i, j)
				if left != nil {
					v *= left[i]
				}
				if right != nil {
					v *= right[j]
				}
				ws.Set(i, j, v)
			}
		}
		best := bestRankR(ws, k)
		for i := range m {
			for j := range n {
				v := best.At(i, j)
				if left != nil {
					v /= left[i]
				}
				if right != nil {
					v /= right[j]
				}
				best.Set(i, j, v)
			}
		}
		return best
	}
	sqrt := func(v []float64) []float64 {
		out := make([]float64, len(v))
		for i, x := range v {
			out[i] = math.Sqrt(x)
		}
		return out
	}
	pow := func(v []float64, a float64) []float64 {
		out := make([]float64, len(v))
		for i, x := range v {
			out[i] = math.Pow(x, a)
		}
		return out
	}
	fw, _ := FWSVD(w, m, n, imp, false, RankRule{Rank: k}, SVDOptions{Exact: true})
	fr, _ := FWSVD(w, m, n, rowImp, true, RankRule{Rank: k}, SVDOptions{Exact: true})
	as, _ := ASVD(w, m, n, imp, 0.5, RankRule{Rank: k}, SVDOptions{Exact: true})
	for _, c := range []struct {
		name string
		f    *Factorization
		want *mat.Dense
	}{
		{"fwsvd columns", fw, scaled(nil, sqrt(imp))},
		{"fwsvd rows", fr, scaled(sqrt(rowImp), nil)},
		{"asvd", as, scaled(nil, pow(imp, 0.5))},
	} {
		if d := maxDiff(t, c.f.Dense(), c.want); d > 1e-4 {
			t.Errorf("%s differs from the formula by %g", c.name, d)
		}
	}
	// the Fisher-weighted error is smaller than plain SVD's where it counts
	plain, _ := SVDFactorize(w, m, n, RankRule{Rank: k}, SVDOptions{Exact: true})
	weighted := func(f *Factorization) float64 {
		d := f.Dense()
		var e float64
		for i := range m {
			for j := range n {
				x := float64(w[i*n+j] - d[i*n+j])
				e += imp[j] * x * x
			}
		}
		return e
	}
	if weighted(fw) > weighted(plain) {
		t.Errorf("FWSVD's Fisher-weighted error %g exceeds plain SVD's %g", weighted(fw), weighted(plain))
	}
}

// TestWhitenMinimizesOutputError: the whitened factorisation's output error
// ||W X - W' X|| equals the smallest any rank-r matrix can reach, the
// truncation error of the best rank-r approximation of W X.
func TestWhitenMinimizesOutputError(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	m, n, samples, k := 20, 16, 200, 4
	w := randMatrix(r, m, n)
	x := mat.NewDense(n, samples, nil)
	for i := range n {
		scale := math.Exp(r.NormFloat64()) // correlated, anisotropic inputs
		for s := range samples {
			x.Set(i, s, scale*r.NormFloat64()+0.3*x.At(max(i-1, 0), s))
		}
	}
	var g mat.Dense
	g.Mul(x, x.T())
	gram := make([]float64, n*n)
	for i := range n {
		for j := range n {
			gram[i*n+j] = g.At(i, j)
		}
	}
	f, shift, err := Whiten(w, m, n, gram, RankRule{Rank: k}, SVDOptions{Exact: true})
	if err != nil {
		t.Fatal(err)
	}
	if shift != 0 {
		t.Errorf("shift %g on a positive definite Gram", shift)
	}
	outErr := func(wp []float32) float64 {
		var wx, wpx, d mat.Dense
		wx.Mul(dense64(w, m, n), x)
		wpx.Mul(dense64(wp, m, n), x)
		d.Sub(&wx, &wpx)
		return mat.Norm(&d, 2)
	}
	var wx mat.Dense
	wx.Mul(dense64(w, m, n), x)
	var opt mat.Dense
	opt.Sub(&wx, bestRankR(&wx, k))
	optimal := mat.Norm(&opt, 2)
	got := outErr(f.Dense())
	if math.Abs(got-optimal) > 1e-4*optimal {
		t.Errorf("whitened output error %g, optimum %g", got, optimal)
	}
	plain, _ := SVDFactorize(w, m, n, RankRule{Rank: k}, SVDOptions{Exact: true})
	if outErr(plain.Dense()) <= got {
		t.Errorf("plain SVD's output error %g should exceed whitening's %g", outErr(plain.Dense()), got)
	}
	// a singular Gram is shifted, and reported
	sing := make([]float64, n*n)
	for i := range n - 1 {
		sing[i*n+i] = 1
	}
	if _, shift, err := Whiten(w, m, n, sing, RankRule{Rank: k}, SVDOptions{Exact: true}); err != nil || shift == 0 {
		t.Errorf("singular Gram: shift %g, %v", shift, err)
	}
}

func TestFactorizeErrors(t *testing.T) {
	w := make([]float32, 12)
	cases := map[string]error{}
	_, cases["rank too large"] = SVDFactorize(w, 3, 4, RankRule{Rank: 4}, SVDOptions{})
	_, cases["wrong length"] = SVDFactorize(w, 3, 5, RankRule{Rank: 1}, SVDOptions{})
	_, cases["no rule"] = SVDFactorize(w, 3, 4, RankRule{}, SVDOptions{})
	_, cases["fisher length"] = FWSVD(w, 3, 4, []float64{1, 2}, false, RankRule{Rank: 1}, SVDOptions{})
	_, cases["negative fisher"] = FWSVD(w, 3, 4, []float64{1, -2, 1, 1}, false, RankRule{Rank: 1}, SVDOptions{})
	nan := append([]float32(nil), w...)
	nan[5] = float32(math.NaN())
	_, cases["NaN"] = SVDFactorize(nan, 3, 4, RankRule{Rank: 1}, SVDOptions{})
	for name, err := range cases {
		if err == nil {
			t.Errorf("%s: want an error", name)
		}
	}
}

func TestEnergyRule(t *testing.T) {
	// diag(8, 4, 2, 1, ...) embedded: 90% of 64+16+4+1+... needs 2 values
	m, n := 50, 40
	w := make([]float32, m*n)
	for i, s := range []float32{8, 4, 2, 1, 0.5} {
		w[i*n+i] = s
	}
	f, err := SVDFactorize(w, m, n, RankRule{Energy: 0.9}, SVDOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if f.Rank != 2 || math.Abs(f.Energy-80.0/85.25) > 1e-6 {
		t.Errorf("rank %d energy %g", f.Rank, f.Energy)
	}
}

func ExampleSVDFactorize() {
	// A 4x3 matrix of rank 1 is factorised exactly at rank 1.
	w := []float32{
		1, 2, 3,
		2, 4, 6,
		3, 6, 9,
		4, 8, 12,
	}
	f, _ := SVDFactorize(w, 4, 3, RankRule{Rank: 1}, SVDOptions{})
	fmt.Printf("rank %d, relative error below 1e-6: %v, energy %.3f\n", f.Rank, f.RelError < 1e-6, f.Energy)
	// Output: rank 1, relative error below 1e-6: true, energy 1.000
}

func ExampleFWSVD() {
	// The Fisher information says the second input feature matters 100x
	// more: a rank-1 FWSVD keeps the column the task needs, plain SVD the
	// one with the larger values.
	w := []float32{
		3, 0,
		0, 1,
	}
	plain, _ := SVDFactorize(w, 2, 2, RankRule{Rank: 1}, SVDOptions{})
	fw, _ := FWSVD(w, 2, 2, []float64{1, 100}, false, RankRule{Rank: 1}, SVDOptions{})
	fmt.Printf("svd %.1f\nfwsvd %.1f\n", plain.Dense(), fw.Dense())
	// Output:
	// svd [3.0 0.0 0.0 0.0]
	// fwsvd [0.0 0.0 0.0 1.0]
}

func ExampleWhiten() {
	// Inputs that are large along the second feature: whitening keeps the
	// part of W that acts on them, which is what the layer's output needs.
	w := []float32{
		3, 0,
		0, 1,
	}
	gram := []float64{1, 0, 0, 100} // sum of x x^T over the calibration data
	f, shift, _ := Whiten(w, 2, 2, gram, RankRule{Rank: 1}, SVDOptions{})
	fmt.Printf("%.1f shift %g\n", f.Dense(), shift)
	// Output: [0.0 0.0 0.0 1.0] shift 0
}

func ExampleASVD() {
	w := []float32{
		3, 0,
		0, 1,
	}
	meanAbs := []float64{0.01, 100} // mean |x| of each input feature
	f, _ := ASVD(w, 2, 2, meanAbs, 0.5, RankRule{Rank: 1}, SVDOptions{})
	fmt.Printf("%.1f\n", f.Dense())
	// Output: [0.0 0.0 0.0 1.0]
}
