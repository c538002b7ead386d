package safetensors

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/wtool/wtool/tensors"
)

// NonFiniteError reports a NaN or infinite value in a tensor about to be
// written (including a finite value that overflowed the output dtype, such
// as 1e5 in float16).
type NonFiniteError struct {
	Tensor string
	Index  int64 // element index in the tensor
	Value  float64
	DType  tensors.DType // the dtype it was to be written in
	// Detail, when set, says where the value comes from (an input that
	// holds it, an overflow of the output dtype).
	Detail string
}

func (e *NonFiniteError) Error() string {
	detail := ""
	switch {
	case e.Detail != "":
		detail = " (" + e.Detail + ")"
	case math.IsInf(e.Value, 0) && (e.DType == tensors.F16 || e.DType == tensors.BF16 || e.DType == tensors.F32):
		detail = fmt.Sprintf(" (an Inf in an input, or a value beyond %s's range of ±%g)", e.DType, maxFinite(e.DType))
	}
	return fmt.Sprintf("tensor %q: the result has %g at element %d%s; wtool does not write NaN or Inf unless --allow-nonfinite is given", e.Tensor, e.Value, e.Index, detail)
}

// CheckFinite returns a *NonFiniteError for the first NaN or Inf among the
// encoded bytes data of entry e, which start at byte off of the tensor.
// Non-float dtypes and 8-bit (and narrower) floats are not checked.
func CheckFinite(e Entry, off int64, data []byte) error {
	k, v := firstNonFinite(e.DType, data)
	if k < 0 {
		return nil
	}
	return &NonFiniteError{Tensor: e.Name, Index: off/int64(e.DType.Bits()/8) + int64(k), Value: v, DType: e.DType}
}

// firstNonFinite returns the index and value of the first NaN or Inf among
// the encoded values, or -1. It tests eight bytes at a time (a value is NaN
// or Inf when its exponent bits are all ones) and looks closer only at a
// word that holds one.
func firstNonFinite(dt tensors.DType, data []byte) (int, float64) {
	var mask, low uint64 // exponent mask per lane; lowest bit of each lane
	var width int        // bytes per value
	switch dt {
	case tensors.BF16:
		mask, low, width = 0x7f807f807f807f80, 0x0001000100010001, 2
	case tensors.F16:
		mask, low, width = 0x7c007c007c007c00, 0x0001000100010001, 2
	case tensors.F32:
		mask, low, width = 0x7f8000007f800000, 0x0000000100000001, 4
	case tensors.F64:
		mask, low, width = 0x7ff0000000000000, 1, 8
	default:
		return -1, 0
	}
	high := low << (8*width - 1) // the top bit of each lane
	k := 0
	for ; k+8 <= len(data); k += 8 {
		// a lane of z is zero exactly where the exponent is all ones; the
		// exponent mask leaves each lane's top bit clear, so the classic
		// has-zero-lane test is exact
		z := binary.LittleEndian.Uint64(data[k:])&mask ^ mask
		if (z-low)&^z&high != 0 {
			break
		}
	}
	for ; k+width <= len(data); k += width {
		var v float64
		switch dt {
		case tensors.BF16:
			h := binary.LittleEndian.Uint16(data[k:])
			if h&0x7f80 != 0x7f80 {
				continue
			}
			v = float64(tensors.BF16ToFloat32(h))
		case tensors.F16:
			h := binary.LittleEndian.Uint16(data[k:])
			if h&0x7c00 != 0x7c00 {
				continue
			}
			v = float64(tensors.F16ToFloat32(h))
		case tensors.F32:
			u := binary.LittleEndian.Uint32(data[k:])
			if u&0x7f800000 != 0x7f800000 {
				continue
			}
			v = float64(math.Float32frombits(u))
		case tensors.F64:
			u := binary.LittleEndian.Uint64(data[k:])
			if u&0x7ff0000000000000 != 0x7ff0000000000000 {
				continue
			}
			v = math.Float64frombits(u)
		}
		return k / width, v
	}
	return -1, 0
}

// maxFinite is the largest finite value of a floating dtype.
func maxFinite(dt tensors.DType) float64 {
	switch dt {
	case tensors.F16:
		return 65504
	case tensors.BF16:
		return float64(math.Float32frombits(0x7f7f0000))
	case tensors.F32:
		return math.MaxFloat32
	}
	return math.MaxFloat64
}

// ExplainOverflow fills in the Detail of e: the value is an overflow, since
// what it was computed from is finite.
func (e *NonFiniteError) ExplainOverflow() {
	if math.IsInf(e.Value, 0) {
		e.Detail = fmt.Sprintf("an overflow: the inputs are finite there, but the result is beyond %s's range of ±%g", e.DType, maxFinite(e.DType))
	}
}
