// Copyright ©2025 The wtool Authors.

package linalg

import (
	"runtime"

	"gonum.org/v1/gonum/blas"
)

// syrkBase is the order up to which a large symmetric rank-k update is
// computed in full by the parallel GEMM into a temporary matrix.
const syrkBase = 128

// checkSyrk validates SYRK arguments exactly like gonum's Ssyrk/Dsyrk and
// reports whether the upper triangle is referenced and A is transposed.
func checkSyrk(ul blas.Uplo, tA blas.Transpose, n, k, lenA, lda, lenC, ldc int) (upper, trans bool) {
	if ul != blas.Lower && ul != blas.Upper {
		panic(badUplo)
	}
	if tA != blas.Trans && tA != blas.NoTrans && tA != blas.ConjTrans {
		panic(badTranspose)
	}
	if n < 0 {
		panic(nLT0)
	}
	if k < 0 {
		panic(kLT0)
	}
	row, col := k, n
	if tA == blas.NoTrans {
		row, col = n, k
	}
	if lda < max(1, col) {
		panic(badLdA)
	}
	if ldc < max(1, n) {
		panic(badLdC)
	}
	if n == 0 {
		return
	}
	if lenA < lda*(row-1)+col {
		panic(shortA)
	}
	if lenC < ldc*(n-1)+n {
		panic(shortC)
	}
	return ul == blas.Upper, tA != blas.NoTrans
}

// syrkChecked runs the symmetric rank-k update after argument checking.
func syrkChecked[T float](cfg *config[T], ul blas.Uplo, tA blas.Transpose, n, k int, alpha T, a []T, lda int, beta T, c []T, ldc int) {
	upper, trans := checkSyrk(ul, tA, n, k, len(a), lda, len(c), ldc)
	if n == 0 {
		return
	}
	if alpha == 0 || k == 0 {
		scaleTriangle(upper, n, beta, c, ldc)
		return
	}
	syrk(cfg, upper, trans, n, k, alpha, a, lda, beta, c, ldc)
}

// scaleTriangle sets the upper or lower triangle of the n×n matrix C to
// beta*C (to zero, without reading C, if beta == 0).
func scaleTriangle[T float](upper bool, n int, beta T, c []T, ldc int) {
	for i := range n {
		lo, hi := 0, i+1
		if upper {
			lo, hi = i, n
		}
		scaleC(1, hi-lo, beta, c[i*ldc+lo:], ldc)
	}
}

// syrk computes the upper or lower triangle of C = alpha*op(A)*op(A)ᵀ +
// beta*C where op(A) is n×k (op(A) = A if !trans, Aᵀ otherwise). Arguments
// must be validated; n, k > 0 and alpha != 0.
//
// The blocked GEMM algorithm is run with a triangular mask: micro-tiles
// outside the triangle are skipped and those crossing the diagonal are
// computed into a temporary tile. For parallelism the triangle is cut into
// horizontal strips with equal numbers of elements. Small triangles with a
// long inner dimension are instead computed in full by the parallel GEMM
// (which splits the inner dimension) into a temporary matrix.
func syrk[T float](cfg *config[T], upper, trans bool, n, k int, alpha T, a []T, lda int, beta T, c []T, ldc int) {
	workers := runtime.GOMAXPROCS(0)
	big := workers > 1 && float64(n)*float64(n)*float64(k) >= 4*costWorker
	if big && n <= syrkBase {
		syrkFull(cfg, upper, trans, n, k, alpha, a, lda, beta, c, ldc)
		return
	}
	op := &operands[T]{tA: trans, tB: !trans, a: a, lda: lda, b: a, ldb: lda, alpha: alpha, tri: triLower}
	if upper {
		op.tri = triUpper
	}
	parts := 1
	if big {
		parts = workers
	}
	bounds := syrkStrips(upper, n, parts, cfg.mr)
	strip := func(r0, r1 int) {
		if upper {
			cfg.serial(op, c, ldc, beta, r0, r1, r0, n, 0, k)
		} else {
			cfg.serial(op, c, ldc, beta, r0, r1, 0, r1, 0, k)
		}
	}
	parallelFor(len(bounds)-1, func(s int) { strip(bounds[s], bounds[s+1]) })
}

// syrkStrips returns the boundaries 0 = b[0] < b[1] < ... < b[len-1] = n of
// at most parts horizontal strips of the upper or lower triangle of an n×n
// matrix with about equal numbers of elements. Inner boundaries are
// multiples of unit.
func syrkStrips(upper bool, n, parts, unit int) []int {
	// elems(r) is the number of triangle elements in rows [0, r).
	elems := func(r int) float64 {
		fr := float64(r)
		if upper {
			return fr*float64(n) - fr*(fr-1)/2
		}
		return fr * (fr + 1) / 2
	}
	total := elems(n)
	bounds := []int{0}
	r := 0
	for p := 1; p < parts; p++ {
		target := total * float64(p) / float64(parts)
		for r < n && elems(r) < target {
			r++
		}
		rb := min(roundUp(r, unit), n)
		if rb > bounds[len(bounds)-1] && rb < n {
			bounds = append(bounds, rb)
		}
	}
	return append(bounds, n)
}

// syrkFull computes the full n×n product alpha*op(A)*op(A)ᵀ into a
// temporary matrix with the parallel GEMM and merges its upper or lower
// triangle into C.
func syrkFull[T float](cfg *config[T], upper, trans bool, n, k int, alpha T, a []T, lda int, beta T, c []T, ldc int) {
	tmp := make([]T, n*n)
	gemm(cfg, trans, !trans, n, n, k, alpha, a, lda, a, lda, 0, tmp, n)
	for i := range n {
		lo, hi := 0, i+1
		if upper {
			lo, hi = i, n
		}
		crow := c[i*ldc+lo : i*ldc+hi]
		trow := tmp[i*n+lo : i*n+hi]
		if beta == 0 {
			copy(crow, trow)
			continue
		}
		for j, v := range trow {
			crow[j] = v + beta*crow[j]
		}
	}
}

// Ssyrk performs one of the symmetric rank-k operations
//
//	C = alpha * A * Aᵀ + beta * C  if tA == blas.NoTrans
//	C = alpha * Aᵀ * A + beta * C  if tA == blas.Trans or tA == blas.ConjTrans
//
// where A is an n×k or k×n matrix, C is an n×n symmetric matrix of which
// only the triangle given by ul is referenced and updated, and alpha and beta
// are scalars. If beta is zero C is not read.
func (impl Implementation) Ssyrk(ul blas.Uplo, tA blas.Transpose, n, k int, alpha float32, a []float32, lda int, beta float32, c []float32, ldc int) {
	cfg := cfg32
	if cfg == nil || tiny(n, n, k) {
		impl.Implementation.Ssyrk(ul, tA, n, k, alpha, a, lda, beta, c, ldc)
		return
	}
	syrkChecked(cfg, ul, tA, n, k, alpha, a, lda, beta, c, ldc)
}

// Dsyrk performs one of the symmetric rank-k operations
//
//	C = alpha * A * Aᵀ + beta * C  if tA == blas.NoTrans
//	C = alpha * Aᵀ * A + beta * C  if tA == blas.Trans or tA == blas.ConjTrans
//
// where A is an n×k or k×n matrix, C is an n×n symmetric matrix of which
// only the triangle given by ul is referenced and updated, and alpha and beta
// are scalars. If beta is zero C is not read.
func (impl Implementation) Dsyrk(ul blas.Uplo, tA blas.Transpose, n, k int, alpha float64, a []float64, lda int, beta float64, c []float64, ldc int) {
	cfg := cfg64
	if cfg == nil || tiny(n, n, k) {
		impl.Implementation.Dsyrk(ul, tA, n, k, alpha, a, lda, beta, c, ldc)
		return
	}
	syrkChecked(cfg, ul, tA, n, k, alpha, a, lda, beta, c, ldc)
}
