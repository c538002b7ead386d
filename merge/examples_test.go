package merge

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/io/peft"
	"github.com/wtool/wtool/merge/mkconfig"
	"github.com/wtool/wtool/tensors"
)

// TestExampleConfigs runs wtool's copies of mergekit's example
// configurations (testdata/mergekit/configs) unchanged, on tiny 40-layer
// Llamas cached under the Hub names they use (a fake Hugging Face cache)
// or in local directories of the names they give. A configuration whose
// method is not registered must be refused for its method only; one using
// what wtool does not do yet, for that feature.
func TestExampleConfigs(t *testing.T) {
	dir, err := filepath.Abs("../testdata/mergekit/configs")
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.yml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no configurations in %s: %v", dir, err)
	}
	// what each configuration must do: "" runs; otherwise the refusal
	refused := map[string]string{
		"modules.yml": `LlamaForCausalLM has no module "text_decoder" (its one module is "default")`,
		// the tiny models share one 8-token tokenizer, without the tokens
		// this configuration takes from chatml_model: refused for the first
		// (TestTokenizerUnion merges differing vocabularies)
		"tokenizer-union.yml": `token "<|im_start|>": configured source chatml_model does not have it`,
		// density 0.1 keeps int(0.1 * 8) = 0 entries of the tiny models'
		// 8-element norms at the last layers: mergekit refuses that too
		"ties.yml": "keeps no entry",
	}
	layers := map[string]int{"orcamini-platy-44layer.yml": 44, "della-slices.yml": 32}

	work := t.TempDir()
	cache := filepath.Join(work, "hub")
	t.Setenv("HF_HUB_CACHE", cache)
	var models []string
	for i := range 4 {
		m := filepath.Join(work, fmt.Sprintf("tiny%d", i))
		tinyLlama(t, m, 40, uint64(10+i), tensors.BF16)
		for _, f := range []string{"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"} {
			b, err := os.ReadFile(filepath.Join("vocab", "testdata", "base", f))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(m, f), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		models = append(models, m)
	}
	local := filepath.Join(work, "local")
	if err := os.Mkdir(local, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Chdir(local) // configurations' local paths (model_a, ...) are relative
	placed := map[string]bool{}
	// a LoRA adapter of q_proj in layer 0 of the tiny Llamas
	adapter := filepath.Join(work, "adapter")
	{
		ad := &peft.Adapter{Config: peft.NewConfig(1, 1, []string{"q_proj"}), Modules: map[string]*peft.Module{}}
		ka, kb := peft.KeysFor("model.layers.0.self_attn.q_proj", false)
		a, _ := tensors.FromFloat32(ka, tensors.F32, []int64{1, 8}, make([]float32, 8))
		b, _ := tensors.FromFloat32(kb, tensors.F32, []int64{8, 1}, []float32{1, 2, 3, 4, 5, 6, 7, 8})
		ad.Modules["model.layers.0.self_attn.q_proj"] = &peft.Module{Name: "model.layers.0.self_attn.q_proj", A: a, B: b}
		if err := peft.Write(context.Background(), adapter, ad, false); err != nil {
			t.Fatal(err)
		}
	}
	place := func(ref mkconfig.ModelRef) {
		if ref.LoRA != nil && !placed[ref.LoRA.Path] {
			placed[ref.LoRA.Path] = true
			cacheModel(t, cache, ref.LoRA.Path, adapter)
		}
		name := ref.Model.Path
		if placed[name] {
			return
		}
		placed[name] = true
		src := models[len(placed)%len(models)]
		if strings.Contains(name, "/") {
			cacheModel(t, cache, name, src)
		} else if err := os.Symlink(src, filepath.Join(local, name)); err != nil {
			t.Fatal(err)
		}
	}
	stageNames := regexp.MustCompile(`(?m)^name: (\S+)`)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			text, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			multi, err := mkconfig.ParseMulti(text, configKeys())
			if err != nil {
				t.Fatal(err)
			}
			stages := map[string]bool{}
			for _, m := range stageNames.FindAllStringSubmatch(string(text), -1) {
				stages[m[1]] = true
			}
			for _, c := range multi.Stages {
				for _, r := range c.ReferencedModels() {
					if !stages[r.Model.Path] {
						place(r)
					}
				}
			}
			out := filepath.Join(work, "out", strings.TrimSuffix(filepath.Base(f), ".yml"))
			st, err := ReadStages(f, StagesOptions{ConfigOptions: ConfigOptions{Resolve: ResolveLocal}, Out: out})
			want := refused[filepath.Base(f)]
			if err == nil {
				for _, s := range st {
					if _, lerr := Lookup(s.Plan.Method); lerr != nil {
						err = lerr
					}
				}
			}
			var missing bool
			for _, c := range multi.Stages {
				if _, lerr := Lookup(c.MergeMethod); lerr != nil {
					missing = true
					if err == nil || !strings.Contains(err.Error(), "unsupported merge method") {
						t.Fatalf("method %s is not registered, yet: %v", c.MergeMethod, err)
					}
				}
			}
			switch {
			case missing:
				t.Skipf("method not registered here: %v", err)
			case want != "":
				if err == nil {
					for _, s := range st {
						if _, err = Execute(context.Background(), s.Plan, s.Out, checkpoint.WriteOptions{}); err != nil {
							break
						}
					}
				}
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("%v, want a refusal: %q", err, want)
				}
				return
			case err != nil:
				t.Fatal(err)
			}
			for _, s := range st {
				if _, err := Execute(context.Background(), s.Plan, s.Out, checkpoint.WriteOptions{}); err != nil {
					t.Fatalf("stage %q: %v", s.Name, err)
				}
			}
			final := st[len(st)-1]
			if !final.Final {
				t.Fatal("the last stage to run is not the final one")
			}
			got, err := os.ReadFile(filepath.Join(out, "mergekit_config.yml"))
			if err != nil {
				t.Fatal(err)
			}
			if len(st) == 1 && string(got) != string(text) {
				t.Errorf("mergekit_config.yml is not the configuration's text:\n%s", got)
			}
			n := 40
			if l, ok := layers[filepath.Base(f)]; ok {
				n = l
			}
			if got := numLayersOf(t, out); got != n {
				t.Errorf("num_hidden_layers %d, want %d", got, n)
			}
			m, err := checkpoint.Open(out)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			maxLayer := -1
			for _, name := range m.Names() {
				maxLayer = max(maxLayer, LayerOf(name))
			}
			if maxLayer != n-1 || !slices.Contains(m.Names(), "lm_head.weight") {
				t.Errorf("layers up to %d, want %d", maxLayer, n-1)
			}
		})
	}
}
