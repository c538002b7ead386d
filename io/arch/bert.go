package arch

import (
	"fmt"
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
	return encoderRoot(names, "bert", "embeddings.word_embeddings.weight", "attention.self.")
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
	layers, err := encoderGeometry(b, root, int(b.Shapes[root+"embeddings.word_embeddings.weight"][1]))
	if err != nil {
		return err
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
	layer := encoderLayer{attn: "attention.self.", norms: [2]string{"attention.output.LayerNorm", "output.LayerNorm"}, postLN: true}
	for _, n := range layers {
		layer.add(b, root, n)
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
