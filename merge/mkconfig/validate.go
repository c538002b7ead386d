package mkconfig

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
)

// ValidateOptions extends the method table a configuration is checked
// against.
type ValidateOptions struct {
	// Methods are added to (or replace entries of) Methods: wtool's own
	// methods and parameters.
	Methods map[string]MethodDef
}

func (o ValidateOptions) method(name string) (MethodDef, bool) {
	if m, ok := o.Methods[name]; ok {
		return m, true
	}
	m, ok := Methods[name]
	return m, ok
}

func (o ValidateOptions) names() []string {
	names := MethodNames()
	for n := range o.Methods {
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names
}

// Validate checks the configuration against its method's definition, where
// mergekit would ignore a mistake or fail only while merging: an unknown
// method; a parameter the method does not have (mergekit ignores it); a
// global parameter given per model (mergekit ignores it there); a value of
// the wrong type; a required per-model parameter missing for a model at
// every level; a base model the method needs but does not get (for slices,
// the base model must be one of each slice's sources); the number of models
// a method takes. Every problem is reported, in file order.
func (c *Config) Validate(o ValidateOptions) error {
	m, ok := o.method(c.MergeMethod)
	if !ok {
		return errAt(c.Lines["merge_method"], "unknown merge_method %q (known: %s)", c.MergeMethod, strings.Join(o.names(), ", "))
	}
	v := &validator{m: m}
	v.section(c.Parameters, false, "parameters")
	if m.Base == BaseRequired && c.BaseModel == nil && !c.slicesHaveBase() {
		v.add(c.Line, "%s needs base_model:", m.Name)
	}
	modelsCheck := func(models []InputModel, params []Params, where string) {
		base := c.BaseModel
		n := 0
		baseIncluded := false
		for i, im := range models {
			v.section(im.Parameters, true, fmt.Sprintf("%s[%d].parameters", where, i))
			isBase := base != nil && im.Model.Equal(*base)
			if isBase {
				baseIncluded = true
			}
			if !isBase || m.Base == BaseInput {
				n++
			}
			v.required(im.Model, isBase && m.Base != BaseInput, append([]Params{im.Parameters}, params...), im.Line)
		}
		if base != nil && !baseIncluded && m.Base == BaseInput {
			// mergekit adds the base model as one more input, with only the
			// global parameters (a missing weight makes it fail)
			v.required(*base, false, params, c.Lines["base_model"])
			n++
		}
		if base != nil && m.Base == BaseOptional && baseIncluded && m.Name == "nuslerp" {
			v.add(c.Lines["base_model"], "nuslerp: the base model cannot be one of the two models (it is the origin of their task vectors)")
		}
		v.count(n, models[0].Line, where)
	}
	slicesCheck := func(ss []OutputSlice, params []Params, where string) {
		for i, s := range ss {
			sw := fmt.Sprintf("%s[%d]", where, i)
			v.section(s.Parameters, false, sw+".parameters")
			base := c.BaseModel
			if s.BaseModel != nil {
				base = s.BaseModel
			}
			n := 0
			baseIncluded := false
			for j, src := range s.Sources {
				v.section(src.Parameters, true, fmt.Sprintf("%s.sources[%d].parameters", sw, j))
				isBase := base != nil && src.Model.Equal(*base)
				if isBase {
					baseIncluded = true
				}
				if !isBase || m.Base == BaseInput {
					n++
				}
				v.required(src.Model, isBase && m.Base != BaseInput, append([]Params{src.Parameters, s.Parameters}, params...), src.Line)
			}
			if m.Base == BaseRequired && base != nil && !baseIncluded {
				v.add(s.Line, "%s: %s needs the base model %s among the slice's sources (slices do not add it)", sw, m.Name, base)
			}
			if m.Name == "nuslerp" && base != nil && baseIncluded {
				v.add(s.Line, "%s: nuslerp: the base model cannot be one of the two models", sw)
			}
			v.count(n, s.Line, sw+".sources")
		}
	}
	global := []Params{c.Parameters}
	switch {
	case len(c.Models) > 0:
		modelsCheck(c.Models, global, "models")
	case len(c.Slices) > 0:
		slicesCheck(c.Slices, global, "slices")
	}
	for _, mod := range c.Modules {
		where := "modules." + mod.Name
		v.section(mod.Parameters, false, where+".parameters")
		ps := []Params{mod.Parameters, c.Parameters}
		if len(mod.Models) > 0 {
			modelsCheck(mod.Models, ps, where+".models")
		} else {
			slicesCheck(mod.Slices, ps, where+".slices")
		}
	}
	return errors.Join(v.errs...)
}

func (c *Config) slicesHaveBase() bool {
	has := len(c.Slices) > 0
	for _, s := range c.Slices {
		has = has && s.BaseModel != nil
	}
	return has
}

type validator struct {
	m    MethodDef
	errs []error
}

func (v *validator) add(line int, format string, a ...any) {
	v.errs = append(v.errs, errAt(line, format, a...))
}

func (v *validator) count(n, line int, where string) {
	m := v.m
	switch {
	case m.MinModels > 0 && n < m.MinModels:
		v.add(line, "%s: %s takes at least %d model(s)%s, %s has %d", where, m.Name, m.MinModels, besides(m), where, n)
	case m.MaxModels > 0 && n > m.MaxModels:
		v.add(line, "%s: %s takes at most %d model(s)%s, %s has %d", where, m.Name, m.MaxModels, besides(m), where, n)
	}
}

// section checks one parameters: section; perModel sections (a model's or a
// slice source's) may only hold per-model parameters.
func (v *validator) section(ps Params, perModel bool, where string) {
	for _, p := range ps {
		def, ok := v.m.Param(p.Name)
		if !ok {
			v.add(p.Line, "%s: %q is not a parameter of %s (%s)", where, p.Name, v.m.Name, describeParams(v.m))
			continue
		}
		if perModel && !def.PerModel {
			v.add(p.Line, "%s: %q is a global parameter of %s: set it under the top-level (or slice) parameters:, mergekit ignores it per model", where, p.Name, v.m.Name)
			continue
		}
		v.value(def, p.Setting, where)
	}
}

func (v *validator) value(def ParamDef, s Setting, where string) {
	for _, x := range s.values() {
		switch x.Kind {
		case String:
			if slices.Contains(def.Strings, x.Str) {
				continue
			}
			if len(def.Strings) > 0 {
				v.add(x.Line, "%s: %s: %q is not a valid value (true, false or one of %s)", where, def.Name, x.Str, strings.Join(def.Strings, ", "))
			} else {
				v.add(x.Line, "%s: %s: %q is not a number", where, def.Name, x.Str)
			}
		case Number:
			if def.Type == Integer && x.Num != math.Trunc(x.Num) {
				v.add(x.Line, "%s: %s must be an integer, not %s", where, def.Name, x)
			}
			if math.IsNaN(x.Num) || math.IsInf(x.Num, 0) {
				v.add(x.Line, "%s: %s is not finite", where, def.Name)
			}
		}
	}
}

// required checks that a required per-model parameter has a value for the
// model at some level of mergekit's lookup (the model's own section, then
// the slice's, module's and global ones).
func (v *validator) required(model ModelRef, isBase bool, chain []Params, line int) {
	if isBase {
		return
	}
	for _, def := range v.m.Params {
		if !def.PerModel || !def.Required {
			continue
		}
		found := false
		for _, ps := range chain {
			if _, ok := ps.Get(def.Name); ok {
				found = true
				break
			}
		}
		if !found {
			v.add(line, "model %s has no %s (required by %s; mergekit does not default it)", model, def.Name, v.m.Name)
		}
	}
}

func besides(m MethodDef) string {
	if m.Base == BaseInput {
		return " (counting the base model)"
	}
	return " besides the base model"
}

func describeParams(m MethodDef) string {
	pm, g := paramNames(m, true), paramNames(m, false)
	var parts []string
	if len(pm) > 0 {
		parts = append(parts, "per model: "+strings.Join(pm, ", "))
	}
	if len(g) > 0 {
		parts = append(parts, "global: "+strings.Join(g, ", "))
	}
	if len(parts) == 0 {
		return "it has no parameters"
	}
	return "its parameters: " + strings.Join(parts, "; ")
}
