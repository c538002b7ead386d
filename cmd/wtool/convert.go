package main

import (
	"github.com/spf13/cobra"

	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/tensors"
)

// outputFlags are the flags of every command that writes a checkpoint.
type outputFlags struct {
	out          string
	maxShardSize string
	force        bool
	noCopy       bool
}

func (o *outputFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&o.out, "output", "o", "", "output: a directory (Hugging Face layout) or a file ending in .safetensors (required)")
	cmd.Flags().StringVar(&o.maxShardSize, "max-shard-size", "5GB", "largest shard of a directory output (decimal units: 500MB, 5GB; binary: 2GiB)")
	cmd.Flags().BoolVar(&o.force, "force", false, "replace OUTPUT if it exists (never an input)")
	cmd.Flags().BoolVar(&o.noCopy, "no-copy-files", false, "do not copy config.json, tokenizer and other non-weight files into a directory output")
	cmd.MarkFlagRequired("output")
}

// options turns the flags into write options.
func (o *outputFlags) options(cmd *cobra.Command, g *globals) (checkpoint.WriteOptions, error) {
	opts := checkpoint.WriteOptions{Force: o.force}
	if checkpoint.IsSingleFile(o.out) {
		if cmd.Flags().Changed("max-shard-size") {
			return opts, usageErrorf("--max-shard-size needs a directory output; %s is a single file", o.out)
		}
	} else {
		n, err := checkpoint.ParseSize(o.maxShardSize)
		if err != nil {
			return opts, usageErrorf("--max-shard-size: %v", err)
		}
		opts.MaxShardSize = n
	}
	if o.noCopy {
		opts.CopyFiles = []string{}
	}
	return opts, nil
}

func newConvertCmd(g *globals) *cobra.Command {
	var of outputFlags
	var dtype string
	cmd := &cobra.Command{
		Use:   "convert PATH -o OUTPUT [--dtype f32|f16|bf16|f64] [--max-shard-size SIZE]",
		Short: "Convert a checkpoint's floating-point dtype and/or its layout (single file, shards)",
		Long: `Convert writes a copy of a checkpoint. With --dtype, every floating-point tensor
(F64, F32, F16, BF16) is converted, rounding to nearest even; integer, boolean
and FP8/FP6/FP4 tensors are copied byte-identical, as is the __metadata__.
Without --dtype nothing is converted, which re-shards a model or turns a
single file into a model directory and back.

OUTPUT ending in .safetensors is one file. Any other OUTPUT is a model
directory: model.safetensors, or shards model-0000i-of-0000N.safetensors of at
most --max-shard-size plus model.safetensors.index.json, with config.json,
tokenizer and other non-weight files of an input directory copied beside them.
The output is written to a temporary name and renamed at the end: an error or
Ctrl-C leaves nothing behind.`,
		Example: `  wtool convert model.safetensors -o model-bf16.safetensors --dtype bf16
  wtool convert ./Llama-3.2-1B -o ./llama-f16 --dtype f16 --max-shard-size 500MB`,
		Args: argsBetween(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var dt tensors.DType
			if dtype != "" {
				var err error
				if dt, err = tensors.ParseUserDType(dtype); err != nil || !dt.IsFloat() {
					return usageErrorf("--dtype %q: want f32, f16, bf16 or f64", dtype)
				}
			}
			opts, err := of.options(cmd, g)
			if err != nil {
				return err
			}
			m, err := checkpoint.Open(args[0])
			if err != nil {
				return err
			}
			defer m.Close()
			update, finish := g.byteProgress("converting")
			opts.Progress = update
			res, err := checkpoint.Convert(cmd.Context(), m, of.out, dt, opts)
			finish()
			if err != nil {
				return err
			}
			g.info("wrote %s: %d tensors, %s in %d file(s)", res.Path, res.Tensors, checkpoint.FormatSize(res.TotalSize), len(res.Files))
			return nil
		},
	}
	of.register(cmd)
	cmd.Flags().StringVar(&dtype, "dtype", "", "convert floating-point tensors to f32, f16, bf16 or f64")
	return cmd
}
