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
		"modules.yml":          "per-module merges (modules:) are not supported yet",
		"tokenizer-source.yml": "merging a LoRA adapter into a model (model+lora) is not supported yet",
		// the tiny models have no tokenizer.json (TestTokenizerUnion merges
		// models that have; this configuration's token_id 1234 needs a
		// vocabulary of over 1234 tokens)
		"tokenizer-union.yml": "has no tokenizer.json",
	}
	layers := map[string]int{"orcamini-platy-44layer.yml": 44}

	work := t.TempDir()
	cache := filepath.Join(work, "hub")
	t.Setenv("HF_HUB_CACHE", cache)
	var models []string
	for i := range 4 {
		m := filepath.Join(work, fmt.Sprintf("tiny%d", i))
		tinyLlama(t, m, 40, uint64(10+i), tensors.BF16)
		models = append(models, m)
	}
	local := filepath.Join(work, "local")
	if err := os.Mkdir(local, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Chdir(local) // configurations' local paths (model_a, ...) are relative
	placed := map[string]bool{}
	place := func(ref mkconfig.ModelRef) {
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
