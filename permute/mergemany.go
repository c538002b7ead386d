package permute

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime/debug"
	"slices"

	"github.com/wtool/wtool/io/checkpoint"
)

// MergeMany aligns several models to each other (Ainsworth et al.'s
// MergeMany): starting from identities, it repeatedly matches each model, in
// a seeded random order, to the mean of the others (all permuted) by weight
// matching, until a round changes no permutation or the total squared
// distance of the models to their mean stops improving. It returns one Perms
// per model; averaging the permuted models gives the merge.
//
// The mean is never stored: each block of it is summed on the fly from the
// other models' blocks, read (a [CheckpointSource] in the file's dtype)
// with their permutations applied, so memory depends on neither the models'
// size nor their number.
func MergeMany[S Source](ctx context.Context, s *Spec, models []S, opts MatchOptions) ([]Perms, error) {
	srcs := make([]rawSource, len(models))
	for i, m := range models {
		srcs[i] = asRaw(m)
	}
	perms, _, err := mergeMany(ctx, newMatcher(s), srcs, opts)
	return perms, err
}

func mergeMany(ctx context.Context, m *matcher, srcs []rawSource, opts MatchOptions) ([]Perms, int, error) {
	s := m.spec
	k := len(srcs)
	if k < 2 {
		return nil, 0, fmt.Errorf("MergeMany needs at least two models")
	}
	label := func(i int) string { return fmt.Sprintf("model %d", i+1) }
	perms := make([]Perms, k)
	for i := range perms {
		perms[i] = Identity(s)
	}
	r := rand.New(rand.NewPCG(opts.Seed, 7))
	best := math.Inf(1)
	maxRounds := opts.MaxSweeps
	if maxRounds <= 0 {
		maxRounds = 100
	}
	rounds := 0
	for round := 0; round < maxRounds; round++ {
		rounds = round + 1
		changed := false
		for _, i := range r.Perm(k) {
			var others []member
			for j := range k {
				if j != i {
					others = append(others, member{src: srcs[j], perm: perms[j], label: label(j)})
				}
			}
			o := opts
			o.Init = perms[i]
			o.Progress = nil
			a := side{members: others, scale: 1 / float32(len(others))}
			res, err := m.match(ctx, a, member{src: srcs[i], label: label(i)}, o, false)
			if err != nil {
				return nil, 0, err
			}
			for _, g := range s.GroupNames() {
				if !slices.Equal(res.Perms[g], perms[i][g]) {
					changed = true
				}
			}
			perms[i] = res.Perms
		}
		total, err := m.spread(ctx, srcs, perms)
		if err != nil {
			return nil, 0, err
		}
		if !changed || total >= best*(1-1e-12) {
			break
		}
		best = total
	}
	return perms, rounds, nil
}

// spread returns the sum over the models of their squared distance to the
// mean of all of them, everything permuted, over the spec's permuted
// tensors, reading each model once.
func (m *matcher) spread(ctx context.Context, srcs []rawSource, perms []Perms) (float64, error) {
	k := len(srcs)
	sides := make([]side, k)
	for i := range srcs {
		sides[i] = side{members: []member{{src: srcs[i], perm: perms[i], label: fmt.Sprintf("model %d", i+1)}}}
	}
	sums := make([][]float64, m.e.workers)
	for w := range sums {
		sums[w] = make([]float64, k)
	}
	means := make([][]float32, m.e.workers)
	inv := 1 / float32(k)
	err := m.e.streamPass(ctx, sides, func(w int, v [][]float32) {
		mean := growF32(means[w], len(v[0]))
		means[w] = mean
		clear(mean)
		for _, x := range v {
			for j, y := range x {
				mean[j] += y
			}
		}
		for j := range mean {
			mean[j] *= inv
		}
		for i, x := range v {
			d := 0.0
			for j, y := range x {
				e := float64(mean[j]) - float64(y)
				d += e * e
			}
			sums[w][i] += d
		}
	})
	if err != nil {
		return 0, err
	}
	total := 0.0
	for i := range k {
		d := 0.0
		for w := range sums {
			d += sums[w][i]
		}
		d = math.Sqrt(d)
		total += d * d
	}
	return total, nil
}

// ManyResult is the outcome of MatchModels.
type ManyResult struct {
	// Perms has one permutation per model. With two models the first is
	// the identity (the second is aligned to it).
	Perms []Perms
	// Sweeps is the number of weight matching sweeps (two models) or of
	// MergeMany rounds (three or more).
	Sweeps int
	// Solved and Skipped count the group solves done and skipped (two
	// models).
	Solved, Skipped int
	// DistanceBefore and DistanceAfter are ||A - B|| and ||A - pi(B)|| over
	// the permuted tensors (two models).
	DistanceBefore, DistanceAfter float64
	// Stats says where the time went.
	Stats MatchStats
}

// MatchModels aligns checkpoints of the same architecture under spec s:
// with two, the second is weight-matched to the first ([WeightMatching]);
// with three or more, they are aligned to each other ([MergeMany]). The
// checkpoints are read in their own dtype through [CheckpointSource]s with
// opts.CacheBytes each; memory depends on neither the models' size nor
// their number (the largest allocations are two float32 cost matrices of
// the largest group).
func MatchModels(ctx context.Context, s *Spec, models []*checkpoint.Model, opts MatchOptions) (*ManyResult, error) {
	if len(models) < 2 {
		return nil, fmt.Errorf("matching needs at least two models")
	}
	srcs := make([]rawSource, len(models))
	for i, mdl := range models {
		srcs[i] = NewCheckpointSource(mdl, opts.CacheBytes)
	}
	m := newMatcher(s)
	// The cost matrices (1.6 GB for an 8B model) are garbage once matching
	// is done: collect them and hand the memory back now, rather than let
	// the caller's next phase (writing the merge) grow the heap beside them.
	defer debug.FreeOSMemory()
	if len(models) == 2 {
		a := side{members: []member{{src: srcs[0]}}}
		res, err := m.match(ctx, a, member{src: srcs[1]}, opts, true)
		if err != nil {
			return nil, err
		}
		return &ManyResult{Perms: []Perms{Identity(s), res.Perms}, Sweeps: res.Sweeps, Solved: res.Solved, Skipped: res.Skipped,
			DistanceBefore: res.DistanceBefore, DistanceAfter: res.DistanceAfter, Stats: res.Stats}, nil
	}
	perms, rounds, err := mergeMany(ctx, m, srcs, opts)
	if err != nil {
		return nil, err
	}
	return &ManyResult{Perms: perms, Sweeps: rounds, Stats: m.e.stats}, nil
}
