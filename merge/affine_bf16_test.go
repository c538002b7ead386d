package merge

import (
	"context"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/tensors"
)

// TestLinearBF16PastFirstBlock: the fused two-BF16-input path of the
// affine kernel wrote only the first block (8192 elements) of every chunk
// and left the rest zero (a Llama's averaged weights were mostly zeros).
// Every element of a linear merge must be the rounded average.
func TestLinearBF16PastFirstBlock(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	dir := t.TempDir()
	const n = 3*affineBlock + 77
	shapes := map[string][]int64{"w": {n}}
	va, vb := make([]float32, n), make([]float32, n)
	for i := range va {
		va[i], vb[i] = float32(r.NormFloat64()), float32(r.NormFloat64())
	}
	a, b, out := filepath.Join(dir, "a.safetensors"), filepath.Join(dir, "b.safetensors"), filepath.Join(dir, "m.safetensors")
	shapedModel(t, a, tensors.BF16, shapes, map[string][]float32{"w": va})
	shapedModel(t, b, tensors.BF16, shapes, map[string][]float32{"w": vb})
	p := &Plan{Method: "linear", Models: []ModelInput{{Path: a}, {Path: b}}}
	if _, err := Execute(context.Background(), p, out, checkpoint.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	got, _ := readRaw(t, out, "w")
	ra, rb := roundTrip(va, tensors.BF16), roundTrip(vb, tensors.BF16)
	want := make([]float64, n)
	for i := range want {
		want[i] = float64(0.5*ra[i] + 0.5*rb[i])
	}
	exp := encodeOnce(t, want, tensors.BF16)
	for i := 0; i < n; i++ {
		if got[2*i] != exp[2*i] || got[2*i+1] != exp[2*i+1] {
			t.Fatalf("element %d of %d: got bytes %x, want %x", i, n, got[2*i:2*i+2], exp[2*i:2*i+2])
		}
	}
}
