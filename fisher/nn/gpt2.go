package nn

import (
	"fmt"

	"github.com/wtool/wtool/io/arch"
)

// gpt2 runs OpenAI's GPT-2 as io/arch describes it: token and learned
// position embeddings, pre-LN blocks of transformers' Conv1D modules
// (weight [in, out]) with the fused attn.c_attn = q|k|v, causal attention,
// the gelu_new MLP, ln_f and the head tied to wte.
type gpt2 struct {
	in     Input
	wte    string
	wpe    string
	final  string
	head   string
	eps    float64
	act    activation
	at     *arch.Attention
	layers []encLayer
	pts    []Point
}

func init() { register("gpt2", newGPT2) }

func newGPT2(n *Net) (family, error) {
	a := n.Arch
	cfg := a.Config
	act, err := transformerAct(a, "gpt2", "n_head", "gelu_new", "activation_function")
	if err != nil {
		return nil, err
	}
	g := &gpt2{at: a.Attention, eps: cfg.Float("layer_norm_epsilon", 1e-5), act: act}
	for _, m := range a.Modules {
		if m.Layer >= 0 {
			continue
		}
		switch {
		case m.Role == arch.RoleEmbedding:
			g.wte = m.Name
		case m.Role == arch.RolePositionEmbedding:
			g.wpe = m.Name
		case m.Role == arch.RoleHead && m.Weight() != nil:
			g.head = m.Name
		case m.IsNorm():
			g.final = m.Name
		}
	}
	if g.wte == "" || g.wpe == "" || g.final == "" {
		return nil, fmt.Errorf("gpt2 layout: no wte, wpe or ln_f")
	}
	em, _ := a.Module(g.wte)
	pm, _ := a.Module(g.wpe)
	g.in = Input{Kind: Tokens, Vocab: em.InFeatures, MaxLen: pm.InFeatures, Classes: em.InFeatures, Causal: true}
	if g.head != "" {
		hm, _ := a.Module(g.head)
		g.in.Classes = hm.OutFeatures
	}
	if g.layers, err = encLayers(a, func(int) (string, string) { return "ln_1", "ln_2" }); err != nil {
		return nil, err
	}
	g.pts = encoderPoints(a, "", g.layers, g.final, g.head)
	return g, nil
}

func (g *gpt2) input() Input { return g.in }

func (g *gpt2) points() []Point { return g.pts }

func (g *gpt2) forward(p *pass, b *batch) ([]fm, error) {
	if err := tokensOf(b); err != nil {
		return nil, err
	}
	if b.t > g.in.MaxLen {
		return nil, fmt.Errorf("sequences of %d tokens; %s has %d positions", b.t, g.wpe, g.in.MaxLen)
	}
	x, err := p.embed(g.wte, b, 1)
	if err != nil {
		return nil, err
	}
	for i, l := range p.lanes {
		pos := l.net.param(g.wpe, "weight")
		d := x[i].c
		for s := range b.n {
			for q := range b.t {
				row := x[i].x[(s*b.t+q)*d:][:d]
				for j, v := range pos[q*d:][:d] {
					row[j] += v
				}
			}
		}
	}
	h, err := preLNStack(p, g.layers, g.final, x, g.eps, g.act, g.at, true)
	if err != nil {
		return nil, err
	}
	if g.head != "" {
		return p.linear(g.head, h)
	}
	return p.tiedHead(g.wte, h, nil), nil
}
