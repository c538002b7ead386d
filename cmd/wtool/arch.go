package main

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/wtool/wtool/io/arch"
	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/io/fsafe"
)

// describe opens the architecture description of a model and says, on
// stderr, which family it is and what was assumed.
func describe(g *globals, m *checkpoint.Model) (*arch.Arch, error) {
	a, err := arch.Open(m)
	if err != nil {
		return nil, err
	}
	for _, n := range a.Notes {
		g.info("architecture: %s", n)
	}
	return a, nil
}

func newArchCmd(g *globals) *cobra.Command {
	var asJSON, all bool
	cmd := &cobra.Command{
		Use:   "arch PATH [--all] [--json]",
		Short: "Show what every weight of a checkpoint is: module, kind, orientation, role, spaces, ties",
		Long: `Arch prints what wtool knows about a checkpoint's weights, as compress,
spectrum, adapter, regmean and the permutation specs use it: the family
(recognised from config.json's model_type or architectures, else from the
tensor names, else a generic description that says what it assumed), the
layer count, attention geometry and ties, and per module its kind (linear
[out, in], conv1d [in, out], conv, embedding, norms, bare parameters and
buffers), its role (embedding, head, attention q/k/v/o, MLP, expert, router,
norm, conv), its matrix size in its own orientation [out, in] and the
activation spaces it reads and writes. Modules marked * are the default
targets of compress, spectrum and adapter. --all lists norms, buffers and
parameters too; --json prints everything.`,
		Example: `  wtool arch testdata/demo/mlp-a
  wtool arch ./gpt2 --json`,
		Args: argsBetween(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			reg := &fsafe.Registry{}
			if err := declareModel(reg, "PATH", args[0]); err != nil {
				return err
			}
			m, err := checkpoint.OpenContext(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			defer m.Close()
			a, err := arch.Open(m)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), a)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "family %s", a.Family)
			if a.Layers > 0 {
				fmt.Fprintf(w, ", %d layers", a.Layers)
			}
			if a.Hidden > 0 {
				fmt.Fprintf(w, ", hidden %d", a.Hidden)
			}
			if at := a.Attention; at != nil {
				fmt.Fprintf(w, ", %d heads (%d key/value) of %d", at.Heads, at.KVHeads, at.HeadDim)
				if at.Rotary {
					fmt.Fprint(w, ", rotary")
				}
			}
			if a.Experts > 0 {
				fmt.Fprintf(w, ", %d experts (top %d)", a.Experts, a.ExpertsPerToken)
			}
			if a.Block != "" {
				fmt.Fprintf(w, ", %s blocks", a.Block)
			}
			fmt.Fprintln(w)
			for _, n := range a.Notes {
				fmt.Fprintf(w, "  note: %s\n", n)
			}
			for _, t := range a.Ties {
				stored := "not stored"
				if t.Stored {
					stored = "stored, ignored by loaders"
				}
				fmt.Fprintf(w, "  tie: %s uses %s's weight (%s)\n", t.Module, t.To, stored)
			}
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "MODULE\tKIND\tROLE\tLAYER\t[OUT x IN]\tREADS -> WRITES")
			for _, mod := range a.Modules {
				if !all && !mod.IsMatrix() {
					continue
				}
				mark := " "
				if arch.IsDefaultTarget(mod) {
					mark = "*"
				}
				layer := "-"
				if mod.Layer >= 0 {
					layer = fmt.Sprint(mod.Layer)
				}
				if mod.Expert >= 0 {
					layer += fmt.Sprintf(" e%d", mod.Expert)
				}
				size := ""
				if mod.IsMatrix() {
					size = fmt.Sprintf("%d x %d", mod.OutFeatures, mod.InFeatures)
				}
				flow := strings.TrimSpace(mod.In + " -> " + mod.Out)
				if flow == "->" {
					flow = ""
				}
				fmt.Fprintf(tw, "%s%s\t%s\t%s\t%s\t%s\t%s\n", mark, mod.Name, mod.Kind, mod.Role, layer, size, flow)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "list norms, bare parameters and buffers too")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the description as JSON")
	return cmd
}
