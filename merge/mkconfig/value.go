package mkconfig

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Kind is the type of a scalar Value.
type Kind int

// The kinds of scalar values.
const (
	Null Kind = iota
	Number
	Bool
	String
)

func (k Kind) String() string {
	return [...]string{"null", "number", "boolean", "string"}[k]
}

// Value is one YAML scalar as PyYAML (YAML 1.1) resolves it.
type Value struct {
	Kind Kind
	Num  float64
	// Int reports that a Number was written as an integer.
	Int  bool
	Bool bool
	Str  string
	Line int
}

// NumberValue returns a Number.
func NumberValue(v float64) Value { return Value{Kind: Number, Num: v} }

// BoolValue returns a Bool.
func BoolValue(b bool) Value { return Value{Kind: Bool, Bool: b} }

// StringValue returns a String.
func StringValue(s string) Value { return Value{Kind: String, Str: s} }

// Float returns the value as a number the way mergekit's configuration
// (pydantic) coerces parameter values: a boolean is 1 or 0, a string that
// parses as a number is that number.
func (v Value) Float() (float64, error) {
	switch v.Kind {
	case Number:
		return v.Num, nil
	case Bool:
		if v.Bool {
			return 1, nil
		}
		return 0, nil
	case String:
		if f, ok := parseLaxFloat(v.Str); ok {
			return f, nil
		}
		return 0, errAt(v.Line, "%q is not a number", v.Str)
	}
	return 0, errAt(v.Line, "a value is missing")
}

// Truth returns the value as a boolean the way mergekit uses boolean
// parameters (Python truthiness of the coerced number: 0 is false, anything
// else true).
func (v Value) Truth() (bool, error) {
	if v.Kind == Bool {
		return v.Bool, nil
	}
	f, err := v.Float()
	if err != nil {
		return false, fmt.Errorf("want true or false: %w", err)
	}
	return f != 0, nil
}

// String returns the value as YAML would write it.
func (v Value) String() string {
	switch v.Kind {
	case Number:
		return formatFloat(v.Num, v.Int)
	case Bool:
		return strconv.FormatBool(v.Bool)
	case String:
		return v.Str
	}
	return "null"
}

// formatFloat writes a number as PyYAML writes a Python float (repr, with
// ".0" before an exponent), or as an integer.
func formatFloat(f float64, asInt bool) string {
	switch {
	case math.IsInf(f, 1):
		return ".inf"
	case math.IsInf(f, -1):
		return "-.inf"
	case math.IsNaN(f):
		return ".nan"
	}
	if asInt && f == math.Trunc(f) && math.Abs(f) < 1e15 {
		return strconv.FormatInt(int64(f), 10)
	}
	// Python's repr: shortest round trip, exponent form below 1e-4 and from 1e16
	exp := math.Abs(f) >= 1e16 || (f != 0 && math.Abs(f) < 1e-4)
	var s string
	if exp {
		s = strconv.FormatFloat(f, 'e', -1, 64)
		// Go writes e-05 as e-05 and e+16 as e+16, as Python does
		mant, ex, _ := strings.Cut(s, "e")
		if !strings.Contains(mant, ".") {
			mant += ".0"
		}
		s = mant + "e" + ex
	} else {
		s = strconv.FormatFloat(f, 'f', -1, 64)
		if !strings.Contains(s, ".") {
			s += ".0"
		}
	}
	return s
}

// YAML 1.1 plain scalar resolution, as PyYAML's SafeLoader does it.
var (
	bool11  = regexp.MustCompile(`^(?:yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$`)
	int11   = regexp.MustCompile(`^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)$`)
	float11 = regexp.MustCompile(`^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$`)
	null11  = regexp.MustCompile(`^(?:~|null|Null|NULL|)$`)
	// Python's float(): what pydantic accepts from a string
	laxFloat = regexp.MustCompile(`^[ \t\n\r]*[-+]?(?:(?:[0-9](?:_?[0-9])*)?\.?[0-9](?:_?[0-9])*(?:[eE][-+]?[0-9](?:_?[0-9])*)?|[0-9](?:_?[0-9])*\.|inf|infinity|nan)[ \t\n\r]*$`)
)

func parseLaxFloat(s string) (float64, bool) {
	if !laxFloat.MatchString(strings.ToLower(s)) {
		return 0, false
	}
	t := strings.ToLower(strings.TrimSpace(strings.ReplaceAll(s, "_", "")))
	switch strings.TrimLeft(t, "+-") {
	case "inf", "infinity":
		if strings.HasPrefix(t, "-") {
			return math.Inf(-1), true
		}
		return math.Inf(1), true
	case "nan":
		return math.NaN(), true
	}
	f, err := strconv.ParseFloat(t, 64)
	return f, err == nil
}

func sexagesimal(s string) float64 {
	sign := 1.0
	if strings.HasPrefix(s, "-") {
		sign, s = -1, s[1:]
	} else {
		s = strings.TrimPrefix(s, "+")
	}
	var v float64
	for _, part := range strings.Split(s, ":") {
		f, _ := strconv.ParseFloat(part, 64)
		v = v*60 + f
	}
	return sign * v
}

func resolveInt(s string) (float64, bool) {
	s = strings.ReplaceAll(s, "_", "")
	sign := 1.0
	if strings.HasPrefix(s, "-") {
		sign, s = -1, s[1:]
	} else {
		s = strings.TrimPrefix(s, "+")
	}
	var (
		u   uint64
		err error
	)
	switch {
	case s == "0":
		return 0, true
	case strings.HasPrefix(s, "0b"):
		u, err = strconv.ParseUint(s[2:], 2, 64)
	case strings.HasPrefix(s, "0x"):
		u, err = strconv.ParseUint(s[2:], 16, 64)
	case strings.HasPrefix(s, "0"):
		u, err = strconv.ParseUint(s[1:], 8, 64)
	case strings.Contains(s, ":"):
		return sign * sexagesimal(s), true
	default:
		f, err := strconv.ParseFloat(s, 64)
		return sign * f, err == nil
	}
	return sign * float64(u), err == nil
}

// scalarValue resolves a scalar node: quoted scalars are strings, explicit
// tags are obeyed, plain scalars follow YAML 1.1.
func scalarValue(n *yaml.Node) (Value, error) {
	v := Value{Line: n.Line}
	s := n.Value
	tag := ""
	if n.Style&yaml.TaggedStyle != 0 {
		tag = n.ShortTag()
	}
	quoted := n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle|yaml.LiteralStyle|yaml.FoldedStyle) != 0
	switch {
	case tag == "!!str" || (tag == "" && quoted):
		v.Kind, v.Str = String, s
	case tag == "!!null" || (tag == "" && null11.MatchString(s)):
		v.Kind = Null
	case tag == "!!bool" || (tag == "" && bool11.MatchString(s)):
		if !bool11.MatchString(s) {
			return v, errAt(n.Line, "%q is not a boolean", s)
		}
		v.Kind = Bool
		switch strings.ToLower(s) {
		case "yes", "true", "on":
			v.Bool = true
		}
	case tag == "!!int" || (tag == "" && int11.MatchString(s)):
		f, ok := resolveInt(s)
		if !ok || !int11.MatchString(s) {
			return v, errAt(n.Line, "%q is not an integer", s)
		}
		v.Kind, v.Num, v.Int = Number, f, true
	case tag == "!!float" || (tag == "" && float11.MatchString(s)):
		v.Kind = Number
		t := strings.ToLower(strings.ReplaceAll(s, "_", ""))
		switch {
		case strings.HasSuffix(t, ".inf"):
			v.Num = math.Inf(1)
			if strings.HasPrefix(t, "-") {
				v.Num = math.Inf(-1)
			}
		case t == ".nan":
			v.Num = math.NaN()
		case strings.Contains(t, ":"):
			v.Num = sexagesimal(t)
		default:
			f, err := strconv.ParseFloat(t, 64)
			if err != nil {
				if tag == "!!float" {
					if f2, ok := parseLaxFloat(s); ok {
						v.Num = f2
						break
					}
				}
				return v, errAt(n.Line, "%q is not a number", s)
			}
			v.Num = f
		}
	case tag == "":
		v.Kind, v.Str = String, s
	default:
		return v, errAt(n.Line, "unsupported YAML tag %s", n.Tag)
	}
	return v, nil
}
