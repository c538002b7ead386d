package merge_test

import (
	"context"
	"fmt"

	"github.com/wtool/wtool/fisher/mlp"
	"github.com/wtool/wtool/fisher/stats"
	"github.com/wtool/wtool/merge"
	"github.com/wtool/wtool/permute"
)

func ExampleLinear() {
	a := []float32{1, 2, 3}
	b := []float32{3, 2, 1}
	out := make([]float32, 3)
	merge.Linear(out, [][]float32{a, b}, []float64{1, 3}, true)
	fmt.Println(out)
	// Output: [2.5 2 1.5]
}

func ExampleSlerp() {
	// Halfway between two orthogonal unit vectors stays on the unit circle.
	out := make([]float32, 2)
	merge.Slerp(out, []float32{1, 0}, []float32{0, 1}, 0.5)
	fmt.Printf("%.4f\n", out)
	// Output: [0.7071 0.7071]
}

func ExampleRegMean() {
	// Two 1x2 Linear layers whose inputs lived in different directions: the
	// merge keeps each where its data was.
	w1 := []float64{1, 0}
	w2 := []float64{0, 1}
	g1 := []float64{1, 0, 0, 0.01} // model 1 saw inputs along the first axis
	g2 := []float64{0.01, 0, 0, 1} // model 2 along the second
	w, _ := merge.RegMean([][]float64{w1, w2}, [][]float64{g1, g2}, 1, 2, 1, 0)
	fmt.Printf("%.3f\n", w)
	// Output: [0.990 0.990]
}

func ExamplePLeaS() {
	// Two copies of a tiny network, one with its hidden units swapped:
	// PLeaS matches the units on data and refits, recovering the network.
	a := &mlp.Network{Act: mlp.ReLU, Layers: []mlp.Layer{
		{Name: "fc1", Out: 2, In: 2, W: []float32{1, 0, 0, 1}, B: []float32{0, 0}},
		{Name: "fc2", Out: 1, In: 2, W: []float32{1, 2}, B: []float32{0}},
	}}
	b := &mlp.Network{Act: mlp.ReLU, Layers: []mlp.Layer{
		{Name: "fc1", Out: 2, In: 2, W: []float32{0, 1, 1, 0}, B: []float32{0, 0}},
		{Name: "fc2", Out: 1, In: 2, W: []float32{2, 1}, B: []float32{0}},
	}}
	x := []float32{1, 0, 0, 1, 1, 1, 2, -1, -1, 2, 0.5, 0.3}
	acc, _ := stats.NewAccumulator([]string{"fc1", "fc2"}, []int{2, 2}, true)
	var wa, wb mlp.Workspace
	a.Forward(&wa, x, 6)
	b.Forward(&wb, x, 6)
	acc.AddJoint("fc1", wa.Inputs[0], wb.Inputs[0], 6)
	acc.AddJoint("fc2", wa.Inputs[1], wb.Inputs[1], 6)
	res, err := merge.PLeaS(context.Background(), a, b, permute.StatsOf(acc.Stats("")), merge.PLeaSOptions{Width: 1, Ridge: 1e-9})
	fmt.Println(err, res.Widths)
	var ws mlp.Workspace
	fmt.Printf("%.3f\n", res.Net.Forward(&ws, []float32{3, 1}, 1))
	// Output:
	// <nil> [2]
	// [5.000]
}
