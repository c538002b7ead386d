package nn

import (
	"fmt"

	"github.com/wtool/wtool/io/arch"
)

// vit runs Hugging Face's ViTForImageClassification as io/arch describes
// it: the patch projection (a convolution with stride = kernel), the class
// token prepended and the position embeddings added, pre-LN encoder layers
// (x += attention.output.dense(attention(layernorm_before(x))), x +=
// output.dense(gelu(intermediate.dense(layernorm_after(x))))), the final
// layernorm and the classifier on the class token. Attention is
// bidirectional; hidden_act and layer_norm_eps come from config.json.
type vit struct {
	in      Input
	proj    string
	patch   convGeom
	cls     string
	pos     string
	final   string
	head    string
	eps     float64
	act     activation
	at      *arch.Attention
	layers  []encLayer
	pts     []Point
	hidden  int
	patches int
}

// encLayer is one encoder layer (ViT, BERT, GPT-2).
type encLayer struct {
	norm1, norm2 string
	q, k, v, o   string
	qkv          string // a fused q|k|v projection (GPT-2's c_attn)
	up, dn       string
}

// qkvOf computes the layer's queries, keys and values.
func (L *encLayer) qkvOf(p *pass, h []fm, at *arch.Attention) (q, k, v []fm, err error) {
	if L.qkv != "" {
		qkv, err := p.linear(L.qkv, h)
		if err != nil {
			return nil, nil, nil, err
		}
		qd, kvd := at.Heads*at.HeadDim, at.KVHeads*at.HeadDim
		if qkv[0].c != qd+2*kvd {
			return nil, nil, nil, fmt.Errorf("module %q gives %d features, not q|k|v of %d|%d|%d", L.qkv, qkv[0].c, qd, kvd, kvd)
		}
		parts := p.split(qkv, qd, kvd, kvd)
		return parts[0], parts[1], parts[2], nil
	}
	if q, err = p.linear(L.q, h); err != nil {
		return nil, nil, nil, err
	}
	if k, err = p.linear(L.k, h); err != nil {
		return nil, nil, nil, err
	}
	if v, err = p.linear(L.v, h); err != nil {
		return nil, nil, nil, err
	}
	return q, k, v, nil
}

func init() { register("vit", newViT) }

func newViT(n *Net) (family, error) {
	a := n.Arch
	cfg := a.Config
	if a.Attention == nil {
		return nil, &UnsupportedError{Family: "vit", Reason: "no attention geometry (config.json num_attention_heads)"}
	}
	v := &vit{at: a.Attention, eps: cfg.Float("layer_norm_eps", 1e-12), hidden: a.Hidden}
	actName := cfg.String("hidden_act")
	if actName == "" {
		actName = "gelu"
	}
	var err error
	if v.act, err = parseAct(actName); err != nil {
		return nil, &UnsupportedError{Family: "vit", Reason: err.Error()}
	}
	for _, m := range a.Modules {
		if m.Layer >= 0 {
			continue
		}
		switch {
		case m.Role == arch.RolePatchEmbedding:
			v.proj = m.Name
		case m.Role == arch.RoleClassToken && m.Kind == arch.Bare && v.cls == "" && !isMaskToken(m.Name):
			v.cls = m.Name
		case m.Role == arch.RolePositionEmbedding:
			v.pos = m.Name
		case m.Role == arch.RoleHead && m.Weight() != nil:
			v.head = m.Name
		case m.IsNorm():
			v.final = m.Name
		}
	}
	if v.proj == "" || v.cls == "" || v.pos == "" || v.final == "" {
		return nil, fmt.Errorf("vit layout: no patch projection, class token, position embeddings or final layernorm")
	}
	pm, _ := a.Module(v.proj)
	if len(pm.Kernel) != 2 {
		return nil, fmt.Errorf("vit layout: %q is not a 2-D convolution", v.proj)
	}
	ps := pm.Kernel[0]
	if cfg.Has("patch_size") && cfg.Int("patch_size", 0) != ps {
		return nil, fmt.Errorf("config.json patch_size %d, the projection's kernel is %d", cfg.Int("patch_size", 0), ps)
	}
	v.patch = convGeom{kh: pm.Kernel[0], kw: pm.Kernel[1], stride: ps}
	pmod, _ := a.Module(v.pos)
	posShape := pmod.Params[0].Shape
	v.patches = int(posShape[len(posShape)-2]) - 1
	side := 0
	for side*side < v.patches {
		side++
	}
	if side*side != v.patches {
		return nil, fmt.Errorf("vit layout: %d position embeddings are not a square grid of patches plus the class token", v.patches+1)
	}
	img := side * ps
	if cfg.Has("image_size") && cfg.Int("image_size", 0) != img {
		return nil, fmt.Errorf("config.json image_size %d, the position embeddings fit %dx%d images", cfg.Int("image_size", 0), img, img)
	}
	v.in = Input{Kind: Images, Channels: int(pm.Weight().Shape[1]), Height: img, Width: img, Classes: a.Hidden}
	if v.head != "" {
		hm, _ := a.Module(v.head)
		v.in.Classes = hm.OutFeatures
	}
	for l := range a.Layers {
		li := newLayerIndex(a, l)
		var L encLayer
		if L.norm1, err = li.norm("layernorm_before"); err != nil {
			return nil, err
		}
		if L.norm2, err = li.norm("layernorm_after"); err != nil {
			return nil, err
		}
		if err := L.find(li); err != nil {
			return nil, err
		}
		v.layers = append(v.layers, L)
	}
	v.pts = encoderPoints(a, v.proj, v.layers, v.final, v.head)
	return v, nil
}

func isMaskToken(name string) bool { return len(name) >= 10 && name[len(name)-10:] == "mask_token" }

// find fills in an encoder layer's projections by role.
func (L *encLayer) find(li layerIndex) error {
	var err error
	qkv := []struct {
		dst *string
		r   arch.Role
	}{{&L.q, arch.RoleAttnQ}, {&L.k, arch.RoleAttnK}, {&L.v, arch.RoleAttnV}}
	if L.qkv = li.role(arch.RoleAttnQKV); L.qkv != "" {
		qkv = nil
	}
	for _, x := range append(qkv, []struct {
		dst *string
		r   arch.Role
	}{{&L.o, arch.RoleAttnOut}, {&L.up, arch.RoleMLPUp}, {&L.dn, arch.RoleMLPDown}}...) {
		if *x.dst, err = li.need(x.r); err != nil {
			return err
		}
	}
	return nil
}

func (v *vit) input() Input { return v.in }

func (v *vit) points() []Point { return v.pts }

func (v *vit) forward(p *pass, b *batch) ([]fm, error) {
	xs, err := p.images(b, v.in)
	if err != nil {
		return nil, err
	}
	ps, err := p.conv(v.proj, xs, v.patch)
	if err != nil {
		return nil, err
	}
	if ps[0].h*ps[0].w != v.patches {
		return nil, fmt.Errorf("%dx%d images give %d patches; the position embeddings have %d", b.h, b.w, ps[0].h*ps[0].w, v.patches)
	}
	t := v.patches + 1
	d := v.hidden
	x := make([]fm, len(p.lanes))
	for i, l := range p.lanes {
		cls, _ := l.net.Tensor(mustTensor(l.net, v.cls))
		pos, _ := l.net.Tensor(mustTensor(l.net, v.pos))
		y := l.ar.get(b.n * t * d)
		for s := range b.n {
			copy(y[s*t*d:][:d], cls)
			copy(y[(s*t+1)*d:][:v.patches*d], ps[i].x[s*v.patches*d:][:v.patches*d])
			row := y[s*t*d:][:t*d]
			for j := range row {
				row[j] += pos[j]
			}
		}
		x[i] = fm{x: y, n: b.n, h: t, w: 1, c: d}
	}
	for _, L := range v.layers {
		if err := p.check(); err != nil {
			return nil, err
		}
		if err := preLNBlock(p, L, x, v.eps, v.act, v.at, false); err != nil {
			return nil, err
		}
	}
	if err := p.record(v.final+":in", x); err != nil {
		return nil, err
	}
	h := p.layerNorm(v.final, x, v.eps)
	// the class token of every image
	cls := make([]fm, len(h))
	for i, l := range p.lanes {
		y := l.ar.get(b.n * d)
		for s := range b.n {
			copy(y[s*d:][:d], h[i].x[s*t*d:][:d])
		}
		cls[i] = fm{x: y, n: b.n, h: 1, w: 1, c: d}
	}
	if v.head == "" {
		return cls, nil
	}
	return p.linear(v.head, cls)
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

// mustTensor returns the tensor name of a bare parameter module.
func mustTensor(n *Net, module string) string {
	m, _ := n.Arch.Module(module)
	return m.Params[0].Tensor
}
