package main

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wtool/wtool/fisher/mlp"
	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/tensors"
)

const demoDir = "../../testdata/demo"

// wtool runs the command line in-process and returns exit code, stdout, stderr.
func wtool(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestExitCodes(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.safetensors")
	os.WriteFile(bad, []byte{1, 2, 3}, 0o644)
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string // substring
		stderr string // substring
	}{
		{"help", []string{"--help"}, exitOK, "Exit codes", ""},
		{"version", []string{"--version"}, exitOK, "wtool version", ""},
		{"unknown flag", []string{"inspect", "--nope", demoDir + "/mlp-a"}, exitUsage, "", "unknown flag"},
		{"missing argument", []string{"inspect"}, exitUsage, "", "takes 1 argument"},
		{"unknown command", []string{"frobnicate"}, exitUsage, "", "unknown command"},
		{"inspect missing file", []string{"inspect", filepath.Join(dir, "nope")}, exitFailure, "", "no such file"},
		{"inspect bad file", []string{"inspect", bad}, exitFailure, "", "header too small"},
		{"validate ok", []string{"validate", demoDir + "/mlp-a"}, exitOK, "ok", ""},
		{"validate bad", []string{"validate", demoDir + "/mlp-a", bad}, exitInvalid, "bad.safetensors: header too small", ""},
		{"convert bad dtype", []string{"convert", demoDir + "/mlp-a", "-o", filepath.Join(dir, "x"), "--dtype", "int8"}, exitUsage, "", "--dtype"},
		{"convert no output", []string{"convert", demoDir + "/mlp-a"}, exitUsage, "", "output"},
		{"convert onto input", []string{"convert", demoDir + "/mlp-a", "-o", demoDir + "/mlp-a", "--force"}, exitUsage, "", "refusing to overwrite an input"},
		{"shard size on a file", []string{"convert", demoDir + "/mlp-a", "-o", filepath.Join(dir, "x.safetensors"), "--max-shard-size", "1MB"}, exitUsage, "", "directory output"},
		{"bad shard size", []string{"convert", demoDir + "/mlp-a", "-o", filepath.Join(dir, "y"), "--max-shard-size", "lots"}, exitUsage, "", "invalid size"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := wtool(t, tc.args...)
			if code != tc.code || !strings.Contains(stdout, tc.stdout) || !strings.Contains(stderr, tc.stderr) {
				t.Errorf("exit %d (want %d)\nstdout: %s\nstderr: %s", code, tc.code, stdout, stderr)
			}
		})
	}
}

func TestInspectJSON(t *testing.T) {
	code, stdout, stderr := wtool(t, "inspect", "--json", demoDir+"/mlp-a")
	if code != 0 {
		t.Fatal(stderr)
	}
	var r inspectReport
	if err := json.Unmarshal([]byte(stdout), &r); err != nil {
		t.Fatal(err)
	}
	// 64-64-64-64-64-10 MLP: 4 x (64*64 + 64) + 64*10 + 10 parameters
	if want := int64(4*(64*64+64) + 64*10 + 10); r.Total.Parameters != want || r.ByDType["F32"].Parameters != want {
		t.Errorf("parameters %d, want %d", r.Total.Parameters, want)
	}
	if r.Total.Bytes != 4*r.Total.Parameters || len(r.Tensors) != 10 || r.Metadata["format"] != "pt" || r.Layout != "single" {
		t.Errorf("report %+v", r)
	}
}

func TestConvertThenInspectSharded(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	code, _, stderr := wtool(t, "convert", demoDir+"/mlp-a", "-o", out, "--dtype", "f16", "--max-shard-size", "20kB", "-q")
	if code != 0 {
		t.Fatal(stderr)
	}
	if stderr != "" {
		t.Errorf("--quiet printed %q", stderr)
	}
	code, stdout, _ := wtool(t, "inspect", out, "--json")
	var r inspectReport
	json.Unmarshal([]byte(stdout), &r)
	if code != 0 || r.Layout != "sharded" || len(r.Files) < 2 || r.ByDType["F16"].Tensors != 10 {
		t.Errorf("inspect of the sharded output: %+v", r)
	}
	if _, err := os.Stat(filepath.Join(out, "config.json")); err != nil {
		t.Error("config.json not copied")
	}
	// values are the f16 rounding of the originals
	a, _ := checkpoint.Open(demoDir + "/mlp-a")
	defer a.Close()
	b, _ := checkpoint.Open(out)
	defer b.Close()
	x, _ := a.Tensor("fc2.weight")
	y, _ := b.Tensor("fc2.weight")
	xv, _ := x.Float32()
	yv, _ := y.Float32()
	for i := range xv {
		if yv[i] != tensors.F16ToFloat32(tensors.F16FromFloat32(xv[i])) {
			t.Fatalf("element %d: %v from %v", i, yv[i], xv[i])
		}
	}
	// --force replaces, without --force refuses
	if code, _, _ := wtool(t, "convert", demoDir+"/mlp-a", "-o", out, "-q"); code != exitUsage {
		t.Errorf("existing output without --force: exit %d", code)
	}
	if code, _, stderr := wtool(t, "convert", demoDir+"/mlp-a", "-o", out, "-q", "--force"); code != 0 {
		t.Errorf("--force: %s", stderr)
	}
}

func TestValidateJSON(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.safetensors")
	os.WriteFile(bad, append([]byte{0xe8, 3, 0, 0, 0, 0, 0, 0}, make([]byte, 80)...), 0o644)
	code, stdout, _ := wtool(t, "validate", "--json", demoDir+"/mlp-b", bad)
	var rs []validateResult
	if err := json.Unmarshal([]byte(stdout), &rs); err != nil {
		t.Fatal(err, stdout)
	}
	if code != exitInvalid || len(rs) != 2 || !rs[0].Valid || rs[1].Valid || rs[1].Problems[0].Kind != "InvalidHeaderLength" {
		t.Errorf("exit %d, results %+v", code, rs)
	}
}

func TestMergeFlagsAndConfigIdentical(t *testing.T) {
	dir := t.TempDir()
	a, b := demoDir+"/mlp-a", demoDir+"/mlp-b"
	o1, o2 := filepath.Join(dir, "flags.safetensors"), filepath.Join(dir, "yaml.safetensors")
	code, _, stderr := wtool(t, "merge", a, b, "-o", o1, "--method", "dare-ties", "--base", demoDir+"/mlp-c",
		"--weights", "1,0.5", "--density", "0.7", "--seed", "9", "--dtype", "bf16", "-q")
	if code != 0 {
		t.Fatal(stderr)
	}
	cfg := filepath.Join(dir, "m.yaml")
	os.WriteFile(cfg, []byte(`models:
  - model: `+a+`
    parameters: {weight: 1, density: 0.7}
  - model: `+b+`
    parameters: {weight: 0.5, density: 0.7}
merge_method: dare_ties
base_model: `+demoDir+`/mlp-c
parameters: {rescale: false}
dtype: bfloat16
seed: 9
`), 0o644)
	// rescale: false in YAML is "none"; the default is mergekit's (l1)
	code, _, stderr = wtool(t, "merge", "--config", cfg, "-o", o2, "-q")
	if code != 0 {
		t.Fatal(stderr)
	}
	x, _ := os.ReadFile(o1)
	y, _ := os.ReadFile(o2)
	if bytes.Equal(x, y) {
		t.Fatal("different rescaling should give different bytes")
	}
	code, _, stderr = wtool(t, "merge", a, b, "-o", o1, "--method", "dare-ties", "--base", demoDir+"/mlp-c",
		"--weights", "1,0.5", "--density", "0.7", "--seed", "9", "--dtype", "bf16", "--rescale", "none", "-q", "--force")
	if code != 0 {
		t.Fatal(stderr)
	}
	x, _ = os.ReadFile(o1)
	if !bytes.Equal(x, y) {
		t.Fatal("the same merge by flags and by YAML gave different bytes")
	}
	// flags that belong in the config are refused with --config
	if code, _, stderr := wtool(t, "merge", "--config", cfg, "-o", o2, "--method", "ties", "--force"); code != exitUsage || !strings.Contains(stderr, "--method") {
		t.Errorf("exit %d: %s", code, stderr)
	}
	// an unsupported method is named
	os.WriteFile(cfg, []byte("models: [{model: "+a+"}]\nmerge_method: no_such_method\n"), 0o644)
	if code, _, stderr := wtool(t, "merge", "--config", cfg, "-o", o2, "--force"); code == 0 || !strings.Contains(stderr, `"no_such_method"`) {
		t.Errorf("exit %d: %s", code, stderr)
	}
}

func TestAlignPreservesFunction(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "b-aligned")
	code, stdout, stderr := wtool(t, "align", demoDir+"/mlp-a", demoDir+"/mlp-b", "-o", out, "--json", "-q")
	if code != 0 {
		t.Fatal(stderr)
	}
	var r struct {
		DistanceBefore float64 `json:"distance_before"`
		DistanceAfter  float64 `json:"distance_after"`
	}
	if err := json.Unmarshal([]byte(stdout), &r); err != nil || !(r.DistanceAfter < r.DistanceBefore) {
		t.Fatalf("%v %s", err, stdout)
	}
	// same outputs as mlp-b on the test inputs
	logits := func(path string) []float32 {
		m, _ := checkpoint.Open(path)
		defer m.Close()
		n, err := mlp.Load(m, nil, mlp.ReLU)
		if err != nil {
			t.Fatal(err)
		}
		in, _ := mlp.OpenInputs(demoDir+"/digits_test.safetensors", "")
		defer in.Close()
		x, _ := in.Batch(nil, 0, 50)
		var ws mlp.Workspace
		return append([]float32(nil), n.Forward(&ws, x, 50)...)
	}
	p, q := logits(demoDir+"/mlp-b"), logits(out)
	for i := range p {
		if math.Abs(float64(p[i]-q[i])) > 1e-4*(1+math.Abs(float64(p[i]))) {
			t.Fatalf("logit %d: %v vs %v", i, p[i], q[i])
		}
	}
}

// TestInterruptLeavesNothing: a cancelled context (what Ctrl-C does) makes
// the command exit 130 and leaves no output or temporary file.
func TestInterruptLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"convert", demoDir + "/mlp-a", "-o", filepath.Join(dir, "conv"), "--dtype", "f16"},
		{"merge", demoDir + "/mlp-a", demoDir + "/mlp-b", "-o", filepath.Join(dir, "merged"), "--method", "linear"},
		{"compress", demoDir + "/mlp-a", "-o", filepath.Join(dir, "comp"), "--rank", "4", "--target", "fc[1-4]"},
	} {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		var out, errb bytes.Buffer
		if code := run(ctx, append(args, "-q"), &out, &errb); code != exitInterrupted {
			t.Errorf("%v: exit %d (%s)", args[0], code, errb.String())
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 0 {
		t.Errorf("left behind: %v", entries)
	}
}

// TestDemoOutsideCheckout: `wtool demo` runs from any directory (an
// installed binary has no testdata/demo beside it).
func TestDemoOutsideCheckout(t *testing.T) {
	t.Chdir(t.TempDir())
	code, stdout, stderr := wtool(t, "demo", "-q")
	if code != 0 || !strings.Contains(stdout, "pleas width 2.0") || !strings.Contains(stdout, "source mlp-d") {
		t.Errorf("exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
}

func TestArchCommand(t *testing.T) {
	code, stdout, stderr := wtool(t, "arch", demoDir+"/mlp-a")
	if code != 0 || !strings.Contains(stdout, "family mlp, 5 layers") || !strings.Contains(stdout, "*fc4    linear  layer  3      64 x 64     fc3 -> fc4") ||
		!strings.Contains(stdout, " fc5    linear  head") {
		t.Errorf("exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	code, stdout, _ = wtool(t, "arch", "--json", demoDir+"/mlp-b")
	var a struct {
		Family  string
		Modules []struct{ Name, Kind, Role string }
	}
	if err := json.Unmarshal([]byte(stdout), &a); code != 0 || err != nil || a.Family != "mlp" || len(a.Modules) != 5 || a.Modules[4].Role != "head" {
		t.Errorf("json: %v %+v", err, a)
	}
}
