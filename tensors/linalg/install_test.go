// Copyright ©2025 The wtool Authors.

//go:build !openblas

package linalg_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"gonum.org/v1/gonum/blas/blas32"
	"gonum.org/v1/gonum/blas/blas64"
	"gonum.org/v1/gonum/mat"

	"github.com/wtool/wtool/tensors/linalg"
)

// TestInstalled checks the init side effect and that gonum's mat and LAPACK
// (blocked Cholesky and QR, which call Dgemm/Dsyrk) give correct results
// with the installed implementation.
func TestInstalled(t *testing.T) {
	if _, ok := blas32.Implementation().(linalg.Implementation); !ok {
		t.Errorf("blas32 implementation is %T, want linalg.Implementation", blas32.Implementation())
	}
	if _, ok := blas64.Implementation().(linalg.Implementation); !ok {
		t.Errorf("blas64 implementation is %T, want linalg.Implementation", blas64.Implementation())
	}

	rnd := rand.New(rand.NewPCG(7, 8))
	const n = 300
	x := mat.NewDense(2*n, n, nil)
	for i := range 2 * n {
		for j := range n {
			x.Set(i, j, rnd.NormFloat64())
		}
	}
	// Gram matrix via SymOuterK (Dsyrk) and via Mul (Dgemm) must agree.
	var g mat.SymDense
	g.SymOuterK(1, x.T())
	var g2 mat.Dense
	g2.Mul(x.T(), x)
	if !mat.EqualApprox(&g, &g2, 1e-10) {
		t.Errorf("SymOuterK and Mul disagree")
	}
	// Cholesky of the Gram matrix reconstructs it.
	var chol mat.Cholesky
	if !chol.Factorize(&g) {
		t.Fatal("Cholesky failed on a positive definite matrix")
	}
	var rec mat.SymDense
	chol.ToSym(&rec)
	if !mat.EqualApprox(&rec, &g, 1e-8*float64(n)) {
		t.Errorf("Cholesky reconstruction error too large")
	}
	// QR of x reconstructs x.
	var qr mat.QR
	qr.Factorize(x)
	var q, r, qrx mat.Dense
	qr.QTo(&q)
	qr.RTo(&r)
	qrx.Mul(&q, &r)
	if d := maxAbsDiff(&qrx, x); d > 1e-10 {
		t.Errorf("QR reconstruction error %g", d)
	}
}

func maxAbsDiff(a, b mat.Matrix) float64 {
	r, c := a.Dims()
	var d float64
	for i := range r {
		for j := range c {
			d = math.Max(d, math.Abs(a.At(i, j)-b.At(i, j)))
		}
	}
	return d
}

// Importing linalg makes gonum's mat package use the fast kernels.
func Example_gonumMat() {
	_, ok := blas64.Implementation().(linalg.Implementation)
	fmt.Println("installed:", ok)
	a := mat.NewDense(2, 3, []float64{1, 2, 3, 4, 5, 6})
	b := mat.NewDense(3, 2, []float64{7, 8, 9, 10, 11, 12})
	var c mat.Dense
	c.Mul(a, b)
	fmt.Println(mat.Formatted(&c))
	// Output:
	// installed: true
	// ⎡ 58   64⎤
	// ⎣139  154⎦
}
