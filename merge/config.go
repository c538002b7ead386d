package merge

import (
	"fmt"
	"os"
	"strconv"
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
// Supported: models (model, parameters weight/density, and wtool's fisher
// and stats files per model), merge_method, base_model, dtype, out_dtype,
// parameters (normalize, lambda, t, rescale, int8_mask, and wtool's width,
// ridge, alpha, match), and wtool's seed, spec, layers, act, calib,
// calib_key, stats. Any other key (slices, tokenizer_source, ...) is an
// error naming it: nothing is ignored silently.
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

// ParseConfig parses a YAML merge configuration (see ReadConfig).
func ParseConfig(data []byte) (*Plan, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, err
	}
	if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, fmt.Errorf("the configuration is not a YAML mapping")
	}
	p := &Plan{}
	var dtype, outDType string
	top := doc.Content[0]
	for i := 0; i < len(top.Content); i += 2 {
		key, val := top.Content[i].Value, top.Content[i+1]
		var err error
		switch key {
		case "models":
			err = parseModels(p, val)
		case "merge_method":
			p.Method, err = scalar(val, key)
			if err == nil {
				p.Method, err = CanonicalMethod(p.Method)
			}
		case "base_model":
			p.Base, err = scalar(val, key)
		case "dtype":
			dtype, err = scalar(val, key)
		case "out_dtype":
			outDType, err = scalar(val, key)
		case "parameters":
			err = parseGlobal(p, val)
		case "seed":
			var s string
			if s, err = scalar(val, key); err == nil {
				p.Seed, err = strconv.ParseUint(s, 10, 64)
			}
		case "spec":
			p.Spec, err = scalar(val, key)
		case "layers":
			var s string
			if s, err = scalar(val, key); err == nil {
				p.Layers = strings.Split(s, ",")
			}
		case "act":
			p.Act, err = scalar(val, key)
		case "calib":
			p.Calib, err = scalar(val, key)
		case "calib_key":
			p.CalibKey, err = scalar(val, key)
		case "stats":
			p.JointStats, err = scalar(val, key)
		default:
			return nil, fmt.Errorf("line %d: unsupported configuration key %q (wtool merges whole models: no slices, modules or tokenizer surgery)", top.Content[i].Line, key)
		}
		if err != nil {
			return nil, fmt.Errorf("line %d: %s: %w", top.Content[i].Line, key, err)
		}
	}
	// mergekit computes in dtype and writes out_dtype (default: dtype); wtool
	// always computes in float32 and writes the output dtype
	p.DType = dtype
	if outDType != "" {
		p.DType = outDType
	}
	if p.Method == "" {
		return nil, fmt.Errorf("merge_method is missing")
	}
	return p, nil
}

func scalar(n *yaml.Node, what string) (string, error) {
	if n.Kind != yaml.ScalarNode {
		return "", fmt.Errorf("%s must be a single value", what)
	}
	return n.Value, nil
}

func parseModels(p *Plan, n *yaml.Node) error {
	if n.Kind != yaml.SequenceNode {
		return fmt.Errorf("models must be a list")
	}
	for _, m := range n.Content {
		if m.Kind != yaml.MappingNode {
			return fmt.Errorf("line %d: each model must be a mapping with a 'model' key", m.Line)
		}
		mi := ModelInput{}
		for i := 0; i < len(m.Content); i += 2 {
			key, val := m.Content[i].Value, m.Content[i+1]
			var err error
			switch key {
			case "model":
				mi.Path, err = scalar(val, key)
			case "fisher":
				mi.Fisher, err = scalar(val, key)
			case "stats":
				mi.Stats, err = scalar(val, key)
			case "parameters":
				if val.Kind != yaml.MappingNode {
					return fmt.Errorf("line %d: parameters must be a mapping", val.Line)
				}
				for k := 0; k < len(val.Content); k += 2 {
					pk, pv := val.Content[k].Value, val.Content[k+1]
					s, err := parseSetting(pv)
					if err != nil {
						return fmt.Errorf("line %d: %s: %w", pv.Line, pk, err)
					}
					switch pk {
					case "weight":
						mi.Weight = s
					case "density":
						mi.Density = s
					default:
						return fmt.Errorf("line %d: unsupported model parameter %q (supported: weight, density)", val.Content[k].Line, pk)
					}
				}
			default:
				return fmt.Errorf("line %d: unsupported model key %q (supported: model, parameters, fisher, stats)", m.Content[i].Line, key)
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

func parseGlobal(p *Plan, n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("parameters must be a mapping")
	}
	for i := 0; i < len(n.Content); i += 2 {
		key, val := n.Content[i].Value, n.Content[i+1]
		num := func() (float64, error) {
			s, err := scalar(val, key)
			if err != nil {
				return 0, err
			}
			return strconv.ParseFloat(s, 64)
		}
		boolean := func() (bool, error) {
			s, err := scalar(val, key)
			if err != nil {
				return false, err
			}
			return strconv.ParseBool(s)
		}
		var err error
		switch key {
		case "normalize":
			var b bool
			if b, err = boolean(); err == nil {
				p.Normalize = &b
			}
		case "lambda":
			p.Lambda, err = parseSetting(val)
		case "t":
			p.T, err = parseSetting(val)
		case "rescale":
			// mergekit: rescale true keeps the L1 norm of DARE's task vectors
			var b bool
			if b, err = boolean(); err == nil {
				p.Rescale = RescaleNone
				if b {
					p.Rescale = RescaleL1
				}
			}
		case "int8_mask":
			_, err = boolean() // a memory option of mergekit; no effect on results
		case "width":
			p.Width, err = num()
		case "ridge":
			p.Ridge, err = num()
		case "alpha":
			p.Alpha, err = num()
		case "match":
			p.Match, err = scalar(val, key)
		case "restarts":
			var v float64
			if v, err = num(); err == nil {
				p.Restarts = int(v)
			}
		case "max_sweeps":
			var v float64
			if v, err = num(); err == nil {
				p.MaxSweeps = int(v)
			}
		default:
			return fmt.Errorf("line %d: unsupported parameter %q", n.Content[i].Line, key)
		}
		if err != nil {
			return fmt.Errorf("line %d: %s: %w", val.Line, key, err)
		}
	}
	return nil
}

// parseSetting reads a number, a list of numbers (gradient) or a list of
// {filter, value} conditions.
func parseSetting(n *yaml.Node) (Setting, error) {
	switch n.Kind {
	case yaml.ScalarNode:
		v, err := strconv.ParseFloat(n.Value, 64)
		if err != nil {
			return Setting{}, fmt.Errorf("%q is not a number", n.Value)
		}
		return Const(v), nil
	case yaml.SequenceNode:
		if len(n.Content) == 0 {
			return Setting{}, fmt.Errorf("empty list")
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
			for k := 0; k < len(e.Content); k += 2 {
				switch e.Content[k].Value {
				case "filter":
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
