package merge

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/wtool/wtool/merge/mkconfig"
)

// ReadConfig reads a mergekit YAML merge configuration of one stage (see
// ParseConfig); model paths are kept as written. ReadStages reads
// multi-stage files and resolves Hub ids.
func ReadConfig(path string) (*Plan, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	p, err := ParseConfig(b)
	if err != nil {
		return nil, withFile(err, path)
	}
	return p, nil
}

// ParseConfig parses a mergekit YAML merge configuration of one stage:
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
// or slices: with sources and layer_range (a layer-wise merge, see Slice).
// The file is read by mkconfig, strictly, as mergekit reads it (YAML 1.1
// scalars, anchors); parameters are the method's (see Method.Params):
// per-model ones under each model or source (or under a slice's or the
// top-level parameters, as every model's default), global ones under the
// top-level or a slice's parameters. wtool's file parameters may also be
// given directly: a per-model one (fisher, stats) as a key of the model,
// a global one (calib, spec, seed, ...) as a top-level key. An unknown
// key, method or parameter, a key given twice in one mapping and what
// wtool does not do yet are errors naming the key and its line (see
// ConfigError): nothing is ignored silently.
func ParseConfig(data []byte) (*Plan, error) {
	c, err := mkconfig.ParseWith(data, configKeys())
	if err != nil {
		return nil, err
	}
	return FromConfig(c, ConfigOptions{})
}

// Stage is one merge of a configuration file: a mergekit-multi stage, or
// the only merge of a plain configuration.
type Stage struct {
	// Name is the stage's name: ("" for the final, unnamed stage).
	Name string
	Plan *Plan
	// Out is where the stage is written: the final output for the last
	// stage, StagesDir/Name for the others.
	Out string
	// Final marks the stage written to the final output.
	Final bool
}

// StagesOptions say where a configuration's stages are written.
type StagesOptions struct {
	ConfigOptions
	// Out is the final output.
	Out string
	// StagesDir holds the outputs of the intermediate stages (StagesDir/NAME);
	// "" means Out + ".stages" beside the final output.
	StagesDir string
}

// ReadStages reads a configuration file of one or more stages (YAML
// documents; mergekit-multi) and returns the merges to run, in an order
// where every stage comes after the stages it reads. A model reference
// naming a stage reads that stage's output. The final output is the
// unnamed stage's, or, when every stage has a name, the last one's; the
// others are written to StagesDir/NAME.
func ReadStages(path string, o StagesOptions) ([]Stage, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	st, err := ParseStages(b, o)
	if err != nil {
		return nil, withFile(err, path)
	}
	return st, nil
}

// ParseStages is ReadStages on the text of a configuration.
func ParseStages(data []byte, o StagesOptions) ([]Stage, error) {
	multi, err := mkconfig.ParseMulti(data, configKeys())
	if err != nil {
		return nil, err
	}
	order, err := multi.Order()
	if err != nil {
		return nil, err
	}
	dir := o.StagesDir
	if dir == "" {
		dir = o.Out + ".stages"
	}
	final := order[len(order)-1]
	if multi.Stage("") != nil {
		final = multi.Stage("")
	}
	outs := map[string]string{}
	for _, c := range multi.Stages {
		if c == final {
			outs[c.Name] = o.Out
		} else {
			outs[c.Name] = filepath.Join(dir, c.Name)
		}
	}
	if len(multi.Stages) > 1 {
		multi.Resolve(func(name string) string { return outs[name] })
	}
	stageOut := map[string]bool{}
	for _, p := range outs {
		stageOut[p] = true
	}
	co := o.ConfigOptions
	if co.Resolve != nil {
		inner := co.Resolve
		co.Resolve = func(r mkconfig.ModelRef) (string, error) {
			if stageOut[r.Model.Path] && r.LoRA == nil && r.Model.Revision == "" {
				return r.Model.Path, nil // an earlier stage's output
			}
			return inner(r)
		}
	}
	var out []Stage
	for _, c := range order {
		p, err := FromConfig(c, co)
		if err != nil {
			if c.Name != "" {
				return nil, fmt.Errorf("stage %s: %w", c.Name, err)
			}
			return nil, err
		}
		out = append(out, Stage{Name: c.Name, Plan: p, Out: outs[c.Name], Final: c == final})
	}
	return out, nil
}
