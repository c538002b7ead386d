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
	var keyOf []int
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
		// both cuts select over the same keys: computed once a block
		fns = append(fns, key)
		his = append(his, slot{i, len(sels)})
		sels = append(sels, newSelection(keep+top, t.N))
		keyOf, uses = append(keyOf, len(fns)-1), append(uses, []int{i, n})
		tops = append(tops, slot{i, len(sels)})
		sels = append(sels, newSelection(top, t.N))
		keyOf, uses = append(keyOf, len(fns)-1), append(uses, []int{i, n})
	}
	if err := selectTopShared(ctx, t, ins, uses, sels, fns, keyOf); err != nil {
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
	keepCrumbs(d, x, b, tr.hi[i], tr.top[i], lo, w)
	return true
}

// keepCrumbs writes (x - b) w where |x - b| is among hi's and not among
// top's (see Threshold), +0 elsewhere, for elements lo, lo+1, ...,
// without branches.
func keepCrumbs(d, x, b []float64, hi, top Threshold, lo int, w float64) {
	n := 0
	if haveAVX512 {
		if n = len(d) &^ 7; n > 0 {
			keepCrumbsx512(&d[0], &x[0], &b[0], n, &keepCrumbsParams{hk: hi.Key, hc: uint64(hi.Cutoff), tk: top.Key, tc: uint64(top.Cutoff), lo: int64(lo), w: w})
		}
	}
	keepCrumbsGo(d[n:], x[n:], b[n:], hi, top, lo+n, w)
}

// keepCrumbsGo is keepCrumbs in Go.
func keepCrumbsGo(d, x, b []float64, hi, top Threshold, lo int, w float64) {
	x, b = x[:len(d)], b[:len(d)]
	hk, hc, tk, tc := hi.Key, hi.Cutoff, top.Key, top.Cutoff
	for k := range d {
		v := x[k] - b[k]
		key := math.Float64bits(v) &^ (1 << 63)
		e := lo + k
		inHi := b2u(key > hk) | b2u(key == hk)&b2u(e <= hc)
		inTop := b2u(key > tk) | b2u(key == tk)&b2u(e <= tc)
		d[k] = math.Float64frombits(math.Float64bits(v*w) & -(inHi &^ inTop))
	}
}
