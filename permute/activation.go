package permute

import (
	"context"
	"fmt"
	"math"
	"strings"

	"github.com/wtool/wtool/fisher/stats"
	"github.com/wtool/wtool/permute/lap"
)

// JointStats gives the joint statistics of two models' layer inputs per
// module (a joint *stats.File, or Stats.Lookup of statistics in memory).
type JointStats = stats.Lookup

// StatsOf adapts in-memory statistics to JointStats.
func StatsOf(s *stats.Stats) JointStats { return s.Lookup() }

// Correlation returns the correlation matrix (dim x dim, row-major) between
// model A's and model B's input features of a joint module:
// corr[i][j] = (E[a_i b_j] - E[a_i] E[b_j]) / (std(a_i) std(b_j)), 0 where a
// feature is constant.
func Correlation(m *stats.Module) ([]float64, error) {
	cr, err := newCorrelator(m)
	if err != nil {
		return nil, err
	}
	d := m.Dim
	c := make([]float64, d*d)
	for i := range d {
		for j := range d {
			c[i*d+j] = cr.at(i, j)
		}
	}
	return c, nil
}

// correlator gives single entries of Correlation's matrix, for consumers
// that read a few of them (a convolution's patch pairs at the same kernel
// position) without the d x d matrix.
type correlator struct {
	m              *stats.Module
	n              float64
	ma, mb, sa, sb []float64
}

func newCorrelator(m *stats.Module) (*correlator, error) {
	if m.Cross == nil || m.GramB == nil {
		return nil, fmt.Errorf("module %q: joint statistics needed (cross Gram)", m.Name)
	}
	d, n := m.Dim, float64(m.Count)
	if n == 0 {
		return nil, fmt.Errorf("module %q: no samples", m.Name)
	}
	c := &correlator{m: m, n: n, ma: make([]float64, d), mb: make([]float64, d), sa: make([]float64, d), sb: make([]float64, d)}
	for i := range d {
		c.ma[i], c.mb[i] = m.Sum[i]/n, m.SumB[i]/n
		c.sa[i] = math.Sqrt(max(m.Gram[i*d+i]/n-c.ma[i]*c.ma[i], 0))
		c.sb[i] = math.Sqrt(max(m.GramB[i*d+i]/n-c.mb[i]*c.mb[i], 0))
	}
	return c, nil
}

// at returns the correlation of A's feature i with B's feature j.
func (c *correlator) at(i, j int) float64 {
	den := c.sa[i] * c.sb[j]
	if den > 1e-12*(1+math.Abs(c.ma[i]*c.mb[j])) {
		return (c.m.Cross[i*c.m.Dim+j]/c.n - c.ma[i]*c.mb[j]) / den
	}
	return 0
}

// GroupCorrelation describes how well activation matching aligned a group.
type GroupCorrelation struct {
	Group   string
	Modules []string // the modules whose inputs gave the features
	Before  float64  // mean correlation of unit i with unit i
	After   float64  // mean correlation of unit i with its match
	// Scores, with ActivationOptions.Scores, is the matrix the assignment
	// maximised (units x units, row-major; row: model A's unit, column:
	// model B's): the mean correlation of A's unit i with B's unit j (of a
	// head group: per pair of heads, with the best assignment of the
	// features inside them). Perms[group][i] is the column matched to row
	// i.
	Scores []float64 `json:",omitempty"`
}

// ActivationMatching aligns model B to model A from joint statistics of
// their activations on the same data: for each group, a score of pairing
// A's unit i with B's unit j (their correlation), and one exact assignment
// per group maximises it. No coordinate descent is needed: features do not
// depend on other groups' permutations.
//
// For a spec BuildSpec made (every built-in spec of a known family), the
// scores pool every statistics entry of the group's space, and heads are
// matched as heads: see [MatchActivations]. For any other spec, the
// features are the inputs of every module whose weight (a tensor
// "<module>.weight") has the group on its input axis (axis 1), the score is
// their correlation averaged over those modules (over all features of a
// unit for blocks and conv patches).
func ActivationMatching(ctx context.Context, s *Spec, js JointStats) (Perms, []GroupCorrelation, error) {
	return MatchActivations(ctx, s, js, ActivationOptions{})
}

// activationByModules is activation matching from module inputs only.
func activationByModules(ctx context.Context, s *Spec, js JointStats, opts ActivationOptions) (Perms, []GroupCorrelation, error) {
	p := Identity(s)
	var report []GroupCorrelation
	for _, g := range s.GroupNames() {
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		n := s.Groups[g]
		cost := make([]float64, n*n)
		rep := GroupCorrelation{Group: g}
		terms := 0
		for _, u := range s.Uses(g) {
			mod, ok := strings.CutSuffix(u.Tensor, ".weight")
			if !ok || u.Axis != 1 || !js.Has(mod) {
				continue
			}
			m, err := js.Module(mod)
			if err != nil {
				return nil, nil, err
			}
			per := m.Dim / n // input features per unit (block, times the conv patch)
			if per*n != m.Dim {
				return nil, nil, fmt.Errorf("group %q: module %q has %d input features, not a multiple of %d units", g, mod, m.Dim, n)
			}
			corr, err := Correlation(m)
			if err != nil {
				return nil, nil, err
			}
			for i := range n {
				for j := range n {
					var c float64
					for k := range per {
						c += corr[(i*per+k)*m.Dim+j*per+k]
					}
					cost[i*n+j] += c / float64(per)
				}
			}
			rep.Modules = append(rep.Modules, mod)
			terms++
		}
		if terms == 0 {
			return nil, nil, fmt.Errorf("group %q: no module in the statistics takes its units as input; activation matching cannot align it (use weight matching)", g)
		}
		var sol lap.Solver
		asg, err := sol.SolveContext(ctx, cost, n, n, true)
		if err != nil {
			return nil, nil, fmt.Errorf("group %q: %w", g, err)
		}
		copy(p[g], asg.RowToCol)
		for i := range n {
			rep.Before += cost[i*n+i]
			rep.After += cost[i*n+asg.RowToCol[i]]
		}
		rep.Before /= float64(n * terms)
		rep.After /= float64(n * terms)
		if opts.Scores {
			for i := range cost {
				cost[i] /= float64(terms)
			}
			rep.Scores = cost
		}
		report = append(report, rep)
	}
	return p, report, nil
}
