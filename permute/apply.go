package permute

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync/atomic"

	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/tensors"
)

// Perms holds one permutation per group. For group g, Perms[g][i] is the unit
// of the original model that becomes unit i of the permuted one.
type Perms map[string][]int

// Identity returns the identity permutation of every group of s.
func Identity(s *Spec) Perms {
	p := Perms{}
	for g, n := range s.Groups {
		p[g] = make([]int, n)
		for i := range n {
			p[g][i] = i
		}
	}
	return p
}

// Clone returns a deep copy.
func (p Perms) Clone() Perms {
	out := Perms{}
	for g, v := range p {
		out[g] = slices.Clone(v)
	}
	return out
}

// Inverse returns the permutations that undo p.
func (p Perms) Inverse() Perms {
	out := Perms{}
	for g, v := range p {
		inv := make([]int, len(v))
		for i, j := range v {
			inv[j] = i
		}
		out[g] = inv
	}
	return out
}

// Check verifies that p has, for every group of s, a permutation of the
// group's size, and that the permutation of every Within group moves whole
// heads as its heads' permutation does.
func (p Perms) Check(s *Spec) error {
	for _, g := range s.GroupNames() {
		v, ok := p[g]
		if !ok {
			return fmt.Errorf("no permutation for group %q", g)
		}
		if len(v) != s.Groups[g] {
			return fmt.Errorf("group %q: permutation of %d units, the group has %d", g, len(v), s.Groups[g])
		}
		seen := make([]bool, len(v))
		for _, j := range v {
			if j < 0 || j >= len(v) || seen[j] {
				return fmt.Errorf("group %q: not a permutation (index %d)", g, j)
			}
			seen[j] = true
		}
	}
	for g := range p {
		if _, ok := s.Groups[g]; !ok {
			return fmt.Errorf("permutation for unknown group %q", g)
		}
	}
	for _, w := range slices.Sorted(maps.Keys(s.Within)) {
		wi := s.Within[w]
		heads, feats := p[wi.Heads], p[w]
		for i, j := range feats {
			if j/wi.Dim != heads[i/wi.Dim] {
				return fmt.Errorf("group %q: unit %d comes from head %d, but group %q moves head %d to %d (the features of a head move with it)", w, i, j/wi.Dim, wi.Heads, heads[i/wi.Dim], i/wi.Dim)
			}
		}
	}
	return nil
}

// RandomPerms draws a uniformly random permutation of every group of s
// that respects its structure: the features of heads (Within groups) move
// with their heads, in a random order inside each head.
func RandomPerms(r *rand.Rand, s *Spec) Perms {
	p := Perms{}
	for _, g := range s.GroupNames() {
		if _, ok := s.Within[g]; !ok {
			p[g] = r.Perm(s.Groups[g])
		}
	}
	for _, w := range slices.Sorted(maps.Keys(s.Within)) {
		wi := s.Within[w]
		v := make([]int, s.Groups[w])
		for j, h := range p[wi.Heads] {
			for d, e := range r.Perm(wi.Dim) {
				v[j*wi.Dim+d] = h*wi.Dim + e
			}
		}
		p[w] = v
	}
	return p
}

// IsIdentity reports whether every permutation is the identity.
func (p Perms) IsIdentity() bool {
	for _, v := range p {
		for i, j := range v {
			if i != j {
				return false
			}
		}
	}
	return true
}

// axisIndex returns the source position along an axis of length n of every
// output position under the permutations p of the axis's groups (nil when
// none moves anything).
func (s *Spec) axisIndex(a Axis, n int, p Perms, name string, axis int) ([]int, error) {
	if !a.Permuted() {
		return nil, nil
	}
	var idx []int
	for i, u := range s.segments(a, n) {
		g := groupsOf(a)[i]
		if g == "" {
			continue
		}
		perm, ok := p[g]
		if !ok {
			return nil, fmt.Errorf("tensor %q axis %d: no permutation for group %q", name, axis, g)
		}
		if idx == nil {
			idx = make([]int, n)
			for k := range idx {
				idx[k] = k
			}
		}
		m := u.PerUnit()
		if u.Offset+len(perm)*m > n || len(perm)%u.Dim != 0 {
			return nil, fmt.Errorf("tensor %q axis %d has %d elements, group %q's permutation covers %d", name, axis, n, g, u.Offset+len(perm)*m)
		}
		pos := u.Positions(len(perm))
		for i, j := range perm {
			for e := range m {
				idx[pos[i*m+e]] = pos[j*m+e]
			}
		}
	}
	return idx, nil
}

// Indices returns, for the named tensor of the given shape under the
// permutations p, per axis the source position of every output position
// (nil for an axis that does not move: not permuted, or permuted by
// identities), and whether any axis moves: permuted[i0, i1, ...] =
// original[idx[0][i0], idx[1][i1], ...]. It handles blocks, repeated head
// features and fused axes as [Spec.Apply] does; a merge that reads tensors
// through permutations (gathering, never materialising) uses it.
func (s *Spec) Indices(name string, shape []int64, p Perms) ([][]int, bool, error) {
	idx, moved, err := s.indices(name, shape, p)
	if err != nil || !moved {
		return nil, false, err
	}
	moved = false
	for a, ix := range idx {
		identity := true
		for k, v := range ix {
			if v != k {
				identity = false
				break
			}
		}
		if identity {
			idx[a] = nil
		}
		moved = moved || idx[a] != nil
	}
	if !moved {
		return nil, false, nil
	}
	return idx, true, nil
}

// indices is Indices.
func (s *Spec) indices(name string, shape []int64, p Perms) ([][]int, bool, error) {
	axes, ok := s.Tensors[name]
	if !ok {
		return nil, false, fmt.Errorf("tensor %q is not in the permutation spec", name)
	}
	if len(axes) == 0 {
		return nil, false, nil
	}
	if len(axes) != len(shape) {
		return nil, false, fmt.Errorf("tensor %q has %d axes, the spec gives %d", name, len(shape), len(axes))
	}
	idx := make([][]int, len(shape))
	moved := false
	for i, a := range axes {
		ix, err := s.axisIndex(a, int(shape[i]), p, name, i)
		if err != nil {
			return nil, false, err
		}
		idx[i] = ix
		moved = moved || ix != nil
	}
	return idx, moved, nil
}

// Apply returns t with the permutations applied to its axes. Elements move as
// whole bytes, so every dtype of at least 8 bits is carried through exactly;
// a tensor with no permuted axis is returned as is.
func (s *Spec) Apply(t *tensors.Tensor, p Perms) (*tensors.Tensor, error) {
	idx, moved, err := s.indices(t.Name, t.Shape, p)
	if err != nil || !moved {
		return t, err
	}
	if t.DType.Bits()%8 != 0 {
		return nil, fmt.Errorf("tensor %q: cannot permute %s elements (smaller than a byte)", t.Name, t.DType)
	}
	out := &tensors.Tensor{Name: t.Name, DType: t.DType, Shape: t.Shape, Data: make([]byte, len(t.Data))}
	gather(out.Data, t.Data, t.Shape, t.DType.Bits()/8, idx)
	return out, nil
}

// gather copies src into dst (both C-order with the given shape and element
// size) so that dst[i0, i1, ...] = src[idx0[i0], idx1[i1], ...], a nil index
// meaning identity on that axis.
func gather(dst, src []byte, shape []int64, elem int, idx [][]int) {
	rank := len(shape)
	if rank == 0 {
		copy(dst, src)
		return
	}
	strides := make([]int, rank)
	s := elem
	for i := rank - 1; i >= 0; i-- {
		strides[i] = s
		s *= int(shape[i])
	}
	// the trailing axes that no permutation touches are copied as one run
	tail := rank
	for tail > 0 && idx[tail-1] == nil {
		tail--
	}
	run := elem
	for i := tail; i < rank; i++ {
		run *= int(shape[i])
	}
	var rec func(axis, dOff, sOff int)
	rec = func(axis, dOff, sOff int) {
		if axis == tail {
			copy(dst[dOff:dOff+run], src[sOff:sOff+run])
			return
		}
		n := int(shape[axis])
		for i := range n {
			j := i
			if idx[axis] != nil {
				j = idx[axis][i]
			}
			rec(axis+1, dOff+i*strides[axis], sOff+j*strides[axis])
		}
	}
	rec(0, 0, 0)
}

// gatherRange fills dst with the bytes [off, off+len(dst)) of gather(src,
// shape, elem, idx): a window of the permuted tensor, walked with an
// odometer over the permuted axes so that no division is done per element.
func gatherRange(dst []byte, off int64, src []byte, shape []int64, elem int, idx [][]int) {
	rank := len(shape)
	if rank == 0 {
		copy(dst, src[off:])
		return
	}
	tail := rank
	for tail > 0 && idx[tail-1] == nil {
		tail--
	}
	run := int64(elem)
	for i := tail; i < rank; i++ {
		run *= shape[i]
	}
	if tail == 0 { // nothing moves
		copy(dst, src[off:])
		return
	}
	// strides (in bytes) of the permuted axes [0, tail)
	strides := make([]int64, tail)
	st := run
	for i := tail - 1; i >= 0; i-- {
		strides[i] = st
		st *= shape[i]
	}
	// the multi-index of the run holding off, and the offset within it
	r, within := off/run, off%run
	pos := make([]int64, tail)
	for i := tail - 1; i >= 0; i-- {
		pos[i] = r % shape[i]
		r /= shape[i]
	}
	srcOff := func() int64 {
		var o int64
		for i, j := range pos {
			if idx[i] != nil {
				j = int64(idx[i][j])
			}
			o += j * strides[i]
		}
		return o
	}
	n := int64(len(dst))
	var d int64
	last := tail - 1
	for d < n {
		if run == int64(elem) {
			// the innermost axis is permuted (off is a multiple of elem, so
			// within is 0): gather the rest of this row through its index
			// without recomputing the row's start per element
			k0 := pos[last]
			pos[last] = 0
			row := idx[last]
			base := srcOff() - int64(row[0])*run // the row's start
			for k := k0; k < int64(len(row)) && d < n; k++ {
				so := base + int64(row[k])*run
				copy(dst[d:d+run], src[so:so+run])
				d += run
			}
			// advance the axes before the last one
			pos[last] = shape[last] - 1
		} else {
			m := min(run-within, n-d)
			so := srcOff() + within
			copy(dst[d:d+m], src[so:so+m])
			d += m
			within += m
			if within < run {
				break // the window ends inside this run
			}
			within = 0
		}
		for i := last; i >= 0; i-- { // odometer
			pos[i]++
			if pos[i] < shape[i] {
				break
			}
			pos[i] = 0
		}
	}
}

// ApplyCheckpoint writes model m with the permutations applied to out, in
// the same layout options as opts (sharding, metadata, companion files),
// streaming one tensor at a time. The spec must cover m.
func ApplyCheckpoint(ctx context.Context, m *checkpoint.Model, s *Spec, p Perms, out string, opts checkpoint.WriteOptions) (*checkpoint.Written, error) {
	if err := s.Validate(Shapes(m)); err != nil {
		return nil, fmt.Errorf("%s: %w", m.Path, err)
	}
	if err := p.Check(s); err != nil {
		return nil, err
	}
	opts, err := m.DefaultWriteOptions(opts)
	if err != nil {
		return nil, err
	}
	// A tensor with a permuted axis is written chunk by chunk, gathered
	// from the mapped input: no whole permuted copy (1 GB for an 8B
	// model's embedding) is ever held, whatever --max-memory allows ahead.
	if opts.Chunks == nil {
		opts.Chunks = func(e safetensors.Entry) checkpoint.ChunkFunc {
			idx, moved, err := s.indices(e.Name, e.Shape, p)
			if err != nil || !moved || e.DType.Bits()%8 != 0 {
				return nil // the producer reports the error, or copies the tensor
			}
			size, err := tensors.ByteSize(e.DType, e.Shape)
			if err != nil || size == 0 {
				return nil
			}
			elem := e.DType.Bits() / 8
			chunk := int64(checkpoint.ChunkSize) / int64(elem) * int64(elem)
			var left atomic.Int64
			left.Store((size + chunk - 1) / chunk)
			return func(_ context.Context, off int64, dst []byte) error {
				t, err := m.Tensor(e.Name)
				if err != nil {
					return err
				}
				if int64(len(t.Data)) != size {
					return fmt.Errorf("%s: tensor %q: %d bytes, its shape needs %d", m.Path, e.Name, len(t.Data), size)
				}
				gatherRange(dst, off, t.Data, e.Shape, elem, idx)
				if left.Add(-1) == 0 {
					m.Release(e.Name)
				}
				return nil
			}
		}
	}
	pass := m.Passthrough()
	produce := func(ctx context.Context, e safetensors.Entry) (*tensors.Tensor, func(), error) {
		t, done, err := pass(ctx, e)
		if err != nil {
			return nil, nil, err
		}
		pt, err := s.Apply(t, p)
		if err != nil || pt == t {
			return pt, done, err
		}
		done()
		return pt, nil, nil
	}
	return checkpoint.Write(ctx, out, m.Entries(), produce, opts)
}

// Shapes returns the shapes of every tensor of a model.
func Shapes(m *checkpoint.Model) map[string][]int64 {
	out := map[string][]int64{}
	for _, n := range m.Names() {
		info, _ := m.Info(n)
		out[n] = info.Shape
	}
	return out
}

// Names returns the group names of p, sorted.
func (p Perms) Names() []string { return slices.Sorted(maps.Keys(p)) }
