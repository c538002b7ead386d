package arch

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
)

// decoder describes the Llama-style decoder layout that Llama, Mistral,
// Qwen2, Gemma, Phi-3 and Mixtral share in Hugging Face naming:
//
//	model.embed_tokens, model.layers.N.{input_layernorm, self_attn.{q,k,v,o}_proj,
//	post_attention_layernorm, mlp.{gate,up,down}_proj}, model.norm, lm_head
//
// with the variations a family selects: fused qkv_proj and gate_up_proj
// (Phi-3), a mixture of experts in block_sparse_moe (Mixtral), (1 + w) norms
// (Gemma). Biases (Qwen2's q/k/v) are found from the tensors.
type decoder struct {
	norm        Kind // RMSNorm or GemmaRMSNorm
	fusedQKV    bool
	fusedGateUp bool
	moe         bool
	tieDefault  bool // tie_word_embeddings when config.json does not say
}

var decoderLayer = regexp.MustCompile(`^(?:model\.)?layers\.(\d+)\.`)

// decoderRoot returns the prefix of a decoder checkpoint's base-model
// tensors: "model." (saved from *ForCausalLM), "" (saved from the base model
// class), and whether there is one.
func decoderRoot(names []string, probe string) (string, bool) {
	for _, root := range []string{"model.", ""} {
		if slices.Contains(names, root+"embed_tokens.weight") {
			for _, n := range names {
				if m := decoderLayer.FindStringSubmatch(n); m != nil && n == root+"layers."+m[1]+"."+probe {
					return root, true
				}
			}
		}
	}
	return "", false
}

func (d decoder) describe(b *Builder) error {
	root, ok := decoderRoot(b.Names, "input_layernorm.weight")
	if !ok {
		return fmt.Errorf("no %sembed_tokens.weight with model.layers.N.input_layernorm.weight: not a %s checkpoint", "model.", b.Arch().Family)
	}
	a := b.Arch()
	a.Prefix = "model"
	cfg := b.Config
	layers := b.layerNumbers(root, "layers")
	a.Layers = 0
	if len(layers) > 0 {
		a.Layers = layers[len(layers)-1] + 1
	}
	if cfg.Has("num_hidden_layers") && cfg.Int("num_hidden_layers", 0) != a.Layers {
		b.Note("config.json num_hidden_layers %d, the checkpoint has layers up to %d", cfg.Int("num_hidden_layers", 0), a.Layers-1)
	}
	emb := b.Shapes[root+"embed_tokens.weight"]
	if len(emb) != 2 {
		return fmt.Errorf("tensor %q has shape %v, not [vocab, hidden]", root+"embed_tokens.weight", emb)
	}
	a.Hidden = int(emb[1])
	// attention geometry
	if cfg != nil && cfg.Has("num_attention_heads") {
		at := &Attention{Heads: cfg.Int("num_attention_heads", 0), Rotary: true, RopeTheta: cfg.Float("rope_theta", 10000)}
		at.KVHeads = cfg.Int("num_key_value_heads", at.Heads)
		if at.Heads <= 0 || at.KVHeads <= 0 || at.Heads%at.KVHeads != 0 {
			return fmt.Errorf("config.json: %d attention heads and %d key/value heads", at.Heads, at.KVHeads)
		}
		at.HeadDim = cfg.Int("head_dim", 0)
		if at.HeadDim == 0 {
			hs := cfg.Int("hidden_size", a.Hidden)
			if hs%at.Heads != 0 {
				return fmt.Errorf("config.json: hidden_size %d is not a multiple of %d heads", hs, at.Heads)
			}
			at.HeadDim = hs / at.Heads
		}
		at.RotaryDim = int(float64(at.HeadDim) * cfg.Float("partial_rotary_factor", 1))
		a.Attention = at
	} else {
		b.Note("no attention geometry (config.json num_attention_heads): heads unknown")
	}
	if d.moe {
		a.ExpertsPerToken = cfg.Int("num_experts_per_tok", 2)
	}
	b.Space("tokens", SpaceInput)
	b.Space("residual", SpaceResidual)
	b.Space("logits", SpaceOutput)
	b.Add(Spec{Name: root + "embed_tokens", Kind: Embedding, Role: RoleEmbedding, In: "tokens", Out: "residual"})
	b.Add(Spec{Name: root + "norm", Kind: d.norm, Role: RoleNorm, Out: "residual"})
	tie := cfg.Bool("tie_word_embeddings", d.tieDefault)
	spec := Spec{Name: "lm_head", Kind: Linear, Role: RoleHead, In: "residual", Out: "logits", Optional: true}
	if tie {
		spec.TiedTo = root + "embed_tokens"
		b.Tie("lm_head", root+"embed_tokens")
	}
	if b.Add(spec) == nil && !tie {
		b.Note("no lm_head.weight and tie_word_embeddings is false: a base model without its head")
	}
	for _, n := range layers {
		b.SetLayer(n)
		p := fmt.Sprintf("%slayers.%d.", root, n)
		sp := func(s string) string { return fmt.Sprintf("layers.%d.%s", n, s) }
		b.Add(Spec{Name: p + "input_layernorm", Kind: d.norm, Role: RoleNorm, Out: "residual"})
		b.Add(Spec{Name: p + "post_attention_layernorm", Kind: d.norm, Role: RoleNorm, Out: "residual"})
		q, k, v, o := sp("attn.q"), sp("attn.k"), sp("attn.v"), sp("attn.out")
		for _, s := range []string{q, k, v, o} {
			b.Space(s, SpaceAttention)
		}
		if at := a.Attention; at != nil {
			b.Heads(q, at.Heads, at.HeadDim, true)
			b.Heads(k, at.KVHeads, at.HeadDim, true)
			b.Heads(v, at.KVHeads, at.HeadDim, false)
			b.Heads(o, at.Heads, at.HeadDim, false)
		}
		if d.fusedQKV {
			qkv := sp("attn.qkv")
			b.Fused(qkv, q, k, v)
			m := b.Add(Spec{Name: p + "self_attn.qkv_proj", Kind: Linear, Role: RoleAttnQKV, In: "residual", Out: qkv})
			if m != nil {
				if at := a.Attention; at != nil {
					b.Size(q, at.Heads*at.HeadDim)
					b.Size(k, at.KVHeads*at.HeadDim)
					b.Size(v, at.KVHeads*at.HeadDim)
				} else if rest := m.OutFeatures - a.Hidden; rest > 0 && rest%2 == 0 {
					b.Size(q, a.Hidden)
					b.Size(k, rest/2)
					b.Size(v, rest/2)
					if n == layers[0] {
						b.Note("qkv_proj split assumed q = hidden size, k = v = the rest halved (no config.json)")
					}
				}
			}
		} else {
			b.Add(Spec{Name: p + "self_attn.q_proj", Kind: Linear, Role: RoleAttnQ, In: "residual", Out: q})
			b.Add(Spec{Name: p + "self_attn.k_proj", Kind: Linear, Role: RoleAttnK, In: "residual", Out: k})
			b.Add(Spec{Name: p + "self_attn.v_proj", Kind: Linear, Role: RoleAttnV, In: "residual", Out: v})
		}
		b.Add(Spec{Name: p + "self_attn.o_proj", Kind: Linear, Role: RoleAttnOut, In: o, Out: "residual"})
		b.AddTensor(p+"self_attn.rotary_emb.inv_freq", Buffer, RoleBuffer)
		switch {
		case d.moe:
			experts := sp("experts")
			b.Space(experts, SpaceExperts)
			b.Add(Spec{Name: p + "block_sparse_moe.gate", Kind: Linear, Role: RoleRouter, In: "residual", Out: experts})
			var ids []int
			for _, g := range b.Matching(regexp.MustCompile(`^` + regexp.QuoteMeta(p) + `block_sparse_moe\.experts\.(\d+)\.`)) {
				e, _ := strconv.Atoi(g[0])
				ids = append(ids, e)
			}
			slices.Sort(ids)
			a.Experts = max(a.Experts, len(ids))
			for _, e := range ids {
				b.SetExpert(e)
				ep := fmt.Sprintf("%sblock_sparse_moe.experts.%d.", p, e)
				h := sp(fmt.Sprintf("experts.%d.hidden", e))
				b.Space(h, SpaceHidden)
				b.Add(Spec{Name: ep + "w1", Kind: Linear, Role: RoleMLPGate, In: "residual", Out: h})
				b.Add(Spec{Name: ep + "w3", Kind: Linear, Role: RoleMLPUp, In: "residual", Out: h})
				b.Add(Spec{Name: ep + "w2", Kind: Linear, Role: RoleMLPDown, In: h, Out: "residual"})
			}
			b.SetExpert(-1)
		case d.fusedGateUp:
			h, gu := sp("mlp.hidden"), sp("mlp.gate_up")
			b.Space(h, SpaceHidden)
			b.Fused(gu, h, h)
			b.Add(Spec{Name: p + "mlp.gate_up_proj", Kind: Linear, Role: RoleMLPGateUp, In: "residual", Out: gu})
			b.Add(Spec{Name: p + "mlp.down_proj", Kind: Linear, Role: RoleMLPDown, In: h, Out: "residual"})
		default:
			h := sp("mlp.hidden")
			b.Space(h, SpaceHidden)
			b.Add(Spec{Name: p + "mlp.gate_proj", Kind: Linear, Role: RoleMLPGate, In: "residual", Out: h})
			b.Add(Spec{Name: p + "mlp.up_proj", Kind: Linear, Role: RoleMLPUp, In: "residual", Out: h})
			b.Add(Spec{Name: p + "mlp.down_proj", Kind: Linear, Role: RoleMLPDown, In: h, Out: "residual"})
		}
	}
	b.SetLayer(-1)
	if d.moe && cfg.Has("num_local_experts") && cfg.Int("num_local_experts", 0) != a.Experts {
		b.Note("config.json num_local_experts %d, the checkpoint has %d experts per layer", cfg.Int("num_local_experts", 0), a.Experts)
	}
	return nil
}

// Size sets a space's size when no tensor gives it (the parts of a fused
// weight, from config.json); tensors that use the space are checked against
// it.
func (b *Builder) Size(space string, n int) { b.size(space, n, "(config.json)", 0) }
