package permute

import (
	"context"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/wtool/wtool/tensors"
)

func sourceOf(t *testing.T, w weights) MemorySource {
	t.Helper()
	out := MemorySource{}
	for n, x := range w {
		v, err := x.Float32()
		if err != nil {
			t.Fatal(err)
		}
		out[n] = Tensor32{Data: v, Shape: x.Shape}
	}
	return out
}

// plant returns B = pi(A) + noise for a random pi.
func plant(t *testing.T, r *rand.Rand, s *Spec, a weights, noise float64) (weights, Perms) {
	t.Helper()
	p := randomPerms(r, s)
	b := weights{}
	for n, x := range a {
		y, err := s.Apply(x, p)
		if err != nil {
			t.Fatal(err)
		}
		v, _ := y.Float32()
		for i := range v {
			v[i] += float32(noise * r.NormFloat64())
		}
		b[n], _ = tensors.FromFloat32(n, tensors.F32, y.Shape, v)
	}
	return b, p
}

func TestWeightMatchingRecoversPlantedPermutation(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	cases := map[string]func() (*Spec, weights){
		"mlp": func() (*Spec, weights) {
			w := weights{
				"fc1.weight": randomTensor(r, "fc1.weight", tensors.F32, 1, 64, 20), "fc1.bias": randomTensor(r, "fc1.bias", tensors.F32, 1, 64),
				"fc2.weight": randomTensor(r, "fc2.weight", tensors.F32, 1, 48, 64), "fc2.bias": randomTensor(r, "fc2.bias", tensors.F32, 1, 48),
				"fc3.weight": randomTensor(r, "fc3.weight", tensors.F32, 1, 32, 48),
				"fc4.weight": randomTensor(r, "fc4.weight", tensors.F32, 1, 10, 32),
			}
			s, err := MLPSpec(w.shapes(), nil)
			if err != nil {
				t.Fatal(err)
			}
			return s, w
		},
		"llama-legacy": func() (*Spec, weights) {
			c := llamaCfg{hidden: 32, inter: 48, heads: 4, kvHeads: 2, headDim: 8, layers: 2, vocab: 40}
			w := makeLlama(r, c)
			s, err := legacyLlamaSpec(w.shapes(), &legacyLlamaConfig{Heads: 4, KVHeads: 2, HeadDim: 8})
			if err != nil {
				t.Fatal(err)
			}
			return s, w
		},
		"llama": func() (*Spec, weights) {
			c := llamaCfg{hidden: 32, inter: 48, heads: 4, kvHeads: 2, headDim: 8, layers: 2, vocab: 40}
			w := makeLlama(r, c)
			return llamaArchSpec(t, w, c).Spec, w
		},
	}
	for name, mk := range cases {
		t.Run(name, func(t *testing.T) {
			s, a := mk()
			b, planted := plant(t, r, s, a, 0.01)
			res, err := WeightMatching(context.Background(), s, sourceOf(t, a), sourceOf(t, b), MatchOptions{Seed: 1})
			if err != nil {
				t.Fatal(err)
			}
			want := planted.Inverse()
			for _, g := range s.GroupNames() {
				if !slices.Equal(res.Perms[g], want[g]) {
					t.Errorf("group %s: found %v, planted inverse %v", g, res.Perms[g], want[g])
				}
			}
			if !(res.DistanceAfter < res.DistanceBefore/10) {
				t.Errorf("distance %g -> %g", res.DistanceBefore, res.DistanceAfter)
			}
			if res.Sweeps < 2 || res.Sweeps > 100 {
				t.Errorf("%d sweeps", res.Sweeps)
			}
		})
	}
}

func TestWeightMatchingMonotone(t *testing.T) {
	// unrelated random models: the objective never decreases from sweep to
	// sweep, and the distance does not grow
	r := rand.New(rand.NewPCG(5, 6))
	mk := func() weights {
		return weights{
			"a.weight": randomTensor(r, "a.weight", tensors.F32, 1, 30, 8),
			"b.weight": randomTensor(r, "b.weight", tensors.F32, 1, 30, 30),
			"c.weight": randomTensor(r, "c.weight", tensors.F32, 1, 5, 30),
		}
	}
	a, b := mk(), mk()
	s, _ := MLPSpec(a.shapes(), nil)
	var objs []float64
	res, err := WeightMatching(context.Background(), s, sourceOf(t, a), sourceOf(t, b), MatchOptions{Seed: 3, Progress: func(_ int, o float64) { objs = append(objs, o) }})
	if err != nil {
		t.Fatal(err)
	}
	base, _ := Objective(s, sourceOf(t, a), sourceOf(t, b), Identity(s))
	prev := base
	for i, o := range objs {
		if o < prev-1e-6*abs(prev) {
			t.Errorf("sweep %d: objective fell from %g to %g", i+1, prev, o)
		}
		prev = o
	}
	if res.DistanceAfter > res.DistanceBefore {
		t.Errorf("distance grew: %g -> %g", res.DistanceBefore, res.DistanceAfter)
	}
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}
