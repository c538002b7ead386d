package arch

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
)

// Builder collects a family's description of a checkpoint. Families call
// Add for every module, Space/Heads/Fused for the activation spaces, and set
// the geometry on Arch(); sizes are taken from the tensor shapes and checked
// against each other, so a family describes structure, never numbers it could
// get wrong. The first inconsistency is kept and returned by Describe.
type Builder struct {
	// Config is config.json (nil without one).
	Config *Config
	// Shapes are every tensor's shape; Names the tensor names, sorted.
	Shapes map[string][]int64
	Names  []string

	arch                 *Arch
	claimed              map[string]bool
	spaces               map[string]*Space
	layer, stage, expert int
	err                  error
}

func newBuilder(cfg *Config, shapes map[string][]int64, names []string) *Builder {
	a := &Arch{Config: cfg, byTensor: map[string]*Param{}, byModule: map[string]*Module{}, bySpace: map[string]*Space{}}
	if cfg != nil {
		a.ModelType, a.Architecture = cfg.ModelType, cfg.Architecture()
	}
	return &Builder{Config: cfg, Shapes: shapes, Names: names, arch: a, claimed: map[string]bool{}, spaces: map[string]*Space{},
		layer: -1, stage: -1, expert: -1}
}

// Arch returns the description being built, for the geometry fields
// (Layers, Hidden, Attention, Experts, Block, Prefix).
func (b *Builder) Arch() *Arch { return b.arch }

// Note records what the family recognised or assumed.
func (b *Builder) Note(format string, args ...any) {
	b.arch.Notes = append(b.arch.Notes, fmt.Sprintf(format, args...))
}

// Fail records an error (the first one is returned by Describe).
func (b *Builder) Fail(format string, args ...any) {
	if b.err == nil {
		b.err = fmt.Errorf(format, args...)
	}
}

// Err returns the first error recorded.
func (b *Builder) Err() error { return b.err }

// SetLayer sets the block index of the modules added next (-1: outside the
// blocks); SetStage and SetExpert likewise.
func (b *Builder) SetLayer(i int)  { b.layer = i }
func (b *Builder) SetStage(i int)  { b.stage = i }
func (b *Builder) SetExpert(i int) { b.expert = i }

// Has reports whether the checkpoint has the tensor.
func (b *Builder) Has(tensor string) bool { _, ok := b.Shapes[tensor]; return ok }

// HasModule reports whether the checkpoint has the module's weight.
func (b *Builder) HasModule(module string) bool { return b.Has(module + ".weight") }

// Matching returns the capture groups of every tensor name the pattern
// matches, in name order, each distinct first group once (a layer index,
// say).
func (b *Builder) Matching(re *regexp.Regexp) [][]string {
	var out [][]string
	seen := map[string]bool{}
	for _, n := range b.Names {
		if m := re.FindStringSubmatch(n); m != nil {
			key := strings.Join(m[1:], "\x00")
			if !seen[key] {
				seen[key] = true
				out = append(out, m[1:])
			}
		}
	}
	return out
}

// Space declares an activation space of a kind; its size comes from the
// tensors that use it.
func (b *Builder) Space(name string, kind SpaceKind) *Space {
	s, ok := b.spaces[name]
	if !ok {
		s = &Space{Name: name, Kind: kind}
		b.spaces[name] = s
	} else if s.Kind != kind {
		b.Fail("space %q declared as %s and as %s", name, s.Kind, kind)
	}
	return s
}

// Heads marks an attention space: heads of headDim features each, rotary or
// not. The space's size must be heads*headDim.
func (b *Builder) Heads(name string, heads, headDim int, rotary bool) {
	s := b.Space(name, SpaceAttention)
	s.Heads, s.HeadDim, s.Rotary = heads, headDim, rotary
}

// Fused declares a fused space, the concatenation of parts (declared
// separately, with their kinds).
func (b *Builder) Fused(name string, parts ...string) {
	s := b.Space(name, SpaceFused)
	s.Parts = parts
}

// size sets or checks a space's size from a tensor axis.
func (b *Builder) size(space string, n int, tensor string, axis int) {
	if space == "" {
		return
	}
	s, ok := b.spaces[space]
	if !ok {
		b.Fail("tensor %q: axis %d: space %q was not declared", tensor, axis, space)
		return
	}
	if s.Size == 0 {
		s.Size = n
	} else if s.Size != n {
		b.Fail("tensor %q: axis %d has %d features but space %q has %d (from another tensor)", tensor, axis, n, space, s.Size)
	}
}

// Spec describes one module for Add.
type Spec struct {
	Name    string // module path; its tensors are Name.weight, Name.bias, ...
	Kind    Kind
	Role    Role
	In, Out string // the spaces read and written (a norm: the space normalised, in Out)
	// Optional modules are skipped when their weight is absent; a required
	// one missing is an error.
	Optional bool
	// TiedTo names the module whose weight this one shares.
	TiedTo string
}

// paramNames are the parameters each kind may have; the first is required.
func paramNames(k Kind) []string {
	switch k {
	case Linear, Conv1D, Conv:
		return []string{"weight", "bias"}
	case Embedding, RMSNorm, GemmaRMSNorm:
		return []string{"weight"}
	case LayerNorm:
		return []string{"weight", "bias"}
	case BatchNorm:
		return []string{"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}
	}
	return nil
}

// legacy LayerNorm names (BERT checkpoints converted from TensorFlow)
var legacyNames = map[string]string{"weight": "gamma", "bias": "beta"}

// Add adds a module and claims its tensors. It returns nil (and records an
// error, unless the module is optional) when the module's weight is missing.
func (b *Builder) Add(s Spec) *Module {
	m := &Module{Name: s.Name, Kind: s.Kind, Role: s.Role, In: s.In, Out: s.Out, Layer: b.layer, Stage: b.stage, Expert: b.expert, TiedTo: s.TiedTo}
	if m.IsNorm() && m.In == "" {
		m.In = m.Out
	}
	names := paramNames(s.Kind)
	if names == nil {
		b.Fail("module %q: kind %s has no parameters (use AddTensor)", s.Name, s.Kind)
		return nil
	}
	for i, pn := range names {
		t := s.Name + "." + pn
		if !b.Has(t) && s.Kind == LayerNorm && b.Has(s.Name+"."+legacyNames[pn]) {
			t = s.Name + "." + legacyNames[pn]
		}
		if !b.Has(t) {
			if i == 0 {
				if !s.Optional {
					b.Fail("module %q: tensor %q is missing", s.Name, t)
				}
				return nil
			}
			continue
		}
		if b.claimed[t] {
			b.Fail("tensor %q described twice", t)
			return nil
		}
		shape := b.Shapes[t]
		p := &Param{Tensor: t, Name: pn, Shape: shape, Module: m}
		if err := b.axes(m, p); err != nil {
			b.Fail("%v", err)
			return nil
		}
		m.Params = append(m.Params, p)
	}
	for _, p := range m.Params {
		b.claimed[p.Tensor] = true
		for ax, sp := range p.Axes {
			b.size(sp, int(p.Shape[ax]), p.Tensor, ax)
		}
	}
	b.register(m)
	return m
}

// axes fills in the spaces of a parameter's axes and the module's matrix
// sizes.
func (b *Builder) axes(m *Module, p *Param) error {
	sh := p.Shape
	want := func(rank int) error {
		if len(sh) != rank {
			return fmt.Errorf("tensor %q has shape %v; a %s %s has rank %d", p.Tensor, sh, m.Kind, p.Name, rank)
		}
		return nil
	}
	if p.Name != "weight" {
		if p.Name == "num_batches_tracked" {
			p.Axes = make([]string, len(sh))
			return nil
		}
		if err := want(1); err != nil {
			return err
		}
		p.Axes = []string{m.Out}
		return nil
	}
	switch m.Kind {
	case Linear:
		if err := want(2); err != nil {
			return err
		}
		p.Axes = []string{m.Out, m.In}
		m.OutFeatures, m.InFeatures = int(sh[0]), int(sh[1])
	case Conv1D:
		if err := want(2); err != nil {
			return err
		}
		p.Axes = []string{m.In, m.Out}
		m.InFeatures, m.OutFeatures = int(sh[0]), int(sh[1])
	case Embedding:
		if err := want(2); err != nil {
			return err
		}
		p.Axes = []string{m.In, m.Out}
		m.InFeatures, m.OutFeatures = int(sh[0]), int(sh[1])
	case Conv:
		if len(sh) < 3 {
			return fmt.Errorf("tensor %q has shape %v; a convolution weight has rank 3 or more", p.Tensor, sh)
		}
		p.Axes = make([]string, len(sh))
		p.Axes[0], p.Axes[1] = m.Out, m.In
		m.OutFeatures, m.InFeatures = int(sh[0]), int(sh[1])
		for _, k := range sh[2:] {
			m.Kernel = append(m.Kernel, int(k))
			m.InFeatures *= int(k)
		}
	default: // norms
		if err := want(1); err != nil {
			return err
		}
		p.Axes = []string{m.Out}
		m.InFeatures, m.OutFeatures = int(sh[0]), int(sh[0])
	}
	return nil
}

// AddTensor adds a bare parameter or buffer (its module is the tensor
// itself), with the space of each axis ("" for none). Absent tensors are
// skipped.
func (b *Builder) AddTensor(tensor string, kind Kind, role Role, axes ...string) *Module {
	shape, ok := b.Shapes[tensor]
	if !ok {
		return nil
	}
	if b.claimed[tensor] {
		b.Fail("tensor %q described twice", tensor)
		return nil
	}
	if len(axes) == 0 {
		axes = make([]string, len(shape))
	}
	if len(axes) != len(shape) {
		b.Fail("tensor %q has shape %v, described with %d axes", tensor, shape, len(axes))
		return nil
	}
	m := &Module{Name: tensor, Kind: kind, Role: role, Layer: b.layer, Stage: b.stage, Expert: b.expert}
	p := &Param{Tensor: tensor, Shape: shape, Axes: axes, Module: m}
	m.Params = []*Param{p}
	for _, a := range axes {
		if a != "" {
			m.Out = a
		}
	}
	b.claimed[tensor] = true
	for ax, sp := range axes {
		b.size(sp, int(shape[ax]), tensor, ax)
	}
	b.register(m)
	return m
}

// Tie records that module uses the weight of module to (tie_word_embeddings):
// whether the checkpoint stores module's own copy is found from the tensors.
func (b *Builder) Tie(module, to string) {
	b.arch.Ties = append(b.arch.Ties, Tie{Module: module, To: to, Stored: b.HasModule(module)})
}

func (b *Builder) register(m *Module) {
	if _, dup := b.arch.byModule[m.Name]; dup {
		b.Fail("module %q described twice", m.Name)
		return
	}
	b.arch.byModule[m.Name] = m
	b.arch.Modules = append(b.arch.Modules, m)
	for _, p := range m.Params {
		b.arch.byTensor[p.Tensor] = p
	}
}

// Generic descriptions, by name and shape.
var (
	embeddingName = regexp.MustCompile(`(^|\.)(embed_tokens|embeddings?|wte|tok_embeddings|word_embeddings|shared)$`)
	positionName  = regexp.MustCompile(`(^|\.)(wpe|position_embeddings?|pos_embed(ding)?s?|positional_embedding)$`)
	tokenTypeName = regexp.MustCompile(`(^|\.)token_type_embeddings$`)
	headName      = regexp.MustCompile(`^(lm_head|embed_out|output|classifier|fc|score|head|heads?\.[^.]+)$|(^|\.)(lm_head|classifier|score)$|^cls\.`)
	routerName    = regexp.MustCompile(`(^|\.)(router|block_sparse_moe\.gate|moe\.gate|mlp\.gate)$`)
	normName      = regexp.MustCompile(`(?i)(norm|^ln|\.ln|_ln|ln_)`)
	bufferName    = regexp.MustCompile(`(^|\.)(inv_freq|position_ids|masked_bias|running_mean|running_var|num_batches_tracked)$`)
)

// describeRest describes every tensor no family claimed, by name and shape,
// and notes what it assumed.
func (b *Builder) describeRest(known bool) {
	byModule := map[string][]string{}
	for _, n := range b.Names {
		if b.claimed[n] {
			continue
		}
		mod, param := splitName(n)
		byModule[mod] = append(byModule[mod], param)
	}
	if len(byModule) == 0 {
		return
	}
	b.layer, b.stage, b.expert = -1, -1, -1
	var assumed []string
	for _, mod := range slices.Sorted(maps.Keys(byModule)) {
		params := byModule[mod]
		w := mod + ".weight"
		shape, hasWeight := b.Shapes[w]
		kind := Unknown
		role := RoleOther
		switch {
		case !hasWeight:
		case slices.Contains(params, "running_mean") && len(shape) == 1:
			kind, role = BatchNorm, RoleNorm
		case len(shape) == 2 && (embeddingName.MatchString(mod) || positionName.MatchString(mod) || tokenTypeName.MatchString(mod)):
			kind, role = Embedding, RoleEmbedding
			if positionName.MatchString(mod) {
				role = RolePositionEmbedding
			} else if tokenTypeName.MatchString(mod) {
				role = RoleTokenTypeEmbedding
			}
		case len(shape) == 2:
			kind, role = Linear, RoleOther
			if headName.MatchString(mod) {
				role = RoleHead
			} else if routerName.MatchString(mod) {
				role = RoleRouter
			}
		case len(shape) >= 3:
			kind, role = Conv, RoleConv
		case len(shape) == 1 && normName.MatchString(mod):
			kind, role = LayerNorm, RoleNorm
			if !slices.Contains(params, "bias") {
				kind = RMSNorm
			}
		}
		if kind != Unknown {
			m := &Module{Name: mod, Kind: kind, Role: role, Layer: -1, Stage: -1, Expert: -1}
			ok := true
			for _, pn := range paramNames(kind) {
				t := mod + "." + pn
				if !b.Has(t) || b.claimed[t] {
					continue
				}
				p := &Param{Tensor: t, Name: pn, Shape: b.Shapes[t], Module: m}
				if err := b.axes(m, p); err != nil {
					ok = false
					break
				}
				m.Params = append(m.Params, p)
			}
			// the parameters must be consistent (a bias of the output size)
			if ok {
				if bp := m.Bias(); bp != nil && int(bp.Shape[0]) != m.OutFeatures {
					ok = false
				}
			}
			if ok {
				for _, p := range m.Params {
					b.claimed[p.Tensor] = true
				}
				b.register(m)
				assumed = append(assumed, fmt.Sprintf("%s: %s (%s)", mod, kind, role))
			}
		}
		// whatever is left of the module: bare parameters and buffers
		for _, pn := range params {
			t := mod + "." + pn
			if pn == "" { // a name without a dot: the tensor is its own module
				t = mod
			}
			if b.claimed[t] {
				continue
			}
			k, r := Bare, RoleOther
			if bufferName.MatchString(t) || (pn == "bias" && len(b.Shapes[t]) == 4) { // GPT-2-style attention mask
				k, r = Buffer, RoleBuffer
			}
			b.AddTensor(t, k, r)
			assumed = append(assumed, fmt.Sprintf("%s: %s", t, k))
		}
	}
	if known && len(assumed) > 0 {
		shown := assumed
		if len(shown) > 6 {
			shown = append(slices.Clone(shown[:6]), fmt.Sprintf("... (%d in all)", len(assumed)))
		}
		b.Note("tensors outside the %s layout, described by name and shape: %s", b.arch.Family, strings.Join(shown, "; "))
	}
}

func splitName(t string) (module, param string) {
	i := strings.LastIndexByte(t, '.')
	if i < 0 {
		return t, ""
	}
	return t[:i], t[i+1:]
}

// finish sorts and indexes the description.
func (b *Builder) finish() (*Arch, error) {
	a := b.arch
	sortModules(a.Modules)
	for _, n := range slices.Sorted(maps.Keys(b.spaces)) {
		s := b.spaces[n]
		if s.Kind == SpaceFused && s.Size == 0 {
			for _, p := range s.Parts {
				if ps, ok := b.spaces[p]; ok {
					s.Size += ps.Size
				}
			}
		}
		a.Spaces = append(a.Spaces, s)
		a.bySpace[n] = s
	}
	for _, s := range a.Spaces {
		if s.Kind == SpaceAttention && s.Heads > 0 && s.Size != 0 && s.Heads*s.HeadDim != s.Size {
			return nil, fmt.Errorf("%s layout: space %q has %d features, not %d heads of %d", a.Family, s.Name, s.Size, s.Heads, s.HeadDim)
		}
		if s.Kind == SpaceFused {
			sum := 0
			for _, p := range s.Parts {
				if ps, ok := a.bySpace[p]; ok {
					sum += ps.Size
				}
			}
			if sum != s.Size {
				return nil, fmt.Errorf("%s layout: fused space %q has %d features, its parts %v add up to %d", a.Family, s.Name, s.Size, s.Parts, sum)
			}
		}
	}
	for _, n := range b.Names {
		if _, ok := a.byTensor[n]; !ok {
			return nil, fmt.Errorf("tensor %q was not described", n)
		}
	}
	if a.Layers == 0 {
		for _, m := range a.Modules {
			a.Layers = max(a.Layers, m.Layer+1)
		}
	}
	for _, t := range a.Ties {
		if m, ok := a.byModule[t.Module]; ok && m.TiedTo == "" {
			m.TiedTo = t.To
		}
	}
	if a.family != nil {
		if bc, ok := a.family.(interface{ BaseClasses() []string }); ok {
			a.baseClass = slices.Contains(bc.BaseClasses(), a.Architecture)
		}
	}
	return a, nil
}
