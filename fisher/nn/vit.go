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

func init() { register("vit", newViT) }

func newViT(n *Net) (family, error) {
	a := n.Arch
	cfg := a.Config
	act, err := transformerAct(a, "vit", "num_attention_heads", "gelu", "hidden_act")
	if err != nil {
		return nil, err
	}
	v := &vit{at: a.Attention, eps: cfg.Float("layer_norm_eps", 1e-12), hidden: a.Hidden, act: act}
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
	if v.layers, err = encLayers(a, func(int) (string, string) { return "layernorm_before", "layernorm_after" }); err != nil {
		return nil, err
	}
	v.pts = encoderPoints(a, v.proj, v.layers, v.final, v.head)
	return v, nil
}

func isMaskToken(name string) bool { return len(name) >= 10 && name[len(name)-10:] == "mask_token" }

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
	h, err := preLNStack(p, v.layers, v.final, x, v.eps, v.act, v.at, false)
	if err != nil {
		return nil, err
	}
	cls := p.firstTokens(h, b.n, t) // the class token of every image
	if v.head == "" {
		return cls, nil
	}
	return p.linear(v.head, cls)
}

// mustTensor returns the tensor name of a bare parameter module.
func mustTensor(n *Net, module string) string {
	m, _ := n.Arch.Module(module)
	return m.Params[0].Tensor
}
