package merge

import (
	"context"
	"fmt"
	"maps"
	"math"
	"slices"
	"sort"

	"github.com/wtool/wtool/io/arch"
	"github.com/wtool/wtool/permute"
)

// BudgetKind says what a PLeaS budget counts.
type BudgetKind string

// The budget kinds.
const (
	// BudgetCompute counts multiply-accumulates per input sample: a
	// Linear's in x out per row it sees, a convolution's in x out x kernel
	// per output position (the positions per sample are taken from the
	// statistics' sample counts).
	BudgetCompute BudgetKind = "compute"
	// BudgetParams counts parameters.
	BudgetParams BudgetKind = "params"
)

// Budget asks for the merged model's cost as a multiple of one source's,
// from 1 (every group merged) to 2.
type Budget struct {
	Ratio float64
	Kind  BudgetKind // "" means compute
}

// BudgetResult is the widths PLeaS merges to under a budget.
type BudgetResult struct {
	Kind BudgetKind
	// Widths are the merged widths of the widened groups, in units.
	Widths map[string]int
	// Ratio is the merged model's cost over one source's.
	Ratio float64
	// Gain is the quality proxy reached: the sum over the units kept
	// apart of (1 - the correlation of their matched pair).
	Gain float64
}

// widthProblem is the allocation: per group, the gains of keeping its
// units apart (sorted, largest first), and the cost of every tensor as a
// function of the groups' widths.
type widthProblem struct {
	groups []string
	// members are the spec groups each entry of groups widens: itself, or
	// every group of a tie class (tieClass), which share one width
	members [][]string
	size    []int
	gains   [][]float64 // gains[g][k]: keeping the (k+1)-th unit apart
	terms   []costTerm
	src     float64 // the source's cost
}

// costTerm is factor * prod over axes of (fixed + sum over its groups of
// perUnit * width).
type costTerm struct {
	factor float64
	axes   []costAxis
}

type costAxis struct {
	fixed float64
	parts []costPart
}

type costPart struct {
	g       int // index in groups (-1: a group kept at its size)
	perUnit float64
	size    int // the group's size, for g == -1
}

// cost evaluates the cost at the given extra units per group (width =
// size + extra).
func (w *widthProblem) cost(extra []int) float64 {
	var c float64
	for _, t := range w.terms {
		v := t.factor
		for _, ax := range t.axes {
			l := ax.fixed
			for _, p := range ax.parts {
				n := float64(p.size)
				if p.g >= 0 {
					n = float64(w.size[p.g] + extra[p.g])
				}
				l += p.perUnit * n
			}
			v *= l
		}
		c += v
	}
	return c
}

func (w *widthProblem) gain(extra []int) float64 {
	var s float64
	for g, k := range extra {
		for _, x := range w.gains[g][:k] {
			s += x
		}
	}
	return s
}

// AllocateWidths chooses per-group widths for PLeaS under a budget: the
// merged model may cost at most Ratio times one source (compute or
// parameters), and every unit kept apart instead of merged gains 1 - the
// correlation of its matched pair (a badly matched pair is the first kept
// apart; nil perms: activation matching). The groups PLeaS may widen are every group but the Within
// groups (they follow their heads) and those FullMerge keeps whole.
//
// In a transformer the widths are tied across layers (tieClass): every
// layer's MLP (every expert's) gets one width and every attention module
// one head count, since config.json has one intermediate_size and one
// num_attention_heads and the family's model class could not load
// per-layer widths. A tied class is one choice of the knapsack: keeping k
// units apart in each member gains the sum of the members' k largest
// gains, and costs the sum of their costs.
//
// When no tensor reads two widened groups (a transformer with its residual
// stream merged: every MLP and head group's cost is linear in its width),
// the problem is a multiple-choice knapsack and is solved exactly by
// dynamic programming over the groups (costs are integers: parameter
// counts, multiply-accumulates). When widths multiply (a ResNet: a
// convolution between two widened groups costs the product), the costs are
// linearised at the current widths and the knapsack solved, repeatedly
// from the solution; each solution is repaired to fit and filled greedily,
// and the best improved by local search (a unit removed, the room
// refilled). That is not guaranteed optimal: against brute force on small
// random cases it was optimal in 299 of 300 and within 2% in the other
// (TestBudgetAllocationBruteForce asserts 90%).
func AllocateWidths(as *permute.ArchSpec, a ModelWeights, js permute.JointStats, perms permute.Perms, b Budget) (*BudgetResult, error) {
	if b.Kind == "" {
		b.Kind = BudgetCompute
	}
	if b.Kind != BudgetCompute && b.Kind != BudgetParams {
		return nil, fmt.Errorf("pleas: budget kind %q: compute or params", b.Kind)
	}
	if !(b.Ratio >= 1 && b.Ratio <= 2) {
		return nil, fmt.Errorf("pleas: budget %g must be between 1 and 2 (times one source model)", b.Ratio)
	}
	if perms == nil {
		var err error
		if perms, err = activationPerms(context.Background(), as, a, a, js); err != nil {
			return nil, err
		}
	}
	wp, err := newWidthProblem(as, js, perms, b.Kind)
	if err != nil {
		return nil, err
	}
	extra := wp.solve(b.Ratio * wp.src)
	res := &BudgetResult{Kind: b.Kind, Widths: map[string]int{}, Ratio: wp.cost(extra) / wp.src, Gain: wp.gain(extra)}
	for g := range wp.groups {
		for _, name := range wp.members[g] {
			res.Widths[name] = wp.size[g] + extra[g]
		}
	}
	return res, nil
}

// tieClass returns the class of groups whose widths a budget ties
// together ("" for none): a transformer's config.json has one
// intermediate_size for every layer's MLP (and every expert) and one head
// count for every layer, so that per-layer widths could not be loaded by
// its model class. ResNet widths are read from the weights' shapes and
// stay free.
func tieClass(as *permute.ArchSpec, g string) string {
	switch as.Arch.Family {
	case "resnet", "mlp", "generic":
		return ""
	}
	switch as.Info[g].Kind {
	case permute.KindHidden:
		if mlpUnits(as, g) {
			return "mlp.hidden"
		}
	case permute.KindHeads:
		return "attn.heads"
	}
	return ""
}

// newWidthProblem builds the gains and costs of a model's groups.
func newWidthProblem(as *permute.ArchSpec, js permute.JointStats, perms permute.Perms, kind BudgetKind) (*widthProblem, error) {
	s := as.Spec
	wp := &widthProblem{}
	index := map[string]int{}
	tied := map[string]int{} // tie class -> index in wp.groups
	for _, g := range s.GroupNames() {
		if _, within := s.Within[g]; within || FullMerge(as, g) {
			continue
		}
		sc, err := unitScores(as, js, perms, g)
		if err != nil {
			return nil, err
		}
		n := s.Groups[g]
		gains := make([]float64, n)
		for i := range gains {
			gains[i] = 1
			if sc != nil {
				gains[i] = max(0, 1-sc[i])
			}
		}
		sort.Sort(sort.Reverse(sort.Float64Slice(gains)))
		if c := tieClass(as, g); c != "" {
			if i, ok := tied[c]; ok {
				if wp.size[i] != n {
					return nil, fmt.Errorf("pleas: budget: group %q has %d units, the other %s groups %d: their widths cannot be tied", g, n, c, wp.size[i])
				}
				// the class keeps k units apart in every member: gains add
				for k := range gains {
					wp.gains[i][k] += gains[k]
				}
				wp.members[i] = append(wp.members[i], g)
				index[g] = i
				continue
			}
			tied[c] = len(wp.groups)
		}
		index[g] = len(wp.groups)
		wp.groups = append(wp.groups, g)
		wp.members = append(wp.members, []string{g})
		wp.size = append(wp.size, n)
		wp.gains = append(wp.gains, gains)
	}
	for c, i := range tied {
		if len(wp.members[i]) > 1 {
			wp.groups[i] = fmt.Sprintf("%s (%d groups tied)", c, len(wp.members[i]))
		}
	}
	// heads' features follow their heads
	owner := func(g string) (int, float64) {
		if w, ok := s.Within[g]; ok {
			if i, ok := index[w.Heads]; ok {
				return i, float64(w.Dim)
			}
			return -1, 1
		}
		if i, ok := index[g]; ok {
			return i, 1
		}
		return -1, 1
	}
	// positions per sample of each module (compute): its statistics' rows
	// over the fewest rows of any module
	minCount := int64(0)
	if kind == BudgetCompute && js != nil {
		for _, m := range as.Arch.Modules {
			if js.Has(m.Name) {
				c, err := statsCount(js, m.Name)
				if err != nil {
					return nil, err
				}
				if minCount == 0 || c < minCount {
					minCount = c
				}
			}
		}
	}
	parts := map[string]map[int][]permute.Use{}
	groupOf := map[string]map[int][]string{}
	for _, g := range s.GroupNames() {
		for _, u := range s.Uses(g) {
			if parts[u.Tensor] == nil {
				parts[u.Tensor], groupOf[u.Tensor] = map[int][]permute.Use{}, map[int][]string{}
			}
			parts[u.Tensor][u.Axis] = append(parts[u.Tensor][u.Axis], u)
			groupOf[u.Tensor][u.Axis] = append(groupOf[u.Tensor][u.Axis], g)
		}
	}
	for _, m := range as.Arch.Modules {
		for _, p := range m.Params {
			if m.Kind == arch.Buffer || p.Name == "num_batches_tracked" || p.Name == "running_mean" || p.Name == "running_var" {
				continue
			}
			if kind == BudgetCompute && p.Name != "weight" {
				continue
			}
			if kind == BudgetCompute && !(m.Kind == arch.Linear || m.Kind == arch.Conv || m.Kind == arch.Conv1D) {
				continue
			}
			t := costTerm{factor: 1}
			if kind == BudgetCompute && minCount > 0 && js.Has(m.Name) {
				c, err := statsCount(js, m.Name)
				if err != nil {
					return nil, err
				}
				t.factor = math.Round(float64(c) / float64(minCount))
			}
			for ax, l := range p.Shape {
				ca := costAxis{fixed: float64(l)}
				for k, u := range parts[p.Tensor][ax] {
					gi, dim := owner(groupOf[p.Tensor][ax][k])
					n := s.Groups[groupOf[p.Tensor][ax][k]]
					ca.fixed -= float64(u.Size)
					if gi < 0 {
						ca.parts = append(ca.parts, costPart{g: -1, perUnit: float64(u.Size) / float64(n), size: n})
						continue
					}
					ca.parts = append(ca.parts, costPart{g: gi, perUnit: float64(u.Size) / float64(n) * dim})
				}
				t.axes = append(t.axes, ca)
			}
			wp.terms = append(wp.terms, t)
		}
	}
	wp.src = wp.cost(make([]int, len(wp.groups)))
	if wp.src <= 0 {
		return nil, fmt.Errorf("pleas: the model has no cost to budget")
	}
	return wp, nil
}

// coupled reports whether some cost term multiplies two widened groups.
func (w *widthProblem) coupled() bool {
	for _, t := range w.terms {
		n := 0
		for _, ax := range t.axes {
			for _, p := range ax.parts {
				if p.g >= 0 {
					n++
					break
				}
			}
		}
		if n > 1 {
			return true
		}
	}
	return false
}

// marginal returns each group's cost per extra unit at the given widths
// (exact when the costs are linear).
func (w *widthProblem) marginal(extra []int) []float64 {
	base := w.cost(extra)
	out := make([]float64, len(w.groups))
	for g := range w.groups {
		e := slices.Clone(extra)
		e[g]++
		out[g] = w.cost(e) - base
	}
	return out
}

// solve returns the extra units per group within the cost limit.
func (w *widthProblem) solve(limit float64) []int {
	ng := len(w.groups)
	extra := make([]int, ng)
	if !w.coupled() {
		// the room the knapsack's rounded-up costs left, filled at exact costs
		return w.fill(w.knapsack(extra, w.marginal(extra), limit-w.cost(extra)), limit)
	}
	// linearise at the current widths, solve, repeat from the solution;
	// every solution is repaired to fit (units of the least gain per cost
	// removed) and filled greedily; the best is improved by local search
	// (one unit removed, the room refilled) until no move helps
	var best []int
	at := slices.Clone(extra)
	for range 8 {
		e := w.knapsack(make([]int, ng), w.marginal(at), limit-w.src)
		c := w.fill(w.repair(slices.Clone(e), limit), limit)
		if best == nil || w.gain(c) > w.gain(best)+1e-12 {
			best = c
		}
		if slices.Equal(e, at) {
			break
		}
		at = e
	}
	for range 1000 {
		improved := false
		for g := range w.groups {
			if best[g] == 0 {
				continue
			}
			e := slices.Clone(best)
			e[g]--
			for h := range w.groups {
				if h == g || e[h] >= w.size[h] {
					continue
				}
				f := slices.Clone(e)
				f[h]++
				if w.cost(f) > limit*(1+1e-12) {
					continue
				}
				f = w.fill(f, limit)
				if w.gain(f) > w.gain(best)+1e-12 {
					best, improved = f, true
				}
			}
		}
		if !improved {
			break
		}
	}
	return best
}

// repair removes units (the least gain per cost first) until the widths
// fit the limit.
func (w *widthProblem) repair(e []int, limit float64) []int {
	for w.cost(e) > limit*(1+1e-12) {
		bi, br := -1, 0.0
		c := w.cost(e)
		for g := range w.groups {
			if e[g] == 0 {
				continue
			}
			e[g]--
			dc := c - w.cost(e)
			e[g]++
			r := w.gains[g][e[g]-1] / max(dc, 1e-300)
			if bi < 0 || r < br {
				bi, br = g, r
			}
		}
		if bi < 0 {
			break
		}
		e[bi]--
	}
	return e
}

// fill adds units (the best gain per exact extra cost first) while they
// fit the limit.
func (w *widthProblem) fill(e []int, limit float64) []int {
	for {
		bi, br := -1, 0.0
		c := w.cost(e)
		for g := range w.groups {
			k := e[g]
			if k >= w.size[g] {
				continue
			}
			e[g]++
			dc := w.cost(e) - c
			e[g]--
			if c+dc > limit*(1+1e-12) {
				continue
			}
			r := w.gains[g][k] / max(dc, 1e-300)
			if bi < 0 || r > br {
				bi, br = g, r
			}
		}
		if bi < 0 {
			return e
		}
		e[bi]++
	}
}

// knapsack solves the multiple-choice knapsack exactly: extra units k_g
// per group (0..size, gains in order) maximising the gain with sum of
// cost[g] * k_g <= room. Costs are integer-valued (parameters,
// multiply-accumulates); when room is large they are scaled to at most
// 1<<14 steps, rounding the costs up (feasible, near-exact), and a group of
// more than 256 units is widened in steps of size/256 units.
func (w *widthProblem) knapsack(start []int, cost []float64, room float64) []int {
	ng := len(w.groups)
	if room <= 0 {
		return start
	}
	unit := 1.0
	if room > 1<<14 {
		unit = room / (1 << 14)
	}
	R := int(math.Floor(room/unit + 1e-9))
	cu := make([]int, ng)
	for g := range cu {
		cu[g] = int(math.Ceil(cost[g]/unit - 1e-9))
		if cu[g] < 1 {
			cu[g] = 1
		}
	}
	// best[r]: best gain with cost <= r over the groups so far
	negInf := math.Inf(-1)
	best := make([]float64, R+1)
	choice := make([][]int32, ng)
	for g := range ng {
		prefix := make([]float64, w.size[g]+1)
		for k := range w.size[g] {
			prefix[k+1] = prefix[k] + w.gains[g][k]
		}
		step := max(1, (w.size[g]+255)/256)
		next := make([]float64, R+1)
		ch := make([]int32, R+1)
		for r := 0; r <= R; r++ {
			next[r], ch[r] = negInf, 0
			for k := 0; k <= w.size[g] && k*cu[g] <= r; k = min(k+step, w.size[g]+1) {
				if k > w.size[g] {
					break
				}
				if v := best[r-k*cu[g]] + prefix[k]; v > next[r] {
					next[r], ch[r] = v, int32(k)
				}
			}
		}
		best, choice[g] = next, ch
	}
	out := make([]int, ng)
	r := R
	for g := ng - 1; g >= 0; g-- {
		k := int(choice[g][r])
		out[g] = k
		r -= k * cu[g]
	}
	return out
}

// budgetWidths formats the widths for a note, sorted by group.
func budgetWidths(w map[string]int) []string {
	var out []string
	for _, g := range slices.Sorted(maps.Keys(w)) {
		out = append(out, fmt.Sprintf("%s=%d", g, w[g]))
	}
	return out
}

// statsCount returns a module's sample count, without its matrices when
// the statistics can tell (stats.File, fisher/nn.LazyStats).
func statsCount(js permute.JointStats, module string) (int64, error) {
	if c, ok := js.(interface{ Count(string) (int64, error) }); ok {
		return c.Count(module)
	}
	st, err := js.Module(module)
	if err != nil {
		return 0, err
	}
	return st.Count, nil
}
