package merge

import (
	"context"
	"math"
	"sync"
)

// randomSparsifier keeps each task-vector entry with probability density
// (DARE), with per-element masks from a counter-based generator (rng.go),
// and rescales the kept entries by 1/density, to keep the L1 norm (one more
// pass for the norms), or not at all.
type randomSparsifier struct {
	seed    uint64
	rescale Rescale
}

type randomTrim struct {
	rescale Rescale
	sparse  []bool
	keys    []uint64
	dens    []float64
	scale   []float64 // L1 rescaling; 0 = none
}

func (r randomSparsifier) prepare(ctx context.Context, t *TensorJob, ins []*Input, densities []float64) (trimmer, error) {
	n := len(ins) - 1
	tr := &randomTrim{rescale: r.rescale, sparse: make([]bool, n), keys: make([]uint64, n), dens: densities, scale: make([]float64, n)}
	var hashed []*Input
	var which []int
	for i := range n {
		d := densities[i]
		if err := checkDensity(min(d, 1), r.rescale != RescaleInverse, "DARE"); err != nil {
			return nil, err
		}
		if d < 1 {
			tr.sparse[i] = true
			hashed = append(hashed, ins[i])
			which = append(which, i)
		}
	}
	if len(which) == 0 {
		return tr, nil
	}
	hs, err := sampledHashes(ctx, t, hashed)
	if err != nil {
		return nil, err
	}
	for s, i := range which {
		tr.keys[i] = MaskKey(r.seed, t.Name, hs[s])
	}
	if r.rescale != RescaleL1 {
		return tr, nil
	}
	// L1 norms of the task vectors before and after dropping: the kept
	// entries come from the merge pass's own kernel (keepRandom, without
	// rescaling or weight: x - b or +0), and the sums add every entry in
	// order, a dropped one as +0, which leaves a sum unchanged (no branch
	// on the unpredictable draws)
	bufs := sync.Pool{New: func() any { b := make([]float64, BlockSize); return &b }}
	sums, err := t.Sums(ctx, ins, 2*len(which), func(lo int, in [][]float64, acc []float64) error {
		b := in[n]
		dp := bufs.Get().(*[]float64)
		defer bufs.Put(dp)
		d := (*dp)[:len(b)]
		for s, i := range which {
			keepRandom(d, in[i], b, tr.keys[i], lo, densities[i], RescaleNone, 0, 1)
			var before, after float64
			for k, x := range in[i][:len(b)] {
				before += math.Abs(x - b[k])
				after += math.Abs(d[k])
			}
			acc[2*s], acc[2*s+1] = before, after
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for s, i := range which {
		if before, after := sums[2*s], sums[2*s+1]; before > 1e-7 && after > 1e-7 {
			tr.scale[i] = before / after
		}
	}
	return tr, nil
}

func (tr *randomTrim) trim(i int, d, x, b []float64, lo int, w float64) bool {
	if !tr.sparse[i] {
		return false
	}
	keepRandom(d, x, b, tr.keys[i], lo, tr.dens[i], tr.rescale, tr.scale[i], w)
	return true
}
