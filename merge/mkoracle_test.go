package merge

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"pgregory.net/rapid"

	"github.com/wtool/wtool/internal/mkgolden"
	"github.com/wtool/wtool/internal/mkref"
	"github.com/wtool/wtool/merge/mkconfig"
)

// oracle merges a case with internal/mkref, the float64 reference of
// mergekit's methods.
func oracle(c *mkgolden.Case) ([]float64, error) {
	def := mkconfig.Methods[c.Method]
	in := mkref.Inputs{Shape: c.Shape}
	var per []map[string]any
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
	}
	g, pm, err := mkref.Resolve(def, c.Parameters, per, make([]bool, len(per)))
	if err != nil {
		return nil, err
	}
	in.Global, in.PerModel = g, pm
	return mkref.Merge(c.Method, in)
}

// oracleCase is a random case of a deterministic method: models near a
// base (offsets of mixed scales, some entries unchanged), a shape whose
// rows straddle the kernels' 4096-element blocks when it is large.
type oracleCase struct {
	method string
	models int
	base   bool
	global map[string]any
	per    func(i int) map[string]any
}

var oracleCases = []oracleCase{
	{method: "ties", models: 3, base: true, global: map[string]any{"normalize": true}, per: func(i int) map[string]any {
		return map[string]any{"weight": 0.5 + float64(i)/4, "density": 0.4 + 0.2*float64(i)}
	}},
	{method: "ties", models: 2, base: true, global: map[string]any{"rescale": true}, per: func(i int) map[string]any { return map[string]any{"weight": 1.0, "density": 0.3} }},
	{method: "breadcrumbs", models: 3, base: true, global: map[string]any{"rescale": true}, per: func(i int) map[string]any {
		return map[string]any{"weight": 1.0 - float64(i)/4, "density": 0.5, "gamma": 0.05}
	}},
	{method: "breadcrumbs_ties", models: 3, base: true, global: map[string]any{"lambda": 0.8}, per: func(i int) map[string]any {
		return map[string]any{"weight": 1.0, "density": 0.6, "gamma": 0.1 * float64(i)}
	}},
	{method: "model_stock", models: 3, base: true},
	{method: "model_stock", models: 2, base: true, global: map[string]any{"filter_wise": true}},
	{method: "nearswap", models: 1, base: true, global: map[string]any{"t": 0.05}},
	{method: "ram", models: 3, base: true, global: map[string]any{"epsilon": 0.01}},
	{method: "ramplus_tl", models: 3, base: true, global: map[string]any{"epsilon": 0.01, "r": 0.3, "alpha": 0.5}},
	{method: "sce", models: 3, base: true, global: map[string]any{"select_topk": 0.4}},
	{method: "sce", models: 2, base: true},
	{method: "arcee_fusion", models: 1, base: true},
	{method: "nuslerp", models: 2, per: func(i int) map[string]any { return map[string]any{"weight": 0.3 + 0.4*float64(i)} }},
	{method: "nuslerp", models: 2, base: true, global: map[string]any{"nuslerp_flatten": false}, per: func(i int) map[string]any { return map[string]any{"weight": 1.0 + float64(i)} }},
	{method: "nuslerp", models: 2, base: true, global: map[string]any{"nuslerp_flatten": false, "nuslerp_row_wise": true}, per: func(i int) map[string]any { return map[string]any{"weight": 0.5} }},
	{method: "multislerp", models: 3, base: true, per: func(i int) map[string]any { return map[string]any{"weight": 1.0 + float64(i)} }},
	{method: "multislerp", models: 2, global: map[string]any{"normalize_weights": false}, per: func(i int) map[string]any { return map[string]any{"weight": 0.4} }},
	{method: "karcher", models: 3, global: map[string]any{"max_iter": 20}},
}

// boundaryTies reports whether a model's task vector has two equal
// non-zero magnitudes (float32 inputs often do).
func boundaryTies(c *mkgolden.Case) bool {
	b := c.Base().Values
	for _, in := range c.Inputs {
		if in.Model == c.BaseModel {
			continue
		}
		seen := map[float64]bool{}
		for k, x := range in.Values {
			d := math.Abs(float64(x) - float64(b[k]))
			if d != 0 && seen[d] {
				return true
			}
			seen[d] = true
		}
	}
	return false
}

// The streaming implementations equal the float64 reference (mkref) on
// random inputs of random shapes, small and multi-block, through a
// mergekit YAML configuration.
func TestMethodsMatchReference(t *testing.T) {
	g := newGoldenRunner(t)
	rapid.Check(t, func(rt *rapid.T) {
		oc := oracleCases[rapid.IntRange(0, len(oracleCases)-1).Draw(rt, "case")]
		var shape []int
		switch rapid.IntRange(0, 2).Draw(rt, "kind") {
		case 0:
			shape = []int{rapid.IntRange(2, 50).Draw(rt, "n")}
		case 1:
			shape = []int{rapid.IntRange(1, 12).Draw(rt, "rows"), rapid.IntRange(1, 12).Draw(rt, "cols")}
		default: // rows straddling blocks, several blocks
			shape = []int{rapid.IntRange(2, 5).Draw(rt, "rows"), rapid.IntRange(3000, 5000).Draw(rt, "cols")}
		}
		r := rand.New(rand.NewPCG(rapid.Uint64().Draw(rt, "seed"), 1))
		n := 1
		for _, s := range shape {
			n *= s
		}
		c := &mkgolden.Case{Method: oc.method, Shape: shape, Tensor: "model.layers.0.mlp.up_proj.weight", Parameters: oc.global}
		base := make([]float32, n)
		for k := range base {
			base[k] = float32(r.NormFloat64())
		}
		for i := range oc.models {
			x := make([]float32, n)
			scale := 0.02 * float64(1+i)
			for k := range x {
				x[k] = base[k]
				if r.IntN(8) != 0 { // some entries unchanged
					x[k] += float32(scale * r.NormFloat64())
				}
			}
			var p map[string]any
			if oc.per != nil {
				p = oc.per(i)
			}
			c.Inputs = append(c.Inputs, mkgolden.Input{Model: fmt.Sprint("m", i), Params: p, Values: x})
		}
		if oc.base {
			c.BaseModel = "base"
			c.Inputs = append(c.Inputs, mkgolden.Input{Model: "base", Values: base})
		}
		if strings.HasPrefix(oc.method, "breadcrumbs") && boundaryTies(c) {
			// equal magnitudes at a rank boundary: mergekit's sort leaves
			// their order unspecified; mkref drops the first ones at the
			// top, wtool the last (docs/mergekit.md section 4)
			return
		}
		want, werr := oracle(c)
		for _, v := range want {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				// a zero divisor (model_stock's cos = -1): mergekit
				// writes Inf/NaN, wtool refuses to
				werr = fmt.Errorf("non-finite result")
			}
		}
		got, gerr := g.run(c, 0)
		if (werr != nil) != (gerr != nil) {
			rt.Fatalf("%s %v: reference error %v, wtool error %v", oc.method, shape, werr, gerr)
		}
		if werr != nil {
			return
		}
		for k := range want {
			if d := math.Abs(float64(got[k]) - want[k]); d > 2e-6*(1+math.Abs(want[k])) {
				rt.Fatalf("%s %v: element %d = %v, reference %v", oc.method, shape, k, got[k], want[k])
			}
		}
		g.forget(c)
	})
}

// Properties: the order of the models does not matter (every method
// but nuslerp's t = w2/(w1+w2), which swaps with the weights), and merging
// identical models gives that model.
func TestMethodsOrderAndIdentity(t *testing.T) {
	g := newGoldenRunner(t)
	rapid.Check(t, func(rt *rapid.T) {
		oc := oracleCases[rapid.IntRange(0, len(oracleCases)-1).Draw(rt, "case")]
		if oc.models < 2 {
			return
		}
		n := rapid.IntRange(4, 40).Draw(rt, "n")
		r := rand.New(rand.NewPCG(rapid.Uint64().Draw(rt, "seed"), 2))
		base := make([]float32, n)
		for k := range base {
			base[k] = float32(r.NormFloat64())
		}
		mk := func(order []int, same bool) *mkgolden.Case {
			c := &mkgolden.Case{Method: oc.method, Shape: []int{n}, Tensor: "w", Parameters: oc.global}
			xs := make([][]float32, oc.models)
			rr := rand.New(rand.NewPCG(7, uint64(n)))
			for i := range xs {
				xs[i] = make([]float32, n)
				for k := range xs[i] {
					xs[i][k] = base[k] + float32(0.05*rr.NormFloat64())
					if same {
						xs[i][k] = xs[0][k]
					}
				}
			}
			for _, i := range order {
				var p map[string]any
				if oc.per != nil {
					p = oc.per(i)
				}
				c.Inputs = append(c.Inputs, mkgolden.Input{Model: fmt.Sprint("m", i), Params: p, Values: xs[i]})
			}
			if oc.base {
				c.BaseModel = "base"
				c.Inputs = append(c.Inputs, mkgolden.Input{Model: "base", Values: base})
			}
			return c
		}
		order := make([]int, oc.models)
		for i := range order {
			order[i] = i
		}
		perm := rapid.Permutation(order).Draw(rt, "perm")
		a, errA := g.run(mk(order, false), 0)
		b, errB := g.run(mk(perm, false), 0)
		if (errA != nil) != (errB != nil) {
			rt.Fatalf("%s: order changes the outcome: %v vs %v", oc.method, errA, errB)
		}
		for k := range a {
			if math.Abs(float64(a[k]-b[k])) > 1e-5*(1+math.Abs(float64(a[k]))) {
				rt.Fatalf("%s: order %v changes element %d: %v vs %v", oc.method, perm, k, a[k], b[k])
			}
		}
		// identical models: the model itself, for the methods that average
		// (not the task-vector ones, which add or rescale the shared offset)
		// (sce with select_topk < 1 keeps no entry of zero variance; unnormalized
		// multislerp weights scale the norm)
		_, topk := oc.global["select_topk"]
		_, unnormalized := oc.global["normalize_weights"]
		if slices.Contains([]string{"model_stock", "multislerp", "karcher", "nuslerp", "sce"}, oc.method) && !topk && !unnormalized {
			c := mk(order, true)
			got, err := g.run(c, 0)
			if err != nil {
				return
			}
			for k, v := range c.Inputs[0].Values {
				if math.Abs(float64(got[k]-v)) > 1e-5*(1+math.Abs(float64(v))) {
					rt.Fatalf("%s of identical models: element %d = %v, want %v", oc.method, k, got[k], v)
				}
			}
		}
	})
}
