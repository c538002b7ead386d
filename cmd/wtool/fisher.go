package main

import (
	"github.com/spf13/cobra"

	"github.com/wtool/wtool/fisher"
	"github.com/wtool/wtool/fisher/mlp"
	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/io/fsafe"
)

func newFisherCmd(g *globals) *cobra.Command {
	var mf mlpFlags
	var out, labels, labelsKey string
	var batch int
	var force, allowNonFinite bool
	cmd := &cobra.Command{
		Use:   "fisher MODEL --calib X.safetensors --labels Y.safetensors -o F.safetensors",
		Short: "Compute the diagonal Fisher information of an MLP on labelled data",
		Long: `Fisher runs labelled calibration data through an MLP checkpoint with the
built-in engine, forward and backward, and writes the diagonal empirical Fisher
information: for every weight and bias, the mean over batches of the squared
gradient of the batch's mean cross-entropy loss, as float32 tensors with the
parameters' names and shapes (format in docs/stats.md). FWSVD compression and
Fisher-weighted merging use it.

The batch size changes the result (the gradient is of each batch's mean
loss); the default is 32. Labels are class indices in [0, outputs of the last
layer): the only 1-D integer tensor of --labels, or --labels-key. For models
that are not plain MLPs use tools/wtool_collect.py, which writes the same file.

A NaN or Inf in the result (a NaN weight or input, an overflowing gradient)
is refused unless --allow-nonfinite. The output is written atomically and may
not be, contain or lie inside an input.`,
		Example: `  wtool fisher testdata/demo/mlp-a --calib testdata/demo/digits_train.safetensors \
      --labels testdata/demo/digits_train.safetensors -o /tmp/a-fisher.safetensors`,
		Args: argsBetween(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !checkpoint.IsSingleFile(out) {
				return usageErrorf("-o %s: the Fisher file must end in .safetensors", out)
			}
			if batch <= 0 {
				return usageErrorf("--batch-size must be positive")
			}
			reg := &fsafe.Registry{Force: force}
			if err := declareModel(reg, "MODEL", args[0]); err != nil {
				return err
			}
			if err := reg.Input("--calib", mf.calib); err != nil {
				return err
			}
			if err := reg.Input("--labels", labels); err != nil {
				return err
			}
			reg.Output("-o", out)
			if err := g.checkPaths(reg); err != nil {
				return err
			}
			n, err := mf.load(args[0])
			if err != nil {
				return err
			}
			in, err := mlp.OpenInputs(mf.calib, mf.calibKey)
			if err != nil {
				return err
			}
			defer in.Close()
			ys, err := mlp.ReadLabels(labels, labelsKey)
			if err != nil {
				return err
			}
			update, finish := g.countProgress("samples")
			ts, meta, err := mlp.CollectFisher(cmd.Context(), n, in, ys, mlp.Options{BatchSize: batch, Progress: update, Source: "wtool fisher " + args[0]})
			finish()
			if err != nil {
				return err
			}
			opts := checkpoint.WriteOptions{Force: force, Inputs: reg.Inputs(), AllowNonFinite: allowNonFinite}
			if err := fisher.Write(cmd.Context(), out, ts, meta, opts); err != nil {
				return err
			}
			g.info("wrote %s: Fisher of %d tensors over %d batches (mean loss %.4f)", out, len(ts), meta.Batches, meta.Loss)
			return nil
		},
	}
	mf.register(cmd, true)
	cmd.Flags().StringVar(&labels, "labels", "", "labels: a safetensors file with a 1-D integer tensor [samples] (required)")
	cmd.Flags().StringVar(&labelsKey, "labels-key", "", "name of the labels tensor when the file has several integer tensors")
	cmd.Flags().StringVarP(&out, "output", "o", "", "output Fisher file (.safetensors, required)")
	cmd.Flags().IntVar(&batch, "batch-size", 32, "samples per batch (the Fisher depends on it)")
	cmd.Flags().BoolVar(&force, "force", false, "replace the output if it exists (never an input)")
	cmd.Flags().BoolVar(&allowNonFinite, "allow-nonfinite", false, "write NaN/Inf values instead of failing")
	cmd.MarkFlagRequired("labels")
	cmd.MarkFlagRequired("output")
	return cmd
}
