package permute

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/tensors"
)

// writeHF writes weights as a Hugging Face model directory with a config.
func writeHF(t *testing.T, dir string, w weights, c llamaCfg, dt tensors.DType) {
	t.Helper()
	var entries []safetensors.Entry
	for n, x := range w {
		entries = append(entries, safetensors.Entry{Name: n, DType: dt, Shape: x.Shape})
	}
	produce := func(_ context.Context, e safetensors.Entry) (*tensors.Tensor, func(), error) {
		x, err := w[e.Name].ConvertTo(dt)
		return x, nil, err
	}
	cfg := fmt.Sprintf(`{"model_type":"llama","hidden_size":%d,"num_attention_heads":%d,"num_key_value_heads":%d,"intermediate_size":%d}`,
		c.hidden, c.heads, c.kvHeads, c.inter)
	_, err := checkpoint.Write(context.Background(), dir, entries, produce, checkpoint.WriteOptions{
		MaxShardSize: 8_000, Files: map[string][]byte{"config.json": []byte(cfg)}})
	if err != nil {
		t.Fatal(err)
	}
}

func readWeights(t *testing.T, path string) weights {
	t.Helper()
	m, err := checkpoint.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	w := weights{}
	for _, n := range m.Names() {
		x, _ := m.Tensor(n)
		v, _ := x.Float32()
		w[n], _ = tensors.FromFloat32(n, tensors.F32, x.Shape, v)
	}
	return w
}

// TestAlignLlamaCheckpoint: aligning a sharded BF16 Llama-style checkpoint
// to another through the whole pipeline (auto spec from config.json, weight
// matching, streaming apply) gives a checkpoint with the same outputs, the
// same layout, and weights closer to the reference.
func TestAlignLlamaCheckpoint(t *testing.T) {
	c := llamaCfg{hidden: 32, inter: 48, heads: 4, kvHeads: 2, headDim: 8, layers: 2, vocab: 40}
	r := rand.New(rand.NewPCG(41, 42))
	dir := t.TempDir()
	ref, model, out := filepath.Join(dir, "ref"), filepath.Join(dir, "model"), filepath.Join(dir, "out")
	wr := makeLlama(r, c)
	s0 := llamaArchSpec(t, wr, c).Spec
	wm, _ := plant(t, r, s0, wr, 0.05) // a permuted, perturbed copy
	writeHF(t, ref, wr, c, tensors.BF16)
	writeHF(t, model, wm, c, tensors.BF16)
	mr, _ := checkpoint.Open(ref)
	defer mr.Close()
	mm, _ := checkpoint.Open(model)
	defer mm.Close()
	spec, err := BuiltinSpec("auto", mr, nil)
	if err != nil {
		t.Fatal(err)
	}
	if spec.Groups["layers.0.attn.heads"] != 2 {
		t.Fatalf("the auto spec did not read the heads from config.json: %v", spec.Groups)
	}
	res, err := Align(context.Background(), mr, mm, spec, AlignOptions{Match: MatchOptions{Restarts: 2}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ApplyCheckpoint(context.Background(), mm, spec, res.Perms, out, checkpoint.WriteOptions{MaxShardSize: 8_000}); err != nil {
		t.Fatal(err)
	}
	if !(res.DistanceAfter < res.DistanceBefore/3) {
		t.Errorf("distance %g -> %g", res.DistanceBefore, res.DistanceAfter)
	}
	before, after := readWeights(t, model), readWeights(t, out)
	tokens := []int{1, 5, 9, 13}
	a, b := llamaForward(before, c, tokens), llamaForward(after, c, tokens)
	for i := range a {
		for j := range a[i] {
			if math.Abs(a[i][j]-b[i][j]) > 1e-4*(1+math.Abs(a[i][j])) {
				t.Fatalf("output %d,%d: %v vs %v", i, j, a[i][j], b[i][j])
			}
		}
	}
	mo, _ := checkpoint.Open(out)
	defer mo.Close()
	if mo.Index == nil || len(mo.Files()) != len(mm.Files()) {
		t.Errorf("layout not kept: %d files vs %d", len(mo.Files()), len(mm.Files()))
	}
	if info, _ := mo.Info("model.norm.weight"); info.DType != tensors.BF16 {
		t.Errorf("dtype %s", info.DType)
	}
	if _, err := os.Stat(filepath.Join(out, "config.json")); err != nil {
		t.Error("config.json not copied")
	}
}

func TestAlignRefusesDifferentArchitectures(t *testing.T) {
	dir := t.TempDir()
	r := rand.New(rand.NewPCG(1, 1))
	a := weights{"fc1.weight": randomTensor(r, "fc1.weight", tensors.F32, 1, 8, 4), "fc2.weight": randomTensor(r, "fc2.weight", tensors.F32, 1, 3, 8)}
	b := weights{"fc1.weight": randomTensor(r, "fc1.weight", tensors.F32, 1, 9, 4), "fc2.weight": randomTensor(r, "fc2.weight", tensors.F32, 1, 3, 9)}
	pa, pb := filepath.Join(dir, "a.safetensors"), filepath.Join(dir, "b.safetensors")
	for p, w := range map[string]weights{pa: a, pb: b} {
		var ts []*tensors.Tensor
		for _, n := range slices.Sorted(func(yield func(string) bool) {
			for n := range w {
				if !yield(n) {
					return
				}
			}
		}) {
			ts = append(ts, w[n])
		}
		f, _ := os.Create(p)
		safetensors.Encode(f, ts, nil)
		f.Close()
	}
	ma, _ := checkpoint.Open(pa)
	defer ma.Close()
	mb, _ := checkpoint.Open(pb)
	defer mb.Close()
	spec, _ := BuiltinSpec("auto", ma, nil)
	_, err := Align(context.Background(), ma, mb, spec, AlignOptions{})
	if err == nil || !strings.Contains(err.Error(), `tensor "fc1.weight" has shape [8 4]`) {
		t.Errorf("got %v", err)
	}
}
