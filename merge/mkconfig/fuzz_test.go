package mkconfig

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse: any input parses or fails with an error (never a panic); a
// configuration that parses writes canonical YAML that parses back to the
// same configuration, and validates, describes itself and makes a card
// without panicking.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("../../testdata/mergekit/configs/*.yml")
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err == nil {
			f.Add(b)
		}
	}
	for _, s := range []string{
		"merge_method: linear\nmodels: [{model: a, parameters: {weight: [{filter: x, value: [1, 2]}, {value: yes}]}}]\n",
		"merge_method: x\nslices: [{sources: [{model: {model: {path: p, revision: r}, lora: l}, layer_range: [0, 0x10]}]}]\n",
		"a: &x [*x]\n", "merge_method: m\nmodels: [{model: '*'}]\nparameters: {<<: {a: 1}}\n",
		"name: s\nmerge_method: m\nmodels: [{model: s2}]\n---\nname: s2\nmerge_method: m\nmodels: [{model: z}]\n",
		"modules:\n  default: {models: [{model: a}], parameters: {weight: [{filter: mlp, value: 2}]}}\n  vision_tower: {slices: [{sources: [{model: a, layer_range: [0, 2]}]}]}\nmerge_method: linear\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseMulti(data, WtoolKeys)
		if err != nil {
			return
		}
		for _, c := range m.Stages {
			out := c.YAML()
			m2, err := ParseMulti(out, WtoolKeys)
			if err != nil {
				t.Fatalf("canonical YAML does not parse: %v\n%s\nfrom\n%q", err, out, data)
			}
			if !equalConfigs(c, m2.Stages[0]) {
				t.Fatalf("canonical YAML reads back differently:\n%s\nfrom\n%q", out, data)
			}
			_ = c.Validate(ValidateOptions{})
			_ = c.Features()
			_ = Card(c, CardOptions{Exists: func(string) bool { return false }})
			if mods, err := c.Normalize(func(ModelRef) (int, error) { return 3, nil }); err == nil {
				for i := range mods {
					for _, l := range mods[i].Layers() {
						_, _, _ = c.LayerScope(&mods[i], l, "model.layers.0.mlp.up_proj.weight").Resolve(Methods["ties"], []ModelRef{l.Sources[0].Model})
					}
				}
			}
		}
	})
}
