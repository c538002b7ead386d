package mkconfig

// Config is one merge configuration (one YAML document of mergekit-yaml or
// one stage of mergekit-multi). Exactly one of Models, Slices and Modules is
// set.
type Config struct {
	// Name is the stage name of a mergekit-multi document ("" for the final,
	// unnamed stage and for plain configurations).
	Name string

	// Models are the input models of a whole-model merge (models:).
	Models []InputModel
	// Slices are the output slices of a layer-wise merge (slices:).
	Slices []OutputSlice
	// Modules are per-module definitions (modules:), in file order.
	Modules []OutputModule

	// MergeMethod is merge_method, as written (see Methods).
	MergeMethod string
	// BaseModel is base_model, nil when absent.
	BaseModel *ModelRef
	// DType is the computation dtype (dtype:, "" = the inputs' own) and
	// OutDType the output dtype (out_dtype:, "" = DType); both normalised
	// to bfloat16, float16, float32 or int64.
	DType, OutDType string
	// Parameters is the global parameters: section.
	Parameters Params
	// TokenizerSource is the legacy tokenizer_source: ("union", "base" or a
	// model), nil when absent.
	TokenizerSource *TokenizerSource
	// Tokenizer is the tokenizer: section, nil when absent.
	Tokenizer *TokenizerConfig
	// ChatTemplate is chat_template: "auto", a built-in name (alpaca,
	// chatml, exaone, llama3, mistral) or a Jinja template; HasChatTemplate
	// tells an absent key from an empty one.
	ChatTemplate    string
	HasChatTemplate bool

	// Extra holds the extension keys the ParseOptions allowed (wtool's own
	// top-level keys), in file order.
	Extra []Field

	// Source is the text the configuration was read from when it was a
	// single-document file (mergekit writes it unchanged as
	// mergekit_config.yml); nil otherwise.
	Source []byte
	// Line is the line the document starts at.
	Line int
	// Lines records where each top-level key was written.
	Lines map[string]int
}

// Field is one extension key with a scalar value.
type Field struct {
	Key   string
	Value Value
	// List holds the items of a value written as a YAML list of scalars
	// (Value is then the zero Value).
	List []Value
	Line int
}

// InputModel is one entry of models:.
type InputModel struct {
	Model      ModelRef
	Parameters Params
	// Extra holds the extension keys allowed by ParseOptions.ModelKeys.
	Extra []Field
	Line  int
}

// InputSlice is one source of an output slice: a model's layers
// [LayerRange[0], LayerRange[1]).
type InputSlice struct {
	Model      ModelRef
	LayerRange [2]int
	Parameters Params
	Line       int
}

// Len is the number of layers of the source.
func (s InputSlice) Len() int { return s.LayerRange[1] - s.LayerRange[0] }

// OutputSlice is one entry of slices:: layers merged from its sources (all
// of the same length) with the merge method.
type OutputSlice struct {
	Sources []InputSlice
	// BaseModel overrides the configuration's base model for this slice.
	BaseModel *ModelRef
	// ResidualWeight is accepted by mergekit's schema but unused by it.
	ResidualWeight *float64
	Parameters     Params
	Line           int
}

// Len is the number of layers the slice writes.
func (s OutputSlice) Len() int {
	if len(s.Sources) == 0 {
		return 0
	}
	return s.Sources[0].Len()
}

// OutputModule is one entry of modules:: a module of the architecture
// (mergekit names them in its architecture definitions, e.g. "decoder")
// merged from whole models or from slices.
type OutputModule struct {
	Name       string
	Models     []InputModel
	Slices     []OutputSlice
	Parameters Params
	Line       int
}

// TokenizerSource is where the output vocabulary comes from: "union" (all
// models' tokens), "base" (the base model's) or one model's.
type TokenizerSource struct {
	// Kind is "union", "base" or "model".
	Kind  string
	Model *ModelRef
	Line  int
}

// String writes the source as it appears in YAML.
func (s TokenizerSource) String() string {
	if s.Kind == "model" && s.Model != nil {
		return s.Model.String()
	}
	return s.Kind
}

// TokenizerConfig is the tokenizer: section.
type TokenizerConfig struct {
	// Source defaults to union.
	Source TokenizerSource
	// Tokens are per-token embedding overrides, in file order.
	Tokens []TokenConfig
	// PadToMultipleOf rounds the vocabulary size up (0 = no padding).
	PadToMultipleOf int
	Line            int
}

// TokenConfig is one entry of tokenizer.tokens: where token's embedding
// comes from.
type TokenConfig struct {
	Token string
	// Source is nil when absent (mergekit's default rules apply).
	Source *TokenSource
	// Force uses the source's embedding even for models that have the token.
	Force bool
	Line  int
}

// TokenSource is an embedding source: a model's own row for the token
// (Kind "model"), another token of a model (Kind "model_token", by TokenID
// or Token), or zeros (Kind "zero").
type TokenSource struct {
	Kind  string
	Model *ModelRef
	// TokenID is set (>= 0) or Token is, for "model_token"; TokenID is -1
	// when Token is used.
	TokenID  int
	Token    string
	HasToken bool
	Line     int
}

// ReferencedModels lists every model the configuration reads, each once, in
// order of first appearance (base model first), as mergekit's
// referenced_models (which uses a set; wtool keeps the order).
func (c *Config) ReferencedModels() []ModelRef {
	var out []ModelRef
	add := func(r ModelRef) {
		for _, o := range out {
			if o.Equal(r) {
				return
			}
		}
		out = append(out, r)
	}
	if c.BaseModel != nil {
		add(*c.BaseModel)
	}
	addSlices := func(ss []OutputSlice) {
		for _, s := range ss {
			for _, src := range s.Sources {
				add(src.Model)
			}
		}
	}
	for _, m := range c.Models {
		add(m.Model)
	}
	addSlices(c.Slices)
	for _, mod := range c.Modules {
		for _, m := range mod.Models {
			add(m.Model)
		}
		addSlices(mod.Slices)
	}
	return out
}

// ExtraValue returns an extension key's value.
func (c *Config) ExtraValue(key string) (Value, bool) {
	for _, f := range c.Extra {
		if f.Key == key {
			return f.Value, true
		}
	}
	return Value{}, false
}

// mapRefs calls f on every model reference of the configuration (models,
// slices, modules, base models, tokenizer sources), in place.
func (c *Config) mapRefs(f func(r *ModelRef)) {
	if c.BaseModel != nil {
		f(c.BaseModel)
	}
	slices := func(ss []OutputSlice) {
		for i := range ss {
			for j := range ss[i].Sources {
				f(&ss[i].Sources[j].Model)
			}
			if ss[i].BaseModel != nil {
				f(ss[i].BaseModel)
			}
		}
	}
	for i := range c.Models {
		f(&c.Models[i].Model)
	}
	slices(c.Slices)
	for i := range c.Modules {
		for j := range c.Modules[i].Models {
			f(&c.Modules[i].Models[j].Model)
		}
		slices(c.Modules[i].Slices)
	}
	if c.TokenizerSource != nil && c.TokenizerSource.Model != nil {
		f(c.TokenizerSource.Model)
	}
	if t := c.Tokenizer; t != nil {
		if t.Source.Model != nil {
			f(t.Source.Model)
		}
		for i := range t.Tokens {
			if s := t.Tokens[i].Source; s != nil && s.Model != nil {
				f(s.Model)
			}
		}
	}
}

// MapModels replaces every model reference r by f(r) (for instance, to
// resolve stage names of a multi-stage configuration to directories).
func (c *Config) MapModels(f func(ModelRef) ModelRef) {
	c.mapRefs(func(r *ModelRef) {
		line := r.Line
		*r = f(*r)
		if r.Line == 0 {
			r.Line = line
		}
	})
}
