package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/wtool/wtool/fisher/mlp"
	"github.com/wtool/wtool/fisher/nn"
	"github.com/wtool/wtool/fisher/stats"
	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/permute"
)

func newAlignCmd(g *globals) *cobra.Command {
	var of outputFlags
	var mf mlpFlags
	var method, specName, statsPath, savePerm string
	var seed uint64
	var restarts, maxSweeps int
	var cacheSize string
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
  activation  activation matching: correlate the two models' units on the
              same data and assign each group once, pooling every statistics
              entry of the group's space (a residual stream's every block
              boundary, a ResNet stage's every block output); heads are
              matched as heads. Needs joint statistics: --stats
              JOINT.safetensors (from 'wtool stats A B --calib X' or
              tools/wtool_collect.py), or --calib X.safetensors (computed
              here, by the engine of 'wtool stats').

The permutation spec says which units may move together. 'auto' (the
default) builds it from the architecture ('wtool arch' shows what it sees)
for every family it knows: ResNet (a stage's channels shared by its block
outputs, downsample and BatchNorm statistics; each block's interior), ViT and
BERT (the residual stream over embeddings, norms and every writer; each MLP;
attention heads), GPT-2 (Conv1D and fused c_attn), the Llama family (Llama,
Mistral, Qwen2, Gemma), Phi-3 (fused qkv_proj and gate_up_proj) and Mixtral
(each expert's units; the router's outputs stay). Attention heads move whole,
grouped-query aware; inside a head the query/key features and the
value/output features get their own permutations, except where rotary
embeddings pair the query/key features. A checkpoint of no known family is
taken as a chain of Linear layers when it is one. 'mlp' is the chain of
Linear layers (--layers gives the order), 'llama' is 'auto' restricted to the
Llama decoder layout, and FILE.json is any spec
(docs/permutation-spec.md). The L2 distance to REFERENCE before and after is
printed. --save-perm is an output like OUTPUT: written atomically, never over
an input or inside OUTPUT.

Weight matching reads the checkpoints in their own dtype, a block at a time,
in memory that does not depend on the model's size (about two float32 cost
matrices of the largest group: 1.6 GB for an 8B Llama's 14336 MLP units).
A group is solved again only when a permutation its cost depends on has
changed. --restarts defaults to 3 for models whose sweep costs under 1e12
floating-point operations (up to about 100M parameters) and 1 above: an 8B
model's sweep is about 2e14 operations (tens of minutes on two cores), and
each restart repeats every sweep. --cache-size is how much of each model's
tensors stays mapped between uses (file-backed, reclaimable memory).
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
			cache, err := parseCacheSize(cacheSize)
			if err != nil {
				return err
			}
			if maxSweeps < 0 || restarts < 0 {
				return usageErrorf("--max-sweeps and --restarts cannot be negative")
			}
			if restarts == 0 {
				restarts = permute.AutoRestarts(spec, permute.Shapes(ref))
			}
			aopts := permute.AlignOptions{Method: method, Match: permute.MatchOptions{Seed: seed, Restarts: restarts, MaxSweeps: maxSweeps, CacheBytes: cache}}
			if method == "activation" {
				js, closeStats, err := jointStats(cmd, &mf, statsPath, args)
				if err != nil {
					return err
				}
				defer closeStats()
				aopts.Stats = js
			}
			if method == "weight" {
				stop := matchProgress(g, &aopts.Match, restarts, permute.SweepFLOPs(spec, permute.Shapes(ref)) >= 1e12)
				defer stop()
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
	cmd.Flags().IntVar(&restarts, "restarts", 0, "weight matching runs with seeds seed, seed+1, ...; the closest result is kept (0: 3 for small models, 1 for large)")
	cmd.Flags().IntVar(&maxSweeps, "max-sweeps", 100, "weight matching stops after this many sweeps if it has not converged")
	cmd.Flags().StringVar(&cacheSize, "cache-size", "1GiB", "bytes of each model's tensors kept mapped between uses in weight matching (0: none)")
	cmd.Flags().StringVar(&savePerm, "save-perm", "", "also write the permutations to this .safetensors file")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

// jointStats opens --stats or computes joint statistics from --calib with
// the built-in engine (fisher/nn) for its architectures, or the MLP engine.
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
	var engine []*nn.Net
	for _, p := range models {
		n, ok, err := engineModel(p)
		if err != nil {
			return nil, nil, err
		}
		if !ok {
			break
		}
		engine = append(engine, n)
	}
	if len(engine) == len(models) {
		d, err := nn.OpenData(mf.calib, mf.calibKey, "-")
		if err != nil {
			return nil, nil, err
		}
		defer d.Close()
		s, err := nn.CollectStats(cmd.Context(), engine, d, nn.StatsOptions{Source: "wtool align " + strings.Join(models, " ")})
		if err != nil {
			return nil, nil, err
		}
		return permute.StatsOf(s), func() {}, nil
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
			v["groups_solved"], v["groups_skipped"] = res.Solved, res.Skipped
			v["seconds"] = statsJSON(res.Stats)
		} else {
			v["correlations"] = res.Correlations
		}
		return printJSON(out, v)
	}
	fmt.Fprintf(out, "aligned %d groups (%s matching", len(spec.Groups), method)
	if method == "weight" {
		fmt.Fprintf(out, ", %d sweeps, %d group solves, %d skipped", res.Sweeps, res.Solved, res.Skipped)
	}
	lower := "identical"
	if res.DistanceBefore > 0 {
		lower = fmt.Sprintf("%.1f%% lower", 100*(1-res.DistanceAfter/res.DistanceBefore))
	}
	fmt.Fprintf(out, ")\nL2 distance to the reference: %.6g before, %.6g after (%s)\n", res.DistanceBefore, res.DistanceAfter, lower)
	for _, c := range res.Correlations {
		fmt.Fprintf(out, "  %s: mean correlation %.3f -> %.3f\n", c.Group, c.Before, c.After)
	}
	if method == "weight" && res.Stats.GEMMFLOPs >= 1e12 {
		g.info("%s", statsLine(res.Stats))
	}
	g.wrote(w, "")
	return nil
}

// parseCacheSize reads --cache-size: a size, or 0 for no cache (which
// permute spells -1).
func parseCacheSize(s string) (int64, error) {
	if strings.TrimSpace(s) == "0" {
		return -1, nil
	}
	n, err := checkpoint.ParseSize(s)
	if err != nil {
		return 0, usageErrorf("--cache-size: %v", err)
	}
	return n, nil
}

// matchProgress reports weight matching on stderr: a bar over each sweep's
// groups on a terminal and, for large models (lines), a line per sweep
// unless --quiet. The returned function clears the bar.
func matchProgress(g *globals, o *permute.MatchOptions, restarts int, lines bool) func() {
	update, finish := func(int, int) {}, func() {}
	cur := 0
	done := 0
	start := time.Now()
	o.OnGroup = func(ev permute.GroupEvent) {
		if key := ev.Restart*1_000_000 + ev.Sweep; key != cur {
			finish()
			desc := fmt.Sprintf("sweep %d", ev.Sweep)
			if restarts > 1 {
				desc = fmt.Sprintf("restart %d sweep %d", ev.Restart, ev.Sweep)
			}
			update, finish = g.countProgress(desc)
			cur, done = key, 0
		}
		done++
		update(done, ev.Groups)
	}
	o.OnSweep = func(ev permute.SweepEvent) {
		finish()
		update, finish = func(int, int) {}, func() {}
		if !lines {
			return
		}
		prefix := ""
		if restarts > 1 {
			prefix = fmt.Sprintf("restart %d ", ev.Restart)
		}
		g.info("%ssweep %d: %d groups solved, %d skipped, %d changed, objective +%.6g, %.1f s",
			prefix, ev.Sweep, ev.Solved, ev.Skipped, ev.Changed, ev.Gain, time.Since(start).Seconds())
		start = time.Now()
	}
	return func() { finish() }
}

// statsJSON is the time breakdown of weight matching for --json.
func statsJSON(st permute.MatchStats) map[string]float64 {
	v := map[string]float64{"cost_matrices": st.CostTime.Seconds(), "gemm": st.GEMMTime.Seconds(),
		"assignments": st.SolveTime.Seconds(), "model_passes": st.PassTime.Seconds(), "gemm_flop": st.GEMMFLOPs, "gemm_bf16_flop": st.BF16FLOPs}
	if s := st.GEMMTime.Seconds(); s > 0 {
		v["gemm_gflops"] = st.GEMMFLOPs / s / 1e9
	}
	return v
}

// statsLine summarises where weight matching's time went.
func statsLine(st permute.MatchStats) string {
	gf := 0.0
	if s := st.GEMMTime.Seconds(); s > 0 {
		gf = st.GEMMFLOPs / s / 1e9
	}
	return fmt.Sprintf("weight matching: %.1f s computing cost matrices (GEMM %.1f s, %.1f GFLOP/s), %.1f s solving assignments (beside the GEMMs), %.1f s reading whole models",
		st.CostTime.Seconds(), st.GEMMTime.Seconds(), gf, st.SolveTime.Seconds(), st.PassTime.Seconds())
}
