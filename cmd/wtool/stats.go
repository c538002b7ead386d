package main

import (
	"strings"

	"github.com/spf13/cobra"

	"github.com/wtool/wtool/fisher/mlp"
	"github.com/wtool/wtool/fisher/stats"
	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/io/fsafe"
)

func newStatsCmd(g *globals) *cobra.Command {
	var mf mlpFlags
	var out string
	var batch int
	var force, allowNonFinite bool
	cmd := &cobra.Command{
		Use:   "stats MODEL [MODEL2] --calib X.safetensors -o STATS.safetensors",
		Short: "Collect layer-input statistics (Gram matrices) of an MLP, or joint statistics of two",
		Long: `Stats runs calibration inputs through an MLP checkpoint with the built-in engine
and writes, per Linear module, the number of samples, the sum and the sum of
absolute values of its inputs and their Gram matrix (sum of x x^T, float64):
what activation-aware and whitened compression and RegMean need. With two
models of the same architecture it writes joint statistics (each model's Gram
and the cross Gram sum of x_A x_B^T) for activation matching and PLeaS.

The file format is specified in docs/stats.md; tools/wtool_collect.py writes
the same files for any PyTorch model. The MLP is recognised from the
checkpoint (a chain of Linear layers); give --layers when the order is
ambiguous and --act for the activation between layers.

Statistics are accumulated in float64; a NaN or Inf in them (a NaN weight or
input, or values so large their squares overflow) is refused unless
--allow-nonfinite. The output is written atomically and may not be, contain
or lie inside an input.`,
		Example: `  wtool stats testdata/demo/mlp-a --calib testdata/demo/digits_train.safetensors -o /tmp/a-stats.safetensors
  wtool stats testdata/demo/mlp-a testdata/demo/mlp-b --calib testdata/demo/digits_train.safetensors -o /tmp/ab-joint.safetensors`,
		Args: argsBetween(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !checkpoint.IsSingleFile(out) {
				return usageErrorf("-o %s: the statistics file must end in .safetensors", out)
			}
			reg := &fsafe.Registry{Force: force}
			for _, p := range args {
				if err := declareModel(reg, "MODEL", p); err != nil {
					return err
				}
			}
			if err := reg.Input("--calib", mf.calib); err != nil {
				return err
			}
			reg.Output("-o", out)
			if err := g.checkPaths(reg); err != nil {
				return err
			}
			var nets []*mlp.Network
			for _, p := range args {
				n, err := mf.load(p)
				if err != nil {
					return err
				}
				nets = append(nets, n)
			}
			in, err := mlp.OpenInputs(mf.calib, mf.calibKey)
			if err != nil {
				return err
			}
			defer in.Close()
			update, finish := g.countProgress("samples")
			s, err := mlp.CollectStats(cmd.Context(), nets, in, mlp.Options{BatchSize: batch, Progress: update, Source: "wtool stats " + strings.Join(args, " ")})
			finish()
			if err != nil {
				return err
			}
			if err := stats.Write(cmd.Context(), out, s, checkpoint.WriteOptions{Force: force, Inputs: reg.Inputs(), AllowNonFinite: allowNonFinite}); err != nil {
				return err
			}
			g.info("wrote %s: %s statistics of %d modules over %d samples", out, s.Kind, len(s.Modules), s.Samples)
			return nil
		},
	}
	mf.register(cmd, true)
	cmd.Flags().StringVarP(&out, "output", "o", "", "output statistics file (.safetensors, required)")
	cmd.Flags().IntVar(&batch, "batch-size", 256, "samples per batch (does not change the result)")
	cmd.Flags().BoolVar(&force, "force", false, "replace the output if it exists (never an input)")
	cmd.Flags().BoolVar(&allowNonFinite, "allow-nonfinite", false, "write NaN/Inf statistics instead of failing")
	cmd.MarkFlagRequired("output")
	return cmd
}
