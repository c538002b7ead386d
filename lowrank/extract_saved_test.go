package lowrank

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gonum.org/v1/gonum/mat"

	"github.com/wtool/wtool/internal/testenv"
	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/io/peft"
	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/tensors"
)

const extractQwen2Config = `{"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 8,
 "intermediate_size": 12, "num_attention_heads": 2, "num_key_value_heads": 1, "num_hidden_layers": 2,
 "vocab_size": 10, "rms_norm_eps": 1e-06, "tie_word_embeddings": false}`

// qwen2Changed says which tensors the fine-tune of qwen2Pair changes:
// every weight matrix but the v_proj ones, the q_proj biases, layer 0's
// k_proj bias, the v_proj biases (a module whose weight did not change),
// layer 0's input norm, both post-attention norms and the final norm.
var qwen2Changed = regexp.MustCompile(`(_proj|embed_tokens|lm_head)\.weight$|q_proj\.bias$|layers\.0\.self_attn\.k_proj\.bias$|v_proj\.bias$|layers\.0\.input_layernorm|post_attention_layernorm|model\.norm`)

// qwen2Pair writes a tiny Qwen2 (q/k/v biases, untied head; 2 layers) and
// a fine-tune of it changing the tensors qwen2Changed selects.
func qwen2Pair(t *testing.T, dir string) (base, ft string, vb, vf map[string][]float32) {
	return qwen2PairTied(t, dir, false)
}

// qwen2PairTied is qwen2Pair, with tied: tie_word_embeddings and no
// lm_head.weight.
func qwen2PairTied(t *testing.T, dir string, tied bool) (base, ft string, vb, vf map[string][]float32) {
	t.Helper()
	r := rand.New(rand.NewPCG(11, 12))
	shapes := map[string][]int64{"model.embed_tokens.weight": {10, 8}, "model.norm.weight": {8}, "lm_head.weight": {10, 8}}
	config := extractQwen2Config
	if tied {
		delete(shapes, "lm_head.weight")
		config = strings.Replace(config, `"tie_word_embeddings": false`, `"tie_word_embeddings": true`, 1)
	}
	for l := range 2 {
		p := fmt.Sprintf("model.layers.%d.", l)
		for n, s := range map[string][]int64{
			"input_layernorm.weight": {8}, "post_attention_layernorm.weight": {8},
			"self_attn.q_proj.weight": {8, 8}, "self_attn.q_proj.bias": {8},
			"self_attn.k_proj.weight": {4, 8}, "self_attn.k_proj.bias": {4},
			"self_attn.v_proj.weight": {4, 8}, "self_attn.v_proj.bias": {4},
			"self_attn.o_proj.weight": {8, 8},
			"mlp.gate_proj.weight":    {12, 8}, "mlp.up_proj.weight": {12, 8}, "mlp.down_proj.weight": {8, 12},
		} {
			shapes[p+n] = s
		}
	}
	vb, vf = map[string][]float32{}, map[string][]float32{}
	var entries []safetensors.Entry
	for _, n := range slices.Sorted(func(yield func(string) bool) {
		for n := range shapes {
			if !yield(n) {
				return
			}
		}
	}) {
		s := shapes[n]
		k, _ := tensors.NumElements(s)
		vb[n], vf[n] = make([]float32, k), make([]float32, k)
		for i := range vb[n] {
			vb[n][i] = float32(r.NormFloat64())
			vf[n][i] = vb[n][i]
			if qwen2Changed.MatchString(n) && !strings.HasSuffix(n, "v_proj.weight") {
				vf[n][i] += 0.1 * float32(r.NormFloat64())
			}
		}
		entries = append(entries, safetensors.Entry{Name: n, DType: tensors.F32, Shape: s})
	}
	base, ft = filepath.Join(dir, "base"), filepath.Join(dir, "ft")
	writeF32Model(t, base, entries, vb, config)
	writeF32Model(t, ft, entries, vf, config)
	return
}

// applyPEFT computes, from the adapter's files alone, the tensors PEFT's
// model computes with once merged: a LoRA module's W + scaling B A (an
// embedding's W + scaling (B A)^T), its bias + scaling lora_B.bias, and the
// tensors of modules_to_save in place of the model's. The key names are
// the ones PEFT saves (src/peft/utils/save_and_load.py,
// get_peft_model_state_dict): "base_model.model.<module>.lora_A.weight",
// ".lora_B.weight", ".lora_embedding_A", ".lora_embedding_B", the LoRA
// layer's "lora_B.default.bias" without the adapter name
// (_remove_adapter_name_from_state_dict_key, src/peft/tuners/tuners_utils.py)
// ".lora_B.bias", and for a module of modules_to_save
// "base_model.model.<module>.<param>" (ModulesToSaveWrapper.adapter_state_dict,
// src/peft/utils/other.py: the keys of modules_to_save.default's
// state_dict under the wrapper's own path). The modules_to_save config lists
// module names matched as PEFT's _set_trainable matches them
// (key.endswith(target_key) on the PeftModel's module paths): every module
// it selects must have all of its tensors in the file, since
// set_peft_model_state_dict looks each one up.
func applyPEFT(t *testing.T, dir string, vb map[string][]float32, shapes map[string][]int64) map[string][]float64 {
	t.Helper()
	b, err := fsReadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	f, err := safetensors.Open(filepath.Join(dir, "adapter_model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	file := map[string][]float32{}
	for _, info := range f.Header.Tensors {
		x, err := f.Tensor(info.Name)
		if err != nil {
			t.Fatal(err)
		}
		v, err := x.Float32()
		if err != nil {
			t.Fatal(err)
		}
		file[info.Name] = v
	}
	used := map[string]bool{}
	out := map[string][]float64{}
	// modules: tensor names minus the parameter
	modules := map[string][]string{}
	for n := range vb {
		i := strings.LastIndex(n, ".")
		modules[n[:i]] = append(modules[n[:i]], n[i+1:])
	}
	const pre = "base_model.model."
	for mod, params := range modules {
		selected := false
		for _, s := range b.ModulesToSave {
			if strings.HasSuffix(pre+mod, s) {
				selected = true
			}
		}
		r, alpha := float64(b.R), b.LoraAlpha
		if v, ok := b.RankPattern[mod]; ok {
			r = float64(v)
		}
		if v, ok := b.AlphaPattern[mod]; ok {
			alpha = v
		}
		s := alpha / r
		for _, p := range params {
			n := mod + "." + p
			w := f64(vb[n])
			switch {
			case selected:
				v, ok := file[pre+n]
				if !ok {
					t.Fatalf("modules_to_save selects %s but the file lacks %q (PEFT: KeyError)", mod, pre+n)
				}
				used[pre+n] = true
				w = f64(v)
			case p == "weight" && file[pre+mod+".lora_A.weight"] != nil:
				A, B := file[pre+mod+".lora_A.weight"], file[pre+mod+".lora_B.weight"]
				used[pre+mod+".lora_A.weight"], used[pre+mod+".lora_B.weight"] = true, true
				rows, cols := int(shapes[n][0]), int(shapes[n][1])
				k := len(A) / cols
				for i := range rows {
					for j := range cols {
						for q := range k {
							w[i*cols+j] += s * float64(B[i*k+q]) * float64(A[q*cols+j])
						}
					}
				}
			case p == "weight" && file[pre+mod+".lora_embedding_A"] != nil:
				A, B := file[pre+mod+".lora_embedding_A"], file[pre+mod+".lora_embedding_B"]
				used[pre+mod+".lora_embedding_A"], used[pre+mod+".lora_embedding_B"] = true, true
				num, dim := int(shapes[n][0]), int(shapes[n][1])
				k := len(A) / num
				for tok := range num {
					for c := range dim {
						for q := range k {
							w[tok*dim+c] += s * float64(B[c*k+q]) * float64(A[q*num+tok])
						}
					}
				}
			case p == "bias" && file[pre+mod+".lora_B.bias"] != nil:
				if !b.LoraBias {
					t.Fatalf("%s: lora_B.bias without lora_bias", mod)
				}
				used[pre+mod+".lora_B.bias"] = true
				for i, d := range file[pre+mod+".lora_B.bias"] {
					w[i] += s * float64(d)
				}
			}
			out[n] = w
		}
	}
	for k, v := range file {
		if used[k] {
			continue
		}
		// a head tied to a saved embedding: PEFT ties its copy to the
		// embedding's (ensure_weight_tying), so it must equal it
		if mod, ok := strings.CutSuffix(strings.TrimPrefix(k, pre), ".weight"); ok && modules[mod] == nil && b.Extra["ensure_weight_tying"] == true {
			if e := file[pre+"model.embed_tokens.weight"]; !slices.Equal(v, e) {
				t.Errorf("tied %q differs from the saved embedding", k)
			}
			continue
		}
		// lora_bias gives every LoRA layer a lora_B.bias: zeros (added to
		// the output, nothing to merge) for a module without a bias
		mod, ok := strings.CutSuffix(strings.TrimPrefix(k, pre), ".lora_B.bias")
		_, hasBias := vb[mod+".bias"]
		if !ok || hasBias || slices.ContainsFunc(v, func(x float32) bool { return x != 0 }) {
			t.Errorf("tensor %q of the adapter is used by nothing", k)
		}
	}
	return out
}

func fsReadConfig(dir string) (*peft.Config, error) {
	ad, err := peft.Read(dir)
	if err != nil {
		return nil, err
	}
	return ad.Config, nil
}

// TestExtractSavedAndBias: on a Qwen2 fine-tune changing weights, biases,
// norms and the embeddings, the adapter holds exactly the keys PEFT saves
// (applyPEFT cites them); base + adapter, applied as PEFT does, is the
// fine-tune at full rank (everything with --embeddings save; everything but
// the q/k bias changes with embedding factors, since PEFT refuses
// lora_bias with an Embedding LoRA), modules_to_save lists module names
// that select exactly the saved modules, and at rank 2 every module is the
// truncated SVD of its difference with the bias change divided by the
// scaling.
func TestExtractSavedAndBias(t *testing.T) {
	dir := t.TempDir()
	base, ft, vb, vf := qwen2Pair(t, dir)
	shapes := map[string][]int64{}
	for n, v := range vb {
		shapes[n] = []int64{int64(len(v))}
		if strings.HasSuffix(n, "_proj.weight") || strings.HasSuffix(n, "lm_head.weight") || strings.HasSuffix(n, "embed_tokens.weight") {
			cols := 8
			if strings.Contains(n, "down_proj") {
				cols = 12
			}
			shapes[n] = []int64{int64(len(v) / cols), int64(cols)}
		}
	}
	saved := []string{"model.layers.0.input_layernorm", "model.norm", "post_attention_layernorm", "v_proj"}
	var loraKeys []string
	for _, n := range []string{"q_proj", "k_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} {
		for l := range 2 {
			part := "self_attn"
			if strings.Contains("gate_proj up_proj down_proj", n) {
				part = "mlp"
			}
			loraKeys = append(loraKeys, fmt.Sprintf("base_model.model.model.layers.%d.%s.%s", l, part, n))
		}
	}
	savedKeys := []string{"base_model.model.model.layers.0.input_layernorm.weight", "base_model.model.model.norm.weight",
		"base_model.model.model.layers.0.post_attention_layernorm.weight", "base_model.model.model.layers.1.post_attention_layernorm.weight",
		"base_model.model.model.layers.0.self_attn.v_proj.weight", "base_model.model.model.layers.0.self_attn.v_proj.bias",
		"base_model.model.model.layers.1.self_attn.v_proj.weight", "base_model.model.model.layers.1.self_attn.v_proj.bias"}
	for _, tc := range []struct {
		name       string
		embeddings string
		loraBias   bool
		save       []string
		keys       []string
		notExact   []string // tensors base + adapter leaves at the base's values
	}{
		{name: "lora", embeddings: "lora", save: saved,
			keys: append([]string{"base_model.model.model.embed_tokens.lora_embedding_A", "base_model.model.model.embed_tokens.lora_embedding_B",
				"base_model.model.lm_head.lora_A.weight", "base_model.model.lm_head.lora_B.weight"}, savedKeys...),
			notExact: []string{"model.layers.0.self_attn.q_proj.bias", "model.layers.1.self_attn.q_proj.bias", "model.layers.0.self_attn.k_proj.bias"}},
		{name: "save", embeddings: "save", loraBias: true, save: append([]string{"embed_tokens", "lm_head"}, saved...),
			keys: append([]string{"base_model.model.model.embed_tokens.weight", "base_model.model.lm_head.weight"}, savedKeys...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keys := slices.Clone(tc.keys)
			for _, m := range loraKeys {
				keys = append(keys, m+".lora_A.weight", m+".lora_B.weight")
				if tc.loraBias {
					keys = append(keys, m+".lora_B.bias")
				}
			}
			slices.Sort(keys)
			for _, rank := range []int{64, 2} {
				out := filepath.Join(dir, fmt.Sprintf("%s-%d", tc.name, rank))
				reps, _ := extractWith(t, base, ft, out, ExtractOptions{Rule: RankRule{Rank: rank}, Alpha: 16, Embeddings: tc.embeddings, SVD: SVDOptions{Exact: true}})
				f, err := safetensors.Open(filepath.Join(out, "adapter_model.safetensors"))
				if err != nil {
					t.Fatal(err)
				}
				var got []string
				for _, info := range f.Header.Tensors {
					got = append(got, info.Name)
				}
				f.Close()
				slices.Sort(got)
				if !slices.Equal(got, keys) {
					t.Fatalf("rank %d: adapter keys\n%q\nwant\n%q", rank, got, keys)
				}
				cfg, err := fsReadConfig(out)
				if err != nil {
					t.Fatal(err)
				}
				if want := slices.Sorted(slices.Values(tc.save)); !slices.Equal(cfg.ModulesToSave, want) {
					t.Errorf("modules_to_save %q, want %q", cfg.ModulesToSave, want)
				}
				if cfg.LoraBias != tc.loraBias {
					t.Errorf("lora_bias %v, want %v", cfg.LoraBias, tc.loraBias)
				}
				kinds := map[string]ExtractReport{}
				for _, r := range reps {
					kinds[r.Module] = r
				}
				for _, n := range tc.notExact {
					if r := kinds[n]; !r.Skipped || r.Kind != ExtractBias {
						t.Errorf("%s: report %+v, want a bias not captured", n, r)
					}
				}
				if r := kinds["model.norm.weight"]; r.Kind != ExtractSaved || r.Skipped {
					t.Errorf("model.norm.weight: report %+v, want saved", r)
				}
				if tc.loraBias {
					if r := kinds["model.layers.0.self_attn.k_proj.bias"]; r.Kind != ExtractBias || r.Skipped {
						t.Errorf("k_proj.bias: report %+v, want a captured bias", r)
					}
				}
				applied := applyPEFT(t, out, vb, shapes)
				if rank == 64 {
					var worst float64
					for n, v := range applied {
						want := vf[n]
						if slices.Contains(tc.notExact, n) {
							want = vb[n]
						}
						for i := range v {
							worst = max(worst, math.Abs(v[i]-float64(want[i])))
						}
					}
					if worst > 2e-6 {
						t.Errorf("full rank: base + adapter differs from the fine-tune by %g", worst)
					}
					t.Logf("%s, full rank: max |base + adapter - fine-tune| = %.2g", tc.name, worst)
					continue
				}
				// rank 2: each LoRA weight is the best rank-2 approximation
				for n, v := range applied {
					if !strings.HasSuffix(n, "_proj.weight") || strings.Contains(n, "v_proj") {
						continue
					}
					rows, cols := int(shapes[n][0]), int(shapes[n][1])
					d, res := mat.NewDense(rows, cols, nil), mat.NewDense(rows, cols, nil)
					for i := range rows * cols {
						d.Set(i/cols, i%cols, float64(vf[n][i])-float64(vb[n][i]))
						res.Set(i/cols, i%cols, float64(vf[n][i])-v[i])
					}
					var svd mat.SVD
					if !svd.Factorize(d, mat.SVDNone) {
						t.Fatal("gonum SVD failed")
					}
					var tail float64
					for i, x := range svd.Values(nil) {
						if i >= 2 {
							tail += x * x
						}
					}
					if e := mat.Norm(res, 2); math.Abs(e-math.Sqrt(tail)) > 1e-5 {
						t.Errorf("rank 2: %s: ||D - s B A|| = %g, Eckart-Young %g", n, e, math.Sqrt(tail))
					}
				}
				if tc.loraBias {
					// scaling alpha/r = 8: lora_B.bias is the change / 8
					ad, err := peft.Read(out)
					if err != nil {
						t.Fatal(err)
					}
					b, _ := ad.Modules["model.layers.0.self_attn.k_proj"].Bias.Float32()
					for i := range b {
						if want := (float64(vf["model.layers.0.self_attn.k_proj.bias"][i]) - float64(vb["model.layers.0.self_attn.k_proj.bias"][i])) / 8; math.Abs(float64(b[i])-want) > 1e-7 {
							t.Fatalf("rank 2: k_proj lora_B.bias[%d] = %g, want %g", i, b[i], want)
						}
					}
				}
			}
		})
	}
}

// TestExtractSavedTied: with a head tied to the embedding, --embeddings
// save stores the embedding in modules_to_save and, as PEFT saves a tied
// module with ensure_weight_tying, the head's copy of it
// (base_model.model.lm_head.weight) and ensure_weight_tying true; base +
// adapter is the fine-tune at full rank. With embedding factors the head
// has no adapter of its own (tied), as before.
func TestExtractSavedTied(t *testing.T) {
	dir := t.TempDir()
	base, ft, vb, vf := qwen2PairTied(t, dir, true)
	shapes := map[string][]int64{}
	for n, v := range vb {
		shapes[n] = []int64{int64(len(v))}
		if strings.HasSuffix(n, ".weight") && (strings.Contains(n, "_proj") || strings.Contains(n, "embed")) {
			cols := 8
			if strings.Contains(n, "down_proj") {
				cols = 12
			}
			shapes[n] = []int64{int64(len(v) / cols), int64(cols)}
		}
	}
	out := filepath.Join(dir, "save")
	reps, ad := extractWith(t, base, ft, out, ExtractOptions{Rule: RankRule{Rank: 64}, Embeddings: "save", SVD: SVDOptions{Exact: true}})
	if ad.Config.Extra["ensure_weight_tying"] != true {
		t.Errorf("ensure_weight_tying not set: %v", ad.Config.Extra)
	}
	h, e := ad.Saved["lm_head.weight"], ad.Saved["model.embed_tokens.weight"]
	if h == nil || e == nil || !slices.Equal(h.Data, e.Data) {
		t.Fatalf("the tied head's copy is missing or differs: %v", slices.Collect(func(yield func(string) bool) {
			for k := range ad.Saved {
				if !yield(k) {
					return
				}
			}
		}))
	}
	found := false
	for _, r := range reps {
		found = found || (r.Module == "lm_head.weight" && r.Kind == ExtractSaved)
	}
	if !found {
		t.Errorf("the tied head is not reported as saved: %+v", reps)
	}
	var worst float64
	for n, v := range applyPEFT(t, out, vb, shapes) {
		for i := range v {
			worst = max(worst, math.Abs(v[i]-float64(vf[n][i])))
		}
	}
	if worst > 2e-6 {
		t.Errorf("full rank: base + adapter differs from the fine-tune by %g", worst)
	}
}

func extractWith(t *testing.T, base, ft, out string, o ExtractOptions) ([]ExtractReport, *peft.Adapter) {
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
	reps, ad, err := ExtractLoRA(context.Background(), b, f, out, o, false)
	if err != nil {
		t.Fatal(err)
	}
	return reps, ad
}

// peftScript checks an extracted adapter with PyTorch alone, by PEFT's
// documented semantics rather than wtool's code: per module of the
// fine-tune (tensor names minus the parameter) it builds the module PEFT
// would run and compares its output on random inputs with the fine-tune's
// module. A module selected by modules_to_save (PEFT's _set_trainable:
// "base_model.model." + path ends with a listed name) is loaded from the
// adapter's "base_model.model.<module>.<param>" keys, all of which must be
// present; a LoRA Linear computes base(x) + lora_B(lora_A(x)) * scaling,
// lora_B with the "lora_B.bias" key as its bias when lora_bias
// (tuners/lora/layer.py Linear.forward); an Embedding LoRA adds
// (embedding(x, lora_embedding_A^T) @ lora_embedding_B^T) * scaling
// (Embedding.forward); norms compare their weights.
const peftScript = `
import json, sys, torch
sys.path.insert(0, sys.argv[1])
import wtool_collect as wc
adir, base_dir, ft_dir = sys.argv[2], sys.argv[3], sys.argv[4]
cfg = json.load(open(adir + "/adapter_config.json"))
ad = {k: torch.from_numpy(v) for k, v in wc.read_safetensors(adir + "/adapter_model.safetensors")[0].items()}
base, ft = wc.load_checkpoint(base_dir), wc.load_checkpoint(ft_dir)
P = "base_model.model."
used = set()
mods = {}
for n in ft:
    m, _, p = n.rpartition(".")
    mods.setdefault(m, []).append(p)
torch.manual_seed(0)
worst = 0.0
for m, params in sorted(mods.items()):
    r = cfg["rank_pattern"].get(m, cfg["r"])
    s = cfg["alpha_pattern"].get(m, cfg["lora_alpha"]) / r
    state = {p: base[m + "." + p] for p in params}
    want = {p: ft[m + "." + p] for p in params}
    if any((P + m).endswith(x) for x in (cfg["modules_to_save"] or [])):
        for p in params:
            state[p] = ad[P + m + "." + p]  # KeyError = PEFT's load failing
            used.add(P + m + "." + p)
        got = state
    elif P + m + ".lora_A.weight" in ad:
        W = state["weight"]
        lin = torch.nn.Linear(W.shape[1], W.shape[0], bias="bias" in state)
        lin.load_state_dict(state)
        A = torch.nn.Linear(W.shape[1], r, bias=False)
        A.load_state_dict({"weight": ad[P + m + ".lora_A.weight"]})
        B = torch.nn.Linear(r, W.shape[0], bias=cfg.get("lora_bias", False))
        sb = {"weight": ad[P + m + ".lora_B.weight"]}
        if cfg.get("lora_bias", False):
            sb["bias"] = ad[P + m + ".lora_B.bias"]
            used.add(P + m + ".lora_B.bias")
        B.load_state_dict(sb)
        used.update([P + m + ".lora_A.weight", P + m + ".lora_B.weight"])
        ref = torch.nn.Linear(W.shape[1], W.shape[0], bias="bias" in want)
        ref.load_state_dict(want)
        x = torch.randn(16, W.shape[1])
        with torch.no_grad():
            y = lin(x) + B(A(x)) * s
            z = ref(x)
        if m in json.loads(sys.argv[5]):
            z = z - want["bias"] + base[m + ".bias"]  # the bias PEFT cannot carry here
        worst = max(worst, (y - z).abs().max().item())
        continue
    elif P + m + ".lora_embedding_A" in ad:
        A, B = ad[P + m + ".lora_embedding_A"], ad[P + m + ".lora_embedding_B"]
        used.update([P + m + ".lora_embedding_A", P + m + ".lora_embedding_B"])
        x = torch.arange(state["weight"].shape[0])
        y = torch.nn.functional.embedding(x, state["weight"]) + (torch.nn.functional.embedding(x, A.T) @ B.T) * s
        worst = max(worst, (y - torch.nn.functional.embedding(x, want["weight"])).abs().max().item())
        continue
    else:
        got = state
    for p in params:
        worst = max(worst, (got[p] - want[p]).abs().max().item())
unused = [k for k in ad if k not in used and not (k.endswith(".lora_B.bias") and not ad[k].any())]
assert not unused, unused
assert worst < 1e-5, worst
print("peft semantics ok: max error %.2g" % worst)
`

// TestExtractAppliesInPyTorch: the adapters of TestExtractSavedAndBias,
// applied by peftScript (PyTorch, PEFT's semantics), turn the base into
// the fine-tune at full rank.
func TestExtractAppliesInPyTorch(t *testing.T) {
	py := testenv.Python(t)
	dir := t.TempDir()
	base, ft, _, _ := qwen2Pair(t, dir)
	tools, _ := filepath.Abs("../tools")
	script := filepath.Join(dir, "check.py")
	if err := os.WriteFile(script, []byte(peftScript), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ embeddings, notCaptured string }{
		{"save", `[]`},
		{"lora", `["model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj", "model.layers.0.self_attn.k_proj"]`},
	} {
		out := filepath.Join(dir, tc.embeddings)
		extractWith(t, base, ft, out, ExtractOptions{Rule: RankRule{Rank: 64}, Alpha: 16, Embeddings: tc.embeddings, SVD: SVDOptions{Exact: true}})
		b, err := exec.Command(py, "-B", script, tools, out, base, ft, tc.notCaptured).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", tc.embeddings, err, b)
		}
		t.Logf("%s: %s", tc.embeddings, b)
	}
}
