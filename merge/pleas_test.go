package merge

import (
	"context"
	"math"
	"math/rand/v2"
	"testing"

	"gonum.org/v1/gonum/mat"

	"github.com/wtool/wtool/fisher/mlp"
	"github.com/wtool/wtool/fisher/stats"
	"github.com/wtool/wtool/permute"
)

func randNet(r *rand.Rand, sizes ...int) *mlp.Network {
	n := &mlp.Network{Act: mlp.Tanh}
	for i := 1; i < len(sizes); i++ {
		l := mlp.Layer{Name: string(rune('a' + i)), Out: sizes[i], In: sizes[i-1], W: make([]float32, sizes[i]*sizes[i-1]), B: make([]float32, sizes[i])}
		for k := range l.W {
			l.W[k] = float32(r.NormFloat64() / math.Sqrt(float64(sizes[i-1])))
		}
		for k := range l.B {
			l.B[k] = float32(0.2 * r.NormFloat64())
		}
		n.Layers = append(n.Layers, l)
	}
	return n
}

// TestPLeaSClosedFormEqualsDenseLeastSquares builds the merged inputs Z and
// targets T of a layer explicitly from the two models' activations on every
// sample and solves each row block's least-squares problem densely (QR);
// PLeaS's closed form from second moments must give the same layer.
func TestPLeaSClosedFormEqualsDenseLeastSquares(t *testing.T) {
	r := rand.New(rand.NewPCG(8, 9))
	a, b := randNet(r, 5, 8, 6, 3), randNet(r, 5, 8, 6, 3)
	const n = 400
	x := make([]float32, n*5)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	var wa, wb mlp.Workspace
	a.Forward(&wa, x, n)
	b.Forward(&wb, x, n)
	acc, _ := stats.NewAccumulator([]string{"b", "c", "d"}, []int{5, 8, 6}, true)
	for l, name := range []string{"b", "c", "d"} {
		acc.AddJoint(name, wa.Inputs[l], wb.Inputs[l], n)
	}
	js := permute.StatsOf(acc.Stats(""))
	for _, width := range []float64{1, 1.5, 2} {
		res, err := PLeaS(context.Background(), a, b, js, PLeaSOptions{Width: width, Ridge: 1e-12})
		if err != nil {
			t.Fatal(err)
		}
		// layer 1 ("c"): input group = outputs of "b", output group = outputs of "c"
		m0, _ := js.Module("c")
		m1, _ := js.Module("d")
		c0, _ := permute.Correlation(m0)
		c1, _ := permute.Correlation(m1)
		match := func(c []float64, k int) []int {
			// the same assignment PLeaS makes
			p, _, _ := permute.ActivationMatching(context.Background(), &permute.Spec{Groups: map[string]int{"g": k},
				Tensors: map[string][]permute.Axis{"x.weight": {{}, {Group: "g"}}}}, corrStats{c, k})
			return p["g"]
		}
		in := partialMerge(match(c0, 8), c0, 8, width)
		out := partialMerge(match(c1, 6), c1, 6, width)
		la, lb := a.Layers[1], b.Layers[1]
		// explicit Z (n x len(in)+1) and T (n x len(out))
		z := mat.NewDense(n, len(in)+1, nil)
		tt := mat.NewDense(n, len(out), nil)
		xa, xb := wa.Inputs[1], wb.Inputs[1]
		for s := range n {
			for c, u := range in {
				var v float64
				switch {
				case u.a >= 0 && u.b >= 0:
					v = (float64(xa[s*8+u.a]) + float64(xb[s*8+u.b])) / 2
				case u.a >= 0:
					v = float64(xa[s*8+u.a])
				default:
					v = float64(xb[s*8+u.b])
				}
				z.Set(s, c, v)
			}
			z.Set(s, len(in), 1)
			ya := func(o int) float64 {
				v := float64(la.B[o])
				for c := range 8 {
					v += float64(la.W[o*8+c]) * float64(xa[s*8+c])
				}
				return v
			}
			yb := func(o int) float64 {
				v := float64(lb.B[o])
				for c := range 8 {
					v += float64(lb.W[o*8+c]) * float64(xb[s*8+c])
				}
				return v
			}
			for o, u := range out {
				switch {
				case u.a >= 0 && u.b >= 0:
					tt.Set(s, o, (ya(u.a)+yb(u.b))/2)
				case u.a >= 0:
					tt.Set(s, o, ya(u.a))
				default:
					tt.Set(s, o, yb(u.b))
				}
			}
		}
		got := res.Net.Layers[1]
		for o, uo := range out {
			var cols []int
			for c, ui := range in {
				aOnly := func(u unit) bool { return u.a >= 0 && u.b < 0 }
				bOnly := func(u unit) bool { return u.b >= 0 && u.a < 0 }
				if (aOnly(uo) && bOnly(ui)) || (bOnly(uo) && aOnly(ui)) {
					continue
				}
				cols = append(cols, c)
			}
			cols = append(cols, len(in))
			zs := mat.NewDense(n, len(cols), nil)
			for s := range n {
				for k, c := range cols {
					zs.Set(s, k, z.At(s, c))
				}
			}
			var w mat.VecDense
			if err := w.SolveVec(zs, tt.ColView(o)); err != nil {
				t.Fatal(err)
			}
			for k, c := range cols {
				var g float64
				if c == len(in) {
					g = float64(got.B[o])
				} else {
					g = float64(got.W[o*len(in)+c])
				}
				if math.Abs(g-w.AtVec(k)) > 1e-3*(1+math.Abs(w.AtVec(k))) {
					t.Fatalf("width %g, row %d col %d: closed form %g, dense least squares %g", width, o, c, g, w.AtVec(k))
				}
			}
			// masked entries are zero
			for c := range in {
				if !contains(cols, c) && got.W[o*len(in)+c] != 0 {
					t.Fatalf("width %g: row %d takes masked input %d", width, o, c)
				}
			}
		}
		if want := int(math.Round(8 * width)); res.Widths[0] != want {
			t.Errorf("width %g: merged width %d, want %d", width, res.Widths[0], want)
		}
	}
}

func contains(s []int, x int) bool {
	for _, v := range s {
		if v == x {
			return true
		}
	}
	return false
}

// corrStats serves a precomputed correlation as a joint statistics module
// whose Correlation reproduces it (unit variances, zero means).
type corrStats struct {
	c []float64
	k int
}

func (c corrStats) Has(string) bool { return true }
func (c corrStats) Module(string) (*stats.Module, error) {
	k := c.k
	m := &stats.Module{Name: "x", Dim: k, Count: 1, Sum: make([]float64, k), SumB: make([]float64, k),
		Abs: make([]float64, k), AbsB: make([]float64, k), Gram: make([]float64, k*k), GramB: make([]float64, k*k), Cross: c.c}
	for i := range k {
		m.Gram[i*k+i], m.GramB[i*k+i] = 1, 1
	}
	return m, nil
}

func TestRegMeanFormula(t *testing.T) {
	// With one model, RegMean returns its weight; with Gram matrices
	// proportional to I it is the plain average; in general it solves
	// W (G1 + G2) = W1 G1 + W2 G2.
	w1 := []float64{1, 2, 3, 4}
	w2 := []float64{0, -1, 5, 2}
	g1 := []float64{2, 0.5, 0.5, 1}
	g2 := []float64{1, -0.2, -0.2, 3}
	got, err := RegMean([][]float64{w1, w2}, [][]float64{g1, g2}, 2, 2, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	W, G1, G2 := mat.NewDense(2, 2, nil), mat.NewDense(2, 2, g1), mat.NewDense(2, 2, g2)
	var lhs, r1, r2 mat.Dense
	W.Copy(mat.NewDense(2, 2, got))
	var gs mat.Dense
	gs.Add(G1, G2)
	lhs.Mul(W, &gs)
	r1.Mul(mat.NewDense(2, 2, w1), G1)
	r2.Mul(mat.NewDense(2, 2, w2), G2)
	r1.Add(&r1, &r2)
	if !mat.EqualApprox(&lhs, &r1, 1e-12) {
		t.Errorf("W (G1+G2) = %v, want %v", mat.Formatted(&lhs), mat.Formatted(&r1))
	}
	eye := []float64{1, 0, 0, 1}
	avg, _ := RegMean([][]float64{w1, w2}, [][]float64{eye, eye}, 2, 2, 1, 0)
	for i := range avg {
		if math.Abs(avg[i]-(w1[i]+w2[i])/2) > 1e-12 {
			t.Fatalf("identity Grams: %v", avg)
		}
	}
	// alpha scales the off-diagonal entries
	a0, _ := RegMean([][]float64{w1, w2}, [][]float64{g1, g2}, 2, 2, 1e-9, 0)
	diag, _ := RegMean([][]float64{w1, w2}, [][]float64{{2, 0, 0, 1}, {1, 0, 0, 3}}, 2, 2, 1, 0)
	for i := range a0 {
		if math.Abs(a0[i]-diag[i]) > 1e-6 {
			t.Fatalf("alpha -> 0 should give the diagonal-Gram merge: %v vs %v", a0, diag)
		}
	}
}
