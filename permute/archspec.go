package permute

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/wtool/wtool/io/arch"
)

// GroupKind says what a group built from the architecture permutes.
type GroupKind string

// The kinds of groups BuildSpec makes.
const (
	// KindResidual is a residual stream: a transformer's hidden size, a
	// ResNet stage's channels (io/arch's residual spaces).
	KindResidual GroupKind = "residual"
	// KindHidden is the hidden units of an MLP (an expert's), of a conv
	// block's interior, of a pooler (io/arch's hidden spaces).
	KindHidden GroupKind = "hidden"
	// KindHeads is the heads of an attention module (its key/value heads
	// under grouped-query attention, each moving with the query heads that
	// share it).
	KindHeads GroupKind = "heads"
	// KindQK is the query and key features inside each head (a Within
	// group): attention without rotary embeddings only.
	KindQK GroupKind = "qk"
	// KindVO is the value features inside each head and the output
	// projection's inputs that carry them (a Within group).
	KindVO GroupKind = "vo"
)

// GroupInfo describes a group of a spec built from the architecture.
type GroupInfo struct {
	Kind GroupKind
	// Spaces are the io/arch activation spaces the group permutes: the
	// space itself for residual and hidden groups (whose group has the
	// space's name); the query and key spaces (qk), value and output spaces
	// (vo), all four (heads).
	Spaces []string
	// Layer is the transformer or CNN block of a group inside one (-1 for
	// residual streams shared by several).
	Layer int
}

// ArchSpec is a permutation spec built from a checkpoint's architecture
// (io/arch), with what the spec alone does not say: what each group is,
// and for each use whether its module writes the group's units or reads
// them.
type ArchSpec struct {
	*Spec
	Arch  *arch.Arch
	Info  map[string]GroupInfo
	Notes []string

	// spaceAxis is the axis template of every permuted space.
	spaceAxis map[string]Axis
}

// Direction says what a module does with a group's units.
type Direction string

// The directions of a ModuleUse.
const (
	// Writes: the module produces the units (a weight's output rows, a
	// bias, an embedding, a class or position embedding added to the
	// stream).
	Writes Direction = "writes"
	// Reads: the module's input is the units (a weight's input columns).
	Reads Direction = "reads"
	// Normalises: a norm's parameters and statistics (LayerNorm, RMSNorm,
	// BatchNorm weight, bias, running mean and variance), which read and
	// write the same units.
	Normalises Direction = "normalises"
)

// ModuleUse is a use of a group with the module that owns the tensor.
type ModuleUse struct {
	Use
	Module    *arch.Module
	Param     *arch.Param
	Direction Direction
}

// ModuleUses returns the uses of a group with their modules and directions.
func (as *ArchSpec) ModuleUses(group string) []ModuleUse {
	var out []ModuleUse
	for _, u := range as.Spec.Uses(group) {
		p, ok := as.Arch.Param(u.Tensor)
		if !ok {
			continue
		}
		mu := ModuleUse{Use: u, Module: p.Module, Param: p}
		switch sp := p.Axes[u.Axis]; {
		case p.Module.IsNorm():
			mu.Direction = Normalises
		case sp == p.Module.In && sp != p.Module.Out:
			mu.Direction = Reads
		case sp == p.Module.Out:
			mu.Direction = Writes
		case p.Module.Kind == arch.Linear || p.Module.Kind == arch.Conv || p.Module.Kind == arch.Conv1D:
			// a square weight reading and writing one space (BERT's tied
			// masked-LM transform): its input axis reads
			if in := inputAxis(p.Module); u.Axis == in {
				mu.Direction = Reads
			} else {
				mu.Direction = Writes
			}
		default:
			mu.Direction = Writes
		}
		out = append(out, mu)
	}
	return out
}

// inputAxis returns the axis of a module's weight that indexes its input.
func inputAxis(m *arch.Module) int {
	if m.Kind == arch.Conv1D || m.Kind == arch.Embedding {
		return 0
	}
	return 1
}

// BuildSpec builds the permutation spec of a checkpoint from its
// architecture: one group per internal activation space io/arch declares
// (named after the space) and, per attention module, a group of heads with
// the groups of their features.
//
//   - Residual streams (a transformer's hidden size, one group over every
//     embedding, position, class and token-type embedding, every norm and
//     every writer and reader of the stream; a ResNet stage's channels,
//     shared by every block output of the stage, its downsample and the
//     BatchNorms of those channels) and hidden spaces (an MLP's units, an
//     expert's, a conv block's interior channels, a pooler's outputs) are
//     permuted unit by unit.
//   - Attention heads are permuted whole: a group "PREFIX.heads" of the
//     key/value heads, each moving with the query heads that share it
//     (grouped-query attention). Inside the heads, the value features and
//     the output projection's inputs share a permutation per head
//     ("PREFIX.vo", always legal), and so do the query and key features
//     ("PREFIX.qk") unless the model rotates them (rotary position
//     embeddings pair the features of a head: they stay in place and the
//     query and key rows move in whole-head blocks of the heads group).
//     PREFIX is the attention output space's name without its last
//     component ("layers.3.attn").
//   - Fused weights (Phi-3's qkv_proj and gate_up_proj, GPT-2's c_attn)
//     have fused axes: one segment per part, each permuted by its part's
//     group.
//   - Input and output spaces (tokens, pixels, labels, logits) and a
//     mixture of experts' router outputs are left alone (permuting experts
//     would rename tensors, not permute axes).
//
// A checkpoint of no known family, or with tensors its family does not
// describe, is refused: a spec must cover every tensor knowingly.
func BuildSpec(a *arch.Arch) (*ArchSpec, error) {
	if a.Family == "generic" {
		return nil, fmt.Errorf("no model family recognised (%s): no built-in permutation spec; write one (docs/permutation-spec.md) and pass --spec FILE.json", strings.Join(a.Notes, "; "))
	}
	var unknown []string
	for _, m := range a.Modules {
		if m.Kind == arch.Buffer || m.Role == arch.RoleBuffer {
			continue
		}
		if m.In == "" && m.Out == "" {
			unknown = append(unknown, m.Name)
		}
	}
	if len(unknown) > 0 {
		return nil, fmt.Errorf("the %s layout does not describe %s: no built-in permutation spec can be sure what they index; write one (docs/permutation-spec.md) and pass --spec FILE.json", a.Family, joinNames(unknown))
	}
	s := &Spec{Groups: map[string]int{}, Tensors: map[string][]Axis{}}
	// the axis template of every permuted space
	axisOf := map[string]Axis{}
	as := &ArchSpec{Spec: s, Arch: a, Info: map[string]GroupInfo{}, spaceAxis: axisOf}
	s.arch = as
	layerOf := map[string]int{}
	for _, m := range a.Modules {
		for _, sp := range []string{m.In, m.Out} {
			if _, seen := layerOf[sp]; !seen {
				layerOf[sp] = m.Layer
			} else if layerOf[sp] != m.Layer {
				layerOf[sp] = -1
			}
		}
	}
	for _, sp := range a.Spaces {
		if sp.Size <= 0 {
			continue
		}
		var kind GroupKind
		switch sp.Kind {
		case arch.SpaceResidual:
			kind = KindResidual
		case arch.SpaceHidden:
			kind = KindHidden
		default:
			continue
		}
		s.Groups[sp.Name] = sp.Size
		axisOf[sp.Name] = Axis{Group: sp.Name}
		layer := layerOf[sp.Name]
		if kind == KindResidual {
			layer = -1
		}
		as.Info[sp.Name] = GroupInfo{Kind: kind, Spaces: []string{sp.Name}, Layer: layer}
	}
	for _, at := range a.Attentions() {
		if err := as.addAttention(at, axisOf); err != nil {
			return nil, err
		}
	}
	for _, m := range a.Modules {
		for _, p := range m.Params {
			if m.Kind == arch.BatchNorm && (p.Name == "running_mean" || p.Name == "running_var") {
				if s.statistics == nil {
					s.statistics = map[string]bool{}
				}
				s.statistics[p.Tensor] = true
			}
			axes := make([]Axis, len(p.Axes))
			moved := false
			for i, sp := range p.Axes {
				ax, ok := fusedAxis(a, sp, axisOf)
				if ok {
					axes[i] = ax
					moved = true
				}
			}
			if !moved {
				axes = nil
			}
			s.Tensors[p.Tensor] = axes
		}
	}
	// groups no tensor uses (a space only a tied, unstored module reads)
	used := map[string]bool{}
	for _, axes := range s.Tensors {
		for _, ax := range axes {
			for _, g := range groupsOf(ax) {
				used[g] = true
			}
		}
	}
	for _, g := range s.GroupNames() {
		if !used[g] && !s.isHeads(g) {
			delete(s.Groups, g)
			delete(as.Info, g)
		}
	}
	if len(s.Groups) == 0 {
		return nil, fmt.Errorf("the %s checkpoint has no internal activation space to permute", a.Family)
	}
	shapes := map[string][]int64{}
	for _, m := range a.Modules {
		for _, p := range m.Params {
			shapes[p.Tensor] = p.Shape
		}
	}
	if err := s.Validate(shapes); err != nil {
		return nil, fmt.Errorf("the %s permutation spec built from the architecture is inconsistent (a bug): %w", a.Family, err)
	}
	return as, nil
}

// fusedAxis returns the axis template of a space: its group's, or for a
// fused space one segment per part.
func fusedAxis(a *arch.Arch, space string, axisOf map[string]Axis) (Axis, bool) {
	if space == "" {
		return Axis{}, false
	}
	if ax, ok := axisOf[space]; ok {
		return ax, true
	}
	sp, ok := a.Space(space)
	if !ok || sp.Kind != arch.SpaceFused {
		return Axis{}, false
	}
	var segs []Segment
	moved := false
	for _, part := range sp.Parts {
		ps, _ := a.Space(part)
		ax, ok := axisOf[part]
		if !ok {
			segs = append(segs, Segment{Size: ps.Size})
			continue
		}
		moved = true
		segs = append(segs, Segment{Size: ps.Size, Group: ax.Group, Block: ax.Block, Repeat: ax.Repeat})
	}
	if !moved {
		return Axis{}, false
	}
	return Axis{Segments: segs}, true
}

// addAttention adds the groups of one attention module and the axis
// templates of its four spaces.
func (as *ArchSpec) addAttention(at arch.AttentionSpaces, axisOf map[string]Axis) error {
	a := as.Arch
	q, _ := a.Space(at.Q)
	k, _ := a.Space(at.K)
	v, _ := a.Space(at.V)
	o, _ := a.Space(at.Out)
	if q == nil || k == nil || v == nil || o == nil {
		return nil
	}
	if q.Heads == 0 || k.Heads == 0 || q.HeadDim == 0 {
		as.Notes = append(as.Notes, fmt.Sprintf("layer %d: attention heads unknown (no config.json with the head counts): q, k, v and the attention output are left in place", at.Layer))
		return nil
	}
	d := q.HeadDim
	if k.HeadDim != d || v.HeadDim != d || o.HeadDim != d || v.Heads != k.Heads || o.Heads != q.Heads || q.Heads%k.Heads != 0 {
		return fmt.Errorf("layer %d: attention spaces %s %d x %d, %s %d x %d, %s %d x %d, %s %d x %d do not fit together (heads x head dim)",
			at.Layer, q.Name, q.Heads, q.HeadDim, k.Name, k.Heads, k.HeadDim, v.Name, v.Heads, v.HeadDim, o.Name, o.Heads, o.HeadDim)
	}
	kv, rep := k.Heads, q.Heads/k.Heads
	repeat := rep // as an Axis field: 0 means no repeat
	if rep == 1 {
		repeat = 0
	}
	prefix := at.Out
	if i := strings.LastIndexByte(prefix, '.'); i > 0 {
		prefix = prefix[:i]
	}
	heads, qk, vo := prefix+".heads", prefix+".qk", prefix+".vo"
	for _, g := range []string{heads, qk, vo} {
		if _, dup := as.Spec.Groups[g]; dup {
			return fmt.Errorf("layer %d: group %q named twice", at.Layer, g)
		}
	}
	s := as.Spec
	if s.Within == nil {
		s.Within = map[string]Within{}
	}
	s.Groups[heads] = kv
	as.Info[heads] = GroupInfo{Kind: KindHeads, Spaces: []string{at.Q, at.K, at.V, at.Out}, Layer: at.Layer}
	if q.Rotary || k.Rotary {
		axisOf[at.Q] = Axis{Group: heads, Block: rep * d}
		axisOf[at.K] = Axis{Group: heads, Block: d}
	} else {
		s.Groups[qk] = kv * d
		s.Within[qk] = Within{Heads: heads, Dim: d}
		as.Info[qk] = GroupInfo{Kind: KindQK, Spaces: []string{at.Q, at.K}, Layer: at.Layer}
		axisOf[at.Q] = Axis{Group: qk, Repeat: repeat}
		axisOf[at.K] = Axis{Group: qk}
	}
	s.Groups[vo] = kv * d
	s.Within[vo] = Within{Heads: heads, Dim: d}
	as.Info[vo] = GroupInfo{Kind: KindVO, Spaces: []string{at.V, at.Out}, Layer: at.Layer}
	axisOf[at.V] = Axis{Group: vo}
	axisOf[at.Out] = Axis{Group: vo, Repeat: repeat}
	return nil
}

// Architecture returns what BuildSpec knew of the architecture a spec was built
// from (a spec BuiltinSpec returned for a known family), or nil for any
// other spec (a chain of Linear layers, a JSON file).
func (s *Spec) Architecture() *ArchSpec { return s.arch }

// GroupsOfKind returns the groups of a kind, sorted.
func (as *ArchSpec) GroupsOfKind(k GroupKind) []string {
	var out []string
	for _, g := range slices.Sorted(maps.Keys(as.Info)) {
		if as.Info[g].Kind == k {
			out = append(out, g)
		}
	}
	return out
}
