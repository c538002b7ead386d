package permute

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/wtool/wtool/io/arch"
)

// TestBuildSpecLayouts checks what the arch-driven specs say on the
// layouts that need more than one group per axis: GPT-2's Conv1D and fused
// c_attn, Phi-3's fused qkv_proj and gate_up_proj under grouped-query
// attention, Llama's rotary heads.
func TestBuildSpecLayouts(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	gpt2, _ := fusedCase("gpt2")(r)
	phi3, _ := fusedCase("phi3")(r)
	c := llamaCfg{hidden: 32, inter: 48, heads: 4, kvHeads: 2, headDim: 8, layers: 2, vocab: 40, qkvBias: true}
	llama := llamaArchSpec(t, makeLlama(r, c), c).Spec
	tests := []struct {
		spec   *Spec
		tensor string
		want   []Axis
	}{
		{gpt2, "h.0.attn.c_attn.weight", []Axis{{Group: "residual"}, {Segments: []Segment{{Size: 32, Group: "layers.0.attn.qk"}, {Size: 32, Group: "layers.0.attn.qk"}, {Size: 32, Group: "layers.0.attn.vo"}}}}},
		{gpt2, "h.0.attn.c_attn.bias", []Axis{{Segments: []Segment{{Size: 32, Group: "layers.0.attn.qk"}, {Size: 32, Group: "layers.0.attn.qk"}, {Size: 32, Group: "layers.0.attn.vo"}}}}},
		{gpt2, "h.1.attn.c_proj.weight", []Axis{{Group: "layers.1.attn.vo"}, {Group: "residual"}}},
		{gpt2, "h.1.mlp.c_fc.weight", []Axis{{Group: "residual"}, {Group: "layers.1.mlp.hidden"}}},
		{gpt2, "wpe.weight", []Axis{{}, {Group: "residual"}}},
		{phi3, "model.layers.0.self_attn.qkv_proj.weight", []Axis{{Segments: []Segment{{Size: 24, Group: "layers.0.attn.heads", Block: 12}, {Size: 12, Group: "layers.0.attn.heads", Block: 6}, {Size: 12, Group: "layers.0.attn.vo"}}}, {Group: "residual"}}},
		{phi3, "model.layers.0.self_attn.o_proj.weight", []Axis{{Group: "residual"}, {Group: "layers.0.attn.vo", Repeat: 2}}},
		{phi3, "model.layers.1.mlp.gate_up_proj.weight", []Axis{{Segments: []Segment{{Size: 36, Group: "layers.1.mlp.hidden"}, {Size: 36, Group: "layers.1.mlp.hidden"}}}, {Group: "residual"}}},
		{llama, "model.layers.0.self_attn.q_proj.weight", []Axis{{Group: "layers.0.attn.heads", Block: 16}, {Group: "residual"}}},
		{llama, "model.layers.0.self_attn.k_proj.bias", []Axis{{Group: "layers.0.attn.heads", Block: 8}}},
		{llama, "model.layers.0.self_attn.v_proj.bias", []Axis{{Group: "layers.0.attn.vo"}}},
		{llama, "model.layers.1.self_attn.o_proj.weight", []Axis{{Group: "residual"}, {Group: "layers.1.attn.vo", Repeat: 2}}},
		{llama, "model.embed_tokens.weight", []Axis{{}, {Group: "residual"}}},
	}
	for _, tc := range tests {
		if got := tc.spec.Tensors[tc.tensor]; !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: %+v, want %+v", tc.tensor, got, tc.want)
		}
	}
	for _, tc := range []struct {
		spec  *Spec
		group string
		want  Within
	}{
		{gpt2, "layers.0.attn.qk", Within{Heads: "layers.0.attn.heads", Dim: 8}},
		{gpt2, "layers.1.attn.vo", Within{Heads: "layers.1.attn.heads", Dim: 8}},
		{phi3, "layers.0.attn.vo", Within{Heads: "layers.0.attn.heads", Dim: 6}},
	} {
		if got := tc.spec.Within[tc.group]; got != tc.want {
			t.Errorf("within %s: %+v, want %+v", tc.group, got, tc.want)
		}
	}
	if _, ok := phi3.Within["layers.0.attn.qk"]; ok {
		t.Error("rotary heads must not get query/key feature permutations")
	}
	// every spec survives its JSON form
	for name, s := range map[string]*Spec{"gpt2": gpt2, "phi3": phi3, "llama": llama} {
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		var back Spec
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("%s: %v\n%s", name, err, b)
		}
		if !reflect.DeepEqual(back.Groups, s.Groups) || !reflect.DeepEqual(back.Within, s.Within) {
			t.Errorf("%s: groups or within changed in JSON", name)
		}
		for tn, axes := range s.Tensors {
			for i, a := range axes {
				if got := back.Tensors[tn][i]; !reflect.DeepEqual(sizes(s, got, back.Tensors[tn]), sizes(s, a, axes)) || got.Group != a.Group {
					t.Errorf("%s: %s axis %d: %+v after JSON, %+v before", name, tn, i, got, a)
				}
			}
		}
	}
}

// sizes normalises an axis's segments (sizes implied by the groups filled in).
func sizes(s *Spec, a Axis, _ []Axis) []Use {
	var out []Use
	for _, u := range s.segments(a, 0) {
		out = append(out, u)
	}
	return out
}

// TestModuleUses checks the directions the arch-driven spec gives to the
// uses of a group (what PLeaS needs: who writes the units, who reads them).
func TestModuleUses(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	_, w := fusedCase("phi3")(r)
	cfg, _ := arch.ParseConfig([]byte(`{"model_type":"phi3","num_attention_heads":4,"num_key_value_heads":2,"hidden_size":24,"head_dim":6}`))
	a, err := arch.Describe(cfg, w.shapes())
	if err != nil {
		t.Fatal(err)
	}
	as, err := BuildSpec(a)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, g := range []string{"layers.0.attn.vo", "layers.0.mlp.hidden", "residual"} {
		for _, u := range as.ModuleUses(g) {
			got[fmt.Sprintf("%s %s %d/%d", g, u.Tensor, u.Axis, u.Segment)] = string(u.Direction)
		}
	}
	want := map[string]string{
		"layers.0.attn.vo model.layers.0.self_attn.qkv_proj.weight 0/2":  "writes",
		"layers.0.attn.vo model.layers.0.self_attn.o_proj.weight 1/0":    "reads",
		"layers.0.mlp.hidden model.layers.0.mlp.gate_up_proj.weight 0/0": "writes",
		"layers.0.mlp.hidden model.layers.0.mlp.gate_up_proj.weight 0/1": "writes",
		"layers.0.mlp.hidden model.layers.0.mlp.down_proj.weight 1/0":    "reads",
		"residual model.embed_tokens.weight 1/0":                         "writes",
		"residual model.layers.1.input_layernorm.weight 0/0":             "normalises",
		"residual model.layers.1.self_attn.o_proj.weight 0/0":            "writes",
		"residual model.layers.1.self_attn.qkv_proj.weight 1/0":          "reads",
		"residual lm_head.weight 1/0":                                    "reads",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %q, want %q", k, got[k], v)
		}
	}
	if i := as.Info["layers.0.attn.heads"]; i.Kind != KindHeads || i.Layer != 0 {
		t.Errorf("heads info %+v", i)
	}
	if i := as.Info["residual"]; i.Kind != KindResidual || i.Layer != -1 {
		t.Errorf("residual info %+v", i)
	}
}

// TestSpecFusedValidation: the errors of fused axes, repeats and head
// features name the tensor, the axis and the segment.
func TestSpecFusedValidation(t *testing.T) {
	base := func() *Spec {
		return &Spec{Groups: map[string]int{"h": 2, "qk": 8, "m": 3}, Within: map[string]Within{"qk": {Heads: "h", Dim: 4}},
			Tensors: map[string][]Axis{"w": {{Segments: []Segment{{Group: "qk"}, {Size: 5}, {Group: "m", Block: 2}}}, {Group: "qk", Repeat: 2}}}}
	}
	shapes := map[string][]int64{"w": {19, 16}}
	if err := base().Validate(shapes); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		mod  func(s *Spec)
		want string
	}{
		{"segments short", func(s *Spec) { s.Tensors["w"][0].Segments[1].Size = 4 }, `tensor "w" axis 0 has 19 elements, its segments add up to 18`},
		{"no size", func(s *Spec) { s.Tensors["w"][0].Segments[1].Size = 0 }, `segment 1: a segment with no group needs a size`},
		{"segment size", func(s *Spec) { s.Tensors["w"][0].Segments[2].Size = 5 }, `tensor "w" axis 0 segment 2 has 5 elements, but group "m" has 3 units of 2 (6)`},
		{"repeat plain", func(s *Spec) { s.Tensors["w"][1] = Axis{Group: "m", Repeat: 2} }, `repeat 2 needs a group of head features`},
		{"within size", func(s *Spec) { s.Within["qk"] = Within{Heads: "h", Dim: 3} }, `group "qk" has 8 units, not 2 heads (group "h") of 3 features`},
		{"within heads", func(s *Spec) { s.Within["qk"] = Within{Heads: "x", Dim: 4} }, `its heads "x" are not a group`},
		{"nested", func(s *Spec) { s.Within["h"] = Within{Heads: "qk", Dim: 1} }, `are themselves features of heads`},
		{"fused and group", func(s *Spec) { s.Tensors["w"][0].Group = "m" }, `a fused axis takes its groups from its segments`},
	}
	for _, tc := range tests {
		s := base()
		tc.mod(s)
		if err := s.Validate(shapes); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	// a head-feature permutation that splits a head is refused
	s := base()
	p := Identity(s)
	p["qk"][0], p["qk"][4] = 4, 0
	if err := p.Check(s); err == nil || !strings.Contains(err.Error(), "the features of a head move with it") {
		t.Errorf("split head: %v", err)
	}
	// the JSON form of fused axes
	var back Spec
	err := json.Unmarshal([]byte(`{"groups": {"h": 2, "qk": 8, "m": 3}, "within": {"qk": {"heads": "h", "dim": 4}},
		"tensors": {"w": [["qk", {"size": 5}, {"group": "m", "block": 2}], {"group": "qk", "repeat": 2}]}}`), &back)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back.Tensors, base().Tensors) || !reflect.DeepEqual(back.Within, base().Within) {
		t.Errorf("read %+v", back)
	}
	for _, bad := range []string{
		`{"groups": {"m": 3}, "tensors": {"w": [[{"group": "m", "sz": 3}]]}}`,
		`{"groups": {"m": 3}, "tensors": {"w": [{"group": "m", "size": 3}]}}`,
		`{"groups": {"m": 3}, "within": {"m": {"heads": "m", "dim": 1, "x": 2}}, "tensors": {}}`,
		`{"groups": {"m": 3}, "tensors": {"w": [[1]]}}`,
	} {
		if err := json.Unmarshal([]byte(bad), &back); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
}
