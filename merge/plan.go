package merge

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/wtool/wtool/merge/mkconfig"
)

// ModelInput is one input model of a merge with its per-model parameters
// (weight, density, a Fisher or statistics file, ...: see the method's
// Params).
type ModelInput struct {
	Path   string
	Params Params
	// LoRA is a PEFT LoRA adapter directory merged into the model before
	// the merge (mergekit's "model+lora"); "" for none.
	LoRA string
}

// Plan describes a merge completely; flags and YAML configurations both
// build one, so the same merge either way gives identical bytes.
type Plan struct {
	// Method is the method's name or alias; Validate makes it canonical.
	Method string
	Models []ModelInput
	// Base is the base model of task-vector methods (and slerp's t = 0 end).
	Base string
	// BaseLoRA is a LoRA adapter merged into the base ("" for none).
	BaseLoRA string
	// DType is the output dtype of floating tensors ("" = the first model's).
	DType string
	// Params are the method's global parameters (and defaults for its
	// per-model ones), by name.
	Params Params
	// AllowNonFinite accepts NaN/Inf in the inputs and writes them in the
	// result; otherwise either is an error.
	AllowNonFinite bool
	// Slices, when set, make the merge layer-wise (mergekit's slices:): the
	// output's layers are the slices' layers in order, each slice merged
	// from its sources' layers with the method; Models then lists every
	// model the slices read (without parameters) and Params are the
	// defaults of every slice. See Slice.
	Slices []Slice
	// Vocab, when set, builds the output vocabulary from the models'
	// tokenizers (mergekit's tokenizer_source: and tokenizer:): every
	// model's embedding and output head rows are permuted into it before
	// merging, and the merged tokenizer files and vocab_size are written.
	// Without it the first model's tokenizer files are copied.
	Vocab *VocabPlan
	// ChatTemplate is mergekit's chat_template: "auto", a built-in name
	// (alpaca, chatml, exaone, llama3, mistral) or a template, written into
	// the output's tokenizer_config.json ("" = the tokenizer's own).
	ChatTemplate string
	// Source is the mergekit configuration the plan was read from (nil for
	// a plan built from flags or in code): it is written beside the output
	// as mergekit_config.yml. See MergekitConfig.
	Source *mkconfig.Config
	// Align matches every model's hidden units to the first model's by
	// weight matching (the spec --spec auto gives) before merging, whatever
	// the method: each model is then read through its permutation.
	Align bool

	schema map[string]Param // the method's parameters, set by Validate
}

// VocabPlan says where a merge's output vocabulary comes from and how
// tokens the models lack are embedded (see merge/vocab and
// docs/mergekit.md, "Tokenizers").
type VocabPlan struct {
	// Source is "base" (the base model's tokenizer, else the first
	// model's), "union" (every model's tokens) or "model" (Model's).
	Source string
	Model  string
	// Tokens are per-token embedding sources (tokenizer.tokens).
	Tokens []TokenSource
	// PadToMultipleOf rounds the vocabulary size up (0: no padding).
	PadToMultipleOf int
}

// TokenSource is one entry of tokenizer.tokens: the embedding token gets
// where a model lacks it (or every model, with Force).
type TokenSource struct {
	Token string
	// Kind is "" (mergekit's default rules: the base's row, else the one
	// model having it, else the mean), "model" (Model's row of the token),
	// "model_token" (Model's row TokenID, or of the token ByToken when
	// TokenID < 0) or "zero".
	Kind    string
	Model   string
	TokenID int
	ByToken string
	Force   bool
}

// Slice is one output slice of a layer-wise merge: its sources all give
// the same number of consecutive layers, and output layer i of the slice is
// the method's merge of layer Layers[0]+i of every source. Parameters are
// looked up as mergekit does: a source's own, then the slice's, then the
// plan's, then the method's default; gradients are interpolated over the
// slice's layers (t = i/(n-1)).
type Slice struct {
	Sources []SliceSource
	// Base is the slice's base model: the path of one of its sources ("" =
	// none).
	Base string
	// Params are the slice's parameters (global ones, and per-model
	// defaults of its sources).
	Params Params
}

// SliceSource is one source of a slice: layers [Layers[0], Layers[1]) of a
// model, with its per-model parameters.
type SliceSource struct {
	ModelInput
	Layers [2]int
}

// Len returns the number of layers the slice writes.
func (s Slice) Len() int {
	if len(s.Sources) == 0 {
		return 0
	}
	return s.Sources[0].Layers[1] - s.Sources[0].Layers[0]
}

// NumLayers returns the number of layers a sliced plan writes.
func (p *Plan) NumLayers() int {
	n := 0
	for _, s := range p.Slices {
		n += s.Len()
	}
	return n
}

// slicePlan returns the whole-model plan of slice i: its sources as
// models, its base, and its parameters over the plan's.
func (p *Plan) slicePlan(i int) *Plan {
	s := p.Slices[i]
	sp := &Plan{Method: p.Method, Base: s.Base, DType: p.DType, AllowNonFinite: p.AllowNonFinite, Params: Params{}}
	for k, v := range p.Params {
		sp.Params[k] = v
	}
	for k, v := range s.Params {
		// a slice's conditions that match no tensor leave it to the
		// plan's value, as mergekit skips that level
		v.Num = v.Num.Or(p.Params[k].Num)
		sp.Params[k] = v
	}
	for _, src := range s.Sources {
		mi := ModelInput{Path: src.Path, Params: Params{}}
		for k, v := range src.Params {
			mi.Params[k] = v
		}
		sp.Models = append(sp.Models, mi)
	}
	return sp
}

// validateSlices checks a sliced plan: every slice has sources of one
// length within [0, MaxLayers), a base among its sources, and passes the
// method's checks as a whole-model merge of its sources.
func (p *Plan) validateSlices() (Method, error) {
	var m Method
	for i, s := range p.Slices {
		if len(s.Sources) == 0 {
			return nil, fmt.Errorf("slice %d has no sources", i+1)
		}
		for _, src := range s.Sources {
			lo, hi := src.Layers[0], src.Layers[1]
			if lo < 0 || hi <= lo || hi > MaxLayers {
				return nil, fmt.Errorf("slice %d: %s: layer_range [%d, %d) is not a range of layers", i+1, src.Path, lo, hi)
			}
			if hi-lo != s.Len() {
				return nil, fmt.Errorf("slice %d: its sources give different numbers of layers (%s: %d, %s: %d)", i+1, s.Sources[0].Path, s.Len(), src.Path, hi-lo)
			}
		}
		if s.Base != "" && !slices.ContainsFunc(s.Sources, func(src SliceSource) bool { return src.Path == s.Base }) {
			return nil, fmt.Errorf("slice %d: the base model %s is not one of its sources (mergekit merges a slice's layers from its sources only)", i+1, s.Base)
		}
		sp := p.slicePlan(i)
		sm, err := sp.validate()
		if err != nil {
			return nil, fmt.Errorf("slice %d: %w", i+1, err)
		}
		m = sm
	}
	p.Method = m.Name()
	if p.NumLayers() > MaxLayers {
		return nil, fmt.Errorf("the slices write %d layers (at most %d)", p.NumLayers(), MaxLayers)
	}
	return m, nil
}

// Validate checks that the plan is complete and consistent: the method
// exists, every parameter is one of the method's, in the right place, of
// the right type and range, required ones are given, and the method's own
// checks pass. It makes p.Method canonical.
func (p *Plan) Validate() error {
	_, err := p.validate()
	return err
}

func (p *Plan) validate() (Method, error) {
	m, err := Lookup(p.Method)
	if err != nil {
		return nil, err
	}
	if len(p.Slices) > 0 {
		if p.Vocab != nil || p.ChatTemplate != "" {
			return nil, fmt.Errorf("a sliced merge cannot build a vocabulary or set a chat template yet")
		}
		for _, s := range p.Slices {
			for _, src := range s.Sources {
				if src.LoRA != "" {
					return nil, fmt.Errorf("%s: a LoRA adapter on a slice source is not supported yet", src.Path)
				}
			}
		}
		return p.validateSlices()
	}
	p.Method = m.Name()
	if len(p.Models) == 0 {
		return nil, fmt.Errorf("no models to merge")
	}
	schema := map[string]Param{}
	for _, prm := range m.Params() {
		schema[prm.Name] = prm
	}
	p.schema = schema
	supported := func() string {
		names := slices.Sorted(maps.Keys(schema))
		if len(names) == 0 {
			return "it takes none"
		}
		return "its parameters: " + strings.Join(names, ", ")
	}
	for _, name := range slices.Sorted(maps.Keys(p.Params)) {
		prm, ok := schema[name]
		if !ok {
			return nil, fmt.Errorf("method %s has no parameter %q (%s)", m.Name(), name, supported())
		}
		if err := prm.check(p.Params[name]); err != nil {
			return nil, &ParamError{Param: name, Err: err}
		}
	}
	for i, mi := range p.Models {
		if mi.Path == "" {
			return nil, fmt.Errorf("model %d has no path", i+1)
		}
		for _, name := range slices.Sorted(maps.Keys(mi.Params)) {
			prm, ok := schema[name]
			if !ok {
				return nil, fmt.Errorf("%s: method %s has no parameter %q (%s)", mi.Path, m.Name(), name, supported())
			}
			if prm.Scope != PerModel {
				return nil, fmt.Errorf("%s: %s is a parameter of the whole merge, not of one model", mi.Path, name)
			}
			if err := prm.check(mi.Params[name]); err != nil {
				return nil, fmt.Errorf("%s: %w", mi.Path, &ParamError{Param: name, Err: err})
			}
		}
	}
	for _, name := range slices.Sorted(maps.Keys(schema)) {
		prm := schema[name]
		if !prm.Required {
			continue
		}
		if _, ok := p.Params[name]; ok {
			continue
		}
		if prm.Scope == Global {
			return nil, fmt.Errorf("%s needs %s (--%s, or parameters: %s in the config)", m.Name(), name, prm.FlagName(), name)
		}
		for _, mi := range p.Models {
			if _, ok := mi.Params[name]; !ok {
				return nil, fmt.Errorf("%s needs %s for every model (--%s); %s has none", m.Name(), name, prm.FlagName(), mi.Path)
			}
		}
	}
	if err := m.Check(p); err != nil {
		return nil, err
	}
	return m, nil
}

// param returns the method's parameter of that name.
func (p *Plan) param(name string) Param {
	if prm, ok := p.schema[name]; ok {
		return prm
	}
	m, err := Lookup(p.Method)
	if err != nil {
		panic(err)
	}
	for _, prm := range m.Params() {
		if prm.Name == name {
			return prm
		}
	}
	panic(fmt.Sprintf("merge: method %s has no parameter %q", m.Name(), name))
}

// Global returns a global parameter's value: the plan's, or the default.
func (p *Plan) Global(name string) Value {
	if v, ok := p.Params[name]; ok {
		return v
	}
	return p.param(name).Default
}

// Float returns a global Number parameter that does not vary (its
// constant value, or the default).
func (p *Plan) Float(name string) float64 {
	v, _ := p.Global(name).Num.Constant()
	return v
}

// Has reports whether the plan gives the parameter (globally, or for any
// model).
func (p *Plan) Has(name string) bool {
	if _, ok := p.Params[name]; ok {
		return true
	}
	for _, mi := range p.Models {
		if _, ok := mi.Params[name]; ok {
			return true
		}
	}
	return false
}

// ModelValue returns model i's value of a per-model parameter: its own, a
// value given among the global parameters, or the default. Where the
// model's own conditions match no tensor, the global value (or the default)
// applies, as mergekit skips a level whose conditions match nothing.
func (p *Plan) ModelValue(i int, name string) Value {
	if v, ok := p.Models[i].Params[name]; ok {
		v.Num = v.Num.Or(p.Global(name).Num)
		return v
	}
	return p.Global(name)
}

// Inputs returns every file the plan reads: the models, the base and every
// file parameter (statistics, Fisher information, calibration data, a
// permutation spec), each once, in a stable order.
func (p *Plan) Inputs() []string {
	var out []string
	add := func(s string) {
		if s != "" && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	for _, mi := range p.Models {
		add(mi.Path)
		add(mi.LoRA)
	}
	add(p.Base)
	add(p.BaseLoRA)
	for _, s := range p.Slices {
		for _, src := range s.Sources {
			add(src.Path)
		}
		add(s.Base)
	}
	if p.Vocab != nil {
		add(p.Vocab.Model)
		for _, t := range p.Vocab.Tokens {
			add(t.Model)
		}
	}
	m, err := Lookup(p.Method)
	if err != nil {
		return out
	}
	for _, prm := range m.Params() {
		if prm.Kind != Path && !(prm.Name == "spec") {
			continue
		}
		if v, ok := p.Params[prm.Name]; ok {
			add(specFile(prm, v))
		}
		for _, mi := range p.Models {
			if v, ok := mi.Params[prm.Name]; ok {
				add(specFile(prm, v))
			}
		}
	}
	return out
}

// specFile returns the file a value names: a Path, or a spec given as a
// JSON file.
func specFile(prm Param, v Value) string {
	if prm.Kind == Path || strings.HasSuffix(v.Text, ".json") {
		return v.Text
	}
	return ""
}
