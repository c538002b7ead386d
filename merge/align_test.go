package merge

import (
	"context"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/permute"
	"github.com/wtool/wtool/tensors"
)

// noisyCopy writes model m with every floating tensor plus N(0, (scale
// sigma)^2) noise, sigma the tensor's standard deviation (a close
// fine-tune: weight matching aligns it to m with the identity).
func noisyCopy(t *testing.T, m *checkpoint.Model, out string, scale float64, seed uint64) {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, seed))
	opts, err := m.DefaultWriteOptions(checkpoint.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	produce := func(_ context.Context, e safetensors.Entry) (*tensors.Tensor, func(), error) {
		x, err := m.Tensor(e.Name)
		if err != nil || !x.DType.IsFloat() {
			return x, nil, err
		}
		v, err := x.Float32()
		if err != nil {
			return nil, nil, err
		}
		var s2 float64
		for _, f := range v {
			s2 += float64(f) * float64(f)
		}
		sigma := math.Sqrt(s2 / float64(max(len(v), 1)))
		for i := range v {
			v[i] += float32(r.NormFloat64() * scale * sigma)
		}
		y, err := tensors.FromFloat32(e.Name, e.DType, e.Shape, v)
		return y, nil, err
	}
	if _, err := checkpoint.Write(context.Background(), out, m.Entries(), produce, opts); err != nil {
		t.Fatal(err)
	}
}

// --align: a model whose hidden units were permuted (a planted
// permutation of a close fine-tune) merges, after alignment, to the merge
// of the unpermuted models, whatever the method.
func TestAlignUndoesPlantedPermutation(t *testing.T) {
	src, err := checkpoint.Open(filepath.Join("..", "testdata", "demo", "mlp-a"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dir := t.TempDir()
	x1, x2, x3, base := filepath.Join(dir, "x1"), filepath.Join(dir, "x2"), filepath.Join(dir, "x3"), filepath.Join(dir, "base")
	noisyCopy(t, src, x1, 0.05, 1)
	noisyCopy(t, src, x2, 0.05, 2)
	noisyCopy(t, src, x3, 0.05, 3)
	noisyCopy(t, src, base, 0.01, 4)
	spec, err := permute.BuiltinSpec("auto", src, nil)
	if err != nil {
		t.Fatal(err)
	}
	// plant random permutations in x2 and x3
	r := rand.New(rand.NewPCG(9, 9))
	plant := func(in, out string) {
		m, err := checkpoint.Open(in)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		p := permute.Identity(spec)
		for _, g := range p {
			r.Shuffle(len(g), func(i, j int) { g[i], g[j] = g[j], g[i] })
		}
		if _, err := permute.ApplyCheckpoint(context.Background(), m, spec, p, out, checkpoint.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	px2, px3 := filepath.Join(dir, "px2"), filepath.Join(dir, "px3")
	plant(x2, px2)
	plant(x3, px3)
	ctx := context.Background()
	for _, tc := range []struct {
		method string
		base   bool
		params Params
	}{
		{"linear", false, nil},
		{"ties", true, Params{"density": Num(0.5)}},
		{"model-stock", true, nil},
		{"karcher", false, nil},
		{"breadcrumbs", true, Params{"density": Num(0.8), "gamma": Num(0.05)}},
	} {
		run := func(models []string, align bool) *checkpoint.Model {
			p := &Plan{Method: tc.method, Params: tc.params, Align: align}
			for _, m := range models {
				p.Models = append(p.Models, ModelInput{Path: m})
			}
			if tc.base {
				p.Base = base
			}
			out := filepath.Join(dir, "out")
			if _, err := Execute(ctx, p, out, checkpoint.WriteOptions{Force: true}); err != nil {
				t.Fatalf("%s (align %v): %v", tc.method, align, err)
			}
			m, err := checkpoint.Open(out)
			if err != nil {
				t.Fatal(err)
			}
			return m
		}
		want := run([]string{x1, x2, x3}, false)
		wantVals := map[string][]float32{}
		for _, n := range want.Names() {
			x, _ := want.Tensor(n)
			if x.DType.IsFloat() {
				wantVals[n], _ = x.Float32()
			}
		}
		want.Close()
		got := run([]string{x1, px2, px3}, true)
		for n, w := range wantVals {
			x, _ := got.Tensor(n)
			g, _ := x.Float32()
			for i := range w {
				if math.Abs(float64(g[i]-w[i])) > 1e-5*(1+math.Abs(float64(w[i]))) {
					t.Fatalf("%s: %s[%d] = %v aligned, %v unpermuted", tc.method, n, i, g[i], w[i])
				}
			}
		}
		got.Close()
		// without alignment the permuted models merge to something else
		other := run([]string{x1, px2, px3}, false)
		differs := false
		for n, w := range wantVals {
			x, _ := other.Tensor(n)
			g, _ := x.Float32()
			for i := range w {
				differs = differs || math.Abs(float64(g[i]-w[i])) > 1e-3
			}
		}
		other.Close()
		if !differs {
			t.Errorf("%s: the planted permutations change nothing without --align (a vacuous test)", tc.method)
		}
	}
}
