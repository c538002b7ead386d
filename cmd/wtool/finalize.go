package main

import (
	"github.com/spf13/cobra"

	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/io/fsafe"
)

func newFinalizeCmd(g *globals) *cobra.Command {
	var force, verify, asJSON bool
	cmd := &cobra.Command{
		Use:   "finalize OUTPUT [--verify] [--force]",
		Short: "Assemble a directory output written in parts (--part K/N) into OUTPUT",
		Long: `Finalize completes a run split with --part K/N: each part wrote its shards
into OUTPUT.parts/part-K-of-N; finalize checks that every part is there,
finished and written by the same command on the same inputs (a missing,
unfinished or corrupt part is named, with what to run), moves the shards into
place and writes the index and the companion files (config, tokenizer,
reports, adapter files), so that OUTPUT is byte-identical to what one process
would have written. --verify also reads every shard and compares its data
checksum with the one its part recorded while writing it (otherwise shards
are checked by size and header).

OUTPUT appears atomically (an existing one is replaced only with --force);
OUTPUT.parts is removed at the end. An interrupted finalize can be run again.
See docs/distributed.md for Kubernetes and Slurm examples.`,
		Example: `  wtool merge a b -o out --method linear --part 1/2   # on one machine
  wtool merge a b -o out --method linear --part 2/2   # on another
  wtool finalize out`,
		Args: argsBetween(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			out := args[0]
			reg := &fsafe.Registry{Force: force}
			reg.Output("OUTPUT", out)
			if err := g.checkPaths(reg); err != nil {
				return err
			}
			update, finish := g.byteProgress("verifying")
			w, err := checkpoint.Finalize(cmd.Context(), out, checkpoint.FinalizeOptions{Force: force, Verify: verify, Progress: update})
			finish()
			g.notes(w)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), map[string]any{"output": w.Path, "files": w.Files, "tensors": w.Tensors, "bytes": w.TotalSize})
			}
			g.wrote(w, "")
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "replace OUTPUT if it exists")
	cmd.Flags().BoolVar(&verify, "verify", false, "read every shard and check its checksum")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}
