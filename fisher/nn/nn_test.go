package nn

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/wtool/wtool/io/arch"
	"github.com/wtool/wtool/io/checkpoint"
)

// TestFromTensorsInMemory: a network built from tensors in memory (a
// merge's result before it is written) computes what the checkpoint does.
func TestFromTensorsInMemory(t *testing.T) {
	dir := filepath.Join(pairsDir, "resnet-a")
	m, err := checkpoint.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	tm := TensorMap{}
	for _, n := range m.Names() {
		tt, err := m.Tensor(n)
		if err != nil {
			t.Fatal(err)
		}
		tm[n] = tt
	}
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := arch.ParseConfig(b)
	if err != nil {
		t.Fatal(err)
	}
	mem, err := FromTensors(cfg, tm)
	if err != nil {
		t.Fatal(err)
	}
	disk := loadNet(t, dir)
	d := openTestData(t, "../../testdata/demo/digits_test.safetensors")
	ra, err := Evaluate(context.Background(), mem, d, EvalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rb, err := Evaluate(context.Background(), disk, d, EvalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ra != rb || ra.Accuracy < 0.97 {
		t.Errorf("in memory %+v, from disk %+v", ra, rb)
	}
	// the same weights under another stem cannot run beside them
	cfg.Raw["stem_pool"] = true
	other, err := FromTensors(cfg, tm)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := CollectStats(context.Background(), []*Net{disk, other}, d, StatsOptions{}); err == nil {
		t.Error("a joint pass of two models with different stems")
	}
}

// TestErrors: unsupported families, mismatched data and pairs, and
// cancellation give errors, not panics.
func TestErrors(t *testing.T) {
	ctx := context.Background()
	if _, err := LoadPath("../../testdata/demo/mlp-a"); !errors.Is(err, ErrUnsupported) {
		t.Errorf("MLP: %v", err)
	}
	r := loadNet(t, filepath.Join(pairsDir, "resnet-a"))
	digits := openTestData(t, "../../testdata/demo/digits_test.safetensors")
	if _, err := Evaluate(ctx, r, openTestData(t, filepath.Join(pairsDir, "text_calib.safetensors")), EvalOptions{}); err == nil {
		t.Error("token ids into a ResNet")
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := Evaluate(cctx, r, digits, EvalOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
	if _, err := CollectStats(ctx, []*Net{r, r, r}, digits, StatsOptions{}); err == nil {
		t.Error("three models")
	}
	if _, err := CollectStats(ctx, []*Net{r}, digits, StatsOptions{Select: func(Point) bool { return false }}); err == nil {
		t.Error("nothing selected")
	}
	if _, err := RecomputeBatchNorm(ctx, r, digits, BNOptions{Momentum: 2}); err == nil {
		t.Error("momentum 2")
	}
	// a flat image set whose size does not fit the model
	bad, _ := NewImages(make([]float32, 2*63), 2, []int{63}, []int{0, 1})
	if _, err := Evaluate(ctx, r, bad, EvalOptions{}); err == nil {
		t.Error("63 features for 1x8x8 images")
	}
	// BatchNorm in training mode on one value per channel
	one, _ := NewImages(make([]float32, 64), 1, []int{1, 8, 8}, nil)
	if _, err := RecomputeBatchNorm(ctx, loadNet(t, filepath.Join(pairsDir, "resnet-a")), one, BNOptions{BatchSize: 1}); err == nil {
		t.Error("BatchNorm on a batch of one image at 1x1")
	}
}
