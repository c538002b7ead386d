package mkconfig

import (
	"fmt"
	"strings"
)

// Setting is a parameter's value as mergekit allows it: a scalar, a gradient
// (a list of numbers interpolated over the layers of a slice), or a list of
// conditions whose first matching filter gives the value.
type Setting struct {
	// Scalar is set for a single value.
	Scalar *Value
	// Gradient is set for a list of numbers (booleans count as 1 and 0).
	Gradient []float64
	// Conds is set for a list of {filter, value} conditions.
	Conds []Cond
	Line  int
}

// Cond is one {filter, value} condition. Its value is a scalar or a
// gradient (mergekit does not nest conditions).
type Cond struct {
	// Filter is matched as a substring of the tensor name; "" (no filter)
	// and "*" match every tensor.
	Filter   string
	Scalar   *Value
	Gradient []float64
	Line     int
}

// Matches reports whether the condition applies to the tensor.
func (c Cond) Matches(tensor string) bool {
	return c.Filter == "" || c.Filter == "*" || (tensor != "" && strings.Contains(tensor, c.Filter))
}

// Const returns a Setting holding one number.
func Const(v float64) Setting {
	x := NumberValue(v)
	return Setting{Scalar: &x}
}

// Eval returns the setting's value for a tensor at relative depth t of its
// slice (t = i / (n - 1) for the i-th of n layers, 1 for a one-layer slice,
// 0 for the tensors before and after the layers), as mergekit's
// evaluate_setting: a gradient g of n points gives
// (1 - f) g[i] + f g[min(i + 1, n - 1)] with i = int(t (n - 1)) and f the
// remainder; conditions give the first matching one's value. ok is false
// when no condition matches.
func (s Setting) Eval(tensor string, t float64) (v Value, ok bool) {
	switch {
	case s.Scalar != nil:
		return *s.Scalar, true
	case s.Gradient != nil:
		return Value{Kind: Number, Num: interpolate(s.Gradient, t), Line: s.Line}, true
	}
	for _, c := range s.Conds {
		if !c.Matches(tensor) {
			continue
		}
		if c.Scalar != nil {
			return *c.Scalar, true
		}
		return Value{Kind: Number, Num: interpolate(c.Gradient, t), Line: c.Line}, true
	}
	return Value{}, false
}

func interpolate(g []float64, t float64) float64 {
	scaled := t * float64(len(g)-1)
	i0 := int(scaled)
	i0 = max(0, min(i0, len(g)-1))
	i1 := min(len(g)-1, i0+1)
	frac := scaled - float64(i0)
	return (1-frac)*g[i0] + frac*g[i1]
}

// IsSet reports whether the Setting holds anything.
func (s Setting) IsSet() bool { return s.Scalar != nil || s.Gradient != nil || s.Conds != nil }

// values lists every scalar the setting can produce (for type checks).
func (s Setting) values() []Value {
	var out []Value
	if s.Scalar != nil {
		out = append(out, *s.Scalar)
	}
	for _, c := range s.Conds {
		if c.Scalar != nil {
			out = append(out, *c.Scalar)
		}
	}
	return out
}

// Param is one named parameter of a parameters: section.
type Param struct {
	Name    string
	Setting Setting
	Line    int
}

// Params is a parameters: section, in file order.
type Params []Param

// Get returns the named parameter's setting.
func (p Params) Get(name string) (Setting, bool) {
	for _, x := range p {
		if x.Name == name {
			return x.Setting, true
		}
	}
	return Setting{}, false
}

// Set replaces or appends a parameter.
func (p *Params) Set(name string, s Setting) {
	for i := range *p {
		if (*p)[i].Name == name {
			(*p)[i].Setting = s
			return
		}
	}
	*p = append(*p, Param{Name: name, Setting: s})
}

func (s Setting) String() string {
	switch {
	case s.Scalar != nil:
		return s.Scalar.String()
	case s.Gradient != nil:
		return fmt.Sprint(s.Gradient)
	}
	var parts []string
	for _, c := range s.Conds {
		var v string
		if c.Scalar != nil {
			v = c.Scalar.String()
		} else {
			v = fmt.Sprint(c.Gradient)
		}
		if c.Filter == "" {
			parts = append(parts, "{value: "+v+"}")
		} else {
			parts = append(parts, fmt.Sprintf("{filter: %s, value: %s}", c.Filter, v))
		}
	}
	return "[" + strings.Join(parts, ", ") + "]"
}
