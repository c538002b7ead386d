package main

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wtool/wtool/fisher/nn"
	"github.com/wtool/wtool/fisher/stats"
	"github.com/wtool/wtool/io/checkpoint"
)

const pairsDir = "../../testdata/pairs"

// pairResults reads the accuracies and perplexities the training scripts
// measured with PyTorch (testdata/pairs/results*.json).
func pairResults(t *testing.T) map[string]map[string]float64 {
	t.Helper()
	out := map[string]map[string]float64{}
	for _, f := range []string{"results.json", "results_lm.json"} {
		b, err := os.ReadFile(filepath.Join(pairsDir, f))
		if err != nil {
			continue
		}
		var m map[string]map[string]float64
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

// TestEvalMatchesTraining: wtool eval's accuracy and perplexity on the
// trained pairs equal what PyTorch measured when they were trained.
func TestEvalMatchesTraining(t *testing.T) {
	res := pairResults(t)
	for _, tc := range []struct {
		models []string
		data   string
		metric string
	}{
		{[]string{"resnet-a", "resnet-b", "resnet-c", "resnet-d"}, demoDir + "/digits_test.safetensors", "test_accuracy"},
		{[]string{"vit-a", "vit-b", "vit-c", "vit-d"}, demoDir + "/digits_test.safetensors", "test_accuracy"},
		{[]string{"llama-a", "llama-b"}, pairsDir + "/text_test.safetensors", "test_perplexity"},
	} {
		args := []string{"eval", "--json", "--data", tc.data}
		for _, m := range tc.models {
			if _, ok := res[m]; !ok {
				t.Logf("%s: not trained", m)
				continue
			}
			args = append(args, filepath.Join(pairsDir, m))
		}
		if len(args) == 4 {
			continue
		}
		code, stdout, stderr := wtool(t, args...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, stderr)
		}
		var got []evalResult
		if err := json.Unmarshal([]byte(stdout), &got); err != nil {
			t.Fatal(err)
		}
		for _, r := range got {
			want := res[filepath.Base(r.Model)][tc.metric]
			v := r.Accuracy
			if tc.metric == "test_perplexity" {
				v = r.Perplexity
			}
			if math.Abs(v-want) > 1e-4*math.Max(1, want) {
				t.Errorf("%s: %s %.4f, PyTorch %.4f", r.Model, tc.metric, v, want)
			}
		}
	}
}

// TestStatsCommandEngine: wtool stats on a ResNet pair writes the joint
// statistics nn.CollectStats computes, module inputs and activation points;
// --no-points and --select choose entries.
func TestStatsCommandEngine(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(pairsDir, "resnet-a"), filepath.Join(pairsDir, "resnet-b")
	calib := demoDir + "/digits_train.safetensors"
	out := filepath.Join(dir, "joint.safetensors")
	if code, _, stderr := wtool(t, "stats", a, b, "--calib", calib, "--limit", "40", "--batch-size", "16", "-o", out, "-q"); code != 0 {
		t.Fatal(stderr)
	}
	f, err := stats.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Kind != stats.Joint || f.Samples != 40 {
		t.Fatalf("kind %s, samples %d", f.Kind, f.Samples)
	}
	na, nb := loadEngine(t, a), loadEngine(t, b)
	d, err := nn.OpenData(calib, "", "")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	want, err := nn.CollectStats(context.Background(), []*nn.Net{na, nb}, d, nn.StatsOptions{Limit: 40, BatchSize: 16})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(f.Modules(), ",") != entryNames(want) {
		t.Fatalf("entries %v, want %s", f.Modules(), entryNames(want))
	}
	for _, w := range want.Modules {
		g, err := f.Module(w.Name)
		if err != nil {
			t.Fatal(err)
		}
		if g.Count != w.Count || g.Cross[len(g.Cross)-1] != w.Cross[len(w.Cross)-1] || g.Sum[0] != w.Sum[0] {
			t.Errorf("%s differs", w.Name)
		}
	}
	if !f.Has("layer1.0:in") || !f.Has("layer4.1:out") || !f.Has("layer2.0.conv2:in") || !f.Has("conv1") {
		t.Errorf("entries %v", f.Modules())
	}
	// --no-points, --select
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--no-points"}, "conv1,layer1.0.conv1"},
		{[]string{"--select", `^layer4\.1`}, "layer4.1.conv1,layer4.1.conv2:in,layer4.1.conv2,layer4.1:out"},
	} {
		o := filepath.Join(dir, "s.safetensors")
		args := append([]string{"stats", a, "--calib", calib, "--limit", "8", "-o", o, "--force", "-q"}, tc.args...)
		if code, _, stderr := wtool(t, args...); code != 0 {
			t.Fatal(stderr)
		}
		sf, err := stats.Open(o)
		if err != nil {
			t.Fatal(err)
		}
		got := strings.Join(sf.Modules(), ",")
		sf.Close()
		if !strings.HasPrefix(got, tc.want) || (tc.args[0] == "--no-points" && strings.Contains(got, ":")) {
			t.Errorf("%v: entries %s", tc.args, got)
		}
	}
}

// TestResetBNCommand: reset-bn writes the recomputed running statistics
// (equal to nn.RecomputeBatchNorm's) and every other tensor byte-identical.
func TestResetBNCommand(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(pairsDir, "resnet-c")
	data := demoDir + "/digits_train.safetensors"
	out := filepath.Join(dir, "bn")
	if code, _, stderr := wtool(t, "reset-bn", src, "--data", data, "--batch-size", "50", "--batches", "4", "-o", out, "-q"); code != 0 {
		t.Fatal(stderr)
	}
	n := loadEngine(t, src)
	d, err := nn.OpenData(data, "", "-")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	fresh, err := nn.RecomputeBatchNorm(context.Background(), n, d, nn.BNOptions{BatchSize: 50, Batches: 4})
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]string{}
	for _, t := range fresh {
		byName[t.Name] = string(t.Data)
	}
	mi, err := checkpoint.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer mi.Close()
	mo, err := checkpoint.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer mo.Close()
	if len(mi.Names()) != len(mo.Names()) {
		t.Fatalf("%d tensors, input %d", len(mo.Names()), len(mi.Names()))
	}
	changed := 0
	for _, name := range mi.Names() {
		ti, _ := mi.Tensor(name)
		to, err := mo.Tensor(name)
		if err != nil {
			t.Fatal(err)
		}
		if want, ok := byName[name]; ok {
			if string(to.Data) != want {
				t.Errorf("%s: not the recomputed value", name)
			}
			if string(to.Data) != string(ti.Data) {
				changed++
			}
		} else if string(to.Data) != string(ti.Data) || ti.DType != to.DType {
			t.Errorf("%s changed", name)
		}
	}
	if changed < 40 {
		t.Errorf("only %d statistics changed", changed)
	}
	if _, err := os.Stat(filepath.Join(out, "config.json")); err != nil {
		t.Errorf("config.json not copied: %v", err)
	}
}

func TestEngineCommandErrors(t *testing.T) {
	dir := t.TempDir()
	r := filepath.Join(pairsDir, "resnet-a")
	digits := demoDir + "/digits_train.safetensors"
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"mlp flags on a resnet", []string{"stats", r, "--calib", digits, "--act", "gelu", "-o", filepath.Join(dir, "x.safetensors")}, exitUsage, "plain MLPs"},
		{"engine flags on an mlp", []string{"stats", demoDir + "/mlp-a", "--calib", digits, "--no-points", "-o", filepath.Join(dir, "x.safetensors")}, exitUsage, "not plain MLPs"},
		{"mixed pair", []string{"stats", r, demoDir + "/mlp-a", "--calib", digits, "-o", filepath.Join(dir, "x.safetensors")}, exitFailure, "not of the architecture"},
		{"bad select", []string{"stats", r, "--calib", digits, "--select", "(", "-o", filepath.Join(dir, "x.safetensors")}, exitUsage, "--select"},
		{"tokens into a resnet", []string{"eval", r, "--data", pairsDir + "/text_test.safetensors"}, exitFailure, "token ids"},
		{"no labels", []string{"eval", r, "--data", pairsDir + "/text_calib.safetensors", "--data-key", "ids"}, exitFailure, "token ids"},
		{"eval without data", []string{"eval", r}, exitUsage, "--data"},
		{"reset-bn without BatchNorm", []string{"reset-bn", demoDir + "/mlp-a", "--data", digits, "-o", filepath.Join(dir, "y")}, exitFailure, "does not run mlp"},
		{"reset-bn batch of one", []string{"reset-bn", r, "--data", digits, "--batch-size", "1", "-o", filepath.Join(dir, "y")}, exitUsage, "at least 2"},
		{"small gram limit", []string{"stats", r, "--calib", digits, "--max-gram", "100", "-o", filepath.Join(dir, "x.safetensors")}, exitFailure, "above the limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := wtool(t, tc.args...)
			if code != tc.code || !strings.Contains(stderr, tc.stderr) {
				t.Errorf("exit %d (want %d), stderr: %s", code, tc.code, stderr)
			}
		})
	}
}

func loadEngine(t *testing.T, path string) *nn.Net {
	t.Helper()
	n, err := nn.LoadPath(path)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func entryNames(s *stats.Stats) string {
	var names []string
	for _, m := range s.Modules {
		names = append(names, m.Name)
	}
	return strings.Join(names, ",")
}
