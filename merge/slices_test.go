package merge

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/wtool/wtool/fisher/nn"
	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/tensors"
)

const tinyLlamaConfig = `{
  "architectures": ["LlamaForCausalLM"],
  "model_type": "llama",
  "hidden_size": 8,
  "intermediate_size": 16,
  "num_attention_heads": 2,
  "num_key_value_heads": 1,
  "num_hidden_layers": %d,
  "vocab_size": 16,
  "max_position_embeddings": 64,
  "rms_norm_eps": 1e-05,
  "rope_theta": 10000.0,
  "tie_word_embeddings": false,
  "torch_dtype": "float32"
}
`

// tinyLlama writes a Llama checkpoint directory (hidden 8, 2 heads, 1 KV
// head) of random weights with its config.json.
func tinyLlama(t testing.TB, dir string, layers int, seed uint64, dt tensors.DType) {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 7))
	shapes := [][2]any{{"model.embed_tokens.weight", []int64{16, 8}}}
	for l := range layers {
		p := fmt.Sprintf("model.layers.%d.", l)
		shapes = append(shapes,
			[2]any{p + "input_layernorm.weight", []int64{8}},
			[2]any{p + "self_attn.q_proj.weight", []int64{8, 8}},
			[2]any{p + "self_attn.k_proj.weight", []int64{4, 8}},
			[2]any{p + "self_attn.v_proj.weight", []int64{4, 8}},
			[2]any{p + "self_attn.o_proj.weight", []int64{8, 8}},
			[2]any{p + "post_attention_layernorm.weight", []int64{8}},
			[2]any{p + "mlp.gate_proj.weight", []int64{16, 8}},
			[2]any{p + "mlp.up_proj.weight", []int64{16, 8}},
			[2]any{p + "mlp.down_proj.weight", []int64{8, 16}})
	}
	shapes = append(shapes, [2]any{"model.norm.weight", []int64{8}}, [2]any{"lm_head.weight", []int64{16, 8}})
	var entries []safetensors.Entry
	vals := map[string][]float32{}
	for _, s := range shapes {
		name, shape := s[0].(string), s[1].([]int64)
		n, _ := tensors.NumElements(shape)
		v := make([]float32, n)
		for i := range v {
			if strings.HasSuffix(name, "norm.weight") {
				v[i] = 1 + 0.1*float32(r.NormFloat64())
			} else {
				v[i] = 0.3 * float32(r.NormFloat64())
			}
		}
		vals[name] = v
		entries = append(entries, safetensors.Entry{Name: name, DType: dt, Shape: shape})
	}
	produce := func(_ context.Context, e safetensors.Entry) (*tensors.Tensor, func(), error) {
		x, err := tensors.FromFloat32(e.Name, e.DType, e.Shape, vals[e.Name])
		return x, nil, err
	}
	opts := checkpoint.WriteOptions{Files: map[string][]byte{"config.json": []byte(fmt.Sprintf(tinyLlamaConfig, layers))}}
	if _, err := checkpoint.Write(context.Background(), dir, entries, produce, opts); err != nil {
		t.Fatal(err)
	}
}

func rawTensor(t testing.TB, path, name string) []byte {
	t.Helper()
	m, err := checkpoint.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	x, err := m.Tensor(name)
	if err != nil {
		t.Fatal(err)
	}
	return slices.Clone(x.Data)
}

func numLayersOf(t testing.TB, dir string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		N int `json:"num_hidden_layers"`
	}
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c.N
}

func runConfig(t testing.TB, yaml, out string) *Report {
	t.Helper()
	p, err := ParseConfig([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Execute(context.Background(), p, out, checkpoint.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// TestPassthroughFrankenmerge: a passthrough of slices stacks the sources'
// layers, renumbered, byte for byte (bf16 in, bf16 out); embeddings come
// from the first slice's model, the final norm and head from the last's;
// config.json has the new layer count and the built-in engine runs it.
func TestPassthroughFrankenmerge(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	tinyLlama(t, a, 4, 1, tensors.BF16)
	tinyLlama(t, b, 4, 2, tensors.BF16)
	out := filepath.Join(dir, "out")
	runConfig(t, fmt.Sprintf(`slices:
  - sources:
      - model: %[1]s
        layer_range: [0, 3]
  - sources:
      - model: %[2]s
        layer_range: [1, 4]
  - sources:
      - model: %[1]s
        layer_range: [2, 4]
merge_method: passthrough
dtype: bfloat16
`, a, b), out)
	if n := numLayersOf(t, out); n != 8 {
		t.Fatalf("num_hidden_layers = %d, want 8", n)
	}
	// output layer -> (model, source layer)
	src := []struct {
		m string
		l int
	}{{a, 0}, {a, 1}, {a, 2}, {b, 1}, {b, 2}, {b, 3}, {a, 2}, {a, 3}}
	om, err := checkpoint.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	names := om.Names()
	om.Close()
	if len(names) != 1+8*9+2 {
		t.Fatalf("%d tensors, want %d", len(names), 1+8*9+2)
	}
	for _, name := range names {
		from, srcName := a, name
		if l := LayerOf(name); l >= 0 {
			from, srcName = src[l].m, renumberLayer(name, src[l].l)
		}
		if !bytes.Equal(rawTensor(t, out, name), rawTensor(t, from, srcName)) {
			t.Errorf("%s differs from %s of %s", name, srcName, from)
		}
	}
	// the output loads with 8 layers and runs; stacking a's own halves
	// gives a's logits exactly
	net, err := nn.LoadPath(out)
	if err != nil {
		t.Fatalf("the frankenmerge does not load: %v", err)
	}
	d, err := nn.NewTokens([]int32{1, 5, 9, 3, 2, 11, 4, 7}, 2, 4)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := nn.Forward(context.Background(), net, d, 0, 2); err != nil {
		t.Fatal(err)
	}
	halves := filepath.Join(dir, "halves")
	runConfig(t, fmt.Sprintf("slices:\n  - sources: [{model: %[1]s, layer_range: [0, 2]}]\n  - sources: [{model: %[1]s, layer_range: [2, 4]}]\nmerge_method: passthrough\n", a), halves)
	logits := func(path string) []float32 {
		n, err := nn.LoadPath(path)
		if err != nil {
			t.Fatal(err)
		}
		l, _, _, err := nn.Forward(context.Background(), n, d, 0, 2)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	if !slices.Equal(logits(halves), logits(a)) {
		t.Error("a's two halves stacked do not give a's logits")
	}
}

// TestSlicesParameters: per-slice parameters and gradients over each
// slice's layers (t = i/(n-1) within the slice), a source's scale, and
// sources at different offsets, against the formulas.
func TestSlicesParameters(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	tinyLlama(t, a, 6, 3, tensors.F32)
	tinyLlama(t, b, 6, 4, tensors.F32)
	out := filepath.Join(dir, "out")
	runConfig(t, fmt.Sprintf(`slices:
  - sources:
      - {model: %[1]s, layer_range: [0, 3]}
      - {model: %[2]s, layer_range: [3, 6]}
    parameters:
      t: [0, 1]
  - sources:
      - {model: %[1]s, layer_range: [4, 6]}
      - {model: %[2]s, layer_range: [0, 2]}
merge_method: slerp
base_model: %[1]s
parameters:
  t:
    - filter: mlp
      value: 0.25
    - value: 0.75
`, a, b), out)
	if n := numLayersOf(t, out); n != 5 {
		t.Fatalf("num_hidden_layers = %d, want 5", n)
	}
	check := func(outName, aName, bName string, tt float64) {
		t.Helper()
		x, y := read(t, a, aName), read(t, b, bName)
		want := make([]float32, len(x))
		if err := Slerp(want, x, y, tt); err != nil {
			t.Fatal(err)
		}
		got := read(t, out, outName)
		for i := range got {
			if math.Abs(float64(got[i]-want[i])) > 1e-6 {
				t.Fatalf("%s[%d] = %g, want %g (slerp of %s and %s at t=%g)", outName, i, got[i], want[i], aName, bName, tt)
			}
		}
	}
	// slice 1: t = 0, 0.5, 1 over its three layers (the slice's gradient
	// wins over the global conditions); a's layer l with b's layer 3+l
	for l, tt := range []float64{0, 0.5, 1} {
		for _, s := range []string{"mlp.up_proj", "self_attn.q_proj"} {
			check(fmt.Sprintf("model.layers.%d.%s.weight", l, s), fmt.Sprintf("model.layers.%d.%s.weight", l, s), fmt.Sprintf("model.layers.%d.%s.weight", 3+l, s), tt)
		}
	}
	// slice 2: the global conditions; a's layer 4+l with b's layer l
	for l := range 2 {
		check(fmt.Sprintf("model.layers.%d.mlp.up_proj.weight", 3+l), fmt.Sprintf("model.layers.%d.mlp.up_proj.weight", 4+l), fmt.Sprintf("model.layers.%d.mlp.up_proj.weight", l), 0.25)
		check(fmt.Sprintf("model.layers.%d.self_attn.o_proj.weight", 3+l), fmt.Sprintf("model.layers.%d.self_attn.o_proj.weight", 4+l), fmt.Sprintf("model.layers.%d.self_attn.o_proj.weight", l), 0.75)
	}
	// embeddings from the first slice at t = 0, the head from the last
	// slice (global conditions: 0.75)
	check("model.embed_tokens.weight", "model.embed_tokens.weight", "model.embed_tokens.weight", 0)
	check("lm_head.weight", "lm_head.weight", "lm_head.weight", 0.75)

	// a source's scale
	scaled := filepath.Join(dir, "scaled")
	runConfig(t, fmt.Sprintf("slices:\n  - sources: [{model: %s, layer_range: [1, 2], parameters: {scale: 0.5}}]\nmerge_method: passthrough\n", b), scaled)
	x, y := read(t, b, "model.layers.1.mlp.down_proj.weight"), read(t, scaled, "model.layers.0.mlp.down_proj.weight")
	for i := range x {
		if y[i] != 0.5*x[i] {
			t.Fatalf("scale 0.5: %g, want %g", y[i], 0.5*x[i])
		}
	}
}

func TestSlicesRefusals(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a")
	tinyLlama(t, a, 2, 1, tensors.F32)
	for yaml, want := range map[string]string{
		"slices:\n  - sources: [{model: A, layer_range: [0, 3]}]\nmerge_method: passthrough\n":                                       "has no layer 2",
		"slices:\n  - sources: [{model: A, layer_range: [0, 1]}, {model: A, layer_range: [0, 2]}]\nmerge_method: linear\n":           "must have the same number of layers",
		"slices:\n  - sources: [{model: A, layer_range: [0, 1]}, {model: A, layer_range: [1, 2]}]\nmerge_method: passthrough\n":      "passthrough",
		"slices:\n  - sources: [{model: A, layer_range: [0, 1], parameters: {t: 0.5}}]\nmerge_method: passthrough\n":                 `unsupported parameter "t"`,
		"slices:\n  - sources: [{model: A, layer_range: [0, 1]}]\n    base_model: other\nmerge_method: passthrough\n":                "not one of its sources",
		"slices:\n  - sources: [{model: A, layer_range: [0, 1]}]\n    parameters: {weight: 1, normalize: 3}\nmerge_method: linear\n": "",
	} {
		yaml = strings.ReplaceAll(yaml, "A", a)
		p, err := ParseConfig([]byte(yaml))
		if err == nil {
			_, err = Execute(context.Background(), p, filepath.Join(dir, "out"), checkpoint.WriteOptions{})
			os.RemoveAll(filepath.Join(dir, "out"))
		}
		switch {
		case want == "" && err != nil:
			t.Errorf("%q: %v", yaml, err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
			t.Errorf("%q: %v, want %q", yaml, err, want)
		}
	}
}

func runPlan(t testing.TB, p *Plan, out string) *Report {
	t.Helper()
	rep, err := Execute(context.Background(), p, out, checkpoint.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return rep
}
