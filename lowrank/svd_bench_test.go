// Copyright ©2025 The wtool Authors.

package lowrank

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// Benchmarks of the SVD engine (no timing assertions). The randomized cases
// use sklearn's automatic settings (p = 10, q = 7 since k < 0.1·min(m, n));
// bench/svd/compare.sh times the same problems against sklearn and numpy.
//
//	go test -run '^$' -bench 'SVD' ./lowrank/
//	go test -tags openblas -run '^$' -bench 'SVD' ./lowrank/

func BenchmarkTruncatedSVD(b *testing.B) {
	for _, c := range []struct{ m, n, k int }{
		{4096, 4096, 256},
		{2048, 5632, 64},
		{1024, 1024, 64},
	} {
		b.Run(fmt.Sprintf("%dx%d/k=%d", c.m, c.n, c.k), func(b *testing.B) {
			a := svdtGaussian(rand.New(rand.NewPCG(1, 2)), c.m, c.n)
			o := SVDOptions{Rank: c.k, Oversample: 10, PowerIters: AutoPowerIters, Seed: 1}
			b.ResetTimer()
			for range b.N {
				if _, err := TruncatedSVD(a, c.m, c.n, o); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkExactSVD(b *testing.B) {
	for _, n := range []int{512, 2048} {
		b.Run(fmt.Sprintf("%dx%d", n, n), func(b *testing.B) {
			a := svdtGaussian(rand.New(rand.NewPCG(3, 4)), n, n)
			b.ResetTimer()
			for range b.N {
				if _, err := ExactSVD(a, n, n); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkSingularValues(b *testing.B) {
	const n = 2048
	a := svdtGaussian(rand.New(rand.NewPCG(3, 4)), n, n)
	b.ResetTimer()
	for range b.N {
		if _, err := SingularValues(a, n, n); err != nil {
			b.Fatal(err)
		}
	}
}
