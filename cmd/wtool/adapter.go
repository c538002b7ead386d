package main

import (
	"fmt"
	"math"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/io/fsafe"
	"github.com/wtool/wtool/io/peft"
	"github.com/wtool/wtool/lowrank"
)

func newAdapterCmd(g *globals) *cobra.Command {
	var of outputFlags
	var sf svdFlags
	var rf rankFlags
	var method string
	var alpha float64
	var targets []string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "adapter MODEL -o OUTDIR --method pissa|sorsa|svfit (--rank R | --energy E)",
		Short: "Initialise SVD-based adapters (PiSSA, SORSA, SVFit), PEFT-loadable",
		Long: `Adapter splits every target weight W into the top singular components, which
become a trainable adapter, and a frozen residual, streaming one matrix at a
time:

  pissa   OUTDIR is the residual model (same layout and dtype as MODEL, config
          and tokenizer files copied) and OUTDIR/adapter a Hugging Face PEFT
          LoRA adapter (adapter_model.safetensors, adapter_config.json with
          init_lora_weights true, base_model_name_or_path OUTDIR and the
          task_type of the model class) with PEFT's PiSSA scaling, so that
          residual + (alpha/r) B A = W. The factors have the shapes PEFT
          creates for each module: lora_A [r, in] and lora_B [out, r] for a
          Linear and a GPT-2 Conv1D (fan_in_fan_out true),
          lora_embedding_A [r, num] and lora_embedding_B [dim, r] for an
          Embedding, [r, in, kh, kw] and [out, r, 1, 1] for a Conv2d; keys
          are the model class's module paths (transformer.h.0.attn.c_attn
          for GPT2LMHeadModel). Load it with
          PeftModel.from_pretrained(AutoModel.from_pretrained(OUTDIR), OUTDIR/adapter).
  sorsa   one checkpoint: residuals in M.weight plus M.sorsa_A (V^T), M.sorsa_S,
          M.sorsa_B (U), all trainable; sorsa_config.json describes them.
  svfit   one checkpoint: residuals plus frozen M.svfit_U and M.svfit_Vt and
          trainable M.svfit_S; svfit_config.json describes them.

--rank R gives every module rank R; --energy E gives each module the smallest
rank keeping E of its squared singular values (recorded in PEFT's
rank_pattern/alpha_pattern). --alpha is lora_alpha (default: r, scaling 1).
--target REGEX (repeatable) selects weights by tensor name (default: every
Linear, Conv1D and convolution weight except embeddings, output heads and MoE
routers; embeddings only when named); target_modules lists the short names of
the modules adapted, or their full paths when short names would also select
others. A module too small for the rank is left without an adapter and
reported. Adapter factors are stored as F32; residuals are computed in
float64 and rounded once to the model's dtype, and the report shows how much
that rounding changes them.

'wtool adapter convert INIT TRAINED -o LORA' turns a trained PiSSA adapter
into a plain LoRA adapter for the original base model.
` + outputHelp,
		Example: `  wtool adapter testdata/demo/mlp-a -o /tmp/mlp-a-pissa --method pissa --rank 8
  wtool adapter ./Llama-3.2-1B -o ./llama-pissa --method pissa --rank 64 --target 'proj\.weight$'`,
		Args: argsBetween(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, err := of.options(cmd, g)
			if err != nil {
				return err
			}
			rule, err := rf.rule()
			if err != nil {
				return err
			}
			ts, err := compileTargets(targets)
			if err != nil {
				return err
			}
			m, err := of.openInput(cmd, g, &opts, args, "MODEL")
			if err != nil {
				return err
			}
			defer m.Close()
			a, err := describe(g, m)
			if err != nil {
				return err
			}
			update, finish := g.byteProgress("initialising")
			reports, written, err := lowrank.InitAdapters(cmd.Context(), m, of.out, lowrank.AdapterOptions{Method: method, Rule: rule, Alpha: alpha,
				Targets: ts, SVD: sf.options(), Progress: update, Arch: a}, opts)
			finish()
			g.notes(written)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), map[string]any{"output": written.Path, "method": method, "modules": reports})
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "MODULE\tKIND\tSHAPE\tRANK\tENERGY\tRESIDUAL\tCAST ERROR\tNOTE")
			for _, r := range reports {
				if r.Skipped {
					fmt.Fprintf(tw, "%s\t%s\t%s\t-\t-\t-\t-\t%s\n", r.Module, r.Kind, formatShape(r.Shape), r.Note)
					continue
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%.4f\t%.4f\t%.2g\t%s\n", r.Module, r.Kind, formatShape(r.Shape), r.Rank, r.Energy, r.ResidualNorm, r.CastError, r.Note)
			}
			tw.Flush()
			g.wrote(written, "")
			return nil
		},
	}
	of.register(cmd)
	sf.register(cmd)
	rf.register(cmd, false)
	cmd.Flags().StringVar(&method, "method", "pissa", "pissa, sorsa or svfit")
	cmd.Flags().Float64Var(&alpha, "alpha", 0, "lora_alpha (default: the rank, i.e. scaling 1)")
	cmd.Flags().StringArrayVar(&targets, "target", nil, "regular expression of the weights to adapt (repeatable)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	cmd.AddCommand(newAdapterConvertCmd(g))
	cmd.AddCommand(newAdapterExtractCmd(g))
	return cmd
}

func newAdapterExtractCmd(g *globals) *cobra.Command {
	var out string
	var force, asJSON bool
	var sf svdFlags
	var rf rankFlags
	var alpha float64
	var embeddings string
	var loraBias bool
	cmd := &cobra.Command{
		Use:   "extract BASE FINETUNE -o LORA_DIR (--rank R | --energy E | --ratio X)",
		Short: "Extract a PEFT LoRA adapter of the difference between a fine-tune and its base",
		Long: `Extract writes the LoRA adapter that turns BASE into (approximately) FINETUNE,
as mergekit-extract-lora does: for every Linear, Conv1D, 2-D convolution and
Embedding whose weight changed, the truncated SVD of D = W_finetune - W_base
in the module's orientation [out, in] gives the best rank-r approximation of
D (Eckart-Young), stored as PEFT loads it: lora_A [r, in] and lora_B [out, r];
lora_embedding_A [r, num] and lora_embedding_B [dim, r] for an embedding;
[r, in, kh, kw] and [out, r, 1, 1] for a convolution. --rank R gives every
module rank R (a smaller matrix: its full rank), --energy E the smallest rank
keeping E of each difference's squared singular values, --ratio X the rank
keeping X of the matrix's parameters; ranks and alphas that differ from the
most common go into rank_pattern/alpha_pattern. --alpha is lora_alpha
(default: the rank, i.e. scaling 1).

What the factors cannot carry is stored as PEFT loads it: the bias change
Db of a LoRA module as lora_B.bias = Db / scaling with lora_bias true
(PEFT adds scaling * lora_B.bias; every LoRA module then has one, zeros
where nothing changed, and PEFT's merge_and_unload refuses modules without
a bias); every other module with a changed tensor (norms; a module whose
bias changed but not its weight) whole, in modules_to_save (its tensors as
base_model.model.<module>.<param>, module names in the config). With
--embeddings save, the embeddings and the vocabulary head (lm_head) are
saved whole rather than factored, as mergekit-extract-lora does by default
(a head tied to the embedding gets a copy under its own name and
ensure_weight_tying true, as PEFT saves tied modules);
PEFT refuses lora_bias with embedding factors, so with --embeddings lora
(the default) bias changes of LoRA modules are not captured, nor with
--lora-bias=false.

The report lists, per module, the rank, the share of the difference's
energy captured and the relative error, and the saved tensors (kind saved)
and biases (kind bias); what changed but could not be captured (bare
parameters and buffers such as a cls_token, biases as above) is listed as
not captured: the base with the adapter differs from the fine-tune by them.
Load the result with
PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(BASE), LORA_DIR).
The output is written atomically and may not be or lie inside an input.`,
		Example: `  wtool adapter extract ./Llama-3-8B ./Llama-3-8B-Instruct -o ./instruct-lora --rank 64
  wtool adapter extract base ft -o lora --energy 0.9 --json`,
		Args: argsBetween(2, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return usageErrorf("-o is required")
			}
			rule, err := rf.rule()
			if err != nil {
				return err
			}
			if alpha < 0 || math.IsNaN(alpha) || math.IsInf(alpha, 0) {
				return usageErrorf("--alpha must be a positive number (or 0: the rank)")
			}
			if embeddings != "lora" && embeddings != "save" {
				return usageErrorf("--embeddings must be lora or save, not %q", embeddings)
			}
			reg := &fsafe.Registry{Force: force}
			if err := declareModel(reg, "BASE", args[0]); err != nil {
				return err
			}
			if err := declareModel(reg, "FINETUNE", args[1]); err != nil {
				return err
			}
			reg.Output("-o", out)
			if err := g.checkPaths(reg); err != nil {
				return err
			}
			base, err := checkpoint.OpenContext(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			defer base.Close()
			ft, err := checkpoint.OpenContext(cmd.Context(), args[1])
			if err != nil {
				return err
			}
			defer ft.Close()
			a, err := describe(g, ft)
			if err != nil {
				return err
			}
			update, finish := g.countProgress("extracting")
			reports, ad, err := lowrank.ExtractLoRA(cmd.Context(), base, ft, out, lowrank.ExtractOptions{Rule: rule, Alpha: alpha, SVD: sf.options(), Arch: a, Progress: update,
				Embeddings: embeddings, NoBias: !loraBias}, force)
			finish()
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), map[string]any{"output": out, "r": ad.Config.R, "lora_alpha": ad.Config.LoraAlpha,
					"lora_bias": ad.Config.LoraBias, "modules_to_save": ad.Config.ModulesToSave, "modules": reports})
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "MODULE\tKIND\tSHAPE\tRANK\tENERGY\tREL ERROR\tCHANGE\tNOTE")
			for _, r := range reports {
				if r.Skipped {
					fmt.Fprintf(tw, "%s\t%s\t%s\t-\t-\t-\t%.3g\t%s\n", r.Module, r.Kind, formatShape(r.Shape), r.Change, r.Note)
					continue
				}
				rank := "-" // saved whole, or a bias
				if r.Rank > 0 {
					rank = fmt.Sprint(r.Rank)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.4f\t%.4f\t%.3g\t%s\n", r.Module, r.Kind, formatShape(r.Shape), rank, r.Energy, r.RelError, r.Change, r.Note)
			}
			tw.Flush()
			g.info("wrote %s: LoRA r=%d, lora_alpha=%g, %d modules, lora_bias %v, %d tensors in modules_to_save", out, ad.Config.R, ad.Config.LoraAlpha, len(ad.Modules), ad.Config.LoraBias, len(ad.Saved))
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "output adapter directory (required)")
	cmd.Flags().BoolVar(&force, "force", false, "replace the output if it exists (never an input)")
	cmd.Flags().Float64Var(&alpha, "alpha", 0, "lora_alpha (default: the rank, i.e. scaling 1)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	cmd.Flags().StringVar(&embeddings, "embeddings", "lora", "lora (lora_embedding_A/B factors) or save (embeddings and lm_head whole in modules_to_save)")
	cmd.Flags().BoolVar(&loraBias, "lora-bias", true, "store LoRA modules' bias changes as lora_B.bias (PEFT lora_bias; needs --embeddings save when embeddings changed)")
	sf.register(cmd)
	rf.register(cmd, false)
	return cmd
}

func newAdapterConvertCmd(g *globals) *cobra.Command {
	var out string
	var force, allowNonFinite bool
	cmd := &cobra.Command{
		Use:   "convert INIT_ADAPTER TRAINED_ADAPTER -o LORA_DIR",
		Short: "Convert a trained PiSSA adapter into a LoRA adapter for the original base model",
		Long: `Convert takes the PiSSA adapter as 'wtool adapter --method pissa' wrote it
(INIT_ADAPTER, e.g. OUTDIR/adapter) and the same adapter after training, and
writes a plain LoRA adapter that applies to the ORIGINAL base model, as PEFT's
path_initial_model_for_weight_conversion does: the training's change
dW = (alpha/r)(B A - B0 A0) is stored as lora_A = [A; A0], lora_B = [B, -B0],
with r and lora_alpha doubled. NaN or Inf in the trained adapter (a diverged
training) is refused unless --allow-nonfinite; the output is written
atomically and may not be or lie inside either input.`,
		Args: argsBetween(2, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return usageErrorf("-o is required")
			}
			reg := &fsafe.Registry{Force: force}
			if err := reg.Input("INIT_ADAPTER", args[0]); err != nil {
				return err
			}
			if err := reg.Input("TRAINED_ADAPTER", args[1]); err != nil {
				return err
			}
			reg.Output("-o", out)
			if err := g.checkPaths(reg); err != nil {
				return err
			}
			init, err := peft.Read(args[0])
			if err != nil {
				return err
			}
			trained, err := peft.Read(args[1])
			if err != nil {
				return err
			}
			lora, err := peft.ConvertPiSSA(init, trained)
			if err != nil {
				return err
			}
			if err := peft.WriteWith(cmd.Context(), out, lora, checkpoint.WriteOptions{Force: force, Inputs: reg.Inputs(), AllowNonFinite: allowNonFinite}); err != nil {
				return err
			}
			g.info("wrote %s: LoRA r=%d, lora_alpha=%g, %d modules", out, lora.Config.R, lora.Config.LoraAlpha, len(lora.Modules))
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "output adapter directory (required)")
	cmd.Flags().BoolVar(&force, "force", false, "replace the output if it exists (never an input)")
	cmd.Flags().BoolVar(&allowNonFinite, "allow-nonfinite", false, "write NaN/Inf values of the trained adapter instead of failing")
	return cmd
}
