package mkconfig

import "sort"

// Features lists the configuration features a configuration uses, sorted,
// from a fixed vocabulary: "method:NAME", "models", "slices", "modules",
// "base_model", "slice base_model", "parameters" (global), "model
// parameters", "slice parameters", "source parameters", "module
// parameters", "shared per-model parameter" (a per-model parameter of the
// method set in a global, module or slice section), "gradient", "filter",
// "dtype", "out_dtype", "tokenizer_source", "tokenizer", "tokenizer
// tokens", "pad_to_multiple_of", "chat_template", "lora", "revision",
// "override_architecture", "stage name", and "extension:KEY" for wtool's
// keys. Integrations report the ones they do not support by name.
func (c *Config) Features() []string {
	f := map[string]bool{"method:" + c.MergeMethod: true}
	def, known := Methods[c.MergeMethod]
	section := func(ps Params, name string, shared bool) {
		if len(ps) == 0 {
			return
		}
		f[name] = true
		for _, p := range ps {
			if p.Setting.Gradient != nil {
				f["gradient"] = true
			}
			for _, cd := range p.Setting.Conds {
				if cd.Filter != "" && cd.Filter != "*" {
					f["filter"] = true
				}
				if cd.Gradient != nil {
					f["gradient"] = true
				}
			}
			if shared && known {
				if pd, ok := def.Param(p.Name); ok && pd.PerModel {
					f["shared per-model parameter"] = true
				}
			}
		}
	}
	ref := func(r ModelRef) {
		if r.LoRA != nil {
			f["lora"] = true
		}
		if r.Model.Revision != "" || (r.LoRA != nil && r.LoRA.Revision != "") {
			f["revision"] = true
		}
		if r.OverrideArchitecture != "" {
			f["override_architecture"] = true
		}
	}
	c.mapRefs(func(r *ModelRef) { ref(*r) })
	if c.Name != "" {
		f["stage name"] = true
	}
	if c.BaseModel != nil {
		f["base_model"] = true
	}
	section(c.Parameters, "parameters", true)
	models := func(ms []InputModel) {
		f["models"] = true
		for _, m := range ms {
			section(m.Parameters, "model parameters", false)
		}
	}
	slices := func(ss []OutputSlice) {
		f["slices"] = true
		for _, s := range ss {
			if s.BaseModel != nil {
				f["slice base_model"] = true
			}
			section(s.Parameters, "slice parameters", true)
			for _, src := range s.Sources {
				section(src.Parameters, "source parameters", false)
			}
		}
	}
	if len(c.Models) > 0 {
		models(c.Models)
	}
	if len(c.Slices) > 0 {
		slices(c.Slices)
	}
	for _, m := range c.Modules {
		f["modules"] = true
		section(m.Parameters, "module parameters", true)
		if len(m.Models) > 0 {
			models(m.Models)
		}
		if len(m.Slices) > 0 {
			slices(m.Slices)
		}
	}
	if c.DType != "" {
		f["dtype"] = true
	}
	if c.OutDType != "" {
		f["out_dtype"] = true
	}
	if c.TokenizerSource != nil {
		f["tokenizer_source"] = true
	}
	if c.Tokenizer != nil {
		f["tokenizer"] = true
		if len(c.Tokenizer.Tokens) > 0 {
			f["tokenizer tokens"] = true
		}
		if c.Tokenizer.PadToMultipleOf > 0 {
			f["pad_to_multiple_of"] = true
		}
	}
	if c.HasChatTemplate {
		f["chat_template"] = true
	}
	for _, e := range c.Extra {
		f["extension:"+e.Key] = true
	}
	out := make([]string, 0, len(f))
	for k := range f {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
