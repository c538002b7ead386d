package main

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/wtool/wtool/fisher"
	"github.com/wtool/wtool/fisher/mlp"
	"github.com/wtool/wtool/fisher/stats"
	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/io/fsafe"
	"github.com/wtool/wtool/lowrank"
)

// svdFlags are the flags of commands that run the truncated SVD engine.
type svdFlags struct {
	exact      bool
	niter      int
	oversample int
	seed       uint64
}

func (s *svdFlags) register(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&s.exact, "exact", false, "exact SVD instead of the randomized one")
	cmd.Flags().IntVar(&s.niter, "niter", -1, "randomized SVD power iterations (default: 7 for small ranks, 4 otherwise, as sklearn)")
	cmd.Flags().IntVar(&s.oversample, "oversample", 10, "randomized SVD oversampling")
	cmd.Flags().Uint64Var(&s.seed, "seed", 0, "randomized SVD seed")
}

func (s *svdFlags) options() lowrank.SVDOptions {
	return lowrank.SVDOptions{Exact: s.exact, PowerIters: s.niter, Oversample: s.oversample, Seed: s.seed}
}

// rankFlags choose the rank.
type rankFlags struct {
	rank      int
	ratio     float64
	energy    float64
	overrides []string
}

func (r *rankFlags) register(cmd *cobra.Command, withOverrides bool) {
	cmd.Flags().IntVar(&r.rank, "rank", 0, "rank of every factorisation")
	cmd.Flags().Float64Var(&r.ratio, "ratio", 0, "kept-parameter ratio per matrix: rank = floor(ratio m n / (m + n))")
	cmd.Flags().Float64Var(&r.energy, "energy", 0, "smallest rank keeping this fraction of the squared singular values")
	if withOverrides {
		cmd.Flags().StringArrayVar(&r.overrides, "override", nil, "REGEX=VALUE: another rank (or ratio, energy: same kind as the main rule) for matching tensors; repeatable, first match wins")
	}
}

func (r *rankFlags) rule() (lowrank.RankRule, error) {
	rule := lowrank.RankRule{Rank: r.rank, Ratio: r.ratio, Energy: r.energy}
	if err := rule.Validate(); err != nil {
		return rule, usageErrorf("give one of --rank, --ratio or --energy: %v", err)
	}
	return rule, nil
}

func (r *rankFlags) parsedOverrides(main lowrank.RankRule) ([]lowrank.Override, error) {
	var out []lowrank.Override
	for _, o := range r.overrides {
		pat, val, ok := strings.Cut(o, "=")
		if !ok {
			return nil, usageErrorf("--override %q: want REGEX=VALUE", o)
		}
		re, err := regexp.Compile(pat)
		if err != nil {
			return nil, usageErrorf("--override %q: %v", o, err)
		}
		v, err := strconv.ParseFloat(val, 64)
		if err != nil {
			return nil, usageErrorf("--override %q: %q is not a number", o, val)
		}
		rule := lowrank.RankRule{}
		switch {
		case main.Rank != 0:
			rule.Rank = int(v)
		case main.Ratio != 0:
			rule.Ratio = v
		default:
			rule.Energy = v
		}
		if err := rule.Validate(); err != nil {
			return nil, usageErrorf("--override %q: %v", o, err)
		}
		out = append(out, lowrank.Override{Pattern: re, Rule: rule})
	}
	return out, nil
}

func compileTargets(ts []string) ([]*regexp.Regexp, error) {
	var out []*regexp.Regexp
	for _, t := range ts {
		re, err := regexp.Compile(t)
		if err != nil {
			return nil, usageErrorf("--target %q: %v", t, err)
		}
		out = append(out, re)
	}
	return out, nil
}

func newCompressCmd(g *globals) *cobra.Command {
	var of outputFlags
	var mf mlpFlags
	var sf svdFlags
	var rf rankFlags
	var method, format, dtype, fisherPath, statsPath string
	var targets []string
	var perRow, asJSON bool
	var alpha float64
	cmd := &cobra.Command{
		Use:   "compress MODEL -o OUTPUT --method svd|fwsvd|asvd|whiten (--rank R | --ratio RHO | --energy E)",
		Short: "Factorise weight matrices into low-rank pairs: plain, Fisher-weighted, activation-aware or whitened SVD",
		Long: `Compress replaces weight matrices by low-rank factors, streaming one matrix at a
time. All methods are "scale, SVD, unscale":

  svd     plain truncated SVD (best in Frobenius norm)
  fwsvd   Fisher-weighted SVD (Hsu et al.): columns scaled by the square root
          of each input feature's Fisher information (--fisher F.safetensors,
          from 'wtool fisher' or tools/wtool_collect.py; --per-row weights
          output rows instead)
  asvd    activation-aware: columns scaled by mean(|x|)^alpha of the inputs
  whiten  SVD-LLM whitening with the Cholesky factor of the inputs' Gram
          matrix: the rank-r factors minimising the layer's output error
asvd and whiten need input statistics: --stats S.safetensors ('wtool stats',
tools/wtool_collect.py), or --calib X.safetensors for MLPs (built-in engine).

What each weight is comes from the model's family (config.json, else the
tensor names; 'wtool arch MODEL' shows it): every weight is factorised as a
matrix in its module's own orientation [out, in] - a Linear as stored, a
GPT-2 Conv1D's [in, out] weight transposed, a convolution as
[out, in*kh*kw], an embedding as [dim, num].

The rank is --rank R, --ratio RHO (rank = floor(RHO m n / (m + n)): the
factors keep RHO of the parameters) or --energy E (smallest rank keeping E of
the squared singular values); --override REGEX=VALUE sets another value for
matching tensors. --target REGEX (repeatable) selects weights by tensor name
(Linear, Conv1D, convolution or embedding weights); a --target that matches
none is an error. Without --target the targets are every Linear, Conv1D and
convolution weight except embeddings, output heads (lm_head, classifier, fc,
cls.*) and MoE routers. A matrix whose factors would not be smaller, or too
small for the rank, is left as it is and reported; a tied weight
(tie_word_embeddings) is reported with what the tie means.

--format factored (default) writes module M as M.0 and M.1: for a Linear or
Conv1D, M.0.weight [r, in] and M.1.weight [out, r] (+ M.1.bias), i.e.
nn.Sequential(nn.Linear(in, r, bias=False), nn.Linear(r, out)); a conv
becomes a k x k conv to r channels and a 1x1 conv; an embedding
nn.Sequential(nn.Embedding(num, r), nn.Linear(r, dim, bias=False)). A
directory output gets compression.json with every module's kind, rank and
sizes. --format dense writes the rank-r reconstruction in M.weight instead,
in the model's own layout. With --energy the factors' shapes are known only
after each SVD: the shard plan (and --part's assignment) uses their bounds,
so it is fixed before anything is computed.
` + outputHelp,
		Example: `  wtool compress testdata/demo/mlp-a -o /tmp/mlp-a-r16 --method svd --rank 16 --target 'fc[1-4]'
  wtool compress ./llama -o ./llama-c --method whiten --stats llama-stats.safetensors \
      --ratio 0.6 --target 'mlp\.(up|down)_proj\.weight$'`,
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
			co := lowrank.CompressOptions{Method: method, Rule: rule, Format: format, SVD: sf.options(), PerRow: perRow, Alpha: alpha}
			if co.Overrides, err = rf.parsedOverrides(rule); err != nil {
				return err
			}
			if co.Targets, err = compileTargets(targets); err != nil {
				return err
			}
			if co.DType, err = parseFloatDType(dtype); err != nil {
				return err
			}
			m, err := of.openInput(cmd, g, &opts, args, "MODEL", [2]string{"--fisher", fisherPath}, [2]string{"--stats", statsPath}, [2]string{"--calib", mf.calib})
			if err != nil {
				return err
			}
			defer m.Close()
			if co.Arch, err = describe(g, m); err != nil {
				return err
			}
			switch method {
			case "fwsvd":
				if fisherPath == "" {
					return usageErrorf("fwsvd needs --fisher")
				}
				f, err := fisher.Open(fisherPath)
				if err != nil {
					return err
				}
				defer f.Close()
				co.Fisher = f
				opts.Inputs = append(opts.Inputs, fisherPath)
			case "asvd", "whiten":
				s, closeStats, err := inputStats(cmd, &mf, statsPath, args[0])
				if err != nil {
					return err
				}
				defer closeStats()
				co.Stats = s
			}
			update, finish := g.byteProgress("compressing")
			co.Progress = update
			reports, written, err := lowrank.Compress(cmd.Context(), m, of.out, co, opts)
			finish()
			g.notes(written)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), map[string]any{"output": written.Path, "method": method, "tensors": reports})
			}
			printCompress(cmd, reports)
			g.wrote(written, "")
			return nil
		},
	}
	of.register(cmd)
	mf.register(cmd, false)
	sf.register(cmd)
	rf.register(cmd, true)
	cmd.Flags().StringVar(&method, "method", "svd", "svd, fwsvd, asvd or whiten")
	cmd.Flags().StringArrayVar(&targets, "target", nil, "regular expression of the tensors to factorise (repeatable)")
	cmd.Flags().StringVar(&format, "format", "factored", "factored (two smaller layers) or dense (the reconstruction)")
	cmd.Flags().StringVar(&dtype, "dtype", "", "output dtype of floating tensors (default: keep)")
	cmd.Flags().StringVar(&fisherPath, "fisher", "", "fwsvd: the model's Fisher file")
	cmd.Flags().BoolVar(&perRow, "per-row", false, "fwsvd: weight output rows instead of input features")
	cmd.Flags().StringVar(&statsPath, "stats", "", "asvd/whiten: the model's input statistics file")
	cmd.Flags().Float64Var(&alpha, "alpha", 0.5, "asvd: exponent of the activation scale")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}

// inputStats opens --stats or computes single-model statistics with the MLP
// engine from --calib.
func inputStats(cmd *cobra.Command, mf *mlpFlags, statsPath, model string) (lowrank.InputStats, func(), error) {
	if (statsPath == "") == (mf.calib == "") {
		return nil, nil, usageErrorf("give exactly one of --stats or --calib")
	}
	if statsPath != "" {
		f, err := stats.Open(statsPath)
		if err != nil {
			return nil, nil, err
		}
		if f.Kind != stats.Single {
			f.Close()
			return nil, nil, fmt.Errorf("%s: the model's own statistics are needed, not %s ones", statsPath, f.Kind)
		}
		return f, func() { f.Close() }, nil
	}
	n, err := mf.load(model)
	if err != nil {
		return nil, nil, err
	}
	in, err := mlp.OpenInputs(mf.calib, mf.calibKey)
	if err != nil {
		return nil, nil, err
	}
	defer in.Close()
	s, err := mlp.CollectStats(cmd.Context(), []*mlp.Network{n}, in, mlp.Options{})
	if err != nil {
		return nil, nil, err
	}
	return lowrank.StatsOf(s), func() {}, nil
}

func printCompress(cmd *cobra.Command, reports []lowrank.TensorReport) {
	tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TENSOR\tKIND\tSHAPE\tRANK\tPARAMS\tKEPT\tREL.ERROR\tENERGY\tNOTE")
	var before, after int64
	for _, r := range reports {
		note := r.Note
		if r.LeftDense && !strings.HasPrefix(note, "left as is") {
			note = strings.TrimSpace("left dense (no saving) " + note)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%.4f\t%.4f\t%s\n", r.Name, r.Kind, formatShape(r.Shape), r.Rank, r.Params, r.Kept, r.RelError, r.Energy, note)
		before += r.Params
		after += r.Kept
	}
	tw.Flush()
	if before > 0 {
		fmt.Fprintf(cmd.OutOrStdout(), "factorised tensors: %d -> %d parameters (%.1f%%)\n", before, after, 100*float64(after)/float64(before))
	}
}

func newSpectrumCmd(g *globals) *cobra.Command {
	var sf svdFlags
	var targets []string
	var top int
	var plot string
	var asJSON, force bool
	cmd := &cobra.Command{
		Use:   "spectrum PATH [--target REGEX]... [--plot spectrum.png] [--json]",
		Short: "Singular value spectra and cumulative energy of weight matrices, to choose ranks",
		Long: `Spectrum computes the singular values of the weight matrices (each in its
module's own orientation; conv kernels as [out, in*kh*kw]) selected by
--target (default: every Linear, Conv1D and convolution weight except
embeddings, output heads and MoE routers) and prints, per matrix, the rank that
keeps 90%, 95% and 99% of the energy (sum of squared singular values).
--plot draws the normalised spectra and the cumulative energy curves; --json
prints every singular value. With --top K only the K largest are computed
(randomized SVD), which is much faster on large matrices. The plot is written
atomically; an existing file is replaced only with --force, and never an
input.`,
		Example: `  wtool spectrum testdata/demo/mlp-a --plot /tmp/spectrum.png`,
		Args:    argsBetween(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ts, err := compileTargets(targets)
			if err != nil {
				return err
			}
			reg := &fsafe.Registry{Force: force}
			if err := declareModel(reg, "PATH", args[0]); err != nil {
				return err
			}
			reg.Output("--plot", plot)
			if err := g.checkPaths(reg); err != nil {
				return err
			}
			m, err := checkpoint.OpenContext(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			defer m.Close()
			a, err := describe(g, m)
			if err != nil {
				return err
			}
			sp, err := lowrank.SpectraOf(cmd.Context(), m, a, ts, top, sf.options())
			if err != nil {
				return err
			}
			if plot != "" {
				if err := lowrank.PlotSpectra(plot, sp); err != nil {
					return err
				}
				g.info("wrote %s", plot)
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), sp)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "TENSOR\tSHAPE\tSIGMA_1\tRANK@90%\tRANK@95%\tRANK@99%")
			for _, s := range sp {
				rk := func(e float64) string {
					if r := s.RankFor(e); r > 0 {
						return fmt.Sprint(r)
					}
					return fmt.Sprintf(">%d", len(s.Values))
				}
				fmt.Fprintf(tw, "%s\t%s\t%.4g\t%s\t%s\t%s\n", s.Name, formatShape(s.Shape), s.Values[0], rk(0.9), rk(0.95), rk(0.99))
			}
			return tw.Flush()
		},
	}
	sf.register(cmd)
	cmd.Flags().StringArrayVar(&targets, "target", nil, "regular expression of the tensors (repeatable)")
	cmd.Flags().IntVar(&top, "top", 0, "compute only the largest K singular values (0: all, exactly)")
	cmd.Flags().StringVar(&plot, "plot", "", "draw the spectra into this PNG file")
	cmd.Flags().BoolVar(&force, "force", false, "replace the --plot file if it exists (never an input)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the spectra as JSON")
	return cmd
}
