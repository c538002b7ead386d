package merge

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/lowrank"
	"github.com/wtool/wtool/tensors"
)

// TestLoRAExtractRoundTrip: an adapter extracted from a Qwen2 fine-tune that
// changes weights, q/k/v biases, norms and the embeddings, merged back into
// the base by the model+lora path (linear, weight 1), gives the fine-tune
// at full rank: every tensor with --embeddings save (lora_B.bias and
// modules_to_save applied); with embedding factors, every tensor but the
// LoRA modules' bias changes, which stay the base's.
func TestLoRAExtractRoundTrip(t *testing.T) {
	for _, tied := range []bool{false, true} {
		t.Run(fmt.Sprintf("tied=%v", tied), func(t *testing.T) { loraExtractRoundTrip(t, tied) })
	}
}

// loraExtractRoundTrip is TestLoRAExtractRoundTrip on an untied or a tied
// model (no lm_head.weight, tie_word_embeddings: the saved embedding's copy
// for the head is ensure_weight_tying's, and the merged model has no head
// of its own).
func loraExtractRoundTrip(t *testing.T, tied bool) {
	dir := t.TempDir()
	cfg := `{"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 8,
 "intermediate_size": 12, "num_attention_heads": 2, "num_key_value_heads": 1, "num_hidden_layers": 2,
 "vocab_size": 10, "rms_norm_eps": 1e-06, "tie_word_embeddings": false}`
	changed := regexp.MustCompile(`(_proj|embed_tokens|lm_head)\.weight$|[qv]_proj\.bias$|layers\.0\.input_layernorm|model\.norm`)
	shapes := map[string][]int64{"model.embed_tokens.weight": {10, 8}, "model.norm.weight": {8}, "lm_head.weight": {10, 8}}
	if tied {
		delete(shapes, "lm_head.weight")
		cfg = strings.Replace(cfg, `"tie_word_embeddings": false`, `"tie_word_embeddings": true`, 1)
	}
	for l := range 2 {
		p := fmt.Sprintf("model.layers.%d.", l)
		for n, s := range map[string][]int64{"input_layernorm.weight": {8}, "post_attention_layernorm.weight": {8},
			"self_attn.q_proj.weight": {8, 8}, "self_attn.q_proj.bias": {8}, "self_attn.k_proj.weight": {4, 8},
			"self_attn.k_proj.bias": {4}, "self_attn.v_proj.weight": {4, 8}, "self_attn.v_proj.bias": {4},
			"self_attn.o_proj.weight": {8, 8}, "mlp.gate_proj.weight": {12, 8}, "mlp.up_proj.weight": {12, 8},
			"mlp.down_proj.weight": {8, 12}} {
			shapes[p+n] = s
		}
	}
	r := rand.New(rand.NewPCG(3, 4))
	vb, vf := map[string][]float32{}, map[string][]float32{}
	var entries []safetensors.Entry
	names := make([]string, 0, len(shapes))
	for n := range shapes {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		k, _ := tensors.NumElements(shapes[n])
		vb[n], vf[n] = make([]float32, k), make([]float32, k)
		for i := range vb[n] {
			vb[n][i] = float32(r.NormFloat64())
			vf[n][i] = vb[n][i]
			if changed.MatchString(n) {
				vf[n][i] += 0.1 * float32(r.NormFloat64())
			}
		}
		entries = append(entries, safetensors.Entry{Name: n, DType: tensors.F32, Shape: shapes[n]})
	}
	base, ft := filepath.Join(dir, "base"), filepath.Join(dir, "ft")
	for path, v := range map[string]map[string][]float32{base: vb, ft: vf} {
		produce := func(_ context.Context, e safetensors.Entry) (*tensors.Tensor, func(), error) {
			x, err := tensors.FromFloat32(e.Name, e.DType, e.Shape, v[e.Name])
			return x, nil, err
		}
		if _, err := checkpoint.Write(context.Background(), path, entries, produce, checkpoint.WriteOptions{Files: map[string][]byte{"config.json": []byte(cfg)}}); err != nil {
			t.Fatal(err)
		}
	}
	open := func(p string) *checkpoint.Model {
		m, err := checkpoint.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		return m
	}
	for _, tc := range []struct {
		embeddings string
		baseBias   bool // the LoRA modules' bias changes are not carried
	}{{"save", false}, {"lora", true}} {
		lora := filepath.Join(dir, "lora-"+tc.embeddings)
		if _, _, err := lowrank.ExtractLoRA(context.Background(), open(base), open(ft), lora, lowrank.ExtractOptions{
			Rule: lowrank.RankRule{Rank: 64}, Alpha: 16, Embeddings: tc.embeddings, SVD: lowrank.SVDOptions{Exact: true}}, false); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(dir, "merged-"+tc.embeddings)
		runConfig(t, fmt.Sprintf("models:\n  - model: %s+%s\n    parameters: {weight: 1}\nmerge_method: linear\ndtype: float32\n", base, lora), out)
		var worst float64
		for _, n := range names {
			got, want := read(t, out, n), vf[n]
			// the changed q and v biases belong to LoRA modules
			if tc.baseBias && (strings.HasSuffix(n, "q_proj.bias") || strings.HasSuffix(n, "v_proj.bias")) {
				want = vb[n]
			}
			for i := range got {
				worst = max(worst, math.Abs(float64(got[i])-float64(want[i])))
			}
		}
		if worst > 2e-6 {
			t.Errorf("%s: base + adapter differs from the fine-tune by %g", tc.embeddings, worst)
		}
		t.Logf("%s: max |merged - fine-tune| = %.2g", tc.embeddings, worst)
	}
}
