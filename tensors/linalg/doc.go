// Copyright ©2025 The wtool Authors.

// Package linalg provides fast dense matrix multiplication (GEMM) for float32
// and float64 in pure Go, using Go assembly micro-kernels on amd64.
//
// The central type is [Implementation], a drop-in replacement for gonum's
// pure-Go BLAS (gonum.org/v1/gonum/blas/gonum.Implementation) that overrides
// Sgemm, Dgemm, Ssyrk and Dsyrk with a cache-blocked, packed, multi-threaded
// algorithm in the style of BLIS/GotoBLAS. All other BLAS routines are
// gonum's. [MatMul32] and [MatMul64] are convenience wrappers for plain
// products of densely stored matrices.
//
// # Side effect of importing this package
//
// Unless the program is built with the "openblas" build tag, importing linalg
// (even as import _ "github.com/wtool/wtool/tensors/linalg") installs
// Implementation{} as the process-wide BLAS of gonum by calling
// blas32.Use and blas64.Use in an init function. From then on gonum's mat,
// blas32, blas64 and lapack/gonum packages (whose blocked factorisations call
// Dgemm and Dsyrk) use the fast kernels.
//
// # Kernels and CPU dispatch
//
// The kernels are chosen once at start-up with golang.org/x/sys/cpu:
//
//   - AVX-512F: 12×32 float32 and 12×16 float64 register tiles;
//   - AVX2 and FMA: 6×16 float32 and 6×8 float64 register tiles;
//   - otherwise (and on every non-amd64 platform, or with the "purego" build
//     tag) all routines fall back to gonum's implementation.
//
// # Parallelism
//
// Large products are split into at most runtime.GOMAXPROCS(0) blocks (of
// rows or columns of C, or of the inner dimension when C is small; SYRK
// splits the triangle into strips of equal area) that are computed
// concurrently; small products run on the calling goroutine. The blocks are
// run by the calling goroutine and a team of worker goroutines that are
// started on first use and then live for the rest of the process: after a
// task an idle worker polls for new work for 200µs (yielding with
// runtime.Gosched) and then blocks, because waking a sleeping thread costs
// up to ~100µs on virtual machines. Concurrent calls are safe as long as
// they do not write to the same memory.
//
// Products with m == 1 or n == 1 are computed by gonum's Sgemv/Dgemv, and
// very small products (m·n·k < 256) by gonum's Sgemm/Dgemm.
//
// # Numerical behaviour
//
// Results are not bit-for-bit identical to gonum or to the reference BLAS:
// the inner products are accumulated in a different order, with fused
// multiply-adds, and alpha is applied to A before the products. The error is
// bounded by the usual k·ε·|alpha|·|A|·|B| + ε·|beta|·|C| estimate. As in the
// reference BLAS, beta == 0 means that C is not read (NaNs in C are
// overwritten).
package linalg
