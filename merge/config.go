package merge

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

// ReadConfig reads a mergekit-style YAML merge configuration:
//
//	models:
//	  - model: path/to/model-a
//	    parameters: {weight: 0.5, density: [0.3, 0.7]}
//	  - model: path/to/model-b
//	    parameters: {weight: [{filter: mlp, value: 0.5}, {value: 0.2}]}
//	merge_method: ties
//	base_model: path/to/base
//	parameters: {normalize: true, lambda: 1.0}
//	dtype: bfloat16
//
// The keys are models (each with model and parameters), merge_method,
// base_model, dtype, out_dtype and parameters. Parameters are the method's
// (see Method.Params): per-model ones under each model (or under the
// top-level parameters, as every model's default), global ones under the
// top-level parameters. wtool's file parameters may also be given directly:
// a per-model one (fisher, stats) as a key of the model, a global one
// (calib, spec, seed, ...) as a top-level key. Any other key (slices,
// tokenizer_source, ...), an unknown method or parameter, and a key given
// twice in one mapping are errors naming the key and its line: nothing is
// ignored silently.
func ReadConfig(path string) (*Plan, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	p, err := ParseConfig(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

// ParseConfig parses a YAML merge configuration (see ReadConfig). The plan
// it returns passed its method's parameter schema; Plan.Validate checks the
// rest (model counts, a needed base).
func ParseConfig(data []byte) (*Plan, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("the configuration is empty")
		}
		return nil, err
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, fmt.Errorf("line %d: a second YAML document (multi-stage configurations are not supported)", extra.Line)
	} else if !errors.Is(err, io.EOF) {
		return nil, err
	}
	if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, fmt.Errorf("the configuration is not a YAML mapping")
	}
	top := doc.Content[0]
	if err := checkDuplicateKeys(top); err != nil {
		return nil, err
	}
	p := &Plan{}
	var method Method
	for i := 0; i+1 < len(top.Content); i += 2 {
		if top.Content[i].Value == "merge_method" {
			s, err := scalar(top.Content[i+1], "merge_method")
			if err == nil {
				method, err = Lookup(s)
			}
			if err != nil {
				return nil, fmt.Errorf("line %d: merge_method: %w", top.Content[i].Line, err)
			}
			p.Method = method.Name()
		}
	}
	if method == nil {
		return nil, fmt.Errorf("merge_method is missing")
	}
	schema := map[string]Param{}
	for _, prm := range method.Params() {
		schema[prm.Name] = prm
	}
	var dtype, outDType string
	for i := 0; i+1 < len(top.Content); i += 2 {
		keyNode, val := top.Content[i], top.Content[i+1]
		key := keyNode.Value
		var err error
		switch key {
		case "merge_method":
		case "models":
			err = parseModels(p, val, schema)
		case "base_model":
			p.Base, err = scalar(val, key)
		case "dtype":
			dtype, err = scalar(val, key)
		case "out_dtype":
			outDType, err = scalar(val, key)
		case "parameters":
			err = parseGlobal(p, val, schema, method)
		default:
			prm, ok := schema[key]
			if !ok || prm.Scope != Global || keyNode.Kind != yaml.ScalarNode {
				return nil, fmt.Errorf("line %d: unsupported configuration key %q (wtool merges whole models: no slices, modules or tokenizer surgery)", keyNode.Line, key)
			}
			err = setParam(p.params(), prm, val)
		}
		if err != nil {
			return nil, fmt.Errorf("line %d: %s: %w", keyNode.Line, key, err)
		}
	}
	// mergekit computes in dtype and writes out_dtype (default: dtype); wtool
	// always computes in float32 or float64 and writes the output dtype
	p.DType = dtype
	if outDType != "" {
		p.DType = outDType
	}
	return p, nil
}

func (p *Plan) params() Params {
	if p.Params == nil {
		p.Params = Params{}
	}
	return p.Params
}

// checkDuplicateKeys refuses a mapping that gives a key twice (YAML parsers
// differ on which one wins; mergekit's keeps the last).
func checkDuplicateKeys(n *yaml.Node) error {
	if n.Kind == yaml.MappingNode {
		seen := map[string]int{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			if k.Kind == yaml.ScalarNode {
				if line, dup := seen[k.Value]; dup {
					return fmt.Errorf("line %d: key %q is given twice (first on line %d)", k.Line, k.Value, line)
				}
				seen[k.Value] = k.Line
			}
		}
	}
	for _, c := range n.Content {
		if err := checkDuplicateKeys(c); err != nil {
			return err
		}
	}
	return nil
}

func scalar(n *yaml.Node, what string) (string, error) {
	if n.Kind != yaml.ScalarNode {
		return "", fmt.Errorf("%s must be a single value", what)
	}
	return n.Value, nil
}

// setParam decodes one parameter's YAML value into ps.
func setParam(ps Params, prm Param, n *yaml.Node) error {
	v, err := prm.ParseYAML(n)
	if err != nil {
		return err
	}
	ps[prm.Name] = v
	return nil
}

func perModelNames(schema map[string]Param) string {
	var names []string
	for n, prm := range schema {
		if prm.Scope == PerModel {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

func parseModels(p *Plan, n *yaml.Node, schema map[string]Param) error {
	if n.Kind != yaml.SequenceNode {
		return fmt.Errorf("models must be a list")
	}
	for _, m := range n.Content {
		if m.Kind != yaml.MappingNode {
			return fmt.Errorf("line %d: each model must be a mapping with a 'model' key", m.Line)
		}
		mi := ModelInput{Params: Params{}}
		for i := 0; i+1 < len(m.Content); i += 2 {
			keyNode, val := m.Content[i], m.Content[i+1]
			key := keyNode.Value
			var err error
			switch key {
			case "model":
				mi.Path, err = scalar(val, key)
			case "parameters":
				if val.Kind != yaml.MappingNode {
					return fmt.Errorf("line %d: parameters must be a mapping", val.Line)
				}
				for k := 0; k+1 < len(val.Content); k += 2 {
					pk := val.Content[k].Value
					prm, ok := schema[pk]
					if !ok || prm.Scope != PerModel {
						return fmt.Errorf("line %d: unsupported model parameter %q for %s (supported: %s)", val.Content[k].Line, pk, p.Method, perModelNames(schema))
					}
					if err := setParam(mi.Params, prm, val.Content[k+1]); err != nil {
						return fmt.Errorf("line %d: %w", val.Content[k+1].Line, err)
					}
				}
			default:
				prm, ok := schema[key]
				if !ok || prm.Scope != PerModel || prm.Kind != Path {
					return fmt.Errorf("line %d: unsupported model key %q (supported: model, parameters)", keyNode.Line, key)
				}
				err = setParam(mi.Params, prm, val)
			}
			if err != nil {
				return fmt.Errorf("line %d: %w", val.Line, err)
			}
		}
		if mi.Path == "" {
			return fmt.Errorf("line %d: a model entry has no 'model'", m.Line)
		}
		p.Models = append(p.Models, mi)
	}
	return nil
}

func parseGlobal(p *Plan, n *yaml.Node, schema map[string]Param, m Method) error {
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("parameters must be a mapping")
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		keyNode, val := n.Content[i], n.Content[i+1]
		prm, ok := schema[keyNode.Value]
		if !ok {
			var names []string
			for _, x := range m.Params() {
				names = append(names, x.Name)
			}
			slices.Sort(names)
			return fmt.Errorf("line %d: unsupported parameter %q for %s (supported: %s)", keyNode.Line, keyNode.Value, m.Name(), strings.Join(names, ", "))
		}
		if err := setParam(p.params(), prm, val); err != nil {
			return fmt.Errorf("line %d: %w", val.Line, err)
		}
	}
	return nil
}
