package merge

import (
	"context"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/wtool/wtool/fisher/nn"
	"github.com/wtool/wtool/internal/testenv"
	"github.com/wtool/wtool/io/arch"
	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/permute"
)

// the transformer families of testdata/families that PLeaS merges end to end
var pleasFamilies = []string{"vit", "bert", "gpt2", "phi3", "mixtral", "qwen2", "gemma", "llama"}

// familyConfig is what a merged config.json says about the widths.
type familyConfig struct {
	Inter    *int           `json:"intermediate_size"`
	NInner   *int           `json:"n_inner"`
	Heads    int            `json:"num_attention_heads"`
	NHead    int            `json:"n_head"`
	KV       int            `json:"num_key_value_heads"`
	HeadDim  int            `json:"head_dim"`
	Merge    map[string]any `json:"wtool_merge"`
	raw      map[string]any
	inner    int // intermediate_size or n_inner (0: none)
	attHeads int // num_attention_heads or n_head
}

func readFamilyConfig(t *testing.T, dir string) familyConfig {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var c familyConfig
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &c.raw); err != nil {
		t.Fatal(err)
	}
	if c.Inter != nil {
		c.inner = *c.Inter
	} else if c.NInner != nil {
		c.inner = *c.NInner
	}
	c.attHeads = max(c.Heads, c.NHead)
	return c
}

// paramCount counts a checkpoint's floating-point parameters (buffers
// included: the families' buffers do not change with widths).
func paramCount(t *testing.T, dir string) float64 {
	t.Helper()
	m, err := checkpoint.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var n float64
	for _, name := range m.Names() {
		info, _ := m.Info(name)
		if !info.DType.IsFloat() {
			continue
		}
		v := 1.0
		for _, s := range info.Shape {
			v *= float64(s)
		}
		n += v
	}
	return n
}

// maxRel is max |x - y| / max |y|.
func maxRel(x []float32, y []float64) float64 {
	var num, den float64
	for i := range y {
		num = max(num, math.Abs(float64(x[i])-y[i]))
		den = max(den, math.Abs(y[i]))
	}
	return num / den
}

func maxRel64(x, y []float64) float64 {
	var num, den float64
	for i := range y {
		num = max(num, math.Abs(x[i]-y[i]))
		den = max(den, math.Abs(y[i]))
	}
	return num / den
}

// TestPLeaSFamiliesPyTorch merges testdata/families' tiny transformers
// (ViT, BERT, GPT-2, Phi-3, Mixtral, Qwen2, Gemma, Llama) with `--method
// pleas` (Execute, statistics computed on 32 calibration inputs) and runs
// every merged checkpoint twice: in wtool's engine (fisher/nn) and in
// families.py's PyTorch modules built from the config.json the merge wrote,
// loaded strictly (a config.json whose widths are not the weights' fails
// to load). Merges:
//
//   - the model with a copy of itself under a random permutation of every
//     group, at width 1 and 1.5: activation matching finds the permutation
//     and the merge is the model again (its outputs, in both engines, to
//     1e-4 of the largest; the width 1.5 merge keeps half the units twice,
//     and the refit shares their outputs), where the naive average of the
//     two differs by more than 1e-2 (the control);
//   - two differently seeded models at width 1 and 1.5 and under a
//     parameter budget of 1.3: the merged model loads in PyTorch from its
//     config.json (one intermediate_size, one head count: a budget ties
//     the widths of every layer), PyTorch's outputs equal the engine's, the
//     MLPs are wider at width 1.5 (and for the Llama family the heads),
//     ViT, BERT and GPT-2 keep their head count (their model classes derive
//     the head size from it), and the budget is kept.
func TestPLeaSFamiliesPyTorch(t *testing.T) {
	if testing.Short() {
		t.Skip("runs PyTorch on 8 families")
	}
	py := testenv.Python(t)
	dir := t.TempDir()
	script := "testdata/pleas_families.py"
	if out, err := exec.Command(py, append([]string{"-B", script, "gen", dir}, pleasFamilies...)...).CombinedOutput(); err != nil {
		t.Fatalf("pleas_families.py gen: %v\n%s", err, out)
	}
	ctx := context.Background()
	type merged struct {
		family, name string
		self         bool    // a merge of the model with its permuted copy
		budget       float64 // a parameter budget
		width        float64
		goLogits     []float32
	}
	var all []*merged
	srcLogits := map[string][]float32{}
	for fi, f := range pleasFamilies {
		a := filepath.Join(dir, f)
		m, err := checkpoint.Open(a)
		if err != nil {
			t.Fatal(err)
		}
		ar, err := arch.Open(m)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		as, err := permute.BuildSpec(ar)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		rng := rand.New(rand.NewPCG(uint64(fi), 13))
		p := permute.RandomPerms(rng, as.Spec)
		for slices.ContainsFunc(as.Spec.GroupNames(), func(g string) bool { return as.Spec.Groups[g] > 1 && slices.IsSorted(p[g]) }) {
			p = permute.RandomPerms(rng, as.Spec)
		}
		if _, err := permute.ApplyCheckpoint(ctx, m, as.Spec, p, a+"-perm", checkpoint.WriteOptions{}); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		m.Close()
		data, err := nn.OpenData(a+".data.safetensors", "", "")
		if err != nil {
			t.Fatal(err)
		}
		run := func(path string) []float32 {
			t.Helper()
			net, err := nn.LoadPath(path)
			if err != nil {
				t.Fatalf("%s does not load in wtool's engine: %v", path, err)
			}
			y, _, _, err := nn.Forward(ctx, net, data, 0, data.N)
			if err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			return y
		}
		srcLogits[f] = run(a)
		// the control: the naive average with the permuted copy is not the model
		naive := filepath.Join(dir, f+"-naive")
		if _, err := Execute(ctx, &Plan{Method: "linear", Models: []ModelInput{{Path: a}, {Path: a + "-perm"}}}, naive, checkpoint.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
		if e := maxRel(run(naive), toF64(srcLogits[f])); e < 1e-2 {
			t.Errorf("%s: the naive average with the permuted copy differs from the model by only %.3g: the permutation check is vacuous", f, e)
		} else {
			t.Logf("%-8s naive average with the permuted copy: %.2g from the model", f, e)
		}
		src := readFamilyConfig(t, a)
		calib := Text(a + ".data.safetensors")
		for _, tc := range []merged{
			{name: "self-w1", self: true, width: 1},
			{name: "self-w1.5", self: true, width: 1.5},
			{name: "pair-w1", width: 1},
			{name: "pair-w1.5", width: 1.5},
			{name: "pair-params1.3", budget: 1.3},
		} {
			tc.family = f
			second := a + "-b"
			if tc.self {
				second = a + "-perm"
			}
			params := Params{"calib": calib}
			if tc.budget > 0 {
				params["budget"], params["budget_kind"] = Num(tc.budget), Text("params")
			} else {
				params["width"] = Num(tc.width)
			}
			plan := &Plan{Method: "pleas", Models: []ModelInput{{Path: a}, {Path: second}}, Params: params}
			out := filepath.Join(dir, f+"-"+tc.name)
			if _, err := Execute(ctx, plan, out, checkpoint.WriteOptions{}); err != nil {
				t.Fatalf("%s %s: %v", f, tc.name, err)
			}
			c := readFamilyConfig(t, out)
			for k := range c.raw {
				if strings.HasSuffix(k, "_per_layer") {
					t.Errorf("%s %s: config.json has %s: transformers cannot load it", f, tc.name, k)
				}
			}
			if tc.width == 1.5 && c.inner <= src.inner && src.inner > 0 {
				t.Errorf("%s %s: intermediate size %d, the source's %d: not widened", f, tc.name, c.inner, src.inner)
			}
			switch f {
			case "vit", "bert", "gpt2":
				if c.attHeads != src.attHeads {
					t.Errorf("%s %s: %d heads, the source %d: its model class derives the head size from the head count", f, tc.name, c.attHeads, src.attHeads)
				}
			case "phi3", "qwen2", "llama", "mixtral":
				if tc.width == 1.5 && c.attHeads <= src.attHeads {
					t.Errorf("%s %s: %d heads, the source %d: not widened", f, tc.name, c.attHeads, src.attHeads)
				}
			}
			if tc.budget > 0 {
				r := paramCount(t, out) / paramCount(t, a)
				t.Logf("%s %s: %.4f times the parameters (intermediate size %d, %d heads)", f, tc.name, r, c.inner, c.attHeads)
				if r > tc.budget+1e-9 || r < 1 {
					t.Errorf("%s %s: %.4f times the source's parameters, budget %g", f, tc.name, r, tc.budget)
				}
			}
			tc.goLogits = run(out)
			all = append(all, &tc)
		}
		data.Close()
	}
	// PyTorch: the sources and every merge, from their config.json
	names := slices.Clone(pleasFamilies)
	for _, m := range all {
		names = append(names, m.family+"-"+m.name)
	}
	if out, err := exec.Command(py, append([]string{"-B", script, "forward", dir}, names...)...).CombinedOutput(); err != nil {
		t.Fatalf("pleas_families.py forward: %v\n%s", err, out)
	}
	torch := func(name string) []float64 {
		t.Helper()
		v, _ := readLogits(t, filepath.Join(dir, name+".logits.safetensors"))
		return v
	}
	for _, m := range all {
		ref := torch(m.family + "-" + m.name)
		if len(ref) != len(m.goLogits) {
			t.Errorf("%s %s: %d outputs in PyTorch, %d in wtool", m.family, m.name, len(ref), len(m.goLogits))
			continue
		}
		e := maxRel(m.goLogits, ref)
		line := []any{m.family, m.name, e}
		if e > 1e-4 {
			t.Errorf("%s %s: wtool's outputs differ from PyTorch's by %.3g of the largest", m.family, m.name, e)
		}
		if m.self {
			st, sg := maxRel64(ref, torch(m.family)), maxRel(m.goLogits, toF64(srcLogits[m.family]))
			line = append(line, st, sg)
			if st > 1e-4 || sg > 1e-4 {
				t.Errorf("%s %s: the merge of a model with its permuted copy differs from the model by %.3g (PyTorch), %.3g (wtool)", m.family, m.name, st, sg)
			}
			t.Logf("%-8s %-15s wtool vs PyTorch %.2g; vs the source: PyTorch %.2g, wtool %.2g", line...)
		} else {
			t.Logf("%-8s %-15s wtool vs PyTorch %.2g", line...)
		}
	}
}

func toF64(x []float32) []float64 {
	out := make([]float64, len(x))
	for i, v := range x {
		out[i] = float64(v)
	}
	return out
}

// readLogits reads the "logits" tensor of a safetensors file in float64.
func readLogits(t *testing.T, path string) ([]float64, []int64) {
	t.Helper()
	m, err := checkpoint.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	tt, err := m.Tensor("logits")
	if err != nil {
		t.Fatal(err)
	}
	v, err := tt.Float64()
	if err != nil {
		t.Fatal(err)
	}
	return v, tt.Shape
}
