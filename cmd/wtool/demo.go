package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/wtool/wtool/io/fsafe"
	"github.com/wtool/wtool/merge/demo"
)

func newDemoCmd(g *globals) *cobra.Command {
	var dir, plot string
	var force, resnet bool
	cmd := &cobra.Command{
		Use:   "demo [--plot curves.png] [--dir DIR]",
		Short: "Merge the bundled example models with every method and compare their accuracy",
		Long: `Demo merges the small MLP classifiers built into wtool (testdata/demo in the
source, trained on scikit-learn's digits by testdata/demo/train_demo.py) with every merge method
and prints, for each, the accuracy and loss on the held-out test split and the
time it took, next to the two source models. Two pairs: models trained on the
same data from different seeds, and models trained on different label sets.

It shows what permutation-aware merging buys: naive averaging collapses,
aligning hidden units first (wm) recovers most of the accuracy, and PLeaS
matches or beats the sources. --plot draws the accuracy along the straight
path between the two models, naive and aligned.

A third table merges two trained ResNets (torchvision's ResNet-18 layout at
small widths, testdata/pairs): the naive average, weight matching and
activation matching (BatchNorm statistics recomputed), and PLeaS at widths 1,
1.5 and 2 and at a compute budget of 1.5 times one model, the statistics and
BatchNorm passes run by wtool's own engine (about a minute; --resnet=false
skips it).`,
		Example: `  go run ./cmd/wtool demo
  go run ./cmd/wtool demo --plot /tmp/wtool-demo.png`,
		Args: argsBetween(0, 0),
		RunE: func(cmd *cobra.Command, args []string) error {
			reg := &fsafe.Registry{Force: force}
			if err := reg.Input("--dir", dir); err != nil {
				return err
			}
			for i := range demo.Pairs {
				reg.Output("--plot", plotPath(plot, i))
			}
			if err := g.checkPaths(reg); err != nil {
				return err
			}
			if dir == "" { // the copy embedded in the binary
				tmp, err := os.MkdirTemp("", "wtool-demo-data-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(tmp)
				if err := demo.Extract(tmp); err != nil {
					return err
				}
				dir = tmp
			}
			rows, err := demo.Run(cmd.Context(), demo.Options{Dir: dir, Progress: func(m string) { g.info("%s", m) }})
			if err != nil {
				return err
			}
			if resnet {
				rr, err := demo.RunResNet(cmd.Context(), demo.Options{Dir: dir, Progress: func(m string) { g.info("%s", m) }})
				if err != nil {
					return err
				}
				rows = append(rows, rr...)
			}
			demo.Print(cmd.OutOrStdout(), rows)
			if plot == "" {
				return nil
			}
			for i, p := range demo.Pairs {
				naive, aligned, err := demo.Curves(cmd.Context(), dir, p, 20)
				if err != nil {
					return err
				}
				path := plotPath(plot, i)
				if err := demo.Plot(path, p.Name, naive, aligned); err != nil {
					return err
				}
				g.info("wrote %s", path)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "a demo directory (models and data, as testdata/demo); default: the copy built into wtool")
	cmd.Flags().StringVar(&plot, "plot", "", "also draw accuracy along the interpolation path into this PNG file (and FILE-2.png for the second pair)")
	cmd.Flags().BoolVar(&resnet, "resnet", true, "also merge the ResNet pair (PLeaS on convolutions, BatchNorm recomputed)")
	cmd.Flags().BoolVar(&force, "force", false, "replace existing plot files (never an input)")
	return cmd
}

// plotPath names the plot of the i-th pair: PLOT, then PLOT-2.png, ...
func plotPath(plot string, i int) string {
	if plot == "" || i == 0 {
		return plot
	}
	return strings.TrimSuffix(plot, filepath.Ext(plot)) + fmt.Sprintf("-%d", i+1) + filepath.Ext(plot)
}
