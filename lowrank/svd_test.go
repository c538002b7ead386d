// Copyright ©2025 The wtool Authors.

package lowrank

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"gonum.org/v1/gonum/mat"
)

// The tests of the SVD engine compare against gonum's mat.SVD (Dgesvd) in
// float64, computed on the same float32 data, and against matrices with
// known singular values. Helpers are prefixed svdt to keep them apart from
// the other tests of the package.

// svdtGaussian returns an m×n matrix of independent standard normals.
func svdtGaussian(rng *rand.Rand, m, n int) []float32 {
	a := make([]float32, m*n)
	for i := range a {
		a[i] = float32(rng.NormFloat64())
	}
	return a
}

// svdtOrthonormal returns an m×r matrix with orthonormal columns (the Q factor
// of a Gaussian matrix, computed by gonum).
func svdtOrthonormal(rng *rand.Rand, m, r int) *mat.Dense {
	g := mat.NewDense(m, r, nil)
	for i := range m {
		for j := range r {
			g.Set(i, j, rng.NormFloat64())
		}
	}
	var qr mat.QR
	qr.Factorize(g)
	var q mat.Dense
	qr.QTo(&q)
	return mat.DenseCopyOf(q.Slice(0, m, 0, r))
}

// svdtWithSpectrum returns A = U·diag(s)·Vᵀ (m×n, rounded to float32) with
// random orthonormal U (m×r) and V (n×r), r = len(s).
func svdtWithSpectrum(rng *rand.Rand, m, n int, s []float64) []float32 {
	r := len(s)
	u := svdtOrthonormal(rng, m, r)
	v := svdtOrthonormal(rng, n, r)
	for j := range r {
		for i := range m {
			u.Set(i, j, u.At(i, j)*s[j])
		}
	}
	var a mat.Dense
	a.Mul(u, v.T())
	out := make([]float32, m*n)
	for i := range m {
		for j := range n {
			out[i*n+j] = float32(a.At(i, j))
		}
	}
	return out
}

// svdtDense converts a row-major float32 matrix to a gonum float64 matrix.
func svdtDense(a []float32, m, n int) *mat.Dense {
	d := make([]float64, m*n)
	for i, v := range a {
		d[i] = float64(v)
	}
	return mat.NewDense(m, n, d)
}

// svdtValues returns the singular values of a computed by gonum in float64.
func svdtValues(t testing.TB, a []float32, m, n int) []float64 {
	t.Helper()
	var svd mat.SVD
	if !svd.Factorize(svdtDense(a, m, n), mat.SVDNone) {
		t.Fatal("gonum SVD did not converge")
	}
	return svd.Values(nil)
}

// svdtResidual returns the spectral and Frobenius norms of A - U·diag(S)·Vt
// in float64.
func svdtResidual(t testing.TB, a []float32, f *Factors) (spec, frob float64) {
	t.Helper()
	e := make([]float32, len(a))
	us := mat.NewDense(f.M, f.K, nil)
	for i := range f.M {
		for j := range f.K {
			us.Set(i, j, float64(f.U[i*f.K+j])*f.S[j])
		}
	}
	var r mat.Dense
	r.Mul(us, svdtDense(f.Vt, f.K, f.N))
	for i := range f.M {
		for j := range f.N {
			d := float64(a[i*f.N+j]) - r.At(i, j)
			e[i*f.N+j] = float32(d)
			frob += d * d
		}
	}
	return svdtValues(t, e, f.M, f.N)[0], math.Sqrt(frob)
}

// svdtTail returns sqrt(Σ_{i>=k} s_i²), the Frobenius error of the best
// rank-k approximation.
func svdtTail(s []float64, k int) float64 {
	var t float64
	for _, v := range s[k:] {
		t += v * v
	}
	return math.Sqrt(t)
}

// svdtCheckFactors checks shapes, ordering, orthonormality of U and V and
// A·V = U·S (to tolerance avTol relative to σ₁).
func svdtCheckFactors(t *testing.T, a []float32, m, n, k int, f *Factors, avTol float64) {
	t.Helper()
	if f.M != m || f.N != n || f.K != k || len(f.U) != m*k || len(f.Vt) != k*n || len(f.S) != k {
		t.Fatalf("shapes: M=%d N=%d K=%d len(U)=%d len(S)=%d len(Vt)=%d, want %d %d %d", f.M, f.N, f.K, len(f.U), len(f.S), len(f.Vt), m, n, k)
	}
	for i := 1; i < k; i++ {
		if f.S[i] > f.S[i-1] || f.S[i] < 0 {
			t.Fatalf("S not non-negative and descending at %d: %v", i, f.S[:i+1])
		}
	}
	const orthTol = 2e-5
	u := svdtDense(f.U, m, k)
	vt := svdtDense(f.Vt, k, n)
	var g mat.Dense
	g.Mul(u.T(), u)
	if d := svdtMaxDevIdentity(&g); d > orthTol {
		t.Errorf("UᵀU deviates from I by %g", d)
	}
	g.Mul(vt, vt.T())
	if d := svdtMaxDevIdentity(&g); d > orthTol {
		t.Errorf("VᵀV deviates from I by %g", d)
	}
	var av mat.Dense
	av.Mul(svdtDense(a, m, n), vt.T())
	var worst float64
	for i := range m {
		for j := range k {
			worst = max(worst, math.Abs(av.At(i, j)-u.At(i, j)*f.S[j]))
		}
	}
	if f.S[0] > 0 && worst/f.S[0] > avTol {
		t.Errorf("max |A·V - U·S| / σ₁ = %g > %g", worst/f.S[0], avTol)
	}
}

func svdtMaxDevIdentity(g *mat.Dense) float64 {
	r, c := g.Dims()
	var d float64
	for i := range r {
		for j := range c {
			v := g.At(i, j)
			if i == j {
				v--
			}
			d = max(d, math.Abs(v))
		}
	}
	return d
}

// svdtSpectrum returns n singular values following the named decay.
func svdtSpectrum(kind string, n int) []float64 {
	s := make([]float64, n)
	for i := range s {
		x := float64(i)
		switch kind {
		case "fast": // geometric, 1e-8 after 60 values
			s[i] = math.Pow(10, -x/7.5)
		case "slow": // polynomial
			s[i] = 1 / math.Sqrt(1+x)
		case "flattail": // a step to a flat tail at 0.1
			s[i] = 0.1
			if i < 20 {
				s[i] = 1 + float64(20-i)/20
			}
		case "cluster": // equal leading values, then decay
			s[i] = 1
			if i >= 10 {
				s[i] = math.Pow(0.8, x-9)
			}
		default:
			panic(kind)
		}
	}
	return s
}

// TestTruncatedSVDMatchesGonum compares TruncatedSVD (randomized and exact
// paths) with gonum's float64 SVD: the leading singular values (absolute
// error relative to σ₁) and the Frobenius error of the rank-k approximation
// relative to the optimal one (Eckart-Young).
func TestTruncatedSVDMatchesGonum(t *testing.T) {
	type tc struct {
		name    string
		m, n, k int
		make    func(rng *rand.Rand, m, n int) []float32
		o       SVDOptions
		sTol    float64 // max |s_i - s_ref_i| / σ₁ (sklearn's randomized_svd
		// has about 1% on the Gaussian cases, whose leading values are
		// barely separated)
		errTol float64 // Frobenius error / optimal <= 1 + errTol
		avTol  float64 // max |A·V - U·S| / σ₁
	}
	gauss := svdtGaussian
	spec := func(kind string) func(*rand.Rand, int, int) []float32 {
		return func(rng *rand.Rand, m, n int) []float32 {
			return svdtWithSpectrum(rng, m, n, svdtSpectrum(kind, min(m, n)))
		}
	}
	lowRankNoise := func(rng *rand.Rand, m, n int) []float32 {
		a := svdtWithSpectrum(rng, m, n, []float64{50, 40, 30, 20, 10, 5, 4, 3, 2, 1})
		for i := range a {
			a[i] += float32(1e-3 * rng.NormFloat64())
		}
		return a
	}
	auto := SVDOptions{PowerIters: AutoPowerIters, Seed: 1}
	cases := []tc{
		{"gaussian/tall/auto", 400, 250, 10, gauss, auto, 0.03, 0.002, 0.05},
		{"gaussian/wide/auto", 250, 400, 10, gauss, auto, 0.03, 0.002, 0.05},
		{"gaussian/q0", 400, 250, 10, gauss, SVDOptions{Seed: 2}, 0.3, 0.05, 0.5},
		{"fast/auto", 300, 200, 20, spec("fast"), auto, 1e-6, 1e-3, 1e-5},
		{"fast/q0", 300, 200, 20, spec("fast"), SVDOptions{Seed: 3}, 1e-5, 0.05, 1e-4},
		{"slow/auto", 300, 200, 15, spec("slow"), auto, 5e-3, 0.01, 0.05},
		{"flattail/auto", 300, 240, 20, spec("flattail"), auto, 1e-3, 0.01, 0.02},
		{"cluster/q2", 350, 220, 10, spec("cluster"), SVDOptions{PowerIters: 2, Seed: 4}, 1e-3, 0.01, 0.02},
		{"lowrank+noise/auto", 500, 300, 10, lowRankNoise, auto, 1e-5, 1e-3, 1e-4},
		{"gaussian/exact", 120, 90, 30, gauss, SVDOptions{Exact: true}, 1e-5, 1e-5, 1e-5},
		{"small/exact-by-size", 60, 80, 5, gauss, auto, 1e-5, 1e-5, 1e-5},
		{"fullrank/exact-by-rank", 150, 100, 100, gauss, auto, 1e-5, 1e-5, 1e-5},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(i)+100, 7))
			a := c.make(rng, c.m, c.n)
			o := c.o
			o.Rank = c.k
			f, err := TruncatedSVD(a, c.m, c.n, o)
			if err != nil {
				t.Fatal(err)
			}
			svdtCheckFactors(t, a, c.m, c.n, c.k, f, c.avTol)
			ref := svdtValues(t, a, c.m, c.n)
			var worst float64
			for j := range c.k {
				worst = max(worst, math.Abs(f.S[j]-ref[j])/ref[0])
			}
			if worst > c.sTol {
				t.Errorf("max |s - s_ref| / σ₁ = %.3g > %g", worst, c.sTol)
			}
			_, frob := svdtResidual(t, a, f)
			opt := svdtTail(ref, c.k)
			if frob > (1+c.errTol)*opt+1e-6*ref[0] {
				t.Errorf("Frobenius error %.6g, optimal %.6g (ratio %.6f > 1+%g)", frob, opt, frob/opt, c.errTol)
			}
		})
	}
}

// TestRandomizedErrorBound checks the spectral error of the randomized path
// against the Halko-Martinsson-Tropp bounds on matrices with known spectra:
// with probability at least 1 - 6p^(-p),
//
//	‖A - QQᵀA‖ <= [1 + 11·sqrt((k+p)·min(m,n))]^(1/(2q+1)) · σ_{k+1}
//
// (HMT 2011, (1.9) for q = 0 and §10.4 for q power iterations). The rank-k
// truncation of QQᵀA adds at most σ_{k+1}. The seeds are fixed, so the
// tighter empirical limits below are deterministic regression checks.
func TestRandomizedErrorBound(t *testing.T) {
	const m, n, k, p = 400, 300, 20, 10
	for _, kind := range []string{"fast", "slow", "flattail", "cluster"} {
		s := svdtSpectrum(kind, n)
		rng := rand.New(rand.NewPCG(11, uint64(len(kind))))
		a := svdtWithSpectrum(rng, m, n, s)
		sk1 := s[k]
		prev := math.Inf(1)
		for _, q := range []int{0, 1, 2, 4} {
			t.Run(fmt.Sprintf("%s/q=%d", kind, q), func(t *testing.T) {
				f, err := TruncatedSVD(a, m, n, SVDOptions{Rank: k, Oversample: p, PowerIters: q, Seed: 5})
				if err != nil {
					t.Fatal(err)
				}
				spec, _ := svdtResidual(t, a, f)
				// σ_{k+1} of the float32 matrix differs from s[k] by the
				// rounding of A (about 1e-7·‖A‖_F).
				noise := 1e-6 * s[0]
				bound := sk1 + math.Pow(1+11*math.Sqrt(float64((k+p)*min(m, n))), 1/float64(2*q+1))*sk1 + noise
				if spec > bound {
					t.Errorf("spectral error %.4g > HMT bound %.4g (σ_{k+1} = %.4g)", spec, bound, sk1)
				}
				// Empirical: the error is within a small factor of the
				// optimum, shrinking with q.
				limit := map[int]float64{0: 3, 1: 1.6, 2: 1.3, 4: 1.1}[q]
				if q == 0 && kind == "flattail" {
					limit = 15 // ≈ sqrt(n/p)-fold: the flat tail leaks into Y
				}
				if spec > limit*sk1+noise {
					t.Errorf("spectral error %.4g > %.2f·σ_{k+1} = %.4g", spec, limit, limit*sk1)
				}
				if spec > prev*1.05+noise {
					t.Errorf("error %.4g with q=%d larger than %.4g with fewer iterations", spec, q, prev)
				}
				prev = spec
				t.Logf("spectral error / σ_{k+1} = %.4f", spec/sk1)
			})
		}
	}
}

// TestExactMatchesGonum checks the exact path (ExactSVD and
// SingularValues) against gonum's SVD on random matrices of several shapes.
func TestExactMatchesGonum(t *testing.T) {
	t.Logf("exact SVD backend: %s", exactBackend)
	for _, sh := range [][2]int{{1, 1}, {1, 7}, {7, 1}, {2, 3}, {33, 17}, {17, 33}, {96, 96}, {150, 40}, {40, 150}, {257, 130}} {
		m, n := sh[0], sh[1]
		t.Run(fmt.Sprintf("%dx%d", m, n), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(m), uint64(n)))
			a := svdtGaussian(rng, m, n)
			ref := svdtValues(t, a, m, n)
			f, err := ExactSVD(a, m, n)
			if err != nil {
				t.Fatal(err)
			}
			r := min(m, n)
			svdtCheckFactors(t, a, m, n, r, f, 1e-5)
			vals, err := SingularValues(a, m, n)
			if err != nil {
				t.Fatal(err)
			}
			if len(vals) != r {
				t.Fatalf("SingularValues returned %d values, want %d", len(vals), r)
			}
			for i := range r {
				if d := math.Abs(f.S[i] - ref[i]); d > 1e-12*ref[0] {
					t.Errorf("ExactSVD s[%d] = %.17g, gonum %.17g", i, f.S[i], ref[i])
				}
				if d := math.Abs(vals[i] - ref[i]); d > 1e-12*ref[0] {
					t.Errorf("SingularValues s[%d] = %.17g, gonum %.17g", i, vals[i], ref[i])
				}
			}
			_, frob := svdtResidual(t, a, f)
			if frob > 1e-6*math.Sqrt(float64(r))*ref[0] {
				t.Errorf("‖A - U·S·Vt‖_F = %g", frob)
			}
		})
	}
}

// TestSingularValuesKnown checks SingularValues on matrices whose singular
// values are known exactly.
func TestSingularValuesKnown(t *testing.T) {
	// Rectangular diagonal with permuted, signed entries: the values are the
	// sorted absolute values.
	t.Run("diagonal", func(t *testing.T) {
		const m, n = 9, 6
		d := []float32{3, -7, 0.5, 0, 1e-6, 2}
		a := make([]float32, m*n)
		perm := []int{4, 0, 8, 2, 6, 1} // row of the entry in column j
		for j, v := range d {
			a[perm[j]*n+j] = v
		}
		want := []float64{7, 3, 2, 0.5, float64(float32(1e-6)), 0}
		got, err := SingularValues(a, m, n)
		if err != nil {
			t.Fatal(err)
		}
		for i := range want {
			if math.Abs(got[i]-want[i]) > 1e-15*7 {
				t.Errorf("s[%d] = %.17g, want %.17g", i, got[i], want[i])
			}
		}
		f, err := ExactSVD(a, m, n)
		if err != nil {
			t.Fatal(err)
		}
		for i := range want {
			if math.Abs(f.S[i]-want[i]) > 1e-15*7 {
				t.Errorf("ExactSVD s[%d] = %.17g, want %.17g", i, f.S[i], want[i])
			}
		}
	})
	// Sylvester Hadamard matrix H (entries ±1, HᵀH = n·I): all singular
	// values equal sqrt(n), and c·H[:, :r] has r values c·sqrt(n).
	t.Run("hadamard", func(t *testing.T) {
		const n = 128
		h := []float32{1}
		for sz := 1; sz < n; sz *= 2 {
			nh := make([]float32, 4*sz*sz)
			for i := range sz {
				for j := range sz {
					v := h[i*sz+j]
					nh[i*2*sz+j], nh[i*2*sz+j+sz] = v, v
					nh[(i+sz)*2*sz+j], nh[(i+sz)*2*sz+j+sz] = v, -v
				}
			}
			h = nh
		}
		got, err := SingularValues(h, n, n)
		if err != nil {
			t.Fatal(err)
		}
		for i, v := range got {
			if math.Abs(v-math.Sqrt(n)) > 1e-12 {
				t.Fatalf("s[%d] = %.17g, want sqrt(%d)", i, v, n)
			}
		}
		const r = 40
		sub := make([]float32, n*r)
		for i := range n {
			for j := range r {
				sub[i*r+j] = 0.25 * h[i*n+j]
			}
		}
		got, err = SingularValues(sub, n, r)
		if err != nil {
			t.Fatal(err)
		}
		for i, v := range got {
			if math.Abs(v-0.25*math.Sqrt(n)) > 1e-12 {
				t.Fatalf("sub s[%d] = %.17g, want %g", i, v, 0.25*math.Sqrt(n))
			}
		}
	})
	// U·diag(s)·Vᵀ with random orthonormal U, V: float32 rounding of A moves
	// the values by at most ‖ΔA‖₂ <= ‖ΔA‖_F.
	t.Run("orthogonal", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(3, 3))
		s := []float64{10, 9, 5, 5, 5, 1, 0.1, 0.01, 1e-3, 1e-4}
		const m, n = 70, 50
		a := svdtWithSpectrum(rng, m, n, s)
		got, err := SingularValues(a, m, n)
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			want := 0.0
			if i < len(s) {
				want = s[i]
			}
			if math.Abs(got[i]-want) > 2e-6 {
				t.Errorf("s[%d] = %.10g, want %g", i, got[i], want)
			}
		}
	})
}

// TestSVDErrors checks argument validation.
func TestSVDErrors(t *testing.T) {
	a := make([]float32, 6*4)
	for i := range a {
		a[i] = float32(i%5) - 1
	}
	nan := append([]float32(nil), a...)
	nan[7] = float32(math.NaN())
	inf := append([]float32(nil), a...)
	inf[3] = float32(math.Inf(-1))
	cases := []struct {
		name string
		a    []float32
		m, n int
		k    int
		want string
	}{
		{"rank 0", a, 6, 4, 0, "rank 0 out of range"},
		{"rank negative", a, 6, 4, -2, "rank -2 out of range"},
		{"rank too large", a, 6, 4, 5, "rank 5 out of range [1, 4]"},
		{"short slice", a[:23], 6, 4, 2, "length 23"},
		{"long slice", append(a, 1), 6, 4, 2, "length 25"},
		{"zero rows", nil, 0, 4, 1, "bad matrix shape"},
		{"negative cols", a, 6, -4, 1, "bad matrix shape"},
		{"NaN", nan, 6, 4, 2, "non-finite"},
		{"Inf", inf, 6, 4, 2, "non-finite"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := TruncatedSVD(c.a, c.m, c.n, SVDOptions{Rank: c.k})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("TruncatedSVD error %v, want containing %q", err, c.want)
			}
			if strings.HasPrefix(c.name, "rank") {
				return
			}
			if _, err := ExactSVD(c.a, c.m, c.n); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("ExactSVD error %v, want containing %q", err, c.want)
			}
			if _, err := SingularValues(c.a, c.m, c.n); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("SingularValues error %v, want containing %q", err, c.want)
			}
		})
	}
	if _, err := TruncatedSVD(nan, 6, 4, SVDOptions{Rank: 1}); !errors.Is(err, ErrNonFinite) {
		t.Errorf("NaN error %v is not ErrNonFinite", err)
	}
}

// TestTruncatedSVDDeterministic checks that a seed determines the result and
// that different seeds give different sketches of the same quality.
func TestTruncatedSVDDeterministic(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	const m, n, k = 300, 260, 12
	a := svdtWithSpectrum(rng, m, n, svdtSpectrum("slow", n))
	run := func(seed uint64) *Factors {
		f, err := TruncatedSVD(a, m, n, SVDOptions{Rank: k, PowerIters: 1, Seed: seed})
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	f1, f2, f3 := run(42), run(42), run(43)
	same := func(x, y []float32) bool {
		for i := range x {
			if math.Float32bits(x[i]) != math.Float32bits(y[i]) {
				return false
			}
		}
		return true
	}
	for i := range f1.S {
		if f1.S[i] != f2.S[i] {
			t.Fatalf("same seed: S[%d] %v != %v", i, f1.S[i], f2.S[i])
		}
	}
	if !same(f1.U, f2.U) || !same(f1.Vt, f2.Vt) {
		t.Fatal("same seed gave different singular vectors")
	}
	if same(f1.U, f3.U) {
		t.Error("different seeds gave identical U")
	}
	for i := range f1.S {
		if math.Abs(f1.S[i]-f3.S[i]) > 0.05*f1.S[0] {
			t.Errorf("seeds 42 and 43 disagree on S[%d]: %v vs %v", i, f1.S[i], f3.S[i])
		}
	}
}

// TestTruncatedSVDDegenerate covers a zero matrix, an exactly rank-deficient
// matrix (rank below the sketch size, which defeats Cholesky-QR) and the
// transpose symmetry.
func TestTruncatedSVDDegenerate(t *testing.T) {
	t.Run("zero", func(t *testing.T) {
		const m, n = 200, 150
		a := make([]float32, m*n)
		for _, exact := range []bool{false, true} {
			f, err := TruncatedSVD(a, m, n, SVDOptions{Rank: 5, PowerIters: 2, Exact: exact})
			if err != nil {
				t.Fatal(err)
			}
			for i, s := range f.S {
				if s != 0 {
					t.Errorf("exact=%v: S[%d] = %g, want 0", exact, i, s)
				}
			}
			u := svdtDense(f.U, m, 5)
			var g mat.Dense
			g.Mul(u.T(), u)
			if d := svdtMaxDevIdentity(&g); d > 1e-5 {
				t.Errorf("exact=%v: U not orthonormal (%g)", exact, d)
			}
		}
	})
	t.Run("rank-deficient", func(t *testing.T) {
		// Exactly rank 3 with entries that are exact in float32: only three
		// rows and columns are non-zero.
		const m, n = 300, 200
		a := make([]float32, m*n)
		a[5*n+7], a[100*n+150], a[250*n+3] = 4, -2, 1
		a[5*n+150] = 1
		ref := svdtValues(t, a, m, n)
		f, err := TruncatedSVD(a, m, n, SVDOptions{Rank: 8, PowerIters: 3, Seed: 9})
		if err != nil {
			t.Fatal(err)
		}
		svdtCheckFactors(t, a, m, n, 8, f, 1e-6)
		for i := range 8 {
			if math.Abs(f.S[i]-ref[i]) > 1e-6*ref[0] {
				t.Errorf("S[%d] = %g, want %g", i, f.S[i], ref[i])
			}
		}
		if _, frob := svdtResidual(t, a, f); frob > 1e-6 {
			t.Errorf("reconstruction error %g", frob)
		}
	})
	t.Run("transpose", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(8, 8))
		const m, n, k = 330, 210, 8
		a := svdtWithSpectrum(rng, m, n, svdtSpectrum("cluster", n))
		at := make([]float32, m*n)
		for i := range m {
			for j := range n {
				at[j*m+i] = a[i*n+j]
			}
		}
		o := SVDOptions{Rank: k, PowerIters: AutoPowerIters}
		f, err := TruncatedSVD(a, m, n, o)
		if err != nil {
			t.Fatal(err)
		}
		ft, err := TruncatedSVD(at, n, m, o)
		if err != nil {
			t.Fatal(err)
		}
		for i := range k {
			if math.Abs(f.S[i]-ft.S[i]) > 1e-5*f.S[0] {
				t.Errorf("S[%d]: %g for A, %g for Aᵀ", i, f.S[i], ft.S[i])
			}
		}
	})
}

func TestFactorsReconstruct(t *testing.T) {
	f := &Factors{M: 2, N: 3, K: 1, U: []float32{0.6, 0.8}, S: []float64{5}, Vt: []float32{1, 0, 0}}
	got := f.Reconstruct()
	want := []float32{3, 0, 0, 4, 0, 0}
	for i := range want {
		if math.Abs(float64(got[i]-want[i])) > 1e-6 {
			t.Fatalf("Reconstruct() = %v, want %v", got, want)
		}
	}
}

func ExampleTruncatedSVD() {
	// A rank-2 4×3 matrix.
	a := []float32{
		3, 0, 0,
		0, 2, 0,
		3, 0, 0,
		0, 2, 0,
	}
	f, err := TruncatedSVD(a, 4, 3, SVDOptions{Rank: 2})
	if err != nil {
		panic(err)
	}
	fmt.Printf("%.4f\n", f.S)
	// Output: [4.2426 2.8284]
}
