package merge

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/wtool/wtool/io/hub"
	"github.com/wtool/wtool/tensors"
)

// TestMergekitConfigRoundTrip: the configuration written for a plan built
// in code reads back as the same plan.
func TestMergekitConfigRoundTrip(t *testing.T) {
	w := func(v float64) Value { return Num(v) }
	for _, p := range []*Plan{
		{Method: "ties", Base: "base", DType: "bfloat16", Params: Params{"lambda": w(0.9), "normalize": Flag(false)},
			Models: []ModelInput{{Path: "a", Params: Params{"weight": w(1), "density": Varying(Setting{Gradient: []float64{0.2, 0.8}})}},
				{Path: "b", Params: Params{"weight": Varying(Setting{Conds: []Cond{{Filter: "mlp", Value: Const(0.5)}, {Value: Const(0.25)}}})}}}},
		{Method: "linear", Params: Params{"weight": w(0.5)}, Models: []ModelInput{{Path: "a", Params: Params{}}, {Path: "b", Params: Params{}}}},
		{Method: "fisher", Params: Params{}, Models: []ModelInput{{Path: "a", Params: Params{"fisher": Text("fa")}}, {Path: "b", Params: Params{"fisher": Text("fb")}}}},
		{Method: "slerp", Base: "a", Params: Params{"t": w(0.3)},
			Slices: []Slice{{Base: "a", Sources: []SliceSource{{ModelInput{Path: "a", Params: Params{}}, [2]int{0, 4}}, {ModelInput{Path: "b", Params: Params{}}, [2]int{2, 6}}}, Params: Params{"t": Varying(Setting{Gradient: []float64{0, 1}})}}}},
	} {
		yml := MergekitConfig(p).YAML()
		q, err := ParseConfig(yml)
		if err != nil {
			t.Fatalf("%s: %v\n%s", p.Method, err, yml)
		}
		q.Source = nil
		want := *p
		if len(p.Slices) > 0 {
			want.Base = "" // slices carry their base
			want.Models = []ModelInput{{Path: "a", Params: Params{}}, {Path: "b", Params: Params{}}}
		}
		if !reflect.DeepEqual(q, &want) {
			t.Errorf("%s: read back %+v, want %+v\n%s", p.Method, q, &want, yml)
		}
	}
}

// TestMergekitFilesWritten: a merged directory gets mergekit_config.yml
// (the configuration's own text) and a model card naming the models.
func TestMergekitFilesWritten(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	tinyLlama(t, a, 2, 1, tensors.F32)
	tinyLlama(t, b, 2, 2, tensors.F32)
	yml := "# my merge\nmodels:\n  - model: " + a + "\n  - model: " + b + "\nmerge_method: linear\nparameters: {weight: 0.5}\n"
	out := filepath.Join(dir, "merged")
	runConfig(t, yml, out)
	got, err := os.ReadFile(filepath.Join(out, "mergekit_config.yml"))
	if err != nil || string(got) != yml {
		t.Errorf("mergekit_config.yml = %q (%v), want the configuration's text", got, err)
	}
	card, err := os.ReadFile(filepath.Join(out, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"# merged", "Linear", "* " + a, "* " + b, "tags:\n- mergekit"} {
		if !strings.Contains(string(card), want) {
			t.Errorf("README.md lacks %q:\n%s", want, card)
		}
	}
}

// fakeHub makes a Hugging Face cache holding org/name at refs/main, with a
// model directory's files linked in, and points HF_HUB_CACHE at it.
func fakeHub(t *testing.T, repo, modelDir string) string {
	t.Helper()
	cache := filepath.Join(t.TempDir(), "hub")
	t.Setenv("HF_HUB_CACHE", cache)
	return cacheModel(t, cache, repo, modelDir)
}

// cacheModel puts a model directory's files into a Hugging Face cache as
// repo's snapshot at refs/main.
func cacheModel(t *testing.T, cache, repo, modelDir string) string {
	t.Helper()
	rd := filepath.Join(cache, "models--"+strings.ReplaceAll(repo, "/", "--"))
	commit := strings.Repeat("ab", 20)
	snap := filepath.Join(rd, "snapshots", commit)
	if err := os.MkdirAll(snap, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(rd, "refs"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rd, "refs", "main"), []byte(commit), 0o644); err != nil {
		t.Fatal(err)
	}
	es, err := os.ReadDir(modelDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if err := os.Symlink(filepath.Join(modelDir, e.Name()), filepath.Join(snap, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	return snap
}

// TestHubIdsAndStages: Hub ids resolve in the local cache, an id that is
// not cached says so and how to fetch it, and stages run in dependency
// order reading each other's outputs.
func TestHubIdsAndStages(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	tinyLlama(t, a, 2, 1, tensors.F32)
	tinyLlama(t, b, 2, 2, tensors.F32)
	snap := fakeHub(t, "org/model-a", a)
	out := filepath.Join(dir, "final")
	cfg := "merge_method: linear\nmodels:\n  - model: first\n  - model: " + b + "\nparameters: {weight: 0.5}\n---\nname: first\nmerge_method: passthrough\nmodels: [{model: org/model-a, parameters: {scale: 2}}]\n"
	st, err := ParseStages([]byte(cfg), StagesOptions{ConfigOptions: ConfigOptions{Resolve: ResolveLocal}, Out: out})
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 2 || st[0].Name != "first" || st[1].Name != "" || !st[1].Final || st[0].Out != filepath.Join(out+".stages", "first") {
		t.Fatalf("stages %+v", st)
	}
	if st[0].Plan.Models[0].Path != snap {
		t.Errorf("org/model-a resolved to %s, want %s", st[0].Plan.Models[0].Path, snap)
	}
	if st[1].Plan.Models[0].Path != st[0].Out {
		t.Errorf("the final stage reads %s, want the first stage's output %s", st[1].Plan.Models[0].Path, st[0].Out)
	}
	for _, s := range st {
		runPlan(t, s.Plan, s.Out)
	}
	// final = (2 a + b) / 2
	name := "model.layers.1.mlp.up_proj.weight"
	x, y, z := read(t, a, name), read(t, b, name), read(t, out, name)
	for i := range z {
		if want := (2*x[i] + y[i]) / 2; abs32(z[i]-want) > 1e-6 {
			t.Fatalf("%s[%d] = %g, want %g", name, i, z[i], want)
		}
	}

	_, err = ParseStages([]byte("merge_method: linear\nmodels: [{model: org/not-cached}]\n"), StagesOptions{ConfigOptions: ConfigOptions{Resolve: ResolveLocal}, Out: out})
	var nc *hub.NotCachedError
	if !errors.As(err, &nc) || !strings.Contains(err.Error(), "huggingface-cli download org/not-cached") || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("an id not in the cache: %v", err)
	}
	_, err = ParseStages([]byte("merge_method: linear\nmodels: [{model: "+a+"+org/lora}]\n"), StagesOptions{ConfigOptions: ConfigOptions{Resolve: ResolveLocal}, Out: out})
	if err == nil || !strings.Contains(err.Error(), "LoRA") {
		t.Errorf("model+lora: %v", err)
	}
	_, err = ParseStages([]byte("name: x\nmerge_method: linear\nmodels: [{model: y}]\n---\nname: y\nmerge_method: linear\nmodels: [{model: x}]\n"), StagesOptions{Out: out})
	if err == nil || !strings.Contains(err.Error(), "cycle") {
		t.Errorf("a dependency cycle: %v", err)
	}
}

func abs32(x float32) float32 {
	if x < 0 {
		return -x
	}
	return x
}

// TestDefaultModule: modules: with the one module of a single-module
// architecture is its models (or slices), its parameters over the global
// ones.
func TestDefaultModule(t *testing.T) {
	p, err := ParseConfig([]byte("modules:\n  default:\n    models: [{model: a}, {model: b, parameters: {weight: 2}}]\n    parameters: {weight: 0.25}\nmerge_method: linear\nparameters: {weight: 1, normalize: false}\n"))
	if err != nil {
		t.Fatal(err)
	}
	w, _ := p.Params["weight"].Num.Constant()
	w1, _ := p.ModelValue(1, "weight").Num.Constant()
	if len(p.Models) != 2 || w != 0.25 || w1 != 2 || p.Global("normalize").Bool {
		t.Errorf("plan %+v", p)
	}
	if _, err := ParseConfig([]byte("modules:\n  text_decoder:\n    models: [{model: a}]\nmerge_method: linear\n")); err == nil || !strings.Contains(err.Error(), `module "text_decoder" is not supported`) || !strings.Contains(err.Error(), `the one module "default"`) {
		t.Errorf("a named module: %v", err)
	}
}
