// Copyright ©2025 The wtool Authors.

package linalg

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"gonum.org/v1/gonum/blas"
)

// benchShapes are the products C (m×n) = A (m×k) · B (k×n) benchmarked for
// Sgemm and Dgemm, as {m, n, k}.
var benchShapes = [][3]int{
	{512, 512, 512},
	{1024, 1024, 1024},
	{2048, 2048, 2048},
	{4096, 266, 4096}, // randomized SVD: A (4096×4096) times a 4096×266 sketch
	{8192, 1024, 1024},
}

func benchName(s [3]int) string { return fmt.Sprintf("m%d_n%d_k%d", s[0], s[1], s[2]) }

func BenchmarkSgemm(b *testing.B) {
	for _, s := range benchShapes {
		b.Run(benchName(s), func(b *testing.B) { benchSgemm(b, s[0], s[1], s[2], blas.NoTrans, blas.NoTrans) })
	}
}

func BenchmarkDgemm(b *testing.B) {
	for _, s := range benchShapes {
		b.Run(benchName(s), func(b *testing.B) { benchDgemm(b, s[0], s[1], s[2], blas.NoTrans, blas.NoTrans) })
	}
}

// BenchmarkSgemmTrans covers the transposed layouts used for Gram matrices
// (Aᵀ·A), cost matrices (A·Bᵀ) and the randomized SVD (Aᵀ·Q).
func BenchmarkSgemmTrans(b *testing.B) {
	b.Run("TN/m1024_n1024_k4096", func(b *testing.B) { benchSgemm(b, 1024, 1024, 4096, blas.Trans, blas.NoTrans) })
	b.Run("NT/m1024_n1024_k4096", func(b *testing.B) { benchSgemm(b, 1024, 1024, 4096, blas.NoTrans, blas.Trans) })
	// Randomized SVD: Aᵀ·Q with A 4096×4096 and Q 4096×266.
	b.Run("TN/m4096_n266_k4096", func(b *testing.B) { benchSgemm(b, 4096, 266, 4096, blas.Trans, blas.NoTrans) })
}

// BenchmarkSgemmSmall measures the overhead on small products.
func BenchmarkSgemmSmall(b *testing.B) {
	for _, n := range []int{4, 16, 32, 64, 96, 128, 192, 256} {
		b.Run(fmt.Sprint(n), func(b *testing.B) { benchSgemm(b, n, n, n, blas.NoTrans, blas.NoTrans) })
	}
}

func benchSgemm(b *testing.B, m, n, k int, tA, tB blas.Transpose) {
	rnd := rand.New(rand.NewPCG(1, 2))
	a := make([]float32, m*k)
	bm := make([]float32, k*n)
	c := make([]float32, m*n)
	for i := range a {
		a[i] = rnd.Float32()
	}
	for i := range bm {
		bm[i] = rnd.Float32()
	}
	lda, ldb := k, n
	if tA == blas.Trans {
		lda = m
	}
	if tB == blas.Trans {
		ldb = k
	}
	impl := Implementation{}
	b.ResetTimer()
	for b.Loop() {
		impl.Sgemm(tA, tB, m, n, k, 1, a, lda, bm, ldb, 0, c, n)
	}
	b.ReportMetric(2*float64(m)*float64(n)*float64(k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
}

func benchDgemm(b *testing.B, m, n, k int, tA, tB blas.Transpose) {
	rnd := rand.New(rand.NewPCG(1, 2))
	a := make([]float64, m*k)
	bm := make([]float64, k*n)
	c := make([]float64, m*n)
	for i := range a {
		a[i] = rnd.Float64()
	}
	for i := range bm {
		bm[i] = rnd.Float64()
	}
	lda, ldb := k, n
	if tA == blas.Trans {
		lda = m
	}
	if tB == blas.Trans {
		ldb = k
	}
	impl := Implementation{}
	b.ResetTimer()
	for b.Loop() {
		impl.Dgemm(tA, tB, m, n, k, 1, a, lda, bm, ldb, 0, c, n)
	}
	b.ReportMetric(2*float64(m)*float64(n)*float64(k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
}

// BenchmarkSyrk measures Gram matrices XᵀX of a 4096×1024 matrix X. The
// reported GFLOP/s count n*(n+1)*k flops, i.e. only the referenced triangle.
func BenchmarkSyrk(b *testing.B) {
	const n, k = 1024, 4096
	rnd := rand.New(rand.NewPCG(1, 2))
	b.Run("Ssyrk/n1024_k4096", func(b *testing.B) {
		x := make([]float32, k*n)
		for i := range x {
			x[i] = rnd.Float32()
		}
		c := make([]float32, n*n)
		for b.Loop() {
			Implementation{}.Ssyrk(blas.Upper, blas.Trans, n, k, 1, x, n, 0, c, n)
		}
		b.ReportMetric(float64(n)*float64(n+1)*float64(k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
	})
	b.Run("Dsyrk/n1024_k4096", func(b *testing.B) {
		x := make([]float64, k*n)
		for i := range x {
			x[i] = rnd.Float64()
		}
		c := make([]float64, n*n)
		for b.Loop() {
			Implementation{}.Dsyrk(blas.Upper, blas.Trans, n, k, 1, x, n, 0, c, n)
		}
		b.ReportMetric(float64(n)*float64(n+1)*float64(k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
	})
}
