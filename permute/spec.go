// Package permute aligns neural networks by the permutations of hidden units
// that leave a network's function unchanged: permutation specs (which groups
// of units act on which tensor axes; built-in specs for MLPs and the
// Llama/Mistral/Qwen2 family, and a JSON format for any other architecture),
// applying permutations to tensors and checkpoints in any dtype, weight
// matching (Git Re-Basin's coordinate descent, and MergeMany for several
// models) and activation matching from joint statistics. The exact linear
// assignment solver the matchings use is the subpackage permute/lap.
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
// A group of n units acting with Block b moves contiguous runs of b elements:
// the axis has n*b elements and unit i is elements [i*b, (i+1)*b). Block 1 is
// the common case (one hidden unit per row or column); whole attention heads
// use the head dimension (times the query heads per key/value head).
type Axis struct {
	Group string // "" when the axis is not permuted
	Block int    // elements per unit; 0 means 1
}

func (a Axis) block() int { return max(a.Block, 1) }

// Spec is a permutation spec: the groups with their sizes (units), and for
// every tensor of the model one Axis per tensor axis. A tensor listed with no
// permuted axis is explicitly left alone.
type Spec struct {
	Groups  map[string]int
	Tensors map[string][]Axis
}

// GroupNames returns the group names in sorted order.
func (s *Spec) GroupNames() []string { return slices.Sorted(maps.Keys(s.Groups)) }

// Uses returns, for a group, every (tensor, axis) it acts on, sorted by
// tensor name.
func (s *Spec) Uses(group string) []Use {
	var out []Use
	for _, t := range slices.Sorted(maps.Keys(s.Tensors)) {
		for ax, a := range s.Tensors[t] {
			if a.Group == group {
				out = append(out, Use{Tensor: t, Axis: ax, Block: a.block()})
			}
		}
	}
	return out
}

// Use is one axis of one tensor that a group acts on.
type Use struct {
	Tensor string
	Axis   int
	Block  int
}

// Validate checks the spec against a model's tensor shapes: every tensor of
// the model is covered (permuted or explicitly left alone), every tensor the
// spec names exists with the rank the spec gives, and every axis a group
// claims has the group's size times the block. The error names the tensor
// and the axis.
func (s *Spec) Validate(shapes map[string][]int64) error {
	used := map[string]bool{}
	for _, axes := range s.Tensors {
		for _, a := range axes {
			used[a.Group] = true
		}
	}
	for _, g := range s.GroupNames() {
		if n := s.Groups[g]; n <= 0 {
			return fmt.Errorf("group %q has size %d", g, n)
		}
		if !used[g] {
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
			if a.Group == "" {
				continue
			}
			n, ok := s.Groups[a.Group]
			if !ok {
				return fmt.Errorf("tensor %q axis %d: unknown group %q", name, i, a.Group)
			}
			if a.Block < 0 {
				return fmt.Errorf("tensor %q axis %d: negative block %d", name, i, a.Block)
			}
			if hi, want := bits.Mul64(uint64(n), uint64(a.block())); hi != 0 || want > math.MaxInt64 || shape[i] != int64(want) {
				return fmt.Errorf("tensor %q axis %d has %d elements, but group %q has %d units of %d (%d)", name, i, shape[i], a.Group, n, a.block(), want)
			}
		}
	}
	return nil
}

// JSON form: {"groups": {name: size}, "tensors": {name: [axis, ...] | null}}
// with each axis null, "group" or {"group": "g", "block": b}.

type axisJSON struct {
	Group string `json:"group"`
	Block int    `json:"block,omitempty"`
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
	b.WriteString("\n  },\n  \"tensors\": {")
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
			switch {
			case a.Group == "":
				b.WriteString("null")
			case a.block() == 1:
				g, _ := json.Marshal(a.Group)
				b.Write(g)
			default:
				v, _ := json.Marshal(axisJSON{Group: a.Group, Block: a.Block})
				b.Write(v)
			}
		}
		b.WriteByte(']')
	}
	b.WriteString("\n  }\n}\n")
	return b.Bytes(), nil
}

// UnmarshalJSON reads the documented file format.
func (s *Spec) UnmarshalJSON(data []byte) error {
	var raw struct {
		Groups  map[string]int               `json:"groups"`
		Tensors map[string][]json.RawMessage `json:"tensors"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		return fmt.Errorf("permutation spec: %w", err)
	}
	if raw.Groups == nil || raw.Tensors == nil {
		return fmt.Errorf("permutation spec: needs \"groups\" and \"tensors\"")
	}
	s.Groups = raw.Groups
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
			default:
				var aj axisJSON
				d := json.NewDecoder(bytes.NewReader(t))
				d.DisallowUnknownFields()
				if err := d.Decode(&aj); err != nil {
					return fmt.Errorf("permutation spec: tensor %q axis %d: want null, a group name or {\"group\": ..., \"block\": ...}: %w", name, i, err)
				}
				out[i] = Axis{Group: aj.Group, Block: aj.Block}
			}
		}
		if !slices.ContainsFunc(out, func(a Axis) bool { return a.Group != "" }) {
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
