package main

import (
	"github.com/spf13/cobra"

	"github.com/wtool/wtool/io/checkpoint"
)

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
` + outputHelp,
		Example: `  wtool convert model.safetensors -o model-bf16.safetensors --dtype bf16
  wtool convert ./Llama-3.2-1B -o ./llama-f16 --dtype f16 --max-shard-size 500MB`,
		Args: argsBetween(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dt, err := parseFloatDType(dtype)
			if err != nil {
				return err
			}
			opts, err := of.options(cmd, g)
			if err != nil {
				return err
			}
			m, err := of.openInput(cmd, g, &opts, args, "MODEL")
			if err != nil {
				return err
			}
			defer m.Close()
			update, finish := g.byteProgress("converting")
			opts.Progress = update
			res, err := checkpoint.Convert(cmd.Context(), m, of.out, dt, opts)
			finish()
			g.notes(res)
			if err != nil {
				return err
			}
			g.wrote(res, "")
			return nil
		},
	}
	of.register(cmd)
	cmd.Flags().StringVar(&dtype, "dtype", "", "convert floating-point tensors to f32, f16, bf16 or f64")
	return cmd
}
