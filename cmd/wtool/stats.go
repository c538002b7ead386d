package main

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/spf13/cobra"

	"github.com/wtool/wtool/fisher/mlp"
	"github.com/wtool/wtool/fisher/nn"
	"github.com/wtool/wtool/fisher/stats"
	"github.com/wtool/wtool/io/arch"
	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/io/fsafe"
)

// engineModel opens a checkpoint for the built-in forward engine (fisher/nn);
// ok is false (and the model closed) when its family is not one the engine
// runs, so the caller can fall back to the MLP engine.
func engineModel(path string) (n *nn.Net, ok bool, err error) {
	m, err := checkpoint.Open(path)
	if err != nil {
		return nil, false, err
	}
	defer m.Close()
	a, err := arch.Open(m)
	if err != nil {
		return nil, false, err
	}
	if !nn.Supports(a) {
		return nil, false, nil
	}
	n, err = nn.New(a, m)
	if err != nil {
		return nil, true, fmt.Errorf("%s: %w", path, err)
	}
	n.Path = path
	return n, true, nil
}

func newStatsCmd(g *globals) *cobra.Command {
	var mf mlpFlags
	var out, sel string
	var batch, limit, maxGram int
	var force, noPoints, allowNonFinite bool
	cmd := &cobra.Command{
		Use:   "stats MODEL [MODEL2] --calib X.safetensors -o STATS.safetensors",
		Short: "Collect layer-input and activation statistics (Gram matrices) of a model, or joint statistics of two",
		Long: `Stats runs calibration data through a checkpoint with wtool's built-in
engine and writes, per entry, the number of samples, the sum and the sum of
absolute values of its vectors and their Gram matrix (sum of x x^T, float64):
what activation-aware and whitened compression and RegMean need. With two
models of the same architecture it writes joint statistics (each model's Gram
and the cross Gram sum of x_A x_B^T on the same samples) for activation
matching and PLeaS.

The entries (docs/stats.md) are the input of every Linear, Conv1D and
convolution module (a convolution's unfolded patch, one sample per output
position), and activation points named MODULE:in / MODULE:out: the residual
stream at every norm of a transformer, a ResNet block's output channels, its
hidden channels and the stem's output (one sample per position per image).
--no-points keeps the module inputs only; --select REGEX keeps the entries
whose name matches.

Architectures: ResNet (torchvision), ViT, BERT, GPT-2, Llama, Qwen2, Mistral,
Gemma, Phi-3 and Mixtral (wtool arch MODEL says what a checkpoint is; joint
statistics of Mixtral's experts follow model A's routing), and plain MLPs
(--act and --layers as for the MLP engine). --calib is a safetensors file with
the data: images as a floating tensor [samples, C, H, W] (or [samples,
features] when config.json gives num_channels and image_size), token ids as
an integer tensor [sequences, length]. tools/wtool_collect.py writes the same
files for any PyTorch model.

Statistics are accumulated in float64; a NaN or Inf in them (a NaN weight or
input, or values so large their squares overflow) is refused unless
--allow-nonfinite. The output is written atomically and may not be, contain
or lie inside an input.`,
		Example: `  wtool stats testdata/pairs/resnet-a testdata/pairs/resnet-b --calib testdata/demo/digits_train.safetensors -o /tmp/resnet-ab.safetensors
  wtool stats testdata/pairs/llama-a --calib testdata/pairs/text_calib.safetensors -o /tmp/llama-a.safetensors
  wtool stats testdata/demo/mlp-a testdata/demo/mlp-b --calib testdata/demo/digits_train.safetensors -o /tmp/ab-joint.safetensors`,
		Args: argsBetween(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !checkpoint.IsSingleFile(out) {
				return usageErrorf("-o %s: the statistics file must end in .safetensors", out)
			}
			if batch <= 0 {
				return usageErrorf("--batch-size must be positive")
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
			var re *regexp.Regexp
			if sel != "" {
				var err error
				if re, err = regexp.Compile(sel); err != nil {
					return usageErrorf("--select: %v", err)
				}
			}
			var nets []*nn.Net
			for _, p := range args {
				n, ok, err := engineModel(p)
				if err != nil {
					return err
				}
				if !ok {
					if len(nets) > 0 {
						return fmt.Errorf("%s is not of the architecture of %s", p, args[0])
					}
					break
				}
				nets = append(nets, n)
			}
			source := "wtool stats " + strings.Join(args, " ")
			update, finish := g.countProgress("samples")
			var s *stats.Stats
			if len(nets) == 0 { // a plain MLP
				if sel != "" || noPoints || limit > 0 || cmd.Flags().Changed("max-gram") {
					finish()
					return usageErrorf("--select, --no-points, --limit and --max-gram are for the architectures of the built-in engine, not plain MLPs")
				}
				var mlps []*mlp.Network
				for _, p := range args {
					n, err := mf.load(p)
					if err != nil {
						finish()
						return err
					}
					mlps = append(mlps, n)
				}
				in, err := mlp.OpenInputs(mf.calib, mf.calibKey)
				if err != nil {
					finish()
					return err
				}
				defer in.Close()
				s, err = mlp.CollectStats(cmd.Context(), mlps, in, mlp.Options{BatchSize: batch, Progress: update, Source: source})
				finish()
				if err != nil {
					return err
				}
			} else {
				if cmd.Flags().Changed("act") || cmd.Flags().Changed("layers") {
					finish()
					return usageErrorf("--act and --layers are for plain MLPs; %s is a %s checkpoint", args[0], nets[0].Arch.Family)
				}
				d, err := nn.OpenData(mf.calib, mf.calibKey, "-")
				if err != nil {
					finish()
					return err
				}
				defer d.Close()
				opts := nn.StatsOptions{BatchSize: batch, Limit: limit, MaxGramElems: maxGram, Progress: update, Source: source}
				opts.Select = func(p nn.Point) bool {
					return !(noPoints && p.Kind == nn.Activation) && (re == nil || re.MatchString(p.Name))
				}
				s, err = nn.CollectStats(cmd.Context(), nets, d, opts)
				finish()
				if err != nil {
					if errors.Is(err, nn.ErrUnsupported) {
						return fmt.Errorf("%w; tools/wtool_collect.py writes statistics for any PyTorch model", err)
					}
					return err
				}
			}
			// a Gram matrix is encoded whole: hold few of them ahead of the writer
			wo := checkpoint.WriteOptions{Force: force, Inputs: reg.Inputs(), AllowNonFinite: allowNonFinite, MaxMemory: 256 << 20}
			if err := stats.Write(cmd.Context(), out, s, wo); err != nil {
				return err
			}
			g.info("wrote %s: %s statistics of %d entries over %d samples", out, s.Kind, len(s.Modules), s.Samples)
			return nil
		},
	}
	mf.register(cmd, true)
	cmd.Flags().StringVarP(&out, "output", "o", "", "output statistics file (.safetensors, required)")
	cmd.Flags().IntVar(&batch, "batch-size", 64, "samples (images, sequences, rows) per batch (does not change the result)")
	cmd.Flags().IntVar(&limit, "limit", 0, "use only the first N samples (0: all)")
	cmd.Flags().StringVar(&sel, "select", "", "keep only the entries whose name matches this regular expression")
	cmd.Flags().BoolVar(&noPoints, "no-points", false, "module inputs only, no activation points")
	cmd.Flags().IntVar(&maxGram, "max-gram", nn.DefaultMaxGramElems, "refuse entries whose Gram matrix has more elements (512 MiB in float64 by default; -1: no limit)")
	cmd.Flags().BoolVar(&force, "force", false, "replace the output if it exists (never an input)")
	cmd.Flags().BoolVar(&allowNonFinite, "allow-nonfinite", false, "write NaN/Inf statistics instead of failing")
	cmd.MarkFlagRequired("output")
	return cmd
}
