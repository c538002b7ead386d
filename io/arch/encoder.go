package arch

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// This file holds what the Hugging Face encoder families (BERT, ViT) share:
// the base model under an optional "<model>." prefix, and encoder.layer.N
// layers of multi-head self-attention (query, key, value, output.dense) and
// an MLP (intermediate.dense, output.dense), with two LayerNorms.

// encoderRoot returns the prefix of an encoder checkpoint's base-model
// tensors, model+"." (saved from a task class) or "" (saved from the base
// class), recognised by the tensor embedding and by layer 0's query under
// attn ("attention.self." for BERT, "attention.attention." for ViT).
func encoderRoot(names []string, model, embedding, attn string) (string, bool) {
	for _, r := range []string{model + ".", ""} {
		if slices.Contains(names, r+embedding) && slices.ContainsFunc(names, func(n string) bool {
			return strings.HasPrefix(n, r+"encoder.layer.0."+attn+"query.")
		}) {
			return r, true
		}
	}
	return "", false
}

// layerNumbers returns, sorted, the numbers N of the tensors named
// root+group+".N.…" (duplicates included, as Matching finds them).
func (b *Builder) layerNumbers(root, group string) []int {
	var layers []int
	for _, g := range b.Matching(regexp.MustCompile(`^` + regexp.QuoteMeta(root) + regexp.QuoteMeta(group) + `\.(\d+)\.`)) {
		n, _ := strconv.Atoi(g[0])
		layers = append(layers, n)
	}
	slices.Sort(layers)
	return layers
}

// encoderGeometry sets the layer count, the hidden size and, from
// config.json num_attention_heads, the attention geometry of an encoder
// whose tensors are under root, and returns its layer numbers. The caller
// has checked that layer 0 exists (encoderRoot).
func encoderGeometry(b *Builder, root string, hidden int) ([]int, error) {
	a := b.Arch()
	layers := b.layerNumbers(root, "encoder.layer")
	a.Layers = layers[len(layers)-1] + 1
	a.Hidden = hidden
	if cfg := b.Config; cfg.Has("num_attention_heads") {
		h := cfg.Int("num_attention_heads", 0)
		if h <= 0 || a.Hidden%h != 0 {
			return nil, fmt.Errorf("config.json: hidden_size %d is not a multiple of %d heads", a.Hidden, h)
		}
		a.Attention = &Attention{Heads: h, KVHeads: h, HeadDim: a.Hidden / h}
	} else {
		b.Note("no attention geometry (config.json num_attention_heads): heads unknown")
	}
	return layers, nil
}

// encoderLayer names what differs between the encoder families' layers: the
// prefix of the query, key and value projections and the two LayerNorms
// (the attention's, then the MLP's), which come after their sublayer
// (post-LN, BERT) or before it (pre-LN, ViT).
type encoderLayer struct {
	attn   string
	norms  [2]string
	postLN bool
}

// add describes layer n of the encoder under root: its activation spaces
// (with heads when the attention geometry is known) and its modules, in the
// order of the checkpoint's layer.
func (l encoderLayer) add(b *Builder, root string, n int) {
	b.SetLayer(n)
	p := fmt.Sprintf("%sencoder.layer.%d.", root, n)
	sp := func(s string) string { return fmt.Sprintf("layers.%d.%s", n, s) }
	q, k, v, o, h := sp("attn.q"), sp("attn.k"), sp("attn.v"), sp("attn.out"), sp("mlp.hidden")
	for _, s := range []string{q, k, v, o} {
		b.Space(s, SpaceAttention)
		if at := b.Arch().Attention; at != nil {
			b.Heads(s, at.Heads, at.HeadDim, false)
		}
	}
	b.Space(h, SpaceHidden)
	norm := func(i int) { b.Add(Spec{Name: p + l.norms[i], Kind: LayerNorm, Role: RoleNorm, Out: "residual"}) }
	if !l.postLN {
		norm(0)
	}
	b.Add(Spec{Name: p + l.attn + "query", Kind: Linear, Role: RoleAttnQ, In: "residual", Out: q})
	b.Add(Spec{Name: p + l.attn + "key", Kind: Linear, Role: RoleAttnK, In: "residual", Out: k})
	b.Add(Spec{Name: p + l.attn + "value", Kind: Linear, Role: RoleAttnV, In: "residual", Out: v})
	b.Add(Spec{Name: p + "attention.output.dense", Kind: Linear, Role: RoleAttnOut, In: o, Out: "residual"})
	if l.postLN {
		norm(0)
	} else {
		norm(1)
	}
	b.Add(Spec{Name: p + "intermediate.dense", Kind: Linear, Role: RoleMLPUp, In: "residual", Out: h})
	b.Add(Spec{Name: p + "output.dense", Kind: Linear, Role: RoleMLPDown, In: h, Out: "residual"})
	if l.postLN {
		norm(1)
	}
}
