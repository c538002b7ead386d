package merge

import (
	"context"
	"maps"
	"os"
	"slices"
	"testing"

	"github.com/wtool/wtool/fisher/nn"
	"github.com/wtool/wtool/permute"
)

const pairsDir = "../testdata/pairs/"

// pleasPair is a pair of trained models with their joint statistics.
type pleasPair struct {
	a, b        *nn.Net
	spec        *permute.ArchSpec
	js          permute.JointStats
	train, test *nn.Data
}

func loadPleasPair(t testing.TB, x, y string) *pleasPair {
	t.Helper()
	if _, err := os.Stat(pairsDir + x); err != nil {
		t.Skipf("no %s: %v", x, err)
	}
	a, err := nn.LoadPath(pairsDir + x)
	if err != nil {
		t.Fatal(err)
	}
	b, err := nn.LoadPath(pairsDir + y)
	if err != nil {
		t.Fatal(err)
	}
	train, err := nn.OpenData("../testdata/demo/digits_train.safetensors", "", "")
	if err != nil {
		t.Fatal(err)
	}
	test, err := nn.OpenData("../testdata/demo/digits_test.safetensors", "", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { train.Close(); test.Close() })
	st, err := nn.CollectStats(context.Background(), []*nn.Net{a, b}, train, nn.StatsOptions{})
	if err != nil {
		t.Fatal(err)
	}
	spec, err := permute.BuildSpec(a.Arch)
	if err != nil {
		t.Fatal(err)
	}
	return &pleasPair{a: a, b: b, spec: spec, js: permute.StatsOf(st), train: train, test: test}
}

// evaluate builds the merged net, recomputes its BatchNorm statistics on
// the training data and returns its test accuracy.
func (p *pleasPair) evaluate(t testing.TB, res *PLeaSModelResult, resetBN bool) float64 {
	t.Helper()
	tm := nn.TensorMap{}
	for k, v := range res.Tensors {
		tm[k] = v
	}
	net, err := nn.FromTensors(p.a.Arch.Config, tm)
	if err != nil {
		t.Fatal(err)
	}
	if resetBN {
		if _, err := nn.RecomputeBatchNorm(context.Background(), net, p.train, nn.BNOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	r, err := nn.Evaluate(context.Background(), net, p.test, nn.EvalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return r.Accuracy
}

// wmPerms returns weight matching's permutations of a pair.
func (p *pleasPair) wmPerms(t testing.TB) permute.Perms {
	t.Helper()
	r, err := permute.WeightMatching(context.Background(), p.spec.Spec, netSource{p.a}, netSource{p.b}, permute.MatchOptions{Seed: 1, Restarts: 3})
	if err != nil {
		t.Fatal(err)
	}
	return r.Perms
}

// netSource gives a loaded net's parameters to weight matching.
type netSource struct{ n *nn.Net }

func (s netSource) Float32(name string) ([]float32, []int64, error) {
	v, ok := s.n.Tensor(name)
	p, ok2 := s.n.Arch.Param(name)
	if !ok || !ok2 {
		return nil, nil, os.ErrNotExist
	}
	return v, p.Shape, nil
}

// logits returns the merged net's logits on the test set.
func (p *pleasPair) logits(t testing.TB, res *PLeaSModelResult) ([]float32, int) {
	t.Helper()
	tm := nn.TensorMap{}
	for k, v := range res.Tensors {
		tm[k] = v
	}
	net, err := nn.FromTensors(p.a.Arch.Config, tm)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nn.RecomputeBatchNorm(context.Background(), net, p.train, nn.BNOptions{}); err != nil {
		t.Fatal(err)
	}
	y, _, cols, err := nn.Forward(context.Background(), net, p.test, 0, p.test.N)
	if err != nil {
		t.Fatal(err)
	}
	return y, cols
}

// splitAccuracy scores logits on the test images of classes [lo, hi) with
// the logits of columns [off+lo, off+hi) only (a task's own head).
func splitAccuracy(y []float32, cols int, labels []int, lo, hi, off int) float64 {
	var n, ok int
	for i, l := range labels {
		if l < lo || l >= hi {
			continue
		}
		best := lo
		for c := lo; c < hi; c++ {
			if y[i*cols+off+c] > y[i*cols+off+best] {
				best = c
			}
		}
		n++
		if best == l {
			ok++
		}
	}
	return float64(ok) / float64(n)
}

// TestPLeaSResNetPairs merges testdata/pairs' trained ResNets (the
// ResNet-18 layout at small widths) and checks the ordering the PLeaS
// paper reports: every aligned average far above the naive one, PLeaS at
// width 1 at least as accurate as weight matching and activation matching
// (their averages, BatchNorm statistics recomputed for all), wider merges
// better still; on the label-split pair (digits 0-4 and 5-9) PLeaS
// recovers most of both models' accuracy on their own classes.
func TestPLeaSResNetPairs(t *testing.T) {
	if testing.Short() {
		t.Skip("trains nothing but runs the ResNets many times")
	}
	ctx := context.Background()
	p := loadPleasPair(t, "resnet-a", "resnet-b")
	merge := func(o PLeaSModelOptions) *PLeaSModelResult {
		t.Helper()
		res, err := PLeaSModel(ctx, p.spec, p.a, p.b, p.js, o)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	wm := p.wmPerms(t)
	acc := map[string]float64{
		"naive":                      p.evaluate(t, merge(PLeaSModelOptions{AverageOnly: true, Perms: permute.Identity(p.spec.Spec)}), false),
		"naive, BN reset":            p.evaluate(t, merge(PLeaSModelOptions{AverageOnly: true, Perms: permute.Identity(p.spec.Spec)}), true),
		"weight matching":            p.evaluate(t, merge(PLeaSModelOptions{AverageOnly: true, Perms: wm}), true),
		"activation matching":        p.evaluate(t, merge(PLeaSModelOptions{AverageOnly: true}), true),
		"PLeaS width 1":              p.evaluate(t, merge(PLeaSModelOptions{Width: 1}), true),
		"PLeaS width 1, wm":          p.evaluate(t, merge(PLeaSModelOptions{Width: 1, Perms: wm}), true),
		"PLeaS width 1.5":            p.evaluate(t, merge(PLeaSModelOptions{Width: 1.5}), true),
		"PLeaS width 1, no BN reset": p.evaluate(t, merge(PLeaSModelOptions{Width: 1}), false),
	}
	for _, k := range slices.Sorted(maps.Keys(acc)) {
		t.Logf("resnet-a + resnet-b, %-28s %.4f", k, acc[k])
	}
	if acc["naive"] > 0.3 {
		t.Errorf("the naive average scores %.4f: the pair is not what it should be", acc["naive"])
	}
	// weight matching is weak on these narrow networks (stages of 16 to
	// 128 channels: about 51%); activation matching and PLeaS are not
	far := map[string]float64{"weight matching": 0.2, "activation matching": 0.5, "PLeaS width 1": 0.5, "PLeaS width 1, wm": 0.5}
	for _, k := range slices.Sorted(maps.Keys(far)) {
		if acc[k] < acc["naive"]+far[k] {
			t.Errorf("%s: %.4f, not far above the naive average's %.4f", k, acc[k], acc["naive"])
		}
	}
	const margin = 0.005 // about 3 of the 540 test images
	for _, k := range []string{"weight matching", "activation matching"} {
		if acc["PLeaS width 1"] < acc[k]-margin {
			t.Errorf("PLeaS at width 1 (%.4f) below %s (%.4f)", acc["PLeaS width 1"], k, acc[k])
		}
	}
	if acc["PLeaS width 1.5"] < acc["PLeaS width 1"]-margin {
		t.Errorf("PLeaS at width 1.5 (%.4f) below width 1 (%.4f)", acc["PLeaS width 1.5"], acc["PLeaS width 1"])
	}

	q := loadPleasPair(t, "resnet-c", "resnet-d")
	for _, sep := range []bool{false, true} {
		res, err := PLeaSModel(ctx, q.spec, q.a, q.b, q.js, PLeaSModelOptions{Width: 1, SeparateHeads: sep})
		if err != nil {
			t.Fatal(err)
		}
		y, cols := q.logits(t, res)
		off := 0
		if sep {
			off = 10
		}
		taskA, taskB := splitAccuracy(y, cols, q.test.Labels, 0, 5, 0), splitAccuracy(y, cols, q.test.Labels, 5, 10, off)
		t.Logf("resnet-c + resnet-d, PLeaS width 1, separate heads %v: %d outputs, digits 0-4 %.4f, digits 5-9 %.4f, all ten %.4f", sep, cols, taskA, taskB, splitAccuracy(y, cols, q.test.Labels, 0, 10, 0))
		if taskA < 0.9 || taskB < 0.9 {
			t.Errorf("separate heads %v: the merged model scores %.4f on 0-4 and %.4f on 5-9 (the sources about 0.99 and 0.98)", sep, taskA, taskB)
		}
		if !sep {
			if all := splitAccuracy(y, cols, q.test.Labels, 0, 10, 0); all < 0.8 {
				t.Errorf("one ten-way head: %.4f on all digits (each source about 0.49)", all)
			}
		} else if cols != 20 {
			t.Errorf("separate heads: %d outputs, want 20", cols)
		}
	}
	for i, n := range []*nn.Net{q.a, q.b} {
		y, _, cols, err := nn.Forward(ctx, n, q.test, 0, q.test.N)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("source %s: digits 0-4 %.4f, digits 5-9 %.4f, all ten %.4f", []string{"resnet-c", "resnet-d"}[i],
			splitAccuracy(y, cols, q.test.Labels, 0, 5, 0), splitAccuracy(y, cols, q.test.Labels, 5, 10, 0), splitAccuracy(y, cols, q.test.Labels, 0, 10, 0))
	}
}
