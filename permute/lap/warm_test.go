package lap

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestWarmStartSmall compares warm-started solves with brute force on
// sequences of slightly perturbed small matrices.
func TestWarmStartSmall(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	for n := 1; n <= 6; n++ {
		for _, maximize := range []bool{false, true} {
			for _, integer := range []bool{false, true} {
				s := Solver{WarmStart: true}
				c := randomMatrix(r, n, n, 0)
				if integer {
					c = randomMatrix(r, n, n, 2)
				}
				for step := range 50 {
					for k := range c {
						if integer {
							c[k] += float64(r.IntN(3) - 1)
						} else {
							c[k] += 0.05 * r.NormFloat64()
						}
					}
					want, _ := bruteForce(c, n, n, maximize)
					a, err := s.Solve(c, n, n, maximize)
					if err != nil {
						t.Fatal(err)
					}
					if s.Stats.Warm != (step > 0) {
						t.Fatalf("step %d: Stats.Warm = %v", step, s.Stats.Warm)
					}
					if integer && a.Cost != want || math.Abs(a.Cost-want) > 1e-9*(1+math.Abs(want)) {
						t.Fatalf("n=%d step %d: warm cost %v, brute force %v", n, step, a.Cost, want)
					}
					tol := 1e-9 * (1 + math.Abs(want))
					if integer {
						tol = 0
					}
					checkAssignment(t, c, n, n, maximize, a, tol)
				}
			}
		}
	}
}

// TestWarmStartSequence compares warm and cold solves on sequences of
// perturbed larger matrices of weight-matching type, with integer-valued
// and continuous entries, and with forbidden pairs.
func TestWarmStartSequence(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	const n = 150
	for _, tc := range []struct {
		name      string
		integer   bool
		forbidden bool
		maximize  bool
		eps       float64
	}{
		{"float-max", false, false, true, 0.01},
		{"float-min-large-steps", false, false, false, 0.5},
		{"integer-max", true, false, true, 0},
		{"forbidden-min", false, true, false, 0.05},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := weightMatching(r, n, n/4, 2)
			if tc.integer {
				for k := range c {
					c[k] = math.Round(c[k])
				}
			}
			warm := Solver{WarmStart: true}
			var coldScans, warmScans int64
			for step := range 20 {
				cur := append([]float64(nil), c...)
				for k := range cur {
					if tc.integer {
						cur[k] += float64(r.IntN(5) - 2)
					} else {
						cur[k] += tc.eps * 10 * r.NormFloat64()
					}
					if tc.forbidden && r.IntN(50) == 0 {
						cur[k] = math.Inf(1)
					}
				}
				var cold Solver
				want, err := cold.Solve(cur, n, n, tc.maximize)
				if err != nil {
					t.Fatal(err)
				}
				a, err := warm.Solve(cur, n, n, tc.maximize)
				if err != nil {
					t.Fatal(err)
				}
				if step > 0 && !warm.Stats.Warm {
					t.Fatal("warm start not used")
				}
				if tc.integer && a.Cost != want.Cost || math.Abs(a.Cost-want.Cost) > 1e-9*math.Abs(want.Cost) {
					t.Fatalf("step %d: warm cost %v, cold %v", step, a.Cost, want.Cost)
				}
				tol := 1e-9 * math.Abs(want.Cost)
				if tc.integer {
					tol = 0
				}
				checkAssignment(t, cur, n, n, tc.maximize, a, tol)
				if step > 0 {
					coldScans += cold.Stats.Scanned + int64(cold.Stats.ARRSteps)
					warmScans += warm.Stats.Scanned + int64(warm.Stats.ARRSteps)
				}
				c = cur
				if tc.forbidden {
					for k := range c {
						if math.IsInf(c[k], 1) {
							c[k] = 0
						}
					}
				}
			}
			t.Logf("row scans (ARR + augmentation) after the first step: cold %d, warm %d", coldScans, warmScans)
		})
	}
}

// TestWarmStartConditions checks when the previous duals are used.
func TestWarmStartConditions(t *testing.T) {
	r := rand.New(rand.NewPCG(15, 16))
	s := Solver{WarmStart: true}
	solve := func(rows, cols int, maximize bool) {
		t.Helper()
		c := randomMatrix(r, rows, cols, 0)
		a, err := s.Solve(c, rows, cols, maximize)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := bruteForce(c, rows, cols, maximize)
		if math.Abs(a.Cost-want) > 1e-9 {
			t.Fatalf("cost %v, brute force %v", a.Cost, want)
		}
	}
	steps := []struct {
		rows, cols int
		maximize   bool
		warm       bool
	}{
		{5, 5, false, false},
		{5, 5, false, true},
		{5, 5, true, false}, // direction changed
		{5, 5, true, true},
		{4, 4, true, false}, // shape changed
		{4, 6, true, false}, // rectangular: always cold
		{4, 6, true, false},
		{6, 4, true, false},
		{4, 4, true, false},
		{4, 4, true, true},
	}
	for k, st := range steps {
		solve(st.rows, st.cols, st.maximize)
		if s.Stats.Warm != st.warm {
			t.Fatalf("step %d (%dx%d max=%v): Stats.Warm = %v, want %v", k, st.rows, st.cols, st.maximize, s.Stats.Warm, st.warm)
		}
	}
	s.Reset()
	solve(4, 4, true)
	if s.Stats.Warm {
		t.Fatal("warm after Reset")
	}
	// An error forgets the duals.
	if _, err := s.Solve([]float64{math.NaN(), 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}, 4, 4, true); err == nil {
		t.Fatal("NaN accepted")
	}
	solve(4, 4, true)
	if s.Stats.Warm {
		t.Fatal("warm after an error")
	}
	// Without WarmStart, never.
	var cold Solver
	for range 3 {
		if _, err := cold.Solve(randomMatrix(r, 5, 5, 0), 5, 5, false); err != nil {
			t.Fatal(err)
		}
		if cold.Stats.Warm {
			t.Fatal("warm without WarmStart")
		}
	}
}

// TestWarmStartUnrelated checks warm starts from the duals of an unrelated
// matrix, including one of a very different scale.
func TestWarmStartUnrelated(t *testing.T) {
	r := rand.New(rand.NewPCG(17, 18))
	s := Solver{WarmStart: true}
	warmUsed := 0
	for step := range 60 {
		n := 60
		scale := math.Pow(10, float64(r.IntN(9)-4))
		c := randomMatrix(r, n, n, 2)
		for k := range c {
			c[k] *= scale
		}
		a, err := s.Solve(c, n, n, false)
		if err != nil {
			t.Fatal(err)
		}
		if s.Stats.Warm {
			warmUsed++
		}
		var cold Solver
		cold.noInit = true
		want, err := cold.Solve(c, n, n, false)
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(a.Cost-want.Cost) > 1e-9*scale*float64(n) {
			t.Fatalf("step %d: warm %v, cold %v", step, a.Cost, want.Cost)
		}
		checkAssignment(t, c, n, n, false, a, 1e-9*scale*float64(n))
	}
	// Warm starts are used between matrices of similar scale only.
	if warmUsed == 0 || warmUsed == 59 {
		t.Fatalf("warm start used %d times", warmUsed)
	}
}
