package mkref

import (
	"math"
	"testing"

	"pgregory.net/rapid"

	"github.com/wtool/wtool/internal/mkgolden"
	"github.com/wtool/wtool/merge/mkconfig"
)

// run merges a golden case with the reference implementation.
func run(c *mkgolden.Case, seed uint64) ([]float32, error) {
	def := mkconfig.Methods[c.Method]
	in := Inputs{Shape: c.Shape, Seed: seed}
	var per []map[string]any
	var isBase []bool
	for _, x := range c.Inputs {
		v := make([]float64, len(x.Values))
		for i, f := range x.Values {
			v[i] = float64(f)
		}
		if x.Model == c.BaseModel && def.Base != mkconfig.BaseInput {
			in.Base = v
			continue
		}
		in.Models = append(in.Models, v)
		per = append(per, x.Params)
		isBase = append(isBase, false)
	}
	g, pm, err := Resolve(def, c.Parameters, per, isBase)
	if err != nil {
		return nil, err
	}
	in.Global, in.PerModel = g, pm
	out, err := Merge(c.Method, in)
	if err != nil {
		return nil, err
	}
	res := make([]float32, len(out))
	for i, v := range out {
		res[i] = float32(v)
	}
	return res, nil
}

// The reference implementation reproduces every golden vector: mergekit's
// values for deterministic methods, its statistics for DARE and DELLA, its
// refusals, and the formula where mergekit has a bug.
func TestGolden(t *testing.T) {
	for _, m := range mkconfig.MethodNames() {
		t.Run(m, func(t *testing.T) { mkgolden.Check(t, m, run) })
	}
}

// f64s draws values on a grid of 1/8 (sums of a few are exact, so ties in
// TIES' sign election do not depend on the summation order).
func f64s(t *rapid.T, n int, label string) []float64 {
	ks := rapid.SliceOfN(rapid.IntRange(-16, 16), n, n).Draw(t, label)
	out := make([]float64, n)
	for i, k := range ks {
		out[i] = float64(k) / 8
	}
	return out
}

// Properties the methods have (the list): order independence,
// identities, endpoints.
func TestProperties(t *testing.T) {
	resolve := func(t *rapid.T, m string, global map[string]any, per []map[string]any) (map[string]float64, []map[string]float64) {
		g, pm, err := Resolve(mkconfig.Methods[m], global, per, make([]bool, len(per)))
		if err != nil {
			t.Fatal(err)
		}
		return g, pm
	}
	close := func(a, b []float64, tol float64) bool {
		for i := range a {
			if math.Abs(a[i]-b[i]) > tol*(1+math.Abs(b[i])) {
				return false
			}
		}
		return true
	}
	t.Run("order independence", func(t *testing.T) {
		rapid.Check(t, func(t *rapid.T) {
			n := rapid.IntRange(2, 12).Draw(t, "n")
			base := f64s(t, n, "base")
			a, b, c := f64s(t, n, "a"), f64s(t, n, "b"), f64s(t, n, "c")
			w := func(l string) float64 { return float64(rapid.IntRange(1, 16).Draw(t, l)) / 8 }
			wa, wb, wc := w("wa"), w("wb"), w("wc")
			// the spherical means start from the mean direction: with inputs
			// that (nearly) cancel it is undefined and they fall back on
			// the first input, in mergekit too
			mean := make([]float64, n)
			for _, x := range [][]float64{a, b, c} {
				if nx := norm2(x); nx > 0 {
					for i := range mean {
						mean[i] += x[i] / nx
					}
				}
			}
			degenerate := norm2(mean) < 0.5
			for _, m := range []string{"linear", "task_arithmetic", "ties", "breadcrumbs_ties", "multislerp", "karcher", "model_stock", "sce", "ram", "ramplus_tl"} {
				if degenerate && (m == "karcher" || m == "multislerp") {
					continue
				}
				per := []map[string]any{{"weight": wa, "density": 0.6}, {"weight": wb, "density": 0.6}, {"weight": wc, "density": 0.6}}
				g, pm := resolve(t, m, map[string]any{"gamma": 0.1}, per)
				bp := base
				if mkconfig.Methods[m].Base == mkconfig.BaseInput {
					bp = nil
				}
				x, err := Merge(m, Inputs{Shape: []int{n}, Base: bp, Models: [][]float64{a, b, c}, Global: g, PerModel: pm})
				if err != nil {
					continue // e.g. ties keeping no entry of a tiny tensor
				}
				y, err := Merge(m, Inputs{Shape: []int{n}, Base: bp, Models: [][]float64{c, a, b}, Global: g, PerModel: []map[string]float64{pm[2], pm[0], pm[1]}})
				if err != nil || !close(x, y, 1e-9) {
					t.Fatalf("%s depends on the order of its inputs: %v vs %v (%v)", m, x, y, err)
				}
			}
		})
	})
	t.Run("identities and endpoints", func(t *testing.T) {
		rapid.Check(t, func(t *rapid.T) {
			n := rapid.IntRange(2, 12).Draw(t, "n")
			base, a := f64s(t, n, "base"), f64s(t, n, "a")
			if norm2(base) < 1e-3 || norm2(a) < 1e-3 {
				t.Skip("degenerate")
			}
			one := []map[string]any{{"weight": 1.0}}
			// merging copies of one model gives that model
			for _, m := range []string{"linear", "karcher", "multislerp"} {
				g, pm := resolve(t, m, nil, []map[string]any{{"weight": 1.0}, {"weight": 2.0}})
				out, err := Merge(m, Inputs{Shape: []int{n}, Models: [][]float64{a, a}, Global: g, PerModel: pm})
				if err != nil || !close(out, a, 1e-6) {
					t.Fatalf("%s of two copies: %v, want %v (%v)", m, out, a, err)
				}
			}
			// slerp's endpoints are its inputs
			for _, tt := range []float64{0, 1} {
				g, pm := resolve(t, "slerp", map[string]any{"t": tt}, []map[string]any{{}})
				out, _ := Merge("slerp", Inputs{Shape: []int{n}, Base: base, Models: [][]float64{a}, Global: g, PerModel: pm})
				want := base
				if tt == 1 {
					want = a
				}
				if !close(out, want, 1e-9) {
					t.Fatalf("slerp t=%g: %v, want %v", tt, out, want)
				}
			}
			// a task vector of weight 1 and density 1 is added whole
			for _, m := range []string{"task_arithmetic", "ties", "dare_linear", "della_linear", "breadcrumbs"} {
				g, pm := resolve(t, m, nil, one)
				out, err := Merge(m, Inputs{Shape: []int{n}, Base: base, Models: [][]float64{a}, Global: g, PerModel: pm, Seed: 1})
				if err != nil || !close(out, a, 1e-9) {
					t.Fatalf("%s of one model at density 1: %v, want %v (%v)", m, out, a, err)
				}
			}
			// nearswap with t = 0 is the base, with a huge t the other model
			for tt, want := range map[float64][]float64{0: base, 1e9: a} {
				g, pm := resolve(t, "nearswap", map[string]any{"t": tt}, []map[string]any{{}})
				out, _ := Merge("nearswap", Inputs{Shape: []int{n}, Base: base, Models: [][]float64{a}, Global: g, PerModel: pm})
				if !close(out, want, 1e-9) {
					t.Fatalf("nearswap t=%g: %v", tt, out)
				}
			}
		})
	})
}
