package merge

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wtool/wtool/tensors"
)

// TestDefaultModuleIdentical: modules: {default: X} on a tiny Llama writes
// the same bytes as X at the top level (every file but the configuration's
// own text and the card quoting it), for models:, slices:, module
// parameters over global ones, and module conditions that match no tensor
// falling back to the global value (mergekit skips such a level).
func TestDefaultModuleIdentical(t *testing.T) {
	dir := t.TempDir()
	a, b, base := filepath.Join(dir, "a"), filepath.Join(dir, "b"), filepath.Join(dir, "base")
	tinyLlama(t, a, 4, 11, tensors.F32)
	tinyLlama(t, b, 4, 12, tensors.F32)
	tinyLlama(t, base, 4, 13, tensors.F32)
	models := fmt.Sprintf("[{model: %s, parameters: {weight: 0.3}}, {model: %s, parameters: {weight: 0.7}}]", a, b)
	slicesYAML := fmt.Sprintf(`
      - sources:
          - {model: %[1]s, layer_range: [0, 2], parameters: {weight: 0.3}}
          - {model: %[2]s, layer_range: [2, 4], parameters: {weight: 0.7}}
      - sources:
          - {model: %[1]s, layer_range: [3, 4]}
          - {model: %[2]s, layer_range: [0, 1]}
        parameters: {weight: [0.2, 0.8]}`, a, b)
	for _, c := range []struct {
		name, top, module string
	}{
		{"models", "models: " + models + "\nmerge_method: linear\n",
			"modules:\n  default:\n    models: " + models + "\nmerge_method: linear\n"},
		{"models, ties with a base, module parameters",
			fmt.Sprintf("models: %s\nmerge_method: ties\nbase_model: %s\nparameters: {density: 0.5, lambda: 0.9}\n", models, base),
			fmt.Sprintf("modules:\n  default:\n    models: %s\n    parameters: {density: 0.5, lambda: 0.9}\nmerge_method: ties\nbase_model: %s\n", models, base)},
		{"module parameters over global ones",
			fmt.Sprintf("models: [{model: %s}, {model: %s}]\nmerge_method: linear\nparameters: {weight: 0.25, normalize: false}\n", a, b),
			fmt.Sprintf("modules:\n  default:\n    models: [{model: %s}, {model: %s}]\n    parameters: {weight: 0.25}\nmerge_method: linear\nparameters: {weight: 1, normalize: false}\n", a, b)},
		{"module conditions fall back to the global ones",
			fmt.Sprintf("models: [{model: %s}, {model: %s}]\nmerge_method: linear\nparameters:\n  normalize: false\n  weight: [{filter: mlp, value: 0.25}, {filter: self_attn, value: 2}, {value: 0.5}]\n", a, b),
			fmt.Sprintf("modules:\n  default:\n    models: [{model: %s}, {model: %s}]\n    parameters:\n      weight: [{filter: mlp, value: 0.25}]\nmerge_method: linear\nparameters:\n  normalize: false\n  weight: [{filter: self_attn, value: 2}, {value: 0.5}]\n", a, b)},
		{"slices", "slices:" + slicesYAML + "\nmerge_method: linear\n",
			"modules:\n  default:\n    slices:" + strings.ReplaceAll(slicesYAML, "\n", "\n  ") + "\nmerge_method: linear\n"},
		{"slices, module parameters",
			"slices:" + slicesYAML + "\nmerge_method: linear\nparameters: {normalize: false}\n",
			"modules:\n  default:\n    parameters: {normalize: false}\n    slices:" + strings.ReplaceAll(slicesYAML, "\n", "\n  ") + "\nmerge_method: linear\nparameters: {normalize: true}\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			top, mod := filepath.Join(dir, "top"), filepath.Join(dir, "module")
			defer os.RemoveAll(top)
			defer os.RemoveAll(mod)
			runConfig(t, c.top, top)
			runConfig(t, c.module, mod)
			files, err := filepath.Glob(filepath.Join(top, "*"))
			if err != nil {
				t.Fatal(err)
			}
			compared := 0
			for _, f := range files {
				name := filepath.Base(f)
				if name == "mergekit_config.yml" || name == "README.md" {
					continue
				}
				x, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				y, err := os.ReadFile(filepath.Join(mod, name))
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(x, y) {
					t.Errorf("%s differs", name)
				}
				if strings.HasSuffix(name, ".safetensors") {
					compared++
				}
			}
			if compared == 0 {
				t.Fatalf("no weights written in %s (%v)", top, files)
			}
		})
	}

	// the fallback case against the formula: weight 0.25 on mlp tensors
	// (the module's), 2 on attention (the global conditions), 0.5 elsewhere
	out := filepath.Join(dir, "formula")
	runConfig(t, fmt.Sprintf("modules:\n  default:\n    models: [{model: %s}, {model: %s}]\n    parameters:\n      weight: [{filter: mlp, value: 0.25}]\nmerge_method: linear\nparameters:\n  normalize: false\n  weight: [{filter: self_attn, value: 2}, {value: 0.5}]\n", a, b), out)
	for name, w := range map[string]float32{
		"model.layers.1.mlp.up_proj.weight":      0.25,
		"model.layers.2.self_attn.q_proj.weight": 2,
		"model.layers.0.input_layernorm.weight":  0.5,
		"lm_head.weight":                         0.5,
	} {
		x, y, got := read(t, a, name), read(t, b, name), read(t, out, name)
		for i := range got {
			if want := w*x[i] + w*y[i]; math.Abs(float64(got[i]-want)) > 1e-6 {
				t.Fatalf("%s[%d] = %g, want %g (weight %g)", name, i, got[i], want, w)
			}
		}
	}
}

// TestModulesRefused: a module other than "default", several modules, and
// "default" on an architecture mergekit splits into modules are refused at
// the module's line, naming the module, the architecture (read from the
// base model's config.json, else the first model's) and what wtool
// supports.
func TestModulesRefused(t *testing.T) {
	dir := t.TempDir()
	llama := filepath.Join(dir, "llama")
	tinyLlama(t, llama, 2, 1, tensors.F32)
	configOnly := func(name, arch string) string {
		d := filepath.Join(dir, name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "config.json"), []byte(`{"architectures": ["`+arch+`"]}`), 0o644); err != nil {
			t.Fatal(err)
		}
		return d
	}
	vl := configOnly("qwen2vl", "Qwen2VLForConditionalGeneration")
	t5 := configOnly("t5", "T5ForConditionalGeneration")
	supported := `modules: with the one module "default" of single-module architectures (wtool's families: bert, gemma, gpt2, llama`
	for _, c := range []struct {
		name, yaml string
		line       int
		want       []string
	}{
		{"a vision-language module",
			fmt.Sprintf("merge_method: linear\nmodules:\n  text_decoder:\n    models: [{model: %s, parameters: {weight: 1}}]\n", vl), 3,
			[]string{`"text_decoder" is a module of Qwen2VLForConditionalGeneration (mergekit's modules: text_decoder, multi_modal_projector, vision_tower)`, supported}},
		{"default beside another module",
			fmt.Sprintf("merge_method: linear\nmodules:\n  default:\n    models: [{model: %[1]s}]\n  vision_tower:\n    models: [{model: %[1]s}]\n", vl), 5,
			[]string{`"vision_tower" is a module of Qwen2VLForConditionalGeneration`, supported}},
		{"default on a multi-module architecture",
			fmt.Sprintf("merge_method: linear\nmodules:\n  default:\n    models: [{model: %s}]\n", vl), 3,
			[]string{`Qwen2VLForConditionalGeneration has no module "default" (mergekit's modules: text_decoder, multi_modal_projector, vision_tower)`, supported}},
		{"an encoder-decoder module, the base model's architecture",
			fmt.Sprintf("merge_method: linear\nbase_model: %s\nmodules:\n  encoder:\n    models: [{model: %s}]\n", t5, llama), 4,
			[]string{`"encoder" is a module of T5ForConditionalGeneration (mergekit's modules: decoder, encoder, shared)`, supported}},
		{"a module a single-module architecture lacks",
			fmt.Sprintf("merge_method: linear\nmodules:\n  text_decoder:\n    slices: [{sources: [{model: %s, layer_range: [0, 2]}]}]\n", llama), 3,
			[]string{`LlamaForCausalLM has no module "text_decoder" (its one module is "default")`, supported}},
		{"an unreadable architecture",
			fmt.Sprintf("merge_method: linear\nmodules:\n  vision_tower:\n    models: [{model: %s}]\n", filepath.Join(dir, "missing")), 3,
			[]string{`module "vision_tower" is not supported (the architecture could not be read: `, "config.json", supported}},
	} {
		_, err := ParseConfig([]byte(c.yaml))
		var ce *ConfigError
		if !errors.As(err, &ce) {
			t.Errorf("%s: %v, want a ConfigError", c.name, err)
			continue
		}
		if ce.Line != c.line {
			t.Errorf("%s: line %d, want %d (%v)", c.name, ce.Line, c.line, err)
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %v\nwant %q", c.name, err, w)
			}
		}
	}
}
