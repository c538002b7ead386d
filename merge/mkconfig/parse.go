package mkconfig

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Error is a configuration error at a line of its file.
type Error struct {
	File string // "" when parsing bytes
	Line int    // 0 when the error concerns the whole document
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		b.WriteString(": ")
	}
	if e.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	b.WriteString(e.Msg)
	return b.String()
}

func errAt(line int, format string, a ...any) error {
	return &Error{Line: line, Msg: fmt.Sprintf(format, a...)}
}

// ParseOptions allows extension keys beside mergekit's.
type ParseOptions struct {
	// TopLevelKeys may appear at the top level of a configuration with a
	// scalar value (kept in Config.Extra).
	TopLevelKeys []string
	// ModelKeys may appear in an entry of models: with a scalar value (kept
	// in InputModel.Extra).
	ModelKeys []string
}

// WtoolKeys are the extension keys wtool's own merge methods read from a
// configuration today (merge/config.go): top-level seed, spec, layers, act,
// calib, calib_key, stats, align; per model fisher and stats.
var WtoolKeys = ParseOptions{
	TopLevelKeys: []string{"seed", "spec", "layers", "act", "calib", "calib_key", "stats", "align"},
	ModelKeys:    []string{"fisher", "stats"},
}

// ReadFile reads a single-document configuration file with WtoolKeys;
// errors name the file.
func ReadFile(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c, err := ParseWith(b, WtoolKeys)
	return c, withFile(err, path)
}

func withFile(err error, path string) error {
	var e *Error
	if errors.As(err, &e) && e.File == "" {
		e2 := *e
		e2.File = path
		return &e2
	}
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// Parse parses a single-document configuration with WtoolKeys.
func Parse(data []byte) (*Config, error) { return ParseWith(data, WtoolKeys) }

// ParseWith parses a single-document configuration. A name: key is refused
// (it belongs to multi-stage files: see ParseMulti).
func ParseWith(data []byte, o ParseOptions) (*Config, error) {
	docs, err := decodeDocs(data)
	if err != nil {
		return nil, err
	}
	if len(docs) != 1 {
		return nil, errAt(docs[1].Line, "more than one YAML document: a multi-stage configuration (mergekit-multi) is read with ParseMulti")
	}
	c, err := parseDoc(docs[0], o, false)
	if err != nil {
		return nil, err
	}
	c.Source = slices.Clone(data)
	return c, nil
}

// decodeDocs splits a stream into its documents, refusing empty ones.
func decodeDocs(data []byte) ([]*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []*yaml.Node
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, &Error{Msg: "YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}
		}
		docs = append(docs, &n)
	}
	if len(docs) == 0 {
		return nil, &Error{Msg: "the configuration is empty"}
	}
	for i, d := range docs {
		if len(d.Content) == 0 || (d.Content[0].Kind == yaml.ScalarNode && d.Content[0].Tag == "!!null") {
			return nil, errAt(d.Line, "YAML document %d is empty", i+1)
		}
	}
	return docs, nil
}

// --- node helpers

func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

type pair struct {
	key  string
	line int
	val  *yaml.Node
}

// mapping returns a mapping's pairs, with merge keys (<<) applied and
// duplicate keys refused.
func mapping(n *yaml.Node, what string) ([]pair, error) {
	budget := maxMerged
	return mappingB(n, what, &budget)
}

// maxMerged bounds the work merge keys may cause in one mapping (nested
// merges of aliases could otherwise grow exponentially).
const maxMerged = 10000

func mappingB(n *yaml.Node, what string, budget *int) ([]pair, error) {
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		return nil, errAt(n.Line, "%s must be a mapping (key: value), not %s", what, describe(n))
	}
	*budget -= 1 + len(n.Content)/2
	if *budget < 0 {
		return nil, errAt(n.Line, "%s: merge keys (<<) expand to too much", what)
	}
	var out []pair
	seen := map[string]int{}
	var merged []pair
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return nil, errAt(k.Line, "%s: keys must be plain strings", what)
		}
		if k.Tag == "!!merge" {
			srcs := []*yaml.Node{resolve(v)}
			if srcs[0].Kind == yaml.SequenceNode {
				srcs = srcs[0].Content
			}
			for _, s := range srcs {
				ps, err := mappingB(s, "a merged mapping (<<)", budget)
				if err != nil {
					return nil, err
				}
				merged = append(merged, ps...)
			}
			continue
		}
		if first, dup := seen[k.Value]; dup {
			return nil, errAt(k.Line, "%s: key %q appears twice (first on line %d)", what, k.Value, first)
		}
		seen[k.Value] = k.Line
		out = append(out, pair{k.Value, k.Line, v})
	}
	for _, p := range merged { // explicit keys win over merged ones
		if _, ok := seen[p.key]; !ok {
			seen[p.key] = p.line
			out = append(out, p)
		}
	}
	return out, nil
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "empty"
		}
		return fmt.Sprintf("%q", n.Value)
	}
	return "something else"
}

func isNull(n *yaml.Node) bool {
	n = resolve(n)
	return n.Kind == yaml.ScalarNode && n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) == 0 && null11.MatchString(n.Value) && n.Style&yaml.TaggedStyle == 0
}

func scalar(n *yaml.Node, what string) (Value, error) {
	n = resolve(n)
	if n.Kind != yaml.ScalarNode {
		return Value{}, errAt(n.Line, "%s must be a single value, not %s", what, describe(n))
	}
	return scalarValue(n)
}

// extraField reads an extension key's value: a scalar or a list of
// scalars.
func extraField(p pair) (Field, error) {
	f := Field{Key: p.key, Line: p.line}
	n := resolve(p.val)
	if n.Kind == yaml.SequenceNode {
		f.List = []Value{}
		for _, e := range n.Content {
			v, err := scalar(e, p.key)
			if err != nil {
				return f, err
			}
			f.List = append(f.List, v)
		}
		return f, nil
	}
	v, err := scalar(n, p.key)
	f.Value = v
	return f, err
}

func str(n *yaml.Node, what string) (string, error) {
	v, err := scalar(n, what)
	if err != nil {
		return "", err
	}
	if v.Kind != String {
		// PyYAML read a number or boolean where a string is wanted: pydantic
		// refuses it for str fields
		return "", errAt(v.Line, "%s must be a string, not the %s %s (quote it)", what, v.Kind, resolve(n).Value)
	}
	if v.Str == "" {
		return "", errAt(v.Line, "%s is empty", what)
	}
	return v.Str, nil
}

func integer(n *yaml.Node, what string) (int, error) {
	v, err := scalar(n, what)
	if err != nil {
		return 0, err
	}
	if v.Kind != Number || !v.Int {
		return 0, errAt(v.Line, "%s must be an integer, not %s", what, describe(resolve(n)))
	}
	if v.Num > 1<<31 || v.Num < -(1<<31) {
		return 0, errAt(v.Line, "%s: %s is out of range", what, resolve(n).Value)
	}
	return int(v.Num), nil
}

func boolean(n *yaml.Node, what string) (bool, error) {
	v, err := scalar(n, what)
	if err != nil {
		return false, err
	}
	if v.Kind != Bool {
		return false, errAt(v.Line, "%s must be true or false, not %s", what, describe(resolve(n)))
	}
	return v.Bool, nil
}

func unknown(p pair, where string, allowed []string) error {
	return errAt(p.line, "unknown key %q in %s (allowed: %s)", p.key, where, strings.Join(allowed, ", "))
}

// eachKey calls f on a mapping's pairs in order, refusing a key that is not
// in allowed (where names the mapping).
func eachKey(ps []pair, where string, allowed []string, f func(p pair) error) error {
	for _, p := range ps {
		if !slices.Contains(allowed, p.key) {
			return unknown(p, where, allowed)
		}
		if err := f(p); err != nil {
			return err
		}
	}
	return nil
}

// eachEntry calls f on every entry of a list of mappings (what, a list of
// the entries described by of) with the entry's name what[i], its node and
// its pairs.
func eachEntry(n *yaml.Node, what, of string, f func(where string, e *yaml.Node, ps []pair) error) error {
	n = resolve(n)
	if n.Kind != yaml.SequenceNode {
		return errAt(n.Line, "%s must be a list of %s, not %s", what, of, describe(n))
	}
	for i, e := range n.Content {
		e = resolve(e)
		where := fmt.Sprintf("%s[%d]", what, i)
		ps, err := mapping(e, where)
		if err != nil {
			return err
		}
		if err := f(where, e, ps); err != nil {
			return err
		}
	}
	return nil
}

// optRef reads an optional model reference (nil when null).
func optRef(n *yaml.Node, what string) (*ModelRef, error) {
	if isNull(n) {
		return nil, nil
	}
	r, err := parseRef(n, what)
	if err != nil {
		return nil, err
	}
	return &r, nil
}

// --- the document

var topKeys = []string{"models", "slices", "modules", "merge_method", "base_model", "dtype", "out_dtype",
	"parameters", "tokenizer_source", "tokenizer", "chat_template"}

func parseDoc(doc *yaml.Node, o ParseOptions, allowName bool) (*Config, error) {
	root := doc.Content[0]
	ps, err := mapping(root, "a configuration")
	if err != nil {
		return nil, err
	}
	c := &Config{Line: resolve(root).Line, Lines: map[string]int{}}
	var haveMethod bool
	for _, p := range ps {
		c.Lines[p.key] = p.line
		var err error
		switch p.key {
		case "name":
			if !allowName {
				return nil, errAt(p.line, "name: belongs to multi-stage configurations (mergekit-multi): read them with ParseMulti")
			}
			c.Name, err = str(p.val, "name")
		case "models":
			if !isNull(p.val) {
				c.Models, err = parseModels(p.val, "models", o)
			}
		case "slices":
			if !isNull(p.val) {
				c.Slices, err = parseSlices(p.val, "slices")
			}
		case "modules":
			if !isNull(p.val) {
				c.Modules, err = parseModules(p.val, o)
			}
		case "merge_method":
			c.MergeMethod, err = str(p.val, "merge_method")
			haveMethod = true
		case "base_model":
			c.BaseModel, err = optRef(p.val, "base_model")
		case "dtype":
			if !isNull(p.val) {
				c.DType, err = parseDType(p.val, "dtype")
			}
		case "out_dtype":
			if !isNull(p.val) {
				c.OutDType, err = parseDType(p.val, "out_dtype")
			}
		case "parameters":
			c.Parameters, err = parseParams(p.val, "parameters")
		case "tokenizer_source":
			if !isNull(p.val) {
				var s TokenizerSource
				s, err = parseTokenizerSource(p.val, "tokenizer_source")
				c.TokenizerSource = &s
			}
		case "tokenizer":
			if !isNull(p.val) {
				c.Tokenizer, err = parseTokenizer(p.val)
			}
		case "chat_template":
			if !isNull(p.val) {
				var v Value
				if v, err = scalar(p.val, "chat_template"); err == nil {
					if v.Kind != String {
						err = errAt(v.Line, "chat_template must be a string")
					}
					c.ChatTemplate, c.HasChatTemplate = v.Str, true
				}
			}
		default:
			if !slices.Contains(o.TopLevelKeys, p.key) {
				allowed := append(slices.Clone(topKeys), o.TopLevelKeys...)
				if allowName {
					allowed = append(allowed, "name")
				}
				return nil, unknown(p, "the configuration", allowed)
			}
			var f Field
			if f, err = extraField(p); err == nil {
				c.Extra = append(c.Extra, f)
			}
		}
		if err != nil {
			return nil, err
		}
	}
	if !haveMethod {
		return nil, errAt(c.Line, "merge_method is missing")
	}
	set := 0
	for _, b := range []bool{len(c.Models) > 0, len(c.Slices) > 0, len(c.Modules) > 0} {
		if b {
			set++
		}
	}
	if set != 1 {
		return nil, errAt(c.Line, "exactly one of models:, slices: or modules: must be given (and not be empty)")
	}
	if c.TokenizerSource != nil && c.Tokenizer != nil {
		return nil, errAt(c.Lines["tokenizer"], "tokenizer_source: and tokenizer: cannot both be given (tokenizer: has a source: key)")
	}
	return c, nil
}

// dtypes accepted by mergekit's dtype_from_name ("torch." prefix allowed).
var dtypes = []string{"bfloat16", "float16", "float32", "int64"}

func parseDType(n *yaml.Node, what string) (string, error) {
	s, err := str(n, what)
	if err != nil {
		return "", err
	}
	d := strings.TrimPrefix(s, "torch.")
	if !slices.Contains(dtypes, d) {
		return "", errAt(resolve(n).Line, "%s: unknown dtype %q (mergekit accepts %s)", what, s, strings.Join(dtypes, ", "))
	}
	return d, nil
}

func parseRef(n *yaml.Node, what string) (ModelRef, error) {
	n = resolve(n)
	if n.Kind == yaml.MappingNode {
		return parseRefMapping(n, what)
	}
	s, err := str(n, what)
	if err != nil {
		return ModelRef{}, err
	}
	r, err := ParseModelRef(s)
	if err != nil {
		return ModelRef{}, errAt(n.Line, "%s: %v", what, err)
	}
	r.Line = n.Line
	return r, nil
}

// parseRefMapping reads the mapping form {model: PATH|{path, revision},
// lora: ..., override_architecture: NAME}.
func parseRefMapping(n *yaml.Node, what string) (ModelRef, error) {
	ps, err := mapping(n, what)
	if err != nil {
		return ModelRef{}, err
	}
	r := ModelRef{Line: n.Line}
	have := false
	err = eachKey(ps, what, []string{"model", "lora", "override_architecture"}, func(p pair) (err error) {
		switch p.key {
		case "model":
			r.Model, err = parseModelPathNode(p.val, what+".model")
			have = true
		case "lora":
			if !isNull(p.val) {
				var l ModelPath
				l, err = parseModelPathNode(p.val, what+".lora")
				r.LoRA = &l
			}
		case "override_architecture":
			if !isNull(p.val) {
				r.OverrideArchitecture, err = str(p.val, what+".override_architecture")
			}
		}
		return err
	})
	if err != nil {
		return ModelRef{}, err
	}
	if !have {
		return ModelRef{}, errAt(n.Line, "%s: the model key is missing", what)
	}
	return r, nil
}

func parseModelPathNode(n *yaml.Node, what string) (ModelPath, error) {
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		s, err := str(n, what)
		if err != nil {
			return ModelPath{}, err
		}
		p, err := parseModelPath(s)
		if err != nil {
			return ModelPath{}, errAt(n.Line, "%s: %v", what, err)
		}
		return p, nil
	}
	ps, err := mapping(n, what)
	if err != nil {
		return ModelPath{}, err
	}
	var mp ModelPath
	err = eachKey(ps, what, []string{"path", "revision"}, func(p pair) (err error) {
		if p.key == "path" {
			mp.Path, err = str(p.val, what+".path")
		} else if !isNull(p.val) {
			mp.Revision, err = str(p.val, what+".revision")
		}
		return err
	})
	if err != nil {
		return ModelPath{}, err
	}
	if mp.Path == "" {
		return ModelPath{}, errAt(n.Line, "%s: path is missing", what)
	}
	return mp, nil
}

func parseModels(n *yaml.Node, what string, o ParseOptions) ([]InputModel, error) {
	var out []InputModel
	allowed := append([]string{"model", "parameters"}, o.ModelKeys...)
	err := eachEntry(n, what, "{model: ..., parameters: ...}", func(where string, e *yaml.Node, ps []pair) error {
		m := InputModel{Line: e.Line}
		have := false
		err := eachKey(ps, where, allowed, func(p pair) (err error) {
			switch p.key {
			case "model":
				m.Model, err = parseRef(p.val, where+".model")
				have = true
			case "parameters":
				m.Parameters, err = parseParams(p.val, where+".parameters")
			default:
				var f Field
				if f, err = extraField(p); err == nil {
					m.Extra = append(m.Extra, f)
				}
			}
			return err
		})
		if err != nil {
			return err
		}
		if !have {
			return errAt(e.Line, "%s: the model key is missing", where)
		}
		out = append(out, m)
		return nil
	})
	return out, err
}

func parseSlices(n *yaml.Node, what string) ([]OutputSlice, error) {
	var out []OutputSlice
	err := eachEntry(n, what, "{sources: [...]}", func(where string, e *yaml.Node, ps []pair) error {
		s := OutputSlice{Line: e.Line}
		have := false
		err := eachKey(ps, where, []string{"sources", "base_model", "residual_weight", "parameters"}, func(p pair) (err error) {
			switch p.key {
			case "sources":
				s.Sources, err = parseSources(p.val, where+".sources")
				have = true
			case "base_model":
				s.BaseModel, err = optRef(p.val, where+".base_model")
			case "residual_weight":
				if !isNull(p.val) {
					var v Value
					if v, err = scalar(p.val, where+".residual_weight"); err == nil {
						var f float64
						if f, err = v.Float(); err == nil {
							s.ResidualWeight = &f
						}
					}
				}
			case "parameters":
				s.Parameters, err = parseParams(p.val, where+".parameters")
			}
			return err
		})
		if err != nil {
			return err
		}
		if !have || len(s.Sources) == 0 {
			return errAt(e.Line, "%s: sources: is missing or empty", where)
		}
		for _, src := range s.Sources[1:] {
			if src.Len() != s.Sources[0].Len() {
				return errAt(src.Line, "%s: every source of a slice must have the same number of layers: %s has %d (layer_range [%d, %d]), %s has %d",
					where, src.Model, src.Len(), src.LayerRange[0], src.LayerRange[1], s.Sources[0].Model, s.Sources[0].Len())
			}
		}
		out = append(out, s)
		return nil
	})
	return out, err
}

func parseSources(n *yaml.Node, what string) ([]InputSlice, error) {
	var out []InputSlice
	err := eachEntry(n, what, "{model: ..., layer_range: [start, end]}", func(where string, e *yaml.Node, ps []pair) error {
		s := InputSlice{Line: e.Line}
		haveModel, haveRange := false, false
		err := eachKey(ps, where, []string{"model", "layer_range", "parameters"}, func(p pair) (err error) {
			switch p.key {
			case "model":
				s.Model, err = parseRef(p.val, where+".model")
				haveModel = true
			case "layer_range":
				s.LayerRange, err = parseRange(p.val, where+".layer_range")
				haveRange = true
			case "parameters":
				s.Parameters, err = parseParams(p.val, where+".parameters")
			}
			return err
		})
		if err != nil {
			return err
		}
		if !haveModel {
			return errAt(e.Line, "%s: the model key is missing", where)
		}
		if !haveRange {
			return errAt(e.Line, "%s: layer_range is missing", where)
		}
		out = append(out, s)
		return nil
	})
	return out, err
}

func parseRange(n *yaml.Node, what string) ([2]int, error) {
	n = resolve(n)
	if n.Kind != yaml.SequenceNode || len(n.Content) != 2 {
		return [2]int{}, errAt(n.Line, "%s must be [start, end], not %s", what, describe(n))
	}
	a, err := integer(n.Content[0], what+"[0]")
	if err != nil {
		return [2]int{}, err
	}
	b, err := integer(n.Content[1], what+"[1]")
	if err != nil {
		return [2]int{}, err
	}
	if a < 0 || b <= a {
		return [2]int{}, errAt(n.Line, "%s [%d, %d]: want 0 <= start < end (layers start..end-1)", what, a, b)
	}
	return [2]int{a, b}, nil
}

func parseModules(n *yaml.Node, o ParseOptions) ([]OutputModule, error) {
	ps, err := mapping(n, "modules")
	if err != nil {
		return nil, err
	}
	var out []OutputModule
	for _, p := range ps {
		where := "modules." + p.key
		mps, err := mapping(p.val, where)
		if err != nil {
			return nil, err
		}
		m := OutputModule{Name: p.key, Line: p.line}
		err = eachKey(mps, where, []string{"models", "slices", "parameters"}, func(q pair) (err error) {
			switch {
			case q.key == "parameters":
				m.Parameters, err = parseParams(q.val, where+".parameters")
			case isNull(q.val):
			case q.key == "models":
				m.Models, err = parseModels(q.val, where+".models", o)
			default:
				m.Slices, err = parseSlices(q.val, where+".slices")
			}
			return err
		})
		if err != nil {
			return nil, err
		}
		if (len(m.Models) > 0) == (len(m.Slices) > 0) {
			return nil, errAt(p.line, "%s: exactly one of models: or slices: must be given", where)
		}
		out = append(out, m)
	}
	return out, nil
}

// parseParams reads a parameters: section; null is an empty section.
func parseParams(n *yaml.Node, what string) (Params, error) {
	if isNull(n) {
		return nil, nil
	}
	ps, err := mapping(n, what)
	if err != nil {
		return nil, err
	}
	var out Params
	for _, p := range ps {
		s, err := parseSetting(p.val, what+"."+p.key)
		if err != nil {
			return nil, err
		}
		out = append(out, Param{Name: p.key, Setting: s, Line: p.line})
	}
	return out, nil
}

// parseSetting reads a number, boolean or string; a list of numbers (a
// gradient); or a list of {filter, value} conditions.
func parseSetting(n *yaml.Node, what string) (Setting, error) {
	n = resolve(n)
	s := Setting{Line: n.Line}
	switch n.Kind {
	case yaml.ScalarNode:
		v, err := scalarValue(n)
		if err != nil {
			return s, err
		}
		if v.Kind == Null {
			return s, errAt(n.Line, "%s has no value", what)
		}
		if v.Kind == String {
			// pydantic turns numeric strings into numbers
			if f, ok := parseLaxFloat(v.Str); ok {
				v = Value{Kind: Number, Num: f, Line: v.Line}
			}
		}
		s.Scalar = &v
		return s, nil
	case yaml.MappingNode:
		return s, errAt(n.Line, "%s: a single {filter, value} condition must be written as a list: [{filter: ..., value: ...}] (mergekit fails on the bare mapping when it merges)", what)
	case yaml.SequenceNode:
		if len(n.Content) == 0 {
			return s, errAt(n.Line, "%s is an empty list", what)
		}
		if resolve(n.Content[0]).Kind == yaml.MappingNode {
			for i, e := range n.Content {
				c, err := parseCond(e, fmt.Sprintf("%s[%d]", what, i))
				if err != nil {
					return s, err
				}
				s.Conds = append(s.Conds, c)
			}
			return s, nil
		}
		g, err := gradient(n, what)
		s.Gradient = g
		return s, err
	}
	return s, errAt(n.Line, "%s: want a number, a list of numbers or a list of {filter, value}", what)
}

func gradient(n *yaml.Node, what string) ([]float64, error) {
	var g []float64
	for i, e := range n.Content {
		e = resolve(e)
		if e.Kind != yaml.ScalarNode {
			return nil, errAt(e.Line, "%s[%d]: a gradient is a list of numbers; a list of conditions has only {filter, value} entries", what, i)
		}
		v, err := scalarValue(e)
		if err != nil {
			return nil, err
		}
		f, err := v.Float()
		if err != nil || v.Kind == Null {
			return nil, errAt(e.Line, "%s[%d]: %q is not a number", what, i, e.Value)
		}
		g = append(g, f)
	}
	return g, nil
}

func parseCond(n *yaml.Node, what string) (Cond, error) {
	n = resolve(n)
	ps, err := mapping(n, what)
	if err != nil {
		return Cond{}, errAt(n.Line, "%s: a list of conditions has only {filter, value} entries", what)
	}
	c := Cond{Line: n.Line}
	have := false
	err = eachKey(ps, what, []string{"filter", "value"}, func(p pair) (err error) {
		if p.key == "filter" {
			if !isNull(p.val) {
				var v Value
				if v, err = scalar(p.val, what+".filter"); err == nil {
					c.Filter = v.String()
				}
			}
			return err
		}
		have = true
		v := resolve(p.val)
		switch v.Kind {
		case yaml.SequenceNode:
			if len(v.Content) == 0 {
				return errAt(v.Line, "%s.value is an empty list", what)
			}
			c.Gradient, err = gradient(v, what+".value")
		case yaml.ScalarNode:
			var x Value
			if x, err = scalarValue(v); err == nil {
				if x.Kind == Null {
					err = errAt(v.Line, "%s.value is empty", what)
				} else if x.Kind == String {
					if f, ok := parseLaxFloat(x.Str); ok {
						x = Value{Kind: Number, Num: f, Line: x.Line}
					}
				}
				c.Scalar = &x
			}
		default:
			err = errAt(v.Line, "%s.value must be a number or a list of numbers (conditions do not nest)", what)
		}
		return err
	})
	if err != nil {
		return c, err
	}
	if !have {
		return c, errAt(n.Line, "%s: a condition without value", what)
	}
	return c, nil
}

func parseTokenizerSource(n *yaml.Node, what string) (TokenizerSource, error) {
	n = resolve(n)
	if n.Kind == yaml.ScalarNode {
		s, err := str(n, what)
		if err != nil {
			return TokenizerSource{}, err
		}
		if s == "union" || s == "base" {
			return TokenizerSource{Kind: s, Line: n.Line}, nil
		}
	}
	r, err := parseRef(n, what)
	if err != nil {
		return TokenizerSource{}, err
	}
	return TokenizerSource{Kind: "model", Model: &r, Line: n.Line}, nil
}

func parseTokenizer(n *yaml.Node) (*TokenizerConfig, error) {
	ps, err := mapping(n, "tokenizer")
	if err != nil {
		return nil, err
	}
	t := &TokenizerConfig{Source: TokenizerSource{Kind: "union"}, Line: resolve(n).Line}
	err = eachKey(ps, "tokenizer", []string{"source", "tokens", "pad_to_multiple_of"}, func(p pair) (err error) {
		switch {
		case isNull(p.val):
		case p.key == "source":
			t.Source, err = parseTokenizerSource(p.val, "tokenizer.source")
		case p.key == "tokens":
			t.Tokens, err = parseTokens(p.val)
		default:
			t.PadToMultipleOf, err = integer(p.val, "tokenizer.pad_to_multiple_of")
			if err == nil && t.PadToMultipleOf <= 0 {
				err = errAt(p.line, "tokenizer.pad_to_multiple_of must be positive")
			}
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return t, nil
}

func parseTokens(n *yaml.Node) ([]TokenConfig, error) {
	ps, err := mapping(n, "tokenizer.tokens")
	if err != nil {
		return nil, err
	}
	var out []TokenConfig
	for _, p := range ps {
		where := fmt.Sprintf("tokenizer.tokens[%q]", p.key)
		tc := TokenConfig{Token: p.key, Line: p.line}
		if !isNull(p.val) {
			qs, err := mapping(p.val, where)
			if err != nil {
				return nil, err
			}
			err = eachKey(qs, where, []string{"source", "force"}, func(q pair) (err error) {
				if q.key == "force" {
					tc.Force, err = boolean(q.val, where+".force")
				} else if !isNull(q.val) {
					var s TokenSource
					s, err = parseTokenSource(q.val, where+".source")
					tc.Source = &s
				}
				return err
			})
			if err != nil {
				return nil, err
			}
		}
		out = append(out, tc)
	}
	return out, nil
}

func parseTokenSource(n *yaml.Node, what string) (TokenSource, error) {
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		r, err := parseRef(n, what)
		if err != nil {
			return TokenSource{}, err
		}
		return TokenSource{Kind: "model", Model: &r, TokenID: -1, Line: n.Line}, nil
	}
	ps, err := mapping(n, what)
	if err != nil {
		return TokenSource{}, err
	}
	kind := ""
	for _, p := range ps {
		if p.key == "kind" {
			if kind, err = str(p.val, what+".kind"); err != nil {
				return TokenSource{}, err
			}
		}
	}
	switch kind {
	case "":
		// the mapping form of a model reference
		r, err := parseRefMapping(n, what)
		if err != nil {
			return TokenSource{}, err
		}
		return TokenSource{Kind: "model", Model: &r, TokenID: -1, Line: n.Line}, nil
	case "zero":
		if err := eachKey(ps, what+" (kind: zero)", []string{"kind"}, func(pair) error { return nil }); err != nil {
			return TokenSource{}, err
		}
		return TokenSource{Kind: "zero", TokenID: -1, Line: n.Line}, nil
	case "model_token":
		s := TokenSource{Kind: "model_token", TokenID: -1, Line: n.Line}
		haveID := false
		err = eachKey(ps, what+" (kind: model_token)", []string{"kind", "model", "token_id", "token"}, func(p pair) (err error) {
			switch p.key {
			case "model":
				var r ModelRef
				r, err = parseRef(p.val, what+".model")
				s.Model = &r
			case "token_id":
				if !isNull(p.val) {
					s.TokenID, err = integer(p.val, what+".token_id")
					haveID = true
					if err == nil && s.TokenID < 0 {
						err = errAt(p.line, "%s.token_id must not be negative", what)
					}
				}
			case "token":
				if !isNull(p.val) {
					var v Value
					if v, err = scalar(p.val, what+".token"); err == nil {
						s.Token, s.HasToken = v.String(), true
					}
				}
			}
			return err
		})
		if err != nil {
			return TokenSource{}, err
		}
		if s.Model == nil {
			return TokenSource{}, errAt(n.Line, "%s: kind: model_token needs model:", what)
		}
		if haveID == s.HasToken {
			return TokenSource{}, errAt(n.Line, "%s: kind: model_token needs exactly one of token_id: and token:", what)
		}
		return s, nil
	}
	return TokenSource{}, errAt(n.Line, "%s: unknown kind %q (model_token or zero)", what, kind)
}
