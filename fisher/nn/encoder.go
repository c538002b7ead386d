package nn

import "github.com/wtool/wtool/io/arch"

// This file holds what the encoder-style transformers (ViT, BERT, GPT-2)
// share: their layers' modules, how they are found, their pre-LN block and
// their statistics' points.

// encLayer is one encoder layer (ViT, BERT, GPT-2).
type encLayer struct {
	norm1, norm2 string
	q, k, v, o   string
	qkv          string // a fused q|k|v projection (GPT-2's c_attn)
	up, dn       string
}

// qkvOf computes the layer's queries, keys and values.
func (L *encLayer) qkvOf(p *pass, h []fm, at *arch.Attention) ([]fm, []fm, []fm, error) {
	return p.projectQKV(h, at, L.qkv, L.q, L.k, L.v)
}

// find fills in an encoder layer's projections by role.
func (L *encLayer) find(li layerIndex) error {
	var err error
	if L.qkv, L.q, L.k, L.v, err = li.qkvNames(); err != nil {
		return err
	}
	for _, x := range []struct {
		dst *string
		r   arch.Role
	}{{&L.o, arch.RoleAttnOut}, {&L.up, arch.RoleMLPUp}, {&L.dn, arch.RoleMLPDown}} {
		if *x.dst, err = li.need(x.r); err != nil {
			return err
		}
	}
	return nil
}

// encLayers finds every layer of an encoder-style transformer (ViT, BERT,
// GPT-2): its two norms by the endings of their names (norms returns them
// for layer l) and its projections by role.
func encLayers(a *arch.Arch, norms func(l int) (string, string)) ([]encLayer, error) {
	var layers []encLayer
	for l := range a.Layers {
		li := newLayerIndex(a, l)
		n1, n2 := norms(l)
		var L encLayer
		var err error
		if L.norm1, err = li.norm(n1); err != nil {
			return nil, err
		}
		if L.norm2, err = li.norm(n2); err != nil {
			return nil, err
		}
		if err := L.find(li); err != nil {
			return nil, err
		}
		layers = append(layers, L)
	}
	return layers, nil
}

// preLNBlock runs a pre-LN transformer layer in place on x (ViT's, and
// GPT-2's with causal attention).
func preLNBlock(p *pass, L encLayer, x []fm, eps float64, act activation, at *arch.Attention, causal bool) error {
	if err := p.record(L.norm1+":in", x); err != nil {
		return err
	}
	h := p.layerNorm(L.norm1, x, eps)
	q, k, vv, err := L.qkvOf(p, h, at)
	if err != nil {
		return err
	}
	o, err := p.linear(L.o, p.attend(q, k, vv, at, causal, 0))
	if err != nil {
		return err
	}
	addInto(x, o)
	if err := p.record(L.norm2+":in", x); err != nil {
		return err
	}
	h = p.layerNorm(L.norm2, x, eps)
	u, err := p.linear(L.up, h)
	if err != nil {
		return err
	}
	apply(u, act)
	dn, err := p.linear(L.dn, u)
	if err != nil {
		return err
	}
	addInto(x, dn)
	return nil
}

// preLNStack runs a pre-LN transformer's layers in place on x, then its
// final norm (recording what it normalises), and returns the norm's output.
func preLNStack(p *pass, layers []encLayer, final string, x []fm, eps float64, act activation, at *arch.Attention, causal bool) ([]fm, error) {
	for _, L := range layers {
		if err := p.check(); err != nil {
			return nil, err
		}
		if err := preLNBlock(p, L, x, eps, act, at, causal); err != nil {
			return nil, err
		}
	}
	if err := p.record(final+":in", x); err != nil {
		return nil, err
	}
	return p.layerNorm(final, x, eps), nil
}

// firstTokens copies the first token of each of the n sequences of t
// tokens on every lane (BERT's [CLS] for the pooler, ViT's class token).
func (p *pass) firstTokens(xs []fm, n, t int) []fm {
	out := make([]fm, len(xs))
	for i, l := range p.lanes {
		d := xs[i].c
		y := l.ar.get(n * d)
		for s := range n {
			copy(y[s*d:][:d], xs[i].x[s*t*d:][:d])
		}
		out[i] = fm{x: y, n: n, h: 1, w: 1, c: d}
	}
	return out
}

// encoderPoints lists a pre-LN transformer's statistics in forward order.
func encoderPoints(a *arch.Arch, first string, layers []encLayer, final, head string) []Point {
	pl := pointList{a: a}
	pl.module(first)
	for _, L := range layers {
		pl.norm(L.norm1)
		pl.module(L.qkv, L.q, L.k, L.v, L.o)
		pl.norm(L.norm2)
		pl.module(L.up, L.dn)
	}
	pl.norm(final)
	pl.module(head)
	return pl.pts
}
