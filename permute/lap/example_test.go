package lap_test

import (
	"context"
	"fmt"
	"math"

	"github.com/wtool/wtool/permute/lap"
)

func Example() {
	// Cost of assigning worker i (row) to job j (column).
	cost := []float64{
		4, 1, 3,
		2, 0, 5,
		3, 2, 2,
	}
	a, err := lap.Solve(cost, 3, 3, false)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("row -> col:", a.RowToCol)
	fmt.Println("cost:", a.Cost)

	// Maximise instead, with a forbidden pair (-Inf when maximising).
	cost[0*3+0] = math.Inf(-1)
	a, err = lap.Solve(cost, 3, 3, true)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("row -> col:", a.RowToCol, "cost:", a.Cost)
	// Output:
	// row -> col: [1 0 2]
	// cost: 5
	// row -> col: [1 2 0] cost: 9
}

func ExampleSolver() {
	// A Solver reuses its buffers; with WarmStart it starts each solve
	// from the duals of the previous one, which pays off on sequences of
	// similar matrices, as in the coordinate descent of weight matching.
	s := lap.Solver{WarmStart: true}
	cost := []float64{
		10, 2, 8,
		1, 9, 7,
		6, 5, 3,
	}
	for step := range 3 {
		cost[4] -= 6 // make the pair (1,1) cheaper at every step
		a, err := s.Solve(cost, 3, 3, false)
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println(step, a.RowToCol, a.Cost, s.Stats.Warm)
	}
	// Output:
	// 0 [1 0 2] 6 false
	// 1 [1 0 2] 6 true
	// 2 [0 1 2] 4 true
}

func ExampleSolve_rectangular() {
	// Two rows, three columns: every row gets a column, one column is left.
	cost := []float64{
		1, 5, 3,
		4, 2, 6,
	}
	a, err := lap.Solve(cost, 2, 3, false)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(a.RowToCol, a.ColToRow, a.Cost)
	// Output:
	// [0 1] [0 1 -1] 3
}

// Large matrices in float32 take half the memory; the solve stops early,
// with the context's error, when the context is cancelled.
func ExampleSolver_SolveFloat32() {
	cost := []float32{
		4, 1, 3,
		2, 0, 5,
		3, 2, 2,
	}
	var s lap.Solver
	a, err := s.SolveFloat32(context.Background(), cost, 3, 3, false)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("row -> col:", a.RowToCol, "cost:", a.Cost)
	// Output:
	// row -> col: [1 0 2] cost: 5
}
