package permute

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/wtool/wtool/permute/lap"
)

// Attention heads are matched as heads: a group of heads H and the groups of
// their features (Within: query/key features, value/output features) form a
// cluster solved at once. With the costs of the head group itself (n x n,
// from the tensors it permutes in whole-head blocks) and of every feature
// group (nD x nD), the best pairing of A's head i with B's head j is
//
//	C[i][j] = own[i][j] + sum over feature groups w of LAP(w's D x D block (i, j))
//
// (each feature group permutes the features inside the pair independently),
// and an assignment over heads on C gives the head permutation. This is the
// exact optimum of the cluster's objective: it separates over head pairs once
// the head permutation is fixed.

// headProblem is one cluster's costs.
type headProblem[T float32 | float64] struct {
	n     int   // heads
	own   []T   // n x n, nil if the head group permutes no tensor itself
	dims  []int // per feature group, features per head
	feats [][]T // per feature group, (n*dim)^2
	// fixed, if not nil, is a head permutation to keep: only the features
	// inside each pair of heads are assigned (a cluster whose heads were
	// decided elsewhere).
	fixed []int
}

// headSolution is the optimum of a headProblem.
type headSolution struct {
	heads []int   // heads[i]: the head of B matched to head i of A
	feats [][]int // per feature group, the element permutation (whole heads moved)
	total float64 // the objective: sum over matched pairs of C
}

// solveHeads solves a cluster exactly: n^2 assignments of D x D feature
// blocks per feature group, then one of n x n heads.
func solveHeads[T float32 | float64](ctx context.Context, hp headProblem[T]) (headSolution, error) {
	n := hp.n
	c := make([]float64, n*n)
	if hp.own != nil {
		for k, v := range hp.own {
			c[k] = float64(v)
		}
	}
	// inner[w][i*n+j] is the within-head assignment of pair (i, j)
	inner := make([][][]int, len(hp.feats))
	var sol lap.Solver
	for w, f := range hp.feats {
		d := hp.dims[w]
		nd := n * d
		inner[w] = make([][]int, n*n)
		blk := make([]float64, d*d)
		for i := range n {
			if err := ctx.Err(); err != nil {
				return headSolution{}, err
			}
			for j := range n {
				if hp.fixed != nil && hp.fixed[i] != j {
					continue
				}
				for x := range d {
					row := f[(i*d+x)*nd+j*d : (i*d+x)*nd+j*d+d]
					for y, v := range row {
						blk[x*d+y] = float64(v)
					}
				}
				asg, err := sol.SolveContext(ctx, blk, d, d, true)
				if err != nil {
					return headSolution{}, err
				}
				inner[w][i*n+j] = asg.RowToCol
				c[i*n+j] += asg.Cost
			}
		}
	}
	out := headSolution{heads: make([]int, n)}
	if hp.fixed != nil {
		copy(out.heads, hp.fixed)
	} else {
		asg, err := sol.SolveContext(ctx, c, n, n, true)
		if err != nil {
			return headSolution{}, err
		}
		copy(out.heads, asg.RowToCol)
	}
	for i, j := range out.heads {
		out.total += c[i*n+j]
	}
	for w := range hp.feats {
		d := hp.dims[w]
		v := make([]int, n*d)
		for i, j := range out.heads {
			for x, y := range inner[w][i*n+j] {
				v[i*d+x] = j*d + y
			}
		}
		out.feats = append(out.feats, v)
	}
	return out, nil
}

// cluster returns the feature groups of a head group (nil for a plain
// group).
func (m *matcher) cluster(g string) []string { return m.members[g][1:] }

// solveCluster runs one step of the coordinate descent for a cluster (a
// head group and its feature groups): the cost matrices of all of them
// with every other permutation applied, then the exact joint optimum. It
// reports the gain of the objective and whether any permutation changed
// (p is updated in place when the gain is above thr).
func (m *matcher) solveCluster(ctx context.Context, h string, a side, b member, p Perms, tol float64) (float64, []string, error) {
	s := m.spec
	n := s.Groups[h]
	feats := m.cluster(h)
	bufs := len(feats) + 1
	for len(m.clusterBufs) < bufs {
		m.clusterBufs = append(m.clusterBufs, nil)
	}
	hp := headProblem[float32]{n: n}
	old := 0.0
	bp := b.withPerm(p)
	if len(s.costUses(h)) > 0 {
		m.clusterBufs[0] = growF32(m.clusterBufs[0], n*n)
		hp.own = m.clusterBufs[0]
		if err := m.e.cost(ctx, h, a, bp, hp.own); err != nil {
			return 0, nil, fmt.Errorf("group %q: %w", h, err)
		}
		if err := m.checkCost(h, hp.own); err != nil {
			return 0, nil, err
		}
		for i, j := range p[h] {
			old += float64(hp.own[i*n+j])
		}
	}
	for k, w := range feats {
		nw := s.Groups[w]
		m.clusterBufs[k+1] = growF32(m.clusterBufs[k+1], nw*nw)
		c := m.clusterBufs[k+1]
		if err := m.e.cost(ctx, w, a, bp, c); err != nil {
			return 0, nil, fmt.Errorf("group %q: %w", w, err)
		}
		if err := m.checkCost(w, c); err != nil {
			return 0, nil, err
		}
		for i, j := range p[w] {
			old += float64(c[i*nw+j])
		}
		hp.dims = append(hp.dims, s.Within[w].Dim)
		hp.feats = append(hp.feats, c)
	}
	t := time.Now()
	sol, err := solveHeads(ctx, hp)
	m.e.stats.SolveTime += time.Since(t)
	if err != nil {
		return 0, nil, fmt.Errorf("group %q: %w", h, err)
	}
	thr := max(tol, 1e-12, 1e-9*math.Abs(old))
	gain := sol.total - old
	if gain <= thr {
		return 0, nil, nil
	}
	var changed []string
	if !equalInts(p[h], sol.heads) {
		copy(p[h], sol.heads)
		changed = append(changed, h)
	}
	for k, w := range feats {
		if !equalInts(p[w], sol.feats[k]) {
			copy(p[w], sol.feats[k])
			changed = append(changed, w)
		}
	}
	return gain, changed, nil
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
