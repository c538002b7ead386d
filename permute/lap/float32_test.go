package lap

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// TestFloat32 checks SolveFloat32 against Solve on the same values (the
// float32 matrix widened to float64): the same optimal cost and, on
// matrices with a unique optimum, the same assignment, for every solver
// mode, square and rectangular, minimising and maximising, with forbidden
// pairs, and over warm-started sequences.
func TestFloat32(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	shapes := [][2]int{{1, 1}, {5, 5}, {40, 40}, {7, 30}, {30, 7}, {200, 200}}
	for _, sh := range shapes {
		rows, cols := sh[0], sh[1]
		for kind := range 5 {
			for _, maximize := range []bool{false, true} {
				for _, mode := range solverModes() {
					c64 := randomMatrix(r, rows, cols, kind)
					if maximize {
						c64 = negInf(c64)
					}
					c32 := make([]float32, len(c64))
					for k, x := range c64 {
						c32[k] = float32(x)
						c64[k] = float64(c32[k])
					}
					s64 := *mode.s
					s32 := *mode.s
					want, err64 := s64.Solve(c64, rows, cols, maximize)
					got, err32 := s32.SolveFloat32(context.Background(), c32, rows, cols, maximize)
					if (err64 == nil) != (err32 == nil) {
						t.Fatalf("%v kind %d %s: float64 error %v, float32 error %v", sh, kind, mode.name, err64, err32)
					}
					if err64 != nil {
						continue
					}
					if got.Cost != want.Cost {
						t.Fatalf("%v kind %d %s max=%v: float32 cost %v, float64 cost %v", sh, kind, mode.name, maximize, got.Cost, want.Cost)
					}
					checkAssignment(t, c64, rows, cols, maximize, got, 1e-9*(1+math.Abs(want.Cost)))
					if kind == 0 || kind == 3 { // continuous: the optimum is unique
						if !slices.Equal(got.RowToCol, want.RowToCol) {
							t.Fatalf("%v kind %d %s: assignments differ", sh, kind, mode.name)
						}
					}
				}
			}
		}
	}
	// warm-started sequences, as weight matching runs them
	const n = 120
	c := weightMatching(r, n, 30, 2)
	w32 := Solver{WarmStart: true}
	w64 := Solver{WarmStart: true}
	for step := range 15 {
		c32 := make([]float32, len(c))
		c64 := make([]float64, len(c))
		for k := range c {
			c[k] += 0.05 * r.NormFloat64()
			c32[k] = float32(c[k])
			c64[k] = float64(c32[k])
		}
		a, err := w32.SolveFloat32(context.Background(), c32, n, n, true)
		if err != nil {
			t.Fatal(err)
		}
		b, err := w64.Solve(c64, n, n, true)
		if err != nil {
			t.Fatal(err)
		}
		if a.Cost != b.Cost || !slices.Equal(a.RowToCol, b.RowToCol) {
			t.Fatalf("step %d: warm float32 %v, warm float64 %v", step, a.Cost, b.Cost)
		}
		if step > 0 && !w32.Stats.Warm {
			t.Fatalf("step %d: not warm", step)
		}
	}
}

// TestFloat32Errors: NaN and the wrong infinity are refused in float32
// matrices too.
func TestFloat32Errors(t *testing.T) {
	var s Solver
	for _, tc := range []struct {
		c        []float32
		maximize bool
	}{
		{[]float32{1, float32(math.NaN()), 2, 3}, false},
		{[]float32{1, float32(math.Inf(1)), 2, 3}, true},
		{[]float32{1, float32(math.Inf(-1)), 2, 3}, false},
	} {
		if _, err := s.SolveFloat32(context.Background(), tc.c, 2, 2, tc.maximize); err == nil {
			t.Errorf("%v accepted", tc.c)
		}
	}
}

// TestCancel: a cancelled context stops a solve, before it starts and in
// the middle of a large one.
func TestCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var s Solver
	if _, err := s.SolveContext(ctx, []float64{1, 2, 3, 4}, 2, 2, false); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled before: %v", err)
	}
	// A 2500 x 2500 weight-matching matrix takes hundreds of milliseconds
	// (far more than 20 ms on any machine); cancel it after 20 ms.
	const n = 2500
	c := benchMatrix("indep", n)
	c32 := make([]float32, len(c))
	for k, x := range c {
		c32[k] = float32(x)
	}
	for _, f32 := range []bool{false, true} {
		ctx, cancel := context.WithCancel(context.Background())
		tm := time.AfterFunc(20*time.Millisecond, cancel)
		start := time.Now()
		var err error
		if f32 {
			_, err = s.SolveFloat32(ctx, c32, n, n, true)
		} else {
			_, err = s.SolveContext(ctx, c, n, n, true)
		}
		tm.Stop()
		cancel()
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("float32=%v: got %v, want context.Canceled", f32, err)
		}
		t.Logf("float32=%v: stopped %v after the start (cancelled at 20ms)", f32, time.Since(start))
		// the solver is usable afterwards and starts cold
		a, err := s.SolveContext(context.Background(), []float64{1, 2, 3, 0}, 2, 2, false)
		if err != nil || a.Cost != 1 {
			t.Fatalf("after cancellation: %v %v", a.Cost, err)
		}
	}
}
