package tensors

import (
	"encoding/binary"
	"fmt"
	"math"
	"runtime"
	"unsafe"

	"github.com/wtool/wtool/internal/fault"
)

// le is the byte order of every tensor in the safetensors format.
var le = binary.LittleEndian

// ErrNotFloat is returned when a computation asks for the values of a tensor
// whose type is not one of F64, F32, F16, BF16.
var ErrNotFloat = fmt.Errorf("dtype cannot be converted to floating point")

func checkLen(op string, dt DType, nbytes, n int) error {
	if !dt.IsFloat() {
		return fmt.Errorf("%s %s: %w", op, dt, ErrNotFloat)
	}
	if want := n * dt.Bits() / 8; nbytes != want {
		return fmt.Errorf("%s %s: %d bytes for %d elements, want %d", op, dt, nbytes, n, want)
	}
	return nil
}

// DecodeFloat32 decodes len(dst) elements of type dt from src into dst.
// src must hold exactly len(dst) elements; F64 values are rounded to float32.
func DecodeFloat32(dst []float32, src []byte, dt DType) error {
	if err := checkLen("decode", dt, len(src), len(dst)); err != nil {
		return err
	}
	parallel(len(dst), func(lo, hi int) {
		d := dst[lo:hi]
		switch dt {
		case F32:
			s := src[4*lo : 4*hi]
			for i := range d {
				d[i] = math.Float32frombits(le.Uint32(s[4*i:]))
			}
		case BF16:
			s := src[2*lo : 2*hi]
			for i := range d {
				d[i] = math.Float32frombits(uint32(le.Uint16(s[2*i:])) << 16)
			}
		case F16:
			t := f16Table()
			s := src[2*lo : 2*hi]
			for i := range d {
				d[i] = t[le.Uint16(s[2*i:])]
			}
		case F64:
			s := src[8*lo : 8*hi]
			for i := range d {
				d[i] = float32(math.Float64frombits(le.Uint64(s[8*i:])))
			}
		}
	})
	return nil
}

// DecodeFloat64 decodes len(dst) elements of type dt from src into dst.
func DecodeFloat64(dst []float64, src []byte, dt DType) error {
	if err := checkLen("decode", dt, len(src), len(dst)); err != nil {
		return err
	}
	parallel(len(dst), func(lo, hi int) {
		d := dst[lo:hi]
		switch dt {
		case F64:
			s := src[8*lo : 8*hi]
			for i := range d {
				d[i] = math.Float64frombits(le.Uint64(s[8*i:]))
			}
		case F32:
			s := src[4*lo : 4*hi]
			for i := range d {
				d[i] = float64(math.Float32frombits(le.Uint32(s[4*i:])))
			}
		case BF16:
			s := src[2*lo : 2*hi]
			for i := range d {
				d[i] = float64(math.Float32frombits(uint32(le.Uint16(s[2*i:])) << 16))
			}
		case F16:
			t := f16Table()
			s := src[2*lo : 2*hi]
			for i := range d {
				d[i] = float64(t[le.Uint16(s[2*i:])])
			}
		}
	})
	return nil
}

// EncodeFloat32 encodes src as elements of type dt into dst, rounding to
// nearest even where dt is narrower than float32. dst must have room for
// exactly len(src) elements.
func EncodeFloat32(dst []byte, src []float32, dt DType) error {
	if err := checkLen("encode", dt, len(dst), len(src)); err != nil {
		return err
	}
	parallel(len(src), func(lo, hi int) {
		s := src[lo:hi]
		switch dt {
		case F32:
			d := dst[4*lo : 4*hi]
			for i, v := range s {
				le.PutUint32(d[4*i:], math.Float32bits(v))
			}
		case BF16:
			d := dst[2*lo : 2*hi]
			for i, v := range s {
				le.PutUint16(d[2*i:], BF16FromFloat32(v))
			}
		case F16:
			d := dst[2*lo : 2*hi]
			for i, v := range s {
				le.PutUint16(d[2*i:], F16FromFloat32(v))
			}
		case F64:
			d := dst[8*lo : 8*hi]
			for i, v := range s {
				le.PutUint64(d[8*i:], math.Float64bits(float64(v)))
			}
		}
	})
	return nil
}

// EncodeFloat64 encodes src as elements of type dt into dst with a single
// correctly rounded step (ties to even) for every narrower type.
func EncodeFloat64(dst []byte, src []float64, dt DType) error {
	if err := checkLen("encode", dt, len(dst), len(src)); err != nil {
		return err
	}
	parallel(len(src), func(lo, hi int) {
		s := src[lo:hi]
		switch dt {
		case F64:
			d := dst[8*lo : 8*hi]
			for i, v := range s {
				le.PutUint64(d[8*i:], math.Float64bits(v))
			}
		case F32:
			d := dst[4*lo : 4*hi]
			for i, v := range s {
				le.PutUint32(d[4*i:], math.Float32bits(float32(v)))
			}
		case BF16:
			d := dst[2*lo : 2*hi]
			for i, v := range s {
				le.PutUint16(d[2*i:], BF16FromFloat64(v))
			}
		case F16:
			d := dst[2*lo : 2*hi]
			for i, v := range s {
				le.PutUint16(d[2*i:], F16FromFloat64(v))
			}
		}
	})
	return nil
}

// Convert converts n elements from src (type from) into dst (type to). Both
// types must be floating (F64, F32, F16, BF16); when they are equal the bytes
// are copied unchanged. Conversions round once, to nearest even.
func Convert(dst []byte, to DType, src []byte, from DType) error {
	if from == to {
		if len(dst) != len(src) {
			return fmt.Errorf("convert %s: %d bytes into %d", from, len(src), len(dst))
		}
		copy(dst, src)
		return nil
	}
	if !from.IsFloat() || !to.IsFloat() {
		return fmt.Errorf("convert %s to %s: %w", from, to, ErrNotFloat)
	}
	n := len(src) * 8 / from.Bits()
	if err := checkLen("convert from", from, len(src), n); err != nil {
		return err
	}
	if err := checkLen("convert to", to, len(dst), n); err != nil {
		return err
	}
	switch {
	case from == F32 && to == BF16:
		parallel(n, func(lo, hi int) {
			s, d := src[4*lo:4*hi], dst[2*lo:2*hi]
			if s32, d16 := u32view(s), u16view(d); s32 != nil && d16 != nil {
				d16 = d16[:len(s32)]
				for i, u := range s32 {
					d16[i] = bf16Bits(u)
				}
				return
			}
			for i := range hi - lo {
				le.PutUint16(d[2*i:], BF16FromFloat32(math.Float32frombits(le.Uint32(s[4*i:]))))
			}
		})
	case from == F32 && to == F16:
		parallel(n, func(lo, hi int) {
			s, d := src[4*lo:4*hi], dst[2*lo:2*hi]
			for i := range hi - lo {
				le.PutUint16(d[2*i:], F16FromFloat32(math.Float32frombits(le.Uint32(s[4*i:]))))
			}
		})
	default: // through float64, which holds every value of the others exactly
		parallel(n, func(lo, hi int) {
			fb, tb := from.Bits()/8, to.Bits()/8
			s, d := src[lo*fb:hi*fb], dst[lo*tb:hi*tb]
			var buf [256]float64
			for off := 0; off < hi-lo; off += len(buf) {
				m := min(len(buf), hi-lo-off)
				_ = DecodeFloat64(buf[:m], s[off*fb:(off+m)*fb], from)
				_ = EncodeFloat64(d[off*tb:(off+m)*tb], buf[:m], to)
			}
		})
	}
	return nil
}

// parallelMin is the element count below which conversions run on one goroutine.
const parallelMin = 1 << 18

// parallel runs f over [0,n) split into contiguous chunks, one per available
// CPU, when n is large enough for that to pay.
func parallel(n int, f func(lo, hi int)) {
	workers := runtime.GOMAXPROCS(0)
	if n < parallelMin || workers < 2 {
		f(0, n)
		return
	}
	workers = min(workers, n/(parallelMin/4))
	chunk := (n + workers - 1) / workers
	chunk = (chunk + 63) &^ 63 // keep chunk edges on whole elements of every type
	// the source may be a mapped file: a fault (or a panic) in a worker is
	// re-raised here, on the caller's goroutine, where it can be handled
	var g fault.Group
	for lo := 0; lo < n; lo += chunk {
		hi := min(lo+chunk, n)
		g.Go(func() { f(lo, hi) })
	}
	g.Wait()
}

// bf16Bits is BF16FromFloat32 on the bits of a float32.
func bf16Bits(u uint32) uint16 {
	if u&0x7fffffff > 0x7f800000 {
		return uint16(u>>16) | 0x0040
	}
	return uint16((u + 0x7fff + (u>>16)&1) >> 16)
}

// u32view and u16view view little-endian bytes as integers when they are
// suitably aligned (the machines wtool runs on are little-endian), else nil.
func u32view(b []byte) []uint32 {
	if len(b) < 4 || uintptr(unsafe.Pointer(&b[0]))%4 != 0 {
		return nil
	}
	return unsafe.Slice((*uint32)(unsafe.Pointer(&b[0])), len(b)/4)
}

func u16view(b []byte) []uint16 {
	if len(b) < 2 || uintptr(unsafe.Pointer(&b[0]))%2 != 0 {
		return nil
	}
	return unsafe.Slice((*uint16)(unsafe.Pointer(&b[0])), len(b)/2)
}
