package merge

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Setting is a number as mergekit's YAML allows it: a constant, a gradient
// (a list of numbers interpolated over the depth of the model), or a list of
// conditions {filter, value} where the first whose filter is a substring of
// the tensor name (or is empty or "*") gives the value.
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
// tensor's layer index over the number of layers minus one; values outside
// are clamped), and false when no condition applies. Gradients interpolate
// linearly between their points as mergekit does.
func (s Setting) Eval(tensor string, t float64) (float64, bool) {
	switch {
	case s.Value != nil:
		return *s.Value, true
	case len(s.Gradient) == 1:
		return s.Gradient[0], true
	case len(s.Gradient) > 1:
		if !(t > 0) { // also NaN
			t = 0
		}
		t = min(t, 1)
		scaled := t * float64(len(s.Gradient)-1)
		i0 := min(int(scaled), len(s.Gradient)-1)
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

// Numbers calls f with every number the Setting holds (constant, gradient
// points, conditional values), stopping at the first error.
func (s Setting) Numbers(f func(float64) error) error {
	if s.Value != nil {
		if err := f(*s.Value); err != nil {
			return err
		}
	}
	for _, v := range s.Gradient {
		if err := f(v); err != nil {
			return err
		}
	}
	for _, c := range s.Conds {
		if err := c.Value.Numbers(f); err != nil {
			return err
		}
	}
	return nil
}

// Constant returns the Setting's value when it is the same for every
// tensor (a constant, or a one-point gradient).
func (s Setting) Constant() (float64, bool) {
	switch {
	case s.Value != nil:
		return *s.Value, true
	case len(s.Gradient) == 1:
		return s.Gradient[0], true
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

// MaxLayers bounds the layer index LayerOf accepts; a larger number in a
// tensor name is not a layer index.
const MaxLayers = 1 << 20

// layerWords are the path components that precede a layer index.
var layerWords = []string{"layers", "layer", "h", "blocks", "block"}

// LayerOf returns the layer index in a tensor name such as
// "model.layers.12.mlp.up_proj.weight" (the first component "layers",
// "layer", "h", "blocks" or "block" followed by a number and a dot), or -1
// (also for an index of MaxLayers or more).
func LayerOf(name string) int {
	for start := 0; start < len(name); {
		end := strings.IndexByte(name[start:], '.')
		if end < 0 {
			return -1
		}
		end += start
		if slices.Contains(layerWords, name[start:end]) {
			rest := name[end+1:]
			dot := strings.IndexByte(rest, '.')
			if dot > 0 {
				if n, ok := layerNumber(rest[:dot]); ok {
					return n
				}
			}
		}
		start = end + 1
	}
	return -1
}

// layerNumber parses a decimal layer index below MaxLayers.
func layerNumber(s string) (int, bool) {
	n := 0
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = 10*n + int(c-'0')
		if n >= MaxLayers {
			return 0, false
		}
	}
	return n, true
}

// Depth returns the relative depth t mergekit gives a tensor: layer i of n
// has t = i/(n-1) (1 when n == 1); tensors outside the layers have t = 0.
// The result is within [0, 1].
func Depth(name string, numLayers int) float64 {
	i := LayerOf(name)
	switch {
	case i < 0:
		return 0
	case numLayers <= 1:
		return 1
	}
	return math.Min(1, float64(i)/float64(numLayers-1))
}

// Or returns s with fallback as its value where s gives none: s itself when
// it is a constant, a gradient or conditions of which one matches every
// tensor, else s's conditions followed by fallback's (or by fallback as a
// condition without filter). It is mergekit's lookup of a parameter through
// its levels (a source's, a slice's, a module's, the global ones), which
// skips a level whose conditions match nothing.
func (s Setting) Or(fallback Setting) Setting {
	if s.Conds == nil || !fallback.IsSet() {
		return s
	}
	for _, c := range s.Conds {
		if c.Filter == "" || c.Filter == "*" {
			return s
		}
	}
	out := Setting{Conds: slices.Clip(slices.Clone(s.Conds))}
	if fallback.Conds != nil {
		out.Conds = append(out.Conds, fallback.Conds...)
	} else {
		out.Conds = append(out.Conds, Cond{Value: fallback})
	}
	return out
}
