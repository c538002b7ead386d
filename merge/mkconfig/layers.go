package mkconfig

import (
	"fmt"
)

// DefaultModule is the module name of single-module architectures.
const DefaultModule = "default"

// Normalize returns the configuration as modules of slices, the form
// mergekit's planner works on: models: becomes one slice per module whose
// sources are the models with layer_range [0, numLayers(model)) and their
// parameters, plus the base model (without parameters) when it is not one
// of them; models: and slices: become one module named "default" (mergekit's
// name for the module of a single-module architecture; for multi-module
// architectures mergekit applies models: to every module and refuses
// slices:, which the caller must do). numLayers reads a model's layer count
// (num_hidden_layers of its config.json); models of one slice must have
// the same count. For slices:, numLayers may be nil; when it is not, every
// source's layer_range must lie within its model's layers.
func (c *Config) Normalize(numLayers func(ModelRef) (int, error)) ([]OutputModule, error) {
	fromModels := func(models []InputModel, line int) ([]OutputSlice, error) {
		var srcs []InputSlice
		baseIncluded := false
		add := func(r ModelRef, ps Params, line int) error {
			n, err := numLayers(r)
			if err != nil {
				return fmt.Errorf("%s: %w", r, err)
			}
			if len(srcs) > 0 && n != srcs[0].Len() {
				return errAt(line, "%s has %d layers and %s has %d: models merged whole must have the same number of layers (use slices: to merge layer ranges)",
					r, n, srcs[0].Model, srcs[0].Len())
			}
			if n <= 0 {
				return errAt(line, "%s has no layers", r)
			}
			srcs = append(srcs, InputSlice{Model: r, LayerRange: [2]int{0, n}, Parameters: ps, Line: line})
			return nil
		}
		for _, m := range models {
			if c.BaseModel != nil && m.Model.Equal(*c.BaseModel) {
				baseIncluded = true
			}
			if err := add(m.Model, m.Parameters, m.Line); err != nil {
				return nil, err
			}
		}
		if c.BaseModel != nil && !baseIncluded {
			if err := add(*c.BaseModel, nil, c.Lines["base_model"]); err != nil {
				return nil, err
			}
		}
		return []OutputSlice{{Sources: srcs, Line: line}}, nil
	}
	switch {
	case len(c.Models) > 0:
		ss, err := fromModels(c.Models, c.Lines["models"])
		if err != nil {
			return nil, err
		}
		return []OutputModule{{Name: DefaultModule, Slices: ss, Line: c.Line}}, nil
	case len(c.Slices) > 0:
		if err := checkRanges(c.Slices, numLayers); err != nil {
			return nil, err
		}
		return []OutputModule{{Name: DefaultModule, Slices: c.Slices, Line: c.Lines["slices"]}}, nil
	}
	var out []OutputModule
	for _, m := range c.Modules {
		if err := checkRanges(m.Slices, numLayers); err != nil {
			return nil, err
		}
		if len(m.Models) > 0 {
			ss, err := fromModels(m.Models, m.Line)
			if err != nil {
				return nil, err
			}
			m.Slices, m.Models = ss, nil
		}
		out = append(out, m)
	}
	return out, nil
}

// checkRanges reports a source whose layer_range goes beyond its model's
// layers (numLayers nil: not checked).
func checkRanges(slices []OutputSlice, numLayers func(ModelRef) (int, error)) error {
	if numLayers == nil {
		return nil
	}
	for _, s := range slices {
		for _, src := range s.Sources {
			n, err := numLayers(src.Model)
			if err != nil {
				return fmt.Errorf("%s: %w", src.Model, err)
			}
			if src.LayerRange[0] < 0 || src.LayerRange[1] > n || src.LayerRange[1] < src.LayerRange[0] {
				return errAt(src.Line, "layer_range [%d, %d] of %s is outside its %d layers", src.LayerRange[0], src.LayerRange[1], src.Model, n)
			}
		}
	}
	return nil
}

// SourceLayer is one input layer of an output layer.
type SourceLayer struct {
	Model ModelRef
	// Layer is the layer index in the input model.
	Layer int
}

// Layer is one output layer of a module and the input layers it is merged
// from.
type Layer struct {
	// Index is the output layer index (0-based, over the whole module).
	Index int
	// Slice is the index of the output slice the layer belongs to.
	Slice int
	// T is the layer's relative depth within its slice, the position
	// gradients are evaluated at: i / (n - 1) for the i-th of n layers, 1
	// when the slice has one layer.
	T       float64
	Sources []SourceLayer
}

// NumLayers is the number of layers the module writes (the sum of its
// slices' lengths): mergekit sets num_hidden_layers to it.
func (m OutputModule) NumLayers() int {
	n := 0
	for _, s := range m.Slices {
		n += s.Len()
	}
	return n
}

// Layers lists the module's output layers in order (call on a normalized
// module).
func (m OutputModule) Layers() []Layer {
	var out []Layer
	for si, s := range m.Slices {
		n := s.Len()
		for i := 0; i < n; i++ {
			t := 1.0
			if n > 1 {
				t = float64(i) / float64(n-1)
			}
			l := Layer{Index: len(out), Slice: si, T: t}
			for _, src := range s.Sources {
				l.Sources = append(l.Sources, SourceLayer{Model: src.Model, Layer: src.LayerRange[0] + i})
			}
			out = append(out, l)
		}
	}
	return out
}

// Scope is where a parameter is evaluated: mergekit's ConfigReader for one
// tensor.
type Scope struct {
	Config *Config
	// Module is the (normalized) module, nil when the configuration has
	// none.
	Module *OutputModule
	// Slice is the output slice the tensor belongs to: its own for layer
	// tensors, the first slice for the tensors before the layers
	// (embeddings) and the last for those after them (final norm, head).
	Slice *OutputSlice
	// Tensor is the output tensor's name (filters match it).
	Tensor string
	// T is the relative depth (Layer.T; 0 outside the layers).
	T float64
}

// LayerScope returns the scope of a tensor of output layer l of module m.
func (c *Config) LayerScope(m *OutputModule, l Layer, tensor string) Scope {
	return Scope{Config: c, Module: m, Slice: &m.Slices[l.Slice], Tensor: tensor, T: l.T}
}

// PreScope returns the scope of a tensor before the layers (embeddings):
// the first slice, at t = 0. Its inputs are the first slice's sources.
func (c *Config) PreScope(m *OutputModule, tensor string) Scope {
	return Scope{Config: c, Module: m, Slice: &m.Slices[0], Tensor: tensor}
}

// PostScope returns the scope of a tensor after the layers (final norm,
// output head): the last slice, at t = 0 (mergekit does not evaluate
// gradients at the end for them). Its inputs are the last slice's sources.
func (c *Config) PostScope(m *OutputModule, tensor string) Scope {
	return Scope{Config: c, Module: m, Slice: &m.Slices[len(m.Slices)-1], Tensor: tensor}
}

// BaseModel returns the base model in effect: the slice's own, else the
// configuration's (nil when none).
func (s Scope) BaseModel() *ModelRef {
	if s.Slice != nil && s.Slice.BaseModel != nil {
		return s.Slice.BaseModel
	}
	return s.Config.BaseModel
}

// Lookup returns a parameter's value as mergekit's ConfigReader.parameter
// finds it: for a model (model != nil), the first of the slice's sources
// for that model that sets it; then the slice's parameters; the module's;
// the global ones. A level whose conditions match nothing is skipped. ok is
// false when no level gives a value (use the method's default, or fail if
// the parameter is required and the model is not the base model).
func (s Scope) Lookup(name string, model *ModelRef) (v Value, ok bool) {
	eval := func(ps Params) bool {
		st, has := ps.Get(name)
		if !has {
			return false
		}
		v, ok = st.Eval(s.Tensor, s.T)
		return ok
	}
	if s.Slice != nil {
		if model != nil {
			for _, src := range s.Slice.Sources {
				if src.Model.Equal(*model) && eval(src.Parameters) {
					return v, true
				}
			}
		}
		if eval(s.Slice.Parameters) {
			return v, true
		}
	}
	if s.Module != nil && eval(s.Module.Parameters) {
		return v, true
	}
	if eval(s.Config.Parameters) {
		return v, true
	}
	return Value{}, false
}

// Resolve returns the values of every parameter of method def for the
// scope: global ones, and per-model ones for each model (the base model's
// required parameters may be missing). Defaults fill what is not set; a
// required parameter without a value is an error naming the model and the
// tensor, as mergekit's.
func (s Scope) Resolve(def MethodDef, models []ModelRef) (global map[string]Value, perModel []map[string]Value, err error) {
	global = map[string]Value{}
	base := s.BaseModel()
	for _, p := range def.Params {
		if p.PerModel {
			continue
		}
		v, ok := s.Lookup(p.Name, nil)
		switch {
		case ok:
			global[p.Name] = v
		case p.Required:
			return nil, nil, fmt.Errorf("missing required parameter %s for %s", p.Name, s.Tensor)
		case p.Default != nil:
			global[p.Name] = *p.Default
		}
	}
	for _, m := range models {
		vals := map[string]Value{}
		isBase := base != nil && m.Equal(*base)
		for _, p := range def.Params {
			if !p.PerModel {
				continue
			}
			v, ok := s.Lookup(p.Name, &m)
			switch {
			case ok:
				vals[p.Name] = v
			case p.Required && !isBase:
				return nil, nil, fmt.Errorf("missing required parameter %s for %s.%s", p.Name, m, s.Tensor)
			case p.Default != nil:
				vals[p.Name] = *p.Default
			}
		}
		perModel = append(perModel, vals)
	}
	return global, perModel, nil
}
