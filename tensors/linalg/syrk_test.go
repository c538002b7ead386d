// Copyright ©2025 The wtool Authors.

package linalg

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
)

// TestSyrk checks Ssyrk and Dsyrk against the naive GEMM reference for both
// triangles and transposes, and checks that the other triangle is untouched.
func TestSyrk(t *testing.T) {
	ns := []int{0, 1, 2, 5, 17, 33, 100, 129, 300}
	ks := []int{0, 1, 7, 64, 301}
	if testing.Short() || raceEnabled {
		ns = []int{0, 1, 5, 33, 129}
		ks = []int{0, 7, 64}
	}
	for _, l := range allLevels() {
		t.Run(l.String(), func(t *testing.T) {
			withLevel(t, l, func() {
				idx := 0
				for _, n := range ns {
					for _, k := range ks {
						for _, ul := range []blas.Uplo{blas.Upper, blas.Lower} {
							for _, tA := range []blas.Transpose{blas.NoTrans, blas.Trans} {
								idx++
								alpha := alphas[idx%len(alphas)]
								beta := betas[(idx/4)%len(betas)]
								testSyrkCase(t, ul, tA, n, k, alpha, beta, idx%3, idx%2, uint64(idx))
							}
						}
					}
				}
			})
		})
	}
}

func testSyrkCase(t *testing.T, ul blas.Uplo, tA blas.Transpose, n, k int, alpha, beta float64, padA, padC int, seed uint64) {
	t.Helper()
	rnd := rand.New(rand.NewPCG(seed, 99))
	ar, ac := n, k
	if tA == blas.Trans {
		ar, ac = k, n
	}
	lda, ldc := max(1, ac)+padA, max(1, n)+padC
	a := randMatrix(rnd, ar, ac, lda, 1e30)
	c := randMatrix(rnd, n, n, ldc, 7)
	if beta == 0 {
		for i := range c {
			c[i] = math.NaN()
		}
	}
	trans := tA == blas.Trans
	want, scale := refGemm(trans, !trans, n, n, k, alpha, a, lda, a, lda, beta, c, ldc)
	name := fmt.Sprintf("ul=%c tA=%c n=%d k=%d alpha=%v beta=%v", ul, tA, n, k, alpha, beta)

	check := func(prec string, got, orig []float64, eps float64) {
		for i := range n {
			for j := range n {
				g, o := got[i*ldc+j], orig[i*ldc+j]
				inTri := (ul == blas.Upper && j >= i) || (ul == blas.Lower && j <= i)
				if !inTri {
					if !(g == o || math.IsNaN(g) && math.IsNaN(o)) {
						t.Errorf("%s %s: C[%d,%d] outside the triangle modified: %v -> %v", prec, name, i, j, o, g)
						return
					}
					continue
				}
				w := want[i*n+j]
				tol := 2*float64(k+4)*eps*scale[i*n+j] + 1e-300
				if d := math.Abs(g - w); !(d <= tol) {
					t.Errorf("%s %s: C[%d,%d] = %v, want %v", prec, name, i, j, g, w)
					return
				}
			}
		}
	}
	got := append([]float64(nil), c...)
	Implementation{}.Dsyrk(ul, tA, n, k, alpha, a, lda, beta, got, ldc)
	check("Dsyrk", got, c, 0x1p-53)

	a32, c32 := toF32(a), toF32(c)
	want, scale = refGemm(trans, !trans, n, n, k, float64(float32(alpha)), toF64(a32), lda, toF64(a32), lda, float64(float32(beta)), toF64(c32), ldc)
	got32 := append([]float32(nil), c32...)
	Implementation{}.Ssyrk(ul, tA, n, k, float32(alpha), a32, lda, float32(beta), got32, ldc)
	check("Ssyrk", toF64(got32), toF64(c32), 0x1p-24)
}

// TestSyrkParallel runs larger updates with several GOMAXPROCS values so
// that the triangle is split into strips, including strips taller than one
// cache block.
func TestSyrkParallel(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	for _, l := range allLevels() {
		if l == levelGonum {
			continue
		}
		t.Run(l.String(), func(t *testing.T) {
			withLevel(t, l, func() {
				idx := 0
				shapes := [][2]int{{300, 70}, {1601, 9}}
				if raceEnabled {
					shapes = [][2]int{{300, 70}}
				}
				for _, procs := range []int{1, 2, 3, 4} {
					for _, nk := range shapes {
						for _, ul := range []blas.Uplo{blas.Upper, blas.Lower} {
							for _, tA := range []blas.Transpose{blas.NoTrans, blas.Trans} {
								idx++
								withProcs(procs, func() {
									testSyrkCase(t, ul, tA, nk[0], nk[1], -0.5, betas[idx%3], idx%2, 1, uint64(idx))
								})
							}
						}
					}
				}
			})
		})
	}
}

// TestSyrkAgainstGonum compares Dsyrk with gonum on a large problem that
// uses several levels of the recursion and parallel GEMMs.
func TestSyrkAgainstGonum(t *testing.T) {
	rnd := rand.New(rand.NewPCG(3, 4))
	for _, tA := range []blas.Transpose{blas.NoTrans, blas.Trans} {
		for _, ul := range []blas.Uplo{blas.Upper, blas.Lower} {
			n, k := 530, 257
			ar, ac := n, k
			if tA == blas.Trans {
				ar, ac = k, n
			}
			a := randMatrix(rnd, ar, ac, ac, 0)
			c := randMatrix(rnd, n, n, n, 0)
			want := append([]float64(nil), c...)
			gonum.Implementation{}.Dsyrk(ul, tA, n, k, 1.5, a, ac, 0.5, want, n)
			got := append([]float64(nil), c...)
			Implementation{}.Dsyrk(ul, tA, n, k, 1.5, a, ac, 0.5, got, n)
			if d := maxRelDiff(got, want); d > 1e-12 {
				t.Errorf("Dsyrk %c %c: max relative difference to gonum %g", ul, tA, d)
			}
		}
	}
}

// TestSyrkPanics checks that invalid arguments panic with gonum's messages.
func TestSyrkPanics(t *testing.T) {
	a := make([]float64, 100)
	type args struct {
		ul       blas.Uplo
		tA       blas.Transpose
		n, k     int
		lda, ldc int
		la, lc   int
	}
	cases := []args{
		{blas.Uplo('x'), blas.NoTrans, 2, 2, 2, 2, 4, 4},
		{blas.Upper, blas.Transpose('x'), 2, 2, 2, 2, 4, 4},
		{blas.Upper, blas.NoTrans, -1, 2, 2, 2, 4, 4},
		{blas.Upper, blas.NoTrans, 2, -1, 2, 2, 4, 4},
		{blas.Upper, blas.NoTrans, 2, 3, 2, 2, 9, 9},
		{blas.Upper, blas.Trans, 3, 2, 2, 3, 9, 9},
		{blas.Lower, blas.NoTrans, 3, 2, 2, 2, 9, 9},
		{blas.Lower, blas.NoTrans, 3, 2, 2, 3, 5, 9},
		{blas.Lower, blas.NoTrans, 3, 2, 2, 3, 6, 8},
		{blas.Lower, blas.NoTrans, 3, 2, 2, 3, 6, 9}, // valid
	}
	catch := func(f func()) (r any) {
		defer func() { r = recover() }()
		f()
		return nil
	}
	for _, l := range allLevels() {
		withLevel(t, l, func() {
			for _, tc := range cases {
				want := catch(func() {
					gonum.Implementation{}.Dsyrk(tc.ul, tc.tA, tc.n, tc.k, 1, a[:tc.la], tc.lda, 0, make([]float64, tc.lc), tc.ldc)
				})
				got := catch(func() {
					Implementation{}.Dsyrk(tc.ul, tc.tA, tc.n, tc.k, 1, a[:tc.la], tc.lda, 0, make([]float64, tc.lc), tc.ldc)
				})
				if got != want {
					t.Errorf("%v Dsyrk(%+v): panic %v, want %v", l, tc, got, want)
				}
				got = catch(func() {
					Implementation{}.Ssyrk(tc.ul, tc.tA, tc.n, tc.k, 1, make([]float32, tc.la), tc.lda, 0, make([]float32, tc.lc), tc.ldc)
				})
				if got != want {
					t.Errorf("%v Ssyrk(%+v): panic %v, want %v", l, tc, got, want)
				}
			}
		})
	}
}
