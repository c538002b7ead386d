package main

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/tensors"
)

// writeF32Model writes a single-file checkpoint of F32 tensors.
func writeF32Model(t *testing.T, path string, vals map[string][]float32) {
	t.Helper()
	var entries []safetensors.Entry
	for n, v := range vals {
		entries = append(entries, safetensors.Entry{Name: n, DType: tensors.F32, Shape: []int64{int64(len(v))}})
	}
	produce := func(_ context.Context, e safetensors.Entry) (*tensors.Tensor, func(), error) {
		x, err := tensors.FromFloat32(e.Name, e.DType, e.Shape, vals[e.Name])
		return x, nil, err
	}
	if _, err := checkpoint.Write(context.Background(), path, entries, produce, checkpoint.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
}

func readF32(t *testing.T, path, name string) []float32 {
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
	v, _ := x.Float32()
	return v
}

// TestMergeCommandLine: the merge command's refusals (exit 2 naming the flag,
// nothing written) and the edge cases of issue 11.
func TestMergeCommandLine(t *testing.T) {
	dir := t.TempDir()
	a, b, base := filepath.Join(dir, "a.safetensors"), filepath.Join(dir, "b.safetensors"), filepath.Join(dir, "base.safetensors")
	big := "model.layers.9223372036854775807.mlp.weight"
	writeF32Model(t, a, map[string][]float32{"model.layers.0.w": {1, 2}, "model.layers.1.w": {3, 4}, big: {1}})
	writeF32Model(t, b, map[string][]float32{"model.layers.0.w": {3, 6}, "model.layers.1.w": {5, 0}, big: {3}})
	writeF32Model(t, base, map[string][]float32{"model.layers.0.w": {0, 0}, "model.layers.1.w": {0, 0}, big: {0}})
	out := filepath.Join(dir, "out.safetensors")
	demo := []string{demoDir + "/mlp-a", demoDir + "/mlp-b"}
	calib := demoDir + "/digits_train.safetensors"
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"dare density above 1", []string{"merge", a, b, "--base", base, "--method", "dare-ties", "--density", "1.5"}, exitUsage, `--density "1.5": 1.5 is not in (0, 1]`},
		{"dare density inf", []string{"merge", a, b, "--base", base, "--method", "dare-linear", "--density", "inf"}, exitUsage, "not a finite number"},
		{"dare density 0", []string{"merge", a, b, "--base", base, "--method", "dare-linear", "--density", "0"}, exitUsage, "0 is not in (0, 1]"},
		{"ties density 2", []string{"merge", a, b, "--base", base, "--method", "ties", "--density", "0.5,2"}, exitUsage, "2 is not in [0, 1]"},
		{"weights NaN", []string{"merge", a, b, "--method", "linear", "--weights", "nan,1"}, exitUsage, "not a finite number"},
		{"weights summing to zero", []string{"merge", a, b, "--method", "linear", "--weights", "1,-1"}, exitUsage, "the weights sum to zero"},
		{"weights count", []string{"merge", a, b, "--method", "linear", "--weights", "1,2,3"}, exitUsage, "3 values for 2 models"},
		{"flag of another method", []string{"merge", a, b, "--method", "linear", "--density", "0.5"}, exitUsage, "--density does not apply to --method linear"},
		{"pleas width NaN", append(append([]string{"merge"}, demo...), "--method", "pleas", "--calib", calib, "--width", "NaN"), exitUsage, "--width"},
		{"pleas width 3", append(append([]string{"merge"}, demo...), "--method", "pleas", "--calib", calib, "--width", "3"), exitUsage, "3 is not in [1, 2]"},
		{"pleas negative ridge", append(append([]string{"merge"}, demo...), "--method", "pleas", "--calib", calib, "--ridge", "-1"), exitUsage, "-1 must be a finite number of at least 0"},
		{"unknown method", []string{"merge", a, b, "--method", "della"}, exitUsage, `unsupported merge method "della"`},
		{"slerp without t", []string{"merge", a, b, "--method", "slerp"}, exitUsage, "slerp needs t"},
		{"ties without base", []string{"merge", a, b, "--method", "ties"}, exitUsage, "give the base model"},
		{"fisher files count", []string{"merge", a, b, "--method", "fisher", "--fisher", a}, exitUsage, "1 files for 2 models"},
		{"normalize contradiction", []string{"merge", a, b, "--method", "linear", "--normalize", "--no-normalize"}, exitUsage, "contradict"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := wtool(t, append(tc.args, "-o", out, "-q")...)
			if code != tc.code || !strings.Contains(stderr, tc.stderr) {
				t.Errorf("exit %d (want %d), stderr %q (want %q)", code, tc.code, stderr, tc.stderr)
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Error("an output was written")
			}
		})
	}

	// weights whose sum overflows are normalized, not zeros (issue 11, 9)
	if code, _, stderr := wtool(t, "merge", a, b, "--method", "linear", "--weights", "1e308,1e308", "-o", out, "-q", "--force"); code != 0 {
		t.Fatal(stderr)
	}
	if got := readF32(t, out, "model.layers.0.w"); got[0] != 2 || got[1] != 4 {
		t.Errorf("1e308,1e308: %v, want the plain average [2 4]", got)
	}
	// tiny weights are fine: they do not sum to zero
	if code, _, stderr := wtool(t, "merge", a, b, "--method", "linear", "--weights", "1e-45,3e-45", "-o", out, "-q", "--force"); code != 0 {
		t.Fatal(stderr)
	}
	if got := readF32(t, out, "model.layers.1.w"); math.Abs(float64(got[0])-4.5) > 1e-6 || math.Abs(float64(got[1])-1) > 1e-6 {
		t.Errorf("1e-45,3e-45: %v, want [4.5 1]", got)
	}

	// a YAML gradient over a tensor with an absurd layer index (issue 11, 6)
	cfg := filepath.Join(dir, "m.yaml")
	yaml := "models:\n  - model: " + a + "\n    parameters: {weight: [1, 0]}\n  - model: " + b + "\n    parameters: {weight: [0, 1]}\nmerge_method: linear\n"
	os.WriteFile(cfg, []byte(yaml), 0o644)
	if code, _, stderr := wtool(t, "merge", "--config", cfg, "-o", out, "-q", "--force"); code != 0 {
		t.Fatal(stderr)
	}
	if got := readF32(t, out, "model.layers.1.w"); got[0] != 5 || got[1] != 0 { // layer 1 of 2: t = 1, b's
		t.Errorf("gradient at the last layer: %v", got)
	}
	if got := readF32(t, out, big); got[0] != 1 { // not a layer: t = 0, a's
		t.Errorf("tensor %s: %v", big, got)
	}

	// duplicate YAML keys are refused (issue 11, 10)
	for _, dup := range []string{
		"models:\n  - model: " + a + "\n    model: " + b + "\nmerge_method: linear\n",
		"models:\n  - model: " + a + "\nmodels:\n  - model: " + b + "\nmerge_method: linear\n",
		"models:\n  - model: " + a + "\n    parameters: {weight: 1, weight: 2}\nmerge_method: linear\n",
	} {
		os.WriteFile(cfg, []byte(dup), 0o644)
		if code, _, stderr := wtool(t, "merge", "--config", cfg, "-o", out, "-q", "--force"); code != exitUsage || !strings.Contains(stderr, "appears twice") {
			t.Errorf("%q: exit %d, %s", dup, code, stderr)
		}
	}
}
