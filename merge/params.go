package merge

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Kind is the type of a method parameter.
type Kind int

// Parameter kinds.
const (
	// Number is a real number. A Number parameter with Varies set is a
	// mergekit setting: a constant, a gradient over depth or a list of
	// {filter, value} conditions (see Setting).
	Number Kind = iota
	// Bool is true or false.
	Bool
	// Int is an integer.
	Int
	// String is a word: one of Param.Choices when they are given.
	String
	// Path is a file the merge reads; every Path is an input of the run.
	Path
	// List is a list of words (comma-separated on the command line).
	List
)

func (k Kind) String() string {
	return [...]string{"number", "bool", "int", "string", "file", "list"}[k]
}

// Scope says where a parameter is given.
type Scope int

// Parameter scopes.
const (
	// Global parameters are given once per merge (mergekit's top-level
	// parameters:).
	Global Scope = iota
	// PerModel parameters are given for each input model (mergekit's
	// models[i].parameters); on the command line as one value for all or a
	// comma-separated value per model. A per-model parameter given among the
	// global parameters is every model's default, as in mergekit.
	PerModel
)

// Param describes one parameter of a merge method: its name in YAML
// configurations and on the command line, its type, scope and default, and
// how its values are checked.
type Param struct {
	// Name is the YAML name (mergekit's spelling where mergekit has the
	// parameter), e.g. "density", "calib_key".
	Name string
	// Flag is the command-line flag without dashes; "" means Name with
	// underscores as dashes.
	Flag  string
	Kind  Kind
	Scope Scope
	// Default is the value when the parameter is not given (unused when
	// Required).
	Default  Value
	Required bool
	// Varies allows a Number to vary with depth and by tensor name.
	Varies bool
	// Doc is a one-line description for --help.
	Doc string
	// Choices are the allowed words of a String parameter.
	Choices []string
	// Check validates every number of a Number or Int parameter (each point
	// of a gradient, each conditional value); nil accepts any finite number.
	Check func(v float64) error
	// Hidden parameters are accepted in configurations only, not as
	// command-line flags (mergekit options with no effect here).
	Hidden bool
	// Decode, if set, replaces the kind's decoding of a word (a flag's value
	// or a YAML scalar), e.g. to accept mergekit's spelling of an option.
	Decode func(s string) (Value, error)
}

// FlagName returns the parameter's command-line flag without dashes.
func (p Param) FlagName() string {
	if p.Flag != "" {
		return p.Flag
	}
	return strings.ReplaceAll(p.Name, "_", "-")
}

// Value is the value of one parameter; which field holds it depends on the
// parameter's Kind.
type Value struct {
	Num  Setting  // Number
	Bool bool     // Bool
	Int  int64    // Int
	Text string   // String, Path
	List []string // List
}

// Num returns a constant Number value.
func Num(v float64) Value { return Value{Num: Const(v)} }

// Varying returns a Number value that may vary with depth and tensor name.
func Varying(s Setting) Value { return Value{Num: s} }

// Flag returns a Bool value.
func Flag(b bool) Value { return Value{Bool: b} }

// IntValue returns an Int value.
func IntValue(i int64) Value { return Value{Int: i} }

// Text returns a String or Path value.
func Text(s string) Value { return Value{Text: s} }

// Words returns a List value.
func Words(w ...string) Value { return Value{List: w} }

// Params holds parameter values by name.
type Params map[string]Value

// format renders a value of kind k for messages.
func (v Value) format(k Kind) string {
	switch k {
	case Number:
		return v.Num.String()
	case Bool:
		return strconv.FormatBool(v.Bool)
	case Int:
		return strconv.FormatInt(v.Int, 10)
	case List:
		return strings.Join(v.List, ",")
	}
	return v.Text
}

// ParamError is a parameter value that is refused; it names the parameter.
type ParamError struct {
	Param string // the parameter's name
	Err   error
}

func (e *ParamError) Error() string { return fmt.Sprintf("parameter %s: %v", e.Param, e.Err) }
func (e *ParamError) Unwrap() error { return e.Err }

// InRange returns a Check accepting finite numbers between lo and hi,
// excluding an end when its open flag is set.
func InRange(lo, hi float64, loOpen, hiOpen bool) func(float64) error {
	l, h := "[", "]"
	if loOpen {
		l = "("
	}
	if hiOpen {
		h = ")"
	}
	return func(v float64) error {
		ok := v >= lo && v <= hi && !(loOpen && v == lo) && !(hiOpen && v == hi)
		if !ok {
			return fmt.Errorf("%g is not in %s%g, %g%s", v, l, lo, hi, h)
		}
		return nil
	}
}

// AtLeast returns a Check accepting finite numbers of at least lo.
func AtLeast(lo float64) func(float64) error {
	return func(v float64) error {
		if !(v >= lo) || math.IsInf(v, 0) {
			return fmt.Errorf("%g must be a finite number of at least %g", v, lo)
		}
		return nil
	}
}

func finiteCheck(v float64) error {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return fmt.Errorf("%g is not a finite number", v)
	}
	return nil
}

// check validates a value of the parameter.
func (p Param) check(v Value) error {
	num := func(x float64) error {
		if err := finiteCheck(x); err != nil {
			return err
		}
		if p.Check != nil {
			return p.Check(x)
		}
		return nil
	}
	switch p.Kind {
	case Number:
		if !p.Varies && v.Num.IsSet() {
			if _, ok := v.Num.Constant(); !ok {
				return fmt.Errorf("must be a single number, not %s", v.Num)
			}
		}
		return v.Num.Numbers(num)
	case Int:
		return num(float64(v.Int))
	case String:
		if len(p.Choices) > 0 && !slices.Contains(p.Choices, v.Text) {
			return fmt.Errorf("%q: want %s", v.Text, strings.Join(p.Choices, ", "))
		}
	case Path:
		if v.Text == "" {
			return fmt.Errorf("empty file name")
		}
	}
	return nil
}

// ParseValue decodes a word (a command-line value or a YAML scalar) as a
// value of the parameter, and checks it.
func (p Param) ParseValue(s string) (Value, error) {
	v, err := p.parse(strings.TrimSpace(s))
	if err == nil {
		err = p.check(v)
	}
	if err != nil {
		return Value{}, &ParamError{Param: p.Name, Err: err}
	}
	return v, nil
}

func (p Param) parse(s string) (Value, error) {
	if p.Decode != nil {
		return p.Decode(s)
	}
	switch p.Kind {
	case Number:
		x, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return Value{}, fmt.Errorf("%q is not a number", s)
		}
		return Num(x), nil
	case Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return Value{}, fmt.Errorf("%q is not true or false", s)
		}
		return Flag(b), nil
	case Int:
		i, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return Value{}, fmt.Errorf("%q is not an integer", s)
		}
		return IntValue(i), nil
	case List:
		var w []string
		for _, x := range strings.Split(s, ",") {
			if x = strings.TrimSpace(x); x != "" {
				w = append(w, x)
			}
		}
		return Words(w...), nil
	}
	return Text(s), nil
}

// ParseYAML decodes a YAML node as a value of the parameter, and checks it:
// a Number that Varies may be a gradient or a list of conditions, a List a
// YAML list, anything else a scalar.
func (p Param) ParseYAML(n *yaml.Node) (Value, error) {
	v, err := p.parseYAML(n)
	if err == nil {
		err = p.check(v)
	}
	if err != nil {
		var pe *ParamError
		if errors.As(err, &pe) {
			return Value{}, err
		}
		return Value{}, &ParamError{Param: p.Name, Err: err}
	}
	return v, nil
}

func (p Param) parseYAML(n *yaml.Node) (Value, error) {
	switch {
	case p.Kind == Number && p.Decode == nil:
		s, err := parseSetting(n)
		if err != nil {
			return Value{}, err
		}
		return Varying(s), nil
	case p.Kind == List && n.Kind == yaml.SequenceNode:
		var w []string
		for _, e := range n.Content {
			if e.Kind != yaml.ScalarNode {
				return Value{}, fmt.Errorf("line %d: a list of words", e.Line)
			}
			w = append(w, e.Value)
		}
		return Words(w...), nil
	case n.Kind != yaml.ScalarNode:
		return Value{}, fmt.Errorf("line %d: must be a single value", n.Line)
	}
	return p.parse(n.Value)
}

// parseSetting reads a number, a list of numbers (gradient) or a list of
// {filter, value} conditions.
func parseSetting(n *yaml.Node) (Setting, error) {
	switch n.Kind {
	case yaml.ScalarNode:
		v, err := strconv.ParseFloat(n.Value, 64)
		if err != nil {
			return Setting{}, fmt.Errorf("line %d: %q is not a number", n.Line, n.Value)
		}
		return Const(v), nil
	case yaml.SequenceNode:
		if len(n.Content) == 0 {
			return Setting{}, fmt.Errorf("line %d: empty list", n.Line)
		}
		if n.Content[0].Kind == yaml.ScalarNode {
			var g []float64
			for _, e := range n.Content {
				if e.Kind != yaml.ScalarNode {
					return Setting{}, fmt.Errorf("line %d: a gradient is a list of numbers", e.Line)
				}
				v, err := strconv.ParseFloat(e.Value, 64)
				if err != nil {
					return Setting{}, fmt.Errorf("line %d: %q is not a number", e.Line, e.Value)
				}
				g = append(g, v)
			}
			return Setting{Gradient: g}, nil
		}
		var s Setting
		for _, e := range n.Content {
			if e.Kind != yaml.MappingNode {
				return Setting{}, fmt.Errorf("line %d: want {filter: ..., value: ...}", e.Line)
			}
			var c Cond
			have := false
			for k := 0; k+1 < len(e.Content); k += 2 {
				switch e.Content[k].Value {
				case "filter":
					if e.Content[k+1].Kind != yaml.ScalarNode {
						return Setting{}, fmt.Errorf("line %d: a filter is a word", e.Content[k+1].Line)
					}
					c.Filter = e.Content[k+1].Value
				case "value":
					v, err := parseSetting(e.Content[k+1])
					if err != nil {
						return Setting{}, err
					}
					c.Value, have = v, true
				default:
					return Setting{}, fmt.Errorf("line %d: unsupported key %q in a condition", e.Content[k].Line, e.Content[k].Value)
				}
			}
			if !have {
				return Setting{}, fmt.Errorf("line %d: condition without a value", e.Line)
			}
			s.Conds = append(s.Conds, c)
		}
		return s, nil
	}
	return Setting{}, fmt.Errorf("line %d: want a number, a list of numbers or a list of conditions", n.Line)
}
