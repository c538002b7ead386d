package lap

import (
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// randomMatrix fills a rows x cols matrix with one of several value
// distributions: continuous, small integers (many ties), larger integers,
// negative values, and continuous values with forbidden (+Inf) pairs.
func randomMatrix(r *rand.Rand, rows, cols, kind int) []float64 {
	c := make([]float64, rows*cols)
	for k := range c {
		switch kind {
		case 0:
			c[k] = r.Float64()
		case 1:
			c[k] = float64(r.IntN(3))
		case 2:
			c[k] = float64(r.IntN(100) - 50)
		case 3:
			c[k] = r.NormFloat64() * 1e3
		case 4:
			c[k] = r.Float64()
			if r.IntN(3) == 0 {
				c[k] = math.Inf(1)
			}
		}
	}
	return c
}

func negInf(c []float64) []float64 {
	out := make([]float64, len(c))
	for k, x := range c {
		out[k] = x
		if math.IsInf(x, 1) {
			out[k] = math.Inf(-1)
		}
	}
	return out
}

// TestBruteForce compares the optimal cost with exhaustive enumeration on
// many small square and rectangular matrices, minimising and maximising.
func TestBruteForce(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	shapes := [][2]int{}
	for n := 1; n <= 6; n++ {
		shapes = append(shapes, [2]int{n, n})
	}
	for rows := 1; rows <= 4; rows++ {
		for cols := rows + 1; cols <= 7; cols++ {
			shapes = append(shapes, [2]int{rows, cols}, [2]int{cols, rows})
		}
	}
	modes := solverModes()
	cases := 0
	for _, sh := range shapes {
		rows, cols := sh[0], sh[1]
		for kind := range 5 {
			for rep := 0; rep < 40; rep++ {
				for _, maximize := range []bool{false, true} {
					c := randomMatrix(r, rows, cols, kind)
					if maximize && kind == 4 {
						c = negInf(c)
					}
					want, feasible := bruteForce(c, rows, cols, maximize)
					for _, mode := range modes {
						a, err := mode.s.Solve(c, rows, cols, maximize)
						if !feasible {
							if !errors.Is(err, ErrInfeasible) {
								t.Fatalf("%dx%d kind %d max=%v %s: infeasible matrix, got err=%v\n%v", rows, cols, kind, maximize, mode.name, err, c)
							}
							continue
						}
						if err != nil {
							t.Fatalf("%dx%d kind %d max=%v %s: %v\n%v", rows, cols, kind, maximize, mode.name, err, c)
						}
						tol := 1e-9 * (1 + math.Abs(want))
						if kind == 3 {
							tol = 1e-9 * 1e4
						}
						if math.Abs(a.Cost-want) > tol {
							t.Fatalf("%dx%d kind %d max=%v %s: cost %v, brute force %v\n%v", rows, cols, kind, maximize, mode.name, a.Cost, want, c)
						}
						checkAssignment(t, c, rows, cols, maximize, a, tol)
						cases++
					}
				}
			}
		}
	}
	// The package-level Solve as well, on a few cases.
	for range 200 {
		rows, cols := 1+r.IntN(6), 1+r.IntN(6)
		c := randomMatrix(r, rows, cols, 2)
		want, _ := bruteForce(c, rows, cols, false)
		a, err := Solve(c, rows, cols, false)
		if err != nil || a.Cost != want {
			t.Fatalf("Solve: %v, %v, want %v", a.Cost, err, want)
		}
	}
	t.Logf("%d cases", cases)
}

// TestIntegerExact checks that on integer costs the answer is exact, not
// just close: all arithmetic stays in exactly representable integers.
func TestIntegerExact(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	modes := solverModes()
	for rep := 0; rep < 2000; rep++ {
		rows, cols := 1+r.IntN(6), 1+r.IntN(6)
		c := randomMatrix(r, rows, cols, 1+r.IntN(2))
		for _, maximize := range []bool{false, true} {
			want, _ := bruteForce(c, rows, cols, maximize)
			for _, mode := range modes {
				a, err := mode.s.Solve(c, rows, cols, maximize)
				if err != nil {
					t.Fatal(err)
				}
				if a.Cost != want {
					t.Fatalf("%dx%d max=%v %s: cost %v, want exactly %v\n%v", rows, cols, maximize, mode.name, a.Cost, want, c)
				}
				checkAssignment(t, c, rows, cols, maximize, a, 0)
			}
		}
	}
}

func TestEmpty(t *testing.T) {
	for _, sh := range [][2]int{{0, 0}, {0, 5}, {5, 0}} {
		for _, maximize := range []bool{false, true} {
			a, err := Solve(nil, sh[0], sh[1], maximize)
			if err != nil {
				t.Fatalf("%v: %v", sh, err)
			}
			if a.Cost != 0 || len(a.RowToCol) != sh[0] || len(a.ColToRow) != sh[1] {
				t.Fatalf("%v: %+v", sh, a)
			}
			for _, j := range a.RowToCol {
				if j != -1 {
					t.Fatalf("%v: %+v", sh, a)
				}
			}
			for _, i := range a.ColToRow {
				if i != -1 {
					t.Fatalf("%v: %+v", sh, a)
				}
			}
		}
	}
}

func TestErrors(t *testing.T) {
	inf := math.Inf(1)
	nan := math.NaN()
	tests := []struct {
		name       string
		cost       []float64
		rows, cols int
		maximize   bool
		infeasible bool
		contains   string
	}{
		{"negative rows", nil, -1, 2, false, false, "negative"},
		{"negative cols", nil, 2, -3, false, false, "negative"},
		{"short slice", []float64{1, 2, 3}, 2, 2, false, false, "length 3"},
		{"long slice", []float64{1, 2, 3, 4, 5}, 2, 2, false, false, "length 5"},
		{"nil slice", nil, 1, 1, false, false, "length 0"},
		{"NaN", []float64{1, nan, 3, 4}, 2, 2, false, false, "cost[0,1] is NaN"},
		{"NaN max", []float64{1, 2, 3, nan}, 2, 2, true, false, "cost[1,1] is NaN"},
		{"-Inf min", []float64{1, 2, math.Inf(-1), 4}, 2, 2, false, false, "-Inf"},
		{"+Inf max", []float64{1, 2, 3, inf}, 2, 2, true, false, "+Inf"},
		{"infeasible square", []float64{
			1, inf, inf,
			2, inf, inf,
			3, 4, 5}, 3, 3, false, true, "infeasible"},
		{"infeasible column", []float64{
			1, inf, 2,
			2, inf, 3,
			3, inf, 5}, 3, 3, false, true, "infeasible"},
		{"infeasible row", []float64{
			1, 2, 2,
			inf, inf, inf,
			3, 4, 5}, 3, 3, false, true, "infeasible"},
		{"infeasible max", []float64{
			1, math.Inf(-1),
			2, math.Inf(-1)}, 2, 2, true, true, "infeasible"},
		{"infeasible wide", []float64{
			1, inf, inf, inf,
			2, inf, inf, inf}, 2, 4, false, true, "infeasible"},
		{"infeasible tall", []float64{
			1, inf,
			2, inf,
			3, inf}, 3, 2, false, true, "infeasible"},
		{"all forbidden", []float64{inf}, 1, 1, false, true, "infeasible"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, s := range []*Solver{new(Solver), {WarmStart: true}} {
				_, err := s.Solve(tc.cost, tc.rows, tc.cols, tc.maximize)
				if err == nil {
					t.Fatal("no error")
				}
				if errors.Is(err, ErrInfeasible) != tc.infeasible {
					t.Fatalf("errors.Is(err, ErrInfeasible) = %v: %v", !tc.infeasible, err)
				}
				if !strings.Contains(err.Error(), tc.contains) {
					t.Fatalf("error %q does not mention %q", err, tc.contains)
				}
			}
		})
	}
}

// TestForbidden checks hand-made matrices with forbidden pairs.
func TestForbidden(t *testing.T) {
	inf := math.Inf(1)
	// Only one feasible assignment: the anti-diagonal.
	c := []float64{
		inf, inf, 9,
		inf, 7, inf,
		5, inf, inf,
	}
	a, err := Solve(c, 3, 3, false)
	if err != nil {
		t.Fatal(err)
	}
	if a.Cost != 21 || a.RowToCol[0] != 2 || a.RowToCol[1] != 1 || a.RowToCol[2] != 0 {
		t.Fatalf("%+v", a)
	}
	checkAssignment(t, c, 3, 3, false, a, 1e-12)
	// Maximise with -Inf, rectangular both ways.
	m := []float64{
		math.Inf(-1), 1, 5, math.Inf(-1),
		4, math.Inf(-1), 6, 2,
	}
	for _, tr := range []bool{false, true} {
		cc, rows, cols := m, 2, 4
		if tr {
			cc = make([]float64, 8)
			for i := range 2 {
				for j := range 4 {
					cc[j*2+i] = m[i*4+j]
				}
			}
			rows, cols = 4, 2
		}
		a, err := Solve(cc, rows, cols, true)
		if err != nil {
			t.Fatal(err)
		}
		if a.Cost != 9 {
			t.Fatalf("transposed=%v: cost %v, want 9 (5 + 4)", tr, a.Cost)
		}
		checkAssignment(t, cc, rows, cols, true, a, 1e-12)
	}
}

// TestCallerMatrixUnchanged checks that the cost slice is not modified,
// in particular when maximising (which negates costs internally).
func TestCallerMatrixUnchanged(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, sh := range [][2]int{{7, 7}, {5, 9}, {9, 5}} {
		c := randomMatrix(r, sh[0], sh[1], 0)
		orig := append([]float64(nil), c...)
		for _, maximize := range []bool{false, true} {
			if _, err := Solve(c, sh[0], sh[1], maximize); err != nil {
				t.Fatal(err)
			}
			for k := range c {
				if c[k] != orig[k] {
					t.Fatalf("cost[%d] changed", k)
				}
			}
		}
	}
}

// TestAgainstPlainSAP compares the default solver (with Jonker-Volgenant's
// initialisation) with plain shortest augmenting path (the algorithm of
// scipy, here without any initialisation) on medium-sized matrices, and
// checks the dual certificate of both.
func TestAgainstPlainSAP(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	shapes := [][2]int{{200, 200}, {257, 257}, {60, 300}, {300, 60}, {1, 50}, {50, 1}}
	for _, sh := range shapes {
		rows, cols := sh[0], sh[1]
		for kind := range 6 {
			var c []float64
			switch kind {
			case 5:
				if rows != cols {
					continue
				}
				c = weightMatching(r, rows, 16, 1)
			default:
				c = randomMatrix(r, rows, cols, kind)
			}
			for _, maximize := range []bool{false, true} {
				m := c
				if maximize && kind == 4 {
					m = negInf(c)
				}
				plain := Solver{noInit: true}
				want, werr := plain.Solve(m, rows, cols, maximize)
				var s Solver
				a, err := s.Solve(m, rows, cols, maximize)
				if (err == nil) != (werr == nil) {
					t.Fatalf("%dx%d kind %d: err %v, plain SAP err %v", rows, cols, kind, err, werr)
				}
				if err != nil {
					if !errors.Is(err, ErrInfeasible) {
						t.Fatal(err)
					}
					continue
				}
				tol := 1e-9 * (1 + math.Abs(want.Cost))
				if kind == 1 || kind == 2 {
					tol = 0 // integers: exact
				}
				if math.Abs(a.Cost-want.Cost) > tol {
					t.Fatalf("%dx%d kind %d max=%v: cost %v, plain SAP %v", rows, cols, kind, maximize, a.Cost, want.Cost)
				}
				checkAssignment(t, m, rows, cols, maximize, a, tol+1e-9)
				checkAssignment(t, m, rows, cols, maximize, want, tol+1e-9)
			}
		}
	}
}

// TestDegenerate checks matrices with massive ties, whose optimum is known
// in closed form: a constant matrix, and c_ij = i*j, whose minimum pairs i
// with n-1-i and whose maximum pairs i with i (rearrangement inequality).
func TestDegenerate(t *testing.T) {
	for _, n := range []int{1, 2, 3, 7, 64, 301} {
		constant := make([]float64, n*n)
		for k := range constant {
			constant[k] = 2.5
		}
		ixj := make([]float64, n*n)
		wantMin, wantMax := 0.0, 0.0
		for i := range n {
			for j := range n {
				ixj[i*n+j] = float64(i * j)
			}
			wantMin += float64(i * (n - 1 - i))
			wantMax += float64(i * i)
		}
		for _, mode := range solverModes() {
			for _, maximize := range []bool{false, true} {
				a, err := mode.s.Solve(constant, n, n, maximize)
				if err != nil || a.Cost != 2.5*float64(n) {
					t.Fatalf("constant n=%d %s: %v %v", n, mode.name, a.Cost, err)
				}
				checkAssignment(t, constant, n, n, maximize, a, 0)
			}
			a, err := mode.s.Solve(ixj, n, n, false)
			if err != nil || a.Cost != wantMin {
				t.Fatalf("i*j min n=%d %s: %v, want %v (%v)", n, mode.name, a.Cost, wantMin, err)
			}
			checkAssignment(t, ixj, n, n, false, a, 0)
			a, err = mode.s.Solve(ixj, n, n, true)
			if err != nil || a.Cost != wantMax {
				t.Fatalf("i*j max n=%d %s: %v, want %v (%v)", n, mode.name, a.Cost, wantMax, err)
			}
			checkAssignment(t, ixj, n, n, true, a, 0)
		}
	}
}
