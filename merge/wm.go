package merge

import (
	"context"
	"fmt"

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
		{Name: "restarts", Kind: Int, Default: IntValue(3), Check: AtLeast(1),
			Doc: "weight matching runs with seeds seed, seed+1, ...; the closest result is kept (default 3)"},
	}
}

func (wmMethod) Check(p *Plan) error { return needModels(p, 2, 0) }

// Start computes the permutations: every model aligned to the first (two
// models) or to each other with MergeMany (three or more).
func (wmMethod) Start(ctx context.Context, j *Job) (Merger, error) {
	p := j.Plan
	spec, err := permute.BuiltinSpec(p.Global("spec").Text, j.Models[0], p.Global("layers").List)
	if err != nil {
		return nil, err
	}
	if err := spec.Validate(permute.Shapes(j.Models[0])); err != nil {
		return nil, err
	}
	mo := permute.MatchOptions{Seed: uint64(p.Global("seed").Int), Restarts: int(p.Global("restarts").Int)}
	w := &wmMerger{spec: spec, normalize: p.Global("normalize").Bool}
	if len(j.Models) == 2 {
		// the decoded-tensor cache of each model gets a quarter of the budget
		a := permute.NewCheckpointSource(j.Models[0], j.MaxMemory/4)
		b := permute.NewCheckpointSource(j.Models[1], j.MaxMemory/4)
		res, err := permute.WeightMatching(ctx, spec, a, b, mo)
		if err != nil {
			return nil, err
		}
		w.perms = []permute.Perms{permute.Identity(spec), res.Perms}
		j.Report.Sweeps = res.Sweeps
		j.Note("weight matching: %d sweeps, distance %.6g -> %.6g", res.Sweeps, res.DistanceBefore, res.DistanceAfter)
		return w, nil
	}
	var srcs []permute.MemorySource
	for _, m := range j.Models {
		s, err := permute.LoadSource(m, nil)
		if err != nil {
			return nil, err
		}
		srcs = append(srcs, s)
	}
	if w.perms, err = permute.MergeMany(ctx, spec, srcs, mo); err != nil {
		return nil, err
	}
	j.Note("MergeMany aligned %d models", len(j.Models))
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
// groups on its axes (the input itself when none moves).
func permuted(in *Input, spec *permute.Spec, perms permute.Perms) (*Input, error) {
	axes, ok := spec.Tensors[in.Tensor]
	if !ok {
		return nil, fmt.Errorf("tensor %q is not in the permutation spec", in.Tensor)
	}
	if len(axes) == 0 {
		return in, nil
	}
	if len(axes) != len(in.Shape) {
		return nil, fmt.Errorf("tensor %q has %d axes, the spec gives %d", in.Tensor, len(in.Shape), len(axes))
	}
	index := make([][]int, len(axes))
	moved := false
	for a, ax := range axes {
		if ax.Group == "" {
			continue
		}
		perm, ok := perms[ax.Group]
		if !ok {
			return nil, fmt.Errorf("tensor %q axis %d: no permutation for group %q", in.Tensor, a, ax.Group)
		}
		block := max(ax.Block, 1)
		if int64(len(perm)*block) != in.Shape[a] {
			return nil, fmt.Errorf("tensor %q axis %d has %d elements, the permutation covers %d", in.Tensor, a, in.Shape[a], len(perm)*block)
		}
		ix := make([]int, len(perm)*block)
		identity := true
		for u, src := range perm {
			for k := range block {
				ix[u*block+k] = src*block + k
			}
			identity = identity && src == u
		}
		if !identity {
			index[a], moved = ix, true
		}
	}
	if !moved {
		return in, nil
	}
	x := *in
	x.index = index
	return &x, nil
}
