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
	switch dt {
	case tensors.BF16:
		s := u16(src)
		if s == nil || len(s) < len(dst) {
			return false, len(dst) == 0
		}
		s = s[:len(dst)]
		for i, h := range s {
			dst[i] = float64(math.Float32frombits(uint32(h) << 16))
		}
		return !hasAllOnes16(s, 0x7f80), true
	case tensors.F32:
		s := u32(src)
		if s == nil || len(s) < len(dst) {
			return false, len(dst) == 0
		}
		s = s[:len(dst)]
		fin := true
		for i, u := range s {
			fin = fin && u&0x7f800000 != 0x7f800000
			dst[i] = float64(math.Float32frombits(u))
		}
		return fin, true
	case tensors.F16:
		s := u16(src)
		if s == nil || len(s) < len(dst) {
			return false, len(dst) == 0
		}
		s = s[:len(dst)]
		for i, h := range s {
			dst[i] = float64(tensors.F16ToFloat32(h))
		}
		return !hasAllOnes16(s, 0x7c00), true
	}
	return false, false
}

// hasAllOnes16 reports whether any value has all the mask's bits set (an
// exponent of all ones: NaN or Inf).
func hasAllOnes16(s []uint16, mask uint16) bool {
	var any uint16
	for _, h := range s {
		// zero iff every mask bit is set
		v := ^h & mask
		any |= b2u16(v == 0)
	}
	return any != 0
}

func b2u16(b bool) uint16 {
	if b {
		return 1
	}
	return 0
}

// u32 views little-endian bytes as uint32 values when they are 4-byte
// aligned, else returns nil.
func u32(b []byte) []uint32 {
	if len(b) < 4 || uintptr(unsafe.Pointer(&b[0]))%4 != 0 {
		return nil
	}
	return unsafe.Slice((*uint32)(unsafe.Pointer(&b[0])), len(b)/4)
}
