package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/wtool/wtool/fisher/nn"
	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/tensors"
)

func newResetBNCmd(g *globals) *cobra.Command {
	var of outputFlags
	var data, dataKey string
	var batch, batches int
	var momentum float64
	cmd := &cobra.Command{
		Use:   "reset-bn MODEL --data X.safetensors -o OUTPUT",
		Short: "Recompute a network's BatchNorm running statistics on data (after a merge)",
		Long: `Reset-bn recomputes the running mean and variance of every BatchNorm of a
network (ResNet) by running data through it in training mode, exactly as
PyTorch does: the statistics are reset, then every batch is normalised with its
own mean and variance while the running averages are updated (the cumulative
average over the batches, PyTorch's momentum=None, unless --momentum). This is
the "reset BN statistics" step that weight averaging, weight matching and PLeaS
need: the averaged running statistics of two models are not those of the
merged model. Every other tensor is copied byte-identical.

The batch size matters (each batch is normalised with its own statistics);
PLeaS and REPAIR run about 100 training batches.`,
		Example: `  wtool reset-bn merged-resnet --data testdata/demo/digits_train.safetensors -o merged-resnet-bn`,
		Args:    argsBetween(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if batch <= 1 {
				return usageErrorf("--batch-size must be at least 2")
			}
			if momentum < 0 || momentum > 1 {
				return usageErrorf("--momentum must be in [0, 1] (0: cumulative average)")
			}
			opts, err := of.options(cmd, g)
			if err != nil {
				return err
			}
			reg := of.registry()
			if err := declareModel(reg, "MODEL", args[0]); err != nil {
				return err
			}
			if err := reg.Input("--data", data); err != nil {
				return err
			}
			if err := g.checkPaths(reg); err != nil {
				return err
			}
			m, err := checkpoint.OpenContext(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			defer m.Close()
			n, err := nn.Load(m)
			if err != nil {
				return err
			}
			d, err := nn.OpenData(data, dataKey, "-")
			if err != nil {
				return err
			}
			defer d.Close()
			update, finish := g.countProgress("samples")
			ts, err := nn.RecomputeBatchNorm(cmd.Context(), n, d, nn.BNOptions{BatchSize: batch, Batches: batches, Momentum: momentum, Progress: update})
			finish()
			if err != nil {
				return err
			}
			fresh := map[string]*tensors.Tensor{}
			for _, t := range ts {
				fresh[t.Name] = t
			}
			opts, err = m.DefaultWriteOptions(opts)
			if err != nil {
				return err
			}
			opts.Inputs, opts.Fingerprint = reg.Inputs(), fingerprint(cmd, args, reg.Inputs())
			pass := m.Passthrough()
			produce := func(ctx context.Context, e safetensors.Entry) (*tensors.Tensor, func(), error) {
				if t, ok := fresh[e.Name]; ok {
					return t, nil, nil
				}
				return pass(ctx, e)
			}
			res, err := checkpoint.Write(cmd.Context(), of.out, m.Entries(), produce, opts)
			g.notes(res)
			if err != nil {
				return err
			}
			samples := d.N
			if batches > 0 {
				samples = min(samples, batches*batch)
			}
			g.wrote(res, fmt.Sprintf("BatchNorm statistics of %d modules recomputed on %d samples", len(ts)/3, samples))
			return nil
		},
	}
	of.register(cmd)
	cmd.Flags().StringVar(&data, "data", "", "data to run (safetensors: images [samples, C, H, W], or [samples, features] with config.json's image shape) (required)")
	cmd.Flags().StringVar(&dataKey, "data-key", "", "name of the data tensor when the file has several")
	cmd.Flags().IntVar(&batch, "batch-size", 64, "images per batch (changes the result)")
	cmd.Flags().IntVar(&batches, "batches", 0, "run at most this many batches (0: all the data)")
	cmd.Flags().Float64Var(&momentum, "momentum", 0, "BatchNorm momentum of the running averages (0: cumulative average, PyTorch's momentum=None)")
	cmd.MarkFlagRequired("data")
	return cmd
}
