package merge

import (
	"context"
	"fmt"
	"math"
)

// Sparsification of task vectors: a sparsifier prepares, per tensor, with
// whatever streaming passes it needs over the models and the base, a
// trimmer that writes each model's trimmed, rescaled and weighted deltas
// block by block. TIES (by magnitude, sparsify_magnitude.go) and DARE (at
// random, sparsify_random.go) are the built-in ones; mergekit's
// breadcrumbs (magnitude with the largest outliers dropped too: two
// selections) and DELLA (per-row magnitude ranks setting keep
// probabilities) fit the same interface: a file each.
type sparsifier interface {
	// prepare runs the passes of one tensor: ins are the models' tensors
	// then the base's (last); densities are per model.
	prepare(ctx context.Context, t *TensorJob, ins []*Input, densities []float64) (trimmer, error)
}

// trimmer writes model i's weighted deltas of one block, for elements lo,
// lo+1, ...: d[k] = trimmed(x[k] - b[k]) * w. It returns false when the
// model is not sparsified (the caller writes (x - b) * w).
type trimmer interface {
	trim(i int, d, x, b []float64, lo int, w float64) bool
}

// builtinSparsifier returns the sparsifier of the options.
func builtinSparsifier(o TaskVectorOptions) sparsifier {
	if o.sparsifier != nil {
		return o.sparsifier
	}
	switch o.Sparsify {
	case Magnitude:
		return magnitudeSparsifier{}
	case Random:
		return randomSparsifier{seed: o.Seed, rescale: o.Rescale}
	}
	return nil
}

// checkDensity validates a density: in [0, 1], or (0, 1] when zero makes
// no sense (DARE divides by it).
func checkDensity(d float64, zeroOK bool, what string) error {
	if math.IsNaN(d) || d < 0 || d > 1 || (!zeroOK && d == 0) {
		if zeroOK {
			return fmt.Errorf("%s density %g must be in [0, 1]", what, d)
		}
		return fmt.Errorf("%s density %g must be in (0, 1]", what, d)
	}
	return nil
}
