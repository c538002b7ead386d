// Copyright ©2025 The wtool Authors.

//go:build openblas && cgo

package lowrank

/*
#cgo LDFLAGS: -llapacke -lopenblas
#include <lapacke.h>
*/
import "C"

import (
	"fmt"
	"runtime"
)

// exactBackend names the implementation of the exact SVD in this build.
const exactBackend = "LAPACK dgesdd (divide and conquer, OpenBLAS)"

// svd64 computes the thin SVD a = U·diag(s)·Vt of the m×n row-major float64
// matrix a, which it destroys: U is m×r, Vt is r×n, r = min(m, n), s is
// descending. Without vectors only s is returned.
//
// It calls LAPACK's dgesdd through LAPACKE in column-major layout on the
// same memory: the row-major m×n A is the column-major n×m Aᵀ, whose SVD
// Aᵀ = U'·S·V'ᵀ gives A = V'·S·U'ᵀ. The column-major n×r U' is the row-major
// r×n Vt, and the column-major r×m V'ᵀ is the row-major m×r U, so no
// transposition is needed.
func svd64(a []float64, m, n int, vectors bool) (u, s, vt []float64, err error) {
	r := min(m, n)
	s = make([]float64, r)
	iwork := make([]C.lapack_int, 8*r)
	jobz := C.char('N')
	ldu, ldvt := 1, 1 // leading dimensions of U' and V'ᵀ
	up, vtp := (*C.double)(nil), (*C.double)(nil)
	if vectors {
		jobz = 'S'
		u = make([]float64, m*r)
		vt = make([]float64, r*n)
		ldu, ldvt = n, r
		up, vtp = (*C.double)(&vt[0]), (*C.double)(&u[0])
	}
	call := func(work []float64, lwork int) C.lapack_int {
		return C.LAPACKE_dgesdd_work(C.LAPACK_COL_MAJOR, jobz, C.lapack_int(n), C.lapack_int(m),
			(*C.double)(&a[0]), C.lapack_int(n), (*C.double)(&s[0]),
			up, C.lapack_int(ldu), vtp, C.lapack_int(ldvt),
			(*C.double)(&work[0]), C.lapack_int(lwork), &iwork[0])
	}
	work := make([]float64, 1)
	if info := call(work, -1); info != 0 {
		return nil, nil, nil, fmt.Errorf("lowrank: dgesdd workspace query failed (info %d)", info)
	}
	work = make([]float64, int(work[0]))
	info := call(work, len(work))
	runtime.KeepAlive(a)
	runtime.KeepAlive(u)
	runtime.KeepAlive(vt)
	switch {
	case info > 0:
		return nil, nil, nil, fmt.Errorf("%w (dgesdd %d×%d, info %d)", ErrNoConvergence, m, n, info)
	case info < 0:
		return nil, nil, nil, fmt.Errorf("lowrank: dgesdd: illegal argument %d", -info)
	}
	return u, s, vt, nil
}
