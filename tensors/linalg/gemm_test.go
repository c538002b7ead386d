// Copyright ©2025 The wtool Authors.

package linalg

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
)

// allLevels returns the kernel levels that can run on this machine. With
// the race detector only the default level is returned: the slow part
// under the race detector is the naive reference, and the Go code of the
// driver is the same for every level.
func allLevels() []level {
	if raceEnabled {
		return []level{bestLevel()}
	}
	var ls []level
	for _, l := range []level{levelGonum, levelGo, levelAVX2, levelAVX512} {
		if levelSupported(l) {
			ls = append(ls, l)
		}
	}
	return ls
}

// withLevel runs f with the kernels of level l selected. The shortcut to
// gonum for tiny products is disabled so that the blocked driver is tested
// on every shape.
func withLevel(t testing.TB, l level, f func()) {
	t.Helper()
	old, oldTiny := curLevel, tinyWork
	if !setLevel(l) {
		t.Skipf("level %v not supported", l)
	}
	tinyWork = 0
	defer func() { setLevel(old); tinyWork = oldTiny }()
	f()
}

// withProcs runs f with GOMAXPROCS set to p.
func withProcs(p int, f func()) {
	old := runtime.GOMAXPROCS(p)
	defer runtime.GOMAXPROCS(old)
	f()
}

// refGemm is a naive float64 triple loop. It returns C = alpha*op(A)*op(B) +
// beta*C (beta == 0: C ignored) and, per element, the error scale
// |alpha|*Σ|a||b| + |beta*c|.
func refGemm(tA, tB bool, m, n, k int, alpha float64, a []float64, lda int, b []float64, ldb int, beta float64, c []float64, ldc int) (res, scale []float64) {
	res = make([]float64, m*n)
	scale = make([]float64, m*n)
	for i := range m {
		for j := range n {
			var s, sa float64
			for p := range k {
				var av, bv float64
				if tA {
					av = a[p*lda+i]
				} else {
					av = a[i*lda+p]
				}
				if tB {
					bv = b[j*ldb+p]
				} else {
					bv = b[p*ldb+j]
				}
				s += av * bv
				sa += math.Abs(av * bv)
			}
			v := alpha * s
			sc := math.Abs(alpha) * sa
			if beta != 0 {
				v += beta * c[i*ldc+j]
				sc += math.Abs(beta * c[i*ldc+j])
			}
			res[i*n+j] = v
			scale[i*n+j] = sc
		}
	}
	return res, scale
}

// gemmCase is one GEMM problem.
type gemmCase struct {
	tA, tB        bool
	m, n, k       int
	alpha, beta   float64
	padA, padB    int // extra leading-dimension padding
	padC          int
	nanC          bool // fill C with NaN (ignored unless beta == 0)
	seed          uint64
	parallelProcs int // GOMAXPROCS to use; 0 leaves it unchanged
}

func (tc gemmCase) String() string {
	return fmt.Sprintf("tA=%v,tB=%v,m=%d,n=%d,k=%d,alpha=%v,beta=%v,pad=%d/%d/%d,nan=%v",
		tc.tA, tc.tB, tc.m, tc.n, tc.k, tc.alpha, tc.beta, tc.padA, tc.padB, tc.padC, tc.nanC)
}

func trans(t bool) blas.Transpose {
	if t {
		return blas.Trans
	}
	return blas.NoTrans
}

// operandShapes returns rows, cols and leading dimensions of the stored A,
// B and C.
func (tc gemmCase) shapes() (ar, ac, lda, br, bc, ldb, ldc int) {
	ar, ac = tc.m, tc.k
	if tc.tA {
		ar, ac = tc.k, tc.m
	}
	br, bc = tc.k, tc.n
	if tc.tB {
		br, bc = tc.n, tc.k
	}
	return ar, ac, max(1, ac) + tc.padA, br, bc, max(1, bc) + tc.padB, max(1, tc.n) + tc.padC
}

// randMatrix returns an r×c matrix with leading dimension ld whose padding
// holds a sentinel value.
func randMatrix(rnd *rand.Rand, r, c, ld int, sentinel float64) []float64 {
	if r == 0 {
		return nil
	}
	s := make([]float64, (r-1)*ld+c)
	for i := range s {
		if i%ld < c {
			s[i] = rnd.Float64()*2 - 1
		} else {
			s[i] = sentinel
		}
	}
	return s
}

func toF32(s []float64) []float32 {
	r := make([]float32, len(s))
	for i, v := range s {
		r[i] = float32(v)
	}
	return r
}

func toF64(s []float32) []float64 {
	r := make([]float64, len(s))
	for i, v := range s {
		r[i] = float64(v)
	}
	return r
}

// checkResult compares got (stored C, leading dimension ldc) with the
// reference, checks that the padding of C is untouched and returns an error
// describing the first mismatch.
func checkResult(got, orig, want, scale []float64, m, n, ldc int, eps float64, k int) error {
	for i := range got {
		r, j := i/ldc, i%ldc
		if j >= n || r >= m {
			if !(got[i] == orig[i] || (math.IsNaN(got[i]) && math.IsNaN(orig[i]))) {
				return fmt.Errorf("padding of C modified at %d: %v -> %v", i, orig[i], got[i])
			}
			continue
		}
		w := want[r*n+j]
		tol := 2*float64(k+4)*eps*scale[r*n+j] + 1e-300
		if d := math.Abs(got[i] - w); !(d <= tol) {
			return fmt.Errorf("C[%d,%d] = %v, want %v (diff %v, tol %v)", r, j, got[i], w, d, tol)
		}
	}
	return nil
}

// runCase runs tc for both precisions with the current kernels.
func runCase(t *testing.T, tc gemmCase) {
	t.Helper()
	rnd := rand.New(rand.NewPCG(tc.seed, uint64(tc.m*1000003+tc.n*1009+tc.k)))
	ar, ac, lda, br, bc, ldb, ldc := tc.shapes()
	a := randMatrix(rnd, ar, ac, lda, 1e30)
	b := randMatrix(rnd, br, bc, ldb, -1e30)
	c := randMatrix(rnd, tc.m, tc.n, ldc, 7)
	if tc.nanC && tc.beta == 0 {
		for i := range c {
			if i%ldc < tc.n {
				c[i] = math.NaN()
			}
		}
	}
	// Reference computed from the float32-rounded inputs so that both
	// precisions are compared with the exact product of their inputs.
	a32, b32, c32 := toF32(a), toF32(b), toF32(c)
	alpha32, beta32 := float32(tc.alpha), float32(tc.beta)
	want32, scale32 := refGemm(tc.tA, tc.tB, tc.m, tc.n, tc.k, float64(alpha32), toF64(a32), lda, toF64(b32), ldb, float64(beta32), toF64(c32), ldc)
	want64, scale64 := refGemm(tc.tA, tc.tB, tc.m, tc.n, tc.k, tc.alpha, a, lda, b, ldb, tc.beta, c, ldc)

	run := func() {
		got32 := append([]float32(nil), c32...)
		Implementation{}.Sgemm(trans(tc.tA), trans(tc.tB), tc.m, tc.n, tc.k, alpha32, a32, lda, b32, ldb, beta32, got32, ldc)
		if err := checkResult(toF64(got32), toF64(c32), want32, scale32, tc.m, tc.n, ldc, 0x1p-24, tc.k); err != nil {
			t.Errorf("Sgemm %v: %v", tc, err)
		}
		got64 := append([]float64(nil), c...)
		Implementation{}.Dgemm(trans(tc.tA), trans(tc.tB), tc.m, tc.n, tc.k, tc.alpha, a, lda, b, ldb, tc.beta, got64, ldc)
		if err := checkResult(got64, c, want64, scale64, tc.m, tc.n, ldc, 0x1p-53, tc.k); err != nil {
			t.Errorf("Dgemm %v: %v", tc, err)
		}
	}
	if tc.parallelProcs > 0 {
		withProcs(tc.parallelProcs, run)
	} else {
		run()
	}
}

var (
	smallDims = []int{0, 1, 2, 3, 5, 7, 15, 16, 17, 31, 33}
	largeDims = []int{64, 100, 255, 257}
	alphas    = []float64{0, 1, -0.5, 2}
	betas     = []float64{0, 1, 0.3}
)

// TestGemmSmallShapes checks every combination of small m, n, k and the four
// transpose combinations against the naive reference, cycling through alpha,
// beta, leading-dimension padding and NaN-filled C.
func TestGemmSmallShapes(t *testing.T) {
	for _, l := range allLevels() {
		t.Run(l.String(), func(t *testing.T) {
			withLevel(t, l, func() {
				idx := 0
				for _, m := range smallDims {
					for _, n := range smallDims {
						for _, k := range smallDims {
							for tr := range 4 {
								idx++
								beta := betas[idx%len(betas)]
								runCase(t, gemmCase{
									tA: tr&1 != 0, tB: tr&2 != 0,
									m: m, n: n, k: k,
									alpha: alphas[(idx/3)%len(alphas)], beta: beta,
									padA: idx % 3, padB: (idx / 2) % 3, padC: (idx / 5) % 2,
									nanC: beta == 0 && idx%2 == 0,
									seed: uint64(idx),
								})
							}
						}
					}
				}
			})
		})
	}
}

// TestGemmDefaultDispatch runs small shapes with the default settings
// (fastest kernels, tiny products delegated to gonum).
func TestGemmDefaultDispatch(t *testing.T) {
	idx := 0
	for _, m := range []int{0, 1, 2, 3, 6, 7, 13} {
		for _, n := range []int{0, 1, 2, 5, 7, 13} {
			for _, k := range []int{0, 1, 3, 6, 9} {
				idx++
				tr := idx % 4
				beta := betas[idx%len(betas)]
				runCase(t, gemmCase{
					tA: tr&1 != 0, tB: tr&2 != 0, m: m, n: n, k: k,
					alpha: alphas[(idx/3)%len(alphas)], beta: beta,
					padA: idx % 2, padC: idx % 3, nanC: beta == 0, seed: uint64(idx),
				})
			}
		}
	}
}

// TestGemmLargeShapes checks larger shapes with every alpha and beta.
func TestGemmLargeShapes(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("short or race")
	}
	for _, l := range allLevels() {
		t.Run(l.String(), func(t *testing.T) {
			withLevel(t, l, func() {
				idx := 0
				dims := append([]int{1, 17}, largeDims...)
				for _, m := range dims {
					for _, n := range dims {
						for _, k := range []int{1, 33, 257} {
							idx++
							tr := idx % 4
							runCase(t, gemmCase{
								tA: tr&1 != 0, tB: tr&2 != 0,
								m: m, n: n, k: k,
								alpha: alphas[idx%len(alphas)], beta: betas[idx%len(betas)],
								padA: idx % 5, padB: idx % 3, padC: idx % 2,
								nanC: idx%2 == 1,
								seed: uint64(idx),
							})
						}
					}
				}
				for _, alpha := range alphas {
					for _, beta := range betas {
						for tr := range 4 {
							idx++
							runCase(t, gemmCase{
								tA: tr&1 != 0, tB: tr&2 != 0,
								m: 255, n: 257, k: 300,
								alpha: alpha, beta: beta,
								padA: 3, padB: 1, padC: 2,
								nanC: beta == 0,
								seed: uint64(idx),
							})
						}
					}
				}
			})
		})
	}
}

// TestGemmBlocking uses shapes that exceed the cache-block sizes in every
// dimension (several mc, kc and nc blocks with ragged edges) and runs them
// with several GOMAXPROCS values so that every parallel split is used.
func TestGemmBlocking(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	shapes := [][3]int{
		{1601, 41, 301}, // many rows: row split, several mc blocks
		{23, 1000, 531}, // many columns: column split, several nc blocks
		{13, 9, 3001},   // tiny C, long k: k split
		{300, 290, 600}, // square-ish: 2-D split
		{1, 2000, 700},  // row vector
		{2000, 1, 700},  // column vector
		{97, 101, 1},    // rank-1 update
	}
	for _, l := range allLevels() {
		if l == levelGonum {
			continue
		}
		t.Run(l.String(), func(t *testing.T) {
			withLevel(t, l, func() {
				for i, s := range shapes {
					for _, procs := range []int{1, 2, 3, 4} {
						tr := (i + procs) % 4
						runCase(t, gemmCase{
							tA: tr&1 != 0, tB: tr&2 != 0,
							m: s[0], n: s[1], k: s[2],
							alpha: -0.5, beta: betas[(i+procs)%3],
							padA: 1, padB: 2, padC: 3,
							nanC:          (i+procs)%3 == 0,
							seed:          uint64(i),
							parallelProcs: procs,
						})
					}
				}
			})
		})
	}
}

// TestGemmForcedPlans runs the parallel driver with explicitly chosen splits,
// including splits the cost model would not pick, so that every code path
// of run is exercised regardless of the number of CPUs.
func TestGemmForcedPlans(t *testing.T) {
	plans := []plan{{1, 1, 1}, {2, 1, 1}, {1, 2, 1}, {2, 2, 1}, {3, 2, 1}, {1, 1, 2}, {1, 1, 3}}
	for _, l := range allLevels() {
		if l == levelGonum {
			continue
		}
		t.Run(l.String(), func(t *testing.T) {
			withLevel(t, l, func() {
				for _, pl := range plans {
					for tr := range 4 {
						tc := gemmCase{tA: tr&1 != 0, tB: tr&2 != 0, m: 77, n: 95, k: 600, alpha: 2, beta: 0.3, padA: 1, padC: 2, seed: uint64(tr)}
						ar, ac, lda, br, bc, ldb, ldc := tc.shapes()
						rnd := rand.New(rand.NewPCG(1, uint64(tr)))
						a := randMatrix(rnd, ar, ac, lda, 0)
						b := randMatrix(rnd, br, bc, ldb, 0)
						c := randMatrix(rnd, tc.m, tc.n, ldc, 0)
						want, scale := refGemm(tc.tA, tc.tB, tc.m, tc.n, tc.k, tc.alpha, a, lda, b, ldb, tc.beta, c, ldc)
						got := append([]float64(nil), c...)
						op := &operands[float64]{tA: tc.tA, tB: tc.tB, a: a, lda: lda, b: b, ldb: ldb, alpha: tc.alpha}
						cfg64.run(op, pl, tc.m, tc.n, tc.k, tc.beta, got, ldc)
						if err := checkResult(got, c, want, scale, tc.m, tc.n, ldc, 0x1p-53, tc.k); err != nil {
							t.Errorf("Dgemm plan %v %v: %v", pl, tc, err)
						}
						a32, b32, c32 := toF32(a), toF32(b), toF32(c)
						want32, scale32 := refGemm(tc.tA, tc.tB, tc.m, tc.n, tc.k, tc.alpha, toF64(a32), lda, toF64(b32), ldb, tc.beta, toF64(c32), ldc)
						got32 := append([]float32(nil), c32...)
						op32 := &operands[float32]{tA: tc.tA, tB: tc.tB, a: a32, lda: lda, b: b32, ldb: ldb, alpha: float32(tc.alpha)}
						cfg32.run(op32, pl, tc.m, tc.n, tc.k, float32(tc.beta), got32, ldc)
						if err := checkResult(toF64(got32), toF64(c32), want32, scale32, tc.m, tc.n, ldc, 0x1p-24, tc.k); err != nil {
							t.Errorf("Sgemm plan %v %v: %v", pl, tc, err)
						}
					}
				}
			})
		})
	}
}

// TestGemmAgainstGonum compares with gonum's implementation on random inputs.
func TestGemmAgainstGonum(t *testing.T) {
	rnd := rand.New(rand.NewPCG(42, 43))
	for _, l := range allLevels() {
		t.Run(l.String(), func(t *testing.T) {
			withLevel(t, l, func() {
				for iter := range 40 {
					m, n, k := 1+rnd.IntN(300), 1+rnd.IntN(300), 1+rnd.IntN(300)
					tA, tB := trans(rnd.IntN(2) == 1), trans(rnd.IntN(2) == 1)
					alpha, beta := rnd.NormFloat64(), rnd.NormFloat64()
					if iter%4 == 0 {
						beta = 0
					}
					lda, ldb := k, n
					ar, br := m, k
					if tA == blas.Trans {
						lda, ar = m, k
					}
					if tB == blas.Trans {
						ldb, br = k, n
					}
					a := randMatrix(rnd, ar, lda, lda, 0)
					b := randMatrix(rnd, br, ldb, ldb, 0)
					c := randMatrix(rnd, m, n, n, 0)
					want := append([]float64(nil), c...)
					gonum.Implementation{}.Dgemm(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, want, n)
					got := append([]float64(nil), c...)
					Implementation{}.Dgemm(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, got, n)
					if d := maxRelDiff(got, want); d > 1e-12 {
						t.Errorf("Dgemm m=%d n=%d k=%d %c%c: max relative difference to gonum %g", m, n, k, tA, tB, d)
					}
					a32, b32, c32 := toF32(a), toF32(b), toF32(c)
					want32 := append([]float32(nil), c32...)
					gonum.Implementation{}.Sgemm(tA, tB, m, n, k, float32(alpha), a32, lda, b32, ldb, float32(beta), want32, n)
					got32 := append([]float32(nil), c32...)
					Implementation{}.Sgemm(tA, tB, m, n, k, float32(alpha), a32, lda, b32, ldb, float32(beta), got32, n)
					if d := maxRelDiff(toF64(got32), toF64(want32)); d > 2e-4 {
						t.Errorf("Sgemm m=%d n=%d k=%d %c%c: max relative difference to gonum %g", m, n, k, tA, tB, d)
					}
				}
			})
		})
	}
}

// maxRelDiff returns max|x-y| / max|y|.
func maxRelDiff(x, y []float64) float64 {
	var d, s float64
	for i := range x {
		d = math.Max(d, math.Abs(x[i]-y[i]))
		s = math.Max(s, math.Abs(y[i]))
	}
	if s == 0 {
		return d
	}
	return d / s
}

// TestGemmRace runs concurrent moderate-size products (each itself split
// among goroutines) so that the race detector can check the parallel code
// and the workspace pool.
func TestGemmRace(t *testing.T) {
	withProcs(4, func() {
		done := make(chan struct{})
		for g := range 3 {
			go func() {
				defer func() { done <- struct{}{} }()
				runCase(t, gemmCase{m: 190 + g, n: 210, k: 400, alpha: 1, beta: 0.3, tB: g == 1, tA: g == 2, seed: uint64(g)})
				runCase(t, gemmCase{m: 9, n: 11, k: 3000, alpha: 1, beta: 0, seed: uint64(g)})
			}()
		}
		for range 3 {
			<-done
		}
	})
}

// TestGemmPanics checks that invalid arguments panic with gonum's messages.
func TestGemmPanics(t *testing.T) {
	a := make([]float64, 100)
	type args struct {
		tA, tB                 blas.Transpose
		m, n, k, lda, ldb, ldc int
		la, lb, lc             int
	}
	cases := []args{
		{blas.Transpose('x'), blas.NoTrans, 2, 2, 2, 2, 2, 2, 4, 4, 4},
		{blas.NoTrans, blas.Transpose('x'), 2, 2, 2, 2, 2, 2, 4, 4, 4},
		{blas.NoTrans, blas.NoTrans, -1, 2, 2, 2, 2, 2, 4, 4, 4},
		{blas.NoTrans, blas.NoTrans, 2, -1, 2, 2, 2, 2, 4, 4, 4},
		{blas.NoTrans, blas.NoTrans, 2, 2, -1, 2, 2, 2, 4, 4, 4},
		{blas.NoTrans, blas.NoTrans, 2, 2, 3, 2, 2, 2, 9, 9, 9},
		{blas.Trans, blas.NoTrans, 3, 2, 2, 2, 2, 2, 9, 9, 9},
		{blas.NoTrans, blas.NoTrans, 2, 3, 2, 2, 2, 3, 9, 9, 9},
		{blas.NoTrans, blas.Trans, 2, 2, 3, 3, 2, 2, 9, 9, 9},
		{blas.NoTrans, blas.NoTrans, 2, 3, 2, 2, 3, 2, 9, 9, 9},
		{blas.NoTrans, blas.NoTrans, 2, 2, 2, 2, 2, 2, 3, 4, 4},
		{blas.NoTrans, blas.NoTrans, 2, 2, 2, 2, 2, 2, 4, 3, 4},
		{blas.NoTrans, blas.NoTrans, 2, 2, 2, 2, 2, 2, 4, 4, 3},
		{blas.Trans, blas.Trans, 2, 2, 2, 2, 2, 2, 4, 4, 4},     // valid
		{blas.NoTrans, blas.NoTrans, 0, 2, 2, 2, 2, 2, 0, 0, 0}, // valid, empty
	}
	catch := func(f func()) (r any) {
		defer func() { r = recover() }()
		f()
		return nil
	}
	for _, l := range allLevels() {
		withLevel(t, l, func() {
			for _, tc := range cases {
				want := catch(func() {
					gonum.Implementation{}.Dgemm(tc.tA, tc.tB, tc.m, tc.n, tc.k, 1, a[:tc.la], tc.lda, a[:tc.lb], tc.ldb, 0, make([]float64, tc.lc), tc.ldc)
				})
				got := catch(func() {
					Implementation{}.Dgemm(tc.tA, tc.tB, tc.m, tc.n, tc.k, 1, a[:tc.la], tc.lda, a[:tc.lb], tc.ldb, 0, make([]float64, tc.lc), tc.ldc)
				})
				if got != want {
					t.Errorf("%v Dgemm(%+v): panic %v, want %v", l, tc, got, want)
				}
				a32 := make([]float32, 100)
				got = catch(func() {
					Implementation{}.Sgemm(tc.tA, tc.tB, tc.m, tc.n, tc.k, 1, a32[:tc.la], tc.lda, a32[:tc.lb], tc.ldb, 0, make([]float32, tc.lc), tc.ldc)
				})
				if got != want {
					t.Errorf("%v Sgemm(%+v): panic %v, want %v", l, tc, got, want)
				}
			}
		})
	}
}

// TestMatMul checks the convenience wrappers.
func TestMatMul(t *testing.T) {
	rnd := rand.New(rand.NewPCG(5, 6))
	for tr := range 4 {
		tA, tB := tr&1 != 0, tr&2 != 0
		m, k, n := 37, 51, 29
		a := randMatrix(rnd, m, k, k, 0) // same element count either way
		b := randMatrix(rnd, k, n, n, 0)
		lda, ldb := k, n
		if tA {
			lda = m
		}
		if tB {
			ldb = k
		}
		want, scale := refGemm(tA, tB, m, n, k, 1, a, lda, b, ldb, 0, nil, n)
		got := make([]float64, m*n)
		for i := range got {
			got[i] = math.NaN()
		}
		MatMul64(got, a, b, m, k, n, tA, tB)
		if err := checkResult(got, got, want, scale, m, n, n, 0x1p-53, k); err != nil {
			t.Errorf("MatMul64 tA=%v tB=%v: %v", tA, tB, err)
		}
		a32, b32 := toF32(a), toF32(b)
		want32, scale32 := refGemm(tA, tB, m, n, k, 1, toF64(a32), lda, toF64(b32), ldb, 0, nil, n)
		got32 := make([]float32, m*n)
		MatMul32(got32, a32, b32, m, k, n, tA, tB)
		if err := checkResult(toF64(got32), toF64(got32), want32, scale32, m, n, n, 0x1p-24, k); err != nil {
			t.Errorf("MatMul32 tA=%v tB=%v: %v", tA, tB, err)
		}
	}
}
