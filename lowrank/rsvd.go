// Copyright ©2025 The wtool Authors.

package lowrank

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"sync/atomic"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"
	"gonum.org/v1/gonum/blas/blas64"
	"gonum.org/v1/gonum/lapack"
	"gonum.org/v1/gonum/lapack/lapack64"

	"github.com/wtool/wtool/internal/fault"
)

// seedStream is the PCG stream constant mixed with SVDOptions.Seed.
const seedStream = 0x9e3779b97f4a7c15

// gaussChunk is the number of entries of Ω drawn from one PCG stream; the
// streams are filled concurrently, and the result does not depend on
// GOMAXPROCS.
const gaussChunk = 1 << 16

// gaussian fills x with independent standard normal variates determined by
// seed.
func gaussian(x []float32, seed uint64) {
	chunks := (len(x) + gaussChunk - 1) / gaussChunk
	parallelFor(chunks, func(c int) {
		rng := rand.New(rand.NewPCG(seed, seedStream^uint64(c)))
		for i := range x[c*gaussChunk : min((c+1)*gaussChunk, len(x))] {
			x[c*gaussChunk+i] = float32(rng.NormFloat64())
		}
	})
}

// parallelFor calls f(0), ..., f(n-1) on up to GOMAXPROCS goroutines.
func parallelFor(n int, f func(i int)) {
	workers := min(n, runtime.GOMAXPROCS(0))
	if workers <= 1 {
		for i := range n {
			f(i)
		}
		return
	}
	var next atomic.Int64
	var g fault.Group // a panic in a worker is re-raised on the caller
	for range workers {
		g.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				f(i)
			}
		})
	}
	g.Wait()
}

// randomizedSVD implements the randomized path of TruncatedSVD for an m×n
// matrix a with rank k, sketch size l = k+p (l < min(m, n)) and q power
// iterations.
func randomizedSVD(a []float32, m, n, k, l, q int, seed uint64) (*Factors, error) {
	A := blas32.General{Rows: m, Cols: n, Stride: n, Data: a}
	gen := func(rows int, d []float32) blas32.General {
		return blas32.General{Rows: rows, Cols: l, Stride: l, Data: d}
	}

	// Gaussian test matrix Ω (n×l); its storage then holds Z = Aᵀ·Q. The
	// buffers y, z and ws.spare share one capacity so that approx can
	// rotate them instead of copying.
	bufCap := max(m, n) * l
	z := make([]float32, bufCap)[:n*l]
	gaussian(z, seed)
	y := make([]float32, bufCap)[:m*l]
	ws := &orthWork{spare: make([]float32, bufCap)}

	blas32.Gemm(blas.NoTrans, blas.NoTrans, 1, A, gen(n, z), 0, gen(m, y))
	for range q {
		y = ws.approx(y, m, l)
		blas32.Gemm(blas.Trans, blas.NoTrans, 1, A, gen(m, y), 0, gen(n, z))
		z = ws.approx(z, n, l)
		blas32.Gemm(blas.NoTrans, blas.NoTrans, 1, A, gen(n, z), 0, gen(m, y))
	}

	// Q1 = approx(Y) is a well-conditioned float32 basis of the sketch, and
	// Q = Q1·S⁻¹, with SᵀS = Q1ᵀQ1 formed and factored in float64, is
	// orthonormal to about u₆₄·cond(Q1)² (Cholesky-QR), far below float32
	// rounding when cond(Q1) <= 1e4. Q itself is never formed: Z1 = Aᵀ·Q1 is
	// computed in float32 and Aᵀ·Q = Z1·S⁻¹.
	y = ws.approx(y, m, l)
	q1 := toFloat64(y)
	S, ok := cholR(q1, m, l, false)
	if !ok || rcondUpper(S, l) < 1e-4 {
		// approx did not condition Y well: orthonormalise in float64.
		ws.accurate(q1, m, l)
		for i, v := range q1 {
			y[i] = float32(v)
			q1[i] = float64(y[i])
		}
		if S, ok = cholR(q1, m, l, false); !ok {
			return nil, fmt.Errorf("%w (orthonormalising the sketch)", ErrNoConvergence)
		}
	}
	sInv, ok := invUpper(S, l)
	if !ok {
		return nil, fmt.Errorf("%w (orthonormalising the sketch)", ErrNoConvergence)
	}
	blas32.Gemm(blas.Trans, blas.NoTrans, 1, A, gen(m, y), 0, gen(n, z))

	// Z1 = Qz·R1 (accurately, in float64), so Bᵀ = Aᵀ·Q = Qz·R with
	// R = R1·S⁻¹ and B = Rᵀ·Qzᵀ. With Rᵀ = Ur·Σ·Vrᵀ, B = Ur·Σ·(Qz·Vr)ᵀ and
	// A ≈ Q·B = (Q1·S⁻¹·Ur)·Σ·(Qz·Vr)ᵀ.
	qz64 := toFloat64(z)
	r1 := ws.accurate(qz64, n, l)
	r := make([]float64, l*l)
	mul64(r, r1, sInv, l, l, l, false)
	ur, s, vrt, err := svd64(transpose64(r, l, l), l, l, true)
	if err != nil {
		return nil, err
	}
	w := make([]float64, l*k) // S⁻¹·Ur[:, :k]
	blas64.Gemm(blas.NoTrans, blas.NoTrans, 1,
		blas64.General{Rows: l, Cols: l, Stride: l, Data: sInv},
		blas64.General{Rows: l, Cols: k, Stride: l, Data: ur},
		0, blas64.General{Rows: l, Cols: k, Stride: k, Data: w})

	u := make([]float64, m*k)
	mul64(u, q1, w, m, l, k, false)
	vt := make([]float64, k*n)
	blas64.Gemm(blas.NoTrans, blas.Trans, 1,
		blas64.General{Rows: k, Cols: l, Stride: l, Data: vrt},
		blas64.General{Rows: n, Cols: l, Stride: l, Data: qz64},
		0, blas64.General{Rows: k, Cols: n, Stride: n, Data: vt})

	f := &Factors{M: m, N: n, K: k, U: toFloat32(u), S: s[:k:k], Vt: toFloat32(vt)}
	flipSigns(f)
	return f, nil
}

// mul64 sets c (m×n) = a (m×k) · b (k×n), all row-major and contiguous; with
// bTrans, b is stored n×k and its transpose is used.
func mul64(c, a, b []float64, m, k, n int, bTrans bool) {
	tb, ldb := blas.NoTrans, n
	if bTrans {
		tb, ldb = blas.Trans, k
	}
	blas64.Implementation().Dgemm(blas.NoTrans, tb, m, n, k, 1, a, k, b, ldb, 0, c, n)
}

// orthWork holds scratch space for the orthonormalisations of tall r×l
// matrices (r >= 2l).
type orthWork struct {
	y64   []float64 // r×l
	tmp64 []float64 // r×l
	spare []float32 // output buffer of approx, as large as its inputs
}

func grow64(s []float64, n int) []float64 {
	if cap(s) < n {
		return make([]float64, n)
	}
	return s[:n]
}

// approx replaces y (r×l float32) by a well-conditioned basis of its range:
// Y·R⁻¹ where RᵀR = YᵀY + s·I, with the Gram matrix YᵀY formed in float32
// (Ssyrk) and factored in float64 after a small diagonal shift s. This is the
// re-normalisation between power iterations, where sklearn uses an LU
// factor. Any invertible R keeps the range of Y; an approximate R only costs
// orthonormality: directions of Y below √s ≈ 1e-3·‖Y‖_F come out shorter,
// but they stay far above the float32 rounding of Y (which limits every
// method), so the subspace is as accurate as Y itself. A second pass runs if
// the first saw a large condition number, and Householder QR is the last
// resort (for example for an exactly rank-deficient y).
//
// The result is returned in w.spare or in y's storage; the other becomes the
// new w.spare (both must have the same capacity).
func (w *orthWork) approx(y []float32, r, l int) []float32 {
	for pass := 0; pass < 2; pass++ {
		R, ok := cholR32(y, r, l)
		if !ok {
			break
		}
		if y, ok = w.solveUpper32(y, r, l, R); !ok {
			break
		}
		if diagRatio(R, l) > 1e-4 {
			return y
		}
	}
	w.y64 = grow64(w.y64, r*l)
	for i, v := range y {
		w.y64[i] = float64(v)
	}
	householderQR(w.y64, r, l)
	for i, v := range w.y64 {
		y[i] = float32(v)
	}
	return y
}

// cholR32 returns the upper triangular Cholesky factor R (l×l float64,
// row-major, zero below the diagonal) of G + s·I, where G = YᵀY is computed
// in float32 for the r×l float32 matrix y. The shift s starts at
// 4·√r·u₃₂·trace(G), above the typical error of G, and grows if the
// factorisation fails.
func cholR32(y []float32, r, l int) ([]float64, bool) {
	g32 := make([]float32, l*l)
	blas32.Syrk(blas.Trans, 1, blas32.General{Rows: r, Cols: l, Stride: l, Data: y},
		0, blas32.Symmetric{N: l, Stride: l, Uplo: blas.Upper, Data: g32})
	var tr float64
	for i := range l {
		tr += float64(g32[i*l+i])
	}
	if !(tr > 0) || math.IsInf(tr, 0) {
		return nil, false
	}
	g := make([]float64, l*l)
	shift := 4 * math.Sqrt(float64(r)) * 0x1p-24 * tr
	for try := 0; try < 3; try, shift = try+1, shift*1e3 {
		for i := range l {
			for j := i; j < l; j++ {
				g[i*l+j] = float64(g32[i*l+j])
			}
			g[i*l+i] += shift
		}
		if _, ok := lapack64.Potrf(blas64.Symmetric{N: l, Stride: l, Uplo: blas.Upper, Data: g}); ok {
			for i := 1; i < l; i++ {
				clear(g[i*l : i*l+i])
			}
			return g, true
		}
	}
	return nil, false
}

// solveUpper32 returns y·R⁻¹ for the r×l float32 matrix y and the upper
// triangular R (float64), written to w.spare, whose place y's storage takes.
// It returns y and false if R is singular. It multiplies by the explicit inverse: the small l×l inversion
// plus a GEMM is faster than a triangular solve, both with gonum's Strsm and
// with OpenBLAS's (measured for 4096×266), and as accurate here.
func (w *orthWork) solveUpper32(y []float32, r, l int, R []float64) ([]float32, bool) {
	rinv, ok := invUpper(R, l)
	if !ok {
		return y, false
	}
	dst := w.spare[:r*l]
	blas32.Gemm(blas.NoTrans, blas.NoTrans, 1,
		blas32.General{Rows: r, Cols: l, Stride: l, Data: y},
		blas32.General{Rows: l, Cols: l, Stride: l, Data: toFloat32(rinv)},
		0, blas32.General{Rows: r, Cols: l, Stride: l, Data: dst})
	w.spare = y[:cap(y)]
	return dst, true
}

// solveUpper64 replaces the r×l float64 matrix y by y·R⁻¹, R upper
// triangular. It returns false, leaving y unchanged, if R is singular.
func (w *orthWork) solveUpper64(y []float64, r, l int, R []float64) bool {
	rinv, ok := invUpper(R, l)
	if !ok {
		return false
	}
	w.y64 = grow64(w.y64, r*l)
	blas64.Gemm(blas.NoTrans, blas.NoTrans, 1,
		blas64.General{Rows: r, Cols: l, Stride: l, Data: y},
		blas64.General{Rows: l, Cols: l, Stride: l, Data: rinv},
		0, blas64.General{Rows: r, Cols: l, Stride: l, Data: w.y64})
	copy(y, w.y64)
	return true
}

// accurate replaces y (r×l float64) by Q with orthonormal columns and returns
// the upper triangular l×l R with y = Q·R. It uses Cholesky-QR2 (two
// Cholesky-QR passes), with a shifted first pass when the Gram matrix is
// numerically singular (shifted Cholesky-QR3, Fukaya, Kannan, Nakatsukasa,
// Yamamoto and Yanagisawa 2020), and a third pass if the second one still
// corrected much. It falls back to Householder QR when a pass fails (for
// example on an exactly rank-deficient y).
func (w *orthWork) accurate(y []float64, r, l int) []float64 {
	w.tmp64 = grow64(w.tmp64, r*l)
	orig := w.tmp64
	copy(orig, y)
	fallback := func() []float64 {
		copy(y, orig)
		return householderQR(y, r, l)
	}
	var rTotal []float64
	for pass := 0; pass < 4; pass++ {
		R, ok := cholR(y, r, l, false)
		if !ok && pass == 0 {
			R, ok = cholR(y, r, l, true)
		}
		if !ok || (pass > 0 && diagRatio(R, l) < 1e-5) || !w.solveUpper64(y, r, l, R) {
			return fallback()
		}
		if rTotal == nil {
			rTotal = R
		} else {
			prod := make([]float64, l*l)
			blas64.Gemm(blas.NoTrans, blas.NoTrans, 1,
				blas64.General{Rows: l, Cols: l, Stride: l, Data: R},
				blas64.General{Rows: l, Cols: l, Stride: l, Data: rTotal},
				0, blas64.General{Rows: l, Cols: l, Stride: l, Data: prod})
			rTotal = prod
		}
		// A pass whose R is the identity to δ leaves an orthogonality
		// error of order δ² (Cholesky-QR2 analysis).
		if pass > 0 && maxDevIdentity(R, l) < 1e-6 {
			return rTotal
		}
	}
	return fallback()
}

// cholR returns the upper triangular Cholesky factor R (l×l, row-major, zero
// below the diagonal) of YᵀY (+ s·I when shifted) for the r×l matrix y. The
// shift s = 11(r·l + l(l+1))·u·‖Y‖²_F, u the unit roundoff, guarantees that
// the factorisation succeeds for any finite non-zero y.
func cholR(y []float64, r, l int, shifted bool) ([]float64, bool) {
	g := make([]float64, l*l)
	blas64.Syrk(blas.Trans, 1, blas64.General{Rows: r, Cols: l, Stride: l, Data: y},
		0, blas64.Symmetric{N: l, Stride: l, Uplo: blas.Upper, Data: g})
	var tr float64
	for i := range l {
		tr += g[i*l+i]
	}
	if !(tr > 0) || math.IsInf(tr, 0) {
		return nil, false
	}
	if shifted {
		s := 11 * float64(r*l+l*(l+1)) * 0x1p-53 * tr
		for i := range l {
			g[i*l+i] += s
		}
	}
	_, ok := lapack64.Potrf(blas64.Symmetric{N: l, Stride: l, Uplo: blas.Upper, Data: g})
	if !ok {
		return nil, false
	}
	for i := 1; i < l; i++ {
		clear(g[i*l : i*l+i])
	}
	return g, true
}

// invUpper returns the inverse of the upper triangular l×l matrix R.
func invUpper(R []float64, l int) ([]float64, bool) {
	inv := append([]float64(nil), R...)
	ok := lapack64.Trtri(blas64.Triangular{N: l, Stride: l, Uplo: blas.Upper, Diag: blas.NonUnit, Data: inv})
	if !ok {
		return nil, false
	}
	for _, v := range inv {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, false
		}
	}
	return inv, true
}

// rcondUpper estimates the reciprocal 1-norm condition number of the upper
// triangular l×l matrix R (LAPACK's Dtrcon).
func rcondUpper(R []float64, l int) float64 {
	return lapack64.Trcon(lapack.MaxColumnSum,
		blas64.Triangular{N: l, Stride: l, Uplo: blas.Upper, Diag: blas.NonUnit, Data: R},
		make([]float64, 3*l), make([]int, l))
}

// diagRatio returns min|R_ii| / max|R_ii|, a cheap lower estimate of
// 1/cond(R).
func diagRatio(R []float64, l int) float64 {
	lo, hi := math.Inf(1), 0.0
	for i := range l {
		v := math.Abs(R[i*l+i])
		lo = min(lo, v)
		hi = max(hi, v)
	}
	if hi == 0 {
		return 0
	}
	return lo / hi
}

// maxDevIdentity returns max |R - I| over the entries of the l×l matrix R.
func maxDevIdentity(R []float64, l int) float64 {
	var d float64
	for i := range l {
		for j := range l {
			v := R[i*l+j]
			if i == j {
				v--
			}
			d = max(d, math.Abs(v))
		}
	}
	return d
}

// householderQR replaces the r×l matrix y (r >= l) by the Q factor of its
// Householder QR factorisation and returns R (l×l upper triangular).
func householderQR(y []float64, r, l int) []float64 {
	a := blas64.General{Rows: r, Cols: l, Stride: l, Data: y}
	tau := make([]float64, l)
	work := make([]float64, 1)
	lapack64.Geqrf(a, tau, work, -1)
	nw := int(work[0])
	lapack64.Orgqr(a, tau, work, -1)
	work = make([]float64, max(nw, int(work[0]), l))
	lapack64.Geqrf(a, tau, work, len(work))
	R := make([]float64, l*l)
	for i := range l {
		copy(R[i*l+i:(i+1)*l], y[i*l+i:(i+1)*l])
	}
	lapack64.Orgqr(a, tau, work, len(work))
	return R
}
