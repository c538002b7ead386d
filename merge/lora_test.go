package merge

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wtool/wtool/io/checkpoint"

	"github.com/wtool/wtool/io/peft"
	"github.com/wtool/wtool/tensors"
)

// TestLoRASource: a "model+lora" source merges the adapter into the model
// on the fly (W + alpha/r B A; an embedding's factors apply to its
// transpose), and a base given without the adapter stays the plain model.
func TestLoRASource(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base")
	tinyLlama(t, base, 2, 9, tensors.F32)
	// factors: q_proj of layer 0 (A [2, 8], B [8, 2]) and the embedding
	// (A [2, 16], B [8, 2]); r 2, alpha 4: scaling 2
	mk := func(name string, shape []int64, seed float32) *tensors.Tensor {
		v := make([]float32, shape[0]*shape[1])
		for i := range v {
			v[i] = seed * float32(math.Sin(float64(i)+float64(seed)))
		}
		x, err := tensors.FromFloat32(name, tensors.F32, shape, v)
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	ad := &peft.Adapter{Config: peft.NewConfig(2, 4, []string{"q_proj", "embed_tokens"}), Modules: map[string]*peft.Module{}}
	for _, m := range []struct {
		name      string
		a, b      []int64
		embedding bool
	}{{"model.layers.0.self_attn.q_proj", []int64{2, 8}, []int64{8, 2}, false}, {"model.embed_tokens", []int64{2, 16}, []int64{8, 2}, true}} {
		ka, kb := peft.KeysFor(m.name, m.embedding)
		ad.Modules[m.name] = &peft.Module{Name: m.name, A: mk(ka, m.a, 0.3), B: mk(kb, m.b, 0.7), Embedding: m.embedding}
	}
	lora := filepath.Join(dir, "lora")
	if err := peft.Write(context.Background(), lora, ad, false); err != nil {
		t.Fatal(err)
	}
	// delta[i][j] of a module's [out, in] matrix
	delta := func(name string, out, in int) []float64 {
		m := ad.Modules[name]
		a, _ := m.A.Float32()
		b, _ := m.B.Float32()
		d := make([]float64, out*in)
		for i := range out {
			for j := range in {
				for k := range 2 {
					d[i*in+j] += 2 * float64(b[i*2+k]) * float64(a[k*in+j])
				}
			}
		}
		return d
	}
	dq := delta("model.layers.0.self_attn.q_proj", 8, 8)
	de := delta("model.embed_tokens", 8, 16) // [dim, num]
	for _, tc := range []struct {
		name, yaml string
		scale      float64
	}{
		{"linear", "models:\n  - model: %[1]s+%[2]s\n    parameters: {weight: 1}\nmerge_method: linear\n", 1},
		{"task-arithmetic", "models:\n  - model: %[1]s+%[2]s\n    parameters: {weight: 1}\nbase_model: %[1]s\nmerge_method: task_arithmetic\nparameters: {lambda: 0.5}\n", 0.5},
	} {
		out := filepath.Join(dir, tc.name)
		runConfig(t, fmt.Sprintf(tc.yaml, base, lora), out)
		w, got := read(t, base, "model.layers.0.self_attn.q_proj.weight"), read(t, out, "model.layers.0.self_attn.q_proj.weight")
		for i := range got {
			if want := float64(w[i]) + tc.scale*dq[i]; math.Abs(float64(got[i])-want) > 1e-5 {
				t.Fatalf("%s: q_proj[%d] = %g, want %g", tc.name, i, got[i], want)
			}
		}
		w, got = read(t, base, "model.embed_tokens.weight"), read(t, out, "model.embed_tokens.weight")
		for tok := range 16 {
			for c := range 8 {
				if want := float64(w[tok*8+c]) + tc.scale*de[c*16+tok]; math.Abs(float64(got[tok*8+c])-want) > 1e-5 {
					t.Fatalf("%s: embedding[%d][%d] = %g, want %g", tc.name, tok, c, got[tok*8+c], want)
				}
			}
		}
		w, got = read(t, base, "model.layers.1.self_attn.q_proj.weight"), read(t, out, "model.layers.1.self_attn.q_proj.weight")
		for i := range got {
			if got[i] != w[i] {
				t.Fatalf("%s: a module without an adapter changed", tc.name)
			}
		}
	}
	// an adapter for modules the model lacks is refused
	bad := &peft.Adapter{Config: peft.NewConfig(2, 4, []string{"nope"}), Modules: map[string]*peft.Module{}}
	ka, kb := peft.KeysFor("model.layers.7.nope", false)
	bad.Modules["model.layers.7.nope"] = &peft.Module{Name: "model.layers.7.nope", A: mk(ka, []int64{2, 8}, 1), B: mk(kb, []int64{8, 2}, 1)}
	badDir := filepath.Join(dir, "bad")
	if err := peft.Write(context.Background(), badDir, bad, false); err != nil {
		t.Fatal(err)
	}
	p, err := ParseConfig([]byte(fmt.Sprintf("models: [{model: %s+%s}]\nmerge_method: linear\n", base, badDir)))
	if err == nil {
		_, err = Execute(context.Background(), p, filepath.Join(dir, "x"), checkpoint.WriteOptions{})
	}
	if err == nil || !strings.Contains(err.Error(), "not modules of") {
		t.Errorf("an adapter of other modules: %v", err)
	}
}

// TestDescribeLoRAAndVocab: --dry-run names the adapter merged into an
// input and marks vocabulary-permuted embeddings, without computing them.
func TestDescribeLoRAAndVocab(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "base"), filepath.Join(dir, "other")
	vocabModel(t, a, "base", 8, 1)
	vocabModel(t, b, "other", 7, 2)
	p, err := ParseConfig([]byte(fmt.Sprintf("models:\n  - model: %s\n  - model: %s\nmerge_method: linear\nbase_model: %s\nparameters: {weight: 0.5}\ntokenizer_source: union\n", a, b, a)))
	if err != nil {
		t.Fatal(err)
	}
	d, err := Describe(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	if d.VocabSize != 9 {
		t.Errorf("vocabulary %d, want 9", d.VocabSize)
	}
	for _, td := range d.Tensors {
		want := td.Name != "model.layers.0.mlp.up_proj.weight"
		if td.Inputs[0].Vocab != want || (want && td.Shape[0] != 9) {
			t.Errorf("%s: %+v", td.Name, td)
		}
	}
}
