package lowrank

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"gonum.org/v1/gonum/mat"
)

func TestAdapterInits(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	m, n, k := 48, 32, 6
	w := randMatrix(r, m, n)
	wd := dense64(w, m, n)
	best := bestRankR(wd, k)
	var svd mat.SVD
	svd.Factorize(wd, mat.SVDNone)
	exact := svd.Values(nil)
	inits := map[string]func() (*AdapterInit, error){
		"pissa alpha=r":  func() (*AdapterInit, error) { return PiSSA(w, m, n, RankRule{Rank: k}, 0, SVDOptions{}) },
		"pissa alpha=16": func() (*AdapterInit, error) { return PiSSA(w, m, n, RankRule{Rank: k}, 16, SVDOptions{}) },
		"sorsa":          func() (*AdapterInit, error) { return SORSA(w, m, n, RankRule{Rank: k}, SVDOptions{}) },
		"svfit":          func() (*AdapterInit, error) { return SVFit(w, m, n, RankRule{Rank: k}, SVDOptions{Exact: true}) },
	}
	for name, f := range inits {
		a, err := f()
		if err != nil {
			t.Fatal(err)
		}
		lr := a.LowRank()
		var worst, scale float64
		for i := range m {
			for j := range n {
				// the low-rank part is the best rank-r approximation
				worst = math.Max(worst, math.Abs(lr[i*n+j]-best.At(i, j)))
				scale = math.Max(scale, math.Abs(best.At(i, j)))
				// residual + low-rank reproduces W to float32 rounding
				if e := math.Abs(float64(a.Residual[i*n+j]) + lr[i*n+j] - float64(w[i*n+j])); e > 4e-7*(1+math.Abs(float64(w[i*n+j]))) {
					t.Fatalf("%s: W not reproduced at (%d,%d): error %g", name, i, j, e)
				}
			}
		}
		if worst > 1e-4*scale {
			t.Errorf("%s: low-rank part differs from the best rank-%d approximation by %g", name, k, worst/scale)
		}
		for i := range k {
			if math.Abs(a.S[i]-exact[i]) > 1e-4*exact[0] {
				t.Errorf("%s: singular value %d = %g, exact %g", name, i, a.S[i], exact[i])
			}
		}
	}
	// PiSSA is PEFT's: scaling alpha/r, A = sqrt(S/scaling) V^T, B = U sqrt(S/scaling)
	a, _ := PiSSA(w, m, n, RankRule{Rank: k}, 16, SVDOptions{Exact: true})
	if math.Abs(a.Scaling-16.0/6) > 1e-15 {
		t.Errorf("scaling %g", a.Scaling)
	}
	var rowNorm float64
	for j := range n {
		rowNorm += float64(a.A[j]) * float64(a.A[j])
	}
	if want := a.S[0] / a.Scaling; math.Abs(rowNorm-want) > 1e-4*want {
		t.Errorf("|A row 0|^2 = %g, want S_0/scaling = %g", rowNorm, want)
	}
	// SORSA/SVFit factors are orthonormal
	s, _ := SORSA(w, m, n, RankRule{Rank: k}, SVDOptions{Exact: true})
	for p := range k {
		for q := range k {
			var d float64
			for j := range n {
				d += float64(s.A[p*n+j]) * float64(s.A[q*n+j])
			}
			want := 0.0
			if p == q {
				want = 1
			}
			if math.Abs(d-want) > 1e-5 {
				t.Fatalf("V^T rows %d,%d: %g", p, q, d)
			}
		}
	}
	if _, err := PiSSA(w, m, n, RankRule{Rank: 33}, 0, SVDOptions{}); err == nil {
		t.Error("rank above min(m, n) must fail")
	}
}

func ExamplePiSSA() {
	// A rank-2 weight: PiSSA with rank 2 moves all of it into the adapter.
	w := []float32{
		2, 0, 0,
		0, 1, 0,
		0, 0, 0,
	}
	a, _ := PiSSA(w, 3, 3, RankRule{Rank: 2}, 2, SVDOptions{Exact: true})
	fmt.Printf("rank %d, scaling %.0f, singular values %.0f, energy %.2f\n", a.Rank, a.Scaling, a.S, a.Energy)
	var res float64
	for _, v := range a.Residual {
		res = math.Max(res, math.Abs(float64(v)))
	}
	fmt.Printf("largest residual entry below 1e-6: %v\n", res < 1e-6)
	// Output:
	// rank 2, scaling 1, singular values [2 1], energy 1.00
	// largest residual entry below 1e-6: true
}
