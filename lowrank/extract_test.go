package lowrank

import (
	"context"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gonum.org/v1/gonum/mat"

	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/io/peft"
	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/tensors"
)

const extractLlamaConfig = `{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8,
 "intermediate_size": 12, "num_attention_heads": 2, "num_key_value_heads": 1, "num_hidden_layers": 1,
 "vocab_size": 10, "rms_norm_eps": 1e-05, "tie_word_embeddings": false}`

// extractPair writes a tiny Llama base and a fine-tune of it: every matrix
// changed by a full-rank perturbation, the final norm changed too.
func extractPair(t *testing.T, dir string) (base, ft string, vb, vf map[string][]float32) {
	r := rand.New(rand.NewPCG(5, 6))
	shapes := map[string][]int64{
		"model.embed_tokens.weight":                      {10, 8},
		"model.layers.0.input_layernorm.weight":          {8},
		"model.layers.0.self_attn.q_proj.weight":         {8, 8},
		"model.layers.0.self_attn.k_proj.weight":         {4, 8},
		"model.layers.0.self_attn.v_proj.weight":         {4, 8},
		"model.layers.0.self_attn.o_proj.weight":         {8, 8},
		"model.layers.0.post_attention_layernorm.weight": {8},
		"model.layers.0.mlp.gate_proj.weight":            {12, 8},
		"model.layers.0.mlp.up_proj.weight":              {12, 8},
		"model.layers.0.mlp.down_proj.weight":            {8, 12},
		"model.norm.weight":                              {8},
		"lm_head.weight":                                 {10, 8},
	}
	vb, vf = map[string][]float32{}, map[string][]float32{}
	var entries []safetensors.Entry
	for n, s := range shapes {
		k := int(s[0])
		if len(s) == 2 {
			k *= int(s[1])
		}
		vb[n], vf[n] = make([]float32, k), make([]float32, k)
		for i := range k {
			vb[n][i] = float32(r.NormFloat64())
			vf[n][i] = vb[n][i]
			if len(s) == 2 || n == "model.norm.weight" {
				vf[n][i] += 0.1 * float32(r.NormFloat64())
			}
		}
		entries = append(entries, safetensors.Entry{Name: n, DType: tensors.F32, Shape: s})
	}
	base, ft = filepath.Join(dir, "base"), filepath.Join(dir, "ft")
	writeF32Model(t, base, entries, vb, extractLlamaConfig)
	writeF32Model(t, ft, entries, vf, extractLlamaConfig)
	return
}

func extract(t *testing.T, base, ft, out string, rule RankRule) ([]ExtractReport, *peft.Adapter) {
	t.Helper()
	b, err := checkpoint.Open(base)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	f, err := checkpoint.Open(ft)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	reps, _, err := ExtractLoRA(context.Background(), b, f, out, ExtractOptions{Rule: rule, SVD: SVDOptions{Exact: true}}, false)
	if err != nil {
		t.Fatal(err)
	}
	ad, err := peft.Read(out)
	if err != nil {
		t.Fatal(err)
	}
	return reps, ad
}

// delta returns scaling B A of a module read back, in the module's
// orientation [out, in] (an embedding's: [dim, num]).
func delta(t *testing.T, ad *peft.Adapter, name string) (*mat.Dense, int) {
	t.Helper()
	m, ok := ad.Modules[name]
	if !ok {
		t.Fatalf("no module %s in %v", name, ad.Names())
	}
	a, err := m.A.Float32()
	if err != nil {
		t.Fatal(err)
	}
	b, err := m.B.Float32()
	if err != nil {
		t.Fatal(err)
	}
	r := m.Rank()
	A := mat.NewDense(r, len(a)/r, f64(a))
	B := mat.NewDense(len(b)/r, r, f64(b))
	var d mat.Dense
	d.Mul(B, A)
	d.Scale(ad.Config.Scaling(name), &d)
	return &d, r
}

func f64(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

// TestExtractLoRA: at full rank, base + the extracted adapter is the
// fine-tune (every Linear and the embedding); at rank 2 each module's
// adapter is the best rank-2 approximation of the difference (its error is
// the discarded singular values' norm, from gonum's SVD) and the report's
// energy is the kept share; a changed norm is reported as not captured.
func TestExtractLoRA(t *testing.T) {
	dir := t.TempDir()
	base, ft, vb, vf := extractPair(t, dir)
	modules := map[string][2]int{ // PEFT name -> [out, in] of the module's orientation
		"model.layers.0.self_attn.q_proj": {8, 8}, "model.layers.0.self_attn.k_proj": {4, 8},
		"model.layers.0.mlp.up_proj": {12, 8}, "model.layers.0.mlp.down_proj": {8, 12},
		"lm_head": {10, 8}, "model.embed_tokens": {8, 10},
	}
	diff := func(name string, o [2]int) *mat.Dense {
		w := name + ".weight"
		d := mat.NewDense(o[0], o[1], nil)
		for i := range o[0] {
			for j := range o[1] {
				k := i*o[1] + j
				if strings.Contains(name, "embed") { // stored [num, dim]
					k = j*o[0] + i
				}
				d.Set(i, j, float64(vf[w][k]-vb[w][k]))
			}
		}
		return d
	}

	reps, ad := extract(t, base, ft, filepath.Join(dir, "full"), RankRule{Rank: 64})
	for name, o := range modules {
		got, r := delta(t, ad, name)
		if r != min(o[0], o[1]) {
			t.Errorf("%s: rank %d, want the full rank %d", name, r, min(o[0], o[1]))
		}
		if !mat.EqualApprox(got, diff(name, o), 1e-5) {
			t.Errorf("%s: base + adapter is not the fine-tune at full rank", name)
		}
	}
	if !ad.Modules["model.embed_tokens"].Embedding {
		t.Error("the embedding's factors are not lora_embedding_A/B")
	}
	// the changed norm is saved whole: modules_to_save "model.norm" (the
	// short name "norm" would select the layer norms too), the fine-tune's
	// values under base_model.model.model.norm.weight
	found := false
	for _, r := range reps {
		if r.Module == "model.norm.weight" && !r.Skipped && r.Kind == ExtractSaved {
			found = true
		}
	}
	if !found {
		t.Errorf("the changed norm is not reported as saved: %+v", reps)
	}
	if !slices.Equal(ad.Config.ModulesToSave, []string{"model.norm"}) {
		t.Errorf("modules_to_save %q, want [model.norm]", ad.Config.ModulesToSave)
	}
	if x := ad.Saved["model.norm.weight"]; x == nil {
		t.Errorf("model.norm.weight not saved: %v", ad.Saved)
	} else if v, _ := x.Float32(); !slices.Equal(v, vf["model.norm.weight"]) {
		t.Errorf("saved model.norm.weight %v, want the fine-tune's %v", v, vf["model.norm.weight"])
	}

	reps, ad = extract(t, base, ft, filepath.Join(dir, "r2"), RankRule{Rank: 2})
	byName := map[string]ExtractReport{}
	for _, r := range reps {
		byName[r.Module] = r
	}
	for name, o := range modules {
		got, r := delta(t, ad, name)
		if r != 2 {
			t.Fatalf("%s: rank %d", name, r)
		}
		d := diff(name, o)
		var svd mat.SVD
		if !svd.Factorize(d, mat.SVDNone) {
			t.Fatal("gonum SVD failed")
		}
		s := svd.Values(nil)
		var tail, total float64
		for i, x := range s {
			total += x * x
			if i >= 2 {
				tail += x * x
			}
		}
		var res mat.Dense
		res.Sub(d, got)
		if e := mat.Norm(&res, 2); math.Abs(e-math.Sqrt(tail)) > 1e-5*math.Sqrt(total) {
			t.Errorf("%s: ||D - BA|| = %g, the optimal rank-2 error is %g", name, e, math.Sqrt(tail))
		}
		rep := byName[name]
		if math.Abs(rep.Energy-(total-tail)/total) > 1e-5 {
			t.Errorf("%s: reported energy %g, want %g", name, rep.Energy, (total-tail)/total)
		}
	}
	if ad.Config.R != 2 {
		t.Errorf("r = %d", ad.Config.R)
	}
}

// writeF32Model writes a checkpoint directory at path holding the float32
// values v of entries, with config as its config.json.
func writeF32Model(t *testing.T, path string, entries []safetensors.Entry, v map[string][]float32, config string) {
	t.Helper()
	produce := func(_ context.Context, e safetensors.Entry) (*tensors.Tensor, func(), error) {
		x, err := tensors.FromFloat32(e.Name, e.DType, e.Shape, v[e.Name])
		return x, nil, err
	}
	if _, err := checkpoint.Write(context.Background(), path, entries, produce, checkpoint.WriteOptions{Files: map[string][]byte{"config.json": []byte(config)}}); err != nil {
		t.Fatal(err)
	}
}
