package lap

import (
	"context"
	"fmt"
	"math"
	"unsafe"
)

// The internal problem: minimise sum_i sgn*c[i*m + x(i)] over injective
// x: [0,n) -> [0,m), with n <= m and sgn = +1 or -1.
//
// Invariant of every phase (Jonker-Volgenant): with column duals v, every
// assigned row i is assigned to a column of minimal reduced cost
// sgn*c_ij - v_j in its row; on rectangular problems in addition v <= 0,
// and v_j = 0 on every column that was never assigned (columns, once
// assigned, stay assigned). When all rows are assigned, u_i = that minimum
// gives a dual certificate, hence optimality.

var inf = math.Inf(1)

// arrBudget bounds the work of augmenting row reduction to arrBudget*n row
// scans (plus a constant); more would often only shift work from the
// augmentation phase at the same cost per row scan. Chosen by measurement
// on n = 4096 weight-matching and uniform matrices (bench/lap).
const arrBudget = 8

// checkEvery is the number of row scans between two checks of the context.
// A row scan at n = 16384 takes microseconds, so cancellation is seen within
// milliseconds.
const checkEvery = 256

// cancelled reports the context's error without blocking.
func cancelled(done <-chan struct{}, ctx context.Context) error {
	select {
	case <-done:
		return ctx.Err()
	default:
		return nil
	}
}

// run solves the internal problem, leaving the solution in s.rowsol,
// s.colsol and the column duals in s.v. It returns ctx.Err() if ctx is
// cancelled before it finishes.
func run[T costType](ctx context.Context, s *Solver, c []T, n, m int, sgn float64, warm bool) error {
	done := ctx.Done()
	s.Stats.Rows, s.Stats.Cols, s.Stats.Warm = n, m, warm
	s.rowsol = grow(s.rowsol, n)
	s.colsol = grow(s.colsol, m)
	s.free = grow(s.free, n)[:0]
	s.next = grow(s.next, n)[:0]
	if !warm {
		s.v = grow(s.v, m)
	}
	rowsol, colsol, v := s.rowsol[:n], s.colsol[:m], s.v[:m]
	for j := range colsol {
		colsol[j] = -1
	}
	for i := range rowsol {
		rowsol[i] = -1
	}

	switch {
	case s.noInit:
		for j := range v {
			v[j] = 0
		}
		for i := range n {
			s.free = append(s.free, int32(i))
		}
	case warm:
		// Start from the previous column duals with nothing assigned: the
		// invariant holds trivially, and augmenting row reduction assigns
		// most rows to their cheapest columns, settling the conflicts by
		// lowering prices. (Keeping the previous assignment where it is still
		// of minimal reduced cost, or skipping ARR for plain augmentation,
		// were both slower on perturbed n = 4096 sequences.)
		// Shifting all v_j by the same amount changes no reduced cost
		// difference within a row; doing it keeps the duals from drifting
		// over a long sequence of warm solves (each solve only lowers them).
		t := v[0]
		for _, x := range v {
			t = max(t, x)
		}
		for j := range v {
			v[j] -= t
		}
		for i := range n {
			s.free = append(s.free, int32(i))
		}
	case n == m:
		if err := columnReduction(s, c, n, sgn); err != nil {
			return err
		}
		if err := cancelled(done, ctx); err != nil {
			return err
		}
	default:
		for j := range v {
			v[j] = 0
		}
		for i := range n {
			s.free = append(s.free, int32(i))
		}
	}

	if !s.noInit && !s.noARR {
		if err := augmentingRowReduction(ctx, s, c, n, m, sgn); err != nil {
			return err
		}
	}
	s.Stats.InitAssigned = n - len(s.free)
	return augment(ctx, s, c, n, m, sgn)
}

// columnReduction (square problems only) sets v_j to the minimum of column
// j, assigns each column to its minimising row when that row is still
// free, and transfers the reduction of rows assigned to one column only.
// Rows left unassigned are put in s.free.
func columnReduction[T costType](s *Solver, c []T, n int, sgn float64) error {
	rowsol, colsol, v := s.rowsol[:n], s.colsol[:n], s.v[:n]
	arg := colsol // argmin row of each column, then the assignment
	for j := range v {
		v[j] = inf
		arg[j] = 0
	}
	for i := range n {
		row := c[i*n : i*n+n]
		row = row[:len(v)]
		for j, x := range row {
			x := sgn * float64(x)
			if x < v[j] {
				v[j] = x
				arg[j] = int32(i)
			}
		}
	}
	// matches counts the columns whose minimum is in each row; it reuses
	// s.next's storage (only its length is in use).
	matches := grow(s.next[:0], n)
	for i := range matches {
		matches[i] = 0
	}
	for j := n - 1; j >= 0; j-- {
		if v[j] == inf {
			return fmt.Errorf("%w: column %d has no finite cost", ErrInfeasible, j)
		}
		i := arg[j]
		matches[i]++
		if matches[i] == 1 {
			rowsol[i] = int32(j)
			colsol[j] = i
		} else {
			colsol[j] = -1
		}
	}
	// Reduction transfer: for a row that is the minimum of exactly one
	// column j1, lower v_j1 so that its reduced cost equals the second best
	// of the row; this makes j1 less attractive to the free rows.
	for i := range n {
		if matches[i] == 0 {
			s.free = append(s.free, int32(i))
			continue
		}
		if matches[i] != 1 {
			continue
		}
		j1 := int(rowsol[i])
		row := c[i*n : i*n+n]
		mu := inf
		for j, x := range row[:j1] {
			if r := sgn*float64(x) - v[j]; r < mu {
				mu = r
			}
		}
		rest := row[j1+1:]
		vr := v[j1+1:]
		vr = vr[:len(rest)]
		for j, x := range rest {
			if r := sgn*float64(x) - vr[j]; r < mu {
				mu = r
			}
		}
		if mu < inf {
			v[j1] -= mu
		}
	}
	s.next = s.next[:0]
	return nil
}

// augmentingRowReduction runs up to two passes of Jonker-Volgenant's
// augmenting row reduction over the rows in s.free, leaving in s.free the
// rows that still need an augmenting path. The number of row scans is
// bounded, since with floating-point costs a long sequence of tiny price
// decreases is possible; stopping early never affects correctness.
func augmentingRowReduction[T costType](ctx context.Context, s *Solver, c []T, n, m int, sgn float64) error {
	done := ctx.Done()
	rowsol, colsol, v := s.rowsol[:n], s.colsol[:m], s.v[:m]
	budget := arrBudget*n + 16
	steps := 0
	for pass := 0; pass < 2 && len(s.free) > 0; pass++ {
		todo := s.free
		out := s.next[:0]
		k := 0
		for k < len(todo) {
			i := int(todo[k])
			k++
			if steps >= budget {
				out = append(out, int32(i))
				continue
			}
			steps++
			if steps%checkEvery == 0 {
				if err := cancelled(done, ctx); err != nil {
					return err
				}
			}
			row := c[i*m : i*m+m]
			s.sink += touch(row)
			row = row[:len(v)]
			u1, u2, j1, j2 := twoSmallest(row, v, colsol, sgn)
			if u1 == inf { // no finite cost in this row; let augment report it
				out = append(out, int32(i))
				continue
			}
			i0 := colsol[j1]
			lowered := false
			if u1 < u2 {
				if u2 < inf {
					v[j1] -= u2 - u1
					lowered = true
				}
			} else if i0 >= 0 {
				j1 = j2
				i0 = colsol[j2]
			}
			rowsol[i] = int32(j1)
			colsol[j1] = int32(i)
			if i0 >= 0 {
				rowsol[i0] = -1
				if lowered {
					// Process the displaced row right away.
					k--
					todo[k] = i0
				} else {
					out = append(out, i0)
				}
			}
		}
		s.free, s.next = out, todo[:0]
	}
	s.Stats.ARRSteps = steps
	return nil
}

// twoSmallest returns the minimum u1 (at j1) and second minimum u2 (at j2)
// of the reduced costs sgn*row[j] - v[j]; among columns tied at the
// minimum, j1 is an unassigned one if there is one (which matters for costs
// with many ties, e.g. integers). It is a function of its own so that the
// loop keeps its values in registers.
func twoSmallest[T costType](row []T, v []float64, colsol []int32, sgn float64) (u1, u2 float64, j1, j2 int) {
	u1, u2 = inf, inf
	j1, j2 = -1, -1
	free1 := false
	v = v[:len(row)]
	for j, x := range row {
		h := sgn*float64(x) - v[j]
		if h <= u2 {
			if h < u1 {
				u2, j2 = u1, j1
				u1, j1 = h, j
				free1 = colsol[j] < 0
			} else if h == u1 && !free1 && colsol[j] < 0 {
				u2, j2 = u1, j1
				j1, free1 = j, true
			} else if h < u2 || j2 < 0 {
				u2, j2 = h, j
			}
		}
	}
	return u1, u2, j1, j2
}

// augment finds a shortest augmenting path for every row in s.free
// (Dijkstra on reduced costs) and updates the duals, as in Jonker and
// Volgenant's augmentation phase. The columns are kept in a permuted order
// cl; positions [0, low) hold the columns already scanned, and the duals and
// tentative distances are stored by position so that the inner loop reads
// them contiguously.
func augment[T costType](ctx context.Context, s *Solver, c []T, n, m int, sgn float64) error {
	done := ctx.Done()
	rowsol, colsol := s.rowsol[:n], s.colsol[:m]
	if len(s.free) == 0 {
		return nil
	}
	s.vp = grow(s.vp, m)
	s.dp = grow(s.dp, m)
	s.cl = grow(s.cl, m)
	s.pos = grow(s.pos, m)
	s.predp = grow(s.predp, m)
	v, vp, dp, cl, pos, predp := s.v[:m], s.vp[:m], s.dp[:m], s.cl[:m], s.pos[:m], s.predp[:m]
	for _, f := range s.free {
		if err := cancelled(done, ctx); err != nil {
			return err
		}
		s.Stats.Augmentations++
		// Start every search with the columns in natural order, so that the
		// gathers from the cost rows below stay nearly sequential (each scan
		// displaces only one column) and the hardware prefetcher can follow.
		for j := range cl {
			cl[j] = int32(j)
			pos[j] = int32(j)
			dp[j] = inf
		}
		copy(vp, v)
		// Distances from row f: relaxing from infinity with h = 0.
		row := c[int(f)*m : int(f)*m+m]
		s.sink += touch(row)
		mn, mk := relax(row, cl, vp, dp, predp, colsol, 0, sgn, f)
		low := 0
		var sink int32
		for {
			if mn == inf {
				return fmt.Errorf("%w: no complete assignment with finite cost (row %d cannot be assigned)", ErrInfeasible, f)
			}
			// Move the minimum to position low: it is scanned.
			if mk != low {
				a, b := cl[mk], cl[low]
				cl[mk], cl[low] = b, a
				pos[a], pos[b] = int32(low), int32(mk)
				vp[mk], vp[low] = vp[low], vp[mk]
				dp[mk], dp[low] = dp[low], dp[mk]
				predp[mk], predp[low] = predp[low], predp[mk]
			}
			j := cl[low]
			low++
			s.Stats.Scanned++
			if s.Stats.Scanned%checkEvery == 0 {
				if err := cancelled(done, ctx); err != nil {
					return err
				}
			}
			i := colsol[j]
			if i < 0 {
				sink = j
				break
			}
			// Relax the edges out of row i (assigned to column j).
			h := sgn*float64(c[int(i)*m+int(j)]) - vp[low-1] - mn
			row := c[int(i)*m : int(i)*m+m]
			s.sink += touch(row)
			mn, mk = relax(row, cl[low:], vp[low:], dp[low:], predp[low:], colsol, h, sgn, i)
			mk += low
		}
		// Update the duals of the scanned columns.
		for k := range low {
			v[cl[k]] = vp[k] + dp[k] - mn
		}
		// Augment along the path.
		j, p := sink, low-1
		for {
			i := predp[p]
			colsol[j] = i
			jn := rowsol[i]
			rowsol[i] = j
			if i == f {
				break
			}
			j = jn
			p = int(pos[jn])
		}
	}
	return nil
}

// relax lowers the tentative distances dp[k] of the unscanned columns cl[k]
// through row i (dp[k] = min(dp[k], sgn*row[cl[k]] - vp[k] - h), recording i
// as predecessor when it improves) and returns the new minimum distance and
// its position, preferring an unassigned column among ties.
func relax[T costType](row []T, cl []int32, vp, dp []float64, pp []int32, colsol []int32, h, sgn float64, i int32) (float64, int) {
	mn, mk, mkFree := inf, -1, false
	vp = vp[:len(cl)]
	dp = dp[:len(cl)]
	pp = pp[:len(cl)]
	for k, j := range cl {
		d := dp[k]
		if r := sgn*float64(row[j]) - vp[k] - h; r < d {
			d = r
			dp[k] = r
			pp[k] = i
		}
		if d <= mn {
			if d < mn {
				mn, mk = d, k
				mkFree = colsol[j] < 0
			} else if !mkFree && colsol[j] < 0 {
				mk, mkFree = k, true
			}
		}
	}
	return mn, mk
}

// touch reads one value per cache line of row and returns their sum. The
// relaxation loop is too long for the processor to look far ahead, so it
// stalls on every cache line of a cost row that comes from main memory;
// this short loop brings the whole row into the cache with many loads in
// flight first, which makes the relaxation after it much faster on large
// matrices (Go has no prefetch instruction). The caller keeps the sum.
func touch[T costType](row []T) float64 {
	var s0, s1 T
	// 16 elements are two cache lines of float64s, four of float32s.
	var z T
	step := 64 / int(unsafe.Sizeof(z)) // elements per cache line
	for k := 0; k+2*step <= len(row); k += 2 * step {
		s0 += row[k]
		s1 += row[k+step]
	}
	return float64(s0 + s1)
}
