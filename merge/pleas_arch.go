package merge

import (
	"context"
	"fmt"
	"maps"
	"math"
	"runtime"
	"slices"
	"sort"
	"strings"

	"github.com/wtool/wtool/fisher/stats"
	"github.com/wtool/wtool/io/arch"
	"github.com/wtool/wtool/permute"
	"github.com/wtool/wtool/tensors"
)

// ModelWeights gives a model's parameters in float32 by tensor name (a
// fisher/nn Net, or tensors in memory).
type ModelWeights interface {
	Tensor(name string) ([]float32, bool)
}

// PLeaSModelOptions control PLeaSModel.
type PLeaSModelOptions struct {
	// Width is the merged width of every group as a multiple of its size,
	// from 1 (every unit merged) to 2 (both models' units kept side by
	// side); 0 means 1. Groups the policy keeps whole (a transformer's
	// residual stream, the heads of ViT, BERT and GPT-2: see FullMerge) are
	// merged at width 1 whatever it says.
	Width float64
	// Widths, when set, gives groups' merged widths in units (size n: from
	// n to 2n), overriding Width for those groups.
	Widths map[string]int
	// Ridge is added to the diagonal of each least-squares system, relative
	// to its mean diagonal (0: 1e-6).
	Ridge float64
	// Perms are the matchings (Perms[g][i]: B's unit matched with A's unit
	// i); nil: activation matching on the joint statistics.
	Perms permute.Perms
	// SeparateHeads keeps the output classes of both models side by side
	// (the merged head gives A's logits, then B's): classifiers trained on
	// different label sets.
	SeparateHeads bool
	// AverageOnly skips the least-squares refit: every parameter is merged
	// in the layout (at width 1, the aligned average of the two models,
	// what weight or activation matching followed by averaging gives).
	AverageOnly bool
	// ReleaseStats hands every module's statistics back to the JointStats
	// once the module is refit, when it has a Release(module) method (as
	// fisher/nn.LazyStats has): nothing reads them again.
	ReleaseStats bool
}

// PLeaSGroup reports how one group was merged.
type PLeaSGroup struct {
	Group string
	Kind  permute.GroupKind
	// Size is the group's units in each source; Width the merged model's
	// (Size + the units kept apart).
	Size, Width int
	// Merged is the number of unit pairs merged; the other Size-Merged
	// units of each model are kept apart.
	Merged int
	// Score is the mean correlation of the merged pairs (NaN when no
	// statistics read the group).
	Score float64
}

// PLeaSModelResult is a merged model: its tensors (float32, in the merged
// shapes) and how every group was merged.
type PLeaSModelResult struct {
	Tensors map[string]*tensors.Tensor
	Groups  []PLeaSGroup
	// Refit lists the modules refit by least squares, in module order;
	// the other parameters are merged in the layout (pairs averaged).
	Refit []string
	// Layouts are the merged units of every group: for unit r, A's unit
	// (-1 if none) and B's (-1 if none).
	Layouts map[string][][2]int
}

// FullMerge reports whether PLeaS keeps a group at width 1 whatever the
// width or budget asked, so that the merged model is still a checkpoint of
// its family (see docs/permutation-spec.md):
//
//   - a transformer's residual stream: its norms normalise over the whole
//     stream, so a wider stream is not either model's;
//   - the attention heads of ViT, BERT and GPT-2: their model classes take
//     the head size to be hidden_size / num_attention_heads (config.json
//     has no head_dim), so more heads of the same size cannot be loaded;
//     the Llama family (Llama, Mistral, Qwen2, Gemma, Phi-3, Mixtral) reads
//     head_dim from config.json, and its heads may be widened;
//   - a transformer's hidden groups other than MLP units (BERT's pooler
//     output: the pooler is hidden_size x hidden_size).
//
// ResNet stages and block interiors, and every transformer MLP group (an
// expert's included), may be widened.
func FullMerge(as *permute.ArchSpec, g string) bool {
	info := as.Info[g]
	fam := as.Arch.Family
	if fam == "resnet" || fam == "mlp" || fam == "generic" {
		return false
	}
	switch info.Kind {
	case permute.KindResidual:
		return true
	case permute.KindHeads:
		return !headDimFamilies[fam]
	case permute.KindHidden:
		return !mlpUnits(as, g)
	}
	return false
}

// headDimFamilies are the transformer families whose config.json sets the
// head size (head_dim) apart from hidden_size / num_attention_heads.
var headDimFamilies = map[string]bool{"llama": true, "mistral": true, "qwen2": true, "gemma": true, "phi3": true, "mixtral": true}

// mlpUnits reports whether a hidden group is an MLP's (or an expert's)
// intermediate units: an MLP down projection reads it, and config.json's
// intermediate_size (n_inner) says its width.
func mlpUnits(as *permute.ArchSpec, g string) bool {
	for _, sp := range as.Info[g].Spaces {
		for _, m := range as.Arch.Readers(sp) {
			if m.Role == arch.RoleMLPDown {
				return true
			}
		}
	}
	return false
}

// PLeaSModel merges two models of the same architecture with PLeaS
// (Nasery et al., 2024) from a permutation spec built from the
// architecture (permute.BuildSpec) and the joint statistics of the two
// models' module inputs on the same data (docs/stats.md): match every group
// (activation matching unless Perms are given), merge the best-correlated
// pairs of each group and keep the rest of both models' units, in the
// layout [merged | A-only | B-only], so that each group has the width
// asked; then
//
//   - every Linear, Conv1D and Conv2d module whose input statistics are
//     given is refit in closed form (refitSolve): its merged outputs fit
//     the source modules' outputs (pair-averaged) from the merged inputs,
//     A-only outputs reading no B-only input and vice versa;
//   - every other parameter (biases of modules not refit, norms,
//     BatchNorm weights and statistics, embeddings) is merged in the
//     layout: pairs averaged, kept units copied.
//
// A heads group is widened by whole heads, and the features inside each
// head follow it. BatchNorm running statistics are only averaged here:
// recompute them on data (fisher/nn.RecomputeBatchNorm), as the paper does.
func PLeaSModel(ctx context.Context, as *permute.ArchSpec, a, b ModelWeights, js permute.JointStats, o PLeaSModelOptions) (*PLeaSModelResult, error) {
	if o.Width == 0 {
		o.Width = 1
	}
	if !(o.Width >= 1 && o.Width <= 2) {
		return nil, fmt.Errorf("pleas: width %g must be between 1 and 2", o.Width)
	}
	s := as.Spec
	perms := o.Perms
	if perms == nil {
		p, err := activationPerms(ctx, as, a, b, js)
		if err != nil {
			return nil, err
		}
		perms = p
	}
	for _, g := range s.GroupNames() {
		if len(perms[g]) != s.Groups[g] {
			return nil, fmt.Errorf("pleas: group %q: a permutation of %d units, not %d", g, len(perms[g]), s.Groups[g])
		}
	}
	res := &PLeaSModelResult{Tensors: map[string]*tensors.Tensor{}, Layouts: map[string][][2]int{}}
	// 1-2: scores and layouts, heads before their features
	layouts := map[string][]elem{}
	for _, g := range s.GroupNames() {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if _, within := s.Within[g]; within {
			continue
		}
		n := s.Groups[g]
		scores, err := unitScores(as, js, perms, g)
		if err != nil {
			return nil, err
		}
		merged := int(math.Round(float64(n) * (2 - o.Width)))
		if w, ok := o.Widths[g]; ok {
			if w < n || w > 2*n {
				return nil, fmt.Errorf("pleas: group %q of %d units: width %d is not between %d and %d", g, n, w, n, 2*n)
			}
			merged = 2*n - w
		}
		if FullMerge(as, g) {
			merged = n
		}
		merged = max(0, min(n, merged))
		lay := layoutOf(perms[g], scores, merged)
		layouts[g] = lay
		var sum float64
		for _, e := range lay[:merged] {
			sum += scores[e.a]
		}
		score := math.NaN()
		if scores != nil && merged > 0 {
			score = sum / float64(merged)
		}
		res.Groups = append(res.Groups, PLeaSGroup{Group: g, Kind: as.Info[g].Kind, Size: n, Width: len(lay), Merged: merged, Score: score})
	}
	// features inside heads follow their heads
	for _, g := range s.GroupNames() {
		w, ok := s.Within[g]
		if !ok {
			continue
		}
		hl, ok := layouts[w.Heads]
		if !ok {
			return nil, fmt.Errorf("pleas: group %q: its heads %q have no layout", g, w.Heads)
		}
		var lay []elem
		pg := perms[g]
		for _, h := range hl {
			for k := range w.Dim {
				switch h.kind {
				case kindMerged:
					lay = append(lay, elem{kindMerged, h.a*int32(w.Dim) + int32(k), int32(pg[int(h.a)*w.Dim+k])})
				case kindA:
					lay = append(lay, elem{kindA, h.a*int32(w.Dim) + int32(k), -1})
				case kindB:
					// B's head h.b, its features in B's order
					lay = append(lay, elem{kindB, -1, h.b*int32(w.Dim) + int32(k)})
				}
			}
		}
		layouts[g] = lay
		hm := 0
		for _, h := range hl {
			if h.kind == kindMerged {
				hm++
			}
		}
		res.Groups = append(res.Groups, PLeaSGroup{Group: g, Kind: as.Info[g].Kind, Size: s.Groups[g], Width: len(lay), Merged: hm * w.Dim, Score: math.NaN()})
	}
	sort.Slice(res.Groups, func(i, j int) bool { return res.Groups[i].Group < res.Groups[j].Group })
	for g, lay := range layouts {
		l := make([][2]int, len(lay))
		for i, e := range lay {
			l[i] = [2]int{int(e.a), int(e.b)}
		}
		res.Layouts[g] = l
	}
	// 3: every tensor in the merged layout
	maps := axisMaps(as, layouts)
	if o.SeparateHeads {
		if err := separateHeads(as, maps); err != nil {
			return nil, err
		}
	}
	done := map[string]bool{}
	scratch := &refitScratch{} // the work matrices, reused by every module
	for _, m := range as.Arch.Modules {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		w := m.Weight()
		if w == nil || !(m.Kind == arch.Linear || m.Kind == arch.Conv || m.Kind == arch.Conv1D) || o.AverageOnly || js == nil || !js.Has(m.Name) {
			continue
		}
		if err := refitModule(ctx, as, m, a, b, js, maps, o.Ridge, res.Tensors, scratch); err != nil {
			return nil, fmt.Errorf("pleas: module %s: %w", m.Name, err)
		}
		if r, ok := js.(interface{ Release(string) }); ok && o.ReleaseStats {
			r.Release(m.Name)
			// the module's statistics and the refit's temporaries are
			// garbage now: collect them before the next module's, or the
			// heap grows to twice what it holds
			runtime.GC()
		}
		done[w.Tensor] = true
		if bp := m.Bias(); bp != nil {
			done[bp.Tensor] = true
		}
		res.Refit = append(res.Refit, m.Name)
	}
	for _, m := range as.Arch.Modules {
		for _, p := range m.Params {
			if done[p.Tensor] || p.Name == "num_batches_tracked" || m.Kind == arch.Buffer {
				continue
			}
			t, err := layoutMerge(p, a, b, maps[p.Tensor])
			if err != nil {
				return nil, fmt.Errorf("pleas: %w", err)
			}
			if t != nil {
				res.Tensors[p.Tensor] = t
			}
		}
	}
	return res, nil
}

// activationPerms matches two models by activations (permute's
// MatchActivations: every statistics entry of a group pooled, heads as
// heads, query/key features from the projections' weights).
func activationPerms(ctx context.Context, as *permute.ArchSpec, a, b ModelWeights, js permute.JointStats) (permute.Perms, error) {
	p, _, err := permute.MatchActivations(ctx, as.Spec, js, permute.ActivationOptions{
		Weights: [2]permute.Source{weightsSource{as.Arch, a}, weightsSource{as.Arch, b}}})
	if err != nil {
		return nil, fmt.Errorf("pleas: activation matching: %w", err)
	}
	return p, nil
}

// weightsSource gives a model's parameters to permute's matchers.
type weightsSource struct {
	arch *arch.Arch
	w    ModelWeights
}

func (s weightsSource) Float32(name string) ([]float32, []int64, error) {
	p, ok := s.arch.Param(name)
	v, ok2 := s.w.Tensor(name)
	if !ok || !ok2 {
		return nil, nil, fmt.Errorf("no tensor %q", name)
	}
	return v, p.Shape, nil
}

// layoutOf orders a group's units: the merged pairs by decreasing score,
// then A's other units in order, then their B partners.
func layoutOf(match []int, scores []float64, merged int) []elem {
	n := len(match)
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	if scores != nil {
		sort.SliceStable(order, func(x, y int) bool { return scores[order[x]] > scores[order[y]] })
	}
	lay := make([]elem, 0, 2*n-merged)
	head := slices.Clone(order[:merged])
	slices.Sort(head)
	for _, i := range head {
		lay = append(lay, elem{kindMerged, int32(i), int32(match[i])})
	}
	rest := slices.Clone(order[merged:])
	slices.Sort(rest)
	for _, i := range rest {
		lay = append(lay, elem{kindA, int32(i), -1})
	}
	for _, i := range rest {
		lay = append(lay, elem{kindB, -1, int32(match[i])})
	}
	return lay
}

// unitScores returns, for a group, the correlation of every A unit with
// its match in B, averaged over the input features of every module that
// reads the group and whose joint statistics are given (nil when none
// does). A heads group with no direct reader is scored by its Within
// groups (the heads' features).
func unitScores(as *permute.ArchSpec, js permute.JointStats, perms permute.Perms, g string) ([]float64, error) {
	s := as.Spec
	if js == nil {
		return nil, nil
	}
	n := s.Groups[g]
	score := make([]float64, n)
	terms := make([]int, n)
	add := func(group string, per func(unit int) int) error {
		ng := s.Groups[group]
		for _, u := range s.Uses(group) {
			p, ok := as.Arch.Param(u.Tensor)
			if !ok || p.Name != "weight" || !js.Has(p.Module.Name) {
				continue
			}
			m := p.Module
			if !(m.Kind == arch.Linear || m.Kind == arch.Conv || m.Kind == arch.Conv1D) || u.Axis != inAxis(m) {
				continue
			}
			st, err := js.Module(m.Name)
			if err != nil {
				return err
			}
			k := patch(p)
			mean, sd, meanB, sdB := moments(st)
			pos := u.Positions(ng)
			pu := u.PerUnit()
			nn := float64(st.Count)
			for i := range ng {
				j := perms[group][i]
				var c float64
				cnt := 0
				for t := range pu {
					ea, eb := pos[i*pu+t], pos[j*pu+t]
					for q := range k {
						fa, fb := ea*k+q, eb*k+q
						if fa >= st.Dim || fb >= st.Dim {
							return fmt.Errorf("module %s: group %q reaches feature %d of %d", m.Name, group, max(fa, fb), st.Dim)
						}
						den := sd[fa] * sdB[fb]
						if den > 1e-12 {
							c += (st.Cross[fa*st.Dim+fb]/nn - mean[fa]*meanB[fb]) / den
						}
						cnt++
					}
				}
				if cnt > 0 {
					score[per(i)] += c / float64(cnt)
					terms[per(i)]++
				}
			}
		}
		return nil
	}
	if err := add(g, func(i int) int { return i }); err != nil {
		return nil, err
	}
	if slices.Max(terms) == 0 {
		for _, w := range s.HeadGroups(g) {
			dim := s.Within[w].Dim
			if err := add(w, func(i int) int { return i / dim }); err != nil {
				return nil, err
			}
		}
	}
	if slices.Max(terms) == 0 {
		return nil, nil
	}
	for i := range score {
		if terms[i] > 0 {
			score[i] /= float64(terms[i])
		}
	}
	return score, nil
}

// moments returns the means and standard deviations of A's and B's
// features of a joint module.
func moments(st *stats.Module) (ma, sa, mb, sb []float64) {
	d, n := st.Dim, float64(st.Count)
	ma, sa, mb, sb = make([]float64, d), make([]float64, d), make([]float64, d), make([]float64, d)
	for i := range d {
		ma[i], mb[i] = st.Sum[i]/n, st.SumB[i]/n
		sa[i] = math.Sqrt(max(st.Gram[i*d+i]/n-ma[i]*ma[i], 0))
		sb[i] = math.Sqrt(max(st.GramB[i*d+i]/n-mb[i]*mb[i], 0))
	}
	return
}

// inAxis is the axis of a module's weight that its input indexes; outAxis
// the one its output does.
func inAxis(m *arch.Module) int {
	if m.Kind == arch.Conv1D {
		return 0
	}
	return 1
}

func outAxis(m *arch.Module) int { return 1 - inAxis(m) }

// patch is the number of statistics features per input channel of a
// weight: a convolution's kernel positions (1 for a matrix).
func patch(p *arch.Param) int {
	k := 1
	for _, s := range p.Shape[2:] {
		k *= int(s)
	}
	return k
}

// axisMaps returns, for every tensor of the spec, the merged elements of
// each axis (nil for an axis no group permutes: every index shared).
func axisMaps(as *permute.ArchSpec, layouts map[string][]elem) map[string][][]elem {
	s := as.Spec
	type part struct {
		u permute.Use
		g string
	}
	parts := map[string]map[int][]part{}
	for _, g := range s.GroupNames() {
		for _, u := range s.Uses(g) {
			if parts[u.Tensor] == nil {
				parts[u.Tensor] = map[int][]part{}
			}
			parts[u.Tensor][u.Axis] = append(parts[u.Tensor][u.Axis], part{u, g})
		}
	}
	out := map[string][][]elem{}
	for _, t := range slices.Sorted(maps.Keys(s.Tensors)) {
		p, ok := as.Arch.Param(t)
		if !ok {
			continue
		}
		axes := make([][]elem, len(p.Shape))
		for ax, ps := range parts[t] {
			sort.Slice(ps, func(i, j int) bool { return ps[i].u.Offset < ps[j].u.Offset })
			length := int(p.Shape[ax])
			var m []elem
			shared := func(lo, hi int) {
				for e := lo; e < hi; e++ {
					m = append(m, elem{kindShared, int32(e), int32(e)})
				}
			}
			at := 0
			for _, pt := range ps {
				u := pt.u
				shared(at, u.Offset)
				lay := layouts[pt.g]
				n := s.Groups[pt.g]
				src := u.Positions(n)
				mu := u
				mu.Offset = 0
				dst := mu.Positions(len(lay))
				per := u.PerUnit()
				seg := make([]elem, len(lay)*per)
				for r, e := range lay {
					for k := range per {
						x := elem{kind: e.kind, a: -1, b: -1}
						if e.a >= 0 {
							x.a = int32(src[int(e.a)*per+k])
						}
						if e.b >= 0 {
							x.b = int32(src[int(e.b)*per+k])
						}
						seg[dst[r*per+k]] = x
					}
				}
				m = append(m, seg...)
				at = u.Offset + u.Size
			}
			shared(at, length)
			axes[ax] = m
		}
		out[t] = axes
	}
	return out
}

// separateHeads makes the output axis of the model's head(s) [A's classes
// | B's classes].
func separateHeads(as *permute.ArchSpec, maps map[string][][]elem) error {
	found := false
	for _, m := range as.Arch.Modules {
		if m.Role != arch.RoleHead {
			continue
		}
		if sp, ok := as.Arch.Space(m.Out); !ok || sp.Kind != arch.SpaceOutput {
			continue
		}
		for _, p := range m.Params {
			ax := outAxis(m)
			if p.Name == "bias" {
				ax = 0
			}
			if ax >= len(p.Shape) {
				continue
			}
			n := int(p.Shape[ax])
			axes := maps[p.Tensor]
			if axes == nil {
				axes = make([][]elem, len(p.Shape))
			}
			if axes[ax] != nil {
				return fmt.Errorf("head %s: its output axis is permuted", m.Name)
			}
			var e []elem
			for i := range n {
				e = append(e, elem{kindA, int32(i), -1})
			}
			for i := range n {
				e = append(e, elem{kindB, -1, int32(i)})
			}
			axes[ax] = e
			maps[p.Tensor] = axes
			found = true
		}
	}
	if !found {
		return fmt.Errorf("no output head to keep apart (separate heads need a classifier's or LM's head)")
	}
	return nil
}

// axisElems returns the merged elements of an axis (shared indices for an
// unpermuted one).
func axisElems(axes [][]elem, ax int, length int64) []elem {
	if axes != nil && axes[ax] != nil {
		return axes[ax]
	}
	m := make([]elem, length)
	for i := range m {
		m[i] = elem{kindShared, int32(i), int32(i)}
	}
	return m
}

// layoutMerge merges one parameter in the layout: every element of the
// merged tensor is the average of its A and B sources when all its axes are
// merged or shared, A's (B's) value when an axis is A-only (B-only), and 0
// where an A-only axis meets a B-only one. It returns nil for a parameter
// neither model has as a float tensor.
func layoutMerge(p *arch.Param, a, b ModelWeights, axes [][]elem) (*tensors.Tensor, error) {
	va, okA := a.Tensor(p.Tensor)
	vb, okB := b.Tensor(p.Tensor)
	if !okA || !okB {
		if !okA && !okB {
			return nil, nil
		}
		return nil, fmt.Errorf("tensor %q is in one model only", p.Tensor)
	}
	if len(va) != len(vb) {
		return nil, fmt.Errorf("tensor %q has %d values in A and %d in B", p.Tensor, len(va), len(vb))
	}
	rank := len(p.Shape)
	el := make([][]elem, rank)
	shape := make([]int64, rank)
	stride := make([]int, rank) // source strides
	st := 1
	for ax := rank - 1; ax >= 0; ax-- {
		el[ax] = axisElems(axes, ax, p.Shape[ax])
		shape[ax] = int64(len(el[ax]))
		stride[ax] = st
		st *= int(p.Shape[ax])
	}
	total := 1
	for _, s := range shape {
		total *= int(s)
	}
	out := make([]float32, total)
	idx := make([]int, rank)
	for k := range out {
		ia, ib := 0, 0
		hasA, hasB := false, false
		for ax := range rank {
			e := el[ax][idx[ax]]
			switch e.kind {
			case kindA:
				hasA = true
			case kindB:
				hasB = true
			}
			if e.a >= 0 {
				ia += int(e.a) * stride[ax]
			} else {
				ia = -1 << 40
			}
			if e.b >= 0 {
				ib += int(e.b) * stride[ax]
			} else {
				ib = -1 << 40
			}
		}
		switch {
		case hasA && hasB:
			out[k] = 0
		case hasA:
			out[k] = va[ia]
		case hasB:
			out[k] = vb[ib]
		default:
			out[k] = (va[ia] + vb[ib]) / 2
		}
		for ax := rank - 1; ax >= 0; ax-- {
			idx[ax]++
			if idx[ax] < len(el[ax]) {
				break
			}
			idx[ax] = 0
		}
	}
	return tensors.FromFloat32(p.Tensor, tensors.F32, shape, out)
}

// refitModule refits one Linear, Conv1D or Conv2d module in the merged
// layout and stores its weight (and bias).
func refitModule(ctx context.Context, as *permute.ArchSpec, m *arch.Module, a, b ModelWeights, js permute.JointStats, maps map[string][][]elem, ridge float64, out map[string]*tensors.Tensor, scratch *refitScratch) error {
	wp := m.Weight()
	st, err := js.Module(m.Name)
	if err != nil {
		return err
	}
	k := patch(wp)
	ia, oa := inAxis(m), outAxis(m)
	nIn, nOut := int(wp.Shape[ia]), int(wp.Shape[oa])
	if st.Dim != nIn*k {
		return fmt.Errorf("statistics of %d input features, the weight %s reads %d", st.Dim, wp.Tensor, nIn*k)
	}
	axes := maps[wp.Tensor]
	rows := axisElems(axes, oa, wp.Shape[oa])
	inEl := axisElems(axes, ia, wp.Shape[ia])
	cols := make([]elem, 0, len(inEl)*k)
	for _, e := range inEl {
		for q := range k {
			c := elem{kind: e.kind, a: -1, b: -1}
			if e.a >= 0 {
				c.a = e.a*int32(k) + int32(q)
			}
			if e.b >= 0 {
				c.b = e.b*int32(k) + int32(q)
			}
			cols = append(cols, c)
		}
	}
	mat := func(w ModelWeights, name string) ([]float32, error) {
		v, ok := w.Tensor(name)
		if !ok {
			return nil, fmt.Errorf("no tensor %q", name)
		}
		if m.Kind != arch.Conv1D {
			return v, nil // [out, in, kh, kw] is [out, in*kh*kw] in unfold order
		}
		t := make([]float32, len(v)) // Conv1D [in, out] -> [out, in]
		for i := range nIn {
			for o := range nOut {
				t[o*nIn+i] = v[i*nOut+o]
			}
		}
		return t, nil
	}
	pr := refitProblem{St: st, Rows: rows, Cols: cols, Ridge: ridge, Scratch: scratch}
	if pr.WA, err = mat(a, wp.Tensor); err != nil {
		return err
	}
	if pr.WB, err = mat(b, wp.Tensor); err != nil {
		return err
	}
	bp := m.Bias()
	if bp != nil {
		var ok1, ok2 bool
		pr.BA, ok1 = a.Tensor(bp.Tensor)
		pr.BB, ok2 = b.Tensor(bp.Tensor)
		if !ok1 || !ok2 {
			return fmt.Errorf("no tensor %q", bp.Tensor)
		}
	}
	w, bias, err := refitSolve(ctx, pr)
	if err != nil {
		return err
	}
	for i, x := range w {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return fmt.Errorf("the refit weight has a non-finite value at %d", i)
		}
	}
	shape := slices.Clone(wp.Shape)
	shape[oa], shape[ia] = int64(len(rows)), int64(len(inEl))
	if m.Kind == arch.Conv1D {
		t := make([]float32, len(w))
		nr, nc := len(rows), len(inEl)
		for o := range nr {
			for i := range nc {
				t[i*nr+o] = w[o*nc+i]
			}
		}
		w = t
	}
	if out[wp.Tensor], err = tensors.FromFloat32(wp.Tensor, tensors.F32, shape, w); err != nil {
		return err
	}
	if bp != nil {
		if out[bp.Tensor], err = tensors.FromFloat32(bp.Tensor, tensors.F32, []int64{int64(len(rows))}, bias); err != nil {
			return err
		}
	}
	return nil
}

// groupSummary formats the merged widths for a note.
func groupSummary(gs []PLeaSGroup) string {
	var parts []string
	for _, g := range gs {
		parts = append(parts, fmt.Sprintf("%s %d->%d", g.Group, g.Size, g.Width))
	}
	return strings.Join(parts, ", ")
}
