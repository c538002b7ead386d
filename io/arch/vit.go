package arch

import (
	"fmt"
	"slices"
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
	return encoderRoot(names, "vit", "embeddings.patch_embeddings.projection.weight", "attention.attention.")
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
	layers, err := encoderGeometry(b, root, int(b.Shapes[root+"embeddings.patch_embeddings.projection.weight"][0]))
	if err != nil {
		return err
	}
	for s, k := range map[string]SpaceKind{"pixels": SpaceInput, "residual": SpaceResidual, "pooled": SpaceHidden, "labels": SpaceOutput} {
		b.Space(s, k)
	}
	e := root + "embeddings."
	b.Add(Spec{Name: e + "patch_embeddings.projection", Kind: Conv, Role: RolePatchEmbedding, In: "pixels", Out: "residual"})
	b.AddTensor(e+"cls_token", Bare, RoleClassToken, "", "", "residual")
	b.AddTensor(e+"mask_token", Bare, RoleClassToken, "", "", "residual")
	b.AddTensor(e+"position_embeddings", Bare, RolePositionEmbedding, "", "", "residual")
	layer := encoderLayer{attn: "attention.attention.", norms: [2]string{"layernorm_before", "layernorm_after"}}
	for _, n := range layers {
		layer.add(b, root, n)
	}
	b.SetLayer(-1)
	b.Add(Spec{Name: root + "layernorm", Kind: LayerNorm, Role: RoleNorm, Out: "residual"})
	b.Add(Spec{Name: root + "pooler.dense", Kind: Linear, Role: RolePooler, In: "residual", Out: "pooled", Optional: true})
	b.Add(Spec{Name: "classifier", Kind: Linear, Role: RoleHead, In: "residual", Out: "labels", Optional: true})
	return nil
}
