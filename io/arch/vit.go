package arch

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// vit is Google's Vision Transformer in Hugging Face naming: a patch
// projection (a convolution with stride = kernel), a class token and learned
// position embeddings (bare parameters [1, 1, h] and [1, patches+1, h]),
// pre-LN encoder layers (layernorm_before, attention.attention.{query, key,
// value}, attention.output.dense, layernorm_after, intermediate.dense,
// output.dense), the final layernorm, and a classifier on the class token
// (ViTForImageClassification) or a pooler (ViTModel).
type vit struct{}

func init() { Register(vit{}) }

func (vit) Name() string { return "vit" }

func (vit) MatchConfig(c *Config) bool {
	return c.ModelType == "vit" || slices.Contains([]string{"ViTForImageClassification", "ViTModel", "ViTForMaskedImageModeling"}, c.Architecture())
}

func vitRoot(names []string) (string, bool) {
	for _, r := range []string{"vit.", ""} {
		if slices.Contains(names, r+"embeddings.patch_embeddings.projection.weight") && slices.ContainsFunc(names, func(n string) bool {
			return strings.HasPrefix(n, r+"encoder.layer.0.attention.attention.query.")
		}) {
			return r, true
		}
	}
	return "", false
}

func (vit) MatchNames(names []string) bool { _, ok := vitRoot(names); return ok }

func (vit) BaseClasses() []string { return []string{"ViTModel"} }

func (vit) Describe(b *Builder) error {
	root, ok := vitRoot(b.Names)
	if !ok {
		return fmt.Errorf("no embeddings.patch_embeddings.projection.weight and encoder.layer.0.attention.attention.query: not a ViT checkpoint")
	}
	a := b.Arch()
	a.Prefix = "vit"
	cfg := b.Config
	var layers []int
	for _, g := range b.Matching(regexp.MustCompile(`^` + regexp.QuoteMeta(root) + `encoder\.layer\.(\d+)\.`)) {
		n, _ := strconv.Atoi(g[0])
		layers = append(layers, n)
	}
	slices.Sort(layers)
	a.Layers = layers[len(layers)-1] + 1
	a.Hidden = int(b.Shapes[root+"embeddings.patch_embeddings.projection.weight"][0])
	if cfg.Has("num_attention_heads") {
		h := cfg.Int("num_attention_heads", 0)
		if h <= 0 || a.Hidden%h != 0 {
			return fmt.Errorf("config.json: hidden_size %d is not a multiple of %d heads", a.Hidden, h)
		}
		a.Attention = &Attention{Heads: h, KVHeads: h, HeadDim: a.Hidden / h}
	} else {
		b.Note("no attention geometry (config.json num_attention_heads): heads unknown")
	}
	for s, k := range map[string]SpaceKind{"pixels": SpaceInput, "residual": SpaceResidual, "pooled": SpaceHidden, "labels": SpaceOutput} {
		b.Space(s, k)
	}
	e := root + "embeddings."
	b.Add(Spec{Name: e + "patch_embeddings.projection", Kind: Conv, Role: RolePatchEmbedding, In: "pixels", Out: "residual"})
	b.AddTensor(e+"cls_token", Bare, RoleClassToken, "", "", "residual")
	b.AddTensor(e+"mask_token", Bare, RoleClassToken, "", "", "residual")
	b.AddTensor(e+"position_embeddings", Bare, RolePositionEmbedding, "", "", "residual")
	for _, n := range layers {
		b.SetLayer(n)
		p := fmt.Sprintf("%sencoder.layer.%d.", root, n)
		sp := func(s string) string { return fmt.Sprintf("layers.%d.%s", n, s) }
		q, k, v, o, h := sp("attn.q"), sp("attn.k"), sp("attn.v"), sp("attn.out"), sp("mlp.hidden")
		for _, s := range []string{q, k, v, o} {
			b.Space(s, SpaceAttention)
			if at := a.Attention; at != nil {
				b.Heads(s, at.Heads, at.HeadDim, false)
			}
		}
		b.Space(h, SpaceHidden)
		b.Add(Spec{Name: p + "layernorm_before", Kind: LayerNorm, Role: RoleNorm, Out: "residual"})
		b.Add(Spec{Name: p + "attention.attention.query", Kind: Linear, Role: RoleAttnQ, In: "residual", Out: q})
		b.Add(Spec{Name: p + "attention.attention.key", Kind: Linear, Role: RoleAttnK, In: "residual", Out: k})
		b.Add(Spec{Name: p + "attention.attention.value", Kind: Linear, Role: RoleAttnV, In: "residual", Out: v})
		b.Add(Spec{Name: p + "attention.output.dense", Kind: Linear, Role: RoleAttnOut, In: o, Out: "residual"})
		b.Add(Spec{Name: p + "layernorm_after", Kind: LayerNorm, Role: RoleNorm, Out: "residual"})
		b.Add(Spec{Name: p + "intermediate.dense", Kind: Linear, Role: RoleMLPUp, In: "residual", Out: h})
		b.Add(Spec{Name: p + "output.dense", Kind: Linear, Role: RoleMLPDown, In: h, Out: "residual"})
	}
	b.SetLayer(-1)
	b.Add(Spec{Name: root + "layernorm", Kind: LayerNorm, Role: RoleNorm, Out: "residual"})
	b.Add(Spec{Name: root + "pooler.dense", Kind: Linear, Role: RolePooler, In: "residual", Out: "pooled", Optional: true})
	b.Add(Spec{Name: "classifier", Kind: Linear, Role: RoleHead, In: "residual", Out: "labels", Optional: true})
	return nil
}
