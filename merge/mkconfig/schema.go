package mkconfig

import (
	"slices"
	"sort"
)

// ParamType is what a parameter's values mean.
type ParamType int

// Parameter types. mergekit coerces booleans to 1/0 and uses numbers as
// booleans by truthiness, so both accept numbers and booleans; strings are
// refused unless listed in ParamDef.Strings.
const (
	Float ParamType = iota
	Flag
	Integer
)

// ParamDef describes one parameter of a method as mergekit defines it.
type ParamDef struct {
	Name string
	// PerModel parameters (mergekit's "tensor parameters") are looked up
	// for each input model, falling back to the slice, module and global
	// sections; global ones are looked up in the slice, module and global
	// sections only (a per-model value is ignored by mergekit: wtool
	// refuses it).
	PerModel bool
	// Required: mergekit fails without a value (per-model: for every model
	// but the base model).
	Required bool
	// Default is the value when absent (nil: none; mergekit's None).
	Default *Value
	Type    ParamType
	// Strings are string values wtool accepts as named extensions (mergekit
	// refuses strings).
	Strings []string
	Doc     string
}

// BaseRule says what a method does with base_model.
type BaseRule int

// Base model rules.
const (
	// BaseRequired: the method needs the base model's tensor (task vectors,
	// slerp's t = 0 end, ...).
	BaseRequired BaseRule = iota
	// BaseOptional: with a base model the method works on task vectors
	// (nuslerp, multislerp).
	BaseOptional
	// BaseInput: the method has no base role; a base model not among the
	// models is merged as one more input (linear, karcher, passthrough).
	BaseInput
)

// MethodDef is a mergekit merge method's interface: its parameters and
// what it needs.
type MethodDef struct {
	Name   string
	Pretty string
	URL    string
	Params []ParamDef
	Base   BaseRule
	// MinModels and MaxModels bound the number of inputs other than the
	// base model (0 = no bound).
	MinModels, MaxModels int
	// Random methods draw masks from a random generator.
	Random bool
}

// Param returns the named parameter's definition.
func (m MethodDef) Param(name string) (ParamDef, bool) {
	for _, p := range m.Params {
		if p.Name == name {
			return p, true
		}
	}
	return ParamDef{}, false
}

func num(v float64) *Value { x := NumberValue(v); return &x }
func flag(b bool) *Value   { x := BoolValue(b); return &x }

func gtaParams(normalize, rescale bool, extra ...ParamDef) []ParamDef {
	ps := []ParamDef{
		{Name: "weight", PerModel: true, Required: true, Doc: "scale of the model's task vector"},
		{Name: "density", PerModel: true, Default: num(1), Doc: "fraction of the task vector's entries kept"},
	}
	ps = append(ps, extra...)
	return append(ps,
		ParamDef{Name: "normalize", Default: flag(normalize), Type: Flag, Doc: "divide the summed task vectors by the sum of the weights (of the models agreeing with the elected sign, with consensus)"},
		ParamDef{Name: "rescale", Default: flag(rescale), Type: Flag, Strings: []string{"l1", "none", "inverse"},
			Doc: "rescale each sparsified task vector to its original L1 norm (true = l1); wtool extensions: none, inverse (1/density per kept entry, the DARE paper's)"},
		ParamDef{Name: "lambda", Default: num(1), Doc: "scale of the merged task vector"},
		ParamDef{Name: "int8_mask", Default: flag(false), Type: Flag, Doc: "store masks as int8 (memory only; no effect on the result)"},
	)
}

var gamma = ParamDef{Name: "gamma", PerModel: true, Default: num(0.01), Doc: "fraction of the largest-magnitude entries removed"}
var epsilon = ParamDef{Name: "epsilon", PerModel: true, Default: num(0.15), Doc: "half-width of the keep probabilities around density"}

// Methods are mergekit's merge methods (arcee-ai/mergekit 0.1.4), by
// merge_method name. See docs/mergekit.md for their formulas.
var Methods = map[string]MethodDef{
	"linear": {Name: "linear", Pretty: "Linear", URL: "https://arxiv.org/abs/2203.05482", Base: BaseInput, MinModels: 1,
		Params: []ParamDef{
			{Name: "weight", PerModel: true, Required: true, Doc: "the model's weight"},
			{Name: "normalize", Default: flag(true), Type: Flag, Doc: "divide by the sum of the weights"},
		}},
	"slerp": {Name: "slerp", Pretty: "SLERP", URL: "https://en.wikipedia.org/wiki/Slerp", Base: BaseRequired, MinModels: 1, MaxModels: 1,
		Params: []ParamDef{{Name: "t", Required: true, Doc: "position from the base model (0) to the other (1)"}}},
	"nuslerp": {Name: "nuslerp", Pretty: "NuSLERP", Base: BaseOptional, MinModels: 2, MaxModels: 2,
		Params: []ParamDef{
			{Name: "weight", PerModel: true, Required: true, Doc: "relative weight; t = w2 / (w1 + w2)"},
			{Name: "nuslerp_row_wise", Default: flag(false), Type: Flag, Doc: "slerp the vectors along the first axis (columns of a matrix) instead of the last"},
			{Name: "nuslerp_flatten", Default: flag(true), Type: Flag, Doc: "slerp the whole tensor as one vector"},
		}},
	"multislerp": {Name: "multislerp", Pretty: "Multi-SLERP", URL: "https://goddard.blog/posts/multislerp-wow-what-a-cool-idea", Base: BaseOptional, MinModels: 1,
		Params: []ParamDef{
			{Name: "weight", PerModel: true, Required: true, Doc: "the model's weight"},
			{Name: "normalize_weights", Default: flag(true), Type: Flag, Doc: "divide the weights by their sum"},
			{Name: "eps", Default: num(1e-8), Doc: "added to the norms before dividing"},
		}},
	"karcher": {Name: "karcher", Pretty: "Karcher Mean", URL: "https://en.wikipedia.org/wiki/Karcher_mean", Base: BaseInput, MinModels: 1,
		Params: []ParamDef{
			{Name: "max_iter", Default: num(10), Type: Integer, Doc: "iterations of the Karcher mean"},
			{Name: "tol", Default: num(1e-5), Doc: "convergence tolerance"},
		}},
	"passthrough": {Name: "passthrough", Pretty: "Passthrough", Base: BaseInput, MinModels: 1, MaxModels: 1,
		Params: []ParamDef{{Name: "scale", PerModel: true, Doc: "multiply the tensor by this"}}},
	"model_stock": {Name: "model_stock", Pretty: "Model Stock", URL: "https://arxiv.org/abs/2403.19522", Base: BaseRequired, MinModels: 2,
		Params: []ParamDef{{Name: "filter_wise", Default: flag(false), Type: Flag, Doc: "one interpolation ratio per row instead of per tensor"}}},
	"arcee_fusion": {Name: "arcee_fusion", Pretty: "Arcee Fusion", URL: "https://arcee.ai", Base: BaseRequired, MinModels: 1, MaxModels: 1},
	"nearswap": {Name: "nearswap", Pretty: "NearSwap", URL: "https://huggingface.co/alchemonaut/QuartetAnemoi-70B-t0.0001", Base: BaseRequired, MinModels: 1, MaxModels: 1,
		Params: []ParamDef{{Name: "t", Required: true, Doc: "similarity threshold: weight = clamp(t / |base - model|, 0, 1)"}}},
	"ram": {Name: "ram", Pretty: "Reinforced Agent Merging", URL: "https://arxiv.org/abs/2601.13572", Base: BaseRequired, MinModels: 1,
		Params: []ParamDef{{Name: "epsilon", Default: num(1e-5), Doc: "|task vector entry| above which a model changes the entry"}}},
	"ramplus_tl": {Name: "ramplus_tl", Pretty: "Reinforced Agent Merging Plus (Tensor-Local)", URL: "https://arxiv.org/abs/2601.13572", Base: BaseRequired, MinModels: 1,
		Params: []ParamDef{
			{Name: "r", Default: num(0.1), Doc: "rescaling strength of unique entries"},
			{Name: "alpha", Default: num(0.2), Doc: "bound of the shared/unique ratio"},
			{Name: "epsilon", Default: num(1e-5), Doc: "|task vector entry| above which a model changes the entry"},
		}},
	"sce": {Name: "sce", Pretty: "SCE", URL: "https://arxiv.org/abs/2408.07990", Base: BaseRequired, MinModels: 1,
		Params: []ParamDef{
			{Name: "select_topk", Default: num(1), Doc: "fraction of entries (by variance across task vectors) kept"},
			{Name: "int8_mask", Default: flag(false), Type: Flag, Doc: "store masks as int8 (memory only)"},
		}},
	"task_arithmetic": {Name: "task_arithmetic", Pretty: "Task Arithmetic", URL: "https://arxiv.org/abs/2212.04089", Base: BaseRequired, MinModels: 1,
		Params: gtaParams(false, false)},
	"ties": {Name: "ties", Pretty: "TIES", URL: "https://arxiv.org/abs/2306.01708", Base: BaseRequired, MinModels: 1,
		Params: gtaParams(true, false)},
	"dare_ties": {Name: "dare_ties", Pretty: "DARE TIES", URL: "https://arxiv.org/abs/2311.03099", Base: BaseRequired, MinModels: 1, Random: true,
		Params: gtaParams(false, true)},
	"dare_linear": {Name: "dare_linear", Pretty: "Linear DARE", URL: "https://arxiv.org/abs/2311.03099", Base: BaseRequired, MinModels: 1, Random: true,
		Params: gtaParams(false, true)},
	"breadcrumbs": {Name: "breadcrumbs", Pretty: "Model Breadcrumbs", URL: "https://arxiv.org/abs/2312.06795", Base: BaseRequired, MinModels: 1,
		Params: gtaParams(false, false, gamma)},
	"breadcrumbs_ties": {Name: "breadcrumbs_ties", Pretty: "Model Breadcrumbs with TIES", URL: "https://arxiv.org/abs/2312.06795", Base: BaseRequired, MinModels: 1,
		Params: gtaParams(false, false, gamma)},
	"della": {Name: "della", Pretty: "DELLA", URL: "https://arxiv.org/abs/2406.11617", Base: BaseRequired, MinModels: 1, Random: true,
		Params: gtaParams(true, true, epsilon)},
	"della_linear": {Name: "della_linear", Pretty: "Linear DELLA", URL: "https://arxiv.org/abs/2406.11617", Base: BaseRequired, MinModels: 1, Random: true,
		Params: gtaParams(false, true, epsilon)},
}

// MethodNames lists the keys of Methods, sorted.
func MethodNames() []string {
	var out []string
	for n := range Methods {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func paramNames(m MethodDef, perModel bool) []string {
	var out []string
	for _, p := range m.Params {
		if p.PerModel == perModel {
			out = append(out, p.Name)
		}
	}
	return slices.Clip(out)
}
