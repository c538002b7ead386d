package merge

import (
	"context"
	"math"
	"math/rand/v2"
	"testing"

	"gonum.org/v1/gonum/mat"

	"github.com/wtool/wtool/fisher/stats"
	"github.com/wtool/wtool/io/arch"
	"github.com/wtool/wtool/tensors"
)

// mapWeights is ModelWeights over a map.
type mapWeights map[string][]float32

func (m mapWeights) Tensor(name string) ([]float32, bool) { v, ok := m[name]; return v, ok }

// randLayout returns a random partial merge of n units: merged pairs, then
// A-only and B-only units.
func randLayout(r *rand.Rand, n, merged int) []elem {
	pa, pb := r.Perm(n), r.Perm(n)
	var l []elem
	for i := range merged {
		l = append(l, elem{kindMerged, int32(pa[i]), int32(pb[i])})
	}
	for i := merged; i < n; i++ {
		l = append(l, elem{kindA, int32(pa[i]), -1})
	}
	for i := merged; i < n; i++ {
		l = append(l, elem{kindB, -1, int32(pb[i])})
	}
	return l
}

// TestPLeaSRefitEqualsDenseLeastSquares checks the closed-form refit of a
// Linear and a Conv2d module (3x3, padding 1, on unfolded patches) against
// a dense least-squares solve (QR) of the same masked problem built sample
// by sample: merged inputs Z ([pairs averaged | A-only | B-only] features
// of the two models' actual inputs), targets T (the source modules'
// outputs, pair-averaged), and for each row kind only the columns it may
// read (A-only rows no B-only input, B-only rows no A-only input).
func TestPLeaSRefitEqualsDenseLeastSquares(t *testing.T) {
	for _, tc := range []struct {
		name           string
		conv           bool
		in, out        int
		mergedIn, mOut int
		shared         bool // the input is the same in both models (pixels)
	}{
		{name: "linear", in: 6, out: 5, mergedIn: 3, mOut: 2},
		{name: "linear full merge", in: 6, out: 5, mergedIn: 6, mOut: 5},
		{name: "linear both kept", in: 4, out: 3, mergedIn: 0, mOut: 0},
		{name: "linear shared input", in: 5, out: 4, mOut: 1, shared: true},
		{name: "conv2d", conv: true, in: 3, out: 4, mergedIn: 1, mOut: 2},
		{name: "conv2d full merge", conv: true, in: 3, out: 4, mergedIn: 3, mOut: 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(3, uint64(len(tc.name))))
			k := 1
			if tc.conv {
				k = 9
			}
			d := tc.in * k
			// samples: the two models' inputs, correlated
			var xa, xb []float32
			if tc.conv {
				const imgs, h, w = 6, 5, 4
				for range imgs {
					fa, fb := make([]float64, tc.in*h*w), make([]float64, tc.in*h*w)
					for i := range fa {
						fa[i] = r.NormFloat64()
						fb[i] = 0.6*fa[i] + 0.8*r.NormFloat64()
					}
					xa = append(xa, unfold3x3(fa, tc.in, h, w)...)
					xb = append(xb, unfold3x3(fb, tc.in, h, w)...)
				}
			} else {
				for range 300 {
					for range d {
						v := r.NormFloat64() + 0.3
						xa = append(xa, float32(v))
						if tc.shared {
							xb = append(xb, float32(v))
						} else {
							xb = append(xb, float32(0.5*v+0.9*r.NormFloat64()))
						}
					}
				}
			}
			n := len(xa) / d
			acc, err := stats.NewAccumulator([]string{"m"}, []int{d}, true)
			if err != nil {
				t.Fatal(err)
			}
			if err := acc.AddJoint("m", xa, xb, n); err != nil {
				t.Fatal(err)
			}
			acc.AddSamples(n)
			js := acc.Stats("").Lookup()
			wa, wb := make([]float32, tc.out*d), make([]float32, tc.out*d)
			ba, bb := make([]float32, tc.out), make([]float32, tc.out)
			for i := range wa {
				wa[i], wb[i] = float32(r.NormFloat64()), float32(r.NormFloat64())
			}
			for i := range ba {
				ba[i], bb[i] = float32(r.NormFloat64()), float32(r.NormFloat64())
			}
			rows := randLayout(r, tc.out, tc.mOut)
			var inEl []elem
			if tc.shared {
				for i := range tc.in {
					inEl = append(inEl, elem{kindShared, int32(i), int32(i)})
				}
			} else {
				inEl = randLayout(r, tc.in, tc.mergedIn)
			}
			shape := []int64{int64(tc.out), int64(tc.in)}
			kind := arch.Linear
			if tc.conv {
				shape, kind = []int64{int64(tc.out), int64(tc.in), 3, 3}, arch.Conv
			}
			m := &arch.Module{Name: "m", Kind: kind, Params: []*arch.Param{{Tensor: "m.weight", Name: "weight", Shape: shape}, {Tensor: "m.bias", Name: "bias", Shape: shape[:1]}}}
			axes := make([][]elem, len(shape))
			axes[0], axes[1] = rows, inEl
			out := map[string]*tensors.Tensor{}
			w := mapWeights{"m.weight": wa, "m.bias": ba}
			v := mapWeights{"m.weight": wb, "m.bias": bb}
			if err := refitModule(context.Background(), nil, m, w, v, js, map[string][][]elem{"m.weight": axes}, 1e-13, out, nil); err != nil {
				t.Fatal(err)
			}
			gotW, _ := out["m.weight"].Float32()
			gotB, _ := out["m.bias"].Float32()
			if got, want := out["m.weight"].Shape, []int64{int64(len(rows)), int64(len(inEl))}; got[0] != want[0] || got[1] != want[1] {
				t.Fatalf("shape %v, want %v...", got, want)
			}
			// dense reference
			nin := len(inEl) * k
			z := mat.NewDense(n, nin+1, nil)
			tg := mat.NewDense(n, len(rows), nil)
			colKind := make([]uint8, nin)
			for s := range n {
				pa, pb := xa[s*d:(s+1)*d], xb[s*d:(s+1)*d]
				for c, e := range inEl {
					for q := range k {
						var val float64
						switch e.kind {
						case kindA:
							val = float64(pa[int(e.a)*k+q])
						case kindB:
							val = float64(pb[int(e.b)*k+q])
						default:
							val = (float64(pa[int(e.a)*k+q]) + float64(pb[int(e.b)*k+q])) / 2
						}
						z.Set(s, c*k+q, val)
						colKind[c*k+q] = e.kind
					}
				}
				z.Set(s, nin, 1)
				out := func(w, b []float32, x []float32, o int) float64 {
					v := float64(b[o])
					for j := range d {
						v += float64(w[o*d+j]) * float64(x[j])
					}
					return v
				}
				for ri, e := range rows {
					var val float64
					switch e.kind {
					case kindA:
						val = out(wa, ba, pa, int(e.a))
					case kindB:
						val = out(wb, bb, pb, int(e.b))
					default:
						val = (out(wa, ba, pa, int(e.a)) + out(wb, bb, pb, int(e.b))) / 2
					}
					tg.Set(s, ri, val)
				}
			}
			var maxDiff, scale float64
			for ri, e := range rows {
				var cols []int
				for c := range nin {
					if (e.kind == kindA && colKind[c] == kindB) || (e.kind == kindB && colKind[c] == kindA) {
						continue
					}
					cols = append(cols, c)
				}
				cols = append(cols, nin)
				zs := mat.NewDense(n, len(cols), nil)
				for s := range n {
					for ci, c := range cols {
						zs.Set(s, ci, z.At(s, c))
					}
				}
				var x mat.Dense
				if err := x.Solve(zs, tg.ColView(ri)); err != nil {
					t.Fatal(err)
				}
				want := make([]float64, nin+1) // masked columns are 0
				for ci, c := range cols {
					want[c] = x.At(ci, 0)
				}
				for c := range nin {
					maxDiff = max(maxDiff, math.Abs(float64(gotW[ri*nin+c])-want[c]))
					scale = max(scale, math.Abs(want[c]))
				}
				maxDiff = max(maxDiff, math.Abs(float64(gotB[ri])-want[nin]))
			}
			if maxDiff > 1e-4*max(scale, 1) {
				t.Errorf("closed form differs from the dense solve by %g (weights up to %g)", maxDiff, scale)
			}
		})
	}
}

// unfold3x3 returns the 3x3 patches (padding 1, stride 1) of a CHW feature
// map, one row per position, channel-major then kernel row and column
// (torch.nn.functional.unfold's order).
func unfold3x3(x []float64, c, h, w int) []float32 {
	var out []float32
	for i := range h {
		for j := range w {
			for ch := range c {
				for di := -1; di <= 1; di++ {
					for dj := -1; dj <= 1; dj++ {
						y, z := i+di, j+dj
						v := 0.0
						if y >= 0 && y < h && z >= 0 && z < w {
							v = x[ch*h*w+y*w+z]
						}
						out = append(out, float32(v))
					}
				}
			}
		}
	}
	return out
}

// TestCholSolveBlocks checks the blocked solve with the Cholesky factor
// against gonum's on systems larger than one block.
func TestCholSolveBlocks(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 4))
	for _, k := range []int{1, 127, 128, 129, 300} {
		g := mat.NewDense(k+5, k, nil)
		for i := range k + 5 {
			for j := range k {
				g.Set(i, j, r.NormFloat64())
			}
		}
		var a mat.SymDense
		a.SymOuterK(1, g.T())
		rhs := mat.NewDense(k, 7, nil)
		for i := range k {
			for j := range 7 {
				rhs.Set(i, j, r.NormFloat64())
			}
		}
		var ch mat.Cholesky
		if !ch.Factorize(&a) {
			t.Fatal("not positive definite")
		}
		var want mat.Dense
		if err := ch.SolveTo(&want, rhs); err != nil {
			t.Fatal(err)
		}
		got := mat.DenseCopyOf(rhs)
		cholSolve(ch.RawU().(*mat.TriDense).RawTriangular(), got.RawMatrix())
		if !mat.EqualApprox(got, &want, 1e-8*mat.Norm(&want, math.Inf(1))) {
			t.Errorf("k=%d: blocked solve differs from gonum's", k)
		}
	}
}
