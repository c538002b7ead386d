package main

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/wtool/wtool/fisher/mlp"
	"github.com/wtool/wtool/fisher/stats"
	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/permute"
)

func newAlignCmd(g *globals) *cobra.Command {
	var of outputFlags
	var mf mlpFlags
	var method, specName, statsPath, savePerm string
	var seed uint64
	var restarts int
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "align REFERENCE MODEL -o OUTPUT [--method weight|activation] [--spec auto|mlp|llama|FILE.json]",
		Short: "Permute MODEL's hidden units into REFERENCE's order without changing its function",
		Long: `Align writes MODEL with its hidden units permuted into REFERENCE's unit order:
a checkpoint that computes exactly the same function as MODEL, but whose
weights are as close as permutations can make them to REFERENCE's, so that
averaging or merging the two works.

Methods:
  weight      weight matching (Git Re-Basin): coordinate descent over the
              permutation groups in a seeded random order, one exact linear
              assignment per group, until a sweep no longer improves.
  activation  activation matching: correlate the two models' hidden units on
              the same data and assign each group once. Needs joint statistics:
              --stats JOINT.safetensors (from 'wtool stats A B' or
              tools/wtool_collect.py), or --calib X.safetensors for MLPs.

The permutation spec says which units may move together: 'mlp' (a chain of
Linear layers), 'llama' (Llama/Mistral/Qwen2 naming: residual stream, MLP
units and whole attention heads per layer, grouped-query aware; head shapes
from config.json), 'auto' (the one that fits), or a JSON file
(docs/permutation-spec.md). The L2 distance to REFERENCE before and after is
printed. --save-perm is an output like OUTPUT: written atomically, never over
an input or inside OUTPUT.
` + outputHelp,
		Example: `  wtool align testdata/demo/mlp-a testdata/demo/mlp-b -o /tmp/mlp-b-aligned
  wtool align testdata/demo/mlp-a testdata/demo/mlp-b -o /tmp/mlp-b-act --method activation \
      --calib testdata/demo/digits_train.safetensors --save-perm /tmp/perm.safetensors`,
		Args: argsBetween(2, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, err := of.options(cmd, g)
			if err != nil {
				return err
			}
			if method != "weight" && method != "activation" {
				return usageErrorf("--method %q: want weight or activation", method)
			}
			if method == "activation" && (statsPath == "") == (mf.calib == "") {
				return usageErrorf("--method activation needs exactly one of --stats or --calib")
			}
			reg := of.registry()
			if err := declareModel(reg, "REFERENCE", args[0]); err != nil {
				return err
			}
			if err := declareModel(reg, "MODEL", args[1]); err != nil {
				return err
			}
			if err := reg.Input("--stats", statsPath); err != nil {
				return err
			}
			if err := reg.Input("--calib", mf.calib); err != nil {
				return err
			}
			if err := declareSpec(reg, specName); err != nil {
				return err
			}
			reg.Output("--save-perm", savePerm)
			if err := g.checkPaths(reg); err != nil {
				return err
			}
			opts.Inputs, opts.Fingerprint = reg.Inputs(), fingerprint(cmd, args, reg.Inputs())
			ref, err := checkpoint.OpenContext(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			defer ref.Close()
			model, err := checkpoint.OpenContext(cmd.Context(), args[1])
			if err != nil {
				return err
			}
			defer model.Close()
			var layers []string
			if mf.layers != "" {
				layers = strings.Split(mf.layers, ",")
			}
			spec, err := permute.BuiltinSpec(specName, ref, layers)
			if err != nil {
				return err
			}
			aopts := permute.AlignOptions{Method: method, Match: permute.MatchOptions{Seed: seed, Restarts: restarts}}
			if method == "activation" {
				js, closeStats, err := jointStats(cmd, &mf, statsPath, args)
				if err != nil {
					return err
				}
				defer closeStats()
				aopts.Stats = js
			}
			if !g.quiet {
				aopts.Match.Progress = func(sweep int, obj float64) { g.info("sweep %d: objective %.6g", sweep, obj) }
			}
			res, err := permute.Align(cmd.Context(), ref, model, spec, aopts)
			if err != nil {
				return err
			}
			update, finish := g.byteProgress("writing")
			opts.Progress = update
			written, err := permute.ApplyCheckpoint(cmd.Context(), model, spec, res.Perms, of.out, opts)
			finish()
			g.notes(written)
			if err != nil {
				return err
			}
			if savePerm != "" {
				if err := permute.WritePerms(cmd.Context(), savePerm, res.Perms, checkpoint.WriteOptions{Force: of.force, Inputs: reg.Inputs()}); err != nil {
					return err
				}
			}
			return printAlign(cmd, g, asJSON, method, spec, res, written)
		},
	}
	of.register(cmd)
	mf.register(cmd, false)
	cmd.Flags().StringVar(&method, "method", "weight", "weight (weight matching) or activation (activation matching)")
	cmd.Flags().StringVar(&specName, "spec", "auto", "permutation spec: auto, mlp, llama, or a JSON file")
	cmd.Flags().StringVar(&statsPath, "stats", "", "joint statistics of REFERENCE and MODEL, for --method activation")
	cmd.Flags().Uint64Var(&seed, "seed", 0, "seed of the group order in weight matching")
	cmd.Flags().IntVar(&restarts, "restarts", 3, "weight matching runs with seeds seed, seed+1, ...; the closest result is kept")
	cmd.Flags().StringVar(&savePerm, "save-perm", "", "also write the permutations to this .safetensors file")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

// jointStats opens --stats or computes joint statistics with the MLP engine
// from --calib.
func jointStats(cmd *cobra.Command, mf *mlpFlags, statsPath string, models []string) (permute.JointStats, func(), error) {
	if statsPath != "" {
		f, err := stats.Open(statsPath)
		if err != nil {
			return nil, nil, err
		}
		if f.Kind != stats.Joint {
			f.Close()
			return nil, nil, fmt.Errorf("%s: %s statistics; activation matching needs joint statistics of the two models ('wtool stats A B')", statsPath, f.Kind)
		}
		return f, func() { f.Close() }, nil
	}
	var nets []*mlp.Network
	for _, p := range models {
		n, err := mf.load(p)
		if err != nil {
			return nil, nil, err
		}
		nets = append(nets, n)
	}
	in, err := mlp.OpenInputs(mf.calib, mf.calibKey)
	if err != nil {
		return nil, nil, err
	}
	defer in.Close()
	s, err := mlp.CollectStats(cmd.Context(), nets, in, mlp.Options{})
	if err != nil {
		return nil, nil, err
	}
	return permute.StatsOf(s), func() {}, nil
}

func printAlign(cmd *cobra.Command, g *globals, asJSON bool, method string, spec *permute.Spec, res *permute.AlignResult, w *checkpoint.Written) error {
	out := cmd.OutOrStdout()
	if asJSON {
		v := map[string]any{"output": w.Path, "method": method, "groups": spec.Groups,
			"distance_before": res.DistanceBefore, "distance_after": res.DistanceAfter}
		if method == "weight" {
			v["sweeps"] = res.Sweeps
		} else {
			v["correlations"] = res.Correlations
		}
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	fmt.Fprintf(out, "aligned %d groups (%s matching", len(spec.Groups), method)
	if method == "weight" {
		fmt.Fprintf(out, ", %d sweeps", res.Sweeps)
	}
	lower := "identical"
	if res.DistanceBefore > 0 {
		lower = fmt.Sprintf("%.1f%% lower", 100*(1-res.DistanceAfter/res.DistanceBefore))
	}
	fmt.Fprintf(out, ")\nL2 distance to the reference: %.6g before, %.6g after (%s)\n", res.DistanceBefore, res.DistanceAfter, lower)
	for _, c := range res.Correlations {
		fmt.Fprintf(out, "  %s: mean correlation %.3f -> %.3f\n", c.Group, c.Before, c.After)
	}
	g.wrote(w, "")
	return nil
}
