package merge

import (
	"context"
	"math"
)

// magnitudeSparsifier keeps each task vector's int(density n) largest
// magnitudes (TIES), by an exact streaming top-k selection per model
// (select.go); ties at the threshold keep the first entries.
type magnitudeSparsifier struct{}

type magnitudeTrim struct {
	thr    []Threshold
	sparse []bool
}

func (magnitudeSparsifier) prepare(ctx context.Context, t *TensorJob, ins []*Input, densities []float64) (trimmer, error) {
	n := len(ins) - 1
	tr := &magnitudeTrim{thr: make([]Threshold, n), sparse: make([]bool, n)}
	var sels []*selection
	var fns []func(in [][]float64, keys []uint64)
	var which []int
	var uses [][]int
	for i := range n {
		d := densities[i]
		if err := checkDensity(min(d, 1), true, "TIES"); err != nil {
			return nil, err
		}
		if d >= 1 {
			continue
		}
		tr.sparse[i] = true
		sels = append(sels, newSelection(int(d*float64(t.N)), t.N))
		which = append(which, i)
		uses = append(uses, []int{i, n})
		fns = append(fns, func(in [][]float64, keys []uint64) {
			x, b := in[i], in[n]
			for e := range keys {
				keys[e] = math.Float64bits(math.Abs(x[e] - b[e]))
			}
		})
	}
	if err := selectTop(ctx, t, ins, uses, sels, fns); err != nil {
		return nil, err
	}
	for s, i := range which {
		tr.thr[i] = sels[s].res
	}
	return tr, nil
}

func (tr *magnitudeTrim) trim(i int, d, x, b []float64, lo int, w float64) bool {
	if !tr.sparse[i] {
		return false
	}
	keepMagnitude(d, x, b, tr.thr[i], lo, w)
	return true
}
