package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/io/fsafe"
	"github.com/wtool/wtool/io/hub"
	"github.com/wtool/wtool/merge"
)

// mergeOptions is the command line of wtool merge.
type mergeOptions struct {
	out       outputFlags
	config    string
	stagesDir string
	dryRun    bool
	asJSON    bool
	method    string
	base      string
	dtype     string
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

--config reads a mergekit YAML file instead of the method flags (see README):
models: or slices: (layer_range; frankenmerges with passthrough), per-model,
per-slice and global parameters, gradients and filters, Hub ids
("org/name[@revision]", read from the local Hugging Face cache only: wtool
never downloads), and several YAML documents with name: (mergekit-multi
stages, run in dependency order; a model named after a stage reads its
output, written to --stages-dir/NAME, default OUTPUT.stages/NAME). The same
merge by flags or YAML gives identical bytes. Beside a merged directory,
mergekit_config.yml (the configuration, or the YAML equivalent to the flags)
and a README.md model card are written, as mergekit does. --dry-run prints
what every output tensor is merged from (inputs, weights, t, density, ...)
without writing anything (--json for scripts). Integer and
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
  wtool merge --config merge.yaml -o out
  wtool merge --config merge.yaml -o out --dry-run --json`,
		Args: argsBetween(0, -1),
		RunE: func(cmd *cobra.Command, args []string) error { return o.run(cmd, g, args) },
	}
	o.out.register(cmd)
	f := cmd.Flags()
	f.StringVar(&o.config, "config", "", "mergekit YAML merge configuration (one or more stages)")
	f.StringVar(&o.stagesDir, "stages-dir", "", "where the named stages of a multi-stage --config are written, each as DIR/NAME (default: OUTPUT.stages)")
	f.BoolVar(&o.dryRun, "dry-run", false, "print the resolved plan, per tensor (inputs, weights, t, density, ...), and write nothing")
	f.BoolVar(&o.asJSON, "json", false, "with --dry-run: print the plan as JSON")
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
	if o.asJSON && !o.dryRun {
		return usageErrorf("--json goes with --dry-run (a merge reports on stderr)")
	}
	if o.stagesDir != "" && o.config == "" {
		return usageErrorf("--stages-dir goes with a multi-stage --config")
	}
	stages, err := o.stages(cmd, args)
	if err != nil {
		return err
	}
	for _, st := range stages {
		st.Plan.AllowNonFinite = st.Plan.AllowNonFinite || o.out.allowNonFinite
		if err := st.Plan.Validate(); err != nil {
			return usageErrorf("%s%v", stagePrefix(st), err)
		}
	}
	if len(stages) > 1 && (o.out.part != "" || o.out.resume) {
		return usageErrorf("--part and --resume work on one merge, not on a multi-stage configuration: run its stages as separate configurations")
	}
	if o.dryRun {
		return o.describe(cmd, g, stages)
	}
	for _, st := range stages {
		if err := o.runStage(cmd, g, args, st, opts); err != nil {
			return err
		}
	}
	return nil
}

func stagePrefix(st merge.Stage) string {
	if st.Name == "" {
		return ""
	}
	return "stage " + st.Name + ": "
}

// runStage runs one merge of the command (the only one, or a stage).
func (o *mergeOptions) runStage(cmd *cobra.Command, g *globals, args []string, st merge.Stage, opts checkpoint.WriteOptions) error {
	p := st.Plan
	reg := &fsafe.Registry{Force: o.out.force || o.out.part != "", KeepTemps: o.out.resume}
	if st.Final {
		reg = o.out.registry()
	} else {
		reg.Output("--stages-dir", st.Out)
	}
	if err := declareMerge(reg, p, o.config); err != nil {
		return err
	}
	if err := g.checkPaths(reg); err != nil {
		return err
	}
	opts.Inputs, opts.Fingerprint = reg.Inputs(), fingerprint(cmd, append(slices.Clone(args), "stage="+st.Name), reg.Inputs())
	update, finish := g.byteProgress("merging" + strings.TrimSuffix(" "+stagePrefix(st), ": "))
	opts.Progress = update
	start := time.Now()
	rep, err := merge.Execute(cmd.Context(), p, st.Out, opts)
	finish()
	if rep != nil {
		g.notes(rep.Output)
	}
	if err != nil {
		if st.Name != "" {
			return fmt.Errorf("stage %s: %w", st.Name, err)
		}
		return err
	}
	for _, n := range rep.Notes {
		g.info("%s%s", stagePrefix(st), n)
	}
	what := fmt.Sprintf("%s merge of %d models in %.1f s", rep.Method, len(p.Models), time.Since(start).Seconds())
	if len(p.Slices) > 0 {
		what = fmt.Sprintf("%s merge of %d slices (%d layers) in %.1f s", rep.Method, len(p.Slices), p.NumLayers(), time.Since(start).Seconds())
	}
	g.wrote(rep.Output, stagePrefix(st)+what)
	return nil
}

// stages builds the merges to run: the configuration's stages, or one
// merge from the flags.
func (o *mergeOptions) stages(cmd *cobra.Command, args []string) ([]merge.Stage, error) {
	if o.config == "" {
		p, err := o.plan(cmd, args)
		if err != nil {
			return nil, err
		}
		return []merge.Stage{{Plan: p, Out: o.out.out, Final: true}}, nil
	}
	if err := o.configOnly(cmd, args); err != nil {
		return nil, err
	}
	st, err := merge.ReadStages(o.config, merge.StagesOptions{
		ConfigOptions: merge.ConfigOptions{Resolve: merge.ResolveLocal},
		Out:           o.out.out,
		StagesDir:     o.stagesDir,
	})
	var pathErr *fs.PathError
	switch {
	case errors.As(err, &pathErr) && pathErr.Path == o.config:
		return nil, err // the file could not be read
	case err != nil:
		return nil, usageErrorf("%v", err) // a bad configuration
	}
	return st, nil
}

// describe prints the resolved plan of every stage (--dry-run). A stage
// reading an earlier stage's output that does not exist yet is described
// without its tensors.
func (o *mergeOptions) describe(cmd *cobra.Command, g *globals, stages []merge.Stage) error {
	type stageDesc struct {
		Name string `json:"name,omitempty"`
		Out  string `json:"output"`
		*merge.Description
		Pending string `json:"pending,omitempty"`
	}
	var out []stageDesc
	made := map[string]bool{}
	for _, st := range stages {
		sd := stageDesc{Name: st.Name, Out: st.Out}
		pending := ""
		for _, in := range st.Plan.Inputs() {
			if made[in] {
				if _, err := os.Stat(in); err != nil {
					pending = in
				}
			}
		}
		made[st.Out] = true
		if pending != "" {
			sd.Pending = "reads " + pending + ", which an earlier stage writes: its tensors are resolved when it runs"
			sd.Description = &merge.Description{Method: st.Plan.Method, Base: st.Plan.Base, DType: st.Plan.DType}
			for _, m := range st.Plan.Models {
				sd.Models = append(sd.Models, m.Path)
			}
		} else {
			d, err := merge.Describe(cmd.Context(), st.Plan)
			if err != nil {
				return fmt.Errorf("%s%w", stagePrefix(st), err)
			}
			sd.Description = d
		}
		out = append(out, sd)
	}
	w := cmd.OutOrStdout()
	if o.asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if o.config == "" || len(out) == 1 {
			return enc.Encode(out[0])
		}
		return enc.Encode(map[string]any{"stages": out})
	}
	for i, sd := range out {
		if i > 0 {
			fmt.Fprintln(w)
		}
		if sd.Name != "" {
			fmt.Fprintf(w, "stage %s -> %s\n", sd.Name, sd.Out)
		} else {
			fmt.Fprintf(w, "merge -> %s\n", sd.Out)
		}
		printDescription(w, sd.Description)
		if sd.Pending != "" {
			fmt.Fprintf(w, "  (%s)\n", sd.Pending)
		}
	}
	return nil
}

// printDescription writes a plan description as text: the merge, then one
// line per tensor.
func printDescription(w io.Writer, d *merge.Description) {
	fmt.Fprintf(w, "method %s, %d models", d.Method, len(d.Models))
	if d.Base != "" {
		fmt.Fprintf(w, ", base %s", d.Base)
	}
	if d.DType != "" {
		fmt.Fprintf(w, ", dtype %s", d.DType)
	}
	if d.NumLayers > 0 {
		fmt.Fprintf(w, ", %d layers", d.NumLayers)
	}
	if d.VocabSize > 0 {
		fmt.Fprintf(w, ", vocabulary of %d", d.VocabSize)
	}
	fmt.Fprintln(w)
	for i, m := range d.Models {
		fmt.Fprintf(w, "  model %d: %s\n", i+1, m)
	}
	for _, k := range slices.Sorted(maps.Keys(d.Params)) {
		fmt.Fprintf(w, "  %s: %v\n", k, d.Params[k])
	}
	for _, t := range d.Tensors {
		var b strings.Builder
		fmt.Fprintf(&b, "%s %s%v", t.Name, t.DType, t.Shape)
		if t.Copy {
			fmt.Fprintf(&b, " = copy of %s[%s]", t.Inputs[0].Model, t.Inputs[0].Tensor)
			fmt.Fprintln(w, b.String())
			continue
		}
		fmt.Fprintf(&b, " t=%.4g <-", t.Depth)
		for i, in := range t.Inputs {
			tag := ""
			if i == t.Base {
				tag = " (base)"
			}
			model := in.Model
			if in.LoRA != "" {
				model += "+" + in.LoRA
			}
			if in.Vocab {
				tag += " (rows permuted into the output vocabulary)"
			}
			if in.Tensor == t.Name {
				fmt.Fprintf(&b, " %s%s", model, tag)
			} else {
				fmt.Fprintf(&b, " %s[%s]%s", model, in.Tensor, tag)
			}
		}
		for _, k := range slices.Sorted(maps.Keys(t.Params)) {
			switch v := t.Params[k].(type) {
			case []float64:
				parts := make([]string, len(v))
				for i, x := range v {
					parts[i] = strconv.FormatFloat(x, 'g', 6, 64)
				}
				fmt.Fprintf(&b, " %s=%s", k, strings.Join(parts, ","))
			case float64:
				fmt.Fprintf(&b, " %s=%s", k, strconv.FormatFloat(v, 'g', 6, 64))
			}
		}
		fmt.Fprintln(w, b.String())
	}
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
		if err := r.Input("a LoRA adapter", m.LoRA); err != nil {
			return err
		}
	}
	if p.Base != "" {
		if err := declareModel(r, "--base", p.Base); err != nil {
			return err
		}
		if err := r.Input("the base's LoRA adapter", p.BaseLoRA); err != nil {
			return err
		}
	}
	for _, s := range p.Slices {
		for _, src := range s.Sources {
			if err := declareModel(r, "a slice source", src.Path); err != nil {
				return err
			}
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

// configOnly refuses models and plan flags beside --config.
func (o *mergeOptions) configOnly(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageErrorf("with --config the models come from the configuration, not the command line")
	}
	var set []string
	cmd.Flags().Visit(func(f *pflag.Flag) {
		name := strings.TrimPrefix(f.Name, "no-")
		if _, isParam := o.params[name]; isParam || slices.Contains(planFlags, f.Name) {
			set = append(set, "--"+f.Name)
		}
	})
	if len(set) > 0 {
		return usageErrorf("%s cannot be combined with --config; set it in the configuration", strings.Join(set, ", "))
	}
	return nil
}

// plan builds the merge plan from the flags.
func (o *mergeOptions) plan(cmd *cobra.Command, args []string) (*merge.Plan, error) {
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
	base, err := resolveModelArg(o.base)
	if err != nil {
		return nil, err
	}
	p := &merge.Plan{Method: m.Name(), Base: base, DType: o.dtype, Params: merge.Params{}}
	for _, a := range args {
		path, err := resolveModelArg(a)
		if err != nil {
			return nil, err
		}
		p.Models = append(p.Models, merge.ModelInput{Path: path, Params: merge.Params{}})
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

// resolveModelArg turns a model argument that is not a local path but a
// Hub id ("org/name[@revision]") into its snapshot in the local Hugging
// Face cache; anything else is kept (a missing path is reported with the
// other inputs).
func resolveModelArg(a string) (string, error) {
	if a == "" {
		return a, nil
	}
	if _, err := os.Stat(a); err == nil {
		return a, nil
	}
	repo, _, _ := strings.Cut(a, "@")
	if !hub.IsRepoID(repo) || strings.HasPrefix(a, ".") {
		return a, nil
	}
	path, err := hub.ResolveModel(a)
	var nc *hub.NotCachedError
	if errors.As(err, &nc) {
		return "", exitError{code: exitUsage, err: err}
	}
	if err != nil {
		return a, nil
	}
	return path, nil
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
