package permute

import (
	"context"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/wtool/wtool/fisher/mlp"
	"github.com/wtool/wtool/fisher/stats"
	"github.com/wtool/wtool/tensors"
)

func network(t *testing.T, w weights, order []string) *mlp.Network {
	t.Helper()
	n := &mlp.Network{Act: mlp.GELU}
	for _, m := range order {
		wt := w[m+".weight"]
		v, _ := wt.Float32()
		l := mlp.Layer{Name: m, Out: int(wt.Shape[0]), In: int(wt.Shape[1]), W: v}
		if b, ok := w[m+".bias"]; ok {
			l.B, _ = b.Float32()
		}
		n.Layers = append(n.Layers, l)
	}
	return n
}

func TestActivationMatchingRecoversPlantedPermutation(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	a := weights{
		"fc1.weight": randomTensor(r, "fc1.weight", tensors.F32, 0.5, 32, 10), "fc1.bias": randomTensor(r, "fc1.bias", tensors.F32, 0.1, 32),
		"fc2.weight": randomTensor(r, "fc2.weight", tensors.F32, 0.3, 24, 32), "fc2.bias": randomTensor(r, "fc2.bias", tensors.F32, 0.1, 24),
		"fc3.weight": randomTensor(r, "fc3.weight", tensors.F32, 0.3, 5, 24),
	}
	s, _ := MLPSpec(a.shapes(), nil)
	b, planted := plant(t, r, s, a, 0)
	order := []string{"fc1", "fc2", "fc3"}
	na, nb := network(t, a, order), network(t, b, order)
	acc, _ := stats.NewAccumulator(order, []int{10, 32, 24}, true)
	var wa, wb mlp.Workspace
	x := make([]float32, 200*10)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	na.Forward(&wa, x, 200)
	nb.Forward(&wb, x, 200)
	for l, m := range order {
		acc.AddJoint(m, wa.Inputs[l], wb.Inputs[l], 200)
	}
	p, report, err := ActivationMatching(context.Background(), s, StatsOf(acc.Stats("")))
	if err != nil {
		t.Fatal(err)
	}
	want := planted.Inverse()
	for _, g := range s.GroupNames() {
		if !slices.Equal(p[g], want[g]) {
			t.Errorf("group %s: %v, want %v", g, p[g], want[g])
		}
	}
	for _, rep := range report {
		if rep.After < 0.999 || rep.After <= rep.Before {
			t.Errorf("group %s: correlation %.4f -> %.4f", rep.Group, rep.Before, rep.After)
		}
	}
}

func TestMergeManyAlignsThreeModels(t *testing.T) {
	r := rand.New(rand.NewPCG(31, 32))
	base := weights{
		"fc1.weight": randomTensor(r, "fc1.weight", tensors.F32, 1, 16, 6),
		"fc2.weight": randomTensor(r, "fc2.weight", tensors.F32, 1, 12, 16),
		"fc3.weight": randomTensor(r, "fc3.weight", tensors.F32, 1, 3, 12),
	}
	s, _ := MLPSpec(base.shapes(), nil)
	var models []MemorySource
	for range 3 {
		w, _ := plant(t, r, s, base, 0.01)
		models = append(models, sourceOf(t, w))
	}
	perms, err := MergeMany(context.Background(), s, models, MatchOptions{Seed: 2})
	if err != nil {
		t.Fatal(err)
	}
	aligned := make([]MemorySource, 3)
	for i := range models {
		aligned[i] = refApplySource(s, models[i], perms[i])
	}
	for i := 1; i < 3; i++ {
		d, _ := Distance(s, aligned[0], aligned[i], Identity(s))
		d0, _ := Distance(s, models[0], models[i], Identity(s))
		if d > 0.35 || d >= d0 { // noise floor: sqrt(2 * 324 elements * 0.01^2) = 0.25
			t.Errorf("model %d: distance to model 0 %.3f after MergeMany (%.3f before)", i, d, d0)
		}
	}
}
