package merge

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wtool/wtool/fisher/nn"
	"github.com/wtool/wtool/io/checkpoint"
)

// TestPLeaSLlamaLoadsAndRuns merges testdata/pairs' tiny Llama pair (byte
// level, 4 layers, grouped-query attention, SwiGLU) with PLeaS: the
// residual stream merged at width 1, MLP units and whole key/value heads
// (with their query heads) widened. Each merged checkpoint must load from
// its own config.json (intermediate_size, head counts, head_dim pinned) and
// run; its held-out perplexity is logged next to the sources' and the
// naive average's. A parameter budget ties the widths of every layer (one
// intermediate_size, one head count: no per-layer widths, which
// transformers cannot load). Permutation merging of independently trained
// transformers is known to gain little: the test asserts correctness, not
// quality.
func TestPLeaSLlamaLoadsAndRuns(t *testing.T) {
	if _, err := os.Stat(pairsDir + "llama-a/model.safetensors"); err != nil {
		t.Skipf("no Llama pair: %v", err)
	}
	ctx := context.Background()
	test, err := nn.OpenData(pairsDir+"text_test.safetensors", "", "-")
	if err != nil {
		t.Fatal(err)
	}
	defer test.Close()
	ppl := func(path string) float64 {
		t.Helper()
		net, err := nn.LoadPath(path)
		if err != nil {
			t.Fatalf("%s does not load: %v", path, err)
		}
		r, err := nn.Evaluate(ctx, net, test, nn.EvalOptions{Limit: 32})
		if err != nil {
			t.Fatal(err)
		}
		return r.Perplexity
	}
	two := []ModelInput{{Path: pairsDir + "llama-a"}, {Path: pairsDir + "llama-b"}}
	calib := Text(pairsDir + "text_calib.safetensors")
	match := Text("activation")
	dir := t.TempDir()
	res := map[string]float64{"llama-a": ppl(pairsDir + "llama-a"), "llama-b": ppl(pairsDir + "llama-b")}
	for _, tc := range []struct {
		name         string
		p            Params
		inter, heads int
		kv           int
		checkUniform bool
	}{
		{name: "naive average", p: nil},
		{name: "pleas width 1", p: Params{"calib": calib, "match": match, "width": Num(1)}, inter: 256, heads: 4, kv: 2, checkUniform: true},
		{name: "pleas width 1.5", p: Params{"calib": calib, "match": match, "width": Num(1.5)}, inter: 384, heads: 6, kv: 3, checkUniform: true},
		{name: "pleas width 2", p: Params{"calib": calib, "match": match, "width": Num(2)}, inter: 512, heads: 8, kv: 4, checkUniform: true},
		{name: "pleas params budget 1.3", p: Params{"calib": calib, "match": match, "budget": Num(1.3), "budget_kind": Text("params")}},
	} {
		plan := &Plan{Method: "pleas", Models: two, Params: tc.p}
		if tc.p == nil {
			plan.Method = "linear"
		}
		out := filepath.Join(dir, fmt.Sprint(len(res)))
		if _, err := Execute(ctx, plan, out, checkpoint.WriteOptions{}); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		res[tc.name] = ppl(out)
		if math.IsNaN(res[tc.name]) || res[tc.name] <= 1 {
			t.Errorf("%s: perplexity %g", tc.name, res[tc.name])
		}
		var cfg struct {
			Inter int `json:"intermediate_size"`
			Heads int `json:"num_attention_heads"`
			KV    int `json:"num_key_value_heads"`
			Dim   int `json:"head_dim"`
		}
		b, err := os.ReadFile(filepath.Join(out, "config.json"))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &cfg); err != nil {
			t.Fatal(err)
		}
		var raw map[string]any
		if err := json.Unmarshal(b, &raw); err != nil {
			t.Fatal(err)
		}
		for k := range raw {
			if strings.HasSuffix(k, "_per_layer") {
				t.Errorf("%s: config.json has %s: transformers cannot load per-layer widths", tc.name, k)
			}
		}
		if tc.name == "pleas params budget 1.3" && (cfg.Inter <= 256 || cfg.Inter > 512 || cfg.KV < 2) {
			t.Errorf("%s: config.json intermediate_size %d, %d key/value heads", tc.name, cfg.Inter, cfg.KV)
		}
		if tc.checkUniform && (cfg.Inter != tc.inter || cfg.Heads != tc.heads || cfg.KV != tc.kv || cfg.Dim != 24) {
			t.Errorf("%s: config.json intermediate_size %d, heads %d/%d, head_dim %d; want %d, %d/%d, 24", tc.name, cfg.Inter, cfg.Heads, cfg.KV, cfg.Dim, tc.inter, tc.heads, tc.kv)
		}
		t.Logf("%-26s perplexity %.3f (config: intermediate_size %d, heads %d, kv heads %d)", tc.name, res[tc.name], cfg.Inter, cfg.Heads, cfg.KV)
	}
	t.Logf("sources: llama-a %.3f, llama-b %.3f", res["llama-a"], res["llama-b"])
}
