package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/wtool/wtool/io/fsafe"
	"github.com/wtool/wtool/merge"
)

// mergeFlags are the flags that define a merge plan (as opposed to output
// flags); with --config none of them may be given.
var mergeFlagNames = []string{"method", "base", "weights", "density", "lambda", "t", "normalize", "no-normalize",
	"rescale", "dtype", "seed", "spec", "layers", "act", "calib", "calib-key", "stats",
	"fisher", "width", "ridge", "match", "alpha", "restarts"}

func newMergeCmd(g *globals) *cobra.Command {
	var of outputFlags
	var (
		config, method, base, weights, density, lambda, t, rescale, dtype string
		spec, layers, act, calib, calibKey, statsList, fisherList, match  string
		seed                                                              uint64
		normalize, noNormalize                                            bool
		width, ridge, alpha                                               float64
		restarts                                                          int
	)
	var methodDocs []string
	for _, m := range merge.Methods {
		methodDocs = append(methodDocs, fmt.Sprintf("  %-16s %s", m.Name, m.Doc))
	}
	cmd := &cobra.Command{
		Use:   "merge MODEL... -o OUTPUT --method METHOD [--base BASE] [--weights w1,w2,...]",
		Short: "Merge checkpoints: linear, task arithmetic, TIES, DARE, SLERP, weight matching, PLeaS, Fisher, RegMean",
		Long: `Merge combines checkpoints of the same architecture into one, streaming one
tensor at a time (one layer for RegMean). Methods:

` + strings.Join(methodDocs, "\n") + `

Task-vector methods (task-arithmetic, ties, dare-*) work on x_i - base and
need --base. Weights (--weights) and densities (--density) are per model; a
single --density applies to all. normalize defaults as in mergekit (on for
linear, ties and wm). DARE rescales kept entries by 1/density (the paper's,
unbiased) unless --rescale l1 (mergekit's L1-norm matching) or none; its
random masks depend on --seed, the tensor and the model's values, never on the
model order. slerp interpolates two models at --t (t=0 gives the first, or
--base). wm aligns every model to the first by weight matching with the
permutation spec (--spec) and averages; three or more use MergeMany. pleas
needs --calib X (MLPs) or --stats JOINT and merges to --width (1 = full merge,
2 = both kept). fisher takes one Fisher file per model (--fisher F1,F2) and
regmean one statistics file per model (--stats S1,S2) or --calib for MLPs.

--config reads a mergekit-style YAML file instead of the method flags (see
README); the same merge by flags or YAML gives identical bytes. Integer and
other non-float tensors are taken from the first model; mixed input dtypes are
computed in float32 and written in --dtype (default: the first model's).
NaN/Inf in the result is an error unless --allow-nonfinite.
` + outputHelp,
		Example: `  wtool merge testdata/demo/mlp-a testdata/demo/mlp-b -o /tmp/avg --method linear
  wtool merge testdata/demo/mlp-a testdata/demo/mlp-b -o /tmp/wm --method wm
  wtool merge testdata/demo/mlp-a testdata/demo/mlp-b -o /tmp/pleas --method pleas \
      --calib testdata/demo/digits_train.safetensors --width 1.5
  wtool merge ft1 ft2 --base base -o out --method ties --density 0.5 --weights 1,0.5
  wtool merge --config merge.yaml -o out`,
		Args: argsBetween(0, -1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, err := of.options(cmd, g)
			if err != nil {
				return err
			}
			var p *merge.Plan
			if config != "" {
				if len(args) > 0 {
					return usageErrorf("with --config the models come from the configuration, not the command line")
				}
				var set []string
				cmd.Flags().Visit(func(f *pflag.Flag) {
					for _, n := range mergeFlagNames {
						if f.Name == n {
							set = append(set, "--"+n)
						}
					}
				})
				if len(set) > 0 {
					return usageErrorf("%s cannot be combined with --config; set it in the configuration", strings.Join(set, ", "))
				}
				if p, err = merge.ReadConfig(config); err != nil {
					return err
				}
			} else {
				if len(args) == 0 {
					return usageErrorf("give the models to merge, or --config")
				}
				if method == "" {
					return usageErrorf("--method is required (or --config)")
				}
				p = &merge.Plan{Method: method, Base: base, DType: dtype, Seed: seed,
					Spec: spec, Act: act, Calib: calib, CalibKey: calibKey, Width: width, Ridge: ridge, Match: match, Alpha: alpha, Restarts: restarts}
				for _, a := range args {
					p.Models = append(p.Models, merge.ModelInput{Path: a})
				}
				if err := perModel(weights, "--weights", p, func(m *merge.ModelInput, v float64) { m.Weight = merge.Const(v) }); err != nil {
					return err
				}
				if err := perModel(density, "--density", p, func(m *merge.ModelInput, v float64) { m.Density = merge.Const(v) }); err != nil {
					return err
				}
				if lambda != "" {
					v, err := strconv.ParseFloat(lambda, 64)
					if err != nil {
						return usageErrorf("--lambda %q: %v", lambda, err)
					}
					p.Lambda = merge.Const(v)
				}
				if t != "" {
					v, err := strconv.ParseFloat(t, 64)
					if err != nil {
						return usageErrorf("--t %q: %v", t, err)
					}
					p.T = merge.Const(v)
				}
				if normalize && noNormalize {
					return usageErrorf("--normalize and --no-normalize contradict each other")
				}
				if cmd.Flags().Changed("normalize") || noNormalize {
					v := normalize && !noNormalize
					p.Normalize = &v
				}
				switch rescale {
				case "inverse", "":
					p.Rescale = merge.RescaleInverse
				case "l1":
					p.Rescale = merge.RescaleL1
				case "none":
					p.Rescale = merge.RescaleNone
				default:
					return usageErrorf("--rescale %q: want inverse, l1 or none", rescale)
				}
				if layers != "" {
					p.Layers = strings.Split(layers, ",")
				}
				if err := filesPerModel(fisherList, "--fisher", p, func(m *merge.ModelInput, f string) { m.Fisher = f }); err != nil {
					return err
				}
				if statsList != "" {
					if m, _ := merge.CanonicalMethod(method); m == "pleas" {
						p.JointStats = statsList
					} else if err := filesPerModel(statsList, "--stats", p, func(m *merge.ModelInput, f string) { m.Stats = f }); err != nil {
						return err
					}
				}
			}
			p.AllowNonFinite = p.AllowNonFinite || of.allowNonFinite
			if err := p.Validate(); err != nil {
				return usageErrorf("%v", err)
			}
			reg := of.registry()
			if err := declareMerge(reg, p, config); err != nil {
				return err
			}
			if err := g.checkPaths(reg); err != nil {
				return err
			}
			opts.Inputs, opts.Fingerprint = reg.Inputs(), fingerprint(cmd, args, reg.Inputs())
			update, finish := g.byteProgress("merging")
			opts.Progress = update
			start := time.Now()
			rep, err := merge.Execute(cmd.Context(), p, of.out, opts)
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
		},
	}
	of.register(cmd)
	f := cmd.Flags()
	f.StringVar(&config, "config", "", "mergekit-style YAML merge configuration")
	f.StringVar(&method, "method", "", "merge method (see above)")
	f.StringVar(&base, "base", "", "base model: task vectors are x_i - base; slerp's t=0 end")
	f.StringVar(&weights, "weights", "", "per-model weights, comma-separated (default 1 each)")
	f.StringVar(&density, "density", "", "fraction of task-vector entries kept (ties, dare-*): one value or one per model")
	f.StringVar(&lambda, "lambda", "", "scale of the merged task vector (default 1)")
	f.StringVar(&t, "t", "", "slerp interpolation position in [0, 1]")
	f.BoolVar(&normalize, "normalize", false, "divide by the sum of the weights (default: on for linear, ties, wm)")
	f.BoolVar(&noNormalize, "no-normalize", false, "do not divide by the sum of the weights")
	f.StringVar(&rescale, "rescale", "inverse", "DARE rescaling: inverse (1/density, the paper's), l1 (mergekit's), none")
	f.StringVar(&dtype, "dtype", "", "output dtype of floating tensors: f32, f16, bf16, f64 (default: the first model's)")
	f.Uint64Var(&seed, "seed", 0, "seed for DARE masks and weight matching's group order")
	f.StringVar(&spec, "spec", "auto", "permutation spec for wm: auto, mlp, llama or a JSON file")
	f.StringVar(&layers, "layers", "", "MLP layer order, comma-separated (pleas, regmean with --calib)")
	f.StringVar(&act, "act", "relu", "MLP activation: relu, gelu, silu, tanh (pleas, regmean with --calib)")
	f.StringVar(&calib, "calib", "", "calibration inputs for pleas/regmean on MLPs")
	f.StringVar(&calibKey, "calib-key", "", "name of the calibration tensor")
	f.StringVar(&statsList, "stats", "", "pleas: joint statistics file; regmean: one statistics file per model, comma-separated")
	f.StringVar(&fisherList, "fisher", "", "fisher: one Fisher file per model, comma-separated, in model order")
	f.Float64Var(&width, "width", 1, "pleas: merged width as a multiple of the original, 1 to 2")
	f.Float64Var(&ridge, "ridge", 0, "pleas/regmean: ridge added to the least-squares systems (relative to their mean diagonal)")
	f.StringVar(&match, "match", "activation", "pleas: activation or weight matching")
	f.Float64Var(&alpha, "alpha", 0, "regmean: scale of the Gram matrices' off-diagonal entries, in (0, 1] (default 0.9, as the RegMean paper recommends alpha < 1; 1 is the unscaled solution)")
	f.IntVar(&restarts, "restarts", 3, "wm: weight matching runs with seeds seed, seed+1, ...; the closest result is kept")
	return cmd
}

func perModel(list, flag string, p *merge.Plan, set func(*merge.ModelInput, float64)) error {
	if list == "" {
		return nil
	}
	parts := strings.Split(list, ",")
	if len(parts) != 1 && len(parts) != len(p.Models) {
		return usageErrorf("%s has %d values for %d models", flag, len(parts), len(p.Models))
	}
	for i := range p.Models {
		s := parts[0]
		if len(parts) > 1 {
			s = parts[i]
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil {
			return usageErrorf("%s: %q is not a number", flag, s)
		}
		set(&p.Models[i], v)
	}
	return nil
}

func filesPerModel(list, flag string, p *merge.Plan, set func(*merge.ModelInput, string)) error {
	if list == "" {
		return nil
	}
	parts := strings.Split(list, ",")
	if len(parts) != len(p.Models) {
		return usageErrorf("%s has %d files for %d models (one per model, in model order)", flag, len(parts), len(p.Models))
	}
	for i := range p.Models {
		set(&p.Models[i], strings.TrimSpace(parts[i]))
	}
	return nil
}

// declareMerge declares every file a merge reads: the models, the base,
// the configuration, calibration data, statistics, Fisher files and a
// permutation spec file.
func declareMerge(r *fsafe.Registry, p *merge.Plan, config string) error {
	if err := r.Input("--config", config); err != nil {
		return err
	}
	for _, m := range p.Models {
		if err := declareModel(r, "MODEL", m.Path); err != nil {
			return err
		}
		if err := r.Input("--fisher", m.Fisher); err != nil {
			return err
		}
		if err := r.Input("--stats", m.Stats); err != nil {
			return err
		}
	}
	if p.Base != "" {
		if err := declareModel(r, "--base", p.Base); err != nil {
			return err
		}
	}
	if err := r.Input("--calib", p.Calib); err != nil {
		return err
	}
	if err := r.Input("--stats", p.JointStats); err != nil {
		return err
	}
	return declareSpec(r, p.Spec)
}

// declareSpec declares a permutation spec given as a file.
func declareSpec(r *fsafe.Registry, spec string) error {
	switch spec {
	case "", "auto", "mlp", "llama":
		return nil
	}
	return r.Input("--spec", spec)
}
