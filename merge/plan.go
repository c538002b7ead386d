package merge

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Setting is a parameter value as mergekit's YAML allows it: a number, a
// gradient (a list of numbers interpolated over the depth of the model), or a
// list of conditions {filter, value} where the first whose filter is a
// substring of the tensor name (or is empty or "*") gives the value.
type Setting struct {
	Value    *float64
	Gradient []float64
	Conds    []Cond
}

// Cond is one conditional value of a Setting.
type Cond struct {
	Filter string
	Value  Setting
}

// Const returns a constant Setting.
func Const(v float64) Setting { return Setting{Value: &v} }

// IsSet reports whether the Setting holds anything.
func (s Setting) IsSet() bool { return s.Value != nil || s.Gradient != nil || s.Conds != nil }

// Eval returns the value for a tensor at relative depth t in [0, 1] (the
// tensor's layer index over the number of layers minus one), and false when
// no condition applies. Gradients interpolate linearly between their points
// as mergekit does.
func (s Setting) Eval(tensor string, t float64) (float64, bool) {
	switch {
	case s.Value != nil:
		return *s.Value, true
	case len(s.Gradient) == 1:
		return s.Gradient[0], true
	case len(s.Gradient) > 1:
		scaled := t * float64(len(s.Gradient)-1)
		i0 := int(scaled)
		i1 := min(len(s.Gradient)-1, i0+1)
		frac := scaled - float64(i0)
		return (1-frac)*s.Gradient[i0] + frac*s.Gradient[i1], true
	}
	for _, c := range s.Conds {
		if c.Filter == "" || c.Filter == "*" || strings.Contains(tensor, c.Filter) {
			return c.Value.Eval(tensor, t)
		}
	}
	return 0, false
}

func (s Setting) String() string {
	switch {
	case s.Value != nil:
		return strconv.FormatFloat(*s.Value, 'g', -1, 64)
	case s.Gradient != nil:
		return fmt.Sprint(s.Gradient)
	}
	var parts []string
	for _, c := range s.Conds {
		parts = append(parts, fmt.Sprintf("{%s: %s}", c.Filter, c.Value))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// ModelInput is one input model of a merge with its per-model parameters.
type ModelInput struct {
	Path    string
	Weight  Setting // default 1
	Density Setting // default 1
	Fisher  string  // Fisher file (method fisher)
	Stats   string  // statistics file (method regmean)
}

// Plan describes a merge completely; flags and YAML configs both build one,
// so the same merge either way gives identical bytes.
type Plan struct {
	Method string // canonical name, see Methods
	Models []ModelInput
	Base   string // base model for task-vector methods (and slerp's t=0 end)
	// DType is the output dtype of floating tensors ("" = the first model's).
	DType string
	// Normalize overrides the method's default when not nil.
	Normalize *bool
	Lambda    Setting // task-vector scale (default 1)
	T         Setting // slerp position (required for slerp)
	Rescale   Rescale // DARE rescaling
	Seed      uint64
	// AllowNonFinite accepts NaN/Inf in the result.
	AllowNonFinite bool

	// Alignment and refit methods (wm, pleas):
	Spec       string // permutation spec: auto, mlp, llama or a JSON file
	Layers     []string
	Act        string // MLP activation (pleas with calib)
	Calib      string // calibration inputs (pleas; regmean from an MLP)
	CalibKey   string
	JointStats string  // joint statistics file (pleas)
	Width      float64 // pleas: merged width as a multiple of the original (1..2)
	Ridge      float64 // pleas/regmean: ridge term
	Match      string  // pleas: activation (default) or weight
	Alpha      float64 // regmean: scale of the Gram matrices' off-diagonal entries (0: DefaultRegMeanAlpha)
	// Restarts of weight matching (wm, pleas --match weight); 0 means 3
	// for pleas and permute.AutoRestarts for wm (3 for small models, 1 for
	// large ones).
	Restarts int
	// MaxSweeps bounds weight matching's sweeps (wm; 0: 100).
	MaxSweeps int
	// CacheSize is the bytes of each model's tensors that weight matching
	// keeps mapped between uses (wm; 0: permute.DefaultCacheBytes, -1:
	// none). It does not change the result.
	CacheSize int64
}

func (p *Plan) restarts() int {
	if p.Restarts <= 0 {
		return 3
	}
	return p.Restarts
}

// Methods lists the canonical method names with a one-line description.
var Methods = []struct{ Name, Doc string }{
	{"linear", "weighted average of the models"},
	{"task-arithmetic", "base + lambda * sum of weighted task vectors"},
	{"ties", "TIES: trim task vectors by magnitude, elect signs, average agreeing entries"},
	{"dare-linear", "DARE: drop task-vector entries at random, rescale, add"},
	{"dare-ties", "DARE with TIES sign election"},
	{"slerp", "spherical interpolation of two models"},
	{"wm", "align hidden units by weight matching (MergeMany for 3+), then average"},
	{"pleas", "PLeaS: activation matching, partial merge to --width, least-squares refit"},
	{"fisher", "Fisher-weighted average"},
	{"regmean", "RegMean: closed-form merge of Linear layers from input Gram matrices"},
}

// CanonicalMethod maps user spellings (mergekit's task_arithmetic, dare_ties,
// weight_matching, ...) to a canonical method name.
func CanonicalMethod(name string) (string, error) {
	n := strings.ReplaceAll(strings.ToLower(strings.TrimSpace(name)), "_", "-")
	switch n {
	case "weight-matching", "git-rebasin":
		n = "wm"
	case "fisher-merging", "fisher-weighted":
		n = "fisher"
	}
	for _, m := range Methods {
		if m.Name == n {
			return n, nil
		}
	}
	var names []string
	for _, m := range Methods {
		names = append(names, m.Name)
	}
	return "", fmt.Errorf("unsupported merge method %q (wtool supports %s)", name, strings.Join(names, ", "))
}

// defaultNormalize is each method's default, as in mergekit.
func (p *Plan) normalize() bool {
	if p.Normalize != nil {
		return *p.Normalize
	}
	switch p.Method {
	case "linear", "ties", "wm":
		return true
	}
	return false
}

// needsBase reports whether the method works on task vectors.
func (p *Plan) needsBase() bool {
	switch p.Method {
	case "task-arithmetic", "ties", "dare-linear", "dare-ties":
		return true
	}
	return false
}

// Validate checks that the plan is complete and consistent.
func (p *Plan) Validate() error {
	m, err := CanonicalMethod(p.Method)
	if err != nil {
		return err
	}
	p.Method = m
	if len(p.Models) == 0 {
		return fmt.Errorf("no models to merge")
	}
	if p.needsBase() && p.Base == "" {
		return fmt.Errorf("%s merges task vectors: give the base model (--base, or base_model in the config)", p.Method)
	}
	switch p.Method {
	case "slerp":
		if len(p.Models) != 2 {
			return fmt.Errorf("slerp merges exactly two models, got %d", len(p.Models))
		}
		if !p.T.IsSet() {
			return fmt.Errorf("slerp needs t (--t, or parameters: t in the config)")
		}
		if p.Base != "" && p.Base != p.Models[0].Path && p.Base != p.Models[1].Path {
			return fmt.Errorf("slerp's base model must be one of the two models")
		}
	case "wm", "fisher", "regmean":
		if len(p.Models) < 2 {
			return fmt.Errorf("%s needs at least two models", p.Method)
		}
	case "pleas":
		if len(p.Models) != 2 {
			return fmt.Errorf("pleas merges exactly two models, got %d", len(p.Models))
		}
		if p.Width == 0 {
			p.Width = 1
		}
		if p.Width < 1 || p.Width > 2 {
			return fmt.Errorf("pleas --width %g must be between 1 (full merge) and 2 (both models kept)", p.Width)
		}
		if p.Match == "" {
			p.Match = "activation"
		}
		if p.Match != "activation" && p.Match != "weight" {
			return fmt.Errorf("pleas --match %q: want activation or weight", p.Match)
		}
		if p.Calib == "" && p.JointStats == "" {
			return fmt.Errorf("pleas needs data: --calib X.safetensors (MLPs) or --stats JOINT.safetensors")
		}
	}
	if p.Method == "fisher" {
		for _, mi := range p.Models {
			if mi.Fisher == "" {
				return fmt.Errorf("fisher merging needs a Fisher file for every model (--fisher F1,F2,...); %s has none", mi.Path)
			}
		}
	}
	if p.Method == "regmean" {
		for _, mi := range p.Models {
			if mi.Stats == "" && p.Calib == "" {
				return fmt.Errorf("regmean needs statistics for every model (--stats S1,S2,...) or --calib for MLPs; %s has none", mi.Path)
			}
		}
	}
	return nil
}

var layerIndex = regexp.MustCompile(`(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)\.`)

// LayerOf returns the layer index in a tensor name such as
// "model.layers.12.mlp.up_proj.weight", or -1.
func LayerOf(name string) int {
	m := layerIndex.FindStringSubmatch(name)
	if m == nil {
		return -1
	}
	n, err := strconv.Atoi(m[1])
	if err != nil {
		return -1
	}
	return n
}

// Depth returns the relative depth t mergekit gives a tensor: layer i of n
// has t = i/(n-1) (1 when n == 1); tensors outside the layers have t = 0.
func Depth(name string, numLayers int) float64 {
	i := LayerOf(name)
	switch {
	case i < 0:
		return 0
	case numLayers <= 1:
		return 1
	}
	return float64(i) / float64(numLayers-1)
}
