package merge

import (
	"maps"
	"path/filepath"
	"slices"
	"strings"

	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/merge/mkconfig"
)

// MergekitConfig returns the mergekit configuration of a plan: the one it
// was read from (Plan.Source), or, for a plan built from flags or in code,
// the equivalent configuration (merge_method in mergekit's spelling, the
// models with their parameters, slices with their layer ranges, the base
// model, the global parameters, dtype; wtool's file parameters as the keys
// ParseConfig reads). ParseConfig of its YAML gives the same plan.
func MergekitConfig(p *Plan) *mkconfig.Config {
	if p.Source != nil {
		return p.Source
	}
	c := &mkconfig.Config{MergeMethod: strings.ReplaceAll(p.Method, "-", "_"), DType: p.DType}
	kinds := map[string]Param{}
	if m, err := Lookup(p.Method); err == nil {
		c.MergeMethod = strings.ReplaceAll(m.Name(), "-", "_")
		for _, prm := range m.Params() {
			kinds[prm.Name] = prm
		}
	}
	ref := func(path string, lora ...string) mkconfig.ModelRef {
		r := mkconfig.ModelRef{Model: mkconfig.ModelPath{Path: path}}
		if len(lora) > 0 && lora[0] != "" {
			r.LoRA = &mkconfig.ModelPath{Path: lora[0]}
		}
		return r
	}
	// params splits values into a parameters: section and extension keys
	// (file parameters, lists)
	params := func(ps Params) (mkconfig.Params, []mkconfig.Field) {
		var out mkconfig.Params
		var extra []mkconfig.Field
		for _, name := range slices.Sorted(maps.Keys(ps)) {
			v, prm := ps[name], kinds[name]
			switch prm.Kind {
			case Path:
				extra = append(extra, mkconfig.Field{Key: name, Value: mkconfig.StringValue(v.Text)})
			case List:
				f := mkconfig.Field{Key: name, List: []mkconfig.Value{}}
				for _, w := range v.List {
					f.List = append(f.List, mkconfig.StringValue(w))
				}
				extra = append(extra, f)
			case Bool:
				b := mkconfig.BoolValue(v.Bool)
				out = append(out, mkconfig.Param{Name: name, Setting: mkconfig.Setting{Scalar: &b}})
			case Int:
				x := mkconfig.NumberValue(float64(v.Int))
				x.Int = true
				out = append(out, mkconfig.Param{Name: name, Setting: mkconfig.Setting{Scalar: &x}})
			case String:
				s := mkconfig.StringValue(v.Text)
				out = append(out, mkconfig.Param{Name: name, Setting: mkconfig.Setting{Scalar: &s}})
			default:
				out = append(out, mkconfig.Param{Name: name, Setting: toMKSetting(v.Num)})
			}
		}
		return out, extra
	}
	if p.Base != "" {
		r := ref(p.Base, p.BaseLoRA)
		c.BaseModel = &r
	}
	var globalExtra []mkconfig.Field
	c.Parameters, globalExtra = params(p.Params)
	// wtool's global file and list parameters are top-level keys
	c.Extra = globalExtra
	if len(p.Slices) == 0 {
		for _, mi := range p.Models {
			im := mkconfig.InputModel{Model: ref(mi.Path, mi.LoRA)}
			im.Parameters, im.Extra = params(mi.Params)
			c.Models = append(c.Models, im)
		}
	}
	for _, s := range p.Slices {
		os := mkconfig.OutputSlice{}
		os.Parameters, _ = params(s.Params)
		for _, src := range s.Sources {
			is := mkconfig.InputSlice{Model: ref(src.Path), LayerRange: src.Layers}
			is.Parameters, _ = params(src.Params)
			os.Sources = append(os.Sources, is)
		}
		if s.Base != "" && s.Base != p.Base {
			r := ref(s.Base)
			os.BaseModel = &r
		}
		c.Slices = append(c.Slices, os)
	}
	return c
}

// toMKSetting converts a Number setting to mergekit's form (conditions
// hold a scalar or a gradient).
func toMKSetting(s Setting) mkconfig.Setting {
	switch {
	case s.Value != nil:
		return mkconfig.Const(*s.Value)
	case s.Gradient != nil:
		return mkconfig.Setting{Gradient: slices.Clone(s.Gradient)}
	}
	var out mkconfig.Setting
	for _, c := range s.Conds {
		inner := toMKSetting(c.Value)
		out.Conds = append(out.Conds, mkconfig.Cond{Filter: c.Filter, Scalar: inner.Scalar, Gradient: inner.Gradient})
	}
	return out
}

// withMergekitFiles adds mergekit_config.yml and the README.md model card
// mergekit writes beside a merged model to a directory output.
func withMergekitFiles(opts checkpoint.WriteOptions, p *Plan, out string) checkpoint.WriteOptions {
	if strings.HasSuffix(out, ".safetensors") {
		return opts // a single file has no room for them
	}
	c := MergekitConfig(p)
	yml := c.ConfigFile()
	opts = withOutputFile(opts, "mergekit_config.yml", yml)
	return withOutputFile(opts, "README.md", mkconfig.Card(c, mkconfig.CardOptions{Name: filepath.Base(filepath.Clean(out)), ConfigYAML: yml}))
}
