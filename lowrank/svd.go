// Copyright ©2025 The wtool Authors.

// Package lowrank computes low-rank approximations of weight matrices.
//
// Its core is a truncated singular value decomposition engine for float32
// row-major matrices: [TruncatedSVD] (a randomized range finder with power
// iterations, after Halko, Martinsson and Tropp 2011, with an exact path for
// small problems), [ExactSVD] (the full thin SVD) and [SingularValues]. All
// are pure functions without I/O.
//
// # Precision
//
// Inputs and outputs are float32. The large matrix products of the
// randomized method run in float32 through gonum's blas32 (so they use the
// fast kernels that github.com/wtool/wtool/tensors/linalg installs, or
// OpenBLAS with the openblas build tag); the orthonormalisations, the small
// SVD and the exact SVD run in float64.
//
// # Builds
//
// The default build is pure Go. With the "openblas" build tag (and cgo),
// gonum's BLAS and LAPACK are routed to OpenBLAS and LAPACKE, and the exact
// SVD calls LAPACK's divide-and-conquer dgesdd; see
// github.com/wtool/wtool/tensors/linalg.
package lowrank

import (
	"errors"
	"fmt"
	"math"
	"sync/atomic"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"

	// Installs the fast GEMM kernels (or OpenBLAS with -tags openblas) as
	// gonum's BLAS.
	_ "github.com/wtool/wtool/tensors/linalg"
)

// DefaultOversample is the oversampling used when SVDOptions.Oversample is 0.
const DefaultOversample = 10

// AutoPowerIters, as SVDOptions.PowerIters, selects the number of power
// iterations automatically (any negative value does).
const AutoPowerIters = -1

// exactMinDim is the size min(m, n) up to which TruncatedSVD always uses the
// exact path.
const exactMinDim = 64

// SVDOptions configures TruncatedSVD.
type SVDOptions struct {
	// Rank is the number k of singular triplets to compute,
	// 1 <= Rank <= min(m, n).
	Rank int
	// Oversample is the number p of extra columns of the random sketch
	// (the sketch has k+p columns). 0 means DefaultOversample (10, as
	// sklearn's randomized_svd); a negative value means no oversampling.
	Oversample int
	// PowerIters is the number q of power (subspace) iterations. A negative
	// value (AutoPowerIters) chooses like sklearn's randomized_svd: 7 if
	// Rank < 0.1*min(m, n), else 4. Note that the zero value means no
	// power iteration, which is accurate only for fast-decaying spectra.
	PowerIters int
	// Exact forces the exact path: the full thin SVD in float64, truncated
	// to Rank. It is also taken when min(m, n) <= 64 or
	// min(m, n) <= 2*(Rank+Oversample).
	Exact bool
	// Seed seeds the Gaussian test matrix of the randomized path. The same
	// seed, input, build and GOMAXPROCS give the same result.
	Seed uint64
}

// Factors is a (truncated) singular value decomposition
//
//	A ≈ U · diag(S) · Vt
//
// of an M×N matrix, with K singular triplets. All matrices are row-major.
// The columns of U and the rows of Vt are orthonormal, S is non-negative and
// non-increasing, and the sign of each triplet is chosen so that the entry of
// largest magnitude of each column of U is positive (as sklearn's svd_flip).
type Factors struct {
	// U holds the left singular vectors, an M×K matrix.
	U []float32
	// S holds the K singular values in descending order.
	S []float64
	// Vt holds the right singular vectors as rows, a K×N matrix.
	Vt []float32
	// M and N are the dimensions of the factorised matrix, K the number of
	// singular triplets.
	M, N, K int
}

// Reconstruct returns the M×N row-major matrix U·diag(S)·Vt.
func (f *Factors) Reconstruct() []float32 {
	us := make([]float32, f.M*f.K)
	for i := range f.M {
		for j := range f.K {
			us[i*f.K+j] = f.U[i*f.K+j] * float32(f.S[j])
		}
	}
	out := make([]float32, f.M*f.N)
	if f.K == 0 {
		return out
	}
	blas32.Gemm(blas.NoTrans, blas.NoTrans, 1,
		blas32.General{Rows: f.M, Cols: f.K, Stride: f.K, Data: us},
		blas32.General{Rows: f.K, Cols: f.N, Stride: f.N, Data: f.Vt},
		0, blas32.General{Rows: f.M, Cols: f.N, Stride: f.N, Data: out})
	return out
}

// ErrNonFinite is returned (wrapped) when the input contains NaN or ±Inf.
var ErrNonFinite = errors.New("lowrank: matrix has a non-finite entry")

// ErrNoConvergence is returned (wrapped) when the SVD iteration fails to
// converge, which does not happen on finite input in practice.
var ErrNoConvergence = errors.New("lowrank: SVD did not converge")

// checkMatrix validates the shape and contents of an m×n row-major matrix.
func checkMatrix(a []float32, m, n int) error {
	if m < 1 || n < 1 {
		return fmt.Errorf("lowrank: bad matrix shape %d×%d", m, n)
	}
	if len(a) != m*n {
		return fmt.Errorf("lowrank: matrix slice has length %d, want %d×%d = %d", len(a), m, n, m*n)
	}
	const chunk = 1 << 20
	var bad atomic.Bool
	parallelFor((len(a)+chunk-1)/chunk, func(c int) {
		if !allFinite(a[c*chunk : min((c+1)*chunk, len(a))]) {
			bad.Store(true)
		}
	})
	if !bad.Load() {
		return nil
	}
	for i, v := range a {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("%w: a[%d] (row %d, column %d) is %v", ErrNonFinite, i, i/n, i%n, v)
		}
	}
	return nil
}

// allFinite reports whether a has no NaN or ±Inf. v - v is +0 for finite v
// and NaN otherwise, and NaN is sticky under addition; eight independent
// sums keep the loop at memory speed.
func allFinite(a []float32) bool {
	var s [8]float32
	i := 0
	for ; i+8 <= len(a); i += 8 {
		b := a[i : i+8 : i+8]
		s[0] += b[0] - b[0]
		s[1] += b[1] - b[1]
		s[2] += b[2] - b[2]
		s[3] += b[3] - b[3]
		s[4] += b[4] - b[4]
		s[5] += b[5] - b[5]
		s[6] += b[6] - b[6]
		s[7] += b[7] - b[7]
	}
	for ; i < len(a); i++ {
		s[0] += a[i] - a[i]
	}
	return (s[0]+s[1])+(s[2]+s[3])+(s[4]+s[5])+(s[6]+s[7]) == 0
}

// TruncatedSVD computes the rank-k truncated SVD of the m×n row-major matrix
// a (k = o.Rank), which is not modified.
//
// Unless the exact path is selected (see SVDOptions.Exact), it uses the
// randomized range finder of Halko, Martinsson and Tropp (2011): a Gaussian
// test matrix Ω (n×(k+p)), Y = A·Ω, q power iterations Y = A·(Aᵀ·Q) with
// re-orthonormalisation after every product, Q = orth(Y), B = Qᵀ·A, the
// exact SVD of the small B and U = Q·U_B, keeping the top k triplets. The
// products with A run in float32; the orthonormalisations (shifted
// Cholesky-QR in float64, falling back to Householder QR) and the SVD of B
// run in float64.
func TruncatedSVD(a []float32, m, n int, o SVDOptions) (*Factors, error) {
	if err := checkMatrix(a, m, n); err != nil {
		return nil, err
	}
	mn := min(m, n)
	k := o.Rank
	if k < 1 || k > mn {
		return nil, fmt.Errorf("lowrank: rank %d out of range [1, %d] for a %d×%d matrix", k, mn, m, n)
	}
	p := o.Oversample
	switch {
	case p == 0:
		p = DefaultOversample
	case p < 0:
		p = 0
	}
	q := o.PowerIters
	if q < 0 {
		q = 4
		if float64(k) < 0.1*float64(mn) {
			q = 7
		}
	}
	if o.Exact || mn <= exactMinDim || mn <= 2*(k+p) {
		return exactTruncated(a, m, n, k)
	}
	return randomizedSVD(a, m, n, k, k+p, q, o.Seed)
}

// ExactSVD computes the full thin SVD of the m×n row-major matrix a (which is
// not modified), with K = min(m, n) triplets, in float64 arithmetic.
func ExactSVD(a []float32, m, n int) (*Factors, error) {
	if err := checkMatrix(a, m, n); err != nil {
		return nil, err
	}
	return exactTruncated(a, m, n, min(m, n))
}

// SingularValues returns all min(m, n) singular values of the m×n row-major
// matrix a in descending order, computed exactly (in float64, without
// singular vectors).
func SingularValues(a []float32, m, n int) ([]float64, error) {
	if err := checkMatrix(a, m, n); err != nil {
		return nil, err
	}
	_, s, _, err := svd64(toFloat64(a), m, n, false)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// exactTruncated computes the thin SVD of a in float64 and keeps the first k
// triplets.
func exactTruncated(a []float32, m, n, k int) (*Factors, error) {
	u, s, vt, err := svd64(toFloat64(a), m, n, true)
	if err != nil {
		return nil, err
	}
	r := min(m, n)
	f := &Factors{M: m, N: n, K: k, S: s[:k:k]}
	f.U = make([]float32, m*k)
	for i := range m {
		row := u[i*r : i*r+k]
		for j, v := range row {
			f.U[i*k+j] = float32(v)
		}
	}
	f.Vt = toFloat32(vt[:k*n])
	flipSigns(f)
	return f, nil
}

// flipSigns makes the entry of largest magnitude of each column of U
// positive, negating the matching row of Vt (sklearn's svd_flip with
// u_based_decision).
func flipSigns(f *Factors) {
	for j := range f.K {
		best, bi := float32(-1), 0
		for i := range f.M {
			if v := abs32(f.U[i*f.K+j]); v > best {
				best, bi = v, i
			}
		}
		if f.U[bi*f.K+j] >= 0 {
			continue
		}
		for i := range f.M {
			f.U[i*f.K+j] = -f.U[i*f.K+j]
		}
		row := f.Vt[j*f.N : (j+1)*f.N]
		for i := range row {
			row[i] = -row[i]
		}
	}
}

func abs32(v float32) float32 { return math.Float32frombits(math.Float32bits(v) &^ (1 << 31)) }

func toFloat64(a []float32) []float64 {
	out := make([]float64, len(a))
	for i, v := range a {
		out[i] = float64(v)
	}
	return out
}

func toFloat32(a []float64) []float32 {
	out := make([]float32, len(a))
	for i, v := range a {
		out[i] = float32(v)
	}
	return out
}

// transpose64 returns the n×m transpose of the m×n row-major matrix a.
func transpose64(a []float64, m, n int) []float64 {
	t := make([]float64, m*n)
	const bs = 32
	for i0 := 0; i0 < m; i0 += bs {
		for j0 := 0; j0 < n; j0 += bs {
			for i := i0; i < min(i0+bs, m); i++ {
				for j := j0; j < min(j0+bs, n); j++ {
					t[j*m+i] = a[i*n+j]
				}
			}
		}
	}
	return t
}
