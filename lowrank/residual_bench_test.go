package lowrank

import (
	"math/rand/v2"
	"testing"

	"github.com/wtool/wtool/io/arch"
	"github.com/wtool/wtool/tensors"
)

// BenchmarkResidual: a 14336 x 4096 residual at rank 64 written as BF16,
// rounded once from float64 (residualInto), against the float32 residual
// rounded again (setResidual + FromFloat32).
func BenchmarkResidual(b *testing.B) {
	const m, n, k = 14336, 4096, 64
	rng := rand.New(rand.NewPCG(1, 2))
	w := make([]float32, m*n)
	for i := range w {
		w[i] = float32(rng.NormFloat64())
	}
	a := &AdapterInit{M: m, N: n, Rank: k, Scaling: 1, A: make([]float32, k*n), B: make([]float32, m*k)}
	for i := range a.A {
		a.A[i] = float32(rng.NormFloat64())
	}
	for i := range a.B {
		a.B[i] = float32(rng.NormFloat64())
	}
	lin := &arch.Module{Kind: arch.Linear, OutFeatures: m, InFeatures: n}
	c1d := &arch.Module{Kind: arch.Conv1D, OutFeatures: m, InFeatures: n}
	dst := make([]byte, 2*m*n)
	b.Run("once", func(b *testing.B) {
		for range b.N {
			residualInto(dst, tensors.BF16, lin, w, a.B, a.A, m, k, n, a.scales())
		}
	})
	b.Run("once-conv1d", func(b *testing.B) {
		for range b.N {
			residualInto(dst, tensors.BF16, c1d, w, a.B, a.A, m, k, n, a.scales())
		}
	})
	b.Run("twice", func(b *testing.B) {
		for range b.N {
			a.setResidual(w)
			tensors.FromFloat32("x", tensors.BF16, []int64{m, n}, a.Residual)
		}
	})
}
