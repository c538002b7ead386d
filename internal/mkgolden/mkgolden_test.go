package mkgolden

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"testing"
)

// The vectors of every method load, and every case is complete.
func TestLoadAll(t *testing.T) {
	ms, err := Methods()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"arcee_fusion", "breadcrumbs", "breadcrumbs_ties", "dare_linear", "dare_ties", "della", "della_linear",
		"karcher", "linear", "model_stock", "multislerp", "nearswap", "nuslerp", "passthrough", "ram", "ramplus_tl", "sce",
		"slerp", "task_arithmetic", "ties"}
	if !slices.Equal(ms, want) {
		t.Fatalf("methods %v, want %v", ms, want)
	}
	for _, m := range ms {
		f, err := Load(m)
		if err != nil {
			t.Fatal(err)
		}
		if f.Mergekit.Commit == "" || len(f.Cases) == 0 {
			t.Errorf("%s: no commit or no cases", m)
		}
		shapes := map[int]bool{}
		for _, c := range f.Cases {
			shapes[len(c.Shape)] = true
			if c.Expected != nil && c.Atol <= 0 {
				t.Errorf("%s/%s: no tolerance", m, c.Name)
			}
			if c.Expected != nil && c.MergekitDiffers == "" && c.FormulaDeviation > c.Atol {
				t.Errorf("%s/%s: mergekit and the formula differ by %g, more than the tolerance %g", m, c.Name, c.FormulaDeviation, c.Atol)
			}
		}
		if !shapes[1] || !shapes[2] {
			t.Errorf("%s: want 1-D and 2-D cases, have ranks %v", m, shapes)
		}
	}
}

// --- small reference implementations, to check that the checker accepts a
// right implementation and rejects wrong ones.

func param(c *Case, in *Input, name string) (float64, bool) {
	v, ok := in.Params[name]
	if !ok {
		v, ok = c.Parameters[name]
	}
	if !ok {
		return 0, false
	}
	switch x := v.(type) {
	case float64:
		return x, true
	case bool:
		if x {
			return 1, true
		}
		return 0, true
	}
	return 0, false
}

func global(c *Case, name string, def any) any {
	if v, ok := c.Parameters[name]; ok {
		return v
	}
	return def
}

func linear(c *Case, _ uint64) ([]float32, error) {
	norm := global(c, "normalize", true).(bool)
	out := make([]float64, c.Numel())
	var sw float64
	for i := range c.Inputs {
		w, ok := param(c, &c.Inputs[i], "weight")
		if !ok {
			return nil, fmt.Errorf("%s: missing required parameter weight", c.Inputs[i].Model)
		}
		sw += w
		for j, v := range c.Inputs[i].Values {
			out[j] += w * float64(v)
		}
	}
	res := make([]float32, len(out))
	for j := range out {
		if norm {
			out[j] /= sw
		}
		res[j] = float32(out[j])
	}
	return res, nil
}

type tv struct {
	w float64
	d []float64
}

// taskVectors returns base and the sparsified, weighted task vectors.
func taskVectors(c *Case, seed uint64, sparsify func(d []float64, in *Input, rng *rand.Rand) ([]float64, error)) ([]float64, []tv, error) {
	b := c.Base()
	if b == nil {
		return nil, nil, errors.New("base_model is required")
	}
	base := make([]float64, c.Numel())
	for i, v := range b.Values {
		base[i] = float64(v)
	}
	var tvs []tv
	for k := range c.Inputs {
		in := &c.Inputs[k]
		if in.Model == c.BaseModel {
			continue
		}
		w, ok := param(c, in, "weight")
		if !ok {
			return nil, nil, fmt.Errorf("%s: missing required parameter weight", in.Model)
		}
		d := make([]float64, len(base))
		for i, v := range in.Values {
			d[i] = float64(float32(v - b.Values[i])) // mergekit computes the delta in float32
		}
		rng := rand.New(rand.NewPCG(seed, uint64(k)))
		var err error
		if d, err = sparsify(d, in, rng); err != nil {
			return nil, nil, err
		}
		tvs = append(tvs, tv{w, d})
	}
	return base, tvs, nil
}

func combine(c *Case, base []float64, tvs []tv, consensus, normalize bool) []float32 {
	lambda := global(c, "lambda", 1.0).(float64)
	out := make([]float32, len(base))
	for i := range base {
		var sum, mixed, div float64
		for _, t := range tvs {
			sum += t.w * t.d[i]
		}
		for _, t := range tvs {
			wd := t.w * t.d[i]
			if consensus && !(wd > 0 && sum >= 0 || wd < 0 && sum < 0) {
				continue
			}
			mixed += wd
			div += t.w
		}
		if consensus && div == 0 || !consensus && math.Abs(div) < 1e-8 {
			div = 1
		}
		if normalize {
			mixed /= div
		}
		out[i] = float32(base[i] + lambda*mixed)
	}
	return out
}

func l1rescale(d, kept []float64) []float64 {
	var a, b float64
	for i := range d {
		a += math.Abs(d[i])
		b += math.Abs(kept[i])
	}
	if a < 1e-7 || b < 1e-7 {
		return kept
	}
	for i := range kept {
		kept[i] *= a / b
	}
	return kept
}

func ties(c *Case, seed uint64) ([]float32, error) {
	rescale := global(c, "rescale", false).(bool)
	base, tvs, err := taskVectors(c, seed, func(d []float64, in *Input, _ *rand.Rand) ([]float64, error) {
		density, ok := param(c, in, "density")
		if !ok {
			density = 1
		}
		if density >= 1 {
			return d, nil
		}
		k := int(density * float64(len(d)))
		if k <= 0 {
			return nil, errors.New("density keeps no entry")
		}
		idx := make([]int, len(d))
		for i := range idx {
			idx[i] = i
		}
		sort.SliceStable(idx, func(a, b int) bool { return math.Abs(d[idx[a]]) > math.Abs(d[idx[b]]) })
		kept := make([]float64, len(d))
		for _, i := range idx[:k] {
			kept[i] = d[i]
		}
		if rescale {
			return l1rescale(d, kept), nil
		}
		return kept, nil
	})
	if err != nil {
		return nil, err
	}
	return combine(c, base, tvs, true, global(c, "normalize", true).(bool)), nil
}

// dareLinear drops entries with probability 1 - density; rescale is "l1"
// (mergekit's), "inverse" (1/density, the paper's) or "none".
func dareLinear(mode string) Func {
	return func(c *Case, seed uint64) ([]float32, error) {
		rescale := mode
		if v, ok := c.Parameters["rescale"].(bool); ok && !v {
			rescale = "none"
		}
		base, tvs, err := taskVectors(c, seed, func(d []float64, in *Input, rng *rand.Rand) ([]float64, error) {
			density, ok := param(c, in, "density")
			if !ok {
				density = 1
			}
			if density >= 1 {
				return d, nil
			}
			kept := make([]float64, len(d))
			for i := range d {
				if rng.Float64() < density {
					kept[i] = d[i]
					if rescale == "inverse" {
						kept[i] /= density
					}
				}
			}
			if rescale == "l1" {
				return l1rescale(d, kept), nil
			}
			return kept, nil
		})
		if err != nil {
			return nil, err
		}
		return combine(c, base, tvs, false, global(c, "normalize", false).(bool)), nil
	}
}

// dellaLinear keeps entry j of a row with probability density - eps +
// 2 eps rank_j / (n - 1) (rank by magnitude within the row, 0-based).
func dellaLinear(flatProb bool) Func {
	return func(c *Case, seed uint64) ([]float32, error) {
		rescale := global(c, "rescale", true).(bool)
		base, tvs, err := taskVectors(c, seed, func(d []float64, in *Input, rng *rand.Rand) ([]float64, error) {
			density, ok := param(c, in, "density")
			if !ok {
				density = 1
			}
			eps, ok := param(c, in, "epsilon")
			if !ok {
				eps = 0.15
			}
			if density >= 1 {
				return d, nil
			}
			if density <= 0 {
				return make([]float64, len(d)), nil
			}
			if density+eps >= 1 || density-eps <= 0 {
				return nil, errors.New("density - epsilon and density + epsilon must lie in (0, 1)")
			}
			cols := c.Shape[len(c.Shape)-1]
			if len(c.Shape) < 2 {
				cols = len(d)
			}
			kept := make([]float64, len(d))
			for r := 0; r < len(d); r += cols {
				row := d[r : r+cols]
				idx := make([]int, cols)
				for i := range idx {
					idx[i] = i
				}
				sort.SliceStable(idx, func(a, b int) bool { return math.Abs(row[idx[a]]) < math.Abs(row[idx[b]]) })
				for rank, i := range idx {
					p := density
					if cols > 1 && !flatProb {
						p = density - eps + 2*eps*float64(rank)/float64(cols-1)
					}
					if rng.Float64() < p {
						kept[r+i] = row[i]
					}
				}
			}
			if rescale {
				return l1rescale(d, kept), nil
			}
			return kept, nil
		})
		if err != nil {
			return nil, err
		}
		return combine(c, base, tvs, false, global(c, "normalize", false).(bool)), nil
	}
}

func TestReferenceImplementationsPass(t *testing.T) {
	t.Run("linear", func(t *testing.T) { Check(t, "linear", linear) })
	t.Run("ties", func(t *testing.T) { Check(t, "ties", ties) })
	t.Run("dare_linear", func(t *testing.T) { Check(t, "dare_linear", dareLinear("l1")) })
	t.Run("della_linear", func(t *testing.T) { Check(t, "della_linear", dellaLinear(false)) })
}

// verifyAll returns the failures of fn over a method's cases.
func verifyAll(t *testing.T, method string, fn Func, runs int) []string {
	f, err := Load(method)
	if err != nil {
		t.Fatal(err)
	}
	var fails []string
	for _, c := range f.Cases {
		if err := c.Verify(fn, runs); err != nil {
			fails = append(fails, c.Name+": "+err.Error())
		}
	}
	return fails
}

// The checker rejects implementations that differ from mergekit.
func TestWrongImplementationsFail(t *testing.T) {
	for _, tc := range []struct {
		name, method string
		fn           Func
		want         string // a case that must fail
	}{
		{"linear never normalizing", "linear", func(c *Case, s uint64) ([]float32, error) {
			c2 := *c
			c2.Parameters = map[string]any{"normalize": false}
			return linear(&c2, s)
		}, "mat-normalized"},
		{"linear defaulting a missing weight to 1", "linear", func(c *Case, s uint64) ([]float32, error) {
			c2 := *c
			c2.Inputs = slices.Clone(c.Inputs)
			for i := range c2.Inputs {
				if _, ok := c2.Inputs[i].Params["weight"]; !ok {
					c2.Inputs[i].Params = map[string]any{"weight": 1.0}
				}
			}
			return linear(&c2, s)
		}, "missing-weight"},
		{"ties zeroing instead of refusing density 0", "ties", func(c *Case, s uint64) ([]float32, error) {
			out, err := ties(c, s)
			if err != nil && strings.Contains(err.Error(), "keeps no entry") {
				return c.Base().Values, nil
			}
			return out, err
		}, "density-keeps-nothing"},
		{"DARE rescaled by 1/density", "dare_linear", dareLinear("inverse"), "mat-single"},
		{"DELLA with flat probabilities", "della_linear", dellaLinear(true), "tall-single"},
		{"DARE ignoring the seed", "dare_linear", func(c *Case, _ uint64) ([]float32, error) { return dareLinear("l1")(c, 7) }, "vec-single"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fails := verifyAll(t, tc.method, tc.fn, 300)
			found := false
			for _, f := range fails {
				if strings.HasPrefix(f, tc.want+":") {
					found = true
					t.Log(f)
				}
			}
			if !found {
				t.Errorf("case %s did not fail; failures: %q", tc.want, fails)
			}
		})
	}
}

func TestSkip(t *testing.T) {
	f, err := Load("linear")
	if err != nil {
		t.Fatal(err)
	}
	err = f.Cases[0].Verify(func(*Case, uint64) ([]float32, error) {
		return nil, fmt.Errorf("not yet: %w", ErrSkip)
	}, 0)
	if !errors.Is(err, ErrSkip) {
		t.Fatalf("got %v, want ErrSkip", err)
	}
}
