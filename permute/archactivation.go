package permute

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/wtool/wtool/io/arch"
	"github.com/wtool/wtool/permute/lap"
)

// ActivationOptions control [MatchActivations].
type ActivationOptions struct {
	// Scores keeps every group's score matrix in its GroupCorrelation
	// (units x units float64: 1.6 GB for an 8B Llama's 14336 MLP units, and
	// one per group), for callers that choose units by it (PLeaS).
	Scores bool
	// Weights are the two models' weights (A, B), optional. With them, the
	// query and key features inside attention heads without rotary
	// embeddings (a "qk" group, which no statistics entry records) are
	// matched by the correlation of the projections' outputs, computed
	// from the weights and the joint statistics of the projections' input;
	// without them those features keep their order and move with their
	// heads.
	Weights [2]Source
}

// StatsEntry is a statistics entry (docs/stats.md) that activation
// matching reads for a group: a module's input or an activation point, the
// space its features index and how many features each unit of the space
// has there (a convolution's patch: the kernel positions).
type StatsEntry struct {
	Name  string
	Space string
	// PerFeature is the entry's features per element of the space (1, or
	// a convolution's kh*kw).
	PerFeature int
}

// StatsEntries returns, per group, the statistics entries of js that see
// the group's units, in name order: every module input (a Linear, Conv1D or
// convolution module, named after it) and every activation point ("M:in",
// "M:out" of a module, a norm or a block) whose space the group permutes.
// It needs a spec BuildSpec made (nil otherwise). Entries whose space
// cannot be told are left out.
func (s *Spec) StatsEntries(js JointStats) map[string][]StatsEntry {
	if s.arch == nil {
		return nil
	}
	as := s.arch
	a := as.Arch
	out := map[string][]StatsEntry{}
	add := func(name, space string) {
		ax, ok := as.spaceAxis[space]
		if !ok || ax.Segments != nil || !js.Has(name) {
			return
		}
		if _, ok := s.Groups[ax.Group]; !ok {
			return
		}
		out[ax.Group] = append(out[ax.Group], StatsEntry{Name: name, Space: space})
	}
	prefixes := map[string]bool{}
	for _, m := range a.Modules {
		if m.Kind == arch.Buffer || m.Role == arch.RoleBuffer {
			continue
		}
		if m.Kind == arch.Linear || m.Kind == arch.Conv || m.Kind == arch.Conv1D {
			add(m.Name, m.In)
		}
		add(m.Name+":in", m.In)
		add(m.Name+":out", m.Out)
		for i := range len(m.Name) {
			if m.Name[i] == '.' {
				prefixes[m.Name[:i]] = true
			}
		}
	}
	for _, b := range slices.Sorted(mapsKeys(prefixes)) {
		if _, isModule := a.Module(b); isModule {
			continue
		}
		if sp := blockSpace(a, b, true); sp != "" {
			add(b+":in", sp)
		}
		if sp := blockSpace(a, b, false); sp != "" {
			add(b+":out", sp)
		}
	}
	for g := range out {
		slices.SortFunc(out[g], func(x, y StatsEntry) int { return strings.Compare(x.Name, y.Name) })
		out[g] = slices.CompactFunc(out[g], func(x, y StatsEntry) bool { return x.Name == y.Name })
	}
	return out
}

func mapsKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// blockSpace returns the residual space entering (in) or leaving a block
// that is not a module itself (a ResNet block "layer2.0"): the one residual
// space its weight modules read, or that its modules write; "" when there is
// not exactly one.
func blockSpace(a *arch.Arch, block string, in bool) string {
	found := ""
	for _, m := range a.Modules {
		if !strings.HasPrefix(m.Name, block+".") {
			continue
		}
		sp := m.Out
		if in {
			if m.IsNorm() {
				continue
			}
			sp = m.In
		}
		s, ok := a.Space(sp)
		if !ok || s.Kind != arch.SpaceResidual {
			continue
		}
		if found != "" && found != sp {
			return ""
		}
		found = sp
	}
	return found
}

// MatchActivations is [ActivationMatching] with options: per group the
// assignment and, with opts.Scores, the matrix of scores it maximised.
//
// For a spec BuildSpec made, a group's score of pairing model A's unit i
// with model B's unit j is their correlation averaged over every statistics
// entry that sees the group's units ([Spec.StatsEntries]: a residual
// stream's every block boundary and every module reading it, a ResNet
// stage's every block output, an MLP's hidden units at its down
// projection), over the features each unit has there (a convolution's
// kernel positions, the query heads sharing a key/value head). Attention
// heads are matched as heads: for every pair of heads, the best assignment
// of the features inside them (value features from the output projection's
// input; query and key features where statistics see them), then one
// assignment over heads, grouped-query aware (a key/value head with its
// query heads). Inside a head, a feature group no statistics see (query and
// key features of attention without rotary embeddings: the engine records
// no queries or keys) is matched from the projections' weights and input
// statistics when opts.Weights are given ([ActivationOptions]), and
// otherwise keeps its order and moves with its head. The scores
// of a head group are per pair of heads; of a feature group, per pair of
// features.
//
// For any other spec (a chain of Linear layers, a JSON spec), a group's
// features are the inputs of every module whose weight has the group on
// its input axis, as ActivationMatching describes.
func MatchActivations(ctx context.Context, s *Spec, js JointStats, opts ActivationOptions) (Perms, []GroupCorrelation, error) {
	if s.arch == nil {
		return activationByModules(ctx, s, js, opts)
	}
	entries := s.StatsEntries(js)
	p := Identity(s)
	var report []GroupCorrelation
	done := map[string]bool{}
	for _, g := range s.GroupNames() {
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		if done[g] {
			continue
		}
		if w, ok := s.Within[g]; ok {
			g = w.Heads
		}
		if s.isHeads(g) {
			reps, err := s.matchHeads(ctx, g, entries, js, p, opts)
			if err != nil {
				return nil, nil, err
			}
			done[g] = true
			for _, w := range s.HeadGroups(g) {
				done[w] = true
			}
			report = append(report, reps...)
			continue
		}
		done[g] = true
		sc, rep, err := s.pooledScores(ctx, g, entries[g], js)
		if err != nil {
			return nil, nil, err
		}
		if len(rep.Modules) == 0 {
			return nil, nil, fmt.Errorf("group %q: no statistics entry sees its units (%s); activation matching cannot align it (use weight matching, or record the entries: docs/stats.md)", g, strings.Join(s.arch.Info[g].Spaces, ", "))
		}
		n := s.Groups[g]
		var sol lap.Solver
		asg, err := sol.SolveContext(ctx, sc, n, n, true)
		if err != nil {
			return nil, nil, fmt.Errorf("group %q: %w", g, err)
		}
		copy(p[g], asg.RowToCol)
		rep.Before, rep.After = diagMean(sc, n, nil), diagMean(sc, n, p[g])
		if opts.Scores {
			rep.Scores = sc
		}
		report = append(report, rep)
	}
	return p, report, nil
}

// diagMean is the mean score of the pairs (i, perm[i]) (perm nil: (i, i)).
func diagMean(sc []float64, n int, perm []int) float64 {
	if n == 0 {
		return 0
	}
	t := 0.0
	for i := range n {
		j := i
		if perm != nil {
			j = perm[i]
		}
		t += sc[i*n+j]
	}
	return t / float64(n)
}

// pooledScores returns a group's score matrix (n x n, row: A's unit, column:
// B's unit): the correlation of the units' features averaged over the
// entries and the features each unit has in them. The report lists the
// entries used (none: every score 0).
func (s *Spec) pooledScores(ctx context.Context, g string, es []StatsEntry, js JointStats) ([]float64, GroupCorrelation, error) {
	n := s.Groups[g]
	sc := make([]float64, n*n)
	rep := GroupCorrelation{Group: g}
	for _, e := range es {
		if err := ctx.Err(); err != nil {
			return nil, rep, err
		}
		m, err := js.Module(e.Name)
		if err != nil {
			return nil, rep, err
		}
		sp, _ := s.arch.Arch.Space(e.Space)
		size := sp.Size
		if size <= 0 || m.Dim%size != 0 {
			return nil, rep, fmt.Errorf("statistics entry %q has %d features; its space %s has %d units", e.Name, m.Dim, e.Space, size)
		}
		k := m.Dim / size
		corr, err := newCorrelator(m) // the entries read below only: a conv patch's d x d would be k times more
		if err != nil {
			return nil, rep, err
		}
		u := s.segments(s.arch.spaceAxis[e.Space], size)[0]
		pos := u.Positions(n)
		per := u.PerUnit()
		if len(pos) != size {
			return nil, rep, fmt.Errorf("statistics entry %q: group %q covers %d of the %d units of %s (a bug)", e.Name, g, len(pos), size, e.Space)
		}
		norm := 1 / float64(per*k)
		for i := range n {
			pi := pos[i*per : (i+1)*per]
			for j := range n {
				pj := pos[j*per : (j+1)*per]
				c := 0.0
				for t := range per {
					for q := range k {
						c += corr.at(pi[t]*k+q, pj[t]*k+q)
					}
				}
				sc[i*n+j] += c * norm
			}
		}
		rep.Modules = append(rep.Modules, e.Name)
	}
	if t := len(rep.Modules); t > 1 {
		for i := range sc {
			sc[i] /= float64(t)
		}
	}
	return sc, rep, nil
}

// matchHeads matches a group of attention heads and the feature groups
// inside them (Within), writing their permutations into p.
func (s *Spec) matchHeads(ctx context.Context, h string, entries map[string][]StatsEntry, js JointStats, p Perms, opts ActivationOptions) ([]GroupCorrelation, error) {
	kv := s.Groups[h]
	head := make([]float64, kv*kv)
	parts := 0
	hsc, hrep, err := s.pooledScores(ctx, h, entries[h], js)
	if err != nil {
		return nil, err
	}
	if len(hrep.Modules) > 0 {
		copy(head, hsc)
		parts++
	}
	type feat struct {
		g   string
		d   int
		sc  []float64
		rep GroupCorrelation
	}
	var feats []feat
	var sol lap.Solver
	for _, w := range s.HeadGroups(h) {
		sc, rep, err := s.pooledScores(ctx, w, entries[w], js)
		if err != nil {
			return nil, err
		}
		if len(rep.Modules) == 0 && opts.Weights[0] != nil && opts.Weights[1] != nil {
			sc, rep.Modules, err = s.projectedScores(ctx, w, js, opts.Weights)
			if err != nil {
				return nil, fmt.Errorf("group %q: %w", w, err)
			}
		}
		if len(rep.Modules) == 0 {
			continue
		}
		d := s.Within[w].Dim
		n := kv * d
		block := make([]float64, d*d)
		for i := range kv {
			for j := range kv {
				for f := range d {
					copy(block[f*d:(f+1)*d], sc[(i*d+f)*n+j*d:][:d])
				}
				asg, err := sol.SolveContext(ctx, block, d, d, true)
				if err != nil {
					return nil, fmt.Errorf("group %q: %w", w, err)
				}
				head[i*kv+j] += asg.Cost / float64(d)
			}
		}
		parts++
		feats = append(feats, feat{w, d, sc, rep})
	}
	if parts == 0 {
		return nil, fmt.Errorf("group %q: no statistics entry sees its heads (the attention output projection's input); activation matching cannot align it (use weight matching)", h)
	}
	for i := range head {
		head[i] /= float64(parts)
	}
	asg, err := sol.SolveContext(ctx, head, kv, kv, true)
	if err != nil {
		return nil, fmt.Errorf("group %q: %w", h, err)
	}
	pi := slices.Clone(asg.RowToCol)
	copy(p[h], pi)
	hrep.Group = h
	hrep.Before, hrep.After = diagMean(head, kv, nil), diagMean(head, kv, pi)
	for _, f := range feats {
		hrep.Modules = append(hrep.Modules, f.rep.Modules...)
	}
	if opts.Scores {
		hrep.Scores = head
	}
	reports := []GroupCorrelation{hrep}
	// inside each head: the best assignment of the features to its match
	for _, w := range s.HeadGroups(h) {
		d := s.Within[w].Dim
		for i := range kv {
			for f := range d {
				p[w][i*d+f] = pi[i]*d + f
			}
		}
	}
	for _, f := range feats {
		d, n := f.d, kv*f.d
		block := make([]float64, d*d)
		for i := range kv {
			j := pi[i]
			for a := range d {
				copy(block[a*d:(a+1)*d], f.sc[(i*d+a)*n+j*d:][:d])
			}
			asg, err := sol.SolveContext(ctx, block, d, d, true)
			if err != nil {
				return nil, fmt.Errorf("group %q: %w", f.g, err)
			}
			for a := range d {
				p[f.g][i*d+a] = j*d + asg.RowToCol[a]
			}
		}
		f.rep.Before, f.rep.After = diagMean(f.sc, n, nil), diagMean(f.sc, n, p[f.g])
		if opts.Scores {
			f.rep.Scores = f.sc
		}
		reports = append(reports, f.rep)
	}
	return reports, nil
}
