package lowrank

import (
	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"
)

// lowRankRows computes the product B diag(scale) A (B m x k, A k x n, both
// float32 row-major; scale nil for none) in float64 blocks of rows, through
// the fast GEMM, and hands each block (rows [i0, i0+len(block)/n), row-major)
// to fn. Memory stays at one block, whatever m is.
func lowRankRows(b, a []float32, m, k, n int, scale []float64, fn func(i0 int, block []float64)) {
	if m == 0 || n == 0 {
		return
	}
	a64 := make([]float64, k*n)
	for i, v := range a {
		a64[i] = float64(v)
	}
	rows := max(1, min(m, (1<<19)/max(n, 1))) // ~4 MiB blocks
	b64 := make([]float64, rows*k)
	out := make([]float64, rows*n)
	for i0 := 0; i0 < m; i0 += rows {
		r := min(rows, m-i0)
		for i := range r {
			for j := range k {
				v := float64(b[(i0+i)*k+j])
				if scale != nil {
					v *= scale[j]
				}
				b64[i*k+j] = v
			}
		}
		if k == 0 {
			clear(out[:r*n])
		} else {
			blas64.Gemm(blas.NoTrans, blas.NoTrans, 1,
				blas64.General{Rows: r, Cols: k, Stride: k, Data: b64},
				blas64.General{Rows: k, Cols: n, Stride: n, Data: a64},
				0, blas64.General{Rows: r, Cols: n, Stride: n, Data: out})
		}
		fn(i0, out[:r*n])
	}
}
