package merge

import (
	"context"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"testing"

	"github.com/wtool/wtool/fisher/nn"
	"github.com/wtool/wtool/io/arch"
	"github.com/wtool/wtool/permute"
)

// randWidthProblem makes groups of 1 to 4 units with random gains and
// integer costs: each group's own terms (linear in its width) and, when
// coupled, products of neighbouring groups' widths (a convolution between
// two widened spaces).
func randWidthProblem(r *rand.Rand, coupled bool) *widthProblem {
	ng := 2 + r.IntN(3)
	w := &widthProblem{}
	for g := range ng {
		n := 1 + r.IntN(4)
		w.groups = append(w.groups, string(rune('a'+g)))
		w.size = append(w.size, n)
		gains := make([]float64, n)
		for i := range gains {
			gains[i] = r.Float64()
		}
		slices.Sort(gains)
		slices.Reverse(gains)
		w.gains = append(w.gains, gains)
		// a bias-like and a weight-like term reading a fixed input
		w.terms = append(w.terms, costTerm{factor: float64(1 + r.IntN(3)), axes: []costAxis{
			{parts: []costPart{{g: g, perUnit: 1}}}, {fixed: float64(1 + r.IntN(5))}}})
	}
	if coupled {
		for g := 1; g < ng; g++ {
			w.terms = append(w.terms, costTerm{factor: float64(1 + r.IntN(2)), axes: []costAxis{
				{parts: []costPart{{g: g, perUnit: 1}}}, {parts: []costPart{{g: g - 1, perUnit: 1}}}}})
		}
	}
	w.src = w.cost(make([]int, ng))
	return w
}

// bruteWidths enumerates every combination of extra units.
func bruteWidths(w *widthProblem, limit float64) ([]int, float64) {
	ng := len(w.groups)
	e := make([]int, ng)
	var best []int
	bestGain := -1.0
	for {
		if c := w.cost(e); c <= limit*(1+1e-12) {
			if g := w.gain(e); g > bestGain+1e-12 {
				best, bestGain = slices.Clone(e), g
			}
		}
		i := 0
		for ; i < ng; i++ {
			e[i]++
			if e[i] <= w.size[i] {
				break
			}
			e[i] = 0
		}
		if i == ng {
			return best, bestGain
		}
	}
}

// TestBudgetAllocationBruteForce: with linear costs (a transformer whose
// residual stream is merged) the allocation is exact, equal to brute force
// over every combination of widths; with widths that multiply (ResNet
// stages and block interiors) it always fits the budget and stays within
// 10% of brute force's gain (how often it is exactly optimal is logged).
func TestBudgetAllocationBruteForce(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, coupled := range []bool{false, true} {
		exact, worst := 0, 1.0
		const cases = 300
		for c := range cases {
			w := randWidthProblem(r, coupled)
			if w.coupled() != coupled {
				t.Fatalf("case %d: coupled() = %v", c, w.coupled())
			}
			ratio := 1 + r.Float64()
			limit := ratio * w.src
			got := w.solve(limit)
			_, bg := bruteWidths(w, limit)
			if cost := w.cost(got); cost > limit*(1+1e-9) {
				t.Fatalf("coupled %v, case %d: cost %g over the limit %g", coupled, c, cost, limit)
			}
			g := w.gain(got)
			if math.Abs(g-bg) < 1e-9 {
				exact++
			} else if bg > 0 {
				worst = min(worst, g/bg)
			}
			if !coupled && math.Abs(g-bg) > 1e-9 {
				t.Errorf("case %d (sizes %v, budget %.3f): gain %g, brute force %g", c, w.size, ratio, g, bg)
			}
		}
		t.Logf("coupled %v: optimal in %d of %d cases, worst ratio to the optimum %.3f", coupled, exact, cases, worst)
		if worst < 0.9 {
			t.Errorf("coupled %v: a solution reaches only %.3f of the optimal gain", coupled, worst)
		}
	}
}

// TestBudgetMatchesMergedModel allocates a parameter budget on the ResNet
// pair, merges to those widths and counts the merged model's parameters:
// the budget's cost model must be the model's.
func TestBudgetMatchesMergedModel(t *testing.T) {
	p := loadPleasPair(t, "resnet-a", "resnet-b")
	ctx := context.Background()
	count := func(shape func(string) []int64) float64 {
		var n float64
		for _, m := range p.a.Arch.Modules {
			for _, q := range m.Params {
				if m.Kind == arch.Buffer || q.Name == "num_batches_tracked" || q.Name == "running_mean" || q.Name == "running_var" {
					continue
				}
				v := 1.0
				for _, s := range shape(q.Tensor) {
					v *= float64(s)
				}
				n += v
			}
		}
		return n
	}
	src := count(func(name string) []int64 { q, _ := p.a.Arch.Param(name); return q.Shape })
	perms, _, err := permute.ActivationMatching(ctx, p.spec.Spec, p.js)
	if err != nil {
		t.Fatal(err)
	}
	for _, ratio := range []float64{1, 1.3, 1.75, 2} {
		b, err := AllocateWidths(p.spec, p.a, p.js, perms, Budget{Ratio: ratio, Kind: BudgetParams})
		if err != nil {
			t.Fatal(err)
		}
		res, err := PLeaSModel(ctx, p.spec, p.a, p.b, p.js, PLeaSModelOptions{Perms: perms, Widths: b.Widths, AverageOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		got := count(func(name string) []int64 { return res.Tensors[name].Shape }) / src
		t.Logf("params budget %.2f: the merged model has %.4f times the parameters (the allocation says %.4f), gain %.2f", ratio, got, b.Ratio, b.Gain)
		if math.Abs(got-b.Ratio) > 1e-9 || got > ratio+1e-9 {
			t.Errorf("budget %g: merged model %.6f times the parameters, allocation %.6f", ratio, got, b.Ratio)
		}
	}
}

// TestBudgetTiesTransformerWidths: on testdata/pairs' Llama pair a budget
// gives every layer's MLP one width and every attention module one head
// count (config.json has one intermediate_size, one head count), within
// the budget, and the tied choice is the best: brute force over every
// (MLP width, head count) pair finds no larger gain that fits.
func TestBudgetTiesTransformerWidths(t *testing.T) {
	if _, err := os.Stat(pairsDir + "llama-a/model.safetensors"); err != nil {
		t.Skipf("no Llama pair: %v", err)
	}
	ctx := context.Background()
	a, err := nn.LoadPath(pairsDir + "llama-a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := nn.LoadPath(pairsDir + "llama-b")
	if err != nil {
		t.Fatal(err)
	}
	calib, err := nn.OpenData(pairsDir+"text_calib.safetensors", "", "-")
	if err != nil {
		t.Fatal(err)
	}
	defer calib.Close()
	st, err := nn.CollectStats(ctx, []*nn.Net{a, b}, calib, nn.StatsOptions{MaxGramElems: -1})
	if err != nil {
		t.Fatal(err)
	}
	js := permute.StatsOf(st)
	as, err := permute.BuildSpec(a.Arch)
	if err != nil {
		t.Fatal(err)
	}
	perms, err := activationPerms(ctx, as, a, b, js)
	if err != nil {
		t.Fatal(err)
	}
	for _, kind := range []BudgetKind{BudgetParams, BudgetCompute} {
		wp, err := newWidthProblem(as, js, perms, kind)
		if err != nil {
			t.Fatal(err)
		}
		if len(wp.groups) != 2 {
			t.Fatalf("%s: %d width choices (%v), want 2 (the MLPs, the heads)", kind, len(wp.groups), wp.groups)
		}
		for _, ratio := range []float64{1.1, 1.3, 1.6} {
			res, err := AllocateWidths(as, a, js, perms, Budget{Ratio: ratio, Kind: kind})
			if err != nil {
				t.Fatal(err)
			}
			widths := map[permute.GroupKind][]int{}
			for g, w := range res.Widths {
				widths[as.Info[g].Kind] = append(widths[as.Info[g].Kind], w)
			}
			for k, ws := range widths {
				if len(ws) != a.Arch.Layers || slices.Min(ws) != slices.Max(ws) {
					t.Errorf("%s budget %g: %s widths %v: not one per layer, tied", kind, ratio, k, ws)
				}
			}
			if res.Ratio > ratio+1e-9 {
				t.Errorf("%s budget %g: the merge costs %.4f", kind, ratio, res.Ratio)
			}
			_, best := bruteWidths(wp, ratio*wp.src)
			t.Logf("%s budget %g: MLP width %d, %d key/value heads per layer; cost %.4f; gain %.3f, brute force %.3f",
				kind, ratio, widths[permute.KindHidden][0], widths[permute.KindHeads][0], res.Ratio, res.Gain, best)
			if res.Gain < best*0.995-1e-9 {
				t.Errorf("%s budget %g: gain %.4f, brute force over the tied widths %.4f", kind, ratio, res.Gain, best)
			}
		}
	}
}
