package permute

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/wtool/wtool/permute/bfgemm"
	"github.com/wtool/wtool/tensors"
)

// tensorSource serves weights in their stored dtype (optionally from
// unaligned memory, to cover the byte-wise decoding path).
type tensorSource struct {
	w         weights
	unaligned bool
}

func (s tensorSource) Float32(name string) ([]float32, []int64, error) {
	t, ok := s.w[name]
	if !ok {
		return nil, nil, fmt.Errorf("no tensor %q", name)
	}
	v, err := t.Float32()
	return v, t.Shape, err
}

func (s tensorSource) raw(name string) (rawTensor, error) {
	t, ok := s.w[name]
	if !ok {
		return rawTensor{}, fmt.Errorf("no tensor %q", name)
	}
	data := t.Data
	if s.unaligned {
		b := make([]byte, len(data)+1)
		copy(b[1:], data)
		data = b[1:]
	}
	return rawTensor{name: name, dtype: t.DType, shape: t.Shape, data: data}, nil
}

func (tensorSource) done(string)     {}
func (tensorSource) prefetch(string) {}

func convertWeights(t *testing.T, w weights, dt tensors.DType) weights {
	t.Helper()
	out := weights{}
	for n, x := range w {
		y, err := x.ConvertTo(dt)
		if err != nil {
			t.Fatal(err)
		}
		out[n] = y
	}
	return out
}

// oddSpec is a spec with the awkward cases: rank-3 and rank-4 tensors,
// groups on middle axes, blocks, a group acting on two axes of one square
// tensor, 1-D tensors, and a tensor no group touches.
func oddSpec(r *rand.Rand) (*Spec, weights) {
	s := &Spec{Groups: map[string]int{"a": 6, "b": 5, "c": 3, "d": 1}, Tensors: map[string][]Axis{
		"conv.weight": {{Group: "a"}, {Group: "b"}, {}, {}},        // [6, 5, 3, 3]
		"mid.weight":  {{}, {Group: "b"}, {Group: "c", Block: 4}},  // [7, 5, 12]
		"sq.weight":   {{Group: "a"}, {Group: "a"}},                // [6, 6]
		"heads":       {{Group: "c", Block: 2}, {Group: "a"}},      // [6, 6]
		"bias":        {{Group: "b"}},                              // [5]
		"one":         {{Group: "d"}, {Group: "b", Block: 3}},      // [1, 15]
		"fixed":       nil,                                         // [4]
		"big":         {{Group: "c", Block: 16}, {}, {Group: "b"}}, // [48, 3, 5]
	}}
	w := weights{}
	add := func(name string, shape ...int64) {
		w[name] = randomTensor(r, name, tensors.F32, 1, shape...)
	}
	add("conv.weight", 6, 5, 3, 3)
	add("mid.weight", 7, 5, 12)
	add("sq.weight", 6, 6)
	add("heads", 6, 6)
	add("bias", 5)
	add("one", 1, 15)
	add("fixed", 4)
	add("big", 48, 3, 5)
	return s, w
}

func llamaCase(r *rand.Rand) (*Spec, weights) {
	c := llamaCfg{hidden: 32, inter: 48, heads: 4, kvHeads: 2, headDim: 8, layers: 2, vocab: 40, qkvBias: true}
	w := makeLlama(r, c)
	s, err := legacyLlamaSpec(w.shapes(), &legacyLlamaConfig{Heads: 4, KVHeads: 2, HeadDim: 8})
	if err != nil {
		panic(err)
	}
	return s, w
}

// TestCostMatchesReference compares the streamed cost matrices (decoded
// block by block in every dtype, from aligned and unaligned memory, with
// K-blocks from whole tensors down to a few elements, the two-model side
// and MergeMany's mean of permuted models) with the reference's, which
// permutes whole float32 tensors and multiplies each with one GEMM.
func TestCostMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(71, 72))
	specs := map[string]func(*rand.Rand) (*Spec, weights){"odd": oddSpec, "llama": llamaCase, "gpt2": fusedCase("gpt2"), "phi3": fusedCase("phi3")}
	for name, mk := range specs {
		s, w0 := mk(r)
		_, w1 := mk(r)
		_, w2 := mk(r)
		for _, dt := range []tensors.DType{tensors.F32, tensors.BF16, tensors.F16, tensors.F64} {
			ws := []weights{convertWeights(t, w0, dt), convertWeights(t, w1, dt), convertWeights(t, w2, dt)}
			mems := []MemorySource{sourceOf(t, ws[0]), sourceOf(t, ws[1]), sourceOf(t, ws[2])}
			p := randomPerms(r, s)
			p1, p2 := randomPerms(r, s), randomPerms(r, s)
			for _, unaligned := range []bool{false, true} {
				for _, block := range []int{blockBytes, 4 * 97, 4} {
					e := newEngine(s)
					e.block = block
					srcs := []rawSource{tensorSource{ws[0], unaligned}, tensorSource{ws[1], unaligned}, tensorSource{ws[2], unaligned}}
					for _, g := range s.GroupNames() {
						n := s.Groups[g]
						got := make([]float32, n*n)
						// two models: A plain, B with every other permutation
						if err := e.cost(context.Background(), g, side{members: []member{{src: srcs[0]}}}, member{src: srcs[1], perm: p}, got); err != nil {
							t.Fatal(err)
						}
						want := make([]float64, n*n)
						var ws refWorkspace
						if err := ws.refCostMatrix(s, g, mems[0], mems[1], p, want); err != nil {
							t.Fatal(err)
						}
						compareCost(t, fmt.Sprintf("%s %s unaligned=%v block=%d group %s", name, dt, unaligned, block, g), got, want)
						// MergeMany: A is the mean of two permuted models
						a := side{members: []member{{src: srcs[0], perm: p1}, {src: srcs[2], perm: p2}}, scale: 0.5}
						if err := e.cost(context.Background(), g, a, member{src: srcs[1], perm: p}, got); err != nil {
							t.Fatal(err)
						}
						mean := refMeanSource([]MemorySource{refApplySource(s, mems[0], p1), refApplySource(s, mems[2], p2)})
						if err := ws.refCostMatrix(s, g, mean, mems[1], p, want); err != nil {
							t.Fatal(err)
						}
						compareCost(t, fmt.Sprintf("%s %s mean block=%d group %s", name, dt, block, g), got, want)
					}
					// bf16 pairs of models go through the bf16 GEMM
					if want := dt == tensors.BF16 && !unaligned && name != "odd" && bfgemm.Available(); (e.stats.BF16FLOPs > 0) != want {
						t.Errorf("%s %s unaligned=%v block=%d: %g FLOP by the bf16 kernel", name, dt, unaligned, block, e.stats.BF16FLOPs)
					}
				}
			}
			// streamed distances and objectives
			d, err := Distance(s, tensorSource{ws[0], false}, tensorSource{ws[1], true}, p)
			if err != nil {
				t.Fatal(err)
			}
			dr, _ := refDistance(s, mems[0], mems[1], p)
			o, _ := Objective(s, tensorSource{ws[0], true}, tensorSource{ws[1], false}, p)
			or, _ := refObjective(s, mems[0], mems[1], p)
			if math.Abs(d-dr) > 1e-12*dr || math.Abs(o-or) > 1e-12*math.Abs(or)+1e-12 {
				t.Errorf("%s %s: distance %v (reference %v), objective %v (reference %v)", name, dt, d, dr, o, or)
			}
		}
	}
}

func compareCost(t *testing.T, what string, got []float32, want []float64) {
	t.Helper()
	scale := 0.0
	for _, x := range want {
		scale = max(scale, math.Abs(x))
	}
	for k := range got {
		if math.Abs(float64(got[k])-want[k]) > 1e-5*(scale+1) {
			t.Fatalf("%s: cost[%d] = %v, reference %v", what, k, got[k], want[k])
		}
	}
}

// matchCases are seeded weight matching problems: planted permutations
// with noise (the usual case) and unrelated models (many sweeps, many
// changes), for the MLP and Llama specs.
func matchCases(t *testing.T) map[string][2]weights {
	r := rand.New(rand.NewPCG(81, 82))
	out := map[string][2]weights{}
	mlpW := func() weights {
		return weights{
			"fc1.weight": randomTensor(r, "fc1.weight", tensors.F32, 1, 40, 12), "fc1.bias": randomTensor(r, "fc1.bias", tensors.F32, 1, 40),
			"fc2.weight": randomTensor(r, "fc2.weight", tensors.F32, 1, 32, 40), "fc2.bias": randomTensor(r, "fc2.bias", tensors.F32, 1, 32),
			"fc3.weight": randomTensor(r, "fc3.weight", tensors.F32, 1, 24, 32),
			"fc4.weight": randomTensor(r, "fc4.weight", tensors.F32, 1, 5, 24),
		}
	}
	a := mlpW()
	s, _ := MLPSpec(a.shapes(), nil)
	b, _ := plant(t, r, s, a, 0.3)
	out["mlp-planted"] = [2]weights{a, b}
	out["mlp-unrelated"] = [2]weights{mlpW(), mlpW()}
	_, la := llamaCase(r)
	ls, _ := llamaCase(r)
	lb, _ := plant(t, r, ls, la, 0.2)
	out["llama-planted"] = [2]weights{la, lb}
	_, lu := llamaCase(r)
	out["llama-unrelated"] = [2]weights{la, lu}
	return out
}

func specFor(t *testing.T, w weights) *Spec {
	if _, ok := w["fc1.weight"]; ok {
		s, err := MLPSpec(w.shapes(), nil)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s, err := legacyLlamaSpec(w.shapes(), &legacyLlamaConfig{Heads: 4, KVHeads: 2, HeadDim: 8})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestWeightMatchingMatchesReference: on seeded cases the streaming
// matcher, with skipping and pipelining, finds exactly the permutations of
// the whole-model reference implementation, in the same number of sweeps,
// whether the models are float32 in memory or BF16.
func TestWeightMatchingMatchesReference(t *testing.T) {
	for name, c := range matchCases(t) {
		s := specFor(t, c[0])
		for _, dt := range []tensors.DType{tensors.F32, tensors.BF16} {
			a, b := convertWeights(t, c[0], dt), convertWeights(t, c[1], dt)
			ma, mb := sourceOf(t, a), sourceOf(t, b)
			for seed := range uint64(4) {
				for _, restarts := range []int{1, 3} {
					opts := MatchOptions{Seed: seed, Restarts: restarts}
					want, err := refWeightMatching(context.Background(), s, ma, mb, opts)
					if err != nil {
						t.Fatal(err)
					}
					got, err := WeightMatching(context.Background(), s, tensorSource{a, false}, tensorSource{b, false}, opts)
					if err != nil {
						t.Fatal(err)
					}
					what := fmt.Sprintf("%s %s seed %d restarts %d", name, dt, seed, restarts)
					samePerms(t, what, s, got.Perms, want.Perms)
					if got.Sweeps != want.Sweeps {
						t.Errorf("%s: %d sweeps, reference %d", what, got.Sweeps, want.Sweeps)
					}
					if math.Abs(got.DistanceAfter-want.DistanceAfter) > 1e-9*want.DistanceAfter ||
						math.Abs(got.DistanceBefore-want.DistanceBefore) > 1e-9*want.DistanceBefore {
						t.Errorf("%s: distances %v -> %v, reference %v -> %v", what, got.DistanceBefore, got.DistanceAfter, want.DistanceBefore, want.DistanceAfter)
					}
				}
			}
		}
	}
}

func samePerms(t *testing.T, what string, s *Spec, got, want Perms) {
	t.Helper()
	for _, g := range s.GroupNames() {
		if !slices.Equal(got[g], want[g]) {
			t.Fatalf("%s: group %s: %v, want %v", what, g, got[g], want[g])
		}
	}
}

// TestSkipGivesSamePermutations: skipping the groups whose dependencies did
// not change, and computing the next cost matrix while the previous
// assignment is solved, change nothing but the work done.
func TestSkipGivesSamePermutations(t *testing.T) {
	skippedAny := false
	for name, c := range matchCases(t) {
		s := specFor(t, c[0])
		for seed := range uint64(6) {
			var results []*MatchResult
			for _, mode := range []struct{ noSkip, noPipeline bool }{{true, true}, {false, true}, {true, false}, {false, false}} {
				m := newMatcher(s)
				m.noPipeline = mode.noPipeline
				res, err := m.match(context.Background(), side{members: []member{{src: tensorSource{c[0], false}}}}, member{src: tensorSource{c[1], false}},
					MatchOptions{Seed: seed, NoSkip: mode.noSkip, Tol: -1, MaxSweeps: 8}, true)
				if err != nil {
					t.Fatal(err)
				}
				results = append(results, res)
			}
			for i, res := range results[1:] {
				what := fmt.Sprintf("%s seed %d mode %d", name, seed, i+1)
				samePerms(t, what, s, res.Perms, results[0].Perms)
				if res.Solved+res.Skipped != results[0].Solved {
					t.Errorf("%s: %d solved + %d skipped, %d without skipping", what, res.Solved, res.Skipped, results[0].Solved)
				}
				skippedAny = skippedAny || res.Skipped > 0
			}
		}
	}
	if !skippedAny {
		t.Error("no group was ever skipped")
	}
}

// TestMergeManyMatchesReference: MergeMany streaming the mean of the other
// models finds the permutations of the reference, which holds every model
// and every mean in memory.
func TestMergeManyMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(91, 92))
	for _, k := range []int{3, 4} {
		for _, kind := range []string{"mlp", "llama"} {
			var base weights
			var s *Spec
			if kind == "mlp" {
				base = weights{
					"fc1.weight": randomTensor(r, "fc1.weight", tensors.F32, 1, 24, 8),
					"fc2.weight": randomTensor(r, "fc2.weight", tensors.F32, 1, 16, 24), "fc2.bias": randomTensor(r, "fc2.bias", tensors.F32, 1, 16),
					"fc3.weight": randomTensor(r, "fc3.weight", tensors.F32, 1, 3, 16),
				}
				s, _ = MLPSpec(base.shapes(), nil)
			} else {
				s, base = llamaCase(r)
			}
			var mems []MemorySource
			var srcs []tensorSource
			for range k {
				w, _ := plant(t, r, s, base, 0.5)
				w = convertWeights(t, w, tensors.BF16)
				mems = append(mems, sourceOf(t, w))
				srcs = append(srcs, tensorSource{w, false})
			}
			for seed := range uint64(3) {
				for _, restarts := range []int{1, 2} {
					opts := MatchOptions{Seed: seed, Restarts: restarts}
					want, err := refMergeMany(context.Background(), s, mems, opts)
					if err != nil {
						t.Fatal(err)
					}
					got, err := MergeMany(context.Background(), s, srcs, opts)
					if err != nil {
						t.Fatal(err)
					}
					for i := range k {
						samePerms(t, fmt.Sprintf("%s k=%d seed %d restarts %d model %d", kind, k, seed, restarts, i), s, got[i], want[i])
					}
					// and the in-memory float32 form of the same models
					got2, err := MergeMany(context.Background(), s, mems, opts)
					if err != nil {
						t.Fatal(err)
					}
					for i := range k {
						samePerms(t, fmt.Sprintf("%s k=%d memory model %d", kind, k, i), s, got2[i], want[i])
					}
				}
			}
		}
	}
}
