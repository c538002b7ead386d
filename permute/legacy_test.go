package permute

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"regexp"
	"sort"
	"strconv"
	"testing"

	"github.com/wtool/wtool/io/arch"
	"github.com/wtool/wtool/tensors"
)

// legacyLlamaConfig holds the attention shapes of a Llama-family model.
type legacyLlamaConfig struct {
	Heads   int // num_attention_heads
	KVHeads int // num_key_value_heads (Heads without grouped-query attention)
	HeadDim int // head_dim, or hidden_size / num_attention_heads
}

var llamaLayer = regexp.MustCompile(`^model\.layers\.(\d+)\.(.+)$`)

// llamaLayerTensors are the per-layer tensors of the family; q/k/v biases
// (Qwen2) are optional.
var llamaLayerTensors = []string{
	"self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
	"mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight",
	"input_layernorm.weight", "post_attention_layernorm.weight",
}

// LlamaSpec returns the spec of a Llama/Mistral/Qwen2-family checkpoint in
// Hugging Face naming: one residual-stream group "residual" acting on the
// embeddings, every projection's input columns, o_proj and down_proj rows,
// every norm and lm_head's columns; per layer N a group "layers.N.mlp" over
// the MLP's hidden units (gate/up rows, down columns) and, when cfg is given,
// a group "layers.N.heads" over the key/value heads: a kv head moves with the
// query heads that share it (grouped-query attention), whole heads at a time
// (the dimensions inside a head are tied by RoPE and stay put). Without cfg
// heads are left in place. Tied embeddings (no lm_head.weight) are supported;
// rotary inv_freq buffers are left alone.
func legacyLlamaSpec(shapes map[string][]int64, cfg *legacyLlamaConfig) (*Spec, error) {
	emb, ok := shapes["model.embed_tokens.weight"]
	if !ok || len(emb) != 2 {
		return nil, errors.New("no model.embed_tokens.weight [vocab, hidden]: not a Llama-family checkpoint")
	}
	hidden := int(emb[1])
	s := &Spec{Groups: map[string]int{"residual": hidden}, Tensors: map[string][]Axis{}}
	res := Axis{Group: "residual"}
	s.Tensors["model.embed_tokens.weight"] = []Axis{{}, res}
	s.Tensors["model.norm.weight"] = []Axis{res}
	if _, ok := shapes["lm_head.weight"]; ok {
		s.Tensors["lm_head.weight"] = []Axis{{}, res}
	}
	layers := map[int]bool{}
	for name := range shapes {
		if m := llamaLayer.FindStringSubmatch(name); m != nil {
			n, _ := strconv.Atoi(m[1])
			layers[n] = true
		}
	}
	var ids []int
	for n := range layers {
		ids = append(ids, n)
	}
	sort.Ints(ids)
	for _, n := range ids {
		p := fmt.Sprintf("model.layers.%d.", n)
		for _, t := range llamaLayerTensors {
			if _, ok := shapes[p+t]; !ok {
				return nil, fmt.Errorf("layer %d has no %s%s: not a Llama-family layer", n, p, t)
			}
		}
		inter := int(shapes[p+"mlp.up_proj.weight"][0])
		mlpG := fmt.Sprintf("layers.%d.mlp", n)
		s.Groups[mlpG] = inter
		s.Tensors[p+"mlp.gate_proj.weight"] = []Axis{{Group: mlpG}, res}
		s.Tensors[p+"mlp.up_proj.weight"] = []Axis{{Group: mlpG}, res}
		s.Tensors[p+"mlp.down_proj.weight"] = []Axis{res, {Group: mlpG}}
		s.Tensors[p+"input_layernorm.weight"] = []Axis{res}
		s.Tensors[p+"post_attention_layernorm.weight"] = []Axis{res}
		var qRows, kvRows, oCols Axis
		if cfg != nil {
			heads := fmt.Sprintf("layers.%d.heads", n)
			s.Groups[heads] = cfg.KVHeads
			kvRows = Axis{Group: heads, Block: cfg.HeadDim}
			qRows = Axis{Group: heads, Block: cfg.HeadDim * cfg.Heads / cfg.KVHeads}
			oCols = qRows
		}
		s.Tensors[p+"self_attn.q_proj.weight"] = []Axis{qRows, res}
		s.Tensors[p+"self_attn.k_proj.weight"] = []Axis{kvRows, res}
		s.Tensors[p+"self_attn.v_proj.weight"] = []Axis{kvRows, res}
		s.Tensors[p+"self_attn.o_proj.weight"] = []Axis{res, oCols}
		for _, b := range []struct {
			name string
			axis Axis
		}{{"self_attn.q_proj.bias", qRows}, {"self_attn.k_proj.bias", kvRows}, {"self_attn.v_proj.bias", kvRows}} {
			if _, ok := shapes[p+b.name]; ok {
				s.Tensors[p+b.name] = []Axis{b.axis}
				if b.axis.Group == "" {
					s.Tensors[p+b.name] = nil
				}
			}
		}
		if _, ok := shapes[p+"self_attn.rotary_emb.inv_freq"]; ok {
			s.Tensors[p+"self_attn.rotary_emb.inv_freq"] = nil
		}
	}
	for name := range shapes {
		if _, ok := s.Tensors[name]; !ok {
			return nil, fmt.Errorf("tensor %q is not part of the Llama family's layout", name)
		}
	}
	return s, nil
}

// llamaArchSpec builds the arch-driven spec of an in-memory Llama-style
// model (config.json's geometry from c).
func llamaArchSpec(t testing.TB, w weights, c llamaCfg) *ArchSpec {
	t.Helper()
	cfg, err := arch.ParseConfig([]byte(fmt.Sprintf(`{"model_type":"llama","hidden_size":%d,"num_attention_heads":%d,"num_key_value_heads":%d,"head_dim":%d,"intermediate_size":%d,"tie_word_embeddings":%v}`,
		c.hidden, c.heads, c.kvHeads, c.headDim, c.inter, c.tied)))
	if err != nil {
		t.Fatal(err)
	}
	a, err := arch.Describe(cfg, w.shapes())
	if err != nil {
		t.Fatal(err)
	}
	s, err := BuildSpec(a)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// fusedCase returns a spec built from the architecture for a small GPT-2
// (Conv1D [in, out], c_attn = q|k|v fused along its columns, per-head q/k
// and v/o features) or Phi-3 (qkv_proj and gate_up_proj fused along their
// rows, grouped-query attention: o_proj's columns repeat each key/value
// head's features), with random weights.
func fusedCase(family string) func(r *rand.Rand) (*Spec, weights) {
	return func(r *rand.Rand) (*Spec, weights) {
		w := weights{}
		add := func(name string, shape ...int64) { w[name] = randomTensor(r, name, tensors.F32, 1, shape...) }
		var cfg string
		switch family {
		case "gpt2":
			h, inter := int64(32), int64(40)
			cfg = `{"model_type":"gpt2","n_head":4,"n_embd":32}`
			add("wte.weight", 11, h)
			add("wpe.weight", 6, h)
			add("ln_f.weight", h)
			add("ln_f.bias", h)
			for l := range 2 {
				p := fmt.Sprintf("h.%d.", l)
				for _, n := range []string{"ln_1", "ln_2"} {
					add(p+n+".weight", h)
					add(p+n+".bias", h)
				}
				add(p+"attn.c_attn.weight", h, 3*h)
				add(p+"attn.c_attn.bias", 3*h)
				add(p+"attn.c_proj.weight", h, h)
				add(p+"attn.c_proj.bias", h)
				add(p+"mlp.c_fc.weight", h, inter)
				add(p+"mlp.c_fc.bias", inter)
				add(p+"mlp.c_proj.weight", inter, h)
				add(p+"mlp.c_proj.bias", h)
			}
		case "phi3":
			h, d, heads, kv, inter := int64(24), int64(6), int64(4), int64(2), int64(36)
			cfg = `{"model_type":"phi3","num_attention_heads":4,"num_key_value_heads":2,"hidden_size":24,"head_dim":6}`
			add("model.embed_tokens.weight", 9, h)
			add("model.norm.weight", h)
			add("lm_head.weight", 9, h)
			for l := range 2 {
				p := fmt.Sprintf("model.layers.%d.", l)
				add(p+"input_layernorm.weight", h)
				add(p+"post_attention_layernorm.weight", h)
				add(p+"self_attn.qkv_proj.weight", (heads+2*kv)*d, h)
				add(p+"self_attn.o_proj.weight", h, heads*d)
				add(p+"mlp.gate_up_proj.weight", 2*inter, h)
				add(p+"mlp.down_proj.weight", h, inter)
			}
		}
		c, err := arch.ParseConfig([]byte(cfg))
		if err != nil {
			panic(err)
		}
		a, err := arch.Describe(c, w.shapes())
		if err != nil {
			panic(err)
		}
		as, err := BuildSpec(a)
		if err != nil {
			panic(err)
		}
		return as.Spec, w
	}
}
