package main

import (
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/wtool/wtool/io/fsafe"
	"github.com/wtool/wtool/merge"
)

// mergeOptions is the command line of wtool merge.
type mergeOptions struct {
	out    outputFlags
	config string
	method string
	base   string
	dtype  string
	// params are the methods' parameter flags, by flag name (every method's
	// schema contributes; a flag the chosen method does not take is refused).
	params map[string]*paramFlag
}

// paramFlag is the raw command-line value of a method parameter.
type paramFlag struct {
	name    string
	boolean bool   // a Bool parameter: --name and --no-name
	raw     string // other kinds, decoded by the chosen method's schema
	on, off bool   // Bool: --name, --no-name given
	docs    []string
	kinds   []string
}

// planFlags are the flags that define a merge plan (as opposed to output
// flags); with --config none of them may be given.
var planFlags = []string{"method", "base", "dtype"}

func newMergeCmd(g *globals) *cobra.Command {
	o := &mergeOptions{params: map[string]*paramFlag{}}
	cmd := &cobra.Command{
		Use:   "merge MODEL... -o OUTPUT --method METHOD [--base BASE] [--weights w1,w2,...]",
		Short: "Merge checkpoints: linear, task arithmetic, TIES, DARE, SLERP, weight matching, PLeaS, Fisher, RegMean",
		Long: `Merge combines checkpoints of the same architecture into one. Every tensor is
computed chunk by chunk, streaming over the mapped inputs (extra passes for
what needs the whole tensor: SLERP's angle, TIES' magnitude threshold, DARE's
L1 norm), so memory stays bounded whatever the size of the model. Methods, and
the flags each takes:

` + methodHelp() + `

Task-vector methods (task-arithmetic, ties, dare-*) work on x_i - base and
need --base. Per-model values (--weights, --density) are one value for all
models or one per model, comma-separated. normalize defaults as in mergekit
(on for linear, ties and wm). DARE rescales kept entries by 1/density (the
paper's, unbiased) unless --rescale l1 (mergekit's L1-norm matching) or none;
its random masks depend on --seed, the tensor and the model's values, never
on the model order. slerp interpolates two models at --t (t=0 gives the first,
or --base). wm aligns every model to the first by weight matching with the
permutation spec (--spec) and averages; three or more use MergeMany. pleas
needs --calib X (MLPs) or --stats JOINT and merges to --width (1 = full merge,
2 = both kept). fisher takes one Fisher file per model (--fisher F1,F2) and
regmean one statistics file per model (--stats S1,S2) or --calib for MLPs.
A flag the chosen method does not take is an error.

--config reads a mergekit-style YAML file instead of the method flags (see
README); the same merge by flags or YAML gives identical bytes. Integer and
other non-float tensors are taken from the first model; mixed input dtypes are
computed in float32 or float64 and written in --dtype (default: the first
model's). NaN/Inf in an input or the result is an error unless
--allow-nonfinite.
` + outputHelp,
		Example: `  wtool merge testdata/demo/mlp-a testdata/demo/mlp-b -o /tmp/avg --method linear
  wtool merge testdata/demo/mlp-a testdata/demo/mlp-b -o /tmp/wm --method wm
  wtool merge testdata/demo/mlp-a testdata/demo/mlp-b -o /tmp/pleas --method pleas \
      --calib testdata/demo/digits_train.safetensors --width 1.5
  wtool merge ft1 ft2 --base base -o out --method ties --density 0.5 --weights 1,0.5
  wtool merge --config merge.yaml -o out`,
		Args: argsBetween(0, -1),
		RunE: func(cmd *cobra.Command, args []string) error { return o.run(cmd, g, args) },
	}
	o.out.register(cmd)
	f := cmd.Flags()
	f.StringVar(&o.config, "config", "", "mergekit-style YAML merge configuration")
	f.StringVar(&o.method, "method", "", "merge method (see above)")
	f.StringVar(&o.base, "base", "", "base model: task vectors are x_i - base; slerp's t=0 end")
	f.StringVar(&o.dtype, "dtype", "", "output dtype of floating tensors: f32, f16, bf16, f64 (default: the first model's)")
	o.registerParams(f)
	return cmd
}

// registerParams adds one flag per method parameter name, across methods.
func (o *mergeOptions) registerParams(f *pflag.FlagSet) {
	var order []string
	for _, m := range merge.Methods() {
		for _, prm := range m.Params() {
			if prm.Hidden {
				continue
			}
			name := prm.FlagName()
			pf, ok := o.params[name]
			if !ok {
				pf = &paramFlag{name: name, boolean: prm.Kind == merge.Bool}
				o.params[name] = pf
				order = append(order, name)
			}
			if !slices.Contains(pf.docs, prm.Doc) {
				pf.docs = append(pf.docs, prm.Doc)
			}
			kind := prm.Kind.String()
			if prm.Scope == merge.PerModel {
				kind += "s"
			}
			if !slices.Contains(pf.kinds, kind) {
				pf.kinds = append(pf.kinds, kind)
			}
		}
	}
	slices.Sort(order)
	for _, name := range order {
		pf := o.params[name]
		doc := strings.Join(pf.docs, "; ")
		if pf.boolean {
			f.BoolVar(&pf.on, name, false, doc)
			f.BoolVar(&pf.off, "no-"+name, false, "the opposite of --"+name)
			continue
		}
		f.Var(rawFlag{&pf.raw, strings.Join(pf.kinds, "|")}, name, doc)
	}
}

// rawFlag keeps a flag's text for the method to decode.
type rawFlag struct {
	s    *string
	kind string
}

func (r rawFlag) String() string     { return *r.s }
func (r rawFlag) Set(s string) error { *r.s = s; return nil }
func (r rawFlag) Type() string       { return r.kind }

// methodHelp lists the methods with their flags.
func methodHelp() string {
	var b strings.Builder
	for i, m := range merge.Methods() {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "  %-16s %s", m.Name(), m.Doc())
		var flags []string
		for _, prm := range m.Params() {
			if !prm.Hidden {
				flags = append(flags, "--"+prm.FlagName())
			}
		}
		if len(flags) > 0 {
			fmt.Fprintf(&b, "\n  %-16s %s", "", strings.Join(flags, " "))
		}
	}
	return b.String()
}

func (o *mergeOptions) run(cmd *cobra.Command, g *globals, args []string) error {
	opts, err := o.out.options(cmd, g)
	if err != nil {
		return err
	}
	p, err := o.plan(cmd, args)
	if err != nil {
		return err
	}
	p.AllowNonFinite = p.AllowNonFinite || o.out.allowNonFinite
	if err := p.Validate(); err != nil {
		return usageErrorf("%v", err)
	}
	reg := o.out.registry()
	if err := declareMerge(reg, p, o.config); err != nil {
		return err
	}
	if err := g.checkPaths(reg); err != nil {
		return err
	}
	opts.Inputs, opts.Fingerprint = reg.Inputs(), fingerprint(cmd, args, reg.Inputs())
	update, finish := g.byteProgress("merging")
	opts.Progress = update
	start := time.Now()
	rep, err := merge.Execute(cmd.Context(), p, o.out.out, opts)
	finish()
	if rep != nil {
		g.notes(rep.Output)
	}
	if err != nil {
		return err
	}
	for _, n := range rep.Notes {
		g.info("%s", n)
	}
	g.wrote(rep.Output, fmt.Sprintf("%s merge of %d models in %.1f s", rep.Method, len(p.Models), time.Since(start).Seconds()))
	return nil
}

// declareMerge declares every file a merge reads: the models, the base,
// the configuration, and every file parameter of the method (calibration
// data, statistics, Fisher files, a permutation spec file).
func declareMerge(r *fsafe.Registry, p *merge.Plan, config string) error {
	if err := r.Input("--config", config); err != nil {
		return err
	}
	for _, m := range p.Models {
		if err := declareModel(r, "MODEL", m.Path); err != nil {
			return err
		}
	}
	if p.Base != "" {
		if err := declareModel(r, "--base", p.Base); err != nil {
			return err
		}
	}
	m, err := merge.Lookup(p.Method)
	if err != nil {
		return err
	}
	for _, prm := range m.Params() {
		if prm.Kind != merge.Path && prm.Name != "spec" {
			continue
		}
		role := "--" + prm.FlagName()
		files := []merge.Value{}
		if v, ok := p.Params[prm.Name]; ok {
			files = append(files, v)
		}
		for _, mi := range p.Models {
			if v, ok := mi.Params[prm.Name]; ok {
				files = append(files, v)
			}
		}
		for _, v := range files {
			var err error
			if prm.Name == "spec" {
				err = declareSpec(r, v.Text)
			} else {
				err = r.Input(role, v.Text)
			}
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// plan builds the merge plan from --config or from the flags.
func (o *mergeOptions) plan(cmd *cobra.Command, args []string) (*merge.Plan, error) {
	if o.config != "" {
		if len(args) > 0 {
			return nil, usageErrorf("with --config the models come from the configuration, not the command line")
		}
		var set []string
		cmd.Flags().Visit(func(f *pflag.Flag) {
			name := strings.TrimPrefix(f.Name, "no-")
			if _, isParam := o.params[name]; isParam || slices.Contains(planFlags, f.Name) {
				set = append(set, "--"+f.Name)
			}
		})
		if len(set) > 0 {
			return nil, usageErrorf("%s cannot be combined with --config; set it in the configuration", strings.Join(set, ", "))
		}
		p, err := merge.ReadConfig(o.config)
		var pathErr *fs.PathError
		switch {
		case errors.As(err, &pathErr):
			return nil, err // the file could not be read
		case err != nil:
			return nil, usageErrorf("%v", err) // a bad configuration
		}
		return p, nil
	}
	if len(args) == 0 {
		return nil, usageErrorf("give the models to merge, or --config")
	}
	if o.method == "" {
		return nil, usageErrorf("--method is required (or --config)")
	}
	m, err := merge.Lookup(o.method)
	if err != nil {
		return nil, usageErrorf("--method: %v", err)
	}
	p := &merge.Plan{Method: m.Name(), Base: o.base, DType: o.dtype, Params: merge.Params{}}
	for _, a := range args {
		p.Models = append(p.Models, merge.ModelInput{Path: a, Params: merge.Params{}})
	}
	schema := map[string]merge.Param{}
	var accepted []string
	for _, prm := range m.Params() {
		if prm.Hidden {
			continue
		}
		schema[prm.FlagName()] = prm
		accepted = append(accepted, "--"+prm.FlagName())
	}
	var errs []error
	cmd.Flags().Visit(func(f *pflag.Flag) {
		name := strings.TrimPrefix(f.Name, "no-")
		pf, isParam := o.params[name]
		if !isParam || (name != f.Name && !pf.boolean) {
			return
		}
		prm, ok := schema[name]
		if !ok {
			takes := "no method flags"
			if len(accepted) > 0 {
				takes = strings.Join(accepted, ", ")
			}
			errs = append(errs, fmt.Errorf("--%s does not apply to --method %s (it takes %s)", f.Name, m.Name(), takes))
			return
		}
		if err := o.setParam(p, prm, pf); err != nil {
			errs = append(errs, err)
		}
	})
	if len(errs) > 0 {
		return nil, exitError{code: exitUsage, err: errors.Join(dedupe(errs)...)}
	}
	return p, nil
}

func dedupe(errs []error) []error {
	var out []error
	seen := map[string]bool{}
	for _, e := range errs {
		if !seen[e.Error()] {
			seen[e.Error()] = true
			out = append(out, e)
		}
	}
	return out
}

// setParam decodes one parameter flag into the plan: a global value, or a
// per-model one (one value for all, or one per model).
func (o *mergeOptions) setParam(p *merge.Plan, prm merge.Param, pf *paramFlag) error {
	flag := "--" + prm.FlagName()
	if pf.boolean {
		if pf.on && pf.off {
			return fmt.Errorf("%s and --no-%s contradict each other", flag, prm.FlagName())
		}
		p.Params[prm.Name] = merge.Flag(pf.on)
		return nil
	}
	parse := func(s string) (merge.Value, error) {
		v, err := prm.ParseValue(s)
		if err != nil {
			var pe *merge.ParamError
			if errors.As(err, &pe) {
				err = pe.Err
			}
			return v, fmt.Errorf("%s %q: %v", flag, s, err)
		}
		return v, nil
	}
	if prm.Scope == merge.Global {
		v, err := parse(pf.raw)
		if err != nil {
			return err
		}
		p.Params[prm.Name] = v
		return nil
	}
	parts := strings.Split(pf.raw, ",")
	n := len(p.Models)
	switch {
	case prm.Kind == merge.Path && len(parts) != n:
		return fmt.Errorf("%s has %d files for %d models (one per model, in model order)", flag, len(parts), n)
	case len(parts) != 1 && len(parts) != n:
		return fmt.Errorf("%s has %d values for %d models (one value, or one per model)", flag, len(parts), n)
	}
	for i := range p.Models {
		s := parts[0]
		if len(parts) > 1 {
			s = parts[i]
		}
		v, err := parse(s)
		if err != nil {
			return err
		}
		p.Models[i].Params[prm.Name] = v
	}
	return nil
}

// declareSpec declares a permutation spec given as a file.
func declareSpec(r *fsafe.Registry, spec string) error {
	switch spec {
	case "", "auto", "mlp", "llama":
		return nil
	}
	return r.Input("--spec", spec)
}
