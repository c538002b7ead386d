package nn_test

import (
	"context"
	"fmt"
	"log"

	"github.com/wtool/wtool/fisher/nn"
)

// Evaluate a classifier, recompute its BatchNorm statistics on training
// data, and collect the joint statistics of a pair.
func Example() {
	ctx := context.Background()
	a, err := nn.LoadPath("../../testdata/pairs/resnet-a")
	if err != nil {
		log.Fatal(err)
	}
	b, err := nn.LoadPath("../../testdata/pairs/resnet-b")
	if err != nil {
		log.Fatal(err)
	}
	test, err := nn.OpenData("../../testdata/demo/digits_test.safetensors", "", "")
	if err != nil {
		log.Fatal(err)
	}
	defer test.Close()
	res, err := nn.Evaluate(ctx, a, test, nn.EvalOptions{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("resnet-a: %.1f%% of %d test images\n", 100*res.Accuracy, res.Samples)

	train, err := nn.OpenData("../../testdata/demo/digits_train.safetensors", "", "-")
	if err != nil {
		log.Fatal(err)
	}
	defer train.Close()
	bn, err := nn.RecomputeBatchNorm(ctx, a, train, nn.BNOptions{BatchSize: 64})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(bn), "tensors:", bn[0].Name, bn[1].Name, bn[2].Name, "...")

	s, err := nn.CollectStats(ctx, []*nn.Net{a, b}, train, nn.StatsOptions{Limit: 64})
	if err != nil {
		log.Fatal(err)
	}
	for _, p := range a.Points()[:4] {
		m := s.Module(p.Name)
		fmt.Printf("%-16s %-13s space %-15s %4d features, %5d samples\n", p.Name, p.Kind, p.Space, m.Dim, m.Count)
	}
	// Output:
	// resnet-a: 97.4% of 540 test images
	// 60 tensors: bn1.running_mean bn1.running_var bn1.num_batches_tracked ...
	// conv1            module input  space pixels             9 features,  4096 samples
	// layer1.0:in      activation    space stem              16 features,  4096 samples
	// layer1.0.conv1   module input  space stem             144 features,  4096 samples
	// layer1.0.conv2:in activation    space layer1.0.conv1    16 features,  4096 samples
}
