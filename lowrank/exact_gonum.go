// Copyright ©2025 The wtool Authors.

//go:build !openblas || !cgo

package lowrank

import (
	"fmt"

	"gonum.org/v1/gonum/blas/blas64"
	"gonum.org/v1/gonum/lapack"
	"gonum.org/v1/gonum/lapack/gonum"
	"gonum.org/v1/gonum/lapack/lapack64"
)

// exactBackend names the implementation of the exact SVD in this build.
const exactBackend = "pure Go (gonum Dgebrd + Dorgbr, blocked bidiagonal QR)"

// svd64 computes the thin SVD a = U·diag(s)·Vt of the m×n row-major float64
// matrix a, which it destroys: U is m×r, Vt is r×n, r = min(m, n), s is
// descending. Without vectors only s is returned.
func svd64(a []float64, m, n int, vectors bool) (u, s, vt []float64, err error) {
	if !vectors {
		s = make([]float64, min(m, n))
		A := blas64.General{Rows: m, Cols: n, Stride: n, Data: a}
		none := blas64.General{Stride: 1}
		work := make([]float64, 1)
		lapack64.Gesvd(lapack.SVDNone, lapack.SVDNone, A, none, none, s, work, -1)
		work = make([]float64, int(work[0]))
		if !lapack64.Gesvd(lapack.SVDNone, lapack.SVDNone, A, none, none, s, work, len(work)) {
			return nil, nil, nil, fmt.Errorf("%w (Dgesvd, %d×%d)", ErrNoConvergence, m, n)
		}
		return nil, s, nil, nil
	}
	if m < n {
		// A = (Aᵀ)ᵀ = (U'·S·Vt')ᵀ = Vt'ᵀ·S·U'ᵀ.
		ut, s, vtt, err := svdTall(transpose64(a, m, n), n, m)
		if err != nil {
			return nil, nil, nil, err
		}
		return transpose64(vtt, m, m), s, transpose64(ut, n, m), nil
	}
	return svdTall(a, m, n)
}

// svdTall is svd64 with vectors for m >= n. It reduces A to upper bidiagonal
// form (Dgebrd), forms Q and Pᵀ (Dorgbr) and runs the implicit-shift
// bidiagonal QR iteration. The rotations of the left singular vectors are
// applied to the rows of Qᵀ (contiguous in row-major storage) rather than to
// the columns of Q, which is an order of magnitude faster for large n.
func svdTall(a []float64, m, n int) (u, s, vt []float64, err error) {
	impl := gonum.Implementation{}
	d := make([]float64, n)
	e := make([]float64, max(n-1, 1))
	tauQ := make([]float64, n)
	tauP := make([]float64, n)
	work := make([]float64, 1)
	impl.Dgebrd(m, n, a, n, d, e, tauQ, tauP, work, -1)
	lwork := int(work[0])
	impl.Dorgbr(lapack.GeneratePT, n, n, m, a, n, tauP, work, -1)
	lwork = max(lwork, int(work[0]))
	impl.Dorgbr(lapack.GenerateQ, m, n, n, a, n, tauQ, work, -1)
	lwork = max(lwork, int(work[0]), 4*n)
	work = make([]float64, lwork)
	impl.Dgebrd(m, n, a, n, d, e, tauQ, tauP, work, lwork)

	vt = make([]float64, n*n)
	copy(vt, a[:n*n])
	impl.Dorgbr(lapack.GeneratePT, n, n, m, vt, n, tauP, work, lwork)
	impl.Dorgbr(lapack.GenerateQ, m, n, n, a, n, tauQ, work, lwork)
	qt := transpose64(a, m, n) // n×m

	if !bdsqr(n, m, d, e[:max(n-1, 0)], vt, qt) {
		return nil, nil, nil, fmt.Errorf("%w (bidiagonal QR, %d×%d)", ErrNoConvergence, m, n)
	}
	return transpose64(qt, n, m), d, vt, nil
}
