package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/io/safetensors"
)

type validateProblem struct {
	File    string `json:"file,omitempty"`
	Tensor  string `json:"tensor,omitempty"`
	Kind    string `json:"kind,omitempty"`
	Message string `json:"message"`
	Warning bool   `json:"warning,omitempty"`
}

type validateResult struct {
	Path     string            `json:"path"`
	Valid    bool              `json:"valid"`
	Problems []validateProblem `json:"problems"`
}

func newValidateCmd(g *globals) *cobra.Command {
	var asJSON, values bool
	cmd := &cobra.Command{
		Use:   "validate PATH...",
		Short: "Check checkpoints completely: headers, data extents, shards against the index",
		Long: `Validate checks each PATH (a .safetensors file, an index file or a model
directory) completely and prints one line per problem: every shard's header
and data extents with the same checks as the reference safetensors
implementation (plus stricter ones: duplicate keys, invalid UTF-8, a tensor
named __metadata__), and for a sharded model the index against the shards:
missing shard files, tensors the index lists that their shard lacks, shard
tensors the index does not list, tensors found in two shards. With --values it
also reads every floating-point tensor and reports NaN and Inf values.

The exit status is 0 only when every PATH is valid (warnings do not count),
3 when a problem was found.`,
		Example: `  wtool validate model.safetensors
  wtool validate ./my-model --values
  wtool validate a.safetensors b.safetensors --json`,
		Args: argsBetween(1, -1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var results []validateResult
			allValid := true
			for _, path := range args {
				update, finish := g.byteProgress("checking " + path)
				problems, err := checkpoint.Validate(cmd.Context(), path, checkpoint.ValidateOptions{CheckValues: values, Progress: update})
				finish()
				if err != nil {
					var fe *safetensors.FaultError
					if cmd.Context().Err() != nil || errors.As(err, &fe) {
						return err // interrupted, or the file changed under wtool
					}
					problems = []checkpoint.Problem{{File: path, Err: err}}
				}
				res := validateResult{Path: path, Valid: true, Problems: []validateProblem{}}
				for _, p := range problems {
					if !p.Warning {
						res.Valid = false
					}
					res.Problems = append(res.Problems, validateProblem{File: p.File, Tensor: p.Tensor,
						Kind: safetensors.KindName(p.Err), Message: p.String(), Warning: p.Warning})
				}
				allValid = allValid && res.Valid
				results = append(results, res)
				if !asJSON {
					for _, p := range res.Problems {
						fmt.Fprintln(cmd.OutOrStdout(), p.Message)
					}
					if res.Valid && !g.quiet {
						fmt.Fprintf(cmd.OutOrStdout(), "%s: ok\n", path)
					}
				}
			}
			if asJSON {
				if err := printJSON(cmd.OutOrStdout(), results); err != nil {
					return err
				}
			}
			if !allValid {
				return exitError{code: exitInvalid}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON report")
	cmd.Flags().BoolVar(&values, "values", false, "also read floating-point tensors and report NaN/Inf values")
	return cmd
}
