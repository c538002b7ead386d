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
	// custom builds the method's own sparsifier (breadcrumbs, della);
	// randomCustom says it draws at random (a seed, rescale: inverse).
	custom       func(j *Job, r Rescale) (sparsifier, error)
	randomCustom bool
	extra        []Param
	// check is the method's own check of the plan, after the family's.
	check func(p *Plan) error
}

func (m gtaMethod) Params() []Param {
	ps := []Param{weightParam(), lambdaParam(), normalizeParam(m.normalize),
		{Name: "int8_mask", Kind: Bool, Hidden: true, Doc: "mergekit's memory option; no effect on the result"}}
	d := densityParam(InRange(0, 1, false, false), densityDoc)
	if m.sparsify == NoSparsify && m.custom == nil {
		// task arithmetic: mergekit accepts density and ignores it
		d.Doc, d.Hidden = "ignored (mergekit's task_arithmetic accepts it and does not sparsify)", true
	}
	ps = append(ps, d)
	def := "none"
	if m.random() {
		def = "l1"
	}
	ps = append(ps, Param{Name: "rescale", Kind: String, Default: Text(def), Choices: []string{"l1", "none", "inverse"},
		Doc: "rescaling of sparsified task vectors: l1 (keep each task vector's L1 norm: mergekit's rescale: true), none (mergekit's false), " +
			"inverse (divide kept entries by their keep probability: the DARE paper's unbiased rule; random methods only); default " + def,
		Decode: func(s string) (Value, error) {
			// mergekit's YAML says rescale: true (L1) or false
			if b, err := strconv.ParseBool(s); err == nil {
				if b {
					return Text("l1"), nil
				}
				return Text("none"), nil
			}
			return Text(s), nil
		}})
	if m.random() {
		ps = append(ps, seedParam(seedDoc))
	}
	return append(ps, m.extra...)
}

// random reports whether the method drops entries at random.
func (m gtaMethod) random() bool { return m.sparsify == Random || m.randomCustom }

func (m gtaMethod) Check(p *Plan) error {
	if p.Base == "" {
		return fmt.Errorf("%s merges task vectors: give the base model (--base, or base_model in the config)", m.name)
	}
	if p.Global("rescale").Text == "inverse" && !m.random() {
		return &ParamError{Param: "rescale", Err: fmt.Errorf("inverse (1/keep probability) applies to the random methods (dare-*, della*), not %s", m.name)}
	}
	if p.Global("rescale").Text == "inverse" {
		for i := range p.Models {
			if d, ok := p.ModelValue(i, "density").Num.Constant(); ok && d == 0 && p.Models[i].Path != p.Base {
				return &ParamError{Param: "density", Err: fmt.Errorf("0 keeps nothing, and rescale: inverse divides by it (give a density in (0, 1], or rescale l1 or none)")}
			}
		}
	}
	if err := requireWeights(p); err != nil {
		return err
	}
	if m.check != nil {
		return m.check(p)
	}
	return nil
}

func (m gtaMethod) Start(_ context.Context, j *Job) (Merger, error) {
	g := &gtaMerger{m: m, normalize: j.Plan.Global("normalize").Bool}
	var err error
	if g.rescale, err = parseRescale(j.Plan.Global("rescale").Text); err != nil {
		return nil, err
	}
	if m.custom != nil {
		if g.custom, err = m.custom(j, g.rescale); err != nil {
			return nil, err
		}
	}
	if m.random() {
		g.seed = uint64(j.Plan.Global("seed").Int)
	}
	if m.random() || (m.custom != nil || m.sparsify != NoSparsify) && g.rescale != RescaleNone {
		j.Note("rescaling of the sparsified task vectors: %s", map[Rescale]string{
			RescaleInverse: "kept entries divided by their keep probability (the DARE paper's; unbiased)",
			RescaleL1:      "kept entries scaled to keep the task vector's L1 norm (mergekit's rescale: true)",
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
	return 0, fmt.Errorf("rescale %q: want l1, none or inverse", s)
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
		// a custom sparsifier gets, per model, the density then the
		// method's own per-model numbers (breadcrumbs' gamma, della's
		// epsilon)
		for _, i := range idx {
			o.Densities = append(o.Densities, t.ModelNum(i, "density"))
			if g.custom != nil {
				for _, prm := range g.m.extra {
					if prm.Kind == Number && prm.Scope == PerModel {
						o.Densities = append(o.Densities, t.ModelNum(i, prm.Name))
					}
				}
			}
		}
	}
	o.Rescale, o.Seed = g.rescale, g.seed
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
