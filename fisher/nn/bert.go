package nn

import (
	"fmt"
	"strings"

	"github.com/wtool/wtool/io/arch"
)

// bert runs Google's BERT as io/arch describes it: word, position and
// token-type embeddings (every token of type 0) and their LayerNorm, post-LN
// encoder layers (x = LN(x + attention.output.dense(attention(x))), x =
// LN(x + output.dense(gelu(intermediate.dense(x))))), the pooler on the
// first token, and the heads the checkpoint has: the masked-LM head
// (transform, LayerNorm, decoder tied to the word embeddings, bias), the
// next-sentence head, a sequence classifier. Forward returns the masked-LM
// logits per token when the model has that head, else the classifier's
// logits per sequence.
type bert struct {
	in               Input
	word, pos, typ   string
	embNorm          string
	eps              float64
	act              activation
	at               *arch.Attention
	layers           []encLayer
	pooler           string
	transform, tnorm string
	decoder, mlmBias string
	nsp, classifier  string
	pts              []Point
}

func init() { register("bert", newBERT) }

func newBERT(n *Net) (family, error) {
	a := n.Arch
	cfg := a.Config
	act, err := transformerAct(a, "bert", "num_attention_heads", "gelu", "hidden_act")
	if err != nil {
		return nil, err
	}
	b := &bert{at: a.Attention, eps: cfg.Float("layer_norm_eps", 1e-12), act: act}
	for _, m := range a.Modules {
		if m.Layer >= 0 {
			continue
		}
		switch {
		case m.Role == arch.RoleEmbedding:
			b.word = m.Name
		case m.Role == arch.RolePositionEmbedding:
			b.pos = m.Name
		case m.Role == arch.RoleTokenTypeEmbedding:
			b.typ = m.Name
		case m.Role == arch.RolePooler:
			b.pooler = m.Name
		case m.Role == arch.RoleNorm && m.IsNorm():
			b.embNorm = m.Name
		case m.Role == arch.RoleHead:
			switch {
			case strings.HasSuffix(m.Name, "predictions.transform.dense"):
				b.transform = m.Name
			case strings.HasSuffix(m.Name, "predictions.transform.LayerNorm"):
				b.tnorm = m.Name
			case strings.HasSuffix(m.Name, "predictions.decoder"):
				b.decoder = m.Name
			case m.Kind == arch.Bare && strings.HasSuffix(m.Name, "bias") && strings.Contains(m.Name, "predictions"):
				if b.mlmBias == "" || strings.HasSuffix(m.Name, "predictions.bias") {
					b.mlmBias = m.Name
				}
			case strings.HasSuffix(m.Name, "seq_relationship"):
				b.nsp = m.Name
			case m.Name == "classifier":
				b.classifier = m.Name
			default:
				if m.Weight() != nil {
					return nil, &UnsupportedError{Family: "bert", Reason: fmt.Sprintf("head %q", m.Name)}
				}
			}
		}
	}
	if b.word == "" || b.embNorm == "" {
		return nil, fmt.Errorf("bert layout: no word embeddings or embeddings LayerNorm")
	}
	em, _ := a.Module(b.word)
	b.in = Input{Kind: Tokens, Vocab: em.InFeatures, Classes: a.Hidden}
	if b.pos != "" {
		pm, _ := a.Module(b.pos)
		b.in.MaxLen = pm.InFeatures
	}
	switch {
	case b.transform != "":
		b.in.Classes = em.InFeatures
	case b.classifier != "":
		cm, _ := a.Module(b.classifier)
		b.in.Classes = cm.OutFeatures
	}
	if b.classifier != "" {
		if cm, _ := a.Module(b.classifier); cm.In != "pooled" {
			return nil, &UnsupportedError{Family: "bert", Reason: "token classification heads"}
		}
	}
	if b.layers, err = encLayers(a, func(l int) (string, string) {
		return "attention.output.LayerNorm", fmt.Sprintf("layer.%d.output.LayerNorm", l)
	}); err != nil {
		return nil, err
	}
	b.pts = b.makePoints(a)
	return b, nil
}

func (b *bert) input() Input { return b.in }

func (b *bert) points() []Point { return b.pts }

func (b *bert) makePoints(a *arch.Arch) []Point {
	pl := pointList{a: a}
	pl.norm(b.embNorm)
	for _, L := range b.layers {
		pl.module(L.q, L.k, L.v, L.o)
		pl.norm(L.norm1)
		pl.module(L.up, L.dn)
		pl.norm(L.norm2)
	}
	pl.module(b.pooler)
	if b.transform != "" {
		pl.module(b.transform)
		pl.norm(b.tnorm)
		pl.module(b.decoder)
	}
	pl.module(b.nsp, b.classifier)
	return pl.pts
}

func (b *bert) forward(p *pass, bt *batch) ([]fm, error) {
	if err := tokensOf(bt); err != nil {
		return nil, err
	}
	if b.in.MaxLen > 0 && bt.t > b.in.MaxLen {
		return nil, fmt.Errorf("sequences of %d tokens; %s has %d positions", bt.t, b.pos, b.in.MaxLen)
	}
	x, err := p.embed(b.word, bt, 1)
	if err != nil {
		return nil, err
	}
	for i, l := range p.lanes {
		d := x[i].c
		var pos, typ []float32
		if b.pos != "" {
			pos = l.net.param(b.pos, "weight")
		}
		if b.typ != "" {
			typ = l.net.param(b.typ, "weight")[:d]
		}
		for s := range bt.n {
			for q := range bt.t {
				row := x[i].x[(s*bt.t+q)*d:][:d]
				if pos != nil {
					for j, v := range pos[q*d:][:d] {
						row[j] += v
					}
				}
				for j, v := range typ {
					row[j] += v
				}
			}
		}
	}
	if err := p.record(b.embNorm+":in", x); err != nil {
		return nil, err
	}
	x = p.layerNorm(b.embNorm, x, b.eps)
	for _, L := range b.layers {
		if err := p.check(); err != nil {
			return nil, err
		}
		q, k, v, err := L.qkvOf(p, x, b.at)
		if err != nil {
			return nil, err
		}
		o, err := p.linear(L.o, p.attend(q, k, v, b.at, false, 0))
		if err != nil {
			return nil, err
		}
		addInto(o, x)
		if err := p.record(L.norm1+":in", o); err != nil {
			return nil, err
		}
		x = p.layerNorm(L.norm1, o, b.eps)
		u, err := p.linear(L.up, x)
		if err != nil {
			return nil, err
		}
		apply(u, b.act)
		dn, err := p.linear(L.dn, u)
		if err != nil {
			return nil, err
		}
		addInto(dn, x)
		if err := p.record(L.norm2+":in", dn); err != nil {
			return nil, err
		}
		x = p.layerNorm(L.norm2, dn, b.eps)
	}
	var pooled []fm
	if b.pooler != "" {
		if pooled, err = p.linear(b.pooler, p.firstTokens(x, bt.n, bt.t)); err != nil {
			return nil, err
		}
		for i := range pooled {
			for j, v := range pooled[i].x {
				pooled[i].x[j] = float32(tanh64(float64(v)))
			}
		}
	}
	var mlm, cls []fm
	if b.transform != "" {
		h, err := p.linear(b.transform, x)
		if err != nil {
			return nil, err
		}
		apply(h, b.act)
		if b.tnorm != "" {
			if err := p.record(b.tnorm+":in", h); err != nil {
				return nil, err
			}
			h = p.layerNorm(b.tnorm, h, b.eps)
		}
		bias := func(l *lane) []float32 {
			if b.mlmBias == "" {
				return nil
			}
			v, _ := l.net.Tensor(mustTensor(l.net, b.mlmBias))
			return v
		}
		if b.decoder != "" {
			if mlm, err = p.linear(b.decoder, h); err != nil {
				return nil, err
			}
			for i, l := range p.lanes {
				addBias(mlm[i].x, mlm[i].rows(), mlm[i].c, bias(l))
			}
		} else {
			mlm = p.tiedHead(b.word, h, bias)
		}
	}
	if b.nsp != "" && pooled != nil {
		if _, err := p.linear(b.nsp, pooled); err != nil {
			return nil, err
		}
	}
	if b.classifier != "" && pooled != nil {
		if cls, err = p.linear(b.classifier, pooled); err != nil {
			return nil, err
		}
	}
	switch {
	case mlm != nil:
		return mlm, nil
	case cls != nil:
		return cls, nil
	}
	return x, nil
}
