package arch

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// bert is Google's BERT in Hugging Face naming: word, position and
// token-type embeddings, post-LN encoder layers (attention.self.{query, key,
// value}, attention.output.{dense, LayerNorm}, intermediate.dense,
// output.{dense, LayerNorm}), the pooler, and the heads of the model classes:
// cls.predictions (masked LM, its decoder tied to the word embeddings),
// cls.seq_relationship, classifier, qa_outputs. Old checkpoints' LayerNorm
// gamma/beta are accepted.
type bert struct{}

func init() { Register(bert{}) }

func (bert) Name() string { return "bert" }

func (bert) MatchConfig(c *Config) bool {
	return c.ModelType == "bert" || strings.HasPrefix(c.Architecture(), "Bert")
}

func bertRoot(names []string) (string, bool) {
	for _, r := range []string{"bert.", ""} {
		if slices.Contains(names, r+"embeddings.word_embeddings.weight") && slices.ContainsFunc(names, func(n string) bool {
			return strings.HasPrefix(n, r+"encoder.layer.0.attention.self.query.")
		}) {
			return r, true
		}
	}
	return "", false
}

func (bert) MatchNames(names []string) bool { _, ok := bertRoot(names); return ok }

func (bert) BaseClasses() []string { return []string{"BertModel"} }

func (bert) Describe(b *Builder) error {
	root, ok := bertRoot(b.Names)
	if !ok {
		return fmt.Errorf("no embeddings.word_embeddings.weight and encoder.layer.0.attention.self.query: not a BERT checkpoint")
	}
	a := b.Arch()
	a.Prefix = "bert"
	cfg := b.Config
	var layers []int
	for _, g := range b.Matching(regexp.MustCompile(`^` + regexp.QuoteMeta(root) + `encoder\.layer\.(\d+)\.`)) {
		n, _ := strconv.Atoi(g[0])
		layers = append(layers, n)
	}
	slices.Sort(layers)
	a.Layers = layers[len(layers)-1] + 1
	a.Hidden = int(b.Shapes[root+"embeddings.word_embeddings.weight"][1])
	if cfg.Has("num_attention_heads") {
		h := cfg.Int("num_attention_heads", 0)
		if h <= 0 || a.Hidden%h != 0 {
			return fmt.Errorf("config.json: hidden_size %d is not a multiple of %d heads", a.Hidden, h)
		}
		a.Attention = &Attention{Heads: h, KVHeads: h, HeadDim: a.Hidden / h}
	} else {
		b.Note("no attention geometry (config.json num_attention_heads): heads unknown")
	}
	for s, k := range map[string]SpaceKind{"tokens": SpaceInput, "positions": SpaceInput, "token_types": SpaceInput,
		"residual": SpaceResidual, "pooled": SpaceHidden, "logits": SpaceOutput, "labels": SpaceOutput, "nsp": SpaceOutput} {
		b.Space(s, k)
	}
	e := root + "embeddings."
	b.Add(Spec{Name: e + "word_embeddings", Kind: Embedding, Role: RoleEmbedding, In: "tokens", Out: "residual"})
	b.Add(Spec{Name: e + "position_embeddings", Kind: Embedding, Role: RolePositionEmbedding, In: "positions", Out: "residual", Optional: true})
	b.Add(Spec{Name: e + "token_type_embeddings", Kind: Embedding, Role: RoleTokenTypeEmbedding, In: "token_types", Out: "residual", Optional: true})
	b.Add(Spec{Name: e + "LayerNorm", Kind: LayerNorm, Role: RoleNorm, Out: "residual"})
	b.AddTensor(e+"position_ids", Buffer, RoleBuffer)
	b.AddTensor(e+"token_type_ids", Buffer, RoleBuffer)
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
		b.Add(Spec{Name: p + "attention.self.query", Kind: Linear, Role: RoleAttnQ, In: "residual", Out: q})
		b.Add(Spec{Name: p + "attention.self.key", Kind: Linear, Role: RoleAttnK, In: "residual", Out: k})
		b.Add(Spec{Name: p + "attention.self.value", Kind: Linear, Role: RoleAttnV, In: "residual", Out: v})
		b.Add(Spec{Name: p + "attention.output.dense", Kind: Linear, Role: RoleAttnOut, In: o, Out: "residual"})
		b.Add(Spec{Name: p + "attention.output.LayerNorm", Kind: LayerNorm, Role: RoleNorm, Out: "residual"})
		b.Add(Spec{Name: p + "intermediate.dense", Kind: Linear, Role: RoleMLPUp, In: "residual", Out: h})
		b.Add(Spec{Name: p + "output.dense", Kind: Linear, Role: RoleMLPDown, In: h, Out: "residual"})
		b.Add(Spec{Name: p + "output.LayerNorm", Kind: LayerNorm, Role: RoleNorm, Out: "residual"})
	}
	b.SetLayer(-1)
	b.Add(Spec{Name: root + "pooler.dense", Kind: Linear, Role: RolePooler, In: "residual", Out: "pooled", Optional: true})
	// heads (never under the "bert." prefix)
	tie := cfg.Bool("tie_word_embeddings", true)
	transform := "residual" // the tied decoder reads what the word embeddings write
	if !tie {
		transform = "mlm.transform"
		b.Space(transform, SpaceHidden)
	}
	b.Add(Spec{Name: "cls.predictions.transform.dense", Kind: Linear, Role: RoleHead, In: "residual", Out: transform, Optional: true})
	b.Add(Spec{Name: "cls.predictions.transform.LayerNorm", Kind: LayerNorm, Role: RoleHead, Out: transform, Optional: true})
	if b.HasModule("cls.predictions.transform.dense") {
		dec := Spec{Name: "cls.predictions.decoder", Kind: Linear, Role: RoleHead, In: transform, Out: "logits", Optional: true}
		if tie {
			dec.TiedTo = e + "word_embeddings"
			b.Tie("cls.predictions.decoder", e+"word_embeddings")
		}
		b.Add(dec)
		b.AddTensor("cls.predictions.decoder.bias", Bare, RoleHead, "logits")
		b.AddTensor("cls.predictions.bias", Bare, RoleHead, "logits")
	}
	b.Add(Spec{Name: "cls.seq_relationship", Kind: Linear, Role: RoleHead, In: "pooled", Out: "nsp", Optional: true})
	clsIn := "pooled" // sequence classification reads the pooled [CLS]
	if c := a.Architecture; strings.HasSuffix(c, "ForTokenClassification") {
		clsIn = "residual"
	}
	b.Add(Spec{Name: "classifier", Kind: Linear, Role: RoleHead, In: clsIn, Out: "labels", Optional: true})
	b.Add(Spec{Name: "qa_outputs", Kind: Linear, Role: RoleHead, In: "residual", Out: "labels", Optional: true})
	return nil
}
