package mkconfig

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func mustParse(t *testing.T, src string) *Config {
	t.Helper()
	c, err := Parse([]byte(src))
	if err != nil {
		t.Fatalf("%v\n%s", err, src)
	}
	return c
}

// stripLines zeroes every Line, Lines and Source field, for comparisons.
func stripLines(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			stripLines(v.Elem())
		}
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			f := v.Type().Field(i)
			if !f.IsExported() {
				continue
			}
			switch f.Name {
			case "Line":
				v.Field(i).SetInt(0)
			case "Lines", "Source":
				v.Field(i).Set(reflect.Zero(f.Type))
			default:
				stripLines(v.Field(i))
			}
		}
	case reflect.Slice, reflect.Array:
		for i := 0; i < v.Len(); i++ {
			stripLines(v.Index(i))
		}
	}
}

// equalConfigs compares two configurations up to lines, sources and the
// order of parameters (which the canonical YAML sorts).
func equalConfigs(a, b *Config) bool {
	norm := func(c *Config) string {
		c2 := *c
		stripLines(reflect.ValueOf(&c2))
		sortParams(reflect.ValueOf(&c2))
		return deep(reflect.ValueOf(c2))
	}
	return norm(a) == norm(b)
}

// deep renders every pointer target too.
func deep(v reflect.Value) string {
	var b strings.Builder
	var walk func(v reflect.Value)
	walk = func(v reflect.Value) {
		switch v.Kind() {
		case reflect.Pointer:
			if v.IsNil() {
				b.WriteString("nil")
				return
			}
			walk(v.Elem())
		case reflect.Struct:
			b.WriteString("{")
			for i := 0; i < v.NumField(); i++ {
				if v.Type().Field(i).IsExported() {
					b.WriteString(v.Type().Field(i).Name + ":")
					walk(v.Field(i))
					b.WriteString(" ")
				}
			}
			b.WriteString("}")
		case reflect.Slice:
			b.WriteString("[")
			for i := 0; i < v.Len(); i++ {
				walk(v.Index(i))
				b.WriteString(",")
			}
			b.WriteString("]")
		default:
			fmt.Fprintf(&b, "%v", v.Interface())
		}
	}
	walk(v)
	return b.String()
}

func sortParams(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			sortParams(v.Elem())
		}
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				sortParams(v.Field(i))
			}
		}
	case reflect.Slice:
		if ps, ok := v.Interface().(Params); ok {
			sorted := slices.Clone(ps)
			slices.SortFunc(sorted, func(a, b Param) int { return strings.Compare(a.Name, b.Name) })
			v.Set(reflect.ValueOf(sorted))
			return
		}
		for i := 0; i < v.Len(); i++ {
			sortParams(v.Index(i))
		}
	}
}

func TestParseModelsConfig(t *testing.T) {
	c := mustParse(t, `
models:
  - model: org/a
    parameters: {weight: [1, 0.5], density: 0.5}
  - model: ./local/b@v2+org/lora@abc
    parameters:
      weight: [{filter: mlp, value: 0.7}, {value: [0.1, 0.3]}]
      density: "0.4"
merge_method: ties
base_model: {model: {path: org/base, revision: r1}, override_architecture: LlamaForCausalLM}
parameters: {normalize: yes, lambda: 1, rescale: l1, int8_mask: off}
dtype: torch.bfloat16
out_dtype: float16
chat_template: auto
`)
	if c.MergeMethod != "ties" || c.DType != "bfloat16" || c.OutDType != "float16" || c.ChatTemplate != "auto" || !c.HasChatTemplate {
		t.Errorf("top level: %+v", c)
	}
	if len(c.Models) != 2 || c.Models[0].Model.String() != "org/a" {
		t.Fatalf("models: %+v", c.Models)
	}
	b := c.Models[1].Model
	if b.Model != (ModelPath{"./local/b", "v2"}) || b.LoRA == nil || *b.LoRA != (ModelPath{"org/lora", "abc"}) || b.String() != "./local/b@v2+org/lora@abc" {
		t.Errorf("model b: %+v", b)
	}
	if c.BaseModel == nil || c.BaseModel.Model != (ModelPath{"org/base", "r1"}) || c.BaseModel.OverrideArchitecture != "LlamaForCausalLM" {
		t.Errorf("base: %+v", c.BaseModel)
	}
	w, _ := c.Models[0].Parameters.Get("weight")
	if !slices.Equal(w.Gradient, []float64{1, 0.5}) {
		t.Errorf("gradient: %+v", w)
	}
	d, _ := c.Models[1].Parameters.Get("density")
	if d.Scalar == nil || d.Scalar.Kind != Number || d.Scalar.Num != 0.4 {
		t.Errorf("a quoted number is a number (pydantic): %+v", d.Scalar)
	}
	w, _ = c.Models[1].Parameters.Get("weight")
	if len(w.Conds) != 2 || w.Conds[0].Filter != "mlp" || w.Conds[0].Scalar.Num != 0.7 || !slices.Equal(w.Conds[1].Gradient, []float64{0.1, 0.3}) {
		t.Errorf("conditions: %+v", w)
	}
	for name, want := range map[string]Value{
		"normalize": BoolValue(true), "lambda": {Kind: Number, Num: 1, Int: true},
		"rescale": StringValue("l1"), "int8_mask": BoolValue(false),
	} {
		s, ok := c.Parameters.Get(name)
		got := *s.Scalar
		got.Line = 0
		if !ok || got != want {
			t.Errorf("%s: got %+v, want %+v", name, got, want)
		}
	}
}

func TestParseSlicesAndLayers(t *testing.T) {
	b, err := os.ReadFile("../../testdata/mergekit/configs/orcamini-platy-44layer.yml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	mods, err := c.Normalize(func(ModelRef) (int, error) { return 40, nil })
	if err != nil {
		t.Fatal(err)
	}
	if len(mods) != 1 || mods[0].NumLayers() != 44 {
		t.Fatalf("want one module of 44 layers, got %+v", mods)
	}
	ls := mods[0].Layers()
	if len(ls) != 44 {
		t.Fatalf("%d layers", len(ls))
	}
	for _, tc := range []struct {
		out, slice, in int
		model          string
		t              float64
	}{
		{0, 0, 0, "psmathur/orca_mini_v3_13b", 0},
		{23, 0, 23, "psmathur/orca_mini_v3_13b", 1},
		{24, 1, 20, "garage-bAInd/Platypus2-13B", 0},
		{43, 1, 39, "garage-bAInd/Platypus2-13B", 1},
		{33, 1, 29, "garage-bAInd/Platypus2-13B", 9.0 / 19},
	} {
		l := ls[tc.out]
		if l.Index != tc.out || l.Slice != tc.slice || len(l.Sources) != 1 || l.Sources[0].Layer != tc.in || l.Sources[0].Model.String() != tc.model || math.Abs(l.T-tc.t) > 1e-15 {
			t.Errorf("layer %d: %+v", tc.out, l)
		}
	}
}

func TestNormalizeModels(t *testing.T) {
	c := mustParse(t, `
models:
  - model: a
    parameters: {weight: 1}
  - model: b
    parameters: {weight: 2}
merge_method: task_arithmetic
base_model: base
`)
	n := map[string]int{"a": 8, "b": 8, "base": 8}
	mods, err := c.Normalize(func(r ModelRef) (int, error) { return n[r.Model.Path], nil })
	if err != nil {
		t.Fatal(err)
	}
	s := mods[0].Slices[0]
	if len(mods) != 1 || len(mods[0].Slices) != 1 || len(s.Sources) != 3 || s.Sources[2].Model.String() != "base" || s.Sources[2].Parameters != nil || s.Sources[0].LayerRange != [2]int{0, 8} {
		t.Fatalf("got %+v", mods)
	}
	if ls := mods[0].Layers(); ls[7].T != 1 || ls[0].T != 0 || len(ls[3].Sources) != 3 || ls[3].Sources[1].Layer != 3 {
		t.Errorf("layers %+v", ls)
	}
	n["b"] = 6
	if _, err := c.Normalize(func(r ModelRef) (int, error) { return n[r.Model.Path], nil }); err == nil || !strings.Contains(err.Error(), "b has 6 layers and a has 8") {
		t.Errorf("got %v", err)
	}
	// a one-layer slice is at t = 1
	c = mustParse(t, "slices:\n- sources:\n  - {model: a, layer_range: [3, 4]}\nmerge_method: passthrough\n")
	mods, _ = c.Normalize(nil)
	if l := mods[0].Layers(); len(l) != 1 || l[0].T != 1 || l[0].Sources[0].Layer != 3 {
		t.Errorf("one-layer slice: %+v", l)
	}
	// a layer_range beyond the model's layers is refused, naming the model
	// (an unchecked [0, 2000000000] would list two billion layers)
	for _, r := range []string{"[3, 9]", "[0, 2000000000]"} {
		c = mustParse(t, "slices:\n- sources:\n  - {model: a, layer_range: "+r+"}\nmerge_method: passthrough\n")
		if _, err := c.Normalize(func(ModelRef) (int, error) { return 8, nil }); err == nil || !strings.Contains(err.Error(), "of a is outside its 8 layers") {
			t.Errorf("layer_range %s: got %v", r, err)
		}
	}
}

// Gradients and conditions evaluate as mergekit's evaluate_setting.
func TestSettingEval(t *testing.T) {
	c := mustParse(t, `
models: [{model: a}]
merge_method: slerp
parameters:
  t:
    - filter: self_attn
      value: [0, 0.5, 0.3, 0.7, 1]
    - filter: mlp
      value: [1, 0.5, 0.7, 0.3, 0]
    - value: 0.5
  g: [0.2]
  onlymlp: [{filter: mlp, value: 2}]
  star: [{filter: "*", value: 3}]
`)
	tt, _ := c.Parameters.Get("t")
	for _, tc := range []struct {
		tensor string
		t      float64
		want   float64
	}{
		{"model.layers.3.self_attn.q_proj.weight", 0, 0},
		{"model.layers.3.self_attn.q_proj.weight", 0.3, 0.8*0.5 + 0.2*0.3}, // scaled 1.2
		{"model.layers.3.self_attn.q_proj.weight", 1, 1},
		{"model.layers.3.self_attn.q_proj.weight", 0.75, 0.7},
		{"model.layers.3.mlp.up_proj.weight", 0.6, 0.6*0.7 + 0.4*0.3}, // scaled 2.4
		{"model.layers.3.input_layernorm.weight", 0.6, 0.5},
		{"model.embed_tokens.weight", 0, 0.5},
	} {
		v, ok := tt.Eval(tc.tensor, tc.t)
		if !ok || math.Abs(v.Num-tc.want) > 1e-12 {
			t.Errorf("t(%s, %g) = %v %v, want %g", tc.tensor, tc.t, v.Num, ok, tc.want)
		}
	}
	g, _ := c.Parameters.Get("g")
	if v, _ := g.Eval("x", 0.7); v.Num != 0.2 {
		t.Errorf("one-point gradient: %v", v)
	}
	o, _ := c.Parameters.Get("onlymlp")
	if _, ok := o.Eval("model.norm.weight", 0); ok {
		t.Error("an unmatched condition list gives a value")
	}
	if _, ok := o.Eval("", 0); ok {
		t.Error("a filter matches the empty tensor name")
	}
	s, _ := c.Parameters.Get("star")
	if v, ok := s.Eval("anything", 0); !ok || v.Num != 3 {
		t.Error("filter * matches everything")
	}
}

// Lookup follows mergekit's precedence: source, slice, module, global; a
// level whose conditions match nothing falls through.
func TestLookup(t *testing.T) {
	c := mustParse(t, `
modules:
  decoder:
    slices:
      - sources:
          - model: a
            layer_range: [0, 4]
            parameters: {weight: [{filter: mlp, value: 1}]}
          - model: b
            layer_range: [0, 4]
        parameters: {weight: 2, density: [{filter: attn, value: 0.3}]}
    parameters: {density: 0.4, lambda: 5}
merge_method: ties
base_model: b
parameters: {density: 0.9, lambda: 7, normalize: false}
`)
	mod := &c.Modules[0]
	a, b := c.Modules[0].Slices[0].Sources[0].Model, c.Modules[0].Slices[0].Sources[1].Model
	l := mod.Layers()[2]
	for _, tc := range []struct {
		name   string
		model  *ModelRef
		tensor string
		want   float64
		ok     bool
	}{
		{"weight", &a, "layers.2.mlp.up_proj.weight", 1, true},    // source
		{"weight", &a, "layers.2.self_attn.q.weight", 2, true},    // source condition unmatched: slice
		{"weight", &b, "layers.2.mlp.up_proj.weight", 2, true},    // slice
		{"density", &a, "layers.2.self_attn.q.weight", 0.3, true}, // slice condition
		{"density", &a, "layers.2.mlp.up_proj.weight", 0.4, true}, // module
		{"lambda", nil, "x", 5, true},                             // module before global
		{"normalize", nil, "x", 0, true},                          // global
		{"gamma", &a, "x", 0, false},
	} {
		v, ok := c.LayerScope(mod, l, tc.tensor).Lookup(tc.name, tc.model)
		f, _ := v.Float()
		if ok != tc.ok || (ok && f != tc.want) {
			t.Errorf("%s for %v on %s: %v %v, want %v %v", tc.name, tc.model, tc.tensor, f, ok, tc.want, tc.ok)
		}
	}
	// Resolve fills defaults and names what is missing
	g, pm, err := c.LayerScope(mod, l, "layers.2.mlp.x").Resolve(Methods["ties"], []ModelRef{a, b})
	if err != nil {
		t.Fatal(err)
	}
	if g["normalize"].Bool || g["int8_mask"].Bool || g["rescale"].Bool || g["lambda"].Num != 5 {
		t.Errorf("globals %+v", g)
	}
	if pm[0]["weight"].Num != 1 || pm[1]["weight"].Num != 2 || pm[1]["density"].Num != 0.4 {
		t.Errorf("per model %+v", pm)
	}
	c2 := mustParse(t, "models: [{model: a}, {model: b, parameters: {weight: 1}}]\nmerge_method: linear\n")
	mods, _ := c2.Normalize(func(ModelRef) (int, error) { return 2, nil })
	_, _, err = c2.LayerScope(&mods[0], mods[0].Layers()[0], "model.layers.0.mlp.w").Resolve(Methods["linear"], []ModelRef{c2.Models[0].Model, c2.Models[1].Model})
	if err == nil || err.Error() != "missing required parameter weight for a.model.layers.0.mlp.w" {
		t.Errorf("got %v", err)
	}
	// pre and post weights are at t = 0 of the first and last slice
	c3 := mustParse(t, "slices:\n- sources: [{model: a, layer_range: [0, 2]}]\n  parameters: {scale: [1, 3]}\n- sources: [{model: b, layer_range: [0, 2]}]\n  parameters: {scale: [5, 7]}\nmerge_method: passthrough\n")
	m3, _ := c3.Normalize(nil)
	if v, _ := c3.PostScope(&m3[0], "lm_head.weight").Lookup("scale", nil); v.Num != 5 {
		t.Errorf("post: %v", v)
	}
	if v, _ := c3.PreScope(&m3[0], "embed").Lookup("scale", nil); v.Num != 1 {
		t.Errorf("pre: %v", v)
	}
	if v, _ := c3.LayerScope(&m3[0], m3[0].Layers()[3], "x").Lookup("scale", nil); v.Num != 7 {
		t.Errorf("last layer: %v", v)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		src, want string
	}{
		{"models: [{model: a}]\n", "merge_method is missing"},
		{"merge_method: linear\n", "exactly one of models:, slices: or modules:"},
		{"merge_method: linear\nmodels: []\n", "exactly one of models:"},
		{"merge_method: linear\nmodels: [{model: a}]\nslices: [{sources: [{model: a, layer_range: [0, 1]}]}]\n", "exactly one of"},
		{"merge_method: linear\nmodels: [{model: a}]\nfoo: 1\n", `line 3: unknown key "foo" in the configuration`},
		{"merge_method: linear\nmerge_method: ties\nmodels: [{model: a}]\n", `line 2: a configuration: key "merge_method" appears twice (first on line 1)`},
		{"merge_method: linear\nmodels:\n  - model: a\n    weight: 1\n", `line 4: unknown key "weight" in models[0] (allowed: model, parameters, fisher, stats)`},
		{"merge_method: linear\nmodels:\n  - parameters: {weight: 1}\n", "line 3: models[0]: the model key is missing"},
		{"merge_method: linear\nmodels:\n  - model: a\n    parameters: {weight: 1, weight: 2}\n", `line 4: models[0].parameters: key "weight" appears twice`},
		{"merge_method: linear\nmodels: [{model: a, parameters: {weight: {filter: mlp, value: 1}}}]\n", "must be written as a list"},
		{"merge_method: linear\nmodels: [{model: a, parameters: {weight: [1, {value: 2}]}}]\n", "a gradient is a list of numbers"},
		{"merge_method: linear\nmodels: [{model: a, parameters: {weight: [{value: 2}, 1]}}]\n", "only {filter, value} entries"},
		{"merge_method: linear\nmodels: [{model: a, parameters: {weight: [{filter: x}]}}]\n", "a condition without value"},
		{"merge_method: linear\nmodels: [{model: a, parameters: {weight: [{value: [{value: 1}]}]}}]\n", "a gradient is a list of numbers"},
		{"merge_method: linear\nmodels: [{model: a, parameters: {weight: []}}]\n", "is an empty list"},
		{"merge_method: linear\nmodels: [{model: a, parameters: {weight: }}]\n", "has no value"},
		{"merge_method: linear\nmodels: [{model: a, parameters: {weight: [a, b]}}]\n", `"a" is not a number`},
		{"merge_method: linear\nmodels: [{model: a+b+c}]\n", "more than one +"},
		{"merge_method: linear\nmodels: [{model: a@b@c}]\n", "more than one @"},
		{"merge_method: linear\nmodels: [{model: 12}]\n", "must be a string, not the number 12"},
		{"merge_method: linear\nmodels: [{model: a}]\ndtype: float64\n", `unknown dtype "float64"`},
		{"merge_method: passthrough\nslices:\n  - sources:\n      - {model: a, layer_range: [0, 4]}\n      - {model: b, layer_range: [2, 4]}\n", "line 5: slices[0]: every source of a slice must have the same number of layers: b has 2"},
		{"merge_method: passthrough\nslices:\n  - sources:\n      - {model: a, layer_range: [4, 4]}\n", "want 0 <= start < end"},
		{"merge_method: passthrough\nslices:\n  - sources:\n      - {model: a, layer_range: [0, 1.5]}\n", "must be an integer"},
		{"merge_method: passthrough\nslices:\n  - sources:\n      - {model: a}\n", "layer_range is missing"},
		{"merge_method: passthrough\nslices:\n  - sources: []\n", "sources: is missing or empty"},
		{"merge_method: linear\nmodels: [{model: a}]\ntokenizer_source: base\ntokenizer: {source: union}\n", "cannot both be given"},
		{"merge_method: linear\nmodels: [{model: a}]\ntokenizer: {tokens: {x: {source: {kind: model_token, model: a}}}}\n", "exactly one of token_id: and token:"},
		{"merge_method: linear\nmodels: [{model: a}]\ntokenizer: {tokens: {x: {source: {kind: model_token, model: a, token: y, token_id: 3}}}}\n", "exactly one of token_id: and token:"},
		{"merge_method: linear\nmodels: [{model: a}]\ntokenizer: {tokens: {x: {source: {kind: nope}}}}\n", `unknown kind "nope"`},
		{"merge_method: linear\nmodels: [{model: a}]\ntokenizer: {tokens: {x: {force: maybe}}}\n", "must be true or false"},
		{"merge_method: linear\nmodels: [{model: a}]\ntokenizer: {pad_to_multiple_of: 0}\n", "must be positive"},
		{"merge_method: linear\nmodels: [{model: a}]\nname: stage\n", "name: belongs to multi-stage"},
		{"merge_method: linear\nmodels: [{model: a}]\n---\nmerge_method: linear\nmodels: [{model: b}]\n", "more than one YAML document"},
		{"", "the configuration is empty"},
		{"merge_method: linear\nmodels: [{model: a}]\n---\n", "YAML document 2 is empty"},
		{"merge_method: [linear\n", "YAML:"},
		{"- a\n- b\n", "a configuration must be a mapping"},
		{"merge_method: linear\nmodules:\n  decoder: {parameters: {x: 1}}\n", "modules.decoder: exactly one of models: or slices:"},
		{"merge_method: linear\nmodels: [{model: a}]\nparameters: {weight: !!binary aGVsbG8=}\n", "unsupported YAML tag"},
	} {
		_, err := Parse([]byte(tc.src))
		var e *Error
		if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.As(err, &e) {
			t.Errorf("%q:\n got %v\nwant %q", tc.src, err, tc.want)
		}
	}
}

func TestReadFileNamesTheFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bad.yml")
	os.WriteFile(p, []byte("merge_method: linear\nmodels: [{model: a}]\nslcies: []\n"), 0o644)
	_, err := ReadFile(p)
	if err == nil || !strings.HasPrefix(err.Error(), p+": line 3: unknown key \"slcies\"") {
		t.Errorf("got %v", err)
	}
}

// YAML 1.1 scalars, as PyYAML (mergekit's loader) reads them.
func TestScalars(t *testing.T) {
	for _, tc := range []struct {
		in   string
		kind Kind
		num  float64
		b    bool
		str  string
	}{
		{"yes", Bool, 0, true, ""}, {"Off", Bool, 0, false, ""}, {"TRUE", Bool, 0, true, ""},
		{"y", String, 0, false, "y"}, {"010", Number, 8, false, ""}, {"0x1f", Number, 31, false, ""},
		{"0b101", Number, 5, false, ""}, {"1_000", Number, 1000, false, ""}, {"1:30", Number, 90, false, ""},
		{"1e-3", String, 0, false, "1e-3"}, {"1.0e-3", Number, 0.001, false, ""}, {".5", Number, 0.5, false, ""},
		{"-.inf", Number, math.Inf(-1), false, ""}, {"~", Null, 0, false, ""}, {"'yes'", String, 0, false, "yes"},
		{"!!str 0.5", Number, 0.5, false, ""}, {"!!float 1", Number, 1, false, ""}, {"0", Number, 0, false, ""},
		{"+7", Number, 7, false, ""}, {"3.", Number, 3, false, ""}, {"org/model", String, 0, false, "org/model"},
	} {
		c, err := Parse([]byte("merge_method: linear\nmodels: [{model: a}]\nparameters: {x: " + tc.in + "}\n"))
		if tc.kind == Null {
			if err == nil || !strings.Contains(err.Error(), "has no value") {
				t.Errorf("%s: %v", tc.in, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.in, err)
			continue
		}
		s, _ := c.Parameters.Get("x")
		v := *s.Scalar
		if tc.in == "1e-3" { // PyYAML reads a string; pydantic parses it as a number
			if v.Kind != Number || v.Num != 0.001 {
				t.Errorf("1e-3: %+v", v)
			}
			continue
		}
		if v.Kind != tc.kind || (tc.kind == Number && v.Num != tc.num) || (tc.kind == Bool && v.Bool != tc.b) || (tc.kind == String && v.Str != tc.str) {
			t.Errorf("%s: got %+v", tc.in, v)
		}
	}
}

func TestAliasesAndMergeKeys(t *testing.T) {
	c := mustParse(t, `
models:
  - model: a
    parameters: &common {density: 0.5, weight: 1}
  - model: b
    parameters:
      <<: *common
      weight: 2
  - model: c
    parameters: *common
merge_method: ties
base_model: base
`)
	for i, want := range [][2]float64{{0.5, 1}, {0.5, 2}, {0.5, 1}} {
		d, _ := c.Models[i].Parameters.Get("density")
		w, _ := c.Models[i].Parameters.Get("weight")
		if d.Scalar == nil || w.Scalar == nil || d.Scalar.Num != want[0] || w.Scalar.Num != want[1] {
			t.Errorf("model %d: %v %v", i, d, w)
		}
	}
}

func TestMulti(t *testing.T) {
	b, err := os.ReadFile("../../testdata/mergekit/configs/multimerge.yml")
	if err != nil {
		t.Fatal(err)
	}
	m, err := ParseMulti(b, WtoolKeys)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	order, _ := m.Order()
	for _, c := range order {
		names = append(names, c.Name)
	}
	if !slices.Equal(names, []string{"first-merge", "second-merge", ""}) {
		t.Errorf("order %q", names)
	}
	if !slices.Equal(m.Deps["second-merge"], []string{"first-merge"}) || !slices.Equal(m.Deps[""], []string{"second-merge"}) || len(m.Deps["first-merge"]) != 0 {
		t.Errorf("deps %v", m.Deps)
	}
	m.Resolve(func(s string) string { return "/tmp/inter/" + s })
	if got := m.Stage("second-merge").BaseModel.String(); got != "/tmp/inter/first-merge" {
		t.Errorf("resolved base %s", got)
	}
	if got := m.Stage("").Models[0].Model.String(); got != "/tmp/inter/second-merge" {
		t.Errorf("resolved model %s", got)
	}
	for _, tc := range []struct{ src, want string }{
		{"name: a\nmerge_method: linear\nmodels: [{model: b}]\n---\nname: b\nmerge_method: linear\nmodels: [{model: a}]\n", `cycle: "a" -> "b" -> "a"`},
		{"name: a\nmerge_method: linear\nmodels: [{model: a}]\n", "uses its own output"},
		{"name: a\nmerge_method: linear\nmodels: [{model: x}]\n---\nname: a\nmerge_method: linear\nmodels: [{model: y}]\n", `line 5: stage name "a" is used twice (first on line 1)`},
		{"merge_method: linear\nmodels: [{model: x}]\n---\nmerge_method: linear\nmodels: [{model: y}]\n", "only the final merge may be unnamed"},
		{"name: ../x\nmerge_method: linear\nmodels: [{model: x}]\n", "plain directory name"},
		{"name: 5\nmerge_method: linear\nmodels: [{model: x}]\n", "name must be a string"},
	} {
		if _, err := ParseMulti([]byte(tc.src), WtoolKeys); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want %q", tc.src, err, tc.want)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		src  string
		want []string // empty: valid
	}{
		{"models: [{model: a, parameters: {weight: 1}}, {model: b, parameters: {weight: 2}}]\nmerge_method: linear\n", nil},
		{"models: [{model: a, parameters: {weight: 1}}]\nmerge_method: nope\n", []string{`unknown merge_method "nope"`}},
		{"models: [{model: a, parameters: {weight: 1, epsilon: 0.1}}]\nmerge_method: ties\nbase_model: b\n",
			[]string{`line 1: models[0].parameters: "epsilon" is not a parameter of ties (its parameters: per model: weight, density; global: normalize, rescale, lambda, int8_mask)`}},
		{"models: [{model: a, parameters: {weight: 1, lambda: 2}}]\nmerge_method: ties\nbase_model: b\n", []string{`"lambda" is a global parameter of ties`}},
		{"models:\n  - model: a\n    parameters: {weight: 1}\n  - model: b\nmerge_method: linear\n", []string{"line 4: model b has no weight (required by linear"}},
		{"models: [{model: a}, {model: b}]\nmerge_method: linear\nparameters: {weight: 0.5}\n", nil}, // global fallback
		{"models: [{model: a, parameters: {weight: 1}}]\nmerge_method: ties\n", []string{"ties needs base_model:"}},
		{"models: [{model: a}, {model: b}]\nmerge_method: slerp\nbase_model: c\nparameters: {t: 0.5}\n", []string{"slerp takes at most 1 model(s) besides the base model, models has 2"}},
		{"models: [{model: a}, {model: b}]\nmerge_method: slerp\nbase_model: a\nparameters: {t: 0.5}\n", nil},
		{"models: [{model: a, parameters: {weight: 1}}, {model: b, parameters: {weight: 1}}]\nmerge_method: nuslerp\nbase_model: a\n", []string{"nuslerp: the base model cannot be one of the two models"}},
		{"models: [{model: a}]\nmerge_method: model_stock\nbase_model: b\n", []string{"model_stock takes at least 2 model(s)"}},
		{"models: [{model: a, parameters: {weight: 1}}]\nmerge_method: dare_ties\nbase_model: b\nparameters: {rescale: l1}\n", nil},
		{"models: [{model: a, parameters: {weight: 1}}]\nmerge_method: dare_ties\nbase_model: b\nparameters: {rescale: inverse}\n", nil},
		{"models: [{model: a, parameters: {weight: 1}}]\nmerge_method: dare_ties\nbase_model: b\nparameters: {rescale: l2}\n", []string{`rescale: "l2" is not a valid value (true, false or one of l1, none, inverse)`}},
		{"models: [{model: a, parameters: {weight: one}}]\nmerge_method: linear\n", []string{`weight: "one" is not a number`}},
		{"models: [{model: a}]\nmerge_method: karcher\nparameters: {max_iter: 2.5}\n", []string{"max_iter must be an integer"}},
		{"slices:\n  - sources:\n      - {model: a, layer_range: [0, 2], parameters: {weight: 1}}\nmerge_method: ties\nbase_model: b\n", []string{"ties needs the base model b among the slice's sources"}},
		{"slices:\n  - sources:\n      - {model: a, layer_range: [0, 2], parameters: {weight: 1}}\n      - {model: b, layer_range: [0, 2]}\nmerge_method: ties\nbase_model: b\n", nil},
		{"slices:\n  - sources:\n      - {model: a, layer_range: [0, 2]}\n      - {model: b, layer_range: [0, 2]}\nmerge_method: passthrough\n", []string{"passthrough takes at most 1 model(s) (counting the base model)"}},
		{"models: [{model: a, parameters: {weight: 1}}]\nmerge_method: linear\nbase_model: b\n", []string{"model b has no weight"}}, // mergekit adds the base as an input without weight
		{"models: [{model: a, parameters: {weight: 1}}, {model: b, parameters: {weight: 1}}]\nmerge_method: linear\nbase_model: b\n", nil},
		{"models: [{model: a}]\nmerge_method: passthrough\nbase_model: a\n", nil},
		{"models:\n  - model: a\n    parameters: {weight: 1, gamma: 0.1}\n  - model: c\nmerge_method: ties\nbase_model: b\nparameters: {foo: 1}\n",
			[]string{"line 7: parameters: \"foo\" is not a parameter", "line 3: models[0].parameters: \"gamma\" is not a parameter", "line 4: model c has no weight"}},
	} {
		c := mustParse(t, tc.src)
		err := c.Validate(ValidateOptions{})
		if len(tc.want) == 0 {
			if err != nil {
				t.Errorf("%q: %v", tc.src, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%q: valid, want %q", tc.src, tc.want)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q:\n got %v\nwant %q", tc.src, err, w)
			}
		}
	}
	// an extension method
	c := mustParse(t, "models: [{model: a}, {model: b}]\nmerge_method: wm\nparameters: {restarts: 3}\n")
	if err := c.Validate(ValidateOptions{Methods: map[string]MethodDef{"wm": {Name: "wm", Base: BaseInput, Params: []ParamDef{{Name: "restarts", Type: Integer}}}}}); err != nil {
		t.Error(err)
	}
}

// Every method of the schema has the defaults mergekit's code has (the
// golden vectors' resolved parameters come from running it).
func TestSchemaMatchesGoldenVectors(t *testing.T) {
	if len(Methods) != 20 {
		t.Errorf("%d methods", len(Methods))
	}
	for _, name := range MethodNames() {
		f, err := os.ReadFile(filepath.Join("..", "..", "testdata", "mergekit", name+".json"))
		if err != nil {
			t.Fatal(err)
		}
		// the first case with resolved parameters and no explicit globals
		var doc struct {
			Cases []struct {
				Parameters    map[string]any            `json:"parameters"`
				Resolved      map[string]any            `json:"resolved_parameters"`
				ResolvedModel map[string]map[string]any `json:"resolved_model_parameters"`
				Inputs        []struct {
					Model  string         `json:"model"`
					Params map[string]any `json:"params"`
				} `json:"inputs"`
			} `json:"cases"`
		}
		if err := json.Unmarshal(f, &doc); err != nil {
			t.Fatal(err)
		}
		def := Methods[name]
		checked := false
		for _, c := range doc.Cases {
			if c.Resolved == nil {
				continue
			}
			for _, p := range def.Params {
				if p.PerModel {
					continue
				}
				if _, set := c.Parameters[p.Name]; set {
					continue
				}
				got, has := c.Resolved[p.Name]
				if p.Required {
					continue
				}
				if !has {
					t.Errorf("%s: mergekit has no global parameter %s", name, p.Name)
					continue
				}
				if !sameValue(p.Default, got) {
					t.Errorf("%s: default of %s is %v in the schema, mergekit %v", name, p.Name, p.Default, got)
				}
				checked = true
			}
			if len(c.Resolved) != len(paramNames(def, false)) {
				t.Errorf("%s: mergekit's globals %v, schema %v", name, c.Resolved, paramNames(def, false))
			}
			for _, in := range c.Inputs {
				rm := c.ResolvedModel[in.Model]
				if len(rm) != len(paramNames(def, true)) {
					t.Errorf("%s: mergekit's per-model parameters %v, schema %v", name, rm, paramNames(def, true))
				}
				for _, p := range def.Params {
					if !p.PerModel || p.Required {
						continue
					}
					if _, set := in.Params[p.Name]; set {
						continue
					}
					if _, set := c.Parameters[p.Name]; set {
						continue
					}
					if !sameValue(p.Default, rm[p.Name]) {
						t.Errorf("%s: default of %s is %v in the schema, mergekit %v", name, p.Name, p.Default, rm[p.Name])
					}
				}
			}
		}
		if !checked && len(paramNames(def, false)) > 0 && name != "slerp" && name != "nearswap" {
			t.Errorf("%s: no case checked the defaults", name)
		}
	}
}

func sameValue(v *Value, got any) bool {
	if v == nil {
		return got == nil
	}
	switch g := got.(type) {
	case bool:
		return v.Kind == Bool && v.Bool == g
	case float64:
		f, _ := v.Float()
		return v.Kind == Number && f == g
	}
	return false
}

func TestExampleConfigs(t *testing.T) {
	want := map[string][]string{
		"arcee_fusion.yml":           {"base_model", "dtype", "method:arcee_fusion", "models"},
		"bio-merge.yml":              {"base_model", "dtype", "method:ties", "model parameters", "models", "parameters"},
		"della-slices.yml":           {"base_model", "dtype", "method:della", "out_dtype", "parameters", "shared per-model parameter", "slice base_model", "slice parameters", "slices", "source parameters"},
		"gradient-slerp.yml":         {"base_model", "dtype", "filter", "gradient", "method:slerp", "parameters", "slices"},
		"linear.yml":                 {"dtype", "method:linear", "model parameters", "models"},
		"model-stock.yml":            {"base_model", "dtype", "method:model_stock", "models", "parameters"},
		"modules.yml":                {"base_model", "method:ties", "model parameters", "models", "module parameters", "modules", "slices", "source parameters"},
		"multimerge.yml":             {"base_model", "method:dare_ties", "method:linear", "method:slerp", "model parameters", "models", "parameters", "shared per-model parameter", "stage name"},
		"orcamini-platy-44layer.yml": {"dtype", "method:passthrough", "slices"},
		"ties.yml":                   {"base_model", "dtype", "filter", "gradient", "method:ties", "model parameters", "models", "parameters"},
		"tokenizer-source.yml":       {"base_model", "chat_template", "lora", "method:task_arithmetic", "model parameters", "models", "parameters", "revision", "tokenizer_source"},
		"tokenizer-union.yml":        {"chat_template", "dtype", "method:linear", "model parameters", "models", "pad_to_multiple_of", "tokenizer", "tokenizer tokens"},
	}
	files, _ := filepath.Glob("../../testdata/mergekit/configs/*.yml")
	if len(files) != len(want) {
		t.Errorf("%d config files, %d expected", len(files), len(want))
	}
	for _, f := range files {
		m, err := ReadMultiFile(f)
		if err != nil {
			t.Error(err)
			continue
		}
		feats := map[string]bool{}
		for _, c := range m.Stages {
			if err := c.Validate(ValidateOptions{}); err != nil {
				t.Errorf("%s: %v", f, err)
			}
			for _, x := range c.Features() {
				feats[x] = true
			}
			// the canonical YAML reads back to the same configuration
			c2, err := ParseMulti(c.YAML(), WtoolKeys)
			if err != nil {
				t.Errorf("%s: %v\n%s", f, err, c.YAML())
				continue
			}
			if !equalConfigs(c, c2.Stages[0]) {
				t.Errorf("%s: YAML round trip differs:\n%s", f, c.YAML())
			}
		}
		var got []string
		for x := range feats {
			got = append(got, x)
		}
		slices.Sort(got)
		if w := want[filepath.Base(f)]; !slices.Equal(got, w) {
			t.Errorf("%s: features\n got %q\nwant %q", filepath.Base(f), got, w)
		}
	}
}

func TestConfigFileKeepsTheText(t *testing.T) {
	src := "# my merge\nmodels: [{model: a, parameters: {weight: 1}}]\nmerge_method: linear\n"
	c := mustParse(t, src)
	if string(c.ConfigFile()) != src {
		t.Errorf("ConfigFile %q", c.ConfigFile())
	}
	c.Source = nil
	if got := string(c.ConfigFile()); got != "merge_method: linear\nmodels:\n- model: a\n  parameters:\n    weight: 1\n" {
		t.Errorf("canonical %q", got)
	}
}

func TestQuote(t *testing.T) {
	for in, want := range map[string]string{
		"org/model": "org/model", "yes": "'yes'", "1.5": "'1.5'", "1e3": "'1e3'", "": "''", "a: b": "'a: b'",
		"<|im_start|>": "'<|im_start|>'", "it's": "it's", "'q": "'''q'", "line\nbreak": `"line\nbreak"`, "null": "'null'",
		"- x": "'- x'", "2024-01-01": "'2024-01-01'", "x #c": "'x #c'", "é": "'é'",
	} {
		if got := quote(in); got != want {
			t.Errorf("quote(%q) = %s, want %s", in, got, want)
		}
	}
	for f, want := range map[float64]string{1: "1.0", 0.5: "0.5", 1e-5: "1.0e-05", 1.5e-7: "1.5e-07", 1e16: "1.0e+16", 123456.5: "123456.5", -2: "-2.0", math.Inf(1): ".inf"} {
		if got := formatFloat(f, false); got != want {
			t.Errorf("formatFloat(%g) = %s, want %s", f, got, want)
		}
	}
}

// Nested merge keys cannot make parsing exponential.
func TestMergeKeyBomb(t *testing.T) {
	var b strings.Builder
	b.WriteString("merge_method: ties\nbase_model: b\nmodels:\n  - model: a0\n    parameters: &p0 {weight: 1}\n")
	for i := 1; i < 40; i++ {
		fmt.Fprintf(&b, "  - model: a%d\n    parameters: &p%d {<<: [*p%d, *p%d, *p%d]}\n", i, i, i-1, i-1, i-1)
	}
	_, err := Parse([]byte(b.String()))
	if err == nil || !strings.Contains(err.Error(), "expand to too much") {
		t.Errorf("got %v", err)
	}
}
