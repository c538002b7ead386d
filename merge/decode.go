package merge

import (
	"math"
	"unsafe"

	"github.com/wtool/wtool/tensors"
)

// decodeFast decodes BF16, F16 or F32 bytes into float64 values, reporting
// whether every value is finite; ok is false for other dtypes or unaligned
// data (the caller uses the general decoder).
func decodeFast(dst []float64, src []byte, dt tensors.DType) (finite, ok bool) {
	if len(dst) == 0 {
		return true, true
	}
	switch dt {
	case tensors.BF16:
		s := u16(src)
		if s == nil || len(s) < len(dst) {
			return false, false
		}
		s = s[:len(dst)]
		if haveAVX512 && len(s) >= 16 {
			n := len(s) &^ 15
			bad := decodeBF16x512(&dst[0], &s[0], n)
			fin, _ := decodeFast(dst[n:], src[2*n:], dt)
			return bad == 0 && fin, true
		}
		// (h & exp) + lowest exponent bit carries into bit 15 exactly when
		// the exponent is all ones (NaN, Inf)
		var acc uint32
		for i, h := range s {
			u := uint32(h)
			acc |= u&0x7f80 + 0x80
			dst[i] = float64(math.Float32frombits(u << 16))
		}
		return acc&0x8000 == 0, true
	case tensors.F32:
		s := u32(src)
		if s == nil || len(s) < len(dst) {
			return false, false
		}
		s = s[:len(dst)]
		if haveAVX512 && len(s) >= 16 {
			n := len(s) &^ 15
			bad := decodeF32x512(&dst[0], &s[0], n)
			fin, _ := decodeFast(dst[n:], src[4*n:], dt)
			return bad == 0 && fin, true
		}
		var acc uint64
		for i, u := range s {
			acc |= uint64(u&0x7f800000) + 0x800000
			dst[i] = float64(math.Float32frombits(u))
		}
		return acc&(1<<31) == 0, true
	case tensors.F16:
		s := u16(src)
		if s == nil || len(s) < len(dst) {
			return false, false
		}
		s = s[:len(dst)]
		var acc uint32
		for i, h := range s {
			u := uint32(h)
			acc |= u&0x7c00 + 0x400
			dst[i] = float64(tensors.F16ToFloat32(h))
		}
		return acc&0x8000 == 0, true
	}
	return false, false
}

// u32 views little-endian bytes as uint32 values when they are 4-byte
// aligned, else returns nil.
func u32(b []byte) []uint32 {
	if len(b) < 4 || uintptr(unsafe.Pointer(&b[0]))%4 != 0 {
		return nil
	}
	return unsafe.Slice((*uint32)(unsafe.Pointer(&b[0])), len(b)/4)
}
