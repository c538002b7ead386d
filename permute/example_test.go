package permute_test

import (
	"context"
	"fmt"

	"github.com/wtool/wtool/io/arch"
	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/permute"
	"github.com/wtool/wtool/tensors"
)

// A two-layer MLP whose hidden units are a shuffled copy of another's:
// weight matching finds the shuffle, and applying the permutation to the
// tensors (in any dtype) undoes it without changing the function.
func Example() {
	shapes := map[string][]int64{"fc1.weight": {3, 2}, "fc2.weight": {1, 3}}
	spec, _ := permute.MLPSpec(shapes, nil)
	fmt.Println(spec)

	a := permute.MemorySource{
		"fc1.weight": {Data: []float32{1, 0, 0, 2, 3, 3}, Shape: []int64{3, 2}},
		"fc2.weight": {Data: []float32{1, 2, 3}, Shape: []int64{1, 3}},
	}
	// B is A with its hidden units in the order 2, 0, 1
	b := permute.MemorySource{
		"fc1.weight": {Data: []float32{3, 3, 1, 0, 0, 2}, Shape: []int64{3, 2}},
		"fc2.weight": {Data: []float32{3, 1, 2}, Shape: []int64{1, 3}},
	}
	res, _ := permute.WeightMatching(context.Background(), spec, a, b, permute.MatchOptions{})
	fmt.Println("permutation of fc1's units:", res.Perms["fc1"])
	fmt.Printf("distance %.2f -> %.2f\n", res.DistanceBefore, res.DistanceAfter)

	w, _ := tensors.FromFloat32("fc2.weight", tensors.BF16, []int64{1, 3}, b["fc2.weight"].Data)
	aligned, _ := spec.Apply(w, res.Perms)
	v, _ := aligned.Float32()
	fmt.Println("fc2.weight aligned:", v)
	// Output:
	// 1 groups over 2 tensors: fc1(3)
	// permutation of fc1's units: [1 2 0]
	// distance 5.83 -> 0.00
	// fc2.weight aligned: [1 2 3]
}

// A permutation spec read from its JSON form: whole attention heads of 4
// dimensions move together.
func ExampleSpec_UnmarshalJSON() {
	var s permute.Spec
	err := s.UnmarshalJSON([]byte(`{
	  "groups": {"heads": 2},
	  "tensors": {
	    "q.weight": [{"group": "heads", "block": 4}, null],
	    "o.weight": [null, {"group": "heads", "block": 4}]
	  }}`))
	fmt.Println(err, s.Groups, s.Tensors["q.weight"][0].Block)
	fmt.Println(s.Validate(map[string][]int64{"q.weight": {8, 16}, "o.weight": {16, 8}}))
	fmt.Println(s.Validate(map[string][]int64{"q.weight": {6, 16}, "o.weight": {16, 8}}))
	// Output:
	// <nil> map[heads:2] 4
	// <nil>
	// tensor "q.weight" axis 0 has 6 elements, but group "heads" has 2 units of 4 (8)
}

// Aligning checkpoints on disk: MatchModels reads them in their own dtype
// a block at a time (memory independent of their size); with three or more
// models it aligns them all to each other (MergeMany).
func ExampleMatchModels() {
	var models []*checkpoint.Model
	for _, p := range []string{"../testdata/demo/mlp-a", "../testdata/demo/mlp-b"} {
		m, err := checkpoint.Open(p)
		if err != nil {
			fmt.Println(err)
			return
		}
		defer m.Close()
		models = append(models, m)
	}
	spec, _ := permute.BuiltinSpec("auto", models[0], nil)
	res, err := permute.MatchModels(context.Background(), spec, models, permute.MatchOptions{Seed: 1, CacheBytes: 64 << 20})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%d groups; distance %.1f -> %.1f; the first model stays as it is: %v\n",
		len(spec.Groups), res.DistanceBefore, res.DistanceAfter, res.Perms[0].IsIdentity())
	// Output:
	// 4 groups; distance 20.1 -> 15.4; the first model stays as it is: true
}

// The spec of a trained ResNet (testdata/pairs), built from its
// architecture: what each group is, and which tensors write and read the
// units of one of them.
func ExampleBuildSpec() {
	m, err := checkpoint.Open("../testdata/pairs/resnet-a")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close()
	a, err := arch.Open(m)
	if err != nil {
		fmt.Println(err)
		return
	}
	as, err := permute.BuildSpec(a)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, g := range as.GroupNames() {
		fmt.Printf("%-16s %-8s %3d units\n", g, as.Info[g].Kind, as.Groups[g])
	}
	for _, u := range as.ModuleUses("layer4.1.conv1") {
		fmt.Println(u.Tensor, u.Axis, u.Direction)
	}
	// Output:
	// layer1.0.conv1   hidden    16 units
	// layer1.1.conv1   hidden    16 units
	// layer2.0.conv1   hidden    32 units
	// layer2.1.conv1   hidden    32 units
	// layer2.residual  residual  32 units
	// layer3.0.conv1   hidden    64 units
	// layer3.1.conv1   hidden    64 units
	// layer3.residual  residual  64 units
	// layer4.0.conv1   hidden   128 units
	// layer4.1.conv1   hidden   128 units
	// layer4.residual  residual 128 units
	// stem             residual  16 units
	// layer4.1.bn1.bias 0 normalises
	// layer4.1.bn1.running_mean 0 normalises
	// layer4.1.bn1.running_var 0 normalises
	// layer4.1.bn1.weight 0 normalises
	// layer4.1.conv1.weight 0 writes
	// layer4.1.conv2.weight 1 reads
}
