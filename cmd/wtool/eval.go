package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/wtool/wtool/fisher/mlp"
	"github.com/wtool/wtool/fisher/nn"
)

// evalResult is one model's line of `wtool eval`.
type evalResult struct {
	Model       string  `json:"model"`
	Family      string  `json:"family"`
	Samples     int     `json:"samples"`
	Predictions int64   `json:"predictions"`
	Accuracy    float64 `json:"accuracy"`
	Loss        float64 `json:"loss"`
	Perplexity  float64 `json:"perplexity,omitempty"`
}

func newEvalCmd(g *globals) *cobra.Command {
	var mf mlpFlags
	var labels, labelsKey string
	var batch, limit int
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "eval MODEL... --data X.safetensors",
		Short: "Measure accuracy and cross-entropy of classifiers, perplexity of causal language models",
		Long: `Eval runs data through each model with wtool's built-in engine and prints, for
a classifier (ResNet, ViT, plain MLP, BERT with a sequence classifier), the
top-1 accuracy and the mean cross-entropy against the labels; for a causal
language model (Llama, Qwen2, Mistral, Gemma, Phi-3, Mixtral, GPT-2), the next-token
accuracy, the mean cross-entropy per token (natural log) and the perplexity,
every position but the last of each sequence predicting the next token.

--data is a safetensors file: images as a floating tensor [samples, C, H, W]
(or [samples, features] when config.json gives num_channels and image_size)
with labels in its only 1-D integer tensor (or --labels FILE, --labels-key),
or token ids as an integer tensor [sequences, length].`,
		Example: `  wtool eval testdata/pairs/resnet-a testdata/pairs/resnet-b --data testdata/demo/digits_test.safetensors
  wtool eval testdata/pairs/llama-a --data testdata/pairs/text_test.safetensors --json`,
		Args: argsBetween(1, -1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if mf.calib == "" {
				return usageErrorf("--data is required")
			}
			if batch < 0 || limit < 0 {
				return usageErrorf("--batch-size and --limit must not be negative")
			}
			var results []evalResult
			for _, p := range args {
				r, err := evalOne(cmd, g, &mf, p, labels, labelsKey, batch, limit)
				if err != nil {
					return err
				}
				results = append(results, r)
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), results)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "MODEL\tFAMILY\tSAMPLES\tACCURACY\tLOSS\tPERPLEXITY")
			for _, r := range results {
				ppl := "-"
				if r.Perplexity > 0 {
					ppl = fmt.Sprintf("%.4f", r.Perplexity)
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%.2f%%\t%.4f\t%s\n", r.Model, r.Family, r.Samples, 100*r.Accuracy, r.Loss, ppl)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&mf.calib, "data", "", "evaluation data (safetensors): images and labels, or token ids (required)")
	cmd.Flags().StringVar(&mf.calibKey, "data-key", "", "name of the data tensor when the file has several")
	cmd.Flags().StringVar(&labels, "labels", "", "labels file (default: the data file's only 1-D integer tensor)")
	cmd.Flags().StringVar(&labelsKey, "labels-key", "", "name of the labels tensor")
	cmd.Flags().IntVar(&batch, "batch-size", 0, "samples per batch (default 128 images, 8 sequences; does not change the result)")
	cmd.Flags().IntVar(&limit, "limit", 0, "evaluate only the first N samples (0: all)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().StringVar(&mf.act, "act", "relu", "plain MLPs: activation between layers: relu, gelu (exact erf), silu or tanh")
	cmd.Flags().StringVar(&mf.layers, "layers", "", "plain MLPs: the Linear modules in forward order, comma-separated")
	return cmd
}

func evalOne(cmd *cobra.Command, g *globals, mf *mlpFlags, path, labels, labelsKey string, batch, limit int) (evalResult, error) {
	r := evalResult{Model: path}
	n, ok, err := engineModel(path)
	if err != nil {
		return r, err
	}
	update, finish := g.countProgress("evaluating " + path)
	defer finish()
	if !ok { // a plain MLP
		net, err := mf.load(path)
		if err != nil {
			return r, err
		}
		in, err := mlp.OpenInputs(mf.calib, mf.calibKey)
		if err != nil {
			return r, err
		}
		defer in.Close()
		lf, lk := labels, labelsKey
		if lf == "" {
			lf = mf.calib
		}
		y, err := mlp.ReadLabels(lf, lk)
		if err != nil {
			return r, err
		}
		if limit > 0 && limit < in.Samples {
			in.Samples, y = limit, y[:limit]
		}
		acc, loss, err := mlp.Evaluate(cmd.Context(), net, in, y, batch)
		if err != nil {
			return r, err
		}
		r.Family, r.Samples, r.Predictions, r.Accuracy, r.Loss = "mlp", in.Samples, int64(in.Samples), acc, loss
		return r, nil
	}
	lk := labelsKey
	if labels != "" {
		lk = "-"
	}
	d, err := nn.OpenData(mf.calib, mf.calibKey, lk)
	if err != nil {
		return r, err
	}
	defer d.Close()
	if labels != "" {
		if err := d.SetLabels(labels, labelsKey); err != nil {
			return r, err
		}
	}
	res, err := nn.Evaluate(cmd.Context(), n, d, nn.EvalOptions{BatchSize: batch, Limit: limit, Progress: update})
	if err != nil {
		return r, err
	}
	r.Family, r.Samples, r.Predictions, r.Accuracy, r.Loss, r.Perplexity = n.Arch.Family, res.Samples, res.Predictions, res.Accuracy, res.Loss, res.Perplexity
	return r, nil
}
