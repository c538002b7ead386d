package permute

// The weight matching and MergeMany of wtool before they streamed (whole
// float32 models in memory, one GEMM per tensor, no skipping): the
// reference that the streaming implementation must reproduce.

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"

	"github.com/wtool/wtool/permute/lap"
)

// WeightMatching finds permutations pi of model B's units that maximise
// sum over tensors <A, pi(B)>, i.e. minimise ||A - pi(B)||^2 (Ainsworth et
// al., Git Re-Basin): coordinate descent visiting the groups in a seeded
// random order; for each group the cost matrix of every tensor axis it acts
// on, with all other permutations applied, is summed and an exact linear
// assignment problem solved. It stops when a sweep improves the objective by
// less than Tol, or after MaxSweeps sweeps. A and B must hold every tensor
// the spec permutes, with the spec's shapes.
func refWeightMatching(ctx context.Context, s *Spec, a, b Source, opts MatchOptions) (*MatchResult, error) {
	if opts.Restarts > 1 {
		var best *MatchResult
		for r := range opts.Restarts {
			o := opts
			o.Restarts, o.Seed = 1, opts.Seed+uint64(r)
			res, err := refWeightMatching(ctx, s, a, b, o)
			if err != nil {
				return nil, err
			}
			if best == nil || res.DistanceAfter < best.DistanceAfter {
				best = res
			}
		}
		return best, nil
	}
	if opts.MaxSweeps <= 0 {
		opts.MaxSweeps = 100
	}
	if opts.Tol == 0 {
		opts.Tol = 1e-12
	}
	p := Identity(s)
	if opts.Init != nil {
		if err := opts.Init.Check(s); err != nil {
			return nil, err
		}
		p = opts.Init.Clone()
	}
	res := &MatchResult{}
	var err error
	if res.DistanceBefore, err = refDistance(s, a, b, p); err != nil {
		return nil, err
	}
	groups := s.GroupNames()
	r := rand.New(rand.NewPCG(opts.Seed, 0x9e3779b97f4a7c15))
	solvers := map[string]*lap.Solver{}
	var cost []float64
	var ws refWorkspace
	for sweep := 1; sweep <= opts.MaxSweeps; sweep++ {
		res.Sweeps = sweep
		progress := 0.0
		order := slices.Clone(groups)
		r.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for _, g := range order {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			n := s.Groups[g]
			cost = slices.Grow(cost[:0], n*n)[:n*n]
			if err := ws.refCostMatrix(s, g, a, b, p, cost); err != nil {
				return nil, err
			}
			sol := solvers[g]
			if sol == nil {
				sol = &lap.Solver{WarmStart: true}
				solvers[g] = sol
			}
			asg, err := sol.Solve(cost, n, n, true)
			if err != nil {
				return nil, fmt.Errorf("group %q: %w", g, err)
			}
			old := 0.0
			for i, j := range p[g] {
				old += cost[i*n+j]
			}
			if asg.Cost > old+max(opts.Tol, 1e-12) {
				progress += asg.Cost - old
				copy(p[g], asg.RowToCol)
			}
		}
		if opts.Progress != nil {
			obj, err := refObjective(s, a, b, p)
			if err != nil {
				return nil, err
			}
			opts.Progress(sweep, obj)
		}
		if progress <= opts.Tol {
			break
		}
	}
	res.Perms = p
	if res.DistanceAfter, err = refDistance(s, a, b, p); err != nil {
		return nil, err
	}
	return res, nil
}

// refWorkspace holds buffers reused across cost matrix computations.
type refWorkspace struct {
	bp, am, bm []float32
	tmp        []float32
}

// costMatrix fills cost (n x n, row-major) for group g: the sum over every
// tensor axis g acts on of A's units times B's units (all other permutations
// applied to B), cost[i][j] = <unit i of A, unit j of B>.
func (ws *refWorkspace) refCostMatrix(s *Spec, g string, a, b Source, p Perms, cost []float64) error {
	n := s.Groups[g]
	clear(cost)
	ws.tmp = slices.Grow(ws.tmp[:0], n*n)[:n*n]
	for _, u := range s.Uses(g) {
		av, shape, err := a.Float32(u.Tensor)
		if err != nil {
			return fmt.Errorf("model A: %w", err)
		}
		bv, bshape, err := b.Float32(u.Tensor)
		if err != nil {
			return fmt.Errorf("model B: %w", err)
		}
		if !slices.Equal(shape, bshape) {
			return fmt.Errorf("tensor %q: shape %v in model A, %v in model B", u.Tensor, shape, bshape)
		}
		idx, _, err := s.indices(u.Tensor, shape, p)
		if err != nil {
			return err
		}
		idx[u.Axis] = nil
		bperm := bv
		if slices.ContainsFunc(idx, func(ix []int) bool { return ix != nil }) {
			ws.bp = slices.Grow(ws.bp[:0], len(bv))[:len(bv)]
			refGather32(ws.bp, bv, shape, idx)
			bperm = ws.bp
		}
		ws.am = slices.Grow(ws.am[:0], len(av))[:len(av)]
		ws.bm = slices.Grow(ws.bm[:0], len(av))[:len(av)]
		refMoveAxisFront(ws.am, av, shape, u.Axis)
		refMoveAxisFront(ws.bm, bperm, shape, u.Axis)
		// the rows of the axis a unit owns, one after the other
		rest := len(av) / int(shape[u.Axis])
		m := u.PerUnit()
		pos := u.Positions(n)
		k := m * rest
		if k == 0 {
			continue
		}
		am, bm := make([]float32, n*k), make([]float32, n*k)
		for i := range n {
			for e := range m {
				x := pos[i*m+e]
				copy(am[i*k+e*rest:i*k+(e+1)*rest], ws.am[x*rest:(x+1)*rest])
				copy(bm[i*k+e*rest:i*k+(e+1)*rest], ws.bm[x*rest:(x+1)*rest])
			}
		}
		blas32.Gemm(blas.NoTrans, blas.Trans, 1,
			blas32.General{Rows: n, Cols: k, Stride: k, Data: am},
			blas32.General{Rows: n, Cols: k, Stride: k, Data: bm},
			0, blas32.General{Rows: n, Cols: n, Stride: n, Data: ws.tmp})
		for i, v := range ws.tmp {
			cost[i] += float64(v)
		}
	}
	return nil
}

// gather32 is gather for float32 data.
func refGather32(dst, src []float32, shape []int64, idx [][]int) {
	rank := len(shape)
	strides := make([]int, rank)
	s := 1
	for i := rank - 1; i >= 0; i-- {
		strides[i] = s
		s *= int(shape[i])
	}
	tail := rank
	for tail > 0 && idx[tail-1] == nil {
		tail--
	}
	run := 1
	for i := tail; i < rank; i++ {
		run *= int(shape[i])
	}
	var rec func(axis, dOff, sOff int)
	rec = func(axis, dOff, sOff int) {
		if axis == tail {
			copy(dst[dOff:dOff+run], src[sOff:sOff+run])
			return
		}
		for i := range int(shape[axis]) {
			j := i
			if idx[axis] != nil {
				j = idx[axis][i]
			}
			rec(axis+1, dOff+i*strides[axis], sOff+j*strides[axis])
		}
	}
	rec(0, 0, 0)
}

// moveAxisFront writes src (C order, shape) into dst with axis moved to the
// front and the other axes in their order.
func refMoveAxisFront(dst, src []float32, shape []int64, axis int) {
	outer := 1
	for i := range axis {
		outer *= int(shape[i])
	}
	n := int(shape[axis])
	inner := 1
	for i := axis + 1; i < len(shape); i++ {
		inner *= int(shape[i])
	}
	// src is (outer, n, inner); dst is (n, outer, inner)
	for o := range outer {
		for i := range n {
			copy(dst[(i*outer+o)*inner:(i*outer+o+1)*inner], src[(o*n+i)*inner:(o*n+i+1)*inner])
		}
	}
}

// Objective returns sum over the spec's permuted tensors of <A, pi(B)>.
func refObjective(s *Spec, a, b Source, p Perms) (float64, error) {
	var dot float64
	err := refEachPair(s, a, b, p, func(av, bp []float32) {
		for i, x := range av {
			dot += float64(x) * float64(bp[i])
		}
	})
	return dot, err
}

// Distance returns ||A - pi(B)|| over the spec's permuted tensors.
func refDistance(s *Spec, a, b Source, p Perms) (float64, error) {
	var d float64
	err := refEachPair(s, a, b, p, func(av, bp []float32) {
		for i, x := range av {
			e := float64(x) - float64(bp[i])
			d += e * e
		}
	})
	return math.Sqrt(d), err
}

func refEachPair(s *Spec, a, b Source, p Perms, f func(av, bp []float32)) error {
	var buf []float32
	for _, t := range s.permuted() {
		av, shape, err := a.Float32(t)
		if err != nil {
			return fmt.Errorf("model A: %w", err)
		}
		bv, bshape, err := b.Float32(t)
		if err != nil {
			return fmt.Errorf("model B: %w", err)
		}
		if !slices.Equal(shape, bshape) {
			return fmt.Errorf("tensor %q: shape %v in model A, %v in model B", t, shape, bshape)
		}
		idx, _, err := s.indices(t, shape, p)
		if err != nil {
			return err
		}
		buf = slices.Grow(buf[:0], len(bv))[:len(bv)]
		refGather32(buf, bv, shape, idx)
		f(av, buf)
	}
	return nil
}

// MergeMany aligns several models to each other (Ainsworth et al.'s
// MergeMany): starting from identities, it repeatedly matches each model, in
// a seeded random order, to the mean of the others (all permuted) by weight
// matching, until a round changes no permutation or the total squared
// distance of the models to their mean stops improving. It returns one Perms
// per model; averaging the permuted models gives the merge. All models are
// held in memory.
func refMergeMany(ctx context.Context, s *Spec, models []MemorySource, opts MatchOptions) ([]Perms, error) {
	k := len(models)
	if k < 2 {
		return nil, fmt.Errorf("MergeMany needs at least two models")
	}
	perms := make([]Perms, k)
	for i := range perms {
		perms[i] = Identity(s)
	}
	permuted := make([]MemorySource, k)
	for i := range models {
		permuted[i] = refApplySource(s, models[i], perms[i])
	}
	r := rand.New(rand.NewPCG(opts.Seed, 7))
	best := math.Inf(1)
	maxRounds := opts.MaxSweeps
	if maxRounds <= 0 {
		maxRounds = 100
	}
	for round := 0; round < maxRounds; round++ {
		changed := false
		for _, i := range r.Perm(k) {
			var others []MemorySource
			for j := range k {
				if j != i {
					others = append(others, permuted[j])
				}
			}
			mean := refMeanSource(others)
			o := opts
			o.Init = perms[i]
			o.Progress = nil
			res, err := refWeightMatching(ctx, s, mean, models[i], o)
			if err != nil {
				return nil, err
			}
			for _, g := range s.GroupNames() {
				if !slices.Equal(res.Perms[g], perms[i][g]) {
					changed = true
				}
			}
			perms[i] = res.Perms
			permuted[i] = refApplySource(s, models[i], perms[i])
		}
		total := 0.0
		mean := refMeanSource(permuted)
		for i := range k {
			d, err := refDistance(s, mean, permuted[i], Identity(s))
			if err != nil {
				return nil, err
			}
			total += d * d
		}
		if !changed || total >= best*(1-1e-12) {
			break
		}
		best = total
	}
	return perms, nil
}

// applySource returns the permuted float tensors of a model in memory.
func refApplySource(s *Spec, m MemorySource, p Perms) MemorySource {
	out := MemorySource{}
	for name, t := range m {
		idx, moved, err := s.indices(name, t.Shape, p)
		if err != nil || !moved {
			out[name] = t
			continue
		}
		d := make([]float32, len(t.Data))
		refGather32(d, t.Data, t.Shape, idx)
		out[name] = Tensor32{Data: d, Shape: t.Shape}
	}
	return out
}

// meanSource averages models tensor by tensor.
func refMeanSource(ms []MemorySource) MemorySource {
	out := MemorySource{}
	for name, t := range ms[0] {
		d := make([]float32, len(t.Data))
		for _, m := range ms {
			for i, v := range m[name].Data {
				d[i] += v
			}
		}
		inv := 1 / float32(len(ms))
		for i := range d {
			d[i] *= inv
		}
		out[name] = Tensor32{Data: d, Shape: t.Shape}
	}
	return out
}
