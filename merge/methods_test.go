package merge

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"pgregory.net/rapid"
)

func near32(t testing.TB, what string, got []float32, want []float64, tol float64) {
	t.Helper()
	for i := range want {
		if math.Abs(float64(got[i])-want[i]) > tol*(1+math.Abs(want[i])) {
			t.Fatalf("%s: element %d = %v, want %v (all: %v vs %v)", what, i, got[i], want[i], got, want)
		}
	}
}

func TestLinearFormula(t *testing.T) {
	a := []float32{1, 2, 3}
	b := []float32{3, 0, -3}
	dst := make([]float32, 3)
	// (1*a + 3*b) / 4
	if err := Linear(dst, [][]float32{a, b}, []float64{1, 3}, true); err != nil {
		t.Fatal(err)
	}
	near32(t, "normalized", dst, []float64{(1 + 9) / 4.0, 2 / 4.0, (3 - 9) / 4.0}, 1e-7)
	Linear(dst, [][]float32{a, b}, []float64{1, 3}, false)
	near32(t, "unnormalized", dst, []float64{10, 2, -6}, 1e-7)
	if err := Linear(dst, [][]float32{a, b}, []float64{1, -1}, true); err == nil {
		t.Error("weights summing to zero must fail")
	}
}

func TestTaskArithmeticFormula(t *testing.T) {
	base := []float32{1, 1, 1, 1}
	x1 := []float32{2, 1, 0, 1}  // d1 = [1, 0, -1, 0]
	x2 := []float32{1, 3, 1, -1} // d2 = [0, 2, 0, -2]
	dst := make([]float32, 4)
	// base + 0.5 * (1*d1 + 2*d2), unnormalized (mergekit's task_arithmetic)
	err := TaskVectors(dst, base, [][]float32{x1, x2}, TaskVectorOptions{Weights: []float64{1, 2}, Lambda: 0.5})
	if err != nil {
		t.Fatal(err)
	}
	near32(t, "task arithmetic", dst, []float64{1 + 0.5*1, 1 + 0.5*4, 1 + 0.5*-1, 1 + 0.5*-4}, 1e-7)
}

func TestTIESFormula(t *testing.T) {
	// Worked by hand. base = 0. Task vectors (weights 1, 1, density 0.5 keeps
	// the 2 largest magnitudes of 4):
	//   d1 = [ 3, -1,  2, -4] -> [3, 0, 0, -4]
	//   d2 = [-2,  5, -1,  1] -> [-2, 5, 0, 0]
	//   d3 = [ 1,  1, -6,  2] (density 1: kept whole)
	// weighted (w3 = 2): d3w = [2, 2, -12, 4]
	// sums: [3, 7, -12, 0] -> majority signs [+, +, -, + (tie counts +)]
	// agreeing entries: e0: 3 (d1), 2 (d3w); e1: 5, 2; e2: -12; e3: 4 (d3w; d1's -4 disagrees)
	// normalized by the weights of the agreeing entries:
	//   e0: (3+2)/(1+2), e1: (5+2)/(1+2), e2: -12/2, e3: 4/2
	base := make([]float32, 4)
	x1 := []float32{3, -1, 2, -4}
	x2 := []float32{-2, 5, -1, 1}
	x3 := []float32{1, 1, -6, 2}
	dst := make([]float32, 4)
	err := TaskVectors(dst, base, [][]float32{x1, x2, x3}, TaskVectorOptions{
		Weights: []float64{1, 1, 2}, Densities: []float64{0.5, 0.5, 1}, Sparsify: Magnitude,
		Consensus: true, Normalize: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	near32(t, "ties", dst, []float64{5.0 / 3, 7.0 / 3, -6, 2}, 1e-6)
	// lambda scales the merged vector, and without normalize it is the sum
	TaskVectors(dst, base, [][]float32{x1, x2, x3}, TaskVectorOptions{
		Weights: []float64{1, 1, 2}, Densities: []float64{0.5, 0.5, 1}, Sparsify: Magnitude,
		Consensus: true, Lambda: 0.5,
	})
	near32(t, "ties unnormalized", dst, []float64{2.5, 3.5, -6, 2}, 1e-6)
}

func TestSlerpFormula(t *testing.T) {
	// orthogonal unit vectors: slerp at t is (cos(t pi/2), sin(t pi/2))
	a, b := []float32{1, 0}, []float32{0, 1}
	dst := make([]float32, 2)
	for _, tt := range []float64{0, 0.25, 0.5, 1} {
		Slerp(dst, a, b, tt)
		near32(t, fmt.Sprint("t=", tt), dst, []float64{math.Cos(tt * math.Pi / 2), math.Sin(tt * math.Pi / 2)}, 1e-7)
	}
	// nearly parallel: linear interpolation
	Slerp(dst, []float32{1, 0}, []float32{2, 1e-3}, 0.5)
	near32(t, "lerp fallback", dst, []float64{1.5, 0.5e-3}, 1e-7)
}

func vec(n int) *rapid.Generator[[]float32] {
	return rapid.SliceOfN(rapid.Float32Range(-10, 10), n, n)
}

func TestSlerpProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(1, 20).Draw(t, "n")
		a, b := vec(n).Draw(t, "a"), vec(n).Draw(t, "b")
		tt := rapid.Float64Range(0, 1).Draw(t, "t")
		x, y := make([]float32, n), make([]float32, n)
		Slerp(x, a, b, tt)
		Slerp(y, b, a, 1-tt)
		scale := 0.0
		for i := range a {
			scale = max(scale, math.Abs(float64(a[i])), math.Abs(float64(b[i])))
		}
		for i := range x {
			if math.Abs(float64(x[i]-y[i])) > 1e-4*(1+scale) {
				t.Fatalf("slerp(a,b,t) != slerp(b,a,1-t) at %d: %v vs %v", i, x[i], y[i])
			}
		}
		Slerp(x, a, a, tt)
		for i := range x {
			if math.Abs(float64(x[i]-a[i])) > 1e-5*(1+math.Abs(float64(a[i]))) {
				t.Fatalf("slerp(a,a,t) != a")
			}
		}
		Slerp(x, a, b, 0)
		Slerp(y, a, b, 1)
		for i := range x {
			if math.Abs(float64(x[i]-a[i])) > 1e-5*(1+scale) || math.Abs(float64(y[i]-b[i])) > 1e-5*(1+scale) {
				t.Fatalf("endpoints: %v %v", x, y)
			}
		}
	})
}

func TestLinearOneModelIsIdentity(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(1, 30).Draw(t, "n")
		a := vec(n).Draw(t, "a")
		w := rapid.Float64Range(0.1, 5).Draw(t, "w")
		dst := make([]float32, n)
		Linear(dst, [][]float32{a}, []float64{w}, true)
		for i := range a {
			if math.Abs(float64(dst[i]-a[i])) > 1e-6*(1+math.Abs(float64(a[i]))) {
				t.Fatalf("linear of one model: %v vs %v", dst, a)
			}
		}
	})
}

// TestTIESAndDAREOrderIndependent: permuting the models (with their weights,
// densities and random streams) does not change the merge.
func TestTIESAndDAREOrderIndependent(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(1, 25).Draw(t, "n")
		k := rapid.IntRange(2, 4).Draw(t, "models")
		base := vec(n).Draw(t, "base")
		models := make([][]float32, k)
		weights := make([]float64, k)
		dens := make([]float64, k)
		for i := range k {
			models[i] = vec(n).Draw(t, fmt.Sprint("m", i))
			weights[i] = rapid.Float64Range(0.1, 2).Draw(t, fmt.Sprint("w", i))
			dens[i] = rapid.Float64Range(0.2, 1).Draw(t, fmt.Sprint("d", i))
		}
		perm := rapid.Permutation(seq(k)).Draw(t, "perm")
		for _, o := range []TaskVectorOptions{
			{Sparsify: Magnitude, Consensus: true, Normalize: true},
			{Sparsify: Random, Consensus: true, Rescale: RescaleInverse, Seed: 7},
			{Sparsify: Random, Rescale: RescaleL1, Seed: 8},
		} {
			run := func(order []int) []float32 {
				oo := o
				var ms [][]float32
				for _, i := range order {
					ms = append(ms, models[i])
					oo.Weights = append(oo.Weights, weights[i])
					oo.Densities = append(oo.Densities, dens[i])
				}
				dst := make([]float32, n)
				if err := TaskVectors(dst, base, ms, oo); err != nil {
					t.Fatal(err)
				}
				return dst
			}
			x, y := run(seq(k)), run(perm)
			for i := range x {
				if math.Abs(float64(x[i]-y[i])) > 1e-5*(1+math.Abs(float64(x[i]))) {
					t.Fatalf("%+v: order changes element %d: %v vs %v", o, i, x[i], y[i])
				}
			}
		}
	})
}

func seq(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}

// TestDAREStatistics: DARE keeps the expected fraction of entries and, with
// the paper's 1/density rescaling, is unbiased.
func TestDAREStatistics(t *testing.T) {
	const n = 200_000
	r := rand.New(rand.NewPCG(1, 2))
	base := make([]float32, n)
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	for _, density := range []float64{0.1, 0.5, 0.9} {
		dst := make([]float32, n)
		err := TaskVectors(dst, base, [][]float32{x}, TaskVectorOptions{Weights: []float64{1}, Densities: []float64{density},
			Sparsify: Random, Rescale: RescaleInverse, Seed: uint64(density * 100)})
		if err != nil {
			t.Fatal(err)
		}
		kept := 0
		var sumDst, sumX float64
		for i := range dst {
			if dst[i] != 0 {
				kept++
				if math.Abs(float64(dst[i])-float64(x[i])/density) > 1e-5*math.Abs(float64(x[i])/density) {
					t.Fatalf("kept entry not rescaled by 1/density")
				}
			}
			sumDst += float64(dst[i])
			sumX += float64(x[i])
		}
		frac := float64(kept) / n
		sd := math.Sqrt(density * (1 - density) / n)
		if math.Abs(frac-density) > 5*sd {
			t.Errorf("density %g: kept %.4f of the entries", density, frac)
		}
		// E[sum dst] = sum x; the sum's sd is sqrt(sum x_i^2 (1-p)/p) ~ sqrt(n (1-p)/p)
		if math.Abs(sumDst-sumX) > 5*math.Sqrt(n*(1-density)/density) {
			t.Errorf("density %g: sum %.1f vs %.1f, biased", density, sumDst, sumX)
		}
	}
}

// TestTopMagnitudeMatchesLegacy: TIES' streaming selection keeps exactly
// the entries the old sort-free quickselect kept (ties at the threshold in
// index order), on small hand cases and random vectors with many ties.
func TestTopMagnitudeMatchesLegacy(t *testing.T) {
	base := []float32{0, 0, 0, 0, 0, 0}
	x := []float32{1, -5, 3, -3, 0.5, 3}
	dst := make([]float32, 6)
	// k = 3: -5, then two of the three 3s (the first ones)
	TaskVectors(dst, base, [][]float32{x}, TaskVectorOptions{Weights: []float64{1}, Densities: []float64{0.5}, Sparsify: Magnitude})
	if fmt.Sprint(dst) != "[0 -5 3 -3 0 0]" {
		t.Errorf("got %v", dst)
	}
	r := rand.New(rand.NewPCG(5, 5))
	for range 300 {
		n := 1 + r.IntN(50)
		v, b := make([]float32, n), make([]float32, n)
		for i := range v {
			v[i] = float32(r.IntN(7) - 3)
			b[i] = float32(r.IntN(3) - 1)
		}
		d := r.Float64()
		o := TaskVectorOptions{Weights: []float64{1}, Densities: []float64{d}, Sparsify: Magnitude}
		got := make([]float32, n)
		if err := TaskVectors(got, b, [][]float32{v}, o); err != nil {
			t.Fatal(err)
		}
		want := legacyTaskVectors(b, [][]float32{v}, o, nil)
		for i := range got {
			if got[i] != float32(want[i]) {
				t.Fatalf("n=%d density %g: element %d = %v, legacy %v (%v, base %v)", n, d, i, got[i], want[i], v, b)
			}
		}
	}
}

func ExampleTaskVectors() {
	// TIES-merge two fine-tunes of a base: trim each task vector to its
	// largest half, elect signs, average the agreeing entries.
	base := []float32{0, 0, 0, 0}
	a := []float32{3, -1, 2, -4}
	b := []float32{-2, 5, -1, 1}
	out := make([]float32, 4)
	TaskVectors(out, base, [][]float32{a, b}, TaskVectorOptions{
		Weights: []float64{1, 1}, Densities: []float64{0.5, 0.5},
		Sparsify: Magnitude, Consensus: true, Normalize: true,
	})
	fmt.Println(out)
	// Output: [3 5 0 -4]
}

// TestTopMagnitudeSampling: the sampling route of the top-k selection and
// its fallback (a sample that misleads: every sampled block holds small
// values) both give the old implementation's exact result.
func TestTopMagnitudeSampling(t *testing.T) {
	defer func(c int) { gatherCap = c }(gatherCap)
	gatherCap = 200000 // below the 2.6M elements: no direct gather
	const n = sampleEvery * BlockSize * 40
	r := rand.New(rand.NewPCG(9, 9))
	base := make([]float32, n)
	for _, misleading := range []bool{false, true} {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(r.NormFloat64())
			if misleading && (i/BlockSize)%sampleEvery == 0 {
				x[i] *= 1e-3
			}
		}
		hits, misses := sampleHits.Load(), sampleMisses.Load()
		o := TaskVectorOptions{Weights: []float64{1}, Densities: []float64{0.37}, Sparsify: Magnitude}
		got := make([]float32, n)
		if err := TaskVectors(got, base, [][]float32{x}, o); err != nil {
			t.Fatal(err)
		}
		want := legacyTaskVectors(base, [][]float32{x}, o, nil)
		for i := range got {
			if got[i] != float32(want[i]) {
				t.Fatalf("misleading %v: element %d = %v, legacy %v", misleading, i, got[i], want[i])
			}
		}
		h, m := sampleHits.Load()-hits, sampleMisses.Load()-misses
		if misleading && m != 1 || !misleading && h != 1 {
			t.Errorf("misleading %v: %d sample hits, %d misses", misleading, h, m)
		}
	}
}
