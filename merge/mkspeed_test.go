package merge

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/wtool/wtool/tensors"
)

// The reference implementations below compute the mergekit methods'
// float64 formulas element by element, in the simplest way, with the
// engine's one convention for whole-tensor sums (each BlockSize block
// summed in element order, the block sums added in block order), and
// round once to bfloat16. The methods' kernels (block loops, SIMD) must
// give the same bytes.

// refCase is one set of inputs: models (bfloat16 values as float64),
// base, shape.
type refCase struct {
	name  string
	shape []int64
	xs    [][]float64
	base  []float64
	ins   []*Input
	bin   *Input
}

// refCases are inputs with edges: single rows and elements, lengths that
// are not multiples of 8 or of BlockSize, offsets with ties and zeros (few
// levels), all-equal models, and a tensor large enough for the sampling
// route of the selections (with gatherCap shrunk by the caller).
func refCases(models int) []refCase {
	var out []refCase
	shapes := [][]int64{{1, 1}, {1, 7}, {3, 5}, {17, 33}, {5, 4099}, {300, 4099}}
	for si, shape := range shapes {
		for _, levels := range []int{0, 1, 3} {
			n, _ := tensors.NumElements(shape)
			if n > 1<<20 && (levels == 1 || testing.Short()) {
				continue // the sampling route: two cases are enough
			}
			r := rand.New(rand.NewPCG(uint64(si), uint64(levels*10+models)))
			bf := func(v float64) float64 { return float64(tensors.BF16ToFloat32(tensors.BF16FromFloat64(v))) }
			c := refCase{name: fmt.Sprintf("%v/levels=%d/models=%d", shape, levels, models), shape: shape, base: make([]float64, n)}
			for k := range c.base {
				c.base[k] = bf(r.NormFloat64())
			}
			for range models {
				x := make([]float64, n)
				for k := range x {
					if levels > 0 { // offsets in {-0.25, 0, 0.25}: ties and zeros (levels 1: all zero)
						x[k] = bf(c.base[k] + float64(r.IntN(levels)-levels/2)*0.25)
					} else {
						x[k] = bf(c.base[k] + 0.1*r.NormFloat64())
					}
				}
				c.xs = append(c.xs, x)
			}
			mk := func(v []float64) *Input {
				f := make([]float32, len(v))
				for k := range v {
					f[k] = float32(v[k])
				}
				t, _ := tensors.FromFloat32("w", tensors.BF16, shape, f)
				return &Input{File: "f", Tensor: "w", DType: tensors.BF16, Shape: shape, Data: t.Data}
			}
			for _, x := range c.xs {
				c.ins = append(c.ins, mk(x))
			}
			c.bin = mk(c.base)
			out = append(out, c)
		}
	}
	return out
}

// blockSum is the engine's sum of f(k) over k < n.
func blockSum(n int, f func(k int) float64) float64 {
	var total float64
	for lo := 0; lo < n; lo += BlockSize {
		var s float64
		for k := lo; k < min(lo+BlockSize, n); k++ {
			s += f(k)
		}
		total += s
	}
	return total
}

// ranks returns each key's rank from the largest (0-based; ties: the
// first is ranked higher): the key is among the k largest when its rank is
// below k.
func ranks(keys []float64) []int {
	idx := make([]int, len(keys))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		switch {
		case keys[a] > keys[b]:
			return -1
		case keys[a] < keys[b]:
			return 1
		}
		return 0
	})
	rank := make([]int, len(keys))
	for r, i := range idx {
		rank[i] = r
	}
	return rank
}

func encodeRef(v []float64) []byte {
	out := make([]byte, 2*len(v))
	for k, x := range v {
		h := tensors.BF16FromFloat64(x)
		out[2*k], out[2*k+1] = byte(h), byte(h>>8)
	}
	return out
}

// checkRef compares a method's output with the reference's.
func checkRef(t *testing.T, what string, c refCase, p *Plan, withBase bool, want []float64) {
	t.Helper()
	base := c.bin
	if !withBase {
		base = nil
	}
	got := make([]byte, 2*len(want))
	if err := methodTensorErr(p, c.shape, c.ins, base, got); err != nil {
		t.Fatalf("%s %s: %v", what, c.name, err)
	}
	w := encodeRef(want)
	if !bytes.Equal(got, w) {
		for k := 0; k < len(w); k += 2 {
			if got[k] != w[k] || got[k+1] != w[k+1] {
				t.Fatalf("%s %s: element %d is %#04x, the formula's %#04x", what, c.name, k/2, uint16(got[k])|uint16(got[k+1])<<8, uint16(w[k])|uint16(w[k+1])<<8)
			}
		}
	}
}

// TestSCEMatchesFormula: sce's kernels (selection keys, weights, the
// branch-free combination) give the formula's bytes.
func TestSCEMatchesFormula(t *testing.T) {
	defer func(c int) { gatherCap = c }(gatherCap)
	gatherCap = 1 << 16
	for _, models := range []int{2, 3} {
		for _, c := range refCases(models) {
			for _, topk := range []float64{1, 0.5, 0.1} {
				n := len(c.base)
				variance := make([]float64, n)
				nz := 0
				for k := range n {
					var mean float64
					for _, x := range c.xs {
						mean += x[k] - c.base[k]
					}
					mean /= float64(models)
					var v float64
					for _, x := range c.xs {
						d := x[k] - c.base[k] - mean
						v += d * d
					}
					variance[k] = v / float64(models)
					if variance[k] != 0 {
						nz++
					}
				}
				kept := make([]bool, n)
				if topk < 1 {
					for k, r := range ranks(variance) {
						kept[k] = r < int(float64(nz)*topk)
					}
				} else {
					for k := range kept {
						kept[k] = true
					}
				}
				w := make([]float64, models)
				var sw float64
				for i, x := range c.xs {
					w[i] = blockSum(n, func(k int) float64 {
						if !kept[k] {
							return 0
						}
						d := x[k] - c.base[k]
						return d * d
					}) / float64(n)
					sw += w[i]
				}
				for i := range w {
					if math.Abs(sw) < 1e-6 {
						w[i] = 1 / float64(models)
					} else {
						w[i] /= sw
					}
				}
				want := make([]float64, n)
				for k := range n {
					want[k] = c.base[k]
					if !kept[k] {
						continue
					}
					var sum float64
					for _, x := range c.xs {
						sum += x[k] - c.base[k]
					}
					var num, den float64
					for i, x := range c.xs {
						if d := x[k] - c.base[k]; d > 0 && sum >= 0 || d < 0 && sum < 0 {
							num += d * w[i]
							den += w[i]
						}
					}
					want[k] += num / max(den, 1e-6)
				}
				var p Params
				if topk < 1 {
					p = Params{"select_topk": Num(topk)}
				}
				checkRef(t, fmt.Sprintf("sce select_topk %g", topk), c, &Plan{Method: "sce", Params: p}, true, want)
			}
		}
	}
}

// TestBreadcrumbsMatchesFormula: breadcrumbs' two cuts (shared keys,
// the branch-free trim) then TIES' sign election (breadcrumbs-ties) or a
// sum (breadcrumbs) give the formula's bytes.
func TestBreadcrumbsMatchesFormula(t *testing.T) {
	defer func(c int) { gatherCap = c }(gatherCap)
	gatherCap = 1 << 16
	for _, models := range []int{2, 3} {
		for _, c := range refCases(models) {
			n := len(c.base)
			rank := make([][]int, models)
			for i, x := range c.xs {
				mag := make([]float64, n)
				for k := range n {
					mag[k] = math.Abs(x[k] - c.base[k])
				}
				rank[i] = ranks(mag)
			}
			for _, dg := range [][2]float64{{0.9, 0.01}, {0.5, 0.1}, {0.3, 0.8}, {1, 0.1}} {
				density, gamma := dg[0], dg[1]
				ds := make([][]float64, models)
				for i, x := range c.xs {
					ds[i] = make([]float64, n)
					keep, top := int(density*float64(n)), int(gamma*float64(n))
					if bot := n - keep - top; bot < 0 {
						top += bot
					}
					for k := range n {
						// among the keep + top largest, not the top largest
						if density >= 1 || rank[i][k] < keep+top && rank[i][k] >= top {
							ds[i][k] = x[k] - c.base[k]
						}
					}
				}
				for _, ties := range []bool{false, true} {
					want := make([]float64, n)
					for k := range n {
						var total float64
						for i := range ds {
							total += ds[i][k]
						}
						var mixed float64
						for i := range ds {
							d := ds[i][k]
							if !ties || d > 0 && total >= 0 || d < 0 && total < 0 {
								mixed += d
							}
						}
						want[k] = c.base[k] + mixed
					}
					method := "breadcrumbs"
					if ties {
						method = "breadcrumbs-ties"
					}
					checkRef(t, fmt.Sprintf("%s density %g gamma %g", method, density, gamma), c,
						&Plan{Method: method, Params: Params{"density": Num(density), "gamma": Num(gamma)}}, true, want)
				}
			}
		}
	}
}

// affineRef is the affine kernel's bfloat16 output: float32 sums of
// float32(c_i) x_i in input order, rounded once.
func affineRef(xs [][]float64, coef []float64) []float64 {
	out := make([]float64, len(xs[0]))
	for k := range out {
		var a float32
		for i, x := range xs {
			a += float32(coef[i]) * float32(x[k])
		}
		out[k] = float64(a)
	}
	return out
}

// TestModelStockMatchesFormula: model-stock's Gram sums (per tensor, and
// per row) and its kernels give the formula's bytes.
func TestModelStockMatchesFormula(t *testing.T) {
	for _, models := range []int{2, 3} {
		for _, c := range refCases(models) {
			if slices.Equal(c.xs[0], c.base) { // zero offsets: a 0/0 ratio (NaN)
				continue
			}
			for _, rowWise := range []bool{false, true} {
				n := len(c.base)
				m := n
				if rowWise {
					m = int(c.shape[1])
				}
				ratio := make([]float64, n/m)
				for r := range ratio {
					g := func(i, j int) float64 {
						sum := blockSum(m, func(k int) float64 {
							k += r * m
							return (c.xs[i][k] - c.base[k]) * (c.xs[j][k] - c.base[k])
						})
						if rowWise { // a row is summed in element order
							sum = 0
							for k := r * m; k < (r+1)*m; k++ {
								sum += (c.xs[i][k] - c.base[k]) * (c.xs[j][k] - c.base[k])
							}
						}
						return sum
					}
					var cos float64
					pairs := 0
					for i := range models {
						for j := i + 1; j < models; j++ {
							cos += max(-1, min(1, g(i, j)/max(math.Sqrt(g(i, i))*math.Sqrt(g(j, j)), 1e-6)))
							pairs++
						}
					}
					cos /= float64(pairs)
					ratio[r] = float64(models) * cos / (1 + float64(models-1)*cos)
				}
				var want []float64
				if !rowWise {
					coef := make([]float64, models+1)
					for i := range models {
						coef[i] = ratio[0] / float64(models)
					}
					coef[models] = 1 - ratio[0]
					want = affineRef(append(slices.Clone(c.xs), c.base), coef)
				} else {
					want = make([]float64, n)
					for k := range want {
						r := ratio[k/m]
						var avg float64
						for _, x := range c.xs {
							avg += x[k]
						}
						want[k] = r*(avg/float64(models)) + (1-r)*c.base[k]
					}
				}
				checkRef(t, fmt.Sprintf("model-stock filter_wise %v", rowWise), c,
					&Plan{Method: "model-stock", Params: Params{"filter_wise": Flag(rowWise)}}, true, want)
			}
		}
	}
}

// TestKarcherGramMatchesFormula: karcher's Gram sums (the models' own
// values, no base) give the formula's coefficients, hence its bytes.
func TestKarcherGramMatchesFormula(t *testing.T) {
	for _, models := range []int{2, 3} {
		for _, c := range refCases(models) {
			n := len(c.base)
			g := make([][]float64, models)
			for i := range g {
				g[i] = make([]float64, models)
				for j := range g[i] {
					g[i][j] = blockSum(n, func(k int) float64 { return c.xs[i][k] * c.xs[j][k] })
				}
			}
			want := affineRef(c.xs, karcherCoef(g, 10, 1e-5))
			checkRef(t, "karcher", c, &Plan{Method: "karcher"}, false, want)
		}
	}
}

// TestSelectionKernelsMatchGo: the AVX-512 range count and breadcrumbs'
// trim give the Go code's results at every length mod 8, with keys equal
// to the bounds and cutoffs inside the block.
func TestSelectionKernelsMatchGo(t *testing.T) {
	if !haveAVX512 {
		t.Skip("no AVX-512 on this CPU (or purego): only the Go code runs")
	}
	r := rand.New(rand.NewPCG(5, 6))
	for _, n := range []int{1, 7, 8, 9, 15, 16, 17, 64, 1000, BlockSize} {
		x, b := randomBlock(r, n, true), randomBlock(r, n, true)
		keys := make([]uint64, n)
		for k := range keys {
			keys[k] = math.Float64bits(math.Abs(x[k] - b[k]))
		}
		pick := func() uint64 { return keys[r.IntN(n)] }
		for range 20 {
			lo, hi := pick(), pick()
			if lo > hi {
				lo, hi = hi, lo
			}
			// the range route's counts: Go's loop against the kernel's
			s := &selection{op: opRange, rLo: lo, rHi: hi, gath: make([][]keyIndex, 1), rAbove: make([]int, 1), rCount: make([]int, 1)}
			s.visit(0, 100, keys)
			var above, count int
			var want []keyIndex
			for k, key := range keys {
				if key > hi {
					above++
				}
				if key >= lo && key <= hi {
					count++
					want = append(want, keyIndex{key, 100 + k})
				}
			}
			if s.rAbove[0] != above || s.rCount[0] != count || !slices.Equal(s.gath[0], want) {
				t.Fatalf("n %d range [%#x, %#x]: above %d count %d gathered %d, want %d %d %d", n, lo, hi, s.rAbove[0], s.rCount[0], len(s.gath[0]), above, count, len(want))
			}
			// breadcrumbs' trim
			th := Threshold{Key: hi, Cutoff: 100 + r.IntN(n+2) - 1}
			tt := Threshold{Key: max(hi, pick()), Cutoff: 100 + r.IntN(n+2) - 1}
			w := []float64{1, -0.5, 0, math.NaN()}[r.IntN(4)]
			got, ref := make([]float64, n), make([]float64, n)
			keepCrumbs(got, x, b, th, tt, 100, w)
			keepCrumbsGo(ref, x, b, th, tt, 100, w)
			sameBits(t, "keepCrumbs", got, ref)
		}
	}
}

// TestSCECombineMatchesGo: the AVX-512 combination of two models and
// variance keys give the Go code's bits, on blocks with NaN, infinities, zeros of both signs
// and subnormals, at every length mod 8, with zero and tiny weights.
func TestSCECombineMatchesGo(t *testing.T) {
	if !haveAVX512 {
		t.Skip("no AVX-512 on this CPU (or purego): only the Go code runs")
	}
	r := rand.New(rand.NewPCG(7, 8))
	for _, n := range []int{1, 7, 8, 9, 15, 16, 17, 64, 1000, BlockSize} {
		x0, x1, b := randomBlock(r, n, true), randomBlock(r, n, true), randomBlock(r, n, true)
		for k := range b {
			switch r.IntN(6) { // equal values: zero offsets
			case 0:
				x0[k] = b[k]
			case 1:
				x1[k] = b[k]
			}
		}
		for _, w := range [][]float64{{0.5, 0.5}, {1, 0}, {0, 0}, {1e-9, 3e-7}, {0.25, 0.75}} {
			got, want := make([]float64, n), make([]float64, n)
			sceCombine(got, [][]float64{x0, x1}, b, w, nil)
			sceCombineGo(want, [][]float64{x0, x1}, b, w)
			sameBits(t, fmt.Sprintf("sceCombine n %d w %v", n, w), got, want)
		}
		keys, ref := make([]uint64, n), make([]uint64, n)
		sceKeys(keys, [][]float64{x0, x1}, b)
		sceKeysGo(ref, [][]float64{x0, x1}, b)
		for k := range keys {
			if keys[k] != ref[k] && !(math.IsNaN(math.Float64frombits(keys[k])) && math.IsNaN(math.Float64frombits(ref[k]))) {
				t.Fatalf("sceKeys n %d element %d: %#x, Go %#x", n, k, keys[k], ref[k])
			}
		}
	}
}
