package lap

import (
	"math"
	"math/rand/v2"
	"testing"

	"pgregory.net/rapid"
)

// optimalAssignments enumerates all complete assignments of a small matrix
// (rows <= cols) and returns the optimal cost and the number of assignments
// within tol of it.
func optimalAssignments(cost []float64, rows, cols int, maximize bool, tol float64) (float64, int) {
	best, _ := bruteForce(cost, rows, cols, maximize)
	count := 0
	used := make([]bool, cols)
	var rec func(i int, acc float64)
	rec = func(i int, acc float64) {
		if i == rows {
			if math.Abs(acc-best) <= tol {
				count++
			}
			return
		}
		for j := range cols {
			if !used[j] {
				used[j] = true
				rec(i+1, acc+cost[i*cols+j])
				used[j] = false
			}
		}
	}
	rec(0, 0)
	return best, count
}

// TestPropertyPermutation checks with rapid that permuting the rows and
// columns of the matrix keeps the optimal cost, permutes the answer when
// the optimum is unique, and that both answers carry a valid dual
// certificate.
func TestPropertyPermutation(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		rows := rapid.IntRange(1, 7).Draw(t, "rows")
		cols := rapid.IntRange(1, 7).Draw(t, "cols")
		integer := rapid.Bool().Draw(t, "integer")
		maximize := rapid.Bool().Draw(t, "maximize")
		var c []float64
		if integer {
			vals := rapid.SliceOfN(rapid.IntRange(-5, 5), rows*cols, rows*cols).Draw(t, "ints")
			for _, v := range vals {
				c = append(c, float64(v))
			}
		} else {
			c = rapid.SliceOfN(rapid.Float64Range(-100, 100), rows*cols, rows*cols).Draw(t, "floats")
		}
		pr := rapid.Permutation(seq(rows)).Draw(t, "rowPerm")
		pc := rapid.Permutation(seq(cols)).Draw(t, "colPerm")
		// p[pr[i]][pc[j]] = c[i][j]
		p := make([]float64, len(c))
		for i := range rows {
			for j := range cols {
				p[pr[i]*cols+pc[j]] = c[i*cols+j]
			}
		}
		var s Solver
		a, err := s.Solve(c, rows, cols, maximize)
		if err != nil {
			t.Fatal(err)
		}
		b, err := s.Solve(p, rows, cols, maximize)
		if err != nil {
			t.Fatal(err)
		}
		tol := 1e-9
		if integer {
			tol = 0
		}
		if math.Abs(a.Cost-b.Cost) > 1e-9*(1+math.Abs(a.Cost)) || (integer && a.Cost != b.Cost) {
			t.Fatalf("cost %v, permuted %v", a.Cost, b.Cost)
		}
		checkAssignment(t, c, rows, cols, maximize, a, 1e-9*(1+math.Abs(a.Cost)))
		checkAssignment(t, p, rows, cols, maximize, b, 1e-9*(1+math.Abs(a.Cost)))

		// Compare assignments when the optimum is unique.
		small, sr, sc := c, rows, cols
		if rows > cols {
			small, sr, sc = transposed(c, rows, cols), cols, rows
		}
		best, count := optimalAssignments(small, sr, sc, maximize, max(tol, 1e-9*(1+math.Abs(a.Cost))))
		if math.Abs(best-a.Cost) > 1e-9*(1+math.Abs(best)) {
			t.Fatalf("cost %v, brute force %v", a.Cost, best)
		}
		if count == 1 {
			for i, j := range a.RowToCol {
				want := -1
				if j >= 0 {
					want = pc[j]
				}
				if b.RowToCol[pr[i]] != want {
					t.Fatalf("unique optimum not permuted: row %d -> %d, permuted row %d -> %d (want %d)", i, j, pr[i], b.RowToCol[pr[i]], want)
				}
			}
		}
	})
}

// TestPropertyCertificate checks the dual certificate on larger random
// matrices, with forbidden pairs, in all shapes.
func TestPropertyCertificate(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		rows := rapid.IntRange(1, 40).Draw(t, "rows")
		cols := rapid.IntRange(1, 40).Draw(t, "cols")
		maximize := rapid.Bool().Draw(t, "maximize")
		forbidden := rapid.Float64Range(0, 0.3).Draw(t, "forbidden")
		seed := rapid.Uint64().Draw(t, "seed")
		r := rand.New(rand.NewPCG(seed, 1))
		c := make([]float64, rows*cols)
		for k := range c {
			c[k] = math.Round(r.NormFloat64()*1000) / 8
			if r.Float64() < forbidden {
				c[k] = math.Inf(1)
				if maximize {
					c[k] = math.Inf(-1)
				}
			}
		}
		var ref Solver
		ref.noInit = true // plain shortest augmenting path, as in scipy
		want, werr := ref.Solve(c, rows, cols, maximize)
		var s Solver
		a, err := s.Solve(c, rows, cols, maximize)
		if (err == nil) != (werr == nil) {
			t.Fatalf("err %v, plain SAP err %v", err, werr)
		}
		if err != nil {
			return
		}
		// Multiples of 1/8 below 2^40 add up exactly.
		if a.Cost != want.Cost {
			t.Fatalf("cost %v, plain SAP %v", a.Cost, want.Cost)
		}
		checkAssignment(t, c, rows, cols, maximize, a, 0)
	})
}

func seq(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}
