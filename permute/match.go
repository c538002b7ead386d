package permute

import (
	"context"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/wtool/wtool/permute/lap"
)

// MatchOptions control weight matching.
type MatchOptions struct {
	// Seed orders the groups of each sweep (a seeded shuffle).
	Seed uint64
	// MaxSweeps bounds the coordinate descent (default 100).
	MaxSweeps int
	// Tol is the improvement of the objective below which a sweep counts as
	// converged (0 means 1e-12; a negative Tol runs all MaxSweeps sweeps,
	// for benchmarks).
	Tol float64
	// Init, if set, is the starting permutation (default identity).
	Init Perms
	// Restarts runs the descent this many times with seeds Seed, Seed+1,
	// ... and keeps the result closest to A (default 1). Coordinate descent
	// finds a local optimum that depends on the group order; a few restarts
	// make the result less sensitive to the seed, at a cost proportional to
	// their number ([AutoRestarts] chooses by the model's size).
	Restarts int
	// NoSkip solves every group in every sweep. By default a group is
	// skipped when none of the permutations its cost matrix depends on
	// (those of the groups sharing a tensor with it) changed since its last
	// solve: its solve would return the same assignment. The results are
	// the same either way; NoSkip is for tests and measurements.
	NoSkip bool
	// CacheBytes is the cache of each model that Align and MatchModels open
	// (see [NewCheckpointSource]): bytes of its tensors, in the file's
	// dtype, kept mapped between uses (0: DefaultCacheBytes; negative:
	// none). It does not change the results.
	CacheBytes int64
	// Progress, if set, is called after each sweep with the sweep number and
	// the objective sum <A, pi(B)> (computed by one more pass over the
	// models).
	Progress func(sweep int, objective float64)
	// OnGroup, if set, is called after each group of a sweep is solved or
	// skipped (not necessarily in the sweep's order: a skip can be reported
	// while the previous group's assignment is still being solved).
	OnGroup func(GroupEvent)
	// OnSweep, if set, is called after each sweep.
	OnSweep func(SweepEvent)
}

// SweepEvent summarises one sweep of the coordinate descent.
type SweepEvent struct {
	Restart, Sweep  int // 1-based
	Solved, Skipped int // groups solved and skipped
	Changed         int // groups whose permutation changed
	// Gain is the increase of the objective sum <A, pi(B)> over the sweep,
	// from the cost matrices (float32 sums).
	Gain float64
}

// GroupEvent reports one step of the coordinate descent.
type GroupEvent struct {
	Restart, Sweep int    // 1-based
	Index, Groups  int    // the group is the Index-th (1-based) of Groups in this sweep
	Group          string // its name
	Units          int    // its size
	Skipped        bool   // no permutation it depends on had changed
	Changed        bool   // its permutation changed
	Gain           float64
}

// MatchStats says where the time of a matching went.
type MatchStats struct {
	// CostTime is the time spent computing cost matrices (decoding blocks
	// and multiplying them), GEMMTime the part of it in the GEMM, which
	// did GEMMFLOPs floating-point operations.
	CostTime, GEMMTime time.Duration
	GEMMFLOPs          float64
	// BF16FLOPs is the part of GEMMFLOPs done by the bf16 kernel (bf16
	// checkpoints on CPUs with AVX512-BF16), twice as fast as float32.
	BF16FLOPs float64
	// SolveTime is the time spent in assignment solves; they run beside
	// the next group's cost computation when the two groups share no
	// tensor, so CostTime + SolveTime can exceed the elapsed time.
	SolveTime time.Duration
	// PassTime is the time of the passes over whole models (distances,
	// objectives).
	PassTime time.Duration
}

// MatchResult is the outcome of a matching.
type MatchResult struct {
	Perms  Perms
	Sweeps int
	// Solved and Skipped count the group solves done and skipped over all
	// sweeps (of the restart kept).
	Solved, Skipped int
	// DistanceBefore and DistanceAfter are the L2 distances ||A - B|| and
	// ||A - pi(B)|| over the tensors the spec permutes.
	DistanceBefore, DistanceAfter float64
	// Stats covers all restarts.
	Stats MatchStats
}

// permuted returns the spec's tensors that have at least one permuted axis
// and count in weight matching's objective, sorted.
func (s *Spec) permuted() []string {
	var out []string
	for n, axes := range s.Tensors {
		if len(axes) > 0 && !s.statistics[n] {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// WeightMatching finds permutations pi of model B's units that maximise
// sum over tensors <A, pi(B)>, i.e. minimise ||A - pi(B)||^2 (Ainsworth et
// al., Git Re-Basin): coordinate descent visiting the groups in a seeded
// random order; for each group the cost matrix of every tensor axis it acts
// on, with all other permutations applied, is summed and an exact linear
// assignment problem solved. It stops when a sweep improves the objective by
// less than Tol, or after MaxSweeps sweeps. A and B must hold every tensor
// the spec permutes, with the spec's shapes, and finite values.
//
// Memory does not depend on the models' size: tensors are read a block at
// a time from the sources (a [CheckpointSource] in the file's dtype), and
// the largest allocation is the float32 cost matrix of the largest group
// (two of them: the next group's matrix is computed while the assignment of
// the previous one is solved, when the two share no tensor).
func WeightMatching(ctx context.Context, s *Spec, a, b Source, opts MatchOptions) (*MatchResult, error) {
	m := newMatcher(s)
	A := side{members: []member{{src: asRaw(a), label: "model A"}}}
	B := member{src: asRaw(b), label: "model B"}
	return m.match(ctx, A, B, opts, true)
}

// matcher runs weight matching on one spec.
type matcher struct {
	spec *Spec
	e    *engine
	// units are the steps of the coordinate descent: every group that is
	// not the features of heads (sorted); members[u] is the unit's group
	// followed by the feature groups of its heads (Within), solved with it.
	units   []string
	members map[string][]string
	// deps are, per unit, the groups whose permutations its costs depend on
	deps        map[string][]string
	costs       [2][]float32 // cost matrices (two: pipelining)
	clusterBufs [][]float32  // cost matrices of a head cluster
	// noPipeline solves each group before computing the next one's cost
	// (tests).
	noPipeline bool
}

func newMatcher(s *Spec) *matcher {
	m := &matcher{spec: s, e: newEngine(s), members: map[string][]string{}, deps: map[string][]string{}}
	deps := s.dependencies()
	for _, g := range s.GroupNames() {
		if _, feat := s.Within[g]; feat {
			continue
		}
		mem := append([]string{g}, s.HeadGroups(g)...)
		set := map[string]bool{}
		for _, x := range mem {
			for _, d := range deps[x] {
				set[d] = true
			}
		}
		m.units = append(m.units, g)
		m.members[g] = mem
		m.deps[g] = slices.Sorted(maps.Keys(set))
	}
	return m
}

// dependencies returns, for every group, the groups whose permutations its
// cost matrix depends on: the other groups acting on the tensors it acts
// on, and itself when it acts on two axes of one tensor.
func (s *Spec) dependencies() map[string][]string {
	out := map[string][]string{}
	for _, g := range s.GroupNames() {
		set := map[string]bool{}
		for _, u := range s.Uses(g) {
			for ax, a := range s.Tensors[u.Tensor] {
				if ax == u.Axis {
					continue
				}
				for _, h := range groupsOf(a) {
					if h != "" {
						set[h] = true
					}
				}
			}
		}
		out[g] = slices.Sorted(maps.Keys(set))
	}
	return out
}

// conflict reports whether two units share a tensor: then one's solve
// changes the other's cost, and they must run in order.
func (m *matcher) conflict(g, h string) bool {
	for _, x := range m.members[h] {
		if slices.Contains(m.deps[g], x) {
			return true
		}
	}
	for _, x := range m.members[g] {
		if slices.Contains(m.deps[h], x) {
			return true
		}
	}
	return false
}

// match runs the descent with restarts; distances are computed when
// wanted (and always when restarts must be compared).
func (m *matcher) match(ctx context.Context, a side, b member, opts MatchOptions, distances bool) (*MatchResult, error) {
	if opts.MaxSweeps <= 0 {
		opts.MaxSweeps = 100
	}
	if opts.Tol == 0 {
		opts.Tol = 1e-12
	}
	init := Identity(m.spec)
	if opts.Init != nil {
		if err := opts.Init.Check(m.spec); err != nil {
			return nil, err
		}
		init = opts.Init.Clone()
	}
	restarts := max(opts.Restarts, 1)
	var before float64
	if distances {
		d, err := m.distance(ctx, a, b, init)
		if err != nil {
			return nil, err
		}
		before = d
	}
	var best *MatchResult
	for r := range restarts {
		p := init.Clone()
		res := &MatchResult{Perms: p, DistanceBefore: before}
		if err := m.descend(ctx, a, b, p, opts.Seed+uint64(r), r+1, opts, res); err != nil {
			return nil, err
		}
		if distances || restarts > 1 {
			d, err := m.distance(ctx, a, b, p)
			if err != nil {
				return nil, err
			}
			res.DistanceAfter = d
		}
		if best == nil || res.DistanceAfter < best.DistanceAfter {
			best = res
		}
	}
	best.Stats = m.e.stats
	return best, nil
}

// pending is a group whose assignment is being solved.
type pending struct {
	g     string
	n     int
	cost  []float32
	index int
	done  chan solved
}

type solved struct {
	asg  lap.Assignment
	err  error
	time time.Duration
}

// descend runs the coordinate descent from p (updated in place).
func (m *matcher) descend(ctx context.Context, a side, b member, p Perms, seed uint64, restart int, opts MatchOptions, res *MatchResult) error {
	s := m.spec
	groups := m.units
	r := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	solvers := map[string]*lap.Solver{}
	version := map[string]int{}         // number of changes of each group's permutation
	seen := map[string]map[string]int{} // versions of its dependencies at a group's last solve
	maxN := 0
	for _, n := range s.Groups {
		maxN = max(maxN, n)
	}
	for sweep := 1; sweep <= opts.MaxSweeps; sweep++ {
		res.Sweeps = sweep
		progress := 0.0
		order := slices.Clone(groups)
		r.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		var inflight *pending
		sw := SweepEvent{Restart: restart, Sweep: sweep}
		// finish waits for the inflight solve and applies it.
		finish := func() error {
			if inflight == nil {
				return nil
			}
			f := inflight
			inflight = nil
			out := <-f.done
			m.e.stats.SolveTime += out.time
			if out.err != nil {
				return fmt.Errorf("group %q: %w", f.g, out.err)
			}
			n := f.n
			old := 0.0
			for i, j := range p[f.g] {
				old += float64(f.cost[i*n+j])
			}
			// The costs are float32 sums: an "improvement" far below
			// their rounding is noise (ties), not progress.
			thr := max(opts.Tol, 1e-12, 1e-9*math.Abs(old))
			ev := GroupEvent{Restart: restart, Sweep: sweep, Index: f.index, Groups: len(order), Group: f.g, Units: n}
			if gain := out.asg.Cost - old; gain > thr {
				progress += gain
				copy(p[f.g], out.asg.RowToCol)
				version[f.g]++
				ev.Changed, ev.Gain = true, gain
				sw.Changed++
			}
			if opts.OnGroup != nil {
				opts.OnGroup(ev)
			}
			return nil
		}
		for k, g := range order {
			if err := ctx.Err(); err != nil {
				finish()
				return err
			}
			if inflight != nil && (m.noPipeline || m.conflict(inflight.g, g)) {
				if err := finish(); err != nil {
					return err
				}
			}
			if !opts.NoSkip && m.unchanged(g, version, seen) {
				res.Skipped++
				sw.Skipped++
				if opts.OnGroup != nil {
					opts.OnGroup(GroupEvent{Restart: restart, Sweep: sweep, Index: k + 1, Groups: len(order), Group: g, Units: s.Groups[g], Skipped: true})
				}
				continue
			}
			if len(m.members[g]) > 1 {
				// heads with their features: solved at once, in order
				if err := finish(); err != nil {
					return err
				}
				v := map[string]int{}
				for _, d := range m.deps[g] {
					v[d] = version[d]
				}
				seen[g] = v
				gain, changed, err := m.solveCluster(ctx, g, a, b, p, opts.Tol)
				if err != nil {
					return err
				}
				res.Solved++
				sw.Solved++
				ev := GroupEvent{Restart: restart, Sweep: sweep, Index: k + 1, Groups: len(order), Group: g, Units: s.Groups[g]}
				if len(changed) > 0 {
					progress += gain
					for _, c := range changed {
						version[c]++
					}
					ev.Changed, ev.Gain = true, gain
					sw.Changed++
				}
				if opts.OnGroup != nil {
					opts.OnGroup(ev)
				}
				continue
			}
			n := s.Groups[g]
			buf := 0
			if inflight != nil && len(m.costs[0]) > 0 && &inflight.cost[0] == &m.costs[0][0] {
				buf = 1
			}
			if cap(m.costs[buf]) < maxN*maxN {
				m.costs[buf] = make([]float32, maxN*maxN)
			}
			cost := m.costs[buf][:n*n]
			if err := m.e.cost(ctx, g, a, b.withPerm(p), cost); err != nil {
				finish()
				return fmt.Errorf("group %q: %w", g, err)
			}
			if err := m.checkCost(g, cost); err != nil {
				finish()
				return err
			}
			// the dependencies' versions this solve sees
			v := map[string]int{}
			for _, d := range m.deps[g] {
				v[d] = version[d]
			}
			seen[g] = v
			if err := finish(); err != nil {
				return err
			}
			sol := solvers[g]
			if sol == nil {
				sol = &lap.Solver{WarmStart: true}
				solvers[g] = sol
			}
			res.Solved++
			sw.Solved++
			f := &pending{g: g, n: n, cost: cost, index: k + 1, done: make(chan solved, 1)}
			go func() {
				cpus := m.e.cpus
				cpus <- struct{}{} // a core, taken from the next cost matrix's GEMM
				defer func() { <-cpus }()
				t := time.Now()
				asg, err := sol.SolveFloat32(ctx, cost, n, n, true)
				f.done <- solved{asg, err, time.Since(t)}
			}()
			inflight = f
		}
		if err := finish(); err != nil {
			return err
		}
		if opts.OnSweep != nil {
			sw.Gain = progress
			opts.OnSweep(sw)
		}
		if opts.Progress != nil {
			obj, err := m.objective(ctx, a, b, p)
			if err != nil {
				return err
			}
			opts.Progress(sweep, obj)
		}
		if progress <= opts.Tol {
			break
		}
	}
	return nil
}

// unchanged reports whether group g was solved before and none of the
// permutations its cost depends on changed since.
func (m *matcher) unchanged(g string, version map[string]int, seen map[string]map[string]int) bool {
	v, ok := seen[g]
	if !ok {
		return false
	}
	for _, d := range m.deps[g] {
		if v[d] != version[d] {
			return false
		}
	}
	return true
}

// checkCost refuses a cost matrix that is not finite: the inputs were
// checked, so the float32 products overflowed.
func (m *matcher) checkCost(g string, c []float32) error {
	for k, x := range c {
		if x-x != 0 {
			var ts []string
			for _, u := range m.spec.Uses(g) {
				ts = append(ts, u.Tensor)
			}
			return fmt.Errorf("group %q: a matching cost (entry %d) overflows float32: the weights of %s are too large for weight matching", g, k, joinNames(ts))
		}
	}
	return nil
}

func joinNames(ts []string) string {
	ts = slices.Compact(ts)
	if len(ts) > 4 {
		return fmt.Sprintf("%q, %q, %q and %d more tensors", ts[0], ts[1], ts[2], len(ts)-3)
	}
	out := ""
	for i, t := range ts {
		if i > 0 {
			out += ", "
		}
		out += fmt.Sprintf("%q", t)
	}
	return out
}

func (mb member) withPerm(p Perms) member {
	mb.perm = p
	return mb
}

// distance returns ||a - pi(b)|| over the spec's permuted tensors, reading
// every tensor once (and checking that its values are finite).
func (m *matcher) distance(ctx context.Context, a side, b member, p Perms) (float64, error) {
	sums := make([]float64, m.e.workers)
	err := m.e.streamPass(ctx, []side{a, {members: []member{b.withPerm(p)}}}, func(w int, v [][]float32) {
		d := 0.0
		for i, x := range v[0] {
			e := float64(x) - float64(v[1][i])
			d += e * e
		}
		sums[w] += d
	})
	total := 0.0
	for _, s := range sums {
		total += s
	}
	return math.Sqrt(total), err
}

// objective returns sum <a, pi(b)> over the spec's permuted tensors.
func (m *matcher) objective(ctx context.Context, a side, b member, p Perms) (float64, error) {
	sums := make([]float64, m.e.workers)
	err := m.e.streamPass(ctx, []side{a, {members: []member{b.withPerm(p)}}}, func(w int, v [][]float32) {
		d := 0.0
		for i, x := range v[0] {
			d += float64(x) * float64(v[1][i])
		}
		sums[w] += d
	})
	total := 0.0
	for _, s := range sums {
		total += s
	}
	return total, err
}

// Objective returns sum over the spec's permuted tensors of <A, pi(B)>.
func Objective(s *Spec, a, b Source, p Perms) (float64, error) {
	m := newMatcher(s)
	return m.objective(context.Background(), side{members: []member{{src: asRaw(a), label: "model A"}}}, member{src: asRaw(b), label: "model B"}, p)
}

// Distance returns ||A - pi(B)|| over the spec's permuted tensors.
func Distance(s *Spec, a, b Source, p Perms) (float64, error) {
	m := newMatcher(s)
	return m.distance(context.Background(), side{members: []member{{src: asRaw(a), label: "model A"}}}, member{src: asRaw(b), label: "model B"}, p)
}

// SweepFLOPs returns the floating-point operations of the cost matrices of
// one full sweep of weight matching between two models (2 n K per unit
// pair summed over the groups' tensor axes: the GEMMs); skipped groups
// make a sweep cheaper.
func SweepFLOPs(s *Spec, shapes map[string][]int64) float64 {
	total := 0.0
	for _, g := range s.GroupNames() {
		n := float64(s.Groups[g])
		for _, u := range s.costUses(g) {
			e := 1.0
			for _, d := range shapes[u.Tensor] {
				e *= float64(d)
			}
			total += 2 * n * e
		}
	}
	return total
}

// AutoRestarts is the number of weight matching restarts wtool uses when
// none is given: 3 when one sweep costs less than 1e12 floating-point
// operations (a few seconds; MLPs, ResNets, models up to about 100M
// parameters), 1 above, where each restart costs minutes to hours (an 8B
// model's sweep is about 2e14 operations) and the result depends little on
// the seed.
func AutoRestarts(s *Spec, shapes map[string][]int64) int {
	if SweepFLOPs(s, shapes) < 1e12 {
		return 3
	}
	return 1
}
