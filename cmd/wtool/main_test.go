package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
		{"convert onto input", []string{"convert", demoDir + "/mlp-a", "-o", demoDir + "/mlp-a", "--force"}, exitFailure, "", "refusing to overwrite an input"},
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
	if code, _, _ := wtool(t, "convert", demoDir+"/mlp-a", "-o", out, "-q"); code != exitFailure {
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
