package nn

import (
	"fmt"
	"math"
	"strings"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"

	"github.com/wtool/wtool/io/arch"
)

// layerIndex finds a transformer layer's modules by role, and its norms by
// the ending of their names (roles do not tell a block's two norms apart).
type layerIndex struct {
	layer int
	mods  []*arch.Module
}

func newLayerIndex(a *arch.Arch, layer int) layerIndex {
	var mods []*arch.Module
	for _, m := range a.Modules {
		if m.Layer == layer && m.Expert < 0 {
			mods = append(mods, m)
		}
	}
	return layerIndex{layer: layer, mods: mods}
}

// role returns the layer's module of a role ("" when absent).
func (li layerIndex) role(r arch.Role) string {
	for _, m := range li.mods {
		if m.Role == r && m.Weight() != nil {
			return m.Name
		}
	}
	return ""
}

// need returns the module of a role, or an error naming the layer.
func (li layerIndex) need(r arch.Role) (string, error) {
	if n := li.role(r); n != "" {
		return n, nil
	}
	return "", fmt.Errorf("layer %d has no %s module", li.layer, r)
}

// norm returns the layer's norm whose name ends with suffix.
func (li layerIndex) norm(suffix string) (string, error) {
	for _, m := range li.mods {
		if m.IsNorm() && strings.HasSuffix(m.Name, suffix) {
			return m.Name, nil
		}
	}
	return "", fmt.Errorf("layer %d has no %s norm", li.layer, suffix)
}

// rope is a rotary position embedding: the first dim dimensions of every
// head rotate in pairs (i, i + dim/2) by pos * invFreq[i] (Hugging Face's
// rotate_half convention).
type rope struct {
	dim     int
	invFreq []float64
	scale   float64 // positions are divided by it (linear scaling)
}

// newRope reads rope_theta, partial_rotary_factor and rope_scaling (none,
// "default", "linear", "llama3"; others are refused) from config.json.
func newRope(cfg *arch.Config, at *arch.Attention) (*rope, error) {
	d := at.RotaryDim
	if d == 0 {
		d = at.HeadDim
	}
	if d%2 != 0 || d > at.HeadDim {
		return nil, fmt.Errorf("rotary dimension %d for heads of %d", d, at.HeadDim)
	}
	theta := at.RopeTheta
	if theta == 0 {
		theta = 10000
	}
	r := &rope{dim: d, scale: 1}
	for i := 0; i < d/2; i++ {
		r.invFreq = append(r.invFreq, 1/math.Pow(theta, float64(2*i)/float64(d)))
	}
	sc, _ := cfg.Raw["rope_scaling"].(map[string]any)
	if sc == nil {
		return r, nil
	}
	typ, _ := sc["rope_type"].(string)
	if typ == "" {
		typ, _ = sc["type"].(string)
	}
	num := func(k string, def float64) float64 {
		if v, ok := sc[k].(float64); ok {
			return v
		}
		return def
	}
	switch typ {
	case "", "default":
	case "linear":
		r.scale = num("factor", 1)
	case "llama3":
		factor, lo, hi := num("factor", 8), num("low_freq_factor", 1), num("high_freq_factor", 4)
		orig := num("original_max_position_embeddings", 8192)
		loWave, hiWave := orig/lo, orig/hi
		for i, f := range r.invFreq {
			wave := 2 * math.Pi / f
			switch {
			case wave < hiWave:
			case wave > loWave:
				r.invFreq[i] = f / factor
			default:
				s := (orig/wave - lo) / (hi - lo)
				r.invFreq[i] = (1-s)*f/factor + s*f
			}
		}
	default:
		return nil, &UnsupportedError{Family: "decoder", Reason: fmt.Sprintf("rope_scaling type %q", typ)}
	}
	return r, nil
}

// apply rotates x (rows of heads*headDim, t tokens per sequence) in place.
func (r *rope) apply(x []float32, n, t, heads, headDim int) {
	h := r.dim / 2
	cos, sin := make([]float32, t*h), make([]float32, t*h)
	for q := range t {
		for i, f := range r.invFreq {
			a := float64(q) / r.scale * f
			cos[q*h+i], sin[q*h+i] = float32(math.Cos(a)), float32(math.Sin(a))
		}
	}
	for s := range n {
		for q := range t {
			row := x[(s*t+q)*heads*headDim:]
			c, si := cos[q*h:][:h], sin[q*h:][:h]
			for hd := range heads {
				v := row[hd*headDim:]
				for i := range h {
					a, b := v[i], v[i+h]
					v[i] = a*c[i] - b*si[i]
					v[i+h] = b*c[i] + a*si[i]
				}
			}
		}
	}
}

// attention computes softmax(q k^T / sqrt(d) + mask) v per sequence and
// head into out (rows x heads*headDim): q has heads heads, k and v kvHeads
// (query head h reads key/value head h / (heads/kvHeads)). causal masks
// the future; window > 0 also masks keys more than window-1 tokens back.
func attention(out, q, k, v []float32, n, t, heads, kvHeads, headDim int, causal bool, window, par int) {
	group := heads / kvHeads
	qs, ks := heads*headDim, kvHeads*headDim
	scale := float32(1 / math.Sqrt(float64(headDim)))
	parallel(par, n*heads, func(lo, hi int) {
		s := make([]float32, t*t)
		for job := lo; job < hi; job++ {
			b, h := job/heads, job%heads
			kv := h / group
			qm := blas32.General{Rows: t, Cols: headDim, Stride: qs, Data: q[b*t*qs+h*headDim:]}
			km := blas32.General{Rows: t, Cols: headDim, Stride: ks, Data: k[b*t*ks+kv*headDim:]}
			vm := blas32.General{Rows: t, Cols: headDim, Stride: ks, Data: v[b*t*ks+kv*headDim:]}
			om := blas32.General{Rows: t, Cols: headDim, Stride: qs, Data: out[b*t*qs+h*headDim:]}
			blas32.Gemm(blas.NoTrans, blas.Trans, scale, qm, km, 0, general(s, t, t))
			for i := range t {
				row := s[i*t : (i+1)*t]
				first, last := 0, t
				if causal {
					last = i + 1
				}
				if window > 0 {
					first = max(0, i-window+1)
				}
				m := math.Inf(-1)
				for j := first; j < last; j++ {
					m = math.Max(m, float64(row[j]))
				}
				var sum float64
				for j := range row {
					if j < first || j >= last {
						row[j] = 0
						continue
					}
					e := math.Exp(float64(row[j]) - m)
					row[j] = float32(e)
					sum += e
				}
				inv := 1 / sum
				for j := first; j < last; j++ {
					row[j] = float32(float64(row[j]) * inv)
				}
			}
			blas32.Gemm(blas.NoTrans, blas.NoTrans, 1, general(s, t, t), vm, 0, om)
		}
	})
}

// attend runs attention on every lane.
func (p *pass) attend(qs, ks, vs []fm, at *arch.Attention, causal bool, window int) []fm {
	out := make([]fm, len(qs))
	for i, l := range p.lanes {
		q := qs[i]
		y := l.ar.get(q.rows() * q.c)
		attention(y, q.x, ks[i].x, vs[i].x, q.n, q.h, at.Heads, at.KVHeads, at.HeadDim, causal, window, p.par)
		out[i] = fm{x: y, n: q.n, h: q.h, w: 1, c: q.c}
	}
	return out
}

// split cuts each lane's features into consecutive pieces of the sizes
// given (a fused projection's q|k|v or gate|up).
func (p *pass) split(xs []fm, sizes ...int) [][]fm {
	out := make([][]fm, len(sizes))
	for k := range sizes {
		out[k] = make([]fm, len(xs))
	}
	for i, l := range p.lanes {
		x := xs[i]
		off := 0
		for k, sz := range sizes {
			y := l.ar.get(x.rows() * sz)
			for r := range x.rows() {
				copy(y[r*sz:(r+1)*sz], x.x[r*x.c+off:][:sz])
			}
			out[k][i] = fm{x: y, n: x.n, h: x.h, w: x.w, c: sz}
			off += sz
		}
	}
	return out
}

// embed looks up each lane's embedding rows [vocab, dim] for the batch's
// token ids (scaled by scale when it is not 1).
func (p *pass) embed(module string, b *batch, scale float32) ([]fm, error) {
	out := make([]fm, len(p.lanes))
	for i, l := range p.lanes {
		w := l.net.param(module, "weight")
		m, _ := l.net.Arch.Module(module)
		vocab, dim := m.InFeatures, m.OutFeatures
		y := l.ar.get(len(b.ids) * dim)
		for r, id := range b.ids {
			if int(id) >= vocab {
				return nil, fmt.Errorf("token id %d (sequence %d, position %d) is outside %s's vocabulary of %d", id, b.lo+r/b.t, r%b.t, module, vocab)
			}
			copy(y[r*dim:(r+1)*dim], w[int(id)*dim:][:dim])
			if scale != 1 {
				for j := range dim {
					y[r*dim+j] *= scale
				}
			}
		}
		out[i] = fm{x: y, n: b.n, h: b.t, w: 1, c: dim}
	}
	return out, nil
}

// mulInto multiplies xs by ys elementwise in place (gated MLPs).
func mulInto(xs, ys []fm) {
	for i, x := range xs {
		v, w := x.x[:x.rows()*x.c], ys[i].x[:x.rows()*x.c]
		for j := range v {
			v[j] *= w[j]
		}
	}
}

// tiedHead computes logits = x E^T with an embedding E [vocab, dim] (a head
// tied to the embedding, no module of its own), plus an optional bias.
func (p *pass) tiedHead(module string, xs []fm, bias func(l *lane) []float32) []fm {
	out := make([]fm, len(xs))
	for i, l := range p.lanes {
		x := xs[i]
		m, _ := l.net.Arch.Module(module)
		vocab := m.InFeatures
		y := l.ar.get(x.rows() * vocab)
		var b []float32
		if bias != nil {
			b = bias(l)
		}
		matmulT(y, x.x, x.rows(), x.c, l.net.param(module, "weight"), vocab, b)
		out[i] = fm{x: y, n: x.n, h: x.h, w: x.w, c: vocab}
	}
	return out
}

// copyFm copies each lane's activation (to keep a residual while a norm's
// output is computed in place elsewhere).
func (p *pass) copyFm(xs []fm) []fm {
	out := make([]fm, len(xs))
	for i, l := range p.lanes {
		x := xs[i]
		y := l.ar.get(x.rows() * x.c)
		copy(y, x.x[:x.rows()*x.c])
		out[i] = fm{x: y, n: x.n, h: x.h, w: x.w, c: x.c}
	}
	return out
}

// tokens checks a batch holds token ids.
func tokensOf(b *batch) error {
	if b.ids == nil {
		return fmt.Errorf("the model reads token ids; the data holds floating values")
	}
	return nil
}

// transformerAct checks that a transformer's description has its attention
// geometry (config.json's heads key gives it) and returns its activation
// function: the first of config.json's keys that is set, else def.
func transformerAct(a *arch.Arch, family, heads, def string, keys ...string) (activation, error) {
	if a.Attention == nil {
		return nil, &UnsupportedError{Family: family, Reason: "no attention geometry (config.json " + heads + ")"}
	}
	name := ""
	for _, k := range keys {
		if name = a.Config.String(k); name != "" {
			break
		}
	}
	if name == "" {
		name = def
	}
	act, err := parseAct(name)
	if err != nil {
		return nil, &UnsupportedError{Family: family, Reason: err.Error()}
	}
	return act, nil
}

// qkvNames finds a layer's fused q|k|v projection, else its separate q, k
// and v projections (an error when one is missing).
func (li layerIndex) qkvNames() (qkv, q, k, v string, err error) {
	if qkv = li.role(arch.RoleAttnQKV); qkv != "" {
		return qkv, "", "", "", nil
	}
	if q, err = li.need(arch.RoleAttnQ); err != nil {
		return
	}
	if k, err = li.need(arch.RoleAttnK); err != nil {
		return
	}
	v, err = li.need(arch.RoleAttnV)
	return
}

// projectQKV computes queries, keys and values on every lane: with the
// fused projection qkv when there is one (its output cut into q|k|v by the
// attention geometry), else with the projections q, k and v.
func (p *pass) projectQKV(h []fm, at *arch.Attention, qkv, q, k, v string) (qs, ks, vs []fm, err error) {
	if qkv != "" {
		out, err := p.linear(qkv, h)
		if err != nil {
			return nil, nil, nil, err
		}
		qd, kvd := at.Heads*at.HeadDim, at.KVHeads*at.HeadDim
		if out[0].c != qd+2*kvd {
			return nil, nil, nil, fmt.Errorf("module %q gives %d features, not q|k|v of %d|%d|%d", qkv, out[0].c, qd, kvd, kvd)
		}
		parts := p.split(out, qd, kvd, kvd)
		return parts[0], parts[1], parts[2], nil
	}
	if qs, err = p.linear(q, h); err != nil {
		return nil, nil, nil, err
	}
	if ks, err = p.linear(k, h); err != nil {
		return nil, nil, nil, err
	}
	if vs, err = p.linear(v, h); err != nil {
		return nil, nil, nil, err
	}
	return qs, ks, vs, nil
}

// pointList collects statistics points in forward order.
type pointList struct {
	a   *arch.Arch
	pts []Point
}

// module adds the inputs of the named modules ("" names are skipped).
func (pl *pointList) module(names ...string) {
	for _, name := range names {
		if name == "" {
			continue
		}
		m, _ := pl.a.Module(name)
		pl.pts = append(pl.pts, Point{Name: name, Kind: ModuleInput, Module: name, Space: m.In, Dim: m.InFeatures})
	}
}

// norm adds the inputs of the named norms, activations of the space they
// normalise ("" names are skipped).
func (pl *pointList) norm(names ...string) {
	for _, name := range names {
		if name == "" {
			continue
		}
		m, _ := pl.a.Module(name)
		pl.pts = append(pl.pts, Point{Name: name + ":in", Kind: Activation, Module: name, Space: m.Out, Dim: m.OutFeatures})
	}
}
