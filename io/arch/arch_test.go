package arch

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/tensors"
)

// gpt2Shapes are the tensors of a GPT-2 checkpoint as the released files
// name them (no "transformer." prefix), with hidden size d and n layers.
func gpt2Shapes(d, n int, prefix string) map[string][]int64 {
	s := map[string][]int64{prefix + "wte.weight": {50, int64(d)}, prefix + "wpe.weight": {16, int64(d)},
		prefix + "ln_f.weight": {int64(d)}, prefix + "ln_f.bias": {int64(d)}}
	for l := range n {
		p := fmt.Sprintf("%sh.%d.", prefix, l)
		for k, v := range map[string][]int64{
			"ln_1.weight": {int64(d)}, "ln_1.bias": {int64(d)}, "ln_2.weight": {int64(d)}, "ln_2.bias": {int64(d)},
			"attn.c_attn.weight": {int64(d), int64(3 * d)}, "attn.c_attn.bias": {int64(3 * d)},
			"attn.c_proj.weight": {int64(d), int64(d)}, "attn.c_proj.bias": {int64(d)},
			"mlp.c_fc.weight": {int64(d), int64(4 * d)}, "mlp.c_fc.bias": {int64(4 * d)},
			"mlp.c_proj.weight": {int64(4 * d), int64(d)}, "mlp.c_proj.bias": {int64(d)},
			"attn.bias": {1, 1, 16, 16}, "attn.masked_bias": {},
		} {
			s[p+k] = v
		}
	}
	return s
}

func llamaShapes(root string, tied bool) map[string][]int64 {
	s := map[string][]int64{root + "embed_tokens.weight": {100, 64}, root + "norm.weight": {64}}
	if !tied {
		s["lm_head.weight"] = []int64{100, 64}
	}
	for l := range 2 {
		p := fmt.Sprintf("%slayers.%d.", root, l)
		for k, v := range map[string][]int64{
			"input_layernorm.weight": {64}, "post_attention_layernorm.weight": {64},
			"self_attn.q_proj.weight": {64, 64}, "self_attn.k_proj.weight": {32, 64}, "self_attn.v_proj.weight": {32, 64},
			"self_attn.o_proj.weight": {64, 64}, "mlp.gate_proj.weight": {96, 64}, "mlp.up_proj.weight": {96, 64},
			"mlp.down_proj.weight": {64, 96},
		} {
			s[p+k] = v
		}
	}
	return s
}

func config(t *testing.T, js string) *Config {
	t.Helper()
	c, err := ParseConfig([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestGPT2Conv1DOrientation(t *testing.T) {
	cfg := config(t, `{"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_head": 4}`)
	a, err := Describe(cfg, gpt2Shapes(32, 2, ""))
	if err != nil {
		t.Fatal(err)
	}
	if a.Family != "gpt2" || a.Layers != 2 || a.Hidden != 32 || a.Attention.Heads != 4 || a.Attention.HeadDim != 8 || a.Attention.Rotary {
		t.Fatalf("arch %+v %+v", a, a.Attention)
	}
	cases := []struct {
		module  string
		kind    Kind
		role    Role
		out, in int
		outS    string
	}{
		{"h.0.attn.c_attn", Conv1D, RoleAttnQKV, 96, 32, "layers.0.attn.qkv"},
		{"h.1.attn.c_proj", Conv1D, RoleAttnOut, 32, 32, "residual"},
		{"h.0.mlp.c_fc", Conv1D, RoleMLPUp, 128, 32, "layers.0.mlp.hidden"},
		{"h.0.mlp.c_proj", Conv1D, RoleMLPDown, 32, 128, "residual"},
		{"wte", Embedding, RoleEmbedding, 32, 50, "residual"},
		{"wpe", Embedding, RolePositionEmbedding, 32, 16, "residual"},
	}
	for _, c := range cases {
		m, ok := a.Module(c.module)
		if !ok || m.Kind != c.kind || m.Role != c.role || m.OutFeatures != c.out || m.InFeatures != c.in || m.Out != c.outS || !m.Transposed() {
			t.Errorf("%s: %+v", c.module, m)
		}
	}
	// the fused output is q|k|v, each a 4-head attention space
	qkv, _ := a.Space("layers.0.attn.qkv")
	if qkv.Kind != SpaceFused || !slices.Equal(qkv.Parts, []string{"layers.0.attn.q", "layers.0.attn.k", "layers.0.attn.v"}) || qkv.Size != 96 {
		t.Errorf("qkv space %+v", qkv)
	}
	if q, _ := a.Space("layers.0.attn.q"); q.Size != 32 || q.Heads != 4 || q.HeadDim != 8 {
		t.Errorf("q space %+v", q)
	}
	// the causal-mask buffer named attn.bias is no module's bias
	if p, _ := a.Param("h.0.attn.bias"); p.Module.Kind != Buffer || p.Module.Role != RoleBuffer {
		t.Errorf("h.0.attn.bias: %+v", p.Module)
	}
	// the tied head is recorded, not stored
	if len(a.Ties) != 1 || a.Ties[0] != (Tie{Module: "lm_head", To: "wte"}) {
		t.Errorf("ties %+v", a.Ties)
	}
	// default targets: the four Conv1D per layer, no embedding
	var names []string
	for _, m := range a.DefaultTargets() {
		names = append(names, m.Name)
	}
	if want := "h.0.attn.c_attn h.0.attn.c_proj h.0.mlp.c_fc h.0.mlp.c_proj h.1.attn.c_attn h.1.attn.c_proj h.1.mlp.c_fc h.1.mlp.c_proj"; strings.Join(names, " ") != want {
		t.Errorf("default targets %v", names)
	}
	// PEFT paths of GPT2LMHeadModel include its base model's attribute
	if p := a.PEFTModule("h.0.attn.c_attn"); p != "transformer.h.0.attn.c_attn" {
		t.Errorf("PEFT path %q", p)
	}
	if a.TaskType() != "CAUSAL_LM" {
		t.Errorf("task type %q", a.TaskType())
	}
	// readers and writers of the residual stream
	var w []string
	for _, m := range a.Writers("layers.0.attn.k") {
		w = append(w, m.Name)
	}
	if strings.Join(w, ",") != "h.0.attn.c_attn" {
		t.Errorf("writers of layers.0.attn.k: %v", w)
	}
}

func TestPEFTPaths(t *testing.T) {
	cases := []struct {
		cfg, module, want string
		shapes            map[string][]int64
	}{
		{`{"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}`, "transformer.h.0.mlp.c_fc", "transformer.h.0.mlp.c_fc", gpt2Shapes(8, 1, "transformer.")},
		{`{"model_type": "gpt2", "architectures": ["GPT2Model"]}`, "h.0.mlp.c_fc", "h.0.mlp.c_fc", gpt2Shapes(8, 1, "")},
		{`{"model_type": "gpt2", "architectures": ["GPT2Model"]}`, "transformer.h.0.mlp.c_fc", "h.0.mlp.c_fc", gpt2Shapes(8, 1, "transformer.")},
		{`{"model_type": "llama", "architectures": ["LlamaForCausalLM"]}`, "model.layers.0.mlp.up_proj", "model.layers.0.mlp.up_proj", llamaShapes("model.", false)},
		{`{"model_type": "llama", "architectures": ["LlamaForCausalLM"]}`, "lm_head", "lm_head", llamaShapes("model.", false)},
		{`{"model_type": "llama", "architectures": ["LlamaForCausalLM"]}`, "layers.1.mlp.up_proj", "model.layers.1.mlp.up_proj", llamaShapes("", true)},
		{`{"model_type": "llama", "architectures": ["LlamaModel"]}`, "model.layers.0.self_attn.q_proj", "layers.0.self_attn.q_proj", llamaShapes("model.", true)},
	}
	for _, c := range cases {
		a, err := Describe(config(t, c.cfg), c.shapes)
		if err != nil {
			t.Fatal(err)
		}
		if got := a.PEFTModule(c.module); got != c.want {
			t.Errorf("%s %s: PEFT path %q, want %q", c.cfg, c.module, got, c.want)
		}
	}
}

func TestDetection(t *testing.T) {
	cases := []struct {
		name, cfg, family string
		shapes            map[string][]int64
		note              string // a substring of the notes
	}{
		{"llama by config", `{"model_type": "llama"}`, "llama", llamaShapes("model.", false), "config.json model_type"},
		{"qwen2 by config", `{"model_type": "qwen2", "tie_word_embeddings": true}`, "qwen2", llamaShapes("model.", true), ""},
		{"mistral by class", `{"architectures": ["MistralForCausalLM"]}`, "mistral", llamaShapes("model.", false), ""},
		{"llama layout without config", "", "llama", llamaShapes("model.", false), "recognised from the tensor names"},
		{"unknown model_type, llama names", `{"model_type": "mystery"}`, "llama", llamaShapes("model.", false), `"mystery" (architectures []) is not a known family`},
		{"gpt2 without config", "", "gpt2", gpt2Shapes(8, 1, ""), "recognised from the tensor names"},
		{"nothing known", "", "generic", map[string][]int64{"encoder.proj.weight": {4, 8}, "encoder.proj.bias": {4}, "head.weight": {2, 4}}, "generic description"},
	}
	for _, c := range cases {
		var cfg *Config
		if c.cfg != "" {
			cfg = config(t, c.cfg)
		}
		a, err := Describe(cfg, c.shapes)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if a.Family != c.family || !strings.Contains(strings.Join(a.Notes, "\n"), c.note) {
			t.Errorf("%s: family %s, notes %q", c.name, a.Family, a.Notes)
		}
	}
}

func TestGenericIsConservative(t *testing.T) {
	// a GPT-2 layer without its family: the Conv1D weight [in, out] looks
	// like a Linear [out, in] but its bias has the other size, so it is not
	// taken for a Linear
	shapes := map[string][]int64{"blk.c_attn.weight": {8, 24}, "blk.c_attn.bias": {24}, "blk.fc.weight": {16, 8}, "blk.fc.bias": {16},
		"blk.norm.weight": {8}, "tok_embeddings.weight": {50, 8}, "lm_head.weight": {50, 8}, "blk.scale": {8}}
	a, err := Describe(nil, shapes)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]Kind{}
	for _, m := range a.Modules {
		kinds[m.Name] = m.Kind
	}
	want := map[string]Kind{"blk.c_attn.weight": Bare, "blk.c_attn.bias": Bare, "blk.fc": Linear, "blk.norm": RMSNorm,
		"tok_embeddings": Embedding, "lm_head": Linear, "blk.scale": Bare}
	if fmt.Sprint(kinds) != fmt.Sprint(want) {
		t.Errorf("kinds %v\nwant  %v", kinds, want)
	}
	var targets []string
	for _, m := range a.DefaultTargets() {
		targets = append(targets, m.Name)
	}
	if strings.Join(targets, ",") != "blk.fc" {
		t.Errorf("default targets %v", targets)
	}
}

func TestInconsistentShapes(t *testing.T) {
	s := llamaShapes("model.", false)
	s["model.layers.1.mlp.down_proj.weight"] = []int64{64, 80} // the MLP's hidden units disagree
	_, err := Describe(config(t, `{"model_type": "llama"}`), s)
	if err == nil || !strings.Contains(err.Error(), "model.layers.1.mlp.down_proj.weight") {
		t.Errorf("error %v", err)
	}
	s = llamaShapes("model.", false)
	_, err = Describe(config(t, `{"model_type": "llama", "num_attention_heads": 3}`), s)
	if err == nil || !strings.Contains(err.Error(), "not a multiple of 3 heads") {
		t.Errorf("error %v", err)
	}
	s = llamaShapes("model.", false)
	delete(s, "model.layers.0.mlp.up_proj.weight")
	_, err = Describe(config(t, `{"model_type": "llama"}`), s)
	if err == nil || !strings.Contains(err.Error(), `"model.layers.0.mlp.up_proj.weight" is missing`) {
		t.Errorf("error %v", err)
	}
}

func TestToMatrix(t *testing.T) {
	lin := &Module{Kind: Linear, OutFeatures: 2, InFeatures: 3}
	c1d := &Module{Kind: Conv1D, OutFeatures: 2, InFeatures: 3}
	// a Conv1D stores [in, out] = [3, 2]
	stored := []float32{1, 2, 3, 4, 5, 6}
	m, err := ToMatrix(c1d, stored)
	if err != nil || fmt.Sprint(m) != "[1 3 5 2 4 6]" {
		t.Errorf("Conv1D ToMatrix %v %v", m, err)
	}
	back, _ := FromMatrix(c1d, m)
	if fmt.Sprint(back) != fmt.Sprint(stored) {
		t.Errorf("round trip %v", back)
	}
	if m, _ := ToMatrix(lin, stored); &m[0] != &stored[0] {
		t.Error("a Linear's matrix is the stored slice itself")
	}
	if _, err := ToMatrix(lin, stored[:5]); err == nil {
		t.Error("wrong length accepted")
	}
	// a large transposition (blocked) is exact
	big := &Module{Kind: Embedding, OutFeatures: 70, InFeatures: 130}
	v := make([]float64, 70*130)
	for i := range v {
		v[i] = float64(i)
	}
	mt, _ := ToMatrix(big, v) // stored [130, 70]
	for r := range 70 {
		for c := range 130 {
			if mt[r*130+c] != v[c*70+r] {
				t.Fatalf("(%d, %d)", r, c)
			}
		}
	}
	// Matrix decodes and orients a tensor
	x, _ := tensors.FromFloat32("w", tensors.BF16, []int64{3, 2}, stored)
	c1d.Params = []*Param{{Name: "weight", Shape: []int64{3, 2}}}
	got, r, c, err := c1d.Matrix(x)
	if err != nil || r != 2 || c != 3 || fmt.Sprint(got) != "[1 3 5 2 4 6]" {
		t.Errorf("Matrix %v %d %d %v", got, r, c, err)
	}
}

func TestRegisteredFamilies(t *testing.T) {
	want := "bert gemma gpt2 llama mistral mixtral mlp phi3 qwen2 resnet vit"
	if got := strings.Join(Families(), " "); got != want {
		t.Errorf("families %s", got)
	}
}

// TestRealFiles: every valid third-party file of the shared fixtures is
// described (generically: they come without a config.json), every tensor
// once.
func TestRealFiles(t *testing.T) {
	files, _ := filepath.Glob("../../../shared/fixtures/real/*.safetensors")
	if len(files) == 0 {
		t.Skip("no fixtures")
	}
	n := 0
	for _, f := range files {
		m, err := checkpoint.Open(f)
		if err != nil {
			continue // the malformed ones are the parser's business
		}
		a, err := Open(m)
		if err != nil {
			t.Errorf("%s: %v", f, err)
		} else {
			for _, name := range m.Names() {
				if _, ok := a.Param(name); !ok {
					t.Errorf("%s: tensor %q not described", f, name)
				}
			}
			n++
		}
		m.Close()
	}
	t.Logf("%d files described", n)
}
