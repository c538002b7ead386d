package lowrank

import (
	"errors"
	"fmt"
	"math"

	"gonum.org/v1/gonum/mat"
)

// RankRule chooses the rank of a factorisation: exactly one of Rank (a
// count), Ratio (kept-parameter ratio rho: r = floor(rho m n / (m + n)), so
// that the factors hold rho times the matrix's parameters) or Energy (the
// smallest r whose singular values keep that fraction of the sum of squared
// singular values) is set.
type RankRule struct {
	Rank   int
	Ratio  float64
	Energy float64
}

// Validate checks that exactly one rule is set and in range.
func (r RankRule) Validate() error {
	set := 0
	if r.Rank != 0 {
		set++
		if r.Rank < 1 {
			return fmt.Errorf("rank %d must be at least 1", r.Rank)
		}
	}
	if r.Ratio != 0 {
		set++
		if !(r.Ratio > 0 && r.Ratio <= 1) {
			return fmt.Errorf("ratio %g must be in (0, 1]", r.Ratio)
		}
	}
	if r.Energy != 0 {
		set++
		if !(r.Energy > 0 && r.Energy <= 1) {
			return fmt.Errorf("energy %g must be in (0, 1]", r.Energy)
		}
	}
	if set != 1 {
		return errors.New("choose the rank with exactly one of rank, ratio or energy")
	}
	return nil
}

// Fixed returns the rank for an m x n matrix when the rule does not depend
// on the singular values (rank and ratio rules), and false for an energy
// rule.
func (r RankRule) Fixed(m, n int) (int, bool, error) {
	switch {
	case r.Rank != 0:
		if r.Rank > min(m, n) {
			return 0, true, fmt.Errorf("rank %d is larger than min(%d, %d) = %d", r.Rank, m, n, min(m, n))
		}
		return r.Rank, true, nil
	case r.Ratio != 0:
		k := int(math.Floor(r.Ratio * float64(m) * float64(n) / float64(m+n)))
		return max(1, min(k, min(m, n))), true, nil
	}
	return 0, false, nil
}

// EnergyRank returns the smallest k such that the first k squared singular
// values sum to at least energy times total (the sum of all squared singular
// values, the squared Frobenius norm), or len(s) if they never do.
func EnergyRank(s []float64, total, energy float64) int {
	var c float64
	for i, v := range s {
		c += v * v
		if c >= energy*total*(1-1e-12) {
			return i + 1
		}
	}
	return len(s)
}

// SavesParameters reports whether rank-r factors (r x n and m x r) hold
// fewer parameters than the m x n matrix.
func SavesParameters(m, n, r int) bool { return int64(r)*int64(m+n) < int64(m)*int64(n) }

// Factorization is a low-rank factorisation W ~ B A of an m x n matrix:
// A (Rank x n) maps the input to the rank, B (m x Rank) maps the rank to the
// output — the weights of nn.Linear(n, Rank, bias=False) followed by
// nn.Linear(Rank, m). The singular values are split evenly (A = sqrt(S) V^T,
// B = U sqrt(S), in the scaled space) so both factors keep similar ranges.
type Factorization struct {
	M, N, Rank int
	A          []float32 // Rank x n
	B          []float32 // m x Rank
	// S are the kept singular values of the (scaled) matrix.
	S []float64
	// Energy is the fraction of the (scaled) matrix's squared Frobenius
	// norm the kept singular values hold.
	Energy float64
	// RelError is ||W - B A||_F / ||W||_F in the original space.
	RelError float64
}

// Dense returns the rank-r reconstruction B A (m x n).
func (f *Factorization) Dense() []float32 {
	out := make([]float32, f.M*f.N)
	lowRankRows(f.B, f.A, f.M, f.Rank, f.N, nil, func(i0 int, block []float64) {
		for i, v := range block {
			out[i0*f.N+i] = float32(v)
		}
	})
	return out
}

// transform is the invertible change of basis of "scale, SVD, unscale":
// the SVD is taken of W T (right) or T W (left); the factors are mapped
// back with T^-1.
type transform struct {
	right []float64 // n scales of the columns (diagonal right transform)
	left  []float64 // m scales of the rows (diagonal left transform)
	chol  *mat.TriDense
	// chol is a lower-triangular L (n x n): the SVD is of W L and
	// A = A' L^-1 (whitening)
}

// factorize runs the common "scale, SVD, unscale" path.
func factorize(w []float32, m, n int, t transform, rule RankRule, o SVDOptions) (*Factorization, error) {
	if len(w) != m*n {
		return nil, fmt.Errorf("%d values for a %d x %d matrix", len(w), m, n)
	}
	if err := rule.Validate(); err != nil {
		return nil, err
	}
	for i, v := range w {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return nil, fmt.Errorf("non-finite value at index %d", i)
		}
	}
	ws := make([]float32, m*n) // the scaled matrix
	switch {
	case t.chol != nil:
		wd := mat.NewDense(m, n, nil)
		for i := range m {
			for j := range n {
				wd.Set(i, j, float64(w[i*n+j]))
			}
		}
		var p mat.Dense
		p.Mul(wd, t.chol)
		for i := range m {
			for j := range n {
				ws[i*n+j] = float32(p.At(i, j))
			}
		}
	default:
		for i := range m {
			for j := range n {
				v := float64(w[i*n+j])
				if t.right != nil {
					v *= t.right[j]
				}
				if t.left != nil {
					v *= t.left[i]
				}
				ws[i*n+j] = float32(v)
			}
		}
	}
	var total float64
	for _, v := range ws {
		total += float64(v) * float64(v)
	}
	k, fixed, err := rule.Fixed(m, n)
	if err != nil {
		return nil, err
	}
	var fac *Factors
	if fixed {
		o.Rank = k
		if fac, err = TruncatedSVD(ws, m, n, o); err != nil {
			return nil, err
		}
	} else {
		// energy: grow the computed rank until the kept energy is reached
		k = min(max(32, min(m, n)/8), min(m, n))
		for {
			o.Rank = k
			if fac, err = TruncatedSVD(ws, m, n, o); err != nil {
				return nil, err
			}
			r := EnergyRank(fac.S, total, rule.Energy)
			if r < len(fac.S) || k == min(m, n) {
				k = r
				break
			}
			k = min(2*k, min(m, n))
		}
	}
	f := &Factorization{M: m, N: n, Rank: k, A: make([]float32, k*n), B: make([]float32, m*k), S: append([]float64(nil), fac.S[:k]...)}
	var kept float64
	for _, s := range f.S {
		kept += s * s
	}
	if total > 0 {
		f.Energy = math.Min(1, kept/total)
	} else {
		f.Energy = 1
	}
	// A' = sqrt(S) Vt, B' = U sqrt(S) in the scaled space
	for r := range k {
		sq := math.Sqrt(f.S[r])
		for j := range n {
			f.A[r*n+j] = float32(sq * float64(fac.Vt[r*fac.N+j]))
		}
		for i := range m {
			f.B[i*k+r] = float32(sq * float64(fac.U[i*fac.K+r]))
		}
	}
	// unscale
	switch {
	case t.chol != nil:
		// A = A' L^-1, i.e. solve A L = A' (L lower triangular): L^T A^T = A'^T
		ad := mat.NewDense(k, n, nil)
		for r := range k {
			for j := range n {
				ad.Set(r, j, float64(f.A[r*n+j]))
			}
		}
		var at mat.Dense
		if err := at.Solve(t.chol.T(), ad.T()); err != nil {
			return nil, fmt.Errorf("unwhitening: %w", err)
		}
		for r := range k {
			for j := range n {
				f.A[r*n+j] = float32(at.At(j, r))
			}
		}
	default:
		if t.right != nil {
			for r := range k {
				for j := range n {
					f.A[r*n+j] = float32(float64(f.A[r*n+j]) / t.right[j])
				}
			}
		}
		if t.left != nil {
			for i := range m {
				for r := range k {
					f.B[i*k+r] = float32(float64(f.B[i*k+r]) / t.left[i])
				}
			}
		}
	}
	f.RelError = relError(w, f)
	return f, nil
}

func relError(w []float32, f *Factorization) float64 {
	var num, den float64
	lowRankRows(f.B, f.A, f.M, f.Rank, f.N, nil, func(i0 int, block []float64) {
		for i, v := range block {
			x := float64(w[i0*f.N+i])
			e := x - v
			num += e * e
			den += x * x
		}
	})
	if den == 0 {
		return 0
	}
	return math.Sqrt(num / den)
}

// SVDFactorize is plain truncated SVD: the best rank-r approximation of W in
// Frobenius norm (Eckart-Young). w is m x n row-major.
func SVDFactorize(w []float32, m, n int, rule RankRule, o SVDOptions) (*Factorization, error) {
	return factorize(w, m, n, transform{}, rule, o)
}

// positiveScales returns sqrt-free positive scales from importances,
// flooring zeros at 1e-6 of the mean so the transform stays invertible.
func positiveScales(v []float64, sqrt bool) ([]float64, error) {
	out := make([]float64, len(v))
	var mean float64
	for i, x := range v {
		if x < 0 || math.IsNaN(x) || math.IsInf(x, 0) {
			return nil, fmt.Errorf("importance %g at %d must be finite and non-negative", x, i)
		}
		if sqrt {
			x = math.Sqrt(x)
		}
		out[i] = x
		mean += x
	}
	mean /= float64(len(v))
	if mean == 0 {
		for i := range out {
			out[i] = 1
		}
		return out, nil
	}
	for i := range out {
		out[i] = max(out[i], 1e-6*mean)
	}
	return out, nil
}

// FWSVD is Fisher-weighted SVD (Hsu et al., ICLR 2022): the columns of W
// (input features) are scaled by d_j = sqrt(I_j) before the SVD and unscaled
// after, so the factorisation spends its rank where the Fisher information
// says the task loss is sensitive. importance has one value per input
// feature (n: fisher.PerInput of the weight's Fisher), or, with perRow, one
// per output row (m: fisher.PerOutput). With uniform importance it is SVD.
func FWSVD(w []float32, m, n int, importance []float64, perRow bool, rule RankRule, o SVDOptions) (*Factorization, error) {
	want := n
	if perRow {
		want = m
	}
	if len(importance) != want {
		return nil, fmt.Errorf("fwsvd: %d importances for %d %s", len(importance), want, map[bool]string{false: "input features", true: "output rows"}[perRow])
	}
	d, err := positiveScales(importance, true)
	if err != nil {
		return nil, fmt.Errorf("fwsvd: %w", err)
	}
	if perRow {
		return factorize(w, m, n, transform{left: d}, rule, o)
	}
	return factorize(w, m, n, transform{right: d}, rule, o)
}

// ASVD is activation-aware SVD: the columns of W are scaled by
// mean(|x_j|)^alpha, the mean absolute value of each input feature on
// calibration data (fisher/stats Module.MeanAbs), before the SVD and unscaled
// after; alpha 0.5 is the published default.
func ASVD(w []float32, m, n int, meanAbs []float64, alpha float64, rule RankRule, o SVDOptions) (*Factorization, error) {
	if len(meanAbs) != n {
		return nil, fmt.Errorf("asvd: %d activation scales for %d input features", len(meanAbs), n)
	}
	if alpha <= 0 {
		return nil, fmt.Errorf("asvd: alpha %g must be positive", alpha)
	}
	s := make([]float64, n)
	for j, v := range meanAbs {
		if v < 0 || math.IsNaN(v) {
			return nil, fmt.Errorf("asvd: activation scale %g at %d", v, j)
		}
		s[j] = math.Pow(v, alpha)
	}
	d, err := positiveScales(s, false)
	if err != nil {
		return nil, fmt.Errorf("asvd: %w", err)
	}
	return factorize(w, m, n, transform{right: d}, rule, o)
}

// Whiten is SVD-LLM's truncation-aware whitening: with L the Cholesky factor
// of the input Gram matrix G = X X^T (n x n, row-major, float64), the SVD is
// taken of W L and the factors mapped back with L^-1. Truncating singular
// value sigma_i of W L then costs exactly sigma_i in the output error
// ||W X - W' X||_F, and the result is the rank-r W' minimising that error.
// When G is not positive definite a diagonal shift (relative to its mean
// diagonal, growing from 1e-8) is added and reported in shift.
func Whiten(w []float32, m, n int, gram []float64, rule RankRule, o SVDOptions) (f *Factorization, shift float64, err error) {
	if len(gram) != n*n {
		return nil, 0, fmt.Errorf("whiten: Gram matrix of %d entries for %d input features", len(gram), n)
	}
	var meanDiag float64
	for i := range n {
		d := gram[i*n+i]
		if d < 0 || math.IsNaN(d) || math.IsInf(d, 0) {
			return nil, 0, fmt.Errorf("whiten: the Gram matrix has %g at diagonal entry %d: a sum of squares must be finite and non-negative (the statistics are not of real inputs)", d, i)
		}
		meanDiag += d
	}
	meanDiag /= float64(n)
	if meanDiag == 0 {
		return nil, 0, fmt.Errorf("whiten: the Gram matrix is zero (the layer's inputs were all zero on the calibration data)")
	}
	var chol mat.Cholesky
	for s := 0.0; ; {
		g := mat.NewSymDense(n, nil)
		for i := range n {
			for j := i; j < n; j++ {
				v := (gram[i*n+j] + gram[j*n+i]) / 2
				if i == j {
					v += s * meanDiag
				}
				g.SetSym(i, j, v)
			}
		}
		if chol.Factorize(g) {
			shift = s * meanDiag
			break
		}
		if s == 0 {
			s = 1e-8
		} else {
			s *= 10
		}
		if s > 1 {
			return nil, 0, fmt.Errorf("whiten: the Gram matrix is not positive definite even with a shift")
		}
	}
	var l mat.TriDense
	chol.LTo(&l)
	f, err = factorize(w, m, n, transform{chol: &l}, rule, o)
	return f, shift, err
}
