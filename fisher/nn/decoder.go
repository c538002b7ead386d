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
	router               string   // a mixture of experts' router ("" for a dense MLP)
	experts              []expert // its experts, by index
}

// expert is one expert's gate (w1), up (w3) and down (w2) projections.
type expert struct{ gate, up, dn string }

func init() {
	for _, f := range []string{"llama", "qwen2", "mistral", "gemma", "phi3", "mixtral"} {
		register(f, newDecoder)
	}
}

func newDecoder(n *Net) (family, error) {
	a := n.Arch
	cfg := a.Config
	act, err := transformerAct(a, a.Family, "num_attention_heads", "silu", "hidden_activation", "hidden_act")
	if err != nil {
		return nil, err
	}
	d := &decoder{at: a.Attention, eps: cfg.Float("rms_norm_eps", 1e-6), scale: 1, act: act}
	if a.Family == "gemma" {
		d.plusOne = true
		d.scale = float32(math.Sqrt(float64(a.Hidden)))
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
		if L.qkv, L.q, L.k, L.v, err = li.qkvNames(); err != nil {
			return nil, err
		}
		if L.o, err = li.need(arch.RoleAttnOut); err != nil {
			return nil, err
		}
		switch {
		case li.role(arch.RoleRouter) != "":
			L.router = li.role(arch.RoleRouter)
			if L.experts, err = moeExperts(a, l); err != nil {
				return nil, err
			}
			if a.ExpertsPerToken < 1 || a.ExpertsPerToken > len(L.experts) {
				return nil, fmt.Errorf("%s layout: %d experts per token of %d", a.Family, a.ExpertsPerToken, len(L.experts))
			}
		case li.role(arch.RoleMLPGateUp) != "":
			L.gateUp = li.role(arch.RoleMLPGateUp)
		default:
			if L.gate, err = li.need(arch.RoleMLPGate); err != nil {
				return nil, err
			}
			if L.up, err = li.need(arch.RoleMLPUp); err != nil {
				return nil, err
			}
		}
		if L.router == "" {
			if L.dn, err = li.need(arch.RoleMLPDown); err != nil {
				return nil, err
			}
		}
		d.layers = append(d.layers, L)
	}
	d.pts = d.makePoints(a)
	return d, nil
}

func (d *decoder) input() Input { return d.in }

func (d *decoder) points() []Point { return d.pts }

func (d *decoder) makePoints(a *arch.Arch) []Point {
	pl := pointList{a: a}
	for _, L := range d.layers {
		pl.norm(L.norm1)
		pl.module(L.qkv, L.q, L.k, L.v, L.o)
		pl.norm(L.norm2)
		pl.module(L.gateUp, L.gate, L.up, L.dn, L.router)
		for _, e := range L.experts {
			pl.module(e.gate, e.up, e.dn)
		}
	}
	pl.norm(d.final)
	pl.module(d.head)
	return pl.pts
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
		q, k, v, err := p.projectQKV(h, at, L.qkv, L.q, L.k, L.v)
		if err != nil {
			return nil, err
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
		if L.router != "" {
			y, err := d.moe(p, L, h)
			if err != nil {
				return nil, err
			}
			addInto(x, y)
			continue
		}
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

// moeExperts finds a layer's experts' projections by role.
func moeExperts(a *arch.Arch, layer int) ([]expert, error) {
	byIdx := map[int]*expert{}
	n := 0
	for _, m := range a.Modules {
		if m.Layer != layer || m.Expert < 0 {
			continue
		}
		e := byIdx[m.Expert]
		if e == nil {
			e = &expert{}
			byIdx[m.Expert] = e
			n = max(n, m.Expert+1)
		}
		switch m.Role {
		case arch.RoleMLPGate:
			e.gate = m.Name
		case arch.RoleMLPUp:
			e.up = m.Name
		case arch.RoleMLPDown:
			e.dn = m.Name
		}
	}
	out := make([]expert, n)
	for i := range n {
		e := byIdx[i]
		if e == nil || e.gate == "" || e.up == "" || e.dn == "" {
			return nil, fmt.Errorf("layer %d: expert %d lacks its gate, up or down projection", layer, i)
		}
		out[i] = *e
	}
	return out, nil
}

// route is one lane's routing of its tokens: for every token, its top-k
// experts and their weights (softmax over the router's logits, renormalised
// over the k), as Mixtral routes.
type route struct {
	experts [][]int
	weights [][]float32
}

func routeTokens(logits fm, k int) route {
	rows, e := logits.rows(), logits.c
	r := route{experts: make([][]int, rows), weights: make([][]float32, rows)}
	p := make([]float64, e)
	for t := range rows {
		z := logits.x[t*e:][:e]
		m := math.Inf(-1)
		for _, v := range z {
			m = math.Max(m, float64(v))
		}
		var sum float64
		for j, v := range z {
			p[j] = math.Exp(float64(v) - m)
			sum += p[j]
		}
		idx := make([]int, 0, k)
		for range k {
			best := -1
			for j := range e {
				if slicesContains(idx, j) {
					continue
				}
				if best < 0 || p[j] > p[best] {
					best = j
				}
			}
			idx = append(idx, best)
		}
		var top float64
		for _, j := range idx {
			top += p[j]
		}
		w := make([]float32, k)
		for q, j := range idx {
			w[q] = float32(p[j] / top)
		}
		r.experts[t], r.weights[t] = idx, w
	}
	return r
}

func slicesContains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// tokensOf returns the tokens routed to expert e and their weights.
func (r route) tokensOf(e int) ([]int, []float32) {
	var rows []int
	var ws []float32
	for t, es := range r.experts {
		for q, x := range es {
			if x == e {
				rows = append(rows, t)
				ws = append(ws, r.weights[t][q])
			}
		}
	}
	return rows, ws
}

// moe runs a mixture of experts on every lane: each lane routes its own
// tokens. With two lanes and statistics recorded, the experts' statistics
// follow model A's routing (docs/stats.md): the samples of expert e are the
// tokens A routes to it, x_B what B's expert e receives on B's hidden states
// at those tokens, whatever B's router chose.
func (d *decoder) moe(p *pass, L decLayer, h []fm) ([]fm, error) {
	logits, err := p.linear(L.router, h)
	if err != nil {
		return nil, err
	}
	k := p.lanes[0].net.Arch.ExpertsPerToken
	routes := make([]route, len(p.lanes))
	out := make([]fm, len(p.lanes))
	for i, l := range p.lanes {
		routes[i] = routeTokens(logits[i], k)
		out[i] = fm{x: l.ar.zeros(h[i].rows() * h[i].c), n: h[i].n, h: h[i].h, w: h[i].w, c: h[i].c}
	}
	joint := len(p.lanes) == 2 && p.rec != nil
	quiet := &pass{ctx: p.ctx, par: p.par, train: p.train, momentum: p.momentum}
	for e, ex := range L.experts {
		if joint {
			// A's routing for the statistics (and A's output); B's own routing for B's output
			rows, ws := routes[0].tokensOf(e)
			if len(rows) > 0 {
				ys, err := d.expert(p, ex, gatherRows(p, h, rows))
				if err != nil {
					return nil, err
				}
				scatterAdd(out[0], ys[0], rows, ws)
			}
			rows, ws = routes[1].tokensOf(e)
			if len(rows) > 0 {
				quiet.lanes = p.lanes[1:]
				ys, err := d.expert(quiet, ex, gatherRows(quiet, h[1:], rows))
				if err != nil {
					return nil, err
				}
				scatterAdd(out[1], ys[0], rows, ws)
			}
			continue
		}
		for i := range p.lanes {
			rows, ws := routes[i].tokensOf(e)
			if len(rows) == 0 {
				continue
			}
			sub := p
			if len(p.lanes) > 1 {
				sub = &pass{ctx: p.ctx, par: p.par, rec: p.rec, train: p.train, momentum: p.momentum, lanes: p.lanes[i : i+1]}
			}
			ys, err := d.expert(sub, ex, gatherRows(sub, h[i:i+1], rows))
			if err != nil {
				return nil, err
			}
			scatterAdd(out[i], ys[0], rows, ws)
		}
	}
	return out, nil
}

// expert computes w2(act(w1 x) * w3 x) on every lane.
func (d *decoder) expert(p *pass, ex expert, xs []fm) ([]fm, error) {
	g, err := p.linear(ex.gate, xs)
	if err != nil {
		return nil, err
	}
	u, err := p.linear(ex.up, xs)
	if err != nil {
		return nil, err
	}
	apply(g, d.act)
	mulInto(g, u)
	return p.linear(ex.dn, g)
}

// gatherRows copies the given rows of each lane's activation.
func gatherRows(p *pass, xs []fm, rows []int) []fm {
	out := make([]fm, len(xs))
	for i, l := range p.lanes {
		x := xs[i]
		y := l.ar.get(len(rows) * x.c)
		for r, t := range rows {
			copy(y[r*x.c:(r+1)*x.c], x.x[t*x.c:(t+1)*x.c])
		}
		out[i] = fm{x: y, n: 1, h: len(rows), w: 1, c: x.c}
	}
	return out
}

// scatterAdd adds w[r] * y[r] to row rows[r] of out.
func scatterAdd(out, y fm, rows []int, w []float32) {
	c := out.c
	for r, t := range rows {
		dst, src := out.x[t*c:(t+1)*c], y.x[r*c:(r+1)*c]
		for j, v := range src {
			dst[j] += w[r] * v
		}
	}
}
