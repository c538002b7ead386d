package lowrank

import (
	"fmt"
	"math"
)

// AdapterInit is an SVD-based adapter initialisation of an m x n weight W:
// W = Residual + (low-rank part), the low-rank part built from the top Rank
// singular triplets.
type AdapterInit struct {
	M, N, Rank int
	// PiSSA: A (Rank x n) and B (m x Rank) are PEFT's lora_A and lora_B, and
	// W = Residual + Scaling * B A.
	// SORSA and SVFit: A = V_r^T (Rank x n), B = U_r (m x Rank) and
	// W = Residual + B diag(S) A.
	A, B []float32
	S    []float64 // the top singular values
	// Scaling is PEFT's lora_alpha / r (PiSSA only; 1 for the others).
	Scaling float64
	// Residual = W minus the low-rank part, computed from the float32
	// weight in float64 and rounded once to float32.
	Residual []float32
	// Energy is the fraction of W's squared Frobenius norm the kept
	// singular values hold.
	Energy float64
	// Orthonormal is true for SORSA and SVFit: the low-rank part is
	// B diag(S) A; for PiSSA it is Scaling * B A.
	Orthonormal bool
}

// LowRank returns the low-rank part the adapter adds to the residual.
func (a *AdapterInit) LowRank() []float64 {
	out := make([]float64, a.M*a.N)
	a.lowRank(func(i0 int, block []float64) { copy(out[i0*a.N:], block) })
	return out
}

func (a *AdapterInit) lowRank(fn func(i0 int, block []float64)) {
	lowRankRows(a.B, a.A, a.M, a.Rank, a.N, a.scales(), fn)
}

// topTriplets is the shared first step: the top-rank SVD of W (the rank
// chosen by rule) and W's squared Frobenius norm.
func topTriplets(w []float32, m, n int, rule RankRule, o SVDOptions) (*Factors, int, float64, error) {
	if len(w) != m*n {
		return nil, 0, 0, fmt.Errorf("%d values for a %d x %d matrix", len(w), m, n)
	}
	if err := rule.Validate(); err != nil {
		return nil, 0, 0, err
	}
	var total float64
	for i, v := range w {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return nil, 0, 0, fmt.Errorf("non-finite value at index %d", i)
		}
		total += float64(v) * float64(v)
	}
	k, fixed, err := rule.Fixed(m, n)
	if err != nil {
		return nil, 0, 0, err
	}
	if fixed {
		o.Rank = k
		f, err := TruncatedSVD(w, m, n, o)
		return f, k, total, err
	}
	k = min(max(32, min(m, n)/8), min(m, n))
	for {
		o.Rank = k
		f, err := TruncatedSVD(w, m, n, o)
		if err != nil {
			return nil, 0, 0, err
		}
		r := EnergyRank(f.S, total, rule.Energy)
		if r < len(f.S) || k == min(m, n) {
			return f, r, total, nil
		}
		k = min(2*k, min(m, n))
	}
}

// setResidual computes Residual = W - (low-rank part) in float64 blocks.
func (a *AdapterInit) setResidual(w []float32) {
	a.Residual = make([]float32, a.M*a.N)
	a.lowRank(func(i0 int, block []float64) {
		base := i0 * a.N
		for i, v := range block {
			a.Residual[base+i] = float32(float64(w[base+i]) - v)
		}
	})
}

// PiSSA initialises a LoRA adapter from the principal singular components
// (Meng et al., 2024) exactly as Hugging Face PEFT does for
// init_lora_weights="pissa": with scaling = alpha / r, S_r /= scaling,
// lora_A = diag(sqrt(S_r)) V_r^T, lora_B = U_r diag(sqrt(S_r)) and the frozen
// residual W - scaling * B A, so that residual + (alpha/r) B A = W. alpha <= 0
// means alpha = r (scaling 1).
func PiSSA(w []float32, m, n int, rule RankRule, alpha float64, o SVDOptions) (*AdapterInit, error) {
	a, err := pissaFactors(w, m, n, rule, alpha, o)
	if err != nil {
		return nil, err
	}
	a.setResidual(w)
	return a, nil
}

// pissaFactors is PiSSA without the residual.
func pissaFactors(w []float32, m, n int, rule RankRule, alpha float64, o SVDOptions) (*AdapterInit, error) {
	f, k, total, err := topTriplets(w, m, n, rule, o)
	if err != nil {
		return nil, err
	}
	if alpha <= 0 {
		alpha = float64(k)
	}
	a := &AdapterInit{M: m, N: n, Rank: k, Scaling: alpha / float64(k), S: append([]float64(nil), f.S[:k]...),
		A: make([]float32, k*n), B: make([]float32, m*k)}
	var kept float64
	for r := range k {
		kept += f.S[r] * f.S[r]
		sq := math.Sqrt(f.S[r] / a.Scaling)
		for j := range n {
			a.A[r*n+j] = float32(sq * float64(f.Vt[r*f.N+j]))
		}
		for i := range m {
			a.B[i*k+r] = float32(sq * float64(f.U[i*f.K+r]))
		}
	}
	a.Energy = energyOf(kept, total)
	return a, nil
}

func energyOf(kept, total float64) float64 {
	if total == 0 {
		return 1
	}
	return math.Min(1, kept/total)
}

func svdStyle(w []float32, m, n int, rule RankRule, o SVDOptions) (*AdapterInit, error) {
	f, k, total, err := topTriplets(w, m, n, rule, o)
	if err != nil {
		return nil, err
	}
	a := &AdapterInit{M: m, N: n, Rank: k, Scaling: 1, S: append([]float64(nil), f.S[:k]...),
		A: make([]float32, k*n), B: make([]float32, m*k), Orthonormal: true}
	var kept float64
	for r := range k {
		kept += f.S[r] * f.S[r]
		copy(a.A[r*n:(r+1)*n], f.Vt[r*f.N:r*f.N+n])
		for i := range m {
			a.B[i*k+r] = f.U[i*f.K+r]
		}
	}
	a.Energy = energyOf(kept, total)
	return a, nil
}

// SORSA initialises a SORSA adapter (Cao, 2024): W = W_r + U_p diag(S_p) V_p^T
// with the top singular triplets trainable (A = V_p^T, S = S_p, B = U_p; the
// orthonormal regulariser of training keeps A and B near orthonormal) and the
// residual W_r frozen.
func SORSA(w []float32, m, n int, rule RankRule, o SVDOptions) (*AdapterInit, error) {
	a, err := svdStyle(w, m, n, rule, o)
	if err == nil {
		a.setResidual(w)
	}
	return a, err
}

// SVFit initialises an SVFit adapter: the same split as SORSA, but only the
// top singular values S are trained; U_r and V_r^T are frozen and must be
// stored (SVD signs are not unique, so recomputing them at load time would not
// reproduce the adapter).
func SVFit(w []float32, m, n int, rule RankRule, o SVDOptions) (*AdapterInit, error) {
	a, err := svdStyle(w, m, n, rule, o)
	if err == nil {
		a.setResidual(w)
	}
	return a, err
}

// scales returns the per-rank scale of the low-rank part: B diag(scale) A.
func (a *AdapterInit) scales() []float64 {
	s := make([]float64, a.Rank)
	for k := range s {
		if a.Orthonormal {
			s[k] = a.S[k]
		} else {
			s[k] = a.Scaling
		}
	}
	return s
}
