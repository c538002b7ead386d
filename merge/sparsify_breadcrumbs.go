package merge

import (
	"context"
	"fmt"
	"math"
)

// breadcrumbsSparsifier keeps, of each task vector, the entries whose
// magnitude ranks between the gamma outliers and the density budget
// (mergekit's breadcrumbs): with n entries, keep = int(density n), top =
// int(gamma n) and bot = n - keep - top (when negative, top shrinks by as
// much and bot is 0), the top largest magnitudes and the bot smallest are
// dropped. Two exact streaming top-k selections per model (select.go): the
// keep + top largest, minus the top largest. Ties at a boundary are
// ordered by index (mergekit's sort leaves their order unspecified).
type breadcrumbsSparsifier struct{}

type breadcrumbsTrim struct {
	hi, top []Threshold // per model: the keep+top largest, the top largest
	sparse  []bool
}

func (breadcrumbsSparsifier) prepare(ctx context.Context, t *TensorJob, ins []*Input, densities []float64) (trimmer, error) {
	n := len(ins) - 1
	tr := &breadcrumbsTrim{hi: make([]Threshold, n), top: make([]Threshold, n), sparse: make([]bool, n)}
	var sels []*selection
	var fns []func(lo int, in [][]float64, keys []uint64)
	var uses [][]int
	type slot struct{ model, sel int }
	var his, tops []slot
	for i := range n {
		d := densities[2*i]
		gamma := densities[2*i+1]
		if err := checkDensity(min(d, 1), true, "breadcrumbs"); err != nil {
			return nil, err
		}
		if math.IsNaN(gamma) || gamma < 0 || gamma > 1 {
			return nil, fmt.Errorf("breadcrumbs gamma %g must be in [0, 1]", gamma)
		}
		if d >= 1 {
			continue
		}
		tr.sparse[i] = true
		keep, top := int(d*float64(t.N)), int(gamma*float64(t.N))
		if bot := t.N - keep - top; bot < 0 {
			top += bot
		}
		key := func(_ int, in [][]float64, keys []uint64) {
			x, b := in[i], in[n]
			for e := range keys {
				keys[e] = math.Float64bits(math.Abs(x[e] - b[e]))
			}
		}
		his = append(his, slot{i, len(sels)})
		sels = append(sels, newSelection(keep+top, t.N))
		fns, uses = append(fns, key), append(uses, []int{i, n})
		tops = append(tops, slot{i, len(sels)})
		sels = append(sels, newSelection(top, t.N))
		fns, uses = append(fns, key), append(uses, []int{i, n})
	}
	if err := selectTop(ctx, t, ins, uses, sels, fns); err != nil {
		return nil, err
	}
	for _, s := range his {
		tr.hi[s.model] = sels[s.sel].res
	}
	for _, s := range tops {
		tr.top[s.model] = sels[s.sel].res
	}
	return tr, nil
}

func (tr *breadcrumbsTrim) trim(i int, d, x, b []float64, lo int, w float64) bool {
	if !tr.sparse[i] {
		return false
	}
	hi, top := tr.hi[i], tr.top[i]
	x, b = x[:len(d)], b[:len(d)]
	for k := range d {
		v := x[k] - b[k]
		key := math.Float64bits(v) &^ (1 << 63)
		if hi.Keep(key, lo+k) && !top.Keep(key, lo+k) {
			d[k] = v * w
		} else {
			d[k] = 0
		}
	}
	return true
}
