package merge

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wtool/wtool/tensors"
)

var configSeeds = []string{
	"models:\n  - model: a\n    parameters: {weight: 1.0, density: [0.4, 0.8]}\n  - model: b\n    parameters:\n      weight: [{filter: \"layers.1\", value: 2.0}, {value: 0.5}]\n      density: 0.6\nmerge_method: dare_ties\nbase_model: base\nparameters: {lambda: 0.9, rescale: true, int8_mask: true}\ndtype: bfloat16\nseed: 42\n",
	"models: [{model: a}, {model: b}]\nmerge_method: slerp\nbase_model: a\nparameters: {t: [0, 0.5, 1]}\n",
	"models: [{model: a, fisher: fa}, {model: b, fisher: fb}]\nmerge_method: fisher\n",
	"models: [{model: a, stats: sa}, {model: b, stats: sb}]\nmerge_method: regmean\nparameters: {alpha: 0.9, ridge: 0.01}\n",
	"models: [{model: a}, {model: b}]\nmerge_method: pleas\ncalib: x.safetensors\nparameters: {width: 1.5, match: weight}\nlayers: [fc1, fc2]\n",
	"models: [{model: a}, {model: b}]\nmerge_method: wm\nspec: llama\nrestarts: 2\n",
	"models: [{model: a}]\nmerge_method: ties\nparameters: {weight: 1, density: 0.5}\nbase_model: b\nout_dtype: float16\n",
	"models: [{model: a, model: b}]\nmerge_method: linear\n",
	"slices: []\nmerge_method: linear\n",
	"---\nmerge_method: linear\n---\nmerge_method: ties\n",
	"[1, 2]", "", "models: 3\nmerge_method: linear\n",
	"modules:\n  default:\n    models: [{model: a}, {model: b}]\n    parameters: {weight: [{filter: mlp, value: 2}]}\nmerge_method: linear\nparameters: {weight: [{filter: attn, value: 3}, {value: 0.5}]}\n",
	"modules:\n  default:\n    slices: [{sources: [{model: a, layer_range: [0, 2]}, {model: b, layer_range: [1, 3]}]}]\n    parameters: {t: 0.3}\nmerge_method: slerp\nbase_model: a\n",
	"modules:\n  text_decoder:\n    models: [{model: a}]\n  vision_tower:\n    slices: [{sources: [{model: a, layer_range: [0, 2]}]}]\nmerge_method: linear\n",
}

func TestConfigMessages(t *testing.T) {
	for yaml, want := range map[string]string{
		"models: [{model: a, parameters: {weight: 1, gamma: 0.1}}]\nmerge_method: ties\nbase_model: b\n": `line 1: unsupported parameter "gamma" for ties in the parameters of model 1 (a)`,
		"models: [{model: a}]\nmerge_method: dare_ties\nparameters: {density: 1.5}\nbase_model: b\n":     "1.5 is not in [0, 1]",
		"models: [{model: a}]\nmerge_method: ties\nparameters: {lambda: .nan}\nbase_model: b\n":          `line 3: lambda: parameter lambda: NaN is not a finite number`,
		"models: [{model: a}]\nmerge_method: linear\nparameters: {normalize: maybe}\n":                   `"maybe" is not true or false`,
		"models: [{model: a}]\nmerge_method: linear\nseed: 3\n":                                          `line 3: unsupported key "seed" in the configuration for linear`,
		"models: [{model: a}, {model: a}]\nmerge_method: linear\nmodels: []\n":                           `line 3: a configuration: key "models" appears twice (first on line 1)`,
		"---\nmerge_method: linear\n---\nmerge_method: ties\n":                                           "more than one YAML document",
		"models: [{model: a}]\nmerge_method: pleas\nparameters: {width: 1, width: 2}\n":                  `key "width" appears twice`,
		"models: [{model: a, fisher: f}]\nmerge_method: linear\n":                                        `unsupported key "fisher" in model 1 (a) for linear`,
	} {
		if _, err := ParseConfig([]byte(yaml)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", yaml, err, want)
		}
	}
}

// FuzzParseConfig: any input gives a plan or an error, never a panic, and a
// plan validates (or not) and evaluates its settings at any depth without a
// panic.
func FuzzParseConfig(f *testing.F) {
	for _, s := range configSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data string) {
		p, err := ParseConfig([]byte(data))
		if err != nil {
			return
		}
		_ = p.Validate()
		_ = p.Inputs()
		for _, v := range p.Params {
			for _, d := range []float64{-1, 0, 0.3, 1, 2} {
				v.Num.Eval("model.layers.9223372036854775807.x", d)
			}
		}
		for _, mi := range p.Models {
			for _, v := range mi.Params {
				v.Num.Eval("layers.1.mlp", 0.5)
			}
		}
	})
}

// TestConditionLevelsFallThrough: a level (a model's or source's, a
// slice's, a module's parameters) whose conditions match no tensor is
// skipped, as in mergekit's ConfigReader.parameter: the next level gives the
// value, not the method's default. Checked against the linear formula
// (normalize false: the sum of weight times tensor) on a tiny Llama.
func TestConditionLevelsFallThrough(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	tinyLlama(t, a, 2, 21, tensors.F32)
	tinyLlama(t, b, 2, 22, tensors.F32)
	const up, q, norm = "model.layers.1.mlp.up_proj.weight", "model.layers.0.self_attn.q_proj.weight", "model.norm.weight"
	for _, c := range []struct {
		name string
		yaml string
		// weights of a and b for each tensor
		want map[string][2]float32
	}{
		{"model conditions over global", fmt.Sprintf("models:\n  - model: %s\n    parameters: {weight: [{filter: mlp, value: 3}]}\n  - model: %s\nmerge_method: linear\nparameters: {weight: 0.5, normalize: false}\n", a, b),
			map[string][2]float32{up: {3, 0.5}, q: {0.5, 0.5}, norm: {0.5, 0.5}}},
		{"source over slice over global", fmt.Sprintf("slices:\n  - sources:\n      - {model: %s, layer_range: [0, 2], parameters: {weight: [{filter: self_attn, value: 3}]}}\n      - {model: %s, layer_range: [0, 2]}\n    parameters: {weight: [{filter: mlp, value: 0.25}]}\nmerge_method: linear\nparameters: {weight: 0.5, normalize: false}\n", a, b),
			map[string][2]float32{up: {0.25, 0.25}, q: {3, 0.5}, norm: {0.5, 0.5}}},
		{"module over global, model over module", fmt.Sprintf("modules:\n  default:\n    models:\n      - model: %s\n        parameters: {weight: [{filter: norm, value: 4}]}\n      - model: %s\n    parameters: {weight: [{filter: mlp, value: 0.25}]}\nmerge_method: linear\nparameters: {weight: 0.5, normalize: false}\n", a, b),
			map[string][2]float32{up: {0.25, 0.25}, q: {0.5, 0.5}, norm: {4, 0.5}}},
	} {
		out := filepath.Join(dir, "out")
		runConfig(t, c.yaml, out)
		for name, w := range c.want {
			x, y, got := read(t, a, name), read(t, b, name), read(t, out, name)
			for i := range got {
				if want := w[0]*x[i] + w[1]*y[i]; math.Abs(float64(got[i]-want)) > 1e-6 {
					t.Fatalf("%s: %s[%d] = %g, want %g (weights %v)", c.name, name, i, got[i], want, w)
				}
			}
		}
		os.RemoveAll(out)
	}
}
