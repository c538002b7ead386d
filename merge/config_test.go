package merge

import (
	"strings"
	"testing"
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
