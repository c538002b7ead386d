package merge

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/wtool/wtool/fisher/mlp"
	"github.com/wtool/wtool/fisher/nn"
	"github.com/wtool/wtool/fisher/stats"
	"github.com/wtool/wtool/io/arch"
	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/permute"
	"github.com/wtool/wtool/tensors"
)

// pleas: PLeaS (Nasery et al., 2024): match, partially merge to a width
// (or per-group widths under a budget), refit every layer in closed form;
// the output has the merged (possibly wider) architecture. Plain MLP
// chains go through PLeaS, every family of the built-in engine (ResNet,
// ViT, BERT, GPT-2, the Llama family) through PLeaSModel.
type pleasMethod struct{ about }

func init() {
	Register(pleasMethod{about{name: "pleas", doc: "PLeaS: activation matching, partial merge to --width or --budget, least-squares refit, BatchNorm recomputed"}})
}

func (pleasMethod) Params() []Param {
	return []Param{
		{Name: "calib", Kind: Path, Doc: "calibration inputs (pleas, regmean on MLPs)"},
		{Name: "calib_key", Kind: String, Doc: "name of the calibration tensor"},
		{Name: "stats", Kind: Path, Doc: "pleas: joint statistics file of the two models"},
		{Name: "act", Kind: String, Default: Text("relu"), Choices: []string{"relu", "gelu", "silu", "tanh"},
			Doc: "MLP activation: relu (default), gelu, silu, tanh (pleas, regmean with calib)"},
		{Name: "layers", Kind: List, Doc: "MLP layer order, comma-separated (mlp spec; pleas, regmean with calib)"},
		{Name: "width", Kind: Number, Default: Num(1), Check: InRange(1, 2, false, false),
			Doc: "pleas: merged width as a multiple of the original, 1 (full merge; default) to 2 (both kept)"},
		{Name: "ridge", Kind: Number, Default: Num(0), Check: AtLeast(0),
			Doc: "ridge added to the least-squares systems, relative to their mean diagonal (pleas, regmean)"},
		{Name: "match", Kind: String, Default: Text("activation"), Choices: []string{"activation", "weight"},
			Doc: "pleas: activation (default) or weight matching"},
		{Name: "budget", Kind: Number, Default: Num(0), Check: budgetCheck,
			Doc: "pleas: per-group widths chosen so that the merged model costs at most this times one source (1 to 2; 0: --width for every group)"},
		{Name: "budget_kind", Kind: String, Default: Text("compute"), Choices: []string{"compute", "params"},
			Doc: "pleas: what --budget counts: compute (multiply-accumulates per sample; default) or params"},
		{Name: "separate_heads", Kind: Bool,
			Doc: "pleas: keep both models' output heads side by side (A's classes, then B's): models trained on different label sets"},
		{Name: "refit", Kind: Bool, Default: Value{Bool: true},
			Doc: "pleas: refit every layer by least squares (default true; false: the aligned average in the merged layout, activation or weight matching then averaging)"},
		{Name: "reset_bn", Kind: Bool, Default: Value{Bool: true},
			Doc: "pleas: recompute the merged model's BatchNorm statistics on --calib (default true; false: averaged)"},
		seedParam(seedDoc),
		restartsParam(),
	}
}

func (pleasMethod) Check(p *Plan) error {
	if err := needModels(p, 2, 2); err != nil {
		return err
	}
	if !p.Has("calib") && !p.Has("stats") {
		return fmt.Errorf("pleas needs data: --calib X.safetensors (calibration inputs: images, token ids or an MLP's features; BatchNorm statistics are recomputed on them) or --stats JOINT.safetensors")
	}
	return nil
}

func budgetCheck(v float64) error {
	if v != 0 && !(v >= 1 && v <= 2) {
		return fmt.Errorf("a budget is between 1 and 2 (times one source model), or 0 for none")
	}
	return nil
}

func (pleasMethod) Start(context.Context, *Job) (Merger, error) { return pleasMerger{}, nil }

type pleasMerger struct{}

func (pleasMerger) Tensor(context.Context, *TensorJob) (*Kernel, error) {
	return nil, fmt.Errorf("pleas writes its output itself")
}

// Write runs PLeaS: two MLP checkpoints, joint statistics from the plan's
// file or computed on its calibration inputs, a merged checkpoint of the
// (possibly wider) architecture with config.json's sizes updated. Memory:
// both networks in float32 and one layer's joint statistics.
func (pleasMerger) Write(ctx context.Context, j *Job, out string, opts checkpoint.WriteOptions) (*checkpoint.Written, error) {
	p := j.Plan
	if a, err := arch.Open(j.Models[0]); err == nil && a.Family != "mlp" && nn.Supports(a) {
		return writeModelPLeaS(ctx, j, out, opts)
	}
	if p.Float("budget") > 0 || p.Global("separate_heads").Bool {
		return nil, fmt.Errorf("pleas: --budget and --separate-heads are for the architectures of the built-in engine (%s), not plain MLPs", strings.Join(nn.Families(), ", "))
	}
	act, err := mlp.ParseActivation(p.Global("act").Text)
	if err != nil {
		return nil, err
	}
	layers := p.Global("layers").List
	var nets []*mlp.Network
	for _, m := range j.Models {
		n, err := mlp.Load(m, layers, act)
		if err != nil {
			return nil, fmt.Errorf("pleas merges MLPs (a chain of Linear layers): %w", err)
		}
		nets = append(nets, n)
	}
	var js permute.JointStats
	if path := p.Global("stats").Text; path != "" {
		f, err := openJointStats(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		js = f
	} else {
		in, err := mlp.OpenInputs(p.Global("calib").Text, p.Global("calib_key").Text)
		if err != nil {
			return nil, err
		}
		defer in.Close()
		s, err := mlp.CollectStats(ctx, nets, in, mlp.Options{})
		if err != nil {
			return nil, err
		}
		js = permute.StatsOf(s)
	}
	o := PLeaSOptions{Width: p.Float("width"), Ridge: p.Float("ridge")}
	match := p.Global("match").Text
	if match == "weight" {
		spec, err := permute.MLPSpec(permute.Shapes(j.Models[0]), layers)
		if err != nil {
			return nil, err
		}
		if o.Perms, err = pleasWeightMatching(ctx, j, spec); err != nil {
			return nil, err
		}
	}
	res, err := PLeaS(ctx, nets[0], nets[1], js, o)
	if err != nil {
		return nil, err
	}
	if len(res.Widths) > 0 {
		j.Report.Width = res.Widths[0]
	}
	ridge := o.Ridge
	if ridge == 0 {
		ridge = 1e-6
	}
	j.Note("PLeaS: %s matching, hidden widths %v, ridge %g", match, res.Widths, ridge)
	return writeNetwork(ctx, j, res.Net, out, opts)
}

// writeNetwork writes an MLP as a checkpoint like the first input model
// (dtype, metadata, companion files; config.json's "sizes" updated).
func writeNetwork(ctx context.Context, j *Job, n *mlp.Network, out string, opts checkpoint.WriteOptions) (*checkpoint.Written, error) {
	first := j.Models[0]
	opts, err := j.WriteOptions(opts)
	if err != nil {
		return nil, err
	}
	dt := j.OutDType
	byName := map[string]*tensors.Tensor{}
	var entries []safetensors.Entry
	for _, l := range n.Layers {
		wdt, bdt := dt, dt
		if dt == 0 {
			wi, _ := first.Info(l.Name + ".weight")
			bi, _ := first.Info(l.Name + ".bias")
			wdt, bdt = wi.DType, bi.DType
		}
		w, err := tensors.FromFloat32(l.Name+".weight", wdt, []int64{int64(l.Out), int64(l.In)}, l.W)
		if err != nil {
			return nil, err
		}
		byName[w.Name] = w
		entries = append(entries, safetensors.Entry{Name: w.Name, DType: w.DType, Shape: w.Shape})
		if l.B != nil {
			b, err := tensors.FromFloat32(l.Name+".bias", bdt, []int64{int64(l.Out)}, l.B)
			if err != nil {
				return nil, err
			}
			byName[b.Name] = b
			entries = append(entries, safetensors.Entry{Name: b.Name, DType: b.DType, Shape: b.Shape})
		}
	}
	if first.Dir != "" && !checkpoint.IsSingleFile(out) {
		if cfg, err := updatedConfig(filepath.Join(first.Dir, "config.json"), n, j.Plan); err == nil && cfg != nil {
			if opts.Files == nil {
				opts.Files = map[string][]byte{}
			}
			opts.Files["config.json"] = cfg
		} else if err != nil {
			return nil, err
		}
	}
	if opts, err = first.WithDType(opts, dt); err != nil { // config.json's torch_dtype
		return nil, err
	}
	produce := func(_ context.Context, e safetensors.Entry) (*tensors.Tensor, func(), error) {
		return byName[e.Name], nil, nil
	}
	return checkpoint.Write(ctx, out, entries, produce, opts)
}

// openJointStats opens a --stats file for pleas, which needs the joint
// statistics of the two models; the caller closes it.
func openJointStats(path string) (*stats.File, error) {
	f, err := stats.Open(path)
	if err != nil {
		return nil, err
	}
	if f.Kind != stats.Joint {
		f.Close()
		return nil, fmt.Errorf("%s: pleas needs joint statistics of the two models, not %s ones", path, f.Kind)
	}
	return f, nil
}

// pleasWeightMatching matches the job's two models by their weights
// (--match weight) on spec, with the plan's seed and restarts (automatic
// when not positive), and records the sweeps in the job's report.
func pleasWeightMatching(ctx context.Context, j *Job, spec *permute.Spec) (permute.Perms, error) {
	p := j.Plan
	mo := permute.MatchOptions{Seed: uint64(p.Global("seed").Int), Restarts: int(p.Global("restarts").Int)}
	if mo.Restarts <= 0 {
		mo.Restarts = permute.AutoRestarts(spec, permute.Shapes(j.Models[0]))
	}
	a, b := permute.NewCheckpointSource(j.Models[0], 0), permute.NewCheckpointSource(j.Models[1], 0)
	mr, err := permute.WeightMatching(ctx, spec, a, b, mo)
	if err != nil {
		return nil, err
	}
	j.Report.Sweeps = mr.Sweeps
	return mr.Perms, nil
}
