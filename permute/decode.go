package permute

import (
	"encoding/binary"
	"fmt"
	"math"
	"unsafe"

	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/tensors"
)

// This file turns one axis of one tensor, as a permutation group sees it,
// into rows of a matrix, decoding blocks of the stored bytes on the fly.
//
// A group of n units acting on axis ax of a tensor with block b sees the
// tensor as P x (n*b) x Q, where P and Q are the products of the axes
// before and after ax: unit i owns the elements whose index along ax is in
// [i*b, (i+1)*b), and its row holds them in the order (p, bo, q), of length
// K = P*b*Q. Two models' rows of the same group give the group's cost
// matrix, cost[i][j] = <row i of A, row j of B>, and cost matrices are built
// K-block by K-block, so that memory does not depend on the tensor's size.

// geom is the matrix view of a (tensor, axis) use.
type geom struct {
	n, b int // units, and elements per unit along the axis
	p, q int // products of the axes before and after the axis
	a    int // the axis's length (n*b unless the use is a segment or repeats)
}

func (g geom) k() int { return g.p * g.b * g.q }

// minor reports whether the units are the tensor's innermost index (block
// 1, last axis): then a row of the stored tensor holds one element of every
// unit, and rows are decoded into a tile and transposed.
func (g geom) minor() bool { return g.b == 1 && g.q == 1 }

// geomOf returns the geometry of use u of a group of n units on a tensor
// of the given shape.
func geomOf(shape []int64, u Use, n int) geom {
	axis := u.Axis
	g := geom{n: n, b: u.PerUnit(), p: 1, q: 1, a: int(shape[axis])}
	if !u.Fused && u.Repeat <= 1 {
		g.b = g.a / n
	}
	for i := range axis {
		g.p *= int(shape[i])
	}
	for i := axis + 1; i < len(shape); i++ {
		g.q *= int(shape[i])
	}
	return g
}

// term is one model's tensor with the permutations that apply to it: for
// every flat index before the axis (pre) and after it (post), the stored
// index it comes from, and for element e of unit i (of the use's units) the
// stored position along the axis, ax[i*b+e]; nil is the identity (unit i's
// elements at [i*b, (i+1)*b)).
type term struct {
	t              rawTensor
	pre, ax, post  []int
	pre0, ax0, po0 bool // the maps are nil
}

// newTerm builds the term of tensor t for use u: with p nil no permutation
// applies; otherwise p's permutation of every permuted axis, except the
// use's own part of its axis when free is set (the side whose units are
// being assigned). A use that is a segment of a fused axis, or whose units
// repeat, reads its elements through a position table even unpermuted.
func (s *Spec) newTerm(t rawTensor, u Use, p Perms, free bool) (term, error) {
	tm := term{t: t}
	axis := u.Axis
	if axis >= len(t.shape) {
		return tm, fmt.Errorf("tensor %q has %d axes, the use is of axis %d", t.name, len(t.shape), axis)
	}
	var idx [][]int
	if p != nil {
		var err error
		if idx, _, err = s.indices(t.name, t.shape, p); err != nil {
			return tm, err
		}
	}
	var ax []int
	if idx != nil && !free {
		ax = idx[axis]
	}
	if u.Fused || u.Repeat > 1 {
		n := u.Size / u.PerUnit()
		pos := u.Positions(n)
		if len(pos) > 0 && (u.Offset+u.Size > int(t.shape[axis]) || u.Size != n*u.PerUnit()) {
			return tm, fmt.Errorf("tensor %q axis %d has %d elements; the use covers [%d, %d)", t.name, axis, t.shape[axis], u.Offset, u.Offset+u.Size)
		}
		if ax != nil {
			for k, x := range pos {
				pos[k] = ax[x]
			}
		}
		ax = pos
	}
	tm.ax = ax
	if idx != nil {
		tm.pre = flatIndex(t.shape, idx, 0, axis)
		tm.post = flatIndex(t.shape, idx, axis+1, len(t.shape))
	}
	return tm, nil
}

// flatIndex returns, for the axes [lo, hi) of a C-order tensor, the stored
// flat index (within those axes) of every flat output index, or nil if no
// axis in the range is permuted.
func flatIndex(shape []int64, idx [][]int, lo, hi int) []int {
	moved := false
	for a := lo; a < hi; a++ {
		moved = moved || idx[a] != nil
	}
	if !moved {
		return nil
	}
	out := []int{0}
	for a := lo; a < hi; a++ {
		d := int(shape[a])
		next := make([]int, len(out)*d)
		for o, base := range out {
			for i := range d {
				j := i
				if idx[a] != nil {
					j = idx[a][i]
				}
				next[o*d+i] = base*d + j
			}
		}
		out = next
	}
	return out
}

// guard runs fn, which reads the tensor's bytes, so that a fault on a
// truncated mapped file becomes an error naming the file and tensor.
func guard(t rawTensor, fn func() error) error {
	if t.file == "" {
		return fn()
	}
	return safetensors.Guard(t.file, t.name, fn)
}

// tileRows is the number of stored rows decoded at once into a tile before
// being transposed into unit rows (minor layout).
const tileRows = 16

// decode writes (add false) or adds (add true) the values of tm for the
// units [u0, u1) and the row positions [k0, k1) into dst: element (i, k) at
// dst[(i-u0)*ld + k-k0]. tile is scratch of at least tileRows*(u1-u0)
// elements (minor layout only). It reports whether a value was not finite.
// The caller runs it inside guard.
func decode(dst []float32, ld int, tm *term, g geom, u0, u1, k0, k1 int, add bool, tile []float32) bool {
	bad := false
	t := &tm.t
	a := g.a
	if g.minor() { // k is p; a stored row holds one element of every unit
		w := u1 - u0
		var ax []int
		if tm.ax != nil {
			ax = tm.ax[u0:u1]
		}
		for pt := k0; pt < k1; pt += tileRows {
			te := min(pt+tileRows, k1)
			for p := pt; p < te; p++ {
				sp := p
				if tm.pre != nil {
					sp = tm.pre[p]
				}
				base := sp * a
				if ax == nil {
					base += u0
				}
				bad = decodeRun(tile[(p-pt)*w:(p-pt+1)*w], t.data, t.dtype, base, ax, false) || bad
			}
			rows := te - pt
			for i := range w {
				d := dst[i*ld+pt-k0 : i*ld+te-k0]
				d = d[:rows]
				if add {
					for r := range d {
						d[r] += tile[r*w+i]
					}
				} else {
					for r := range d {
						d[r] = tile[r*w+i]
					}
				}
			}
		}
		return bad
	}
	for i := u0; i < u1; i++ {
		row := dst[(i-u0)*ld : (i-u0)*ld+k1-k0]
		for k := k0; k < k1; {
			base, q := tm.runAt(g, i, k)
			n := min(g.q-q, k1-k)
			var idx []int
			if tm.post != nil {
				idx = tm.post[q : q+n]
			} else {
				base += q
			}
			bad = decodeRun(row[k-k0:k-k0+n], t.data, t.dtype, base, idx, add) || bad
			k += n
		}
	}
	return bad
}

// runAt locates unit i's K position k: the positions [k, k+g.q-q) are
// stored together, as the elements base+q+x, or base+post[q+x] when the
// term has a post map. It is small enough to be inlined in the decoding
// loops.
func (tm *term) runAt(g geom, i, k int) (base, q int) {
	p, r := k/(g.b*g.q), k%(g.b*g.q)
	if tm.pre != nil {
		p = tm.pre[p]
	}
	u := i*g.b + r/g.q
	if tm.ax != nil {
		u = tm.ax[u]
	}
	return (p*g.a + u) * g.q, r % g.q
}

// decodeRun decodes len(dst) elements into dst (or adds them): element x
// is stored at index base+x, or base+idx[x] when idx is not nil. It
// reports whether a value was not finite (as a float32).
func decodeRun(dst []float32, src []byte, dt tensors.DType, base int, idx []int, add bool) bool {
	switch dt {
	case tensors.BF16:
		if v := u16s(src); v != nil {
			return runBF16(dst, v, base, idx, add)
		}
	case tensors.F32:
		if v := u32s(src); v != nil {
			return runF32(dst, v, base, idx, add)
		}
	}
	// other dtypes, and unaligned data
	m := uint32(0x7f800000)
	le := binary.LittleEndian
	for x := range dst {
		e := base + x
		if idx != nil {
			e = base + idx[x]
		}
		var f float32
		switch dt {
		case tensors.BF16:
			f = math.Float32frombits(uint32(le.Uint16(src[2*e:])) << 16)
		case tensors.F32:
			f = math.Float32frombits(le.Uint32(src[4*e:]))
		case tensors.F16:
			f = tensors.F16ToFloat32(le.Uint16(src[2*e:]))
		case tensors.F64:
			f = float32(math.Float64frombits(le.Uint64(src[8*e:])))
		}
		m = min(m, ^math.Float32bits(f)&0x7f800000)
		if add {
			dst[x] += f
		} else {
			dst[x] = f
		}
	}
	return m == 0
}

func runBF16(dst []float32, v []uint16, base int, idx []int, add bool) bool {
	// e&0x7f80 == 0x7f80 exactly when a value is Inf or NaN; min keeps the
	// smallest complement, which is 0 iff some value was not finite.
	m := uint16(0x7f80)
	if idx == nil {
		s := v[base : base+len(dst)]
		if add {
			for x, e := range s {
				m = min(m, ^e&0x7f80)
				dst[x] += math.Float32frombits(uint32(e) << 16)
			}
		} else {
			for x, e := range s {
				m = min(m, ^e&0x7f80)
				dst[x] = math.Float32frombits(uint32(e) << 16)
			}
		}
		return m == 0
	}
	idx = idx[:len(dst)]
	for x, j := range idx {
		e := v[base+j]
		m = min(m, ^e&0x7f80)
		f := math.Float32frombits(uint32(e) << 16)
		if add {
			dst[x] += f
		} else {
			dst[x] = f
		}
	}
	return m == 0
}

func runF32(dst []float32, v []uint32, base int, idx []int, add bool) bool {
	m := uint32(0x7f800000)
	if idx == nil {
		s := v[base : base+len(dst)]
		if add {
			for x, e := range s {
				m = min(m, ^e&0x7f800000)
				dst[x] += math.Float32frombits(e)
			}
		} else {
			for x, e := range s {
				m = min(m, ^e&0x7f800000)
				dst[x] = math.Float32frombits(e)
			}
		}
		return m == 0
	}
	idx = idx[:len(dst)]
	for x, j := range idx {
		e := v[base+j]
		m = min(m, ^e&0x7f800000)
		f := math.Float32frombits(e)
		if add {
			dst[x] += f
		} else {
			dst[x] = f
		}
	}
	return m == 0
}

// u16s and u32s view little-endian bytes as integers when they are suitably
// aligned, else nil.
func u16s(b []byte) []uint16 {
	if len(b) < 2 || uintptr(unsafe.Pointer(&b[0]))%2 != 0 {
		return nil
	}
	return unsafe.Slice((*uint16)(unsafe.Pointer(&b[0])), len(b)/2)
}

func u32s(b []byte) []uint32 {
	if len(b) < 4 || uintptr(unsafe.Pointer(&b[0]))%4 != 0 {
		return nil
	}
	return unsafe.Slice((*uint32)(unsafe.Pointer(&b[0])), len(b)/4)
}

// nonFinite returns an error naming the file, the tensor and the first
// value that is not finite (as a float32) of a tensor found to have one.
func nonFinite(t rawTensor, what string) error {
	where := fmt.Sprintf("tensor %q", t.name)
	if t.file != "" {
		where = fmt.Sprintf("%s: tensor %q", t.file, t.name)
	} else if what != "" {
		where = fmt.Sprintf("%s: tensor %q", what, t.name)
	}
	n, _ := tensors.NumElements(t.shape)
	one := make([]float32, 1)
	var at int64 = -1
	_ = guard(t, func() error {
		for e := range int(n) {
			if decodeRun(one, t.data, t.dtype, e, nil, false) {
				at = int64(e)
				return nil
			}
		}
		return nil
	})
	if at < 0 {
		return fmt.Errorf("%s has a value that is not finite as a float32; weight matching needs finite weights", where)
	}
	return fmt.Errorf("%s has a value that is not finite as a float32 (%v at flat index %d, shape %v); weight matching needs finite weights", where, one[0], at, t.shape)
}
