package arch

import (
	"fmt"
	"slices"
)

// gpt2 is OpenAI's GPT-2 in Hugging Face naming: transformers' Conv1D
// modules, whose weights are stored [in, out] (y = x W + b), a fused
// attn.c_attn = q|k|v along the output axis, learned position embeddings,
// pre-LN blocks and the causal-mask buffers attn.bias and attn.masked_bias
// that older checkpoints store. Names may lack the base model's "transformer."
// (the released checkpoints do); PEFT paths add it for GPT2LMHeadModel.
type gpt2 struct{}

func init() { Register(gpt2{}) }

func (gpt2) Name() string { return "gpt2" }

func (gpt2) MatchConfig(c *Config) bool {
	return c.ModelType == "gpt2" || slices.Contains([]string{"GPT2LMHeadModel", "GPT2Model", "GPT2DoubleHeadsModel", "GPT2ForSequenceClassification"}, c.Architecture())
}

func gpt2Root(names []string) (string, bool) {
	for _, r := range []string{"transformer.", ""} {
		if slices.Contains(names, r+"wte.weight") && slices.Contains(names, r+"h.0.attn.c_attn.weight") {
			return r, true
		}
	}
	return "", false
}

func (gpt2) MatchNames(names []string) bool { _, ok := gpt2Root(names); return ok }

func (gpt2) BaseClasses() []string { return []string{"GPT2Model"} }

func (gpt2) Describe(b *Builder) error {
	root, ok := gpt2Root(b.Names)
	if !ok {
		return fmt.Errorf("no wte.weight and h.0.attn.c_attn.weight: not a GPT-2 checkpoint")
	}
	a := b.Arch()
	a.Prefix = "transformer"
	cfg := b.Config
	layers := b.layerNumbers(root, "h")
	a.Layers = layers[len(layers)-1] + 1
	a.Hidden = int(b.Shapes[root+"wte.weight"][1])
	if cfg.Has("n_head") {
		h := cfg.Int("n_head", 0)
		if h <= 0 || a.Hidden%h != 0 {
			return fmt.Errorf("config.json: n_embd %d is not a multiple of n_head %d", a.Hidden, h)
		}
		a.Attention = &Attention{Heads: h, KVHeads: h, HeadDim: a.Hidden / h}
	} else {
		b.Note("no attention geometry (config.json n_head): heads unknown")
	}
	for s, k := range map[string]SpaceKind{"tokens": SpaceInput, "positions": SpaceInput, "residual": SpaceResidual, "logits": SpaceOutput} {
		b.Space(s, k)
	}
	b.Add(Spec{Name: root + "wte", Kind: Embedding, Role: RoleEmbedding, In: "tokens", Out: "residual"})
	b.Add(Spec{Name: root + "wpe", Kind: Embedding, Role: RolePositionEmbedding, In: "positions", Out: "residual"})
	b.Add(Spec{Name: root + "ln_f", Kind: LayerNorm, Role: RoleNorm, Out: "residual"})
	spec := Spec{Name: "lm_head", Kind: Linear, Role: RoleHead, In: "residual", Out: "logits", Optional: true}
	if cfg.Bool("tie_word_embeddings", true) {
		spec.TiedTo = root + "wte"
		b.Tie("lm_head", root+"wte")
	}
	b.Add(spec)
	for _, n := range layers {
		b.SetLayer(n)
		p := fmt.Sprintf("%sh.%d.", root, n)
		sp := func(s string) string { return fmt.Sprintf("layers.%d.%s", n, s) }
		b.Add(Spec{Name: p + "ln_1", Kind: LayerNorm, Role: RoleNorm, Out: "residual"})
		b.Add(Spec{Name: p + "ln_2", Kind: LayerNorm, Role: RoleNorm, Out: "residual"})
		q, k, v, o, qkv := sp("attn.q"), sp("attn.k"), sp("attn.v"), sp("attn.out"), sp("attn.qkv")
		for _, s := range []string{q, k, v, o} {
			b.Space(s, SpaceAttention)
			if at := a.Attention; at != nil {
				b.Heads(s, at.Heads, at.HeadDim, false)
			}
		}
		b.Fused(qkv, q, k, v)
		if m := b.Add(Spec{Name: p + "attn.c_attn", Kind: Conv1D, Role: RoleAttnQKV, In: "residual", Out: qkv}); m != nil {
			if m.OutFeatures%3 != 0 {
				return fmt.Errorf("tensor %q: %d outputs are not q|k|v of equal sizes", p+"attn.c_attn.weight", m.OutFeatures)
			}
			for _, s := range []string{q, k, v} {
				b.Size(s, m.OutFeatures/3)
			}
		}
		b.Add(Spec{Name: p + "attn.c_proj", Kind: Conv1D, Role: RoleAttnOut, In: o, Out: "residual"})
		h := sp("mlp.hidden")
		b.Space(h, SpaceHidden)
		b.Add(Spec{Name: p + "mlp.c_fc", Kind: Conv1D, Role: RoleMLPUp, In: "residual", Out: h})
		b.Add(Spec{Name: p + "mlp.c_proj", Kind: Conv1D, Role: RoleMLPDown, In: h, Out: "residual"})
		b.AddTensor(p+"attn.bias", Buffer, RoleBuffer)
		b.AddTensor(p+"attn.masked_bias", Buffer, RoleBuffer)
	}
	b.SetLayer(-1)
	return nil
}
