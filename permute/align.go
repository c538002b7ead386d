package permute

import (
	"context"
	"fmt"
	"runtime/debug"

	"github.com/wtool/wtool/io/checkpoint"
)

// AlignOptions control Align.
type AlignOptions struct {
	// Method is "weight" (weight matching, the default) or "activation".
	Method string
	// Match are the weight matching options.
	Match MatchOptions
	// Stats are joint statistics of (ref, model) for activation matching.
	Stats JointStats
	// CacheBytes, if not 0, replaces Match.CacheBytes: the bytes of each
	// model's tensors kept mapped between uses (see NewCheckpointSource).
	CacheBytes int64
}

// AlignResult is the outcome of Align.
type AlignResult struct {
	Perms Perms
	// DistanceBefore and DistanceAfter are ||ref - model|| and
	// ||ref - pi(model)|| over the tensors the spec permutes.
	DistanceBefore, DistanceAfter float64
	Sweeps                        int                // weight matching sweeps
	Solved, Skipped               int                // weight matching group solves done and skipped
	Correlations                  []GroupCorrelation // activation matching
	Stats                         MatchStats         // where weight matching's time went
}

// Align finds the permutations that bring model's units into ref's order
// under spec s. The models must have the same tensors and shapes, and the
// spec must cover them. Apply the result with ApplyCheckpoint.
func Align(ctx context.Context, ref, model *checkpoint.Model, s *Spec, opts AlignOptions) (*AlignResult, error) {
	if err := checkpoint.SameArchitecture(ref, model); err != nil {
		return nil, fmt.Errorf("the models differ: %w", err)
	}
	if err := s.Validate(Shapes(ref)); err != nil {
		return nil, fmt.Errorf("%s: %w", ref.Path, err)
	}
	budget := opts.Match.CacheBytes
	if opts.CacheBytes != 0 {
		budget = opts.CacheBytes
	}
	a, b := NewCheckpointSource(ref, budget), NewCheckpointSource(model, budget)
	res := &AlignResult{}
	switch opts.Method {
	case "weight", "":
		mr, err := WeightMatching(ctx, s, a, b, opts.Match)
		// the cost matrices (1.6 GB for an 8B model) are garbage now: hand
		// the memory back before the caller writes the aligned model
		debug.FreeOSMemory()
		if err != nil {
			return nil, err
		}
		res.Perms, res.Sweeps, res.Solved, res.Skipped, res.Stats = mr.Perms, mr.Sweeps, mr.Solved, mr.Skipped, mr.Stats
		res.DistanceBefore, res.DistanceAfter = mr.DistanceBefore, mr.DistanceAfter
		return res, nil
	case "activation":
		if opts.Stats == nil {
			return nil, fmt.Errorf("activation matching needs joint statistics of the two models")
		}
		p, corr, err := MatchActivations(ctx, s, opts.Stats, ActivationOptions{Weights: [2]Source{a, b}})
		if err != nil {
			return nil, err
		}
		res.Perms, res.Correlations = p, corr
		if res.DistanceBefore, err = Distance(s, a, b, Identity(s)); err != nil {
			return nil, err
		}
		if res.DistanceAfter, err = Distance(s, a, b, p); err != nil {
			return nil, err
		}
		return res, nil
	}
	return nil, fmt.Errorf("unknown alignment method %q (want weight or activation)", opts.Method)
}
