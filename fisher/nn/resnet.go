package nn

import (
	"fmt"
	"slices"
	"strings"

	"github.com/wtool/wtool/io/arch"
)

// resnet runs torchvision's ResNet as io/arch describes it: a stem
// (convolution, BatchNorm, ReLU, optional 3x3/2 max pool), blocks of
// convolutions each followed by a BatchNorm (ReLU between them), a
// shortcut (the identity, or a strided 1x1 convolution and BatchNorm) added
// to the last BatchNorm's output before a ReLU, then the average over
// positions and the fc head.
//
// Geometry, as torchvision builds it: every k x k convolution pads k/2; the
// first block of every stage after the first has stride 2, carried by its
// first convolution wider than 1x1 (BasicBlock's conv1, Bottleneck's conv2)
// and by its shortcut. The stem is torchvision's 7x7/2 convolution and
// 3x3/2 max pool unless config.json says otherwise (stem_kernel is read
// from the weight; stem_stride, stem_pool, as testdata/pairs' small-image
// ResNets have). BatchNorm eps is 1e-5 (config.json batch_norm_eps).
type resnet struct {
	in       Input
	stemConv string
	stemBN   string
	stem     convGeom
	pool     bool
	blocks   []resBlock
	fc       string
	eps      float64
	pts      []Point
}

type resBlock struct {
	name      string // module path of the block ("layer1.0")
	first     bool   // the network's first block: its input (the stem's output) is a point
	convs     []string
	bns       []string
	geoms     []convGeom
	short     string // shortcut convolution ("" for the identity)
	shortBN   string
	shortGeom convGeom
}

func init() { register("resnet", newResNet) }

func newResNet(n *Net) (family, error) {
	a := n.Arch
	cfg := a.Config
	r := &resnet{eps: cfg.Float("batch_norm_eps", 1e-5)}
	var inputSpace string
	for _, s := range a.Spaces {
		if s.Kind == arch.SpaceInput {
			inputSpace = s.Name
		}
	}
	// modules by layer
	byLayer := map[int][]*arch.Module{}
	for _, m := range a.Modules {
		switch {
		case m.Layer >= 0:
			byLayer[m.Layer] = append(byLayer[m.Layer], m)
		case m.Kind == arch.Conv && m.In == inputSpace:
			r.stemConv = m.Name
		case m.Role == arch.RoleHead && m.Kind == arch.Linear:
			r.fc = m.Name
		}
	}
	if r.stemConv == "" || r.fc == "" {
		return nil, fmt.Errorf("resnet layout: no stem convolution reading the pixels, or no fc head")
	}
	stem, _ := a.Module(r.stemConv)
	for _, m := range a.Modules {
		if m.Layer < 0 && m.Kind == arch.BatchNorm && m.Out == stem.Out {
			r.stemBN = m.Name
		}
	}
	if r.stemBN == "" {
		return nil, fmt.Errorf("resnet layout: no BatchNorm after the stem convolution %q", r.stemConv)
	}
	k := stem.Kernel[0]
	r.stem = convGeom{kh: stem.Kernel[0], kw: stem.Kernel[1], stride: 2, pad: k / 2}
	r.pool = true
	if k != 7 {
		r.stem.stride, r.pool = 1, false
	}
	if cfg.Has("stem_stride") {
		r.stem.stride = cfg.Int("stem_stride", r.stem.stride)
	}
	if cfg.Has("stem_pool") {
		r.pool = cfg.Bool("stem_pool", r.pool)
	}
	if len(stem.Kernel) != 2 || r.stem.stride < 1 {
		return nil, fmt.Errorf("resnet layout: stem %q is not a 2-D convolution", r.stemConv)
	}
	sh := stem.Weight().Shape
	r.in = Input{Kind: Images, Channels: int(sh[1]), Classes: 0}
	if cfg.Has("image_size") {
		r.in.Height = cfg.Int("image_size", 0)
		r.in.Width = r.in.Height
	}
	fc, _ := a.Module(r.fc)
	r.in.Classes = fc.OutFeatures

	layers := slices.Sorted(mapsKeys(byLayer))
	prevStage := 0
	for bi, li := range layers {
		mods := byLayer[li]
		blk, err := resnetBlock(a, mods, bi == 0)
		if err != nil {
			return nil, err
		}
		stage := mods[0].Stage
		if stage > 1 && stage != prevStage {
			// first block of a later stage: stride 2
			for ci, g := range blk.geoms {
				if g.kh > 1 {
					blk.geoms[ci].stride = 2
					break
				}
			}
			if blk.short != "" {
				blk.shortGeom.stride = 2
			}
		}
		prevStage = stage
		r.blocks = append(r.blocks, blk)
	}
	r.pts = r.makePoints(a)
	return r, nil
}

// resnetBlock finds a block's convolution chain (by the spaces they read
// and write), the BatchNorm of each, and the shortcut.
func resnetBlock(a *arch.Arch, mods []*arch.Module, first bool) (resBlock, error) {
	var convs, norms []*arch.Module
	var short *arch.Module
	for _, m := range mods {
		switch {
		case m.Kind == arch.Conv && m.Role == arch.RoleShortcut:
			short = m
		case m.Kind == arch.Conv:
			convs = append(convs, m)
		case m.Kind == arch.BatchNorm:
			norms = append(norms, m)
		}
	}
	if len(convs) == 0 {
		return resBlock{}, fmt.Errorf("resnet layout: block %d has no convolution", mods[0].Layer)
	}
	blk := resBlock{first: first}
	// the chain: each convolution but the last writes a hidden space that
	// the next one reads; the first reads what no convolution of the block
	// writes as a hidden space (the block's input)
	hidden := map[string]bool{}
	for _, c := range convs {
		if s, ok := a.Space(c.Out); ok && s.Kind == arch.SpaceHidden {
			hidden[c.Out] = true
		}
	}
	var cur *arch.Module
	for _, c := range convs {
		if !hidden[c.In] {
			cur = c
		}
	}
	used := map[string]bool{}
	claim := func(conv *arch.Module) (string, error) {
		best, bestLen := "", -1
		for _, nm := range norms {
			if used[nm.Name] || nm.Out != conv.Out {
				continue
			}
			if l := commonPrefix(nm.Name, conv.Name); l > bestLen {
				best, bestLen = nm.Name, l
			}
		}
		if best == "" {
			return "", fmt.Errorf("resnet layout: no BatchNorm after convolution %q", conv.Name)
		}
		used[best] = true
		return best, nil
	}
	if short != nil {
		bn, err := claim(short)
		if err != nil {
			return resBlock{}, err
		}
		blk.short, blk.shortBN = short.Name, bn
		blk.shortGeom = convGeom{kh: short.Kernel[0], kw: short.Kernel[1], stride: 1, pad: short.Kernel[0] / 2}
	}
	for cur != nil {
		bn, err := claim(cur)
		if err != nil {
			return resBlock{}, err
		}
		if len(cur.Kernel) != 2 {
			return resBlock{}, fmt.Errorf("resnet layout: %q is not a 2-D convolution", cur.Name)
		}
		blk.convs = append(blk.convs, cur.Name)
		blk.bns = append(blk.bns, bn)
		blk.geoms = append(blk.geoms, convGeom{kh: cur.Kernel[0], kw: cur.Kernel[1], stride: 1, pad: cur.Kernel[0] / 2})
		var next *arch.Module
		for _, c := range convs {
			if hidden[cur.Out] && c.In == cur.Out && !slices.Contains(blk.convs, c.Name) {
				next = c
			}
		}
		cur = next
	}
	if len(blk.convs) != len(convs) {
		return resBlock{}, fmt.Errorf("resnet layout: the convolutions of block %d do not form a chain", mods[0].Layer)
	}
	name := blk.convs[0]
	if i := strings.LastIndexByte(name, '.'); i > 0 {
		name = name[:i]
	}
	blk.name = name
	return blk, nil
}

func commonPrefix(a, b string) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

func (r *resnet) input() Input { return r.in }

func (r *resnet) points() []Point { return r.pts }

func (r *resnet) makePoints(a *arch.Arch) []Point {
	var pts []Point
	mod := func(name string) {
		m, _ := a.Module(name)
		pts = append(pts, Point{Name: name, Kind: ModuleInput, Module: name, Space: m.In, Dim: m.InFeatures})
	}
	act := func(name, module, space string) {
		s, _ := a.Space(space)
		pts = append(pts, Point{Name: name, Kind: Activation, Module: module, Space: space, Dim: s.Size})
	}
	mod(r.stemConv)
	for _, b := range r.blocks {
		c0, _ := a.Module(b.convs[0])
		if b.first {
			act(b.name+":in", b.name, c0.In)
		}
		for k, c := range b.convs {
			if k > 0 {
				m, _ := a.Module(c)
				act(c+":in", c, m.In)
			}
			mod(c)
		}
		if b.short != "" {
			mod(b.short)
		}
		last, _ := a.Module(b.convs[len(b.convs)-1])
		act(b.name+":out", b.name, last.Out)
	}
	mod(r.fc)
	return pts
}

func (r *resnet) forward(p *pass, b *batch) ([]fm, error) {
	xs, err := p.images(b, r.in)
	if err != nil {
		return nil, err
	}
	if xs, err = p.conv(r.stemConv, xs, r.stem); err != nil {
		return nil, err
	}
	if err := p.batchNorm(r.stemBN, xs, r.eps); err != nil {
		return nil, err
	}
	relu(xs)
	if r.pool {
		xs = p.maxpool(xs, convGeom{kh: 3, kw: 3, stride: 2, pad: 1})
	}
	for _, blk := range r.blocks {
		if err := p.check(); err != nil {
			return nil, err
		}
		if blk.first {
			if err := p.record(blk.name+":in", xs); err != nil {
				return nil, err
			}
		}
		ys := xs
		for k, c := range blk.convs {
			if k > 0 {
				if err := p.record(c+":in", ys); err != nil {
					return nil, err
				}
			}
			if ys, err = p.conv(c, ys, blk.geoms[k]); err != nil {
				return nil, err
			}
			if err := p.batchNorm(blk.bns[k], ys, r.eps); err != nil {
				return nil, err
			}
			if k < len(blk.convs)-1 {
				relu(ys)
			}
		}
		ss := xs
		if blk.short != "" {
			if ss, err = p.conv(blk.short, xs, blk.shortGeom); err != nil {
				return nil, err
			}
			if err := p.batchNorm(blk.shortBN, ss, r.eps); err != nil {
				return nil, err
			}
		}
		if ss[0].h != ys[0].h || ss[0].w != ys[0].w || ss[0].c != ys[0].c {
			return nil, fmt.Errorf("block %s: the shortcut gives %dx%dx%d, the convolutions %dx%dx%d", blk.name, ss[0].h, ss[0].w, ss[0].c, ys[0].h, ys[0].w, ys[0].c)
		}
		addInto(ys, ss)
		relu(ys)
		if err := p.record(blk.name+":out", ys); err != nil {
			return nil, err
		}
		xs = ys
	}
	return p.linear(r.fc, p.meanpool(xs))
}

// images turns a batch of NCHW images into each lane's NHWC input (one
// buffer, read-only, shared by the lanes).
func (p *pass) images(b *batch, in Input) ([]fm, error) {
	if b.x == nil {
		return nil, fmt.Errorf("the model reads images; the data holds token ids")
	}
	c, h, w := b.c, b.h, b.w
	l := p.lanes[0]
	y := l.ar.get(b.n * h * w * c)
	for n := range b.n {
		src := b.x[n*c*h*w:]
		dst := y[n*h*w*c:]
		for ch := range c {
			for q := range h * w {
				dst[q*c+ch] = src[ch*h*w+q]
			}
		}
	}
	x := fm{x: y, n: b.n, h: h, w: w, c: c}
	out := make([]fm, len(p.lanes))
	for i := range out {
		out[i] = x
	}
	return out, nil
}
