package merge

import (
	"context"
	"errors"
	"math"
	"sync"
	"unsafe"

	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/tensors"
)

// affineBlock is how many elements the affine kernel combines at a time.
const affineBlock = 1 << 13

// affineChunk computes elements [lo, lo+n) of sum_i Coef[i] Inputs[i] into
// dst, reading the inputs' bytes directly. A 16-bit output keeps 8 or 11
// significant bits: float32 sums are exact enough and twice as fast; wider
// outputs accumulate in float64. Two BF16 inputs into a BF16 output take a
// fused (AVX2) path. NaN/Inf inputs are errors naming the file (unless
// allowed); the writer checks what is written.
func affineChunk(ctx context.Context, k *Kernel, dt tensors.DType, lo, n int, dst []byte) error {
	ins := k.Inputs
	for _, in := range ins {
		if in.Data == nil || in.index != nil {
			return errors.New("affine kernel: inputs must be mapped tensors")
		}
	}
	narrow := dt == tensors.BF16 || dt == tensors.F16
	ob := dt.Bits() / 8
	var sc *affineScratch
	defer func() {
		if sc != nil {
			affinePool.Put(sc)
		}
	}()
	fused := (len(ins) == 2 || len(ins) == 3) && dt == tensors.BF16
	for _, in := range ins {
		fused = fused && in.DType == tensors.BF16
	}
	return guardInputs(ins, func() error {
		for b := 0; b < n; b += affineBlock {
			if b%checkEvery == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			l, h := lo+b, lo+min(b+affineBlock, n)
			processed.Add(int64(h - l))
			if fused {
				fuse := fuseBF16
				if len(ins) == 3 {
					fuse = fuse3BF16
				}
				done, err := fuse(ins, k.Coef, dst[2*b:], l, h)
				if err != nil {
					return err
				}
				if done { // this block is written; on to the next
					continue
				}
			}
			if sc == nil {
				sc = affinePool.Get().(*affineScratch)
			}
			a32, a64, bb := sc.acc32[:h-l], sc.acc64[:h-l], sc.buf[:h-l]
			clear(a32)
			clear(a64)
			for i, in := range ins {
				c := k.Coef[i]
				bw := in.DType.Bits() / 8
				src := in.Data[l*bw : h*bw]
				bad := -1
				switch {
				case narrow && in.DType == tensors.BF16:
					bad = axpyBF16(a32, float32(c), src)
				default:
					if err := tensors.DecodeFloat32(bb, src, in.DType); err != nil {
						return err
					}
					if narrow {
						bad = axpy32(a32, float32(c), bb)
					} else {
						bad = axpy64(a64, c, bb)
					}
				}
				if bad >= 0 && !in.allowNonFinite {
					v, _ := tensorValue(in, l+bad)
					return &NonFiniteInputError{File: in.FileName(), Tensor: in.Tensor, Index: int64(l + bad), Value: v}
				}
			}
			if !narrow {
				for i, x := range a64 {
					a32[i] = float32(x)
				}
				if dt == tensors.F64 {
					if err := tensors.EncodeFloat64(dst[b*ob:(b+h-l)*ob], a64, dt); err != nil {
						return err
					}
					continue
				}
			}
			if err := tensors.EncodeFloat32(dst[b*ob:(b+h-l)*ob], a32, dt); err != nil {
				return err
			}
		}
		return nil
	})
}

type affineScratch struct {
	acc64      []float64
	acc32, buf []float32
}

var affinePool = sync.Pool{New: func() any {
	return &affineScratch{acc64: make([]float64, affineBlock), acc32: make([]float32, affineBlock), buf: make([]float32, affineBlock)}
}}

// tensorValue decodes one element of a mapped input.
func tensorValue(in *Input, i int) (float64, bool) {
	dec := elementDecoder(in.DType)
	if dec == nil {
		return 0, false
	}
	es := in.DType.Bits() / 8
	return dec(in.Data[i*es:]), true
}

// guardInputs runs fn, which reads the inputs' mapped bytes, inside
// safetensors.Guard, naming in a fault the input file whose mapping holds
// the faulting address.
func guardInputs(ins []*Input, fn func() error) error {
	name := ""
	if len(ins) > 0 {
		name = ins[0].Tensor
	}
	err := safetensors.Guard("", name, fn)
	var fe *safetensors.FaultError
	if errors.As(err, &fe) && fe.File == "" {
		for _, in := range ins {
			if len(in.Data) == 0 {
				continue
			}
			start := uintptr(unsafe.Pointer(&in.Data[0]))
			if fe.Addr >= start-(1<<12) && fe.Addr < start+uintptr(len(in.Data))+(1<<12) {
				fe.File = in.FileName()
				break
			}
		}
		if fe.File == "" {
			fe.File = "an input"
		}
	}
	return err
}

// fuseBF16 is the hot path of the common merge: two BF16 inputs, a BF16
// output, one pass with no intermediate buffers, into d (elements [l, h)
// of the tensor). It reports false when the data are not 2-byte aligned
// (the general path copies them) or an input holds a non-finite value (the
// general path reports or handles it).
func fuseBF16(ins []*Input, coef []float64, dst []byte, l, h int) (bool, error) {
	x := u16(ins[0].Data[2*l : 2*h])
	y := u16(ins[1].Data[2*l : 2*h])
	d := u16(dst[:2*(h-l)])
	if x == nil || y == nil || d == nil {
		return false, nil
	}
	y, d = y[:len(x)], d[:len(x)]
	cx, cy := float32(coef[0]), float32(coef[1])
	start := 0
	if done, bad := lerpBF16(d, x, y, cx, cy); !bad {
		start = done // the vector kernel did these; the scalar loop does the rest
	}
	for k := start; k < len(x); k++ {
		hx, hy := x[k], y[k]
		if hx&0x7f80 == 0x7f80 || hy&0x7f80 == 0x7f80 {
			return false, nil
		}
		d[k] = tensors.BF16FromFloat32(cx*math.Float32frombits(uint32(hx)<<16) + cy*math.Float32frombits(uint32(hy)<<16))
	}
	return true, nil
}

// fuse3BF16 is fuseBF16 for three BF16 inputs (model-stock's two models
// and base): the general path's float32 operations, ((0 + c0 x) + c1 y) +
// c2 z, in one pass.
func fuse3BF16(ins []*Input, coef []float64, dst []byte, l, h int) (bool, error) {
	x := u16(ins[0].Data[2*l : 2*h])
	y := u16(ins[1].Data[2*l : 2*h])
	z := u16(ins[2].Data[2*l : 2*h])
	d := u16(dst[:2*(h-l)])
	if x == nil || y == nil || z == nil || d == nil {
		return false, nil
	}
	y, z, d = y[:len(x)], z[:len(x)], d[:len(x)]
	cx, cy, cz := float32(coef[0]), float32(coef[1]), float32(coef[2])
	start := 0
	if done, bad := lerp3BF16(d, x, y, z, cx, cy, cz); !bad {
		start = done
	}
	for k := start; k < len(x); k++ {
		hx, hy, hz := x[k], y[k], z[k]
		if hx&0x7f80 == 0x7f80 || hy&0x7f80 == 0x7f80 || hz&0x7f80 == 0x7f80 {
			return false, nil
		}
		var a float32
		a += cx * math.Float32frombits(uint32(hx)<<16)
		a += cy * math.Float32frombits(uint32(hy)<<16)
		a += cz * math.Float32frombits(uint32(hz)<<16)
		d[k] = tensors.BF16FromFloat32(a)
	}
	return true, nil
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

// finite reports whether x is neither NaN nor infinite (exponent not all ones).
func finite(x float32) bool { return math.Float32bits(x)&0x7f800000 != 0x7f800000 }

// u16 views little-endian bytes as uint16 values when they are 2-byte
// aligned (wtool runs on little-endian machines only), else returns nil.
func u16(b []byte) []uint16 {
	if len(b) == 0 || uintptr(unsafe.Pointer(&b[0]))%2 != 0 {
		return nil
	}
	return unsafe.Slice((*uint16)(unsafe.Pointer(&b[0])), len(b)/2)
}
