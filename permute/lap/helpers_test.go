package lap

import (
	"math"
	"math/rand/v2"
)

// tb is the part of testing.TB that *rapid.T has too.
type tb interface {
	Helper()
	Fatalf(format string, args ...any)
}

// bruteForce returns the optimal cost over all complete assignments of the
// smaller side, and whether any assignment with finite cost exists. It is
// the independent reference for small matrices.
func bruteForce(cost []float64, rows, cols int, maximize bool) (float64, bool) {
	at := func(i, j int) float64 { return cost[i*cols+j] }
	n, m := rows, cols
	if rows > cols {
		n, m = cols, rows
		at = func(i, j int) float64 { return cost[j*cols+i] }
	}
	best := math.Inf(1)
	if maximize {
		best = math.Inf(-1)
	}
	found := false
	used := make([]bool, m)
	var rec func(i int, acc float64)
	rec = func(i int, acc float64) {
		if i == n {
			if math.IsInf(acc, 0) {
				return
			}
			if !found || (maximize && acc > best) || (!maximize && acc < best) {
				best = acc
			}
			found = true
			return
		}
		for j := range m {
			if !used[j] {
				used[j] = true
				rec(i+1, acc+at(i, j))
				used[j] = false
			}
		}
	}
	rec(0, 0)
	return best, found
}

// checkAssignment verifies that a is a valid complete assignment of the
// smaller side, that its Cost is the sum of its entries, and that the duals
// are a certificate of optimality (up to tol): feasibility of the duals,
// complementary slackness, sign of the larger side's duals on rectangular
// problems, and Cost = sum(u) + sum(v).
func checkAssignment(t tb, cost []float64, rows, cols int, maximize bool, a Assignment, tol float64) {
	t.Helper()
	if len(a.RowToCol) != rows || len(a.ColToRow) != cols || len(a.RowDual) != rows || len(a.ColDual) != cols {
		t.Fatalf("bad lengths: %d %d %d %d for %dx%d", len(a.RowToCol), len(a.ColToRow), len(a.RowDual), len(a.ColDual), rows, cols)
	}
	assigned := 0
	sum := 0.0
	for i, j := range a.RowToCol {
		if j < 0 {
			continue
		}
		if j >= cols || a.ColToRow[j] != i {
			t.Fatalf("row %d -> col %d but col -> row %d", i, j, a.ColToRow[j])
		}
		assigned++
		sum += cost[i*cols+j]
	}
	for j, i := range a.ColToRow {
		if i >= 0 && (i >= rows || a.RowToCol[i] != j) {
			t.Fatalf("col %d -> row %d inconsistent", j, i)
		}
	}
	if assigned != min(rows, cols) {
		t.Fatalf("assigned %d, want %d", assigned, min(rows, cols))
	}
	if sum != a.Cost {
		t.Fatalf("Cost %v, sum of entries %v", a.Cost, sum)
	}
	// Dual certificate, written for minimisation of s*c.
	s := 1.0
	if maximize {
		s = -1
	}
	dualSum := 0.0
	for i := range rows {
		dualSum += a.RowDual[i]
		for j := range cols {
			c := s * cost[i*cols+j]
			red := c - s*a.RowDual[i] - s*a.ColDual[j]
			if red < -tol {
				t.Fatalf("dual infeasible at (%d,%d): reduced cost %g", i, j, red)
			}
			if a.RowToCol[i] == j && math.Abs(red) > tol {
				t.Fatalf("complementary slackness fails at (%d,%d): reduced cost %g", i, j, red)
			}
		}
	}
	for j := range cols {
		dualSum += a.ColDual[j]
	}
	if rows < cols {
		for j, i := range a.ColToRow {
			if s*a.ColDual[j] > tol || (i < 0 && math.Abs(a.ColDual[j]) > tol) {
				t.Fatalf("column dual %d = %g (assigned row %d) violates rectangular dual constraints", j, a.ColDual[j], i)
			}
		}
	}
	if rows > cols {
		for i, j := range a.RowToCol {
			if s*a.RowDual[i] > tol || (j < 0 && math.Abs(a.RowDual[i]) > tol) {
				t.Fatalf("row dual %d = %g (assigned col %d) violates rectangular dual constraints", i, a.RowDual[i], j)
			}
		}
	}
	if math.Abs(dualSum-a.Cost) > tol*float64(rows+cols+1) {
		t.Fatalf("duality gap: dual objective %v, cost %v", dualSum, a.Cost)
	}
}

type solverMode struct {
	name string
	s    *Solver
}

// solverModes returns solvers covering the code paths: the default
// (column reduction, augmenting row reduction, augmentation), augmentation
// without row reduction, plain shortest augmenting path without any
// initialisation (the algorithm of scipy), and a warm-starting solver
// (whose first solve of a shape is cold).
func solverModes() []solverMode {
	return []solverMode{
		{"default", &Solver{}},
		{"noARR", &Solver{noARR: true}},
		{"noInit", &Solver{noInit: true}},
		{"warm", &Solver{WarmStart: true}},
	}
}

// weightMatching returns C = A B^T for an n x d standard Gaussian A and
// B = A[P] + noise*G, a row-permuted noisy copy of A: the kind of matrix
// weight matching solves.
func weightMatching(r *rand.Rand, n, d int, noise float64) []float64 {
	a := make([]float64, n*d)
	for k := range a {
		a[k] = r.NormFloat64()
	}
	perm := r.Perm(n)
	b := make([]float64, n*d)
	for i := range n {
		for k := range d {
			b[i*d+k] = a[perm[i]*d+k] + noise*r.NormFloat64()
		}
	}
	c := make([]float64, n*n)
	for i := range n {
		ai := a[i*d : i*d+d]
		for j := range n {
			bj := b[j*d : j*d+d]
			s := 0.0
			for k, x := range ai {
				s += x * bj[k]
			}
			c[i*n+j] = s
		}
	}
	return c
}
