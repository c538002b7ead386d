package merge

import (
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/wtool/wtool/io/hub"
	"github.com/wtool/wtool/merge/mkconfig"
)

// ConfigOptions control how a mergekit configuration becomes a Plan.
type ConfigOptions struct {
	// Resolve maps a model reference of the configuration (a local path, a
	// Hugging Face Hub id, a stage name) to the path wtool opens; nil keeps
	// paths as written. ResolveLocal is the usual choice: local paths, then
	// the local Hugging Face cache.
	Resolve func(ref mkconfig.ModelRef) (string, error)
}

// ResolveLocal resolves a model reference the way wtool's merge command
// does: an existing local path as is, else a Hub id ("org/name", revision
// from "@rev") in the local Hugging Face cache ($HF_HUB_CACHE,
// $HF_HOME/hub, ~/.cache/huggingface/hub). Nothing is downloaded: a model
// that is not cached is a *hub.NotCachedError saying so and how to fetch
// it. A reference's LoRA adapter is resolved by FromConfig with a second
// call (a reference without LoRA).
func ResolveLocal(ref mkconfig.ModelRef) (string, error) {
	if ref.OverrideArchitecture != "" {
		return "", fmt.Errorf("%s: override_architecture is not supported", ref.Model.Path)
	}
	arg := ref.Model.Path
	if ref.Model.Revision != "" {
		arg += "@" + ref.Model.Revision
	} else if _, err := os.Stat(arg); err == nil {
		return arg, nil
	}
	return hub.ResolveModel(arg)
}

// ConfigError is a configuration that cannot become a plan: a key, value
// or feature wtool refuses, at a line of its file.
type ConfigError struct {
	File string // "" when parsing bytes
	Line int    // 0 when the error concerns the whole configuration
	Err  error
}

// Error writes "FILE: line N: message", as mkconfig.Error does.
func (e *ConfigError) Error() string {
	return (&mkconfig.Error{File: e.File, Line: e.Line, Msg: e.Err.Error()}).Error()
}

func (e *ConfigError) Unwrap() error { return e.Err }

func cfgErr(line int, format string, a ...any) error {
	return &ConfigError{Line: line, Err: fmt.Errorf(format, a...)}
}

// configKeys are the extension keys wtool's methods read from a
// configuration: every global parameter as a top-level key, every
// per-model file parameter as a key of a model.
func configKeys() mkconfig.ParseOptions {
	o := mkconfig.ParseOptions{}
	reserved := []string{"models", "slices", "modules", "merge_method", "base_model", "dtype", "out_dtype", "parameters", "tokenizer_source", "tokenizer", "chat_template", "name"}
	for _, m := range Methods() {
		for _, prm := range m.Params() {
			switch {
			case prm.Scope == Global && !slices.Contains(reserved, prm.Name) && !slices.Contains(o.TopLevelKeys, prm.Name):
				o.TopLevelKeys = append(o.TopLevelKeys, prm.Name)
			case prm.Scope == PerModel && prm.Kind == Path && !slices.Contains(o.ModelKeys, prm.Name):
				o.ModelKeys = append(o.ModelKeys, prm.Name)
			}
		}
	}
	for _, k := range mkconfig.WtoolKeys.TopLevelKeys {
		if !slices.Contains(o.TopLevelKeys, k) {
			o.TopLevelKeys = append(o.TopLevelKeys, k)
		}
	}
	for _, k := range mkconfig.WtoolKeys.ModelKeys {
		if !slices.Contains(o.ModelKeys, k) {
			o.ModelKeys = append(o.ModelKeys, k)
		}
	}
	slices.Sort(o.TopLevelKeys)
	slices.Sort(o.ModelKeys)
	return o
}

// FromConfig turns one mergekit configuration (one stage of a multi-stage
// file) into a plan. Every parameter is decoded by the method's schema
// (Method.Params): a per-model parameter under a model, a slice, a source
// or the top-level parameters (every model's default, as in mergekit); a
// global one under a slice or the top-level parameters, or as a top-level
// key. models: gives a whole-model plan, slices: a layer-wise one (see
// Slice); modules: with the single module "default" (mergekit's module of
// single-module architectures) is its models: or slices:, its parameters
// looked up between the slices' and the global ones; tokenizer_source:,
// tokenizer: and chat_template: give Plan.Vocab and Plan.ChatTemplate; a
// "model+lora" reference gives ModelInput.LoRA (Plan.BaseLoRA). What wtool
// does not do yet (other modules, a vocabulary or a LoRA with slices:) is an
// error naming its line.
func FromConfig(c *mkconfig.Config, o ConfigOptions) (*Plan, error) {
	m, err := Lookup(c.MergeMethod)
	if err != nil {
		return nil, cfgErr(c.Lines["merge_method"], "merge_method: %v", err)
	}
	var module mkconfig.OutputModule // modules: {default: ...}
	if len(c.Modules) > 0 {
		archOf := func() (string, error) {
			return configArchitecture(c, func(r mkconfig.ModelRef) (string, error) {
				path, _, err := resolveRefWith(o, r)
				return path, err
			})
		}
		if c, module, err = singleModule(c, archOf); err != nil {
			return nil, err
		}
	}
	if (c.TokenizerSource != nil || c.Tokenizer != nil) && len(c.Slices) > 0 {
		return nil, cfgErr(c.Lines["slices"], "slices: with a tokenizer_source: or tokenizer: section are not supported yet")
	}
	schema := map[string]Param{}
	for _, prm := range m.Params() {
		schema[prm.Name] = prm
	}
	names := slices.Sorted(maps.Keys(schema))
	supported := "it takes none"
	if len(names) > 0 {
		supported = "supported: " + strings.Join(names, ", ")
	}
	// resolveRef resolves a reference's model and its LoRA adapter
	resolveRef := func(r mkconfig.ModelRef) (string, string, error) { return resolveRefWith(o, r) }
	resolve := func(r mkconfig.ModelRef) (string, error) {
		path, lora, err := resolveRef(r)
		if err == nil && lora != "" {
			err = cfgErr(r.Line, "%s: a LoRA adapter is not supported here", r)
		}
		return path, err
	}
	// params decodes a parameters: section; perModelOnly refuses global
	// parameters (a model's or a source's section)
	params := func(ps mkconfig.Params, where string, perModelOnly bool) (Params, error) {
		out := Params{}
		for _, prm := range ps {
			def, ok := schema[prm.Name]
			if !ok {
				return nil, cfgErr(prm.Line, "unsupported parameter %q for %s in %s (%s)", prm.Name, m.Name(), where, supported)
			}
			if perModelOnly && def.Scope != PerModel {
				return nil, cfgErr(prm.Line, "%s is a parameter of the whole merge, not of one model: give it under the top-level parameters: (mergekit ignores it in %s)", prm.Name, where)
			}
			v, err := def.ParseYAML(settingNode(prm.Setting, def.Kind))
			if err != nil {
				return nil, cfgErr(prm.Line, "%s: %w", prm.Name, err)
			}
			out[prm.Name] = v
		}
		return out, nil
	}
	extra := func(fs []mkconfig.Field, into Params, where string, scope Scope) error {
		for _, f := range fs {
			def, ok := schema[f.Key]
			if !ok || def.Scope != scope || (scope == PerModel && def.Kind != Path) {
				return cfgErr(f.Line, "unsupported key %q in %s for %s", f.Key, where, m.Name())
			}
			n := fieldNode(f, def.Kind)
			v, err := def.ParseYAML(n)
			if err != nil {
				return cfgErr(f.Line, "%s: %w", f.Key, err)
			}
			into[f.Key] = v
		}
		return nil
	}
	p := &Plan{Method: m.Name(), Source: c}
	if p.Params, err = params(c.Parameters, "parameters", false); err != nil {
		return nil, err
	}
	var rest []mkconfig.Field
	for _, f := range c.Extra {
		if f.Key != "align" { // wtool's extension: weight-match the models first
			rest = append(rest, f)
			continue
		}
		b, err := strconv.ParseBool(f.Value.String())
		if err != nil {
			return nil, cfgErr(f.Line, "align: %q is not true or false", f.Value.String())
		}
		p.Align = b
	}
	if err := extra(rest, p.Params, "the configuration", Global); err != nil {
		return nil, err
	}
	if module.Parameters != nil {
		mp, err := params(module.Parameters, fmt.Sprintf("the parameters of module %s", module.Name), false)
		if err != nil {
			return nil, err
		}
		moduleParams(p.Params, mp, schema)
	}
	if c.BaseModel != nil {
		if p.Base, p.BaseLoRA, err = resolveRef(*c.BaseModel); err != nil {
			return nil, err
		}
	}
	for i, im := range c.Models {
		mi := ModelInput{}
		if mi.Path, mi.LoRA, err = resolveRef(im.Model); err != nil {
			return nil, err
		}
		where := fmt.Sprintf("the parameters of model %d (%s)", i+1, im.Model)
		if mi.Params, err = params(im.Parameters, where, true); err != nil {
			return nil, err
		}
		if err := extra(im.Extra, mi.Params, fmt.Sprintf("model %d (%s)", i+1, im.Model), PerModel); err != nil {
			return nil, err
		}
		p.Models = append(p.Models, mi)
	}
	// mergekit merges the base model as one more input of the methods
	// that give it no role of its own (linear, karcher, passthrough), and
	// slerp interpolates from it to the one other model: those methods
	// take it among their models
	if def, ok := mkconfig.Methods[strings.ReplaceAll(m.Name(), "-", "_")]; ok && len(c.Models) > 0 && p.Base != "" &&
		(def.Base == mkconfig.BaseInput || def.Name == "slerp") &&
		!slices.ContainsFunc(p.Models, func(mi ModelInput) bool { return mi.Path == p.Base && mi.LoRA == p.BaseLoRA }) {
		p.Models = append([]ModelInput{{Path: p.Base, Params: Params{}, LoRA: p.BaseLoRA}}, p.Models...)
	}
	for i, os := range c.Slices {
		s := Slice{Base: p.Base}
		if os.BaseModel != nil {
			if s.Base, err = resolve(*os.BaseModel); err != nil {
				return nil, err
			}
		}
		if s.Params, err = params(os.Parameters, fmt.Sprintf("the parameters of slice %d", i+1), false); err != nil {
			return nil, err
		}
		for k, src := range os.Sources {
			ss := SliceSource{Layers: src.LayerRange}
			if ss.Path, ss.LoRA, err = resolveRef(src.Model); err != nil {
				return nil, err
			}
			where := fmt.Sprintf("the parameters of source %d of slice %d (%s)", k+1, i+1, src.Model)
			if ss.Params, err = params(src.Parameters, where, true); err != nil {
				return nil, err
			}
			s.Sources = append(s.Sources, ss)
			if !slices.ContainsFunc(p.Models, func(mi ModelInput) bool { return mi.Path == ss.Path }) {
				p.Models = append(p.Models, ModelInput{Path: ss.Path, Params: Params{}})
			}
		}
		// mergekit: a slice's base model is used only when it is one of
		// its sources (a passthrough slice of another model has none)
		if !slices.ContainsFunc(s.Sources, func(src SliceSource) bool { return src.Path == s.Base }) {
			if os.BaseModel != nil {
				return nil, cfgErr(os.BaseModel.Line, "slice %d: the base model %s is not one of its sources", i+1, os.BaseModel)
			}
			s.Base = ""
		}
		p.Slices = append(p.Slices, s)
	}
	if len(p.Slices) > 0 {
		p.Base = ""
	}
	if err := configVocab(c, p, resolve); err != nil {
		return nil, err
	}
	// mergekit computes in dtype and writes out_dtype (default: dtype);
	// wtool computes in float32 or float64 and writes the output dtype
	p.DType = c.DType
	if c.OutDType != "" {
		p.DType = c.OutDType
	}
	return p, nil
}

// resolveRefWith resolves a reference's model and its LoRA adapter ("" when
// it has none) with o.Resolve.
func resolveRefWith(o ConfigOptions, r mkconfig.ModelRef) (string, string, error) {
	res := o.Resolve
	if res == nil {
		if r.OverrideArchitecture != "" {
			res = ResolveLocal // refuses it
		} else {
			res = func(r mkconfig.ModelRef) (string, error) { return r.Model.String(), nil }
		}
	}
	lora := r.LoRA
	r.LoRA = nil
	path, err := res(r)
	if err != nil {
		return "", "", cfgErr(r.Line, "%w", err)
	}
	if lora == nil {
		return path, "", nil
	}
	lpath, err := res(mkconfig.ModelRef{Model: *lora, Line: r.Line})
	if err != nil {
		return "", "", cfgErr(r.Line, "LoRA adapter: %w", err)
	}
	return path, lpath, nil
}

// settingNode writes a mergekit setting as the YAML node a parameter's
// ParseYAML reads (scalars coerced as mergekit's pydantic does: booleans
// are 1 and 0 for numbers, numbers are true when not 0 for flags).
func settingNode(s mkconfig.Setting, k Kind) *yaml.Node {
	switch {
	case s.Scalar != nil:
		return valueNode(*s.Scalar, k, s.Line)
	case s.Gradient != nil:
		n := &yaml.Node{Kind: yaml.SequenceNode, Line: s.Line}
		for _, g := range s.Gradient {
			n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: formatNum(g), Line: s.Line})
		}
		return n
	}
	n := &yaml.Node{Kind: yaml.SequenceNode, Line: s.Line}
	for _, c := range s.Conds {
		e := &yaml.Node{Kind: yaml.MappingNode, Line: c.Line}
		if c.Filter != "" {
			e.Content = append(e.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: "filter", Line: c.Line}, &yaml.Node{Kind: yaml.ScalarNode, Value: c.Filter, Line: c.Line})
		}
		e.Content = append(e.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: "value", Line: c.Line},
			settingNode(mkconfig.Setting{Scalar: c.Scalar, Gradient: c.Gradient, Line: c.Line}, k))
		n.Content = append(n.Content, e)
	}
	return n
}

func valueNode(v mkconfig.Value, k Kind, line int) *yaml.Node {
	if v.Line > 0 {
		line = v.Line
	}
	text := v.Str
	switch v.Kind {
	case mkconfig.Number:
		text = formatNum(v.Num)
		if k == Bool {
			text = strconv.FormatBool(v.Num != 0)
		}
	case mkconfig.Bool:
		text = strconv.FormatBool(v.Bool)
		if k == Number || k == Int {
			text = map[bool]string{true: "1", false: "0"}[v.Bool]
		}
	case mkconfig.Null:
		text = ""
	}
	return &yaml.Node{Kind: yaml.ScalarNode, Value: text, Line: line}
}

func fieldNode(f mkconfig.Field, k Kind) *yaml.Node {
	if f.List == nil {
		return valueNode(f.Value, k, f.Line)
	}
	n := &yaml.Node{Kind: yaml.SequenceNode, Line: f.Line}
	for _, v := range f.List {
		n.Content = append(n.Content, valueNode(v, k, f.Line))
	}
	return n
}

func formatNum(x float64) string { return strconv.FormatFloat(x, 'g', -1, 64) }

// withFile gives mkconfig's errors (and the plan's) the file name.
func withFile(err error, file string) error {
	switch e := err.(type) {
	case *ConfigError:
		c := *e
		c.File = file
		return &c
	case *mkconfig.Error:
		c := *e
		c.File = file
		return &c
	}
	return fmt.Errorf("%s: %w", file, err)
}

// configVocab reads tokenizer_source:, tokenizer: and chat_template: into
// the plan.
func configVocab(c *mkconfig.Config, p *Plan, resolve func(mkconfig.ModelRef) (string, error)) error {
	if c.HasChatTemplate {
		if c.ChatTemplate == "" {
			return cfgErr(c.Lines["chat_template"], "chat_template is empty")
		}
		p.ChatTemplate = c.ChatTemplate
	}
	var src *mkconfig.TokenizerSource
	v := &VocabPlan{}
	switch {
	case c.TokenizerSource != nil:
		src = c.TokenizerSource
	case c.Tokenizer != nil:
		src = &c.Tokenizer.Source
		v.PadToMultipleOf = c.Tokenizer.PadToMultipleOf
		for _, t := range c.Tokenizer.Tokens {
			ts := TokenSource{Token: t.Token, Force: t.Force, TokenID: -1}
			if t.Source != nil {
				ts.Kind = t.Source.Kind
				ts.TokenID = t.Source.TokenID
				if t.Source.HasToken {
					ts.ByToken = t.Source.Token
					ts.TokenID = -1
				}
				if t.Source.Model != nil {
					path, err := resolve(*t.Source.Model)
					if err != nil {
						return err
					}
					ts.Model = path
				}
			}
			v.Tokens = append(v.Tokens, ts)
		}
	default:
		return nil
	}
	v.Source = src.Kind
	if src.Kind == "" {
		v.Source = "union"
	}
	if src.Model != nil {
		path, err := resolve(*src.Model)
		if err != nil {
			return err
		}
		v.Model = path
	}
	p.Vocab = v
	return nil
}
