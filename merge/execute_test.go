package merge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wtool/wtool/fisher/mlp"
	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/tensors"
)

// model writes a checkpoint of named float tensors (dtype dt) plus an I64
// buffer, as a single file or as a directory with nshards shards.
func model(t *testing.T, path string, dt tensors.DType, vals map[string][]float32, nshards int) {
	t.Helper()
	var entries []safetensors.Entry
	for n, v := range vals {
		entries = append(entries, safetensors.Entry{Name: n, DType: dt, Shape: []int64{int64(len(v))}})
	}
	entries = append(entries, safetensors.Entry{Name: "position_ids", DType: tensors.I64, Shape: []int64{2}})
	produce := func(_ context.Context, e safetensors.Entry) (*tensors.Tensor, func(), error) {
		if e.Name == "position_ids" {
			x := &tensors.Tensor{Name: e.Name, DType: tensors.I64, Shape: e.Shape, Data: make([]byte, 16)}
			x.Data[0], x.Data[8] = byte(len(path)), 7 // differs per model
			return x, nil, nil
		}
		x, err := tensors.FromFloat32(e.Name, e.DType, e.Shape, vals[e.Name])
		return x, nil, err
	}
	limit := int64(0)
	if nshards > 1 {
		limit = 16
	}
	if _, err := checkpoint.Write(context.Background(), path, entries, produce, checkpoint.WriteOptions{MaxShardSize: limit, AllowNonFinite: true}); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, path, name string) []float32 {
	t.Helper()
	m, err := checkpoint.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	x, err := m.Tensor(name)
	if err != nil {
		t.Fatal(err)
	}
	v, err := x.Float32()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestExecuteFormulas(t *testing.T) {
	dir := t.TempDir()
	a := map[string][]float32{"layers.0.w": {1, 2, 3, 4}, "layers.1.w": {1, 1, 1, 1}, "norm": {2, 2}}
	b := map[string][]float32{"layers.0.w": {3, 2, 1, 0}, "layers.1.w": {-1, 0, 1, 2}, "norm": {4, 0}}
	base := map[string][]float32{"layers.0.w": {1, 1, 1, 1}, "layers.1.w": {0, 0, 0, 0}, "norm": {3, 1}, "extra": {9}}
	pa, pb, pbase := filepath.Join(dir, "a"), filepath.Join(dir, "b.safetensors"), filepath.Join(dir, "base")
	model(t, pa, tensors.F32, a, 3)       // sharded directory
	model(t, pb, tensors.BF16, b, 1)      // single file, another dtype
	model(t, pbase, tensors.F32, base, 1) // base with an extra tensor
	ctx := context.Background()
	run := func(p *Plan) string {
		t.Helper()
		out := filepath.Join(dir, fmt.Sprintf("out-%s-%d", p.Method, len(p.Models)))
		if _, err := Execute(ctx, p, out, checkpoint.WriteOptions{Force: true}); err != nil {
			t.Fatal(err)
		}
		return out
	}
	two := []ModelInput{{Path: pa, Params: Params{"weight": Num(1)}}, {Path: pb, Params: Params{"weight": Num(3)}}}

	out := run(&Plan{Method: "linear", Models: two})
	near32(t, "linear layer 0", read(t, out, "layers.0.w"), []float64{2.5, 2, 1.5, 1}, 1e-7)
	near32(t, "linear norm", read(t, out, "norm"), []float64{3.5, 0.5}, 1e-7)
	m, _ := checkpoint.Open(out)
	if info, _ := m.Info("layers.0.w"); info.DType != tensors.F32 { // the first model's dtype
		t.Errorf("output dtype %s", info.DType)
	}
	ids, _ := m.Tensor("position_ids") // integer tensor: the first model's
	if ids.Data[0] != byte(len(pa)) {
		t.Error("integer tensor not taken from the first model")
	}
	m.Close()

	// weights as a gradient over depth: t = 0 for layer 0, 1 for layer 1
	grad := []ModelInput{{Path: pa, Params: Params{"weight": Varying(Setting{Gradient: []float64{1, 0}})}}, {Path: pb, Params: Params{"weight": Varying(Setting{Gradient: []float64{0, 1}})}}}
	out = run(&Plan{Method: "linear", Models: grad})
	near32(t, "gradient layer 0 = a", read(t, out, "layers.0.w"), []float64{1, 2, 3, 4}, 1e-7)
	near32(t, "gradient layer 1 = b", read(t, out, "layers.1.w"), []float64{-1, 0, 1, 2}, 1e-7)
	near32(t, "gradient: norm at t=0 = a", read(t, out, "norm"), []float64{2, 2}, 1e-7)

	// task arithmetic: base + 0.5 * ((a - base) + 3 (b - base))
	out = run(&Plan{Method: "task-arithmetic", Models: two, Base: pbase, Params: Params{"lambda": Num(0.5)}, DType: "bf16"})
	want := make([]float64, 4)
	for i := range want {
		want[i] = float64(base["layers.0.w"][i]) + 0.5*(float64(a["layers.0.w"][i]-base["layers.0.w"][i])+3*float64(b["layers.0.w"][i]-base["layers.0.w"][i]))
	}
	near32(t, "task arithmetic (bf16)", read(t, out, "layers.0.w"), want, 1e-2)
	near32(t, "tensor only in the base", read(t, out, "extra"), []float64{9}, 0)

	// slerp with base = b: t = 0 gives b
	out = run(&Plan{Method: "slerp", Models: []ModelInput{{Path: pa}, {Path: pb}}, Base: pb, Params: Params{"t": Num(0)}})
	near32(t, "slerp t=0 at the base", read(t, out, "layers.0.w"), []float64{3, 2, 1, 0}, 1e-6)
}

func TestExecuteRefusals(t *testing.T) {
	dir := t.TempDir()
	pa, pb, pc, pnan := filepath.Join(dir, "a.safetensors"), filepath.Join(dir, "b.safetensors"), filepath.Join(dir, "c.safetensors"), filepath.Join(dir, "nan.safetensors")
	model(t, pa, tensors.F32, map[string][]float32{"w": {1, 2}, "v": {1}}, 1)
	model(t, pb, tensors.F32, map[string][]float32{"w": {1, 2, 3}, "v": {1}}, 1)
	model(t, pc, tensors.F32, map[string][]float32{"w": {1, 2}}, 1)
	model(t, pnan, tensors.F32, map[string][]float32{"w": {1, float32(math.NaN())}, "v": {1}}, 1)
	ctx := context.Background()
	out := filepath.Join(dir, "out")
	cases := []struct {
		name string
		p    *Plan
		want string
	}{
		{"shape mismatch", &Plan{Method: "linear", Models: []ModelInput{{Path: pa}, {Path: pb}}}, `tensor "w" has shape [2]`},
		{"missing tensor", &Plan{Method: "linear", Models: []ModelInput{{Path: pa}, {Path: pc}}}, `tensor "v" is in`},
		{"NaN input", &Plan{Method: "linear", Models: []ModelInput{{Path: pa}, {Path: pnan}}}, `tensor "w" has a non-finite value`},
		{"output is an input", &Plan{Method: "linear", Models: []ModelInput{{Path: pa}, {Path: pa}}}, "refusing to overwrite an input"},
		{"no base", &Plan{Method: "ties", Models: []ModelInput{{Path: pa}}}, "give the base model"},
		{"unknown method", &Plan{Method: "della", Models: []ModelInput{{Path: pa}}}, `unsupported merge method "della"`},
	}
	for _, tc := range cases {
		o := out
		if tc.name == "output is an input" {
			o = pa
		}
		_, err := Execute(ctx, tc.p, o, checkpoint.WriteOptions{Force: true})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Error("an output was left behind after failures")
	}
	// a NaN produced by the merge itself: an error unless allowed
	big := filepath.Join(dir, "big.safetensors")
	model(t, big, tensors.F32, map[string][]float32{"w": {3e38, 3e38}, "v": {1}}, 1)
	p := &Plan{Method: "linear", Models: []ModelInput{{Path: big}, {Path: big}}, Params: Params{"normalize": Flag(false)}}
	if _, err := Execute(ctx, p, out, checkpoint.WriteOptions{}); err == nil || !strings.Contains(err.Error(), "allow-nonfinite") {
		t.Errorf("overflow: %v", err)
	}
	p.AllowNonFinite = true
	if _, err := Execute(ctx, p, out, checkpoint.WriteOptions{}); err != nil {
		t.Errorf("allowed overflow: %v", err)
	}
}

func TestConfigAndFlagsGiveIdenticalBytes(t *testing.T) {
	dir := t.TempDir()
	pa, pb, pbase := filepath.Join(dir, "a"), filepath.Join(dir, "b"), filepath.Join(dir, "base")
	model(t, pa, tensors.F32, map[string][]float32{"layers.0.w": {1, 2, 3, 4, 5, 6}, "layers.1.w": {1, -1, 2, -2, 3, -3}}, 1)
	model(t, pb, tensors.F32, map[string][]float32{"layers.0.w": {-1, 0, 2, 7, 1, 1}, "layers.1.w": {0, 1, 0, 1, 0, 1}}, 1)
	model(t, pbase, tensors.F32, map[string][]float32{"layers.0.w": {0, 1, 2, 3, 4, 5}, "layers.1.w": {0, 0, 0, 0, 0, 0}}, 1)
	yaml := fmt.Sprintf(`
models:
  - model: %s
    parameters: {weight: 1.0, density: [0.4, 0.8]}
  - model: %s
    parameters:
      weight: [{filter: "layers.1", value: 2.0}, {value: 0.5}]
      density: 0.6
merge_method: dare_ties
base_model: %s
parameters: {lambda: 0.9}
dtype: bfloat16
seed: 42
`, pa, pb, pbase)
	p1, err := ParseConfig([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	p2 := &Plan{Method: "dare-ties", Base: pbase, DType: "bf16", Params: Params{"seed": IntValue(42), "lambda": Num(0.9)}, Models: []ModelInput{
		{Path: pa, Params: Params{"weight": Num(1), "density": Varying(Setting{Gradient: []float64{0.4, 0.8}})}},
		{Path: pb, Params: Params{"weight": Varying(Setting{Conds: []Cond{{Filter: "layers.1", Value: Const(2)}, {Value: Const(0.5)}}}), "density": Num(0.6)}},
	}}
	o1, o2 := filepath.Join(dir, "o1.safetensors"), filepath.Join(dir, "o2.safetensors")
	if _, err := Execute(context.Background(), p1, o1, checkpoint.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := Execute(context.Background(), p2, o2, checkpoint.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	b1, _ := os.ReadFile(o1)
	b2, _ := os.ReadFile(o2)
	if !bytes.Equal(b1, b2) {
		t.Fatal("YAML and flags plans gave different bytes")
	}
	// a different seed gives a different DARE merge
	p2.Params["seed"] = IntValue(43)
	o3 := filepath.Join(dir, "o3.safetensors")
	Execute(context.Background(), p2, o3, checkpoint.WriteOptions{})
	b3, _ := os.ReadFile(o3)
	if bytes.Equal(b1, b3) {
		t.Error("the seed has no effect on DARE")
	}
}

func TestConfigRefusals(t *testing.T) {
	for yaml, want := range map[string]string{
		"models: [{model: a}]\nmerge_method: frobnicate\n":                                         `line 2: merge_method: unsupported merge method "frobnicate"`,
		"slices: []\nmerge_method: linear\n":                                                       `exactly one of models:, slices: or modules: must be given`,
		"slices: [{sources: [{model: a+lora, layer_range: [0, 1]}]}]\nmerge_method: passthrough\n": `a LoRA adapter on a slice source is not supported yet`,
		"models: [{model: a, parameters: {weight: 1, gamma: 0.1}}]\nmerge_method: ties":            `unsupported parameter "gamma" for ties in the parameters of model 1`,
		"models: [{model: a}]\nmerge_method: ties\nparameters: {epsilon: 0.1}\n":                   `unsupported parameter "epsilon"`,
		"models: [{model: a}]\n": "merge_method is missing",
	} {
		p, err := ParseConfig([]byte(yaml))
		if err == nil {
			err = p.Validate()
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", yaml, err, want)
		}
	}
}

// TestDemoMerges: on the bundled demo models, naive averaging collapses,
// weight matching recovers most of the accuracy and PLeaS at width 1.0 is at
// least as accurate as weight-matching averaging (the figures of the demo).
func TestDemoMerges(t *testing.T) {
	demo := "../testdata/demo"
	if _, err := os.Stat(demo + "/mlp-a"); err != nil {
		t.Skip(err)
	}
	dir := t.TempDir()
	in, _ := mlp.OpenInputs(demo+"/digits_test.safetensors", "")
	defer in.Close()
	labels, _ := mlp.ReadLabels(demo+"/digits_test.safetensors", "")
	accuracy := func(path string) float64 {
		m, err := checkpoint.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		n, err := mlp.Load(m, nil, mlp.ReLU)
		if err != nil {
			t.Fatal(err)
		}
		acc, _, err := mlp.Evaluate(context.Background(), n, in, labels, 512)
		if err != nil {
			t.Fatal(err)
		}
		return acc
	}
	two := []ModelInput{{Path: demo + "/mlp-a"}, {Path: demo + "/mlp-b"}}
	acc := map[string]float64{}
	for _, p := range []*Plan{
		{Method: "linear", Models: two},
		{Method: "wm", Models: two},
		{Method: "pleas", Models: two, Params: Params{"calib": Text(demo + "/digits_train.safetensors"), "width": Num(1)}},
		{Method: "pleas", Models: two, Params: Params{"calib": Text(demo + "/digits_train.safetensors"), "width": Num(1.5)}},
	} {
		w, _ := p.Params["width"].Num.Constant()
		out := filepath.Join(dir, fmt.Sprintf("%s-%g", p.Method, w))
		if _, err := Execute(context.Background(), p, out, checkpoint.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
		acc[filepath.Base(out)] = accuracy(out)
	}
	src := min(accuracy(demo+"/mlp-a"), accuracy(demo+"/mlp-b"))
	t.Logf("sources %.4f, accuracies %v", src, acc)
	if acc["linear-0"] > 0.5 {
		t.Errorf("naive averaging should collapse on the demo pair: %.4f", acc["linear-0"])
	}
	if acc["wm-0"] < 0.8 {
		t.Errorf("weight matching should recover: %.4f", acc["wm-0"])
	}
	if acc["pleas-1"] < acc["wm-0"] || acc["pleas-1"] < src-0.01 {
		t.Errorf("PLeaS at width 1 (%.4f) should match the sources (%.4f) and beat weight matching (%.4f)", acc["pleas-1"], src, acc["wm-0"])
	}
	if acc["pleas-1.5"] < acc["pleas-1"]-0.005 {
		t.Errorf("a wider PLeaS merge should not lose accuracy: %.4f vs %.4f", acc["pleas-1.5"], acc["pleas-1"])
	}
	// the wider merge updated config.json's sizes
	var cfg struct{ Sizes []int }
	b, _ := os.ReadFile(filepath.Join(dir, "pleas-1.5", "config.json"))
	json.Unmarshal(b, &cfg)
	if fmt.Sprint(cfg.Sizes) != "[64 96 96 96 96 10]" {
		t.Errorf("config sizes %v", cfg.Sizes)
	}
}
