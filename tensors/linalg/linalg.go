// Copyright ©2025 The wtool Authors.

package linalg

import (
	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
)

// Implementation is a BLAS implementation (blas.Float32 and blas.Float64)
// that embeds gonum's pure-Go implementation and replaces its Level 3
// routines Sgemm, Dgemm, Ssyrk and Dsyrk with fast blocked kernels. The zero
// value is ready to use.
type Implementation struct{ gonum.Implementation }

var (
	_ blas.Float32 = Implementation{}
	_ blas.Float64 = Implementation{}
)

// Panic messages, identical to gonum's.
const (
	mLT0         = "blas: m < 0"
	nLT0         = "blas: n < 0"
	kLT0         = "blas: k < 0"
	badUplo      = "blas: illegal triangle"
	badTranspose = "blas: illegal transpose"
	badLdA       = "blas: bad leading dimension of A"
	badLdB       = "blas: bad leading dimension of B"
	badLdC       = "blas: bad leading dimension of C"
	shortA       = "blas: insufficient length of a"
	shortB       = "blas: insufficient length of b"
	shortC       = "blas: insufficient length of c"
)

// tinyWork is the number of multiply-adds below which gonum's implementation
// is faster than packing the operands. It is a variable so that tests can
// disable the shortcut.
var tinyWork = 256

// tiny reports whether an m×n×k product is small enough for gonum's code.
// Negative dimensions also go to gonum, which panics with the same message.
func tiny(m, n, k int) bool {
	return m < tinyWork && n < tinyWork && k < tinyWork && m*n*k < tinyWork
}

// isTrans reports whether t requests a transpose; it panics with gonum's
// message if t is not a valid blas.Transpose.
func isTrans(t blas.Transpose) bool {
	switch t {
	case blas.NoTrans:
		return false
	case blas.Trans, blas.ConjTrans:
		return true
	}
	panic(badTranspose)
}

// checkGemm validates GEMM arguments exactly like gonum's Sgemm/Dgemm and
// reports whether A and B are transposed.
func checkGemm(tA, tB blas.Transpose, m, n, k, lenA, lda, lenB, ldb, lenC, ldc int) (aTrans, bTrans bool) {
	aTrans = isTrans(tA)
	bTrans = isTrans(tB)
	if m < 0 {
		panic(mLT0)
	}
	if n < 0 {
		panic(nLT0)
	}
	if k < 0 {
		panic(kLT0)
	}
	if aTrans {
		if lda < max(1, m) {
			panic(badLdA)
		}
	} else if lda < max(1, k) {
		panic(badLdA)
	}
	if bTrans {
		if ldb < max(1, k) {
			panic(badLdB)
		}
	} else if ldb < max(1, n) {
		panic(badLdB)
	}
	if ldc < max(1, n) {
		panic(badLdC)
	}
	if m == 0 || n == 0 {
		return
	}
	if aTrans {
		if lenA < (k-1)*lda+m {
			panic(shortA)
		}
	} else if lenA < (m-1)*lda+k {
		panic(shortA)
	}
	if bTrans {
		if lenB < (n-1)*ldb+k {
			panic(shortB)
		}
	} else if lenB < (k-1)*ldb+n {
		panic(shortB)
	}
	if lenC < (m-1)*ldc+n {
		panic(shortC)
	}
	return
}

// gemvForm describes a GEMM with m == 1 or n == 1 as the matrix-vector
// product y = alpha*op(M)*x + beta*y, computed by gonum's Sgemv/Dgemv, which
// is faster than the blocked algorithm for such shapes.
type gemvForm struct {
	t          blas.Transpose // op applied to the matrix
	rows, cols int            // shape of the stored matrix
	matIsA     bool           // the matrix is A (x is B); otherwise the matrix is B
	ld         int            // leading dimension of the matrix
	incX, incY int
}

// asGemv returns the matrix-vector form of a validated GEMM with m == 1 or
// n == 1.
func asGemv(aTrans, bTrans bool, m, n, k, lda, ldb, ldc int) gemvForm {
	if n == 1 {
		// c[:, 0] = alpha*op(A)*op(B)[:, 0] + beta*c[:, 0]
		g := gemvForm{t: blas.NoTrans, rows: m, cols: k, matIsA: true, ld: lda, incX: ldb, incY: ldc}
		if aTrans {
			g.t, g.rows, g.cols = blas.Trans, k, m
		}
		if bTrans {
			g.incX = 1
		}
		return g
	}
	// c[0, :] = alpha*op(B)ᵀ*op(A)[0, :] + beta*c[0, :]
	g := gemvForm{t: blas.Trans, rows: k, cols: n, ld: ldb, incX: 1, incY: 1}
	if bTrans {
		g.t, g.rows, g.cols = blas.NoTrans, n, k
	}
	if aTrans {
		g.incX = lda
	}
	return g
}

// gemmChecked runs C = alpha*op(A)*op(B) + beta*C after argument checking.
// Matrix-vector shapes are passed to gemv, gonum's Sgemv or Dgemv.
func gemmChecked[T float](cfg *config[T], gemv func(tA blas.Transpose, m, n int, alpha T, a []T, lda int, x []T, incX int, beta T, y []T, incY int),
	tA, tB blas.Transpose, m, n, k int, alpha T, a []T, lda int, b []T, ldb int, beta T, c []T, ldc int) {
	aTrans, bTrans := checkGemm(tA, tB, m, n, k, len(a), lda, len(b), ldb, len(c), ldc)
	if m == 0 || n == 0 {
		return
	}
	if alpha == 0 || k == 0 {
		scaleC(m, n, beta, c, ldc)
		return
	}
	if m == 1 || n == 1 {
		g := asGemv(aTrans, bTrans, m, n, k, lda, ldb, ldc)
		mat, x := b, a
		if g.matIsA {
			mat, x = a, b
		}
		gemv(g.t, g.rows, g.cols, alpha, mat, g.ld, x, g.incX, beta, c, g.incY)
		return
	}
	gemm(cfg, aTrans, bTrans, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// Sgemm performs one of the matrix-matrix operations
//
//	C = alpha * A * B + beta * C
//	C = alpha * Aᵀ * B + beta * C
//	C = alpha * A * Bᵀ + beta * C
//	C = alpha * Aᵀ * Bᵀ + beta * C
//
// where A is an m×k or k×m dense matrix, B is an n×k or k×n dense matrix, C
// is an m×n matrix, all stored row-major, and alpha and beta are scalars. tA
// and tB specify whether A or B are transposed. If beta is zero C is not read.
// Invalid arguments cause the same panics as in gonum.
func (impl Implementation) Sgemm(tA, tB blas.Transpose, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	cfg := cfg32
	if cfg == nil || tiny(m, n, k) {
		impl.Implementation.Sgemm(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
		return
	}
	gemmChecked(cfg, impl.Implementation.Sgemv, tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// Dgemm performs one of the matrix-matrix operations
//
//	C = alpha * A * B + beta * C
//	C = alpha * Aᵀ * B + beta * C
//	C = alpha * A * Bᵀ + beta * C
//	C = alpha * Aᵀ * Bᵀ + beta * C
//
// where A is an m×k or k×m dense matrix, B is an n×k or k×n dense matrix, C
// is an m×n matrix, all stored row-major, and alpha and beta are scalars. tA
// and tB specify whether A or B are transposed. If beta is zero C is not read.
// Invalid arguments cause the same panics as in gonum.
func (impl Implementation) Dgemm(tA, tB blas.Transpose, m, n, k int, alpha float64, a []float64, lda int, b []float64, ldb int, beta float64, c []float64, ldc int) {
	cfg := cfg64
	if cfg == nil || tiny(m, n, k) {
		impl.Implementation.Dgemm(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
		return
	}
	gemmChecked(cfg, impl.Implementation.Dgemv, tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// MatMul32 computes c = op(a)·op(b) for densely packed row-major matrices,
// where op(a) is m×k and op(b) is k×n. If transA is false a holds an m×k
// matrix, otherwise a k×m matrix whose transpose is used; likewise b holds a
// k×n matrix, or an n×k one if transB is true. c must hold at least m*n
// elements and is overwritten (it is not read).
func MatMul32(c, a, b []float32, m, k, n int, transA, transB bool) {
	tA, tB, lda, ldb := matMulArgs(m, k, n, transA, transB)
	Implementation{}.Sgemm(tA, tB, m, n, k, 1, a, lda, b, ldb, 0, c, max(1, n))
}

// MatMul64 is the float64 version of MatMul32.
func MatMul64(c, a, b []float64, m, k, n int, transA, transB bool) {
	tA, tB, lda, ldb := matMulArgs(m, k, n, transA, transB)
	Implementation{}.Dgemm(tA, tB, m, n, k, 1, a, lda, b, ldb, 0, c, max(1, n))
}

func matMulArgs(m, k, n int, transA, transB bool) (tA, tB blas.Transpose, lda, ldb int) {
	tA, tB = blas.NoTrans, blas.NoTrans
	lda, ldb = k, n
	if transA {
		tA, lda = blas.Trans, m
	}
	if transB {
		tB, ldb = blas.Trans, k
	}
	return tA, tB, max(1, lda), max(1, ldb)
}
