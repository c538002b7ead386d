package nn

import (
	"fmt"
	"math"

	"github.com/wtool/wtool/io/arch"
)

// decoder runs the Llama family's causal language models as io/arch
// describes them (Llama, Qwen2 with its q/k/v biases, Mistral with its
// sliding window, Gemma with (1 + w) norms, the sqrt(hidden) embedding
// scale and a GELU-gated MLP, Phi-3 with fused qkv_proj and gate_up_proj):
// token embedding, then per layer x += o_proj(attention(rope(q), rope(k),
// v)) on input_layernorm(x) and x += down_proj(act(gate) * up) on
// post_attention_layernorm(x), the final norm and lm_head (or the tied
// embedding). Attention is causal with grouped-query heads; rotary
// embeddings follow rope_theta, partial_rotary_factor and rope_scaling
// (linear, llama3).
type decoder struct {
	in       Input
	embed    string
	final    string
	head     string // "" when tied to embed
	eps      float64
	plusOne  bool
	scale    float32
	act      activation
	window   int
	at       *arch.Attention
	rope     *rope
	layers   []decLayer
	pts      []Point
	residual string
}

type decLayer struct {
	norm1, norm2         string
	q, k, v, qkv, o      string
	gate, up, gateUp, dn string
}

func init() {
	for _, f := range []string{"llama", "qwen2", "mistral", "gemma", "phi3"} {
		register(f, newDecoder)
	}
}

func newDecoder(n *Net) (family, error) {
	a := n.Arch
	cfg := a.Config
	if a.Attention == nil {
		return nil, &UnsupportedError{Family: a.Family, Reason: "no attention geometry (config.json num_attention_heads)"}
	}
	d := &decoder{at: a.Attention, eps: cfg.Float("rms_norm_eps", 1e-6), scale: 1}
	if a.Family == "gemma" {
		d.plusOne = true
		d.scale = float32(math.Sqrt(float64(a.Hidden)))
	}
	actName := cfg.String("hidden_activation")
	if actName == "" {
		actName = cfg.String("hidden_act")
	}
	if actName == "" {
		actName = "silu"
	}
	var err error
	if d.act, err = parseAct(actName); err != nil {
		return nil, &UnsupportedError{Family: a.Family, Reason: err.Error()}
	}
	if a.Family == "mistral" {
		d.window = cfg.Int("sliding_window", 0)
	}
	if cfg.Bool("use_sliding_window", false) {
		d.window = cfg.Int("sliding_window", 0)
	}
	if d.rope, err = newRope(cfg, d.at); err != nil {
		return nil, err
	}
	for _, m := range a.Modules {
		if m.Layer >= 0 {
			continue
		}
		switch {
		case m.Role == arch.RoleEmbedding:
			d.embed = m.Name
		case m.Role == arch.RoleHead && m.Weight() != nil:
			d.head = m.Name
		case m.IsNorm():
			d.final = m.Name
		}
	}
	if d.embed == "" || d.final == "" {
		return nil, fmt.Errorf("%s layout: no token embedding or final norm", a.Family)
	}
	em, _ := a.Module(d.embed)
	d.residual = em.Out
	d.in = Input{Kind: Tokens, Vocab: em.InFeatures, Classes: em.InFeatures, Causal: true}
	if d.head != "" {
		hm, _ := a.Module(d.head)
		d.in.Classes = hm.OutFeatures
	}
	for l := range a.Layers {
		li := newLayerIndex(a, l)
		var L decLayer
		if L.norm1, err = li.norm("input_layernorm"); err != nil {
			return nil, err
		}
		if L.norm2, err = li.norm("post_attention_layernorm"); err != nil {
			return nil, err
		}
		if L.qkv = li.role(arch.RoleAttnQKV); L.qkv == "" {
			for _, x := range []struct {
				dst *string
				r   arch.Role
			}{{&L.q, arch.RoleAttnQ}, {&L.k, arch.RoleAttnK}, {&L.v, arch.RoleAttnV}} {
				if *x.dst, err = li.need(x.r); err != nil {
					return nil, err
				}
			}
		}
		if L.o, err = li.need(arch.RoleAttnOut); err != nil {
			return nil, err
		}
		if L.gateUp = li.role(arch.RoleMLPGateUp); L.gateUp == "" {
			if li.role(arch.RoleRouter) != "" {
				return nil, &UnsupportedError{Family: a.Family, Reason: "mixtures of experts"}
			}
			if L.gate, err = li.need(arch.RoleMLPGate); err != nil {
				return nil, err
			}
			if L.up, err = li.need(arch.RoleMLPUp); err != nil {
				return nil, err
			}
		}
		if L.dn, err = li.need(arch.RoleMLPDown); err != nil {
			return nil, err
		}
		d.layers = append(d.layers, L)
	}
	d.pts = d.makePoints(a)
	return d, nil
}

func (d *decoder) input() Input { return d.in }

func (d *decoder) points() []Point { return d.pts }

func (d *decoder) makePoints(a *arch.Arch) []Point {
	var pts []Point
	mod := func(name string) {
		if name == "" {
			return
		}
		m, _ := a.Module(name)
		pts = append(pts, Point{Name: name, Kind: ModuleInput, Module: name, Space: m.In, Dim: m.InFeatures})
	}
	norm := func(name string) {
		m, _ := a.Module(name)
		pts = append(pts, Point{Name: name + ":in", Kind: Activation, Module: name, Space: m.Out, Dim: m.OutFeatures})
	}
	for _, L := range d.layers {
		norm(L.norm1)
		for _, m := range []string{L.qkv, L.q, L.k, L.v, L.o} {
			mod(m)
		}
		norm(L.norm2)
		for _, m := range []string{L.gateUp, L.gate, L.up, L.dn} {
			mod(m)
		}
	}
	norm(d.final)
	mod(d.head)
	return pts
}

func (d *decoder) forward(p *pass, b *batch) ([]fm, error) {
	if err := tokensOf(b); err != nil {
		return nil, err
	}
	x, err := p.embed(d.embed, b, d.scale)
	if err != nil {
		return nil, err
	}
	at := d.at
	qd, kvd := at.Heads*at.HeadDim, at.KVHeads*at.HeadDim
	for _, L := range d.layers {
		if err := p.check(); err != nil {
			return nil, err
		}
		if err := p.record(L.norm1+":in", x); err != nil {
			return nil, err
		}
		h := p.rmsNorm(L.norm1, x, d.eps, d.plusOne)
		var q, k, v []fm
		if L.qkv != "" {
			qkv, err := p.linear(L.qkv, h)
			if err != nil {
				return nil, err
			}
			parts := p.split(qkv, qd, kvd, kvd)
			q, k, v = parts[0], parts[1], parts[2]
		} else {
			if q, err = p.linear(L.q, h); err != nil {
				return nil, err
			}
			if k, err = p.linear(L.k, h); err != nil {
				return nil, err
			}
			if v, err = p.linear(L.v, h); err != nil {
				return nil, err
			}
		}
		if q[0].c != qd || k[0].c != kvd || v[0].c != kvd {
			return nil, fmt.Errorf("layer attention: q/k/v have %d/%d/%d features, the geometry says %d/%d/%d", q[0].c, k[0].c, v[0].c, qd, kvd, kvd)
		}
		for i := range p.lanes {
			d.rope.apply(q[i].x, b.n, b.t, at.Heads, at.HeadDim)
			d.rope.apply(k[i].x, b.n, b.t, at.KVHeads, at.HeadDim)
		}
		o, err := p.linear(L.o, p.attend(q, k, v, at, true, d.window))
		if err != nil {
			return nil, err
		}
		addInto(x, o)
		if err := p.record(L.norm2+":in", x); err != nil {
			return nil, err
		}
		h = p.rmsNorm(L.norm2, x, d.eps, d.plusOne)
		var gate, up []fm
		if L.gateUp != "" {
			gu, err := p.linear(L.gateUp, h)
			if err != nil {
				return nil, err
			}
			parts := p.split(gu, gu[0].c/2, gu[0].c/2)
			gate, up = parts[0], parts[1]
		} else {
			if gate, err = p.linear(L.gate, h); err != nil {
				return nil, err
			}
			if up, err = p.linear(L.up, h); err != nil {
				return nil, err
			}
		}
		apply(gate, d.act)
		mulInto(gate, up)
		dn, err := p.linear(L.dn, gate)
		if err != nil {
			return nil, err
		}
		addInto(x, dn)
	}
	if err := p.record(d.final+":in", x); err != nil {
		return nil, err
	}
	h := p.rmsNorm(d.final, x, d.eps, d.plusOne)
	if d.head != "" {
		return p.linear(d.head, h)
	}
	return p.tiedHead(d.embed, h, nil), nil
}
