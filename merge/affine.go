package merge

import (
	"fmt"
	"math"
	"runtime"
	"unsafe"

	"github.com/wtool/wtool/internal/fault"
	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/tensors"
)

// affine returns, for methods whose result is an affine combination of the
// inputs (linear; task arithmetic without sparsification), the coefficient
// of every model and, last, of the base: out = sum_i c_i x_i + c_base base.
// Those tensors are merged by a streaming kernel that never holds more than
// the output and a few small buffers.
func (j *job) affine(name string) ([]float64, bool) {
	p := j.p
	if j.perms != nil || (p.Method != "linear" && p.Method != "task-arithmetic") {
		return nil, false
	}
	depth := Depth(name, j.numLayers)
	var ws []float64
	var wsum float64
	for i, mi := range p.Models {
		w, ok := mi.Weight.Eval(name, depth)
		if !ok {
			w = 1
		}
		if p.Method == "task-arithmetic" && j.models[i] == j.base {
			w = 0 // the base is not one of the task vectors
		}
		ws = append(ws, w)
		wsum += w
	}
	coef := make([]float64, len(ws)+1)
	switch p.Method {
	case "linear":
		scale := 1.0
		if p.normalize() {
			if math.Abs(wsum) < 1e-12 {
				return nil, false // let the general path report the error
			}
			scale = 1 / wsum
		}
		for i, w := range ws {
			coef[i] = w * scale
		}
	case "task-arithmetic":
		lambda, ok := p.Lambda.Eval(name, depth)
		if !ok {
			lambda = 1
		}
		div := 1.0
		if p.normalize() && math.Abs(wsum) >= 1e-8 {
			div = wsum
		}
		coef[len(ws)] = 1
		for i, w := range ws {
			c := lambda * w / div
			coef[i] = c
			coef[len(ws)] -= c
		}
	}
	return coef, true
}

const affineChunk = 1 << 15

type input struct {
	m    *checkpoint.Model
	data []byte
	dt   tensors.DType
	c    float64
}

type fusedResult struct{ err string }

// fuseBF16 is the hot path of the common merge: two BF16 inputs, a BF16
// output, one pass with no intermediate buffers. It returns nil when the case
// does not apply.
func fuseBF16(ins []input, out tensors.DType, dst []byte, lo, hi int, allowNonFinite bool) *fusedResult {
	if len(ins) != 2 || out != tensors.BF16 || ins[0].dt != tensors.BF16 || ins[1].dt != tensors.BF16 {
		return nil
	}
	x := u16(ins[0].data[2*lo : 2*hi])
	y := u16(ins[1].data[2*lo : 2*hi])
	d := u16(dst[2*lo : 2*hi])
	if x == nil || y == nil || d == nil {
		return nil // unaligned data: the general path copies it
	}
	y, d = y[:len(x)], d[:len(x)]
	cx, cy := float32(ins[0].c), float32(ins[1].c)
	start := 0
	if n, bad := lerpBF16(d, x, y, cx, cy); !bad {
		start = n // the vector kernel did these; the scalar loop does the rest
	}
	for k := start; k < len(x); k++ {
		hx := x[k]
		hy := y[k]
		if hx&0x7f80 == 0x7f80 || hy&0x7f80 == 0x7f80 {
			m := ins[0].m
			if hx&0x7f80 != 0x7f80 {
				m = ins[1].m
			}
			return &fusedResult{fmt.Sprintf("%s: a non-finite value at index %d", m.Path, lo+k)}
		}
		v := cx*math.Float32frombits(uint32(hx)<<16) + cy*math.Float32frombits(uint32(hy)<<16)
		u := math.Float32bits(v)
		if u&0x7f800000 == 0x7f800000 && !allowNonFinite {
			return &fusedResult{fmt.Sprintf("the merge produced %g at index %d (use --allow-nonfinite to write it anyway)", v, lo+k)}
		}
		d[k] = tensors.BF16FromFloat32(v)
	}
	return &fusedResult{}
}

// produceAffine merges one tensor chunk by chunk: decode a chunk of every
// input, combine, check, encode into the output.
func (j *job) produceAffine(e safetensors.Entry, coef []float64) (*tensors.Tensor, func(), error) {
	var ins []input
	add := func(m *checkpoint.Model, c float64) error {
		if c == 0 {
			return nil
		}
		t, err := m.Tensor(e.Name)
		if err != nil {
			return err
		}
		ins = append(ins, input{m, t.Data, t.DType, c})
		return nil
	}
	for i, m := range j.models {
		if err := add(m, coef[i]); err != nil {
			return nil, nil, err
		}
	}
	if c := coef[len(j.models)]; c != 0 {
		if err := add(j.base, c); err != nil {
			return nil, nil, err
		}
	}
	size, err := tensors.ByteSize(e.DType, e.Shape)
	if err != nil {
		return nil, nil, err
	}
	// every byte is overwritten below: reuse buffers instead of zeroing new ones
	buf := tensors.Buffers.Get(int(size))
	out := &tensors.Tensor{Name: e.Name, DType: e.DType, Shape: e.Shape, Data: buf}
	for _, in := range ins {
		in.m.Prefetch(e.Name)
	}
	n := int(out.NumElements())
	chunks := (n + affineChunk - 1) / affineChunk
	workers := min(runtime.GOMAXPROCS(0), max(chunks, 1))
	// A 16-bit output keeps 8 or 11 significant bits: float32 sums are
	// exact enough and twice as fast; wider outputs accumulate in float64.
	narrow := e.DType == tensors.BF16 || e.DType == tensors.F16
	var wg fault.Group // the inputs are mapped: a fault is re-raised on the caller
	errs := make([]error, workers)
	for w := range workers {
		wg.Go(func() {
			acc64 := make([]float64, affineChunk)
			acc32 := make([]float32, affineChunk)
			buf := make([]float32, affineChunk)
			for c := w; c < chunks; c += workers {
				lo, hi := c*affineChunk, min((c+1)*affineChunk, n)
				if fused := fuseBF16(ins, e.DType, out.Data, lo, hi, j.p.AllowNonFinite); fused != nil {
					if fused.err != "" {
						errs[w] = fmt.Errorf("%s", fused.err)
						return
					}
					continue
				}
				a32, a64, b := acc32[:hi-lo], acc64[:hi-lo], buf[:hi-lo]
				clear(a32)
				clear(a64)
				for _, in := range ins {
					bw := in.dt.Bits() / 8
					src := in.data[lo*bw : hi*bw]
					var bad int
					switch {
					case narrow && in.dt == tensors.BF16:
						bad = axpyBF16(a32, float32(in.c), src)
					default:
						if err := tensors.DecodeFloat32(b, src, in.dt); err != nil {
							errs[w] = fmt.Errorf("%s: tensor %q: %w", in.m.Path, e.Name, err)
							return
						}
						if narrow {
							bad = axpy32(a32, float32(in.c), b)
						} else {
							bad = axpy64(a64, in.c, b)
						}
					}
					if bad >= 0 {
						errs[w] = fmt.Errorf("%s: tensor %q has a non-finite value at index %d", in.m.Path, e.Name, lo+bad)
						return
					}
				}
				if !narrow {
					for k, x := range a64 {
						a32[k] = float32(x)
					}
				}
				if !j.p.AllowNonFinite {
					for k, x := range a32 {
						if !finite(x) {
							errs[w] = fmt.Errorf("tensor %q: the merge produced %g at index %d (use --allow-nonfinite to write it anyway)", e.Name, x, lo+k)
							return
						}
					}
				}
				ob := out.DType.Bits() / 8
				if err := tensors.EncodeFloat32(out.Data[lo*ob:hi*ob], a32, out.DType); err != nil {
					errs[w] = err
					return
				}
			}
		})
	}
	wg.Wait()
	for _, in := range ins {
		in.m.Release(e.Name)
	}
	for _, err := range errs {
		if err != nil {
			tensors.Buffers.Put(buf)
			return nil, nil, err
		}
	}
	return out, func() { tensors.Buffers.Put(buf) }, nil
}

// axpyBF16 adds c times the bfloat16 values in src to a, returning the index
// of the first non-finite input or -1.
func axpyBF16(a []float32, c float32, src []byte) int {
	src = src[:2*len(a)]
	bad := -1
	for k := range a {
		h := uint32(src[2*k]) | uint32(src[2*k+1])<<8
		if h&0x7f80 == 0x7f80 && bad < 0 {
			bad = k
		}
		a[k] += c * math.Float32frombits(h<<16)
	}
	return bad
}

func axpy32(a []float32, c float32, x []float32) int {
	x = x[:len(a)]
	bad := -1
	for k, v := range x {
		if !finite(v) && bad < 0 {
			bad = k
		}
		a[k] += c * v
	}
	return bad
}

func axpy64(a []float64, c float64, x []float32) int {
	x = x[:len(a)]
	bad := -1
	for k, v := range x {
		if !finite(v) && bad < 0 {
			bad = k
		}
		a[k] += c * float64(v)
	}
	return bad
}

// u16 views little-endian bytes as uint16 values when they are 2-byte
// aligned (wtool runs on little-endian machines only), else returns nil.
func u16(b []byte) []uint16 {
	if len(b) == 0 || uintptr(unsafe.Pointer(&b[0]))%2 != 0 {
		return nil
	}
	return unsafe.Slice((*uint16)(unsafe.Pointer(&b[0])), len(b)/2)
}
