package conformance

import (
	"context"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/wtool/wtool/fisher"
	"github.com/wtool/wtool/fisher/stats"
	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/lowrank"
	"github.com/wtool/wtool/merge"
	"github.com/wtool/wtool/tensors"
)

func compress(t *testing.T, m *checkpoint.Model, out string, o lowrank.CompressOptions) []lowrank.TensorReport {
	t.Helper()
	rs, _, err := lowrank.Compress(context.Background(), m, out, o, checkpoint.WriteOptions{})
	if err != nil {
		t.Fatalf("%s: %v", m.Path, err)
	}
	return rs
}

func adapters(t *testing.T, m *checkpoint.Model, out string, o lowrank.AdapterOptions) []lowrank.AdapterReport {
	t.Helper()
	rs, _, err := lowrank.InitAdapters(context.Background(), m, out, o, checkpoint.WriteOptions{})
	if err != nil {
		t.Fatalf("%s: %v", m.Path, err)
	}
	return rs
}

var taskTypes = map[string]any{"llama": "CAUSAL_LM", "qwen2": "CAUSAL_LM", "mistral": "CAUSAL_LM", "gemma": "CAUSAL_LM",
	"phi3": "CAUSAL_LM", "gpt2": "CAUSAL_LM", "mixtral": "CAUSAL_LM", "bert": nil, "vit": nil, "resnet18": nil, "resnet50": nil}

// TestAgainstReferences runs compress (factored and dense), the three
// adapter initialisations, whitening, FWSVD and RegMean on the families'
// checkpoints and checks every output with testdata/families/check.py (one
// Python process for all of them):
//
//   - factored output loads into the family's PyTorch modules by the
//     README's recipe (GPT-2's Conv1D included) and computes what the dense
//     output computes;
//   - dense output holds the rank-r optimum of every target in its module's
//     own orientation, every other tensor byte-identical;
//   - PiSSA adapters have the keys and shapes PEFT creates (Linear, Conv1D
//     with fan_in_fan_out, Embedding's lora_embedding_A/B, Conv2d), and
//     residual + scaling B A reproduces W; the config has the task type and
//     the base model; SORSA/SVFit reproduce W;
//   - whitening reaches the closed-form output-error optimum for Conv1D
//     modules; FWSVD with a Fisher file another tool wrote matches the
//     reference in the Conv1D's orientation; RegMean on Conv1D modules
//     matches the closed form.
func TestAgainstReferences(t *testing.T) {
	py, dir := generated(t)
	work := t.TempDir()
	var checks []map[string]any
	for _, f := range families {
		src := filepath.Join(dir, f)
		m := open(t, src)
		dtype := "F32"
		if f == "llama" {
			dtype = "BF16" // sharded bf16, as Llama-3 is released
		}
		base := lowrank.CompressOptions{Method: "svd", Rule: lowrank.RankRule{Rank: 4}, SVD: lowrank.SVDOptions{Exact: true}}
		fo, df, dd := base, base, base
		fo.DType, df.DType, df.Format, dd.Format = tensors.F32, tensors.F32, "dense", "dense"
		fac, densef, dense := filepath.Join(work, f+"-fac"), filepath.Join(work, f+"-dense32"), filepath.Join(work, f+"-dense")
		compress(t, m, fac, fo)
		compress(t, m, densef, df)
		var targets []map[string]any
		for _, r := range compress(t, m, dense, dd) {
			if !r.LeftDense {
				targets = append(targets, map[string]any{"name": r.Name, "kind": r.Kind, "rank": r.Rank})
			}
		}
		if len(targets) == 0 {
			t.Fatalf("%s: nothing factorised", f)
		}
		checks = append(checks, map[string]any{"check": "compress", "family": f, "orig": src, "factored": fac, "dense_f32": densef,
			"dense": dense, "dtype": dtype, "targets": targets})

		// PiSSA (alpha 8: scaling 2), default targets
		out := filepath.Join(work, f+"-pissa")
		var mods []map[string]any
		for _, r := range adapters(t, m, out, lowrank.AdapterOptions{Method: "pissa", Rule: lowrank.RankRule{Rank: 4}, Alpha: 8, SVD: lowrank.SVDOptions{Exact: true}}) {
			if !r.Skipped {
				mods = append(mods, map[string]any{"module": r.Module, "rank": r.Rank})
			}
		}
		checks = append(checks, map[string]any{"check": "pissa", "family": f, "orig": src, "out": out, "dtype": dtype, "modules": mods,
			"task_type": taskTypes[f]})
	}
	// an embedding and per-module ranks (energy): lora_embedding_A/B, PEFT
	// paths in rank_pattern
	for _, c := range []struct {
		family, target string
		rule           lowrank.RankRule
	}{{"llama", `embed_tokens|q_proj`, lowrank.RankRule{Rank: 6}}, {"gpt2", `c_attn|wte`, lowrank.RankRule{Energy: 0.5}}} {
		src := filepath.Join(dir, c.family)
		out := filepath.Join(work, c.family+"-pissa-emb")
		var mods []map[string]any
		for _, r := range adapters(t, open(t, src), out, lowrank.AdapterOptions{Method: "pissa", Rule: c.rule,
			Targets: []*regexp.Regexp{regexp.MustCompile(c.target)}, SVD: lowrank.SVDOptions{Exact: true}}) {
			mods = append(mods, map[string]any{"module": r.Module, "rank": r.Rank})
		}
		dtype := map[string]string{"llama": "BF16"}[c.family]
		checks = append(checks, map[string]any{"check": "pissa", "family": c.family, "orig": src, "out": out, "dtype": dtype, "modules": mods,
			"task_type": taskTypes[c.family]})
	}
	// SORSA and SVFit on Conv1D (GPT-2) and bf16 Linear (Llama)
	for _, f := range []string{"gpt2", "llama"} {
		for _, method := range []string{"sorsa", "svfit"} {
			src := filepath.Join(dir, f)
			out := filepath.Join(work, f+"-"+method)
			var mods []map[string]any
			for _, r := range adapters(t, open(t, src), out, lowrank.AdapterOptions{Method: method, Rule: lowrank.RankRule{Rank: 4}}) {
				shape := r.Shape
				in, o := shape[1], shape[0]
				if r.Kind == "conv1d" {
					in, o = shape[0], shape[1]
				}
				mods = append(mods, map[string]any{"module": r.Module, "kind": r.Kind, "in": in, "out": o})
			}
			checks = append(checks, map[string]any{"check": "svd_adapter", "family": f, "method": method, "orig": src, "out": out,
				"dtype": map[string]string{"llama": "BF16"}[f], "modules": mods})
		}
	}
	// data-aware methods on GPT-2's Conv1D modules
	gpt2 := filepath.Join(dir, "gpt2")
	m := open(t, gpt2)
	sf, err := stats.Open(filepath.Join(dir, "gpt2.stats.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer sf.Close()
	conv := []*regexp.Regexp{regexp.MustCompile(`^h\.\d+\.(attn\.c_attn|mlp\.c_fc|mlp\.c_proj)\.weight$`)}
	out := filepath.Join(work, "gpt2-whiten")
	var targets []map[string]any
	for _, r := range compress(t, m, out, lowrank.CompressOptions{Method: "whiten", Rule: lowrank.RankRule{Rank: 8}, Format: "dense",
		DType: tensors.F32, Stats: sf, Targets: conv, SVD: lowrank.SVDOptions{Exact: true}}) {
		targets = append(targets, map[string]any{"module": r.Module, "rank": r.Rank})
	}
	checks = append(checks, map[string]any{"check": "whiten", "family": "gpt2", "orig": gpt2, "out": out, "targets": targets,
		"calib": filepath.Join(dir, "gpt2.calib.safetensors")})
	ff, err := fisher.Open(filepath.Join(dir, "gpt2.fisher.safetensors")) // written by a plain PyTorch loop
	if err != nil {
		t.Fatal(err)
	}
	defer ff.Close()
	if !ff.Foreign {
		t.Error("the PyTorch loop's Fisher file is not read as foreign")
	}
	out = filepath.Join(work, "gpt2-fwsvd")
	targets = nil
	for _, r := range compress(t, m, out, lowrank.CompressOptions{Method: "fwsvd", Rule: lowrank.RankRule{Rank: 8}, Format: "dense",
		DType: tensors.F32, Fisher: ff, Targets: conv, SVD: lowrank.SVDOptions{Exact: true}}) {
		targets = append(targets, map[string]any{"module": r.Module, "rank": r.Rank})
	}
	checks = append(checks, map[string]any{"check": "fwsvd", "family": "gpt2", "orig": gpt2, "out": out, "targets": targets,
		"fisher": filepath.Join(dir, "gpt2.fisher.safetensors")})
	out = filepath.Join(work, "gpt2-regmean")
	plan := &merge.Plan{Method: "regmean", DType: "f32", Models: []merge.ModelInput{
		{Path: gpt2, Params: merge.Params{"stats": merge.Text(filepath.Join(dir, "gpt2.stats.safetensors"))}},
		{Path: filepath.Join(dir, "gpt2-b"), Params: merge.Params{"stats": merge.Text(filepath.Join(dir, "gpt2-b.stats.safetensors"))}}}}
	rep, err := merge.Execute(context.Background(), plan, out, checkpoint.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(rep.Notes, func(n string) bool { return strings.Contains(n, "alpha = 0.9") }) {
		t.Errorf("notes %q", rep.Notes)
	}
	checks = append(checks, map[string]any{"check": "regmean", "family": "gpt2", "out": out, "alpha": merge.DefaultRegMeanAlpha,
		"models":  []string{gpt2, filepath.Join(dir, "gpt2-b")},
		"stats":   []string{filepath.Join(dir, "gpt2.stats.safetensors"), filepath.Join(dir, "gpt2-b.stats.safetensors")},
		"modules": []string{"h.0.attn.c_attn", "h.0.attn.c_proj", "h.1.mlp.c_fc", "h.1.mlp.c_proj"}})
	check(t, py, checks)
}
