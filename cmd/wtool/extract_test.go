package main

import (
	"encoding/json"
	"math"
	"path/filepath"
	"strings"
	"testing"
)

// TestAdapterExtractCLI: on the demo MLPs (fc1..fc5 with biases, all
// changed) the extracted adapter carries the bias changes as lora_B.bias
// (lora_bias true, each reported as a captured bias), --lora-bias=false
// reports them as not captured instead, and --embeddings takes only lora or
// save (exit 2 otherwise).
func TestAdapterExtractCLI(t *testing.T) {
	dir := t.TempDir()
	type report struct {
		LoraBias bool `json:"lora_bias"`
		Modules  []struct {
			Module, Kind string
			Skipped      bool
			RelError     float64 `json:"rel_error"`
		} `json:"modules"`
	}
	for _, tc := range []struct {
		name     string
		args     []string
		loraBias bool
	}{
		{"bias", nil, true},
		{"no-bias", []string{"--lora-bias=false"}, false},
	} {
		out := filepath.Join(dir, tc.name)
		args := append([]string{"adapter", "extract", demoDir + "/mlp-a", demoDir + "/mlp-b", "-o", out, "--rank", "4", "--json", "-q"}, tc.args...)
		code, stdout, stderr := wtool(t, args...)
		if code != exitOK {
			t.Fatalf("%s: exit %d: %s", tc.name, code, stderr)
		}
		var r report
		if err := json.Unmarshal([]byte(stdout), &r); err != nil {
			t.Fatalf("%s: %v\n%s", tc.name, err, stdout)
		}
		if r.LoraBias != tc.loraBias {
			t.Errorf("%s: lora_bias %v", tc.name, r.LoraBias)
		}
		biases := 0
		for _, m := range r.Modules {
			if !strings.HasSuffix(m.Module, ".bias") {
				continue
			}
			biases++
			if m.Kind != "bias" || m.Skipped == tc.loraBias {
				t.Errorf("%s: %+v", tc.name, m)
			}
			if tc.loraBias && !(m.RelError < 1e-6) || math.IsNaN(m.RelError) {
				t.Errorf("%s: %s stored with relative error %g", tc.name, m.Module, m.RelError)
			}
		}
		if biases != 5 {
			t.Errorf("%s: %d biases reported, want fc1..fc5's", tc.name, biases)
		}
	}
	code, _, stderr := wtool(t, "adapter", "extract", demoDir+"/mlp-a", demoDir+"/mlp-b", "-o", filepath.Join(dir, "x"), "--rank", "4", "--embeddings", "full")
	if code != exitUsage || !strings.Contains(stderr, "--embeddings") {
		t.Errorf("--embeddings full: exit %d: %s", code, stderr)
	}
}
