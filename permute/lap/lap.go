// Package lap solves the linear assignment problem (LAP) exactly.
//
// Given a dense cost matrix C with rows x cols entries, it finds the
// assignment of every row to a distinct column (or of every column to a
// distinct row when rows > cols) that minimises, or maximises, the total
// cost sum_i C[i, perm(i)]. This is the problem solved by
// scipy.optimize.linear_sum_assignment, and the answers agree with it.
//
// The algorithm is the shortest augmenting path method of Jonker and
// Volgenant (1987), preceded by their initialisation phases (column
// reduction, reduction transfer and augmenting row reduction), all of which
// keep the invariant that makes the final answer optimal: every assigned row
// is assigned to a column of minimal reduced cost c_ij - v_j. The
// augmentation phase is a Dijkstra search in the form described by Crouse
// (2016), "On implementing 2D rectangular assignment algorithms", over a
// compact list of the columns not yet reached.
//
// A [Solver] keeps its buffers between calls and can warm-start from the
// column dual variables of its previous solve, which pays off when the same
// kind of problem is solved repeatedly on slowly changing matrices, as in
// weight matching for permutation alignment.
//
// The time goes into the row scans of the search: each relaxes all
// unscanned columns through one cost row, and at n in the thousands that
// row comes from main memory. The scan is kept compact (duals and
// distances are stored in scan order, the row is gathered nearly
// sequentially) and each row is first read with one load per cache line,
// which lets the memory system fetch it in parallel. On a 2-core machine
// this solved n = 4096 weight-matching matrices (C = A B^T) in 0.55-0.75 of
// the time of scipy 1.10 and uniform random ones in 0.25-0.35
// (bench/lap/compare.sh measures it). Matrices with massive ties and long
// augmenting paths, such as c_ij = i*j, are the exception: there scipy was
// up to 1.4 times faster. The solver is single-threaded.
//
// Costs are float64 values in row-major order ([Solver.SolveFloat32] takes
// float32 ones, half the memory for the n = 14336 matrices of an 8B model's
// MLP units). Long solves stop when their context is cancelled
// ([Solver.SolveContext]). When minimising, +Inf marks a
// forbidden pair; when maximising, -Inf does. NaN costs, and infinities of
// the other sign, are errors. Finite costs should be well inside the float64
// range (|c| < 1e300, say) so that differences of costs do not overflow.
package lap

import (
	"context"
	"errors"
	"fmt"
	"math"
)

// ErrInfeasible is returned (wrapped) when no complete assignment of the
// smaller side with a finite total cost exists, i.e. when the forbidden
// pairs leave no way to assign every row (or every column, when rows > cols).
var ErrInfeasible = errors.New("lap: cost matrix is infeasible")

// Assignment is an optimal solution of a linear assignment problem, in the
// orientation of the caller's matrix.
type Assignment struct {
	// RowToCol[i] is the column assigned to row i, or -1 if row i is not
	// assigned (only possible when rows > cols). Its length is rows.
	RowToCol []int
	// ColToRow[j] is the row assigned to column j, or -1 if column j is not
	// assigned (only possible when cols > rows). Its length is cols.
	ColToRow []int
	// Cost is the total cost sum_i C[i, RowToCol[i]] over the assigned rows,
	// computed from the caller's matrix.
	Cost float64
	// RowDual and ColDual are optimal dual variables u (length rows) and v
	// (length cols), a certificate of optimality. When minimising,
	// u_i + v_j <= C[i,j] for every pair (up to rounding), with equality on
	// every assigned pair; when maximising, u_i + v_j >= C[i,j], again with
	// equality on assigned pairs. On rectangular problems the duals of the
	// larger side are <= 0 (>= 0 when maximising) and 0 on its unassigned
	// rows or columns, as the LP duality of the rectangular problem requires.
	// The certificate is Cost = sum(u) + sum(v).
	RowDual, ColDual []float64
}

// Stats describes the work done by the last call of [Solver.Solve].
type Stats struct {
	// Rows and Cols are the dimensions of the problem as solved internally
	// (transposed if the caller's matrix has more rows than columns), so
	// Rows <= Cols.
	Rows, Cols int
	// Warm reports whether the solve started from the previous duals.
	Warm bool
	// InitAssigned is the number of rows assigned by the initialisation
	// phases (column reduction and augmenting row reduction), before any
	// shortest augmenting path was searched.
	InitAssigned int
	// ARRSteps is the number of row scans done by augmenting row reduction.
	ARRSteps int
	// Augmentations is the number of shortest augmenting paths searched
	// (one for each row left unassigned by the initialisation).
	Augmentations int
	// Scanned is the total number of columns scanned (settled) by the
	// shortest path searches; each scan costs O(cols).
	Scanned int64
}

// Solver solves linear assignment problems, reusing its buffers from one
// call to the next. The zero value is ready to use. A Solver must not be used
// by several goroutines at once.
type Solver struct {
	// WarmStart, when true, makes Solve start from the column duals of the
	// previous successful solve when that solve had the same dimensions and
	// the same direction (minimise or maximise), the problem is square, and
	// the spread of those duals is not far larger than the spread of the new
	// costs (so that no precision is lost). The result is still the exact
	// optimum for the new matrix; only the amount of work changes. It helps
	// when consecutive matrices are small perturbations of each other: at
	// n = 4096, after perturbing every entry by 0.1%, 1% or 10% of the
	// entries' standard deviation, a warm solve took about 0.1, 0.2-0.35 and
	// 0.5 of the time of a cold one. Rectangular problems always start cold;
	// Stats.Warm tells whether a solve was warm.
	WarmStart bool

	// Stats of the last call of Solve.
	Stats Stats

	// Warm-start state: duals (internal orientation, minimisation sense) of
	// the last successful solve and the shape they belong to.
	haveDuals        bool
	dualRows, dualCs int
	dualMax          bool

	trans   []float64 // transposed (and negated) copy of the cost matrix
	trans32 []float32 // the same for float32 matrices
	v       []float64 // column duals, natural order
	vp, dp  []float64 // column duals and distances in scan order
	cl      []int32   // scan order: cl[k] is the column at position k
	pos     []int32   // inverse of cl
	predp   []int32   // predecessor row of the column at position k
	rowsol  []int32   // column assigned to each row, or -1
	colsol  []int32   // row assigned to each column, or -1
	free    []int32   // rows waiting for an augmenting path
	next    []int32   // scratch list of free rows
	// noInit and noARR switch off the initialisation phases (tests only):
	// without them the algorithm is plain shortest augmenting path.
	noInit, noARR bool

	sink float64 // sum of touched values, kept so the touches are not optimised away
}

// Solve returns an optimal assignment for the rows x cols cost matrix given
// in row-major order in cost (len(cost) must be rows*cols). If maximize is
// true the total cost is maximised, otherwise minimised. It is a shorthand
// for a call of [Solver.Solve] on a fresh Solver.
func Solve(cost []float64, rows, cols int, maximize bool) (Assignment, error) {
	var s Solver
	return s.Solve(cost, rows, cols, maximize)
}

// Solve returns an optimal assignment for the rows x cols cost matrix given
// in row-major order in cost (len(cost) must be rows*cols). If maximize is
// true the total cost is maximised, otherwise minimised.
//
// When rows <= cols every row is assigned to a distinct column; otherwise
// every column is assigned to a distinct row. An error is returned for bad
// dimensions, NaN entries, entries of the wrong infinity (-Inf when
// minimising, +Inf when maximising), and infeasible matrices (wrapping
// [ErrInfeasible]). The cost slice is only read, never modified or retained;
// maximisation negates costs on the fly, but a matrix with more rows than
// columns is transposed into a buffer of the Solver (one copy), so that the
// search always runs over the longer rows.
func (s *Solver) Solve(cost []float64, rows, cols int, maximize bool) (Assignment, error) {
	return solve(context.Background(), s, cost, rows, cols, maximize)
}

// SolveContext is Solve that stops, returning ctx.Err(), soon after ctx is
// cancelled (the solver checks it between row scans, so within milliseconds
// even at n = 16384).
func (s *Solver) SolveContext(ctx context.Context, cost []float64, rows, cols int, maximize bool) (Assignment, error) {
	return solve(ctx, s, cost, rows, cols, maximize)
}

// SolveFloat32 is SolveContext for a float32 cost matrix, which takes half
// the memory of a float64 one (a 16384 x 16384 matrix: 1 GiB instead of
// 2 GiB) and half the memory traffic of the row scans. The search itself
// runs in float64 (the dual variables and reduced costs), so the answer is
// the exact optimum of the float32 matrix; Assignment.Cost is its total
// summed in float64.
func (s *Solver) SolveFloat32(ctx context.Context, cost []float32, rows, cols int, maximize bool) (Assignment, error) {
	return solve(ctx, s, cost, rows, cols, maximize)
}

// costType is the element type of a cost matrix.
type costType interface{ ~float32 | ~float64 }

func solve[T costType](ctx context.Context, s *Solver, cost []T, rows, cols int, maximize bool) (Assignment, error) {
	s.Stats = Stats{}
	if err := ctx.Err(); err != nil {
		return Assignment{}, err
	}
	if rows < 0 || cols < 0 {
		return Assignment{}, fmt.Errorf("lap: negative dimensions %d x %d", rows, cols)
	}
	if rows >= math.MaxInt32 || cols >= math.MaxInt32 {
		return Assignment{}, fmt.Errorf("lap: dimensions %d x %d too large", rows, cols)
	}
	if cols != 0 && rows > math.MaxInt/cols {
		return Assignment{}, fmt.Errorf("lap: dimensions %d x %d overflow", rows, cols)
	}
	if len(cost) != rows*cols {
		return Assignment{}, fmt.Errorf("lap: cost has length %d, want rows*cols = %d*%d = %d", len(cost), rows, cols, rows*cols)
	}
	warm := s.WarmStart && s.haveDuals && rows == cols &&
		s.dualRows == rows && s.dualCs == cols && s.dualMax == maximize
	var err error
	if warm {
		var spread float64
		spread, err = validateRange(cost, cols, maximize)
		// After a solve of a square problem, max(v) - min(v) is at most
		// the spread of the finite costs. Duals far larger than the new
		// costs would cost precision in c_ij - v_j: start cold then.
		warm = err == nil && s.dualSpread() <= 64*spread
	} else {
		err = validate(cost, cols, maximize)
	}
	if err != nil {
		s.haveDuals = false
		return Assignment{}, err
	}
	res := Assignment{
		RowToCol: make([]int, rows),
		ColToRow: make([]int, cols),
		RowDual:  make([]float64, rows),
		ColDual:  make([]float64, cols),
	}
	for i := range res.RowToCol {
		res.RowToCol[i] = -1
	}
	for j := range res.ColToRow {
		res.ColToRow[j] = -1
	}
	if rows == 0 || cols == 0 {
		return res, nil
	}

	// Internal problem: n rows <= m cols, minimisation of sgn*c.
	transposed := rows > cols
	n, m := rows, cols
	c := cost
	sgn := 1.0
	if maximize {
		sgn = -1
	}
	if transposed {
		n, m = cols, rows
		buf := transBuffer[T](s, n*m)
		transpose(buf, cost, rows, cols, T(sgn))
		c = buf
		sgn = 1
	}
	s.haveDuals = false
	if err := run(ctx, s, c, n, m, sgn, warm); err != nil {
		return Assignment{}, err
	}
	s.haveDuals = true
	s.dualRows, s.dualCs, s.dualMax = rows, cols, maximize

	// Map the internal solution back to the caller's orientation.
	rowsol, colsol, v := s.rowsol[:n], s.colsol[:m], s.v[:m]
	u := make([]float64, n)
	for i, j := range rowsol {
		u[i] = sgn*float64(c[i*m+int(j)]) - v[j]
	}
	out := 1.0
	if maximize {
		out = -1 // duals of the caller's maximisation problem
	}
	if !transposed {
		for i, j := range rowsol {
			res.RowToCol[i] = int(j)
			res.RowDual[i] = out * u[i]
		}
		for j, i := range colsol {
			res.ColToRow[j] = int(i)
			res.ColDual[j] = out * v[j]
		}
	} else {
		for i, j := range rowsol { // internal row i = caller column i
			res.ColToRow[i] = int(j)
			res.ColDual[i] = out * u[i]
		}
		for j, i := range colsol { // internal column j = caller row j
			res.RowToCol[j] = int(i)
			res.RowDual[j] = out * v[j]
		}
	}
	total := 0.0
	for i, j := range res.RowToCol {
		if j >= 0 {
			total += float64(cost[i*cols+j])
		}
	}
	res.Cost = total
	return res, nil
}

// transBuffer returns the Solver's transposition buffer of the cost type,
// grown to n elements.
func transBuffer[T costType](s *Solver, n int) []T {
	var z T
	switch any(z).(type) {
	case float32:
		s.trans32 = grow(s.trans32, n)
		return any(s.trans32).([]T)
	default:
		s.trans = grow(s.trans, n)
		return any(s.trans).([]T)
	}
}

// Reset forgets the duals kept for warm starts, so that the next solve
// starts cold. Buffers are kept.
func (s *Solver) Reset() { s.haveDuals = false }

// validate checks the matrix for NaN and for infinities of the wrong sign.
func validate[T costType](cost []T, cols int, maximize bool) error {
	bad := T(math.Inf(-1))
	if maximize {
		bad = T(math.Inf(1))
	}
	for k, x := range cost {
		// x != x is NaN; the second test catches the forbidden infinity.
		if x != x || x == bad {
			i, j := k/cols, k%cols
			if x != x {
				return fmt.Errorf("lap: cost[%d,%d] is NaN", i, j)
			}
			if maximize {
				return fmt.Errorf("lap: cost[%d,%d] is +Inf, which is not allowed when maximising (use -Inf for forbidden pairs)", i, j)
			}
			return fmt.Errorf("lap: cost[%d,%d] is -Inf, which is not allowed when minimising (use +Inf for forbidden pairs)", i, j)
		}
	}
	return nil
}

// validateRange is validate that also returns the spread (maximum minus
// minimum) of the finite entries.
func validateRange[T costType](cost []T, cols int, maximize bool) (float64, error) {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, x := range cost {
		x := float64(x)
		if x < lo && x > math.Inf(-1) {
			lo = x
		}
		if x > hi && x < math.Inf(1) {
			hi = x
		}
	}
	if err := validate(cost, cols, maximize); err != nil {
		return 0, err
	}
	if lo > hi {
		return 0, nil
	}
	return hi - lo, nil
}

// dualSpread returns max(v) - min(v) of the kept column duals.
func (s *Solver) dualSpread() float64 {
	v := s.v[:s.dualCs]
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, x := range v {
		lo = min(lo, x)
		hi = max(hi, x)
	}
	return hi - lo
}

// transpose writes sgn * the transpose of the rows x cols matrix src into
// dst (cols x rows), in cache-friendly blocks.
func transpose[T costType](dst, src []T, rows, cols int, sgn T) {
	const b = 32
	for i0 := 0; i0 < rows; i0 += b {
		i1 := min(i0+b, rows)
		for j0 := 0; j0 < cols; j0 += b {
			j1 := min(j0+b, cols)
			for i := i0; i < i1; i++ {
				row := src[i*cols : i*cols+cols]
				for j := j0; j < j1; j++ {
					dst[j*rows+i] = sgn * row[j]
				}
			}
		}
	}
}

func grow[T any](b []T, n int) []T {
	if cap(b) < n {
		return make([]T, n)
	}
	return b[:n]
}
