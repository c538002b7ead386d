package merge

import (
	"context"
	"fmt"
	"math"
	"strconv"
)

// gtaMethod is mergekit's generalized task arithmetic: task vectors
// d_i = x_i - base, optionally sparsified (by magnitude, or at random),
// weighted, optionally sign-elected, summed, normalized, scaled by lambda
// and added to the base. task-arithmetic, ties, dare-linear and dare-ties
// are instances (one file each). A method with its own sparsification
// (mergekit's breadcrumbs, della) is another instance, in its own file,
// with custom (a sparsifier built from the plan, see sparsify.go) and the
// parameters it adds in extra.
type gtaMethod struct {
	about
	sparsify  Sparsify
	consensus bool
	normalize bool // default
	custom    func(*Job) (sparsifier, error)
	extra     []Param
}

func (m gtaMethod) Params() []Param {
	ps := []Param{weightParam(), lambdaParam(), normalizeParam(m.normalize),
		{Name: "int8_mask", Kind: Bool, Hidden: true, Doc: "mergekit's memory option; no effect on the result"}}
	switch m.sparsify {
	case Magnitude:
		ps = append(ps, densityParam(InRange(0, 1, false, false), densityDoc))
	case Random:
		ps = append(ps,
			densityParam(InRange(0, 1, true, false), densityDoc),
			Param{Name: "rescale", Kind: String, Default: Text("inverse"), Choices: []string{"inverse", "l1", "none"},
				Doc: "DARE rescaling: inverse (1/density, the paper's; default), l1 (mergekit's L1-norm matching), none",
				Decode: func(s string) (Value, error) {
					// mergekit's YAML says rescale: true (L1) or false
					if b, err := strconv.ParseBool(s); err == nil {
						if b {
							return Text("l1"), nil
						}
						return Text("none"), nil
					}
					return Text(s), nil
				}},
			seedParam(seedDoc))
	}
	return append(ps, m.extra...)
}

func (m gtaMethod) Check(p *Plan) error {
	if p.Base == "" {
		return fmt.Errorf("%s merges task vectors: give the base model (--base, or base_model in the config)", m.name)
	}
	return nil
}

func (m gtaMethod) Start(_ context.Context, j *Job) (Merger, error) {
	g := &gtaMerger{m: m, normalize: j.Plan.Global("normalize").Bool}
	if m.custom != nil {
		var err error
		if g.custom, err = m.custom(j); err != nil {
			return nil, err
		}
	}
	if m.sparsify == Random {
		var err error
		if g.rescale, err = parseRescale(j.Plan.Global("rescale").Text); err != nil {
			return nil, err
		}
		g.seed = uint64(j.Plan.Global("seed").Int)
		j.Note("DARE rescaling: %s", map[Rescale]string{
			RescaleInverse: "kept entries divided by the density (the DARE paper's; unbiased)",
			RescaleL1:      "kept entries scaled to keep the task vector's L1 norm (mergekit's)",
			RescaleNone:    "none"}[g.rescale])
	}
	return g, nil
}

func parseRescale(s string) (Rescale, error) {
	for r, n := range rescaleNames {
		if n == s {
			return r, nil
		}
	}
	return 0, fmt.Errorf("rescale %q: want inverse, l1 or none", s)
}

type gtaMerger struct {
	m         gtaMethod
	custom    sparsifier
	normalize bool
	rescale   Rescale
	seed      uint64
}

// Tensor: without sparsification or sign election (task arithmetic) an
// affine combination (the fused kernel); otherwise the passes the
// sparsification needs, then an elementwise kernel in float64. Memory:
// TIES' selection holds at most gatherCap candidates and 2^18 counters per
// goroutine and model; DARE one float64 per 4096 elements and model.
func (g *gtaMerger) Tensor(ctx context.Context, t *TensorJob) (*Kernel, error) {
	var idx []int // the task vectors' models: every model but the base
	for i := range t.Models {
		if i != t.Job.BaseIndex {
			idx = append(idx, i)
		}
	}
	ws := t.weights(idx)
	lambda := t.Num("lambda")
	normalize := g.normalize
	if g.m.sparsify == NoSparsify && g.custom == nil && !g.m.consensus {
		return taskArithmeticAffine(t, idx, ws, lambda, normalize), nil
	}
	o := TaskVectorOptions{Weights: ws, Sparsify: g.m.sparsify, Consensus: g.m.consensus, Normalize: normalize, Name: t.Name, sparsifier: g.custom}
	if g.m.sparsify != NoSparsify || g.custom != nil {
		for _, i := range idx {
			o.Densities = append(o.Densities, t.ModelNum(i, "density"))
		}
	}
	if g.m.sparsify == Random {
		o.Rescale, o.Seed = g.rescale, g.seed
	}
	var models []*Input
	for _, i := range idx {
		models = append(models, t.Models[i])
	}
	return taskVectorKernel(ctx, t, models, t.Base, o, lambda)
}

// taskArithmeticAffine is base + lambda * sum_i w_i (x_i - base) / divisor
// as coefficients of the inputs.
func taskArithmeticAffine(t *TensorJob, idx []int, ws []float64, lambda float64, normalize bool) *Kernel {
	var wsum float64
	for _, w := range ws {
		wsum += w
	}
	div := 1.0
	if normalize && math.Abs(wsum) >= 1e-8 {
		div = wsum
	}
	k := &Kernel{}
	cb := 1.0
	for n, i := range idx {
		c := lambda * ws[n] / div
		cb -= c
		if c != 0 {
			k.Inputs = append(k.Inputs, t.Models[i])
			k.Coef = append(k.Coef, c)
		}
	}
	if cb != 0 || k.Coef == nil {
		k.Inputs = append(k.Inputs, t.Base)
		k.Coef = append(k.Coef, cb)
	}
	return k
}
