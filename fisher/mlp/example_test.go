package mlp_test

import (
	"fmt"

	"github.com/wtool/wtool/fisher/mlp"
)

func ExampleNetwork_LossAndGradients() {
	// A 2-2-2 ReLU network built in memory (mlp.Load builds one from a
	// checkpoint): run a batch forward, then get the loss and gradients.
	net := &mlp.Network{Act: mlp.ReLU, Layers: []mlp.Layer{
		{Name: "fc1", Out: 2, In: 2, W: []float32{1, -1, 2, 0.5}, B: []float32{0, -1}},
		{Name: "fc2", Out: 2, In: 2, W: []float32{1, 1, -1, 2}},
	}}
	var ws mlp.Workspace
	x := []float32{1, 2} // one sample
	fmt.Println("logits", net.Forward(&ws, x, 1))
	g := mlp.NewGradients(net)
	loss, _ := net.LossAndGradients(&ws, x, []int{1}, g)
	fmt.Printf("loss %.4f\n", loss)
	fmt.Printf("dL/d fc2.weight %.4f\n", g.W[1])
	// Output:
	// logits [2 4]
	// loss 0.1269
	// dL/d fc2.weight [0.0000 0.2384 0.0000 -0.2384]
}
