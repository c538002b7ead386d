// Package permute aligns neural networks by the permutations of hidden units
// that leave a network's function unchanged: permutation specs (which groups
// of units act on which tensor axes, built from the architecture layer
// io/arch for every family it knows — ResNet, ViT, BERT, GPT-2, the Llama
// family, Phi-3, Mixtral, MLPs — and a JSON format for any other
// architecture), applying permutations to tensors and checkpoints in any
// dtype, weight matching (Git Re-Basin's coordinate descent, and MergeMany
// for several models) and activation matching from joint statistics. The
// exact linear assignment solver the matchings use is the subpackage
// permute/lap.
package permute

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"math/bits"
	"slices"
	"strings"

	"github.com/wtool/wtool/io/fsafe"
)

// Axis says which permutation group, if any, acts on one axis of a tensor.
//
// A group of n units acting with Block b moves contiguous runs of b elements:
// the axis has n*b elements and unit i is elements [i*b, (i+1)*b). Block 1 is
// the common case (one hidden unit per row or column); whole attention heads
// use the head dimension (times the query heads per key/value head).
//
// Repeat r > 1 is for a group whose units are the features of attention
// heads (see [Within]): the axis holds each head's Dim features r times in a
// row (with grouped-query attention, the output projection's input holds
// every key/value head's value features once per query head sharing it), so
// it has n*b*r elements.
//
// An axis made of several parts, each permuted by its own group (a fused
// weight: Phi-3's qkv_proj rows are q|k|v, GPT-2's c_attn columns too, a
// gate_up_proj's rows gate|up), lists them in Segments; Group, Block and
// Repeat are then unused.
type Axis struct {
	Group  string // "" when the axis is not permuted
	Block  int    // elements per unit; 0 means 1
	Repeat int    // 0 means 1
	// Segments, when not nil, split the axis into consecutive parts.
	Segments []Segment
}

// Segment is one part of a fused axis: Size elements, permuted by Group
// (with Block and Repeat as in [Axis]) or left alone (Group "").
type Segment struct {
	// Size is the number of elements; 0 means the group's units times
	// Block times Repeat (a segment with no group must give its size).
	Size   int
	Group  string
	Block  int
	Repeat int
}

func (a Axis) block() int { return max(a.Block, 1) }

// Permuted reports whether any group acts on the axis.
func (a Axis) Permuted() bool {
	if a.Group != "" {
		return true
	}
	for _, s := range a.Segments {
		if s.Group != "" {
			return true
		}
	}
	return false
}

// Within says that a group's units are the features of attention heads:
// Dim features per head, the heads being the units of group Heads. A
// permutation of such a group moves whole heads exactly as Heads' permutation
// does, and may reorder the features inside each head (head j of the result
// is head Heads[j] of the source, its features in any order). Query and key
// features share such a permutation (the attention scores are dot products
// within a head), and value features and the output projection's inputs
// share another, both tied to the same head permutation.
type Within struct {
	Heads string // the group of the heads
	Dim   int    // features per head
}

// Spec is a permutation spec: the groups with their sizes (units), for
// every tensor of the model one Axis per tensor axis (a tensor listed with
// no permuted axis is explicitly left alone), and the groups whose units
// are the features of attention heads (Within, by group name).
type Spec struct {
	Groups  map[string]int
	Tensors map[string][]Axis
	Within  map[string]Within

	// arch, for a spec BuildSpec made, is what it knows of the
	// architecture: activation matching finds the statistics of every
	// group's space with it.
	arch *ArchSpec
	// statistics are tensors that move with their units but are not
	// weights (BatchNorm running means and variances): weight matching
	// leaves them out of its objective and distances, as Git Re-Basin
	// does (they are recomputed from data after a merge: wtool reset-bn).
	statistics map[string]bool
}

// costUses is Uses without the tensors weight matching leaves out of its
// objective.
func (s *Spec) costUses(group string) []Use {
	uses := s.Uses(group)
	if len(s.statistics) == 0 {
		return uses
	}
	return slices.DeleteFunc(uses, func(u Use) bool { return s.statistics[u.Tensor] })
}

// GroupNames returns the group names in sorted order.
func (s *Spec) GroupNames() []string { return slices.Sorted(maps.Keys(s.Groups)) }

// Use is one axis (or one segment of a fused axis) of one tensor that a
// group acts on. Unit u of the group owns Block*Repeat elements along the
// axis, at the positions Positions gives.
type Use struct {
	Tensor string
	Axis   int
	Block  int
	// Segment is the index of the segment on a fused axis (0 otherwise);
	// Offset and Size are where the use's elements lie along the axis
	// (0 and the axis length when it is not fused).
	Segment      int
	Offset, Size int
	Repeat       int // >= 1
	// Dim is the features per head of a Within group (1 otherwise): with
	// Repeat > 1, a head's Dim features repeat Repeat times in a row.
	Dim int
	// Fused is set when the use is one segment of a fused axis.
	Fused bool
}

// PerUnit returns the number of elements each unit owns along the axis.
func (u Use) PerUnit() int { return u.Block * u.Repeat }

// Positions returns, for a group of n units, the positions along the axis
// of every unit's elements: unit i owns pos[i*m : (i+1)*m], m = PerUnit().
func (u Use) Positions(n int) []int {
	m := u.PerUnit()
	pos := make([]int, n*m)
	for i := range n {
		o, d := i/u.Dim, i%u.Dim
		for k := range u.Repeat {
			for t := range u.Block {
				pos[i*m+k*u.Block+t] = u.Offset + ((o*u.Repeat+k)*u.Dim+d)*u.Block + t
			}
		}
	}
	return pos
}

// trivial reports whether unit i owns elements [i*b, (i+1)*b) of the axis:
// the use covers the whole axis with contiguous units.
func (u Use) trivial(axisLen int) bool {
	return u.Offset == 0 && u.Repeat == 1 && u.Size == axisLen && !u.Fused
}

// segments returns the parts of an axis with their offsets (a non-fused
// axis is one part covering it), sizes from the groups where not given.
func (s *Spec) segments(a Axis, axisLen int) []Use {
	dim := func(g string, rep int) int {
		if w, ok := s.Within[g]; ok && rep > 1 && w.Dim > 0 {
			return w.Dim
		}
		return 1
	}
	if a.Segments == nil {
		rep := max(a.Repeat, 1)
		return []Use{{Block: a.block(), Size: axisLen, Repeat: rep, Dim: dim(a.Group, rep)}}
	}
	out := make([]Use, 0, len(a.Segments))
	off := 0
	for i, sg := range a.Segments {
		rep := max(sg.Repeat, 1)
		u := Use{Segment: i, Offset: off, Block: max(sg.Block, 1), Repeat: rep, Dim: dim(sg.Group, rep), Fused: true, Size: sg.Size}
		if u.Size == 0 && sg.Group != "" {
			u.Size = s.Groups[sg.Group] * u.Block * rep
		}
		off += u.Size
		out = append(out, u)
	}
	return out
}

// groupsOf returns the group of each part of an axis, in segment order.
func groupsOf(a Axis) []string {
	if a.Segments == nil {
		return []string{a.Group}
	}
	out := make([]string, len(a.Segments))
	for i, sg := range a.Segments {
		out[i] = sg.Group
	}
	return out
}

// Uses returns, for a group, every (tensor, axis[, segment]) it acts on,
// sorted by tensor name, axis and segment. The axis lengths are taken
// from the spec (a segment's size, or its group's size).
func (s *Spec) Uses(group string) []Use {
	var out []Use
	for _, t := range slices.Sorted(maps.Keys(s.Tensors)) {
		for ax, a := range s.Tensors[t] {
			gs := groupsOf(a)
			if !slices.Contains(gs, group) {
				continue
			}
			length := 0
			if a.Segments == nil {
				length = s.Groups[group] * a.block() * max(a.Repeat, 1)
			}
			for i, u := range s.segments(a, length) {
				if gs[i] == group {
					u.Tensor, u.Axis = t, ax
					out = append(out, u)
				}
			}
		}
	}
	return out
}

// HeadGroups returns, for a group of heads, the Within groups of their
// features (sorted), or nil.
func (s *Spec) HeadGroups(heads string) []string {
	var out []string
	for _, w := range slices.Sorted(maps.Keys(s.Within)) {
		if s.Within[w].Heads == heads {
			out = append(out, w)
		}
	}
	return out
}

// isHeads reports whether a group is the Heads of some Within group.
func (s *Spec) isHeads(g string) bool {
	for _, w := range s.Within {
		if w.Heads == g {
			return true
		}
	}
	return false
}

// Validate checks the spec against a model's tensor shapes: every tensor of
// the model is covered (permuted or explicitly left alone), every tensor the
// spec names exists with the rank the spec gives, every axis a group claims
// has the group's size times the block (and repeat), the segments of a
// fused axis add up to its length, and every Within group has its heads'
// number of units times Dim. The error names the tensor and the axis.
func (s *Spec) Validate(shapes map[string][]int64) error {
	used := map[string]bool{}
	for _, axes := range s.Tensors {
		for _, a := range axes {
			for _, g := range groupsOf(a) {
				used[g] = true
			}
		}
	}
	for _, w := range slices.Sorted(maps.Keys(s.Within)) {
		wi := s.Within[w]
		n, ok := s.Groups[w]
		if !ok {
			return fmt.Errorf("within: %q is not a group", w)
		}
		h, ok := s.Groups[wi.Heads]
		if !ok {
			return fmt.Errorf("within: group %q: its heads %q are not a group", w, wi.Heads)
		}
		if _, nested := s.Within[wi.Heads]; nested {
			return fmt.Errorf("within: group %q: its heads %q are themselves features of heads", w, wi.Heads)
		}
		if hi, prod := bits.Mul64(uint64(h), uint64(max(wi.Dim, 0))); wi.Dim <= 0 || hi != 0 || prod != uint64(n) {
			return fmt.Errorf("within: group %q has %d units, not %d heads (group %q) of %d features", w, n, h, wi.Heads, wi.Dim)
		}
	}
	for _, g := range s.GroupNames() {
		if n := s.Groups[g]; n <= 0 {
			return fmt.Errorf("group %q has size %d", g, n)
		}
		if !used[g] && !s.isHeads(g) {
			return fmt.Errorf("group %q permutes no tensor axis (remove it, or name the axes it acts on)", g)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(shapes)) {
		if _, ok := s.Tensors[name]; !ok {
			return fmt.Errorf("tensor %q is not covered by the permutation spec (list it, with null axes to leave it alone)", name)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(s.Tensors)) {
		axes := s.Tensors[name]
		shape, ok := shapes[name]
		if !ok {
			return fmt.Errorf("the permutation spec names tensor %q, which the model does not have", name)
		}
		if len(axes) == 0 {
			continue
		}
		if len(axes) != len(shape) {
			return fmt.Errorf("tensor %q has %d axes %v, the spec gives %d", name, len(shape), shape, len(axes))
		}
		for i, a := range axes {
			if err := s.validateAxis(name, i, a, shape[i]); err != nil {
				return err
			}
		}
	}
	return nil
}

// validateAxis checks one axis of length length.
func (s *Spec) validateAxis(name string, i int, a Axis, length int64) error {
	part := func(what, g string, block, repeat int, size int64) (int64, error) {
		if block < 0 || repeat < 0 {
			return 0, fmt.Errorf("tensor %q axis %d%s: negative block or repeat", name, i, what)
		}
		if g == "" {
			if block > 1 || repeat > 1 {
				return 0, fmt.Errorf("tensor %q axis %d%s: a block or repeat without a group", name, i, what)
			}
			return size, nil
		}
		n, ok := s.Groups[g]
		if !ok {
			return 0, fmt.Errorf("tensor %q axis %d%s: unknown group %q", name, i, what, g)
		}
		if _, within := s.Within[g]; repeat > 1 && !within {
			return 0, fmt.Errorf("tensor %q axis %d%s: repeat %d needs a group of head features (within), %q is not", name, i, what, repeat, g)
		}
		hi, w := bits.Mul64(uint64(n), uint64(max(block, 1)))
		hi2, w2 := bits.Mul64(w, uint64(max(repeat, 1)))
		if hi != 0 || hi2 != 0 || w2 > math.MaxInt64 || (size >= 0 && size != int64(w2)) {
			return 0, fmt.Errorf("tensor %q axis %d%s has %d elements, but group %q has %d units of %d (%d)", name, i, what, size, g, n, max(block, 1)*max(repeat, 1), w2)
		}
		return int64(w2), nil
	}
	if a.Segments == nil {
		_, err := part("", a.Group, a.Block, a.Repeat, length)
		return err
	}
	if a.Group != "" || a.Block != 0 || a.Repeat != 0 {
		return fmt.Errorf("tensor %q axis %d: a fused axis takes its groups from its segments", name, i)
	}
	if len(a.Segments) == 0 {
		return fmt.Errorf("tensor %q axis %d: a fused axis with no segments", name, i)
	}
	total := int64(0)
	for k, sg := range a.Segments {
		what := fmt.Sprintf(" segment %d", k)
		size := int64(sg.Size)
		if sg.Size < 0 {
			return fmt.Errorf("tensor %q axis %d%s: negative size %d", name, i, what, sg.Size)
		}
		if sg.Size == 0 {
			if sg.Group == "" {
				return fmt.Errorf("tensor %q axis %d%s: a segment with no group needs a size", name, i, what)
			}
			size = -1
		}
		n, err := part(what, sg.Group, sg.Block, sg.Repeat, size)
		if err != nil {
			return err
		}
		if total += n; total > length {
			break
		}
	}
	if total != length {
		return fmt.Errorf("tensor %q axis %d has %d elements, its segments add up to %d", name, i, length, total)
	}
	return nil
}

// JSON form: {"groups": {name: size}, "within": {group: {"heads": g,
// "dim": d}}, "tensors": {name: [axis, ...] | null}} with each axis null,
// "group", {"group": "g", "block": b, "repeat": r} or, fused, a list of
// segments, each "group" or {"group": "g", "block": b, "repeat": r, "size":
// s}.

type axisJSON struct {
	Group  string `json:"group,omitempty"`
	Block  int    `json:"block,omitempty"`
	Repeat int    `json:"repeat,omitempty"`
	Size   int    `json:"size,omitempty"`
}

type withinJSON struct {
	Heads string `json:"heads"`
	Dim   int    `json:"dim"`
}

func writePart(b *bytes.Buffer, g string, block, repeat, size int, fused bool) {
	switch {
	case g == "" && !fused:
		b.WriteString("null")
	case g != "" && max(block, 1) == 1 && max(repeat, 1) == 1 && size == 0:
		v, _ := json.Marshal(g)
		b.Write(v)
	default:
		v, _ := json.Marshal(axisJSON{Group: g, Block: block, Repeat: repeat, Size: size})
		b.Write(v)
	}
}

// MarshalJSON writes the spec in the documented file format.
func (s *Spec) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteString("{\n  \"groups\": {")
	for i, g := range s.GroupNames() {
		if i > 0 {
			b.WriteByte(',')
		}
		name, _ := json.Marshal(g)
		fmt.Fprintf(&b, "\n    %s: %d", name, s.Groups[g])
	}
	b.WriteString("\n  },")
	if len(s.Within) > 0 {
		b.WriteString("\n  \"within\": {")
		for i, w := range slices.Sorted(maps.Keys(s.Within)) {
			if i > 0 {
				b.WriteByte(',')
			}
			name, _ := json.Marshal(w)
			v, _ := json.Marshal(withinJSON{Heads: s.Within[w].Heads, Dim: s.Within[w].Dim})
			fmt.Fprintf(&b, "\n    %s: %s", name, v)
		}
		b.WriteString("\n  },")
	}
	b.WriteString("\n  \"tensors\": {")
	for i, t := range slices.Sorted(maps.Keys(s.Tensors)) {
		if i > 0 {
			b.WriteByte(',')
		}
		name, _ := json.Marshal(t)
		fmt.Fprintf(&b, "\n    %s: ", name)
		axes := s.Tensors[t]
		if len(axes) == 0 {
			b.WriteString("null")
			continue
		}
		b.WriteByte('[')
		for j, a := range axes {
			if j > 0 {
				b.WriteString(", ")
			}
			if a.Segments == nil {
				writePart(&b, a.Group, a.Block, a.Repeat, 0, false)
				continue
			}
			b.WriteByte('[')
			for k, sg := range a.Segments {
				if k > 0 {
					b.WriteString(", ")
				}
				size := sg.Size
				if sg.Group != "" && size == s.Groups[sg.Group]*max(sg.Block, 1)*max(sg.Repeat, 1) {
					size = 0 // implied
				}
				writePart(&b, sg.Group, sg.Block, sg.Repeat, size, true)
			}
			b.WriteByte(']')
		}
		b.WriteByte(']')
	}
	b.WriteString("\n  }\n}\n")
	return b.Bytes(), nil
}

// decodeStrict decodes one JSON value, refusing unknown keys.
func decodeStrict(t []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(t))
	d.DisallowUnknownFields()
	return d.Decode(v)
}

// UnmarshalJSON reads the documented file format.
func (s *Spec) UnmarshalJSON(data []byte) error {
	var raw struct {
		Groups  map[string]int               `json:"groups"`
		Within  map[string]withinJSON        `json:"within"`
		Tensors map[string][]json.RawMessage `json:"tensors"`
	}
	if err := decodeStrict(data, &raw); err != nil {
		return fmt.Errorf("permutation spec: %w", err)
	}
	if raw.Groups == nil || raw.Tensors == nil {
		return fmt.Errorf("permutation spec: needs \"groups\" and \"tensors\"")
	}
	s.Groups = raw.Groups
	s.Within = nil
	for w, v := range raw.Within {
		if s.Within == nil {
			s.Within = map[string]Within{}
		}
		s.Within[w] = Within{Heads: v.Heads, Dim: v.Dim}
	}
	s.Tensors = make(map[string][]Axis, len(raw.Tensors))
	for name, axes := range raw.Tensors {
		out := make([]Axis, len(axes))
		for i, a := range axes {
			t := bytes.TrimSpace(a)
			switch {
			case string(t) == "null":
			case len(t) > 0 && t[0] == '"':
				if err := json.Unmarshal(t, &out[i].Group); err != nil {
					return fmt.Errorf("permutation spec: tensor %q axis %d: %w", name, i, err)
				}
			case len(t) > 0 && t[0] == '[':
				var segs []json.RawMessage
				if err := json.Unmarshal(t, &segs); err != nil {
					return fmt.Errorf("permutation spec: tensor %q axis %d: %w", name, i, err)
				}
				out[i].Segments = make([]Segment, len(segs))
				for k, sr := range segs {
					st := bytes.TrimSpace(sr)
					if len(st) > 0 && st[0] == '"' {
						if err := json.Unmarshal(st, &out[i].Segments[k].Group); err != nil {
							return fmt.Errorf("permutation spec: tensor %q axis %d segment %d: %w", name, i, k, err)
						}
						continue
					}
					var aj axisJSON
					if err := decodeStrict(st, &aj); err != nil {
						return fmt.Errorf("permutation spec: tensor %q axis %d segment %d: want a group name or {\"group\": ..., \"block\": ..., \"repeat\": ..., \"size\": ...}: %w", name, i, k, err)
					}
					out[i].Segments[k] = Segment{Size: aj.Size, Group: aj.Group, Block: aj.Block, Repeat: aj.Repeat}
				}
			default:
				var aj axisJSON
				if err := decodeStrict(t, &aj); err != nil {
					return fmt.Errorf("permutation spec: tensor %q axis %d: want null, a group name, {\"group\": ..., \"block\": ..., \"repeat\": ...} or a list of segments: %w", name, i, err)
				}
				if aj.Size != 0 {
					return fmt.Errorf("permutation spec: tensor %q axis %d: \"size\" is for the segments of a fused axis", name, i)
				}
				out[i] = Axis{Group: aj.Group, Block: aj.Block, Repeat: aj.Repeat}
			}
		}
		if !slices.ContainsFunc(out, Axis.Permuted) {
			out = nil
		}
		s.Tensors[name] = out
	}
	return nil
}

// ReadSpec reads a JSON permutation spec file.
func ReadSpec(path string) (*Spec, error) {
	b, err := fsafe.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s := &Spec{}
	if err := json.Unmarshal(b, s); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// String summarises the spec: groups and their sizes.
func (s *Spec) String() string {
	var parts []string
	for _, g := range s.GroupNames() {
		parts = append(parts, fmt.Sprintf("%s(%d)", g, s.Groups[g]))
	}
	return fmt.Sprintf("%d groups over %d tensors: %s", len(s.Groups), len(s.Tensors), strings.Join(parts, " "))
}
