package merge

import (
	"context"
	"fmt"
	"strings"

	"github.com/wtool/wtool/io/checkpoint"

	"github.com/wtool/wtool/permute"
)

// wm: align every model's hidden units to the first by weight matching
// (Git Re-Basin; MergeMany for three or more models), then average.
type wmMethod struct{ about }

func init() {
	Register(wmMethod{about{name: "wm", aliases: []string{"weight-matching", "git-rebasin"},
		doc: "align hidden units by weight matching (MergeMany for 3+), then average"}})
}

func (wmMethod) Params() []Param {
	return []Param{weightParam(), normalizeParam(true),
		{Name: "spec", Kind: String, Default: Text("auto"), Doc: "permutation spec for wm: auto (default), mlp, llama or a JSON file"},
		{Name: "layers", Kind: List, Doc: "MLP layer order, comma-separated (mlp spec; pleas, regmean with calib)"},
		seedParam(seedDoc),
		restartsParam(),
		{Name: "max_sweeps", Kind: Int, Default: IntValue(0), Check: AtLeast(0),
			Doc: "weight matching stops after this many sweeps (0: 100), MergeMany after this many rounds"},
		{Name: "cache_size", Kind: String, Default: Text("1GiB"),
			Doc: "bytes of each model's tensors kept mapped between uses, e.g. 512MiB, 2GB (0: none); does not change the result"},
	}
}

func (wmMethod) Check(p *Plan) error {
	if _, err := cacheBytes(p.Global("cache_size").Text); err != nil {
		return &ParamError{Param: "cache_size", Err: err}
	}
	return needModels(p, 2, 0)
}

// restartsParam is weight matching's number of restarts (wm, pleas with
// match: weight); 0 lets permute.AutoRestarts choose.
func restartsParam() Param {
	return Param{Name: "restarts", Kind: Int, Default: IntValue(0), Check: AtLeast(0),
		Doc: "weight matching runs with seeds seed, seed+1, ...; the closest result is kept (0: 3 for small models, 1 for large)"}
}

// cacheBytes reads a cache size: a byte size, or 0 for no cache (which
// permute spells -1).
func cacheBytes(s string) (int64, error) {
	if strings.TrimSpace(s) == "0" {
		return -1, nil
	}
	return checkpoint.ParseSize(s)
}

// Start computes the permutations: every model aligned to the first (two
// models) or to each other with MergeMany (three or more), reading the
// models in their dtype a block at a time: memory depends on neither their
// size nor their number.
func (wmMethod) Start(ctx context.Context, j *Job) (Merger, error) {
	p := j.Plan
	spec, err := permute.BuiltinSpec(p.Global("spec").Text, j.Models[0], p.Global("layers").List)
	if err != nil {
		return nil, err
	}
	if err := spec.Validate(permute.Shapes(j.Models[0])); err != nil {
		return nil, err
	}
	cache, err := cacheBytes(p.Global("cache_size").Text)
	if err != nil {
		return nil, &ParamError{Param: "cache_size", Err: err}
	}
	mo := permute.MatchOptions{Seed: uint64(p.Global("seed").Int), Restarts: int(p.Global("restarts").Int),
		MaxSweeps: int(p.Global("max_sweeps").Int), CacheBytes: cache}
	if mo.Restarts <= 0 {
		mo.Restarts = permute.AutoRestarts(spec, permute.Shapes(j.Models[0]))
	}
	res, err := permute.MatchModels(ctx, spec, j.Models, mo)
	if err != nil {
		return nil, err
	}
	w := &wmMerger{spec: spec, normalize: p.Global("normalize").Bool, perms: res.Perms}
	j.Report.Sweeps = res.Sweeps
	if len(j.Models) == 2 {
		j.Note("weight matching: %d sweeps (%d group solves, %d skipped), distance %.6g -> %.6g",
			res.Sweeps, res.Solved, res.Skipped, res.DistanceBefore, res.DistanceAfter)
	} else {
		j.Note("MergeMany aligned %d models in %d rounds", len(j.Models), res.Sweeps)
	}
	if st := res.Stats; st.GEMMFLOPs >= 1e12 { // large models: where the time went
		j.Note("matching time: cost matrices %.1f s (GEMM %.1f s, %.4g FLOP), assignments %.1f s (beside the GEMMs), passes over the models %.1f s",
			st.CostTime.Seconds(), st.GEMMTime.Seconds(), st.GEMMFLOPs, st.SolveTime.Seconds(), st.PassTime.Seconds())
	}
	return w, nil
}

type wmMerger struct {
	normalize bool
	spec      *permute.Spec
	perms     []permute.Perms // per model
}

// Tensor: the weighted average of the models read through their
// permutations (gathered per block, never materialised).
func (w *wmMerger) Tensor(_ context.Context, t *TensorJob) (*Kernel, error) {
	ws, scale, err := linearScale(t.weights(allModels(len(t.Models))), w.normalize)
	if err != nil {
		return nil, fmt.Errorf("wm: %w", err)
	}
	var ins []*Input
	for i, in := range t.Models {
		x, err := permuted(in, w.spec, w.perms[i])
		if err != nil {
			return nil, err
		}
		ins = append(ins, x)
	}
	return &Kernel{Inputs: ins, Fn: linearFn(ws, scale)}, nil
}

// permuted returns the input read through the permutations of the spec's
// groups on its axes (the input itself when none moves): blocks of whole
// heads, repeated head features and fused axes as permute.Spec.Apply moves
// them.
func permuted(in *Input, spec *permute.Spec, perms permute.Perms) (*Input, error) {
	index, moved, err := spec.Indices(in.Tensor, in.Shape, perms)
	if err != nil {
		return nil, err
	}
	if !moved {
		return in, nil
	}
	x := *in
	x.index = index
	return &x, nil
}
