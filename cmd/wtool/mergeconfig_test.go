package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestMergeStagesDryRunAndCard: a two-stage configuration (--dry-run text
// and JSON, then the merge: the named stage under OUTPUT.stages), the
// mergekit_config.yml of a flag-built merge read back with --config to the
// same bytes, and a Hub id that is not cached.
func TestMergeStagesDryRunAndCard(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("HF_HUB_CACHE", filepath.Join(dir, "empty-cache"))
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	writeF32Model(t, a, map[string][]float32{"model.layers.0.w": {1, 2}, "model.layers.1.w": {3, 4}})
	writeF32Model(t, b, map[string][]float32{"model.layers.0.w": {5, 6}, "model.layers.1.w": {7, 8}})
	cfg := filepath.Join(dir, "multi.yml")
	os.WriteFile(cfg, []byte("name: half\nmerge_method: linear\nmodels: [{model: "+a+"}, {model: "+b+"}]\nparameters: {weight: 0.5}\n---\n"+
		"merge_method: task_arithmetic\nbase_model: "+a+"\nmodels: [{model: half, parameters: {weight: 1}}]\nparameters: {lambda: 2}\n"), 0o644)
	out := filepath.Join(dir, "out")

	code, stdout, stderr := wtool(t, "merge", "--config", cfg, "-o", out, "--dry-run")
	if code != 0 || !strings.Contains(stdout, "stage half -> "+out+".stages/half") || !strings.Contains(stdout, "model.layers.1.w F32[2] t=1 <- "+a+" "+b+" weight=0.5,0.5") || !strings.Contains(stdout, "which an earlier stage writes") {
		t.Fatalf("dry run: exit %d\n%s%s", code, stdout, stderr)
	}
	code, stdout, stderr = wtool(t, "merge", "--config", cfg, "-o", out, "--dry-run", "--json")
	var plan struct {
		Stages []struct {
			Name    string `json:"name"`
			Pending string `json:"pending"`
			Tensors []struct {
				Name   string `json:"name"`
				Inputs []struct{ Model string }
				Params map[string]any `json:"params"`
			} `json:"tensors"`
		} `json:"stages"`
	}
	if err := json.Unmarshal([]byte(stdout), &plan); code != 0 || err != nil {
		t.Fatalf("dry run --json: exit %d, %v\n%s%s", code, err, stdout, stderr)
	}
	if len(plan.Stages) != 2 || plan.Stages[0].Name != "half" || len(plan.Stages[0].Tensors) != 2 || plan.Stages[1].Pending == "" {
		t.Fatalf("dry run --json: %+v", plan)
	}
	if _, err := os.Stat(out); err == nil {
		t.Fatal("--dry-run wrote the output")
	}

	if code, _, stderr := wtool(t, "merge", "--config", cfg, "-o", out, "-q"); code != 0 {
		t.Fatal(stderr)
	}
	// a + 2 (half - a) = b
	for _, n := range []string{"model.layers.0.w", "model.layers.1.w"} {
		if got, want := readF32(t, out, n), readF32(t, b, n); got[0] != want[0] || got[1] != want[1] {
			t.Errorf("%s = %v, want b's %v", n, got, want)
		}
	}
	if _, err := os.Stat(filepath.Join(out+".stages", "half", "mergekit_config.yml")); err != nil {
		t.Errorf("the stage's output: %v", err)
	}

	// a flag-built merge's mergekit_config.yml reads back to the same merge
	flags := filepath.Join(dir, "flags")
	if code, _, stderr := wtool(t, "merge", a, b, "--method", "ties", "--base", a, "--density", "0.5", "--weights", "1,0.5", "-o", flags, "-q"); code != 0 {
		t.Fatal(stderr)
	}
	back := filepath.Join(dir, "back")
	if code, _, stderr := wtool(t, "merge", "--config", filepath.Join(flags, "mergekit_config.yml"), "-o", back, "-q"); code != 0 {
		t.Fatal(stderr)
	}
	x, _ := os.ReadFile(filepath.Join(flags, "model.safetensors"))
	y, _ := os.ReadFile(filepath.Join(back, "model.safetensors"))
	if len(x) == 0 || !bytes.Equal(x, y) {
		t.Error("the flag-built merge and its mergekit_config.yml give different bytes")
	}

	hubCfg := filepath.Join(dir, "hub.yml")
	os.WriteFile(hubCfg, []byte("merge_method: linear\nmodels:\n  - model: some-org/not-cached\n"), 0o644)
	if code, _, stderr := wtool(t, "merge", "--config", hubCfg, "-o", filepath.Join(dir, "h")); code != exitUsage || !strings.Contains(stderr, "line 3") || !strings.Contains(stderr, "huggingface-cli download some-org/not-cached") {
		t.Errorf("an id not in the cache: exit %d, %s", code, stderr)
	}
}
