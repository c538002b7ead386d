// Package tensors defines the tensor value that flows through wtool, its element
// types, conversions between the floating-point encodings (F64, F32, F16, BF16)
// and float32/float64 slices, and matrix views of weight tensors.
//
// A Tensor holds raw little-endian bytes in C order, exactly as they are stored
// in a safetensors file, so that tensors wtool does not compute on pass through
// byte-identical. Only F64, F32, F16 and BF16 are decoded for computation;
// integer, boolean, complex and the 4-, 6- and 8-bit float types are carried
// through unchanged and never silently converted.
package tensors

import (
	"fmt"
	"math"
	"math/bits"
)

// DType is a tensor element type. The constants are declared in the order of
// the safetensors reference implementation's Dtype enum; that order also
// decides the order in which tensors are laid out in a written file. The zero
// value is not a type: it stands for "unset".
type DType uint8

// The element types of the safetensors format, in the reference enum order.
const (
	_           DType = iota // the zero value: no type
	BOOL                     // boolean, one byte
	F4                       // 4-bit float (MXFP4 E2M1), two elements per byte
	F6_E2M3                  // 6-bit float (MXFP6)
	F6_E3M2                  // 6-bit float (MXFP6)
	U8                       // unsigned 8-bit integer
	I8                       // signed 8-bit integer
	F8_E5M2                  // 8-bit float, 5 exponent bits
	F8_E4M3                  // 8-bit float, 4 exponent bits (FN variant)
	F8_E8M0                  // 8-bit exponent-only scale (MX)
	F8_E4M3FNUZ              // 8-bit float, 4 exponent bits, no negative zero
	F8_E5M2FNUZ              // 8-bit float, 5 exponent bits, no negative zero
	I16                      // signed 16-bit integer
	U16                      // unsigned 16-bit integer
	F16                      // IEEE 754 half precision
	BF16                     // bfloat16
	I32                      // signed 32-bit integer
	U32                      // unsigned 32-bit integer
	F32                      // IEEE 754 single precision
	C64                      // complex, two float32 parts
	F64                      // IEEE 754 double precision
	I64                      // signed 64-bit integer
	U64                      // unsigned 64-bit integer

	numDTypes
)

var dtypeNames = [numDTypes]string{
	BOOL: "BOOL", F4: "F4", F6_E2M3: "F6_E2M3", F6_E3M2: "F6_E3M2", U8: "U8", I8: "I8",
	F8_E5M2: "F8_E5M2", F8_E4M3: "F8_E4M3", F8_E8M0: "F8_E8M0",
	F8_E4M3FNUZ: "F8_E4M3FNUZ", F8_E5M2FNUZ: "F8_E5M2FNUZ",
	I16: "I16", U16: "U16", F16: "F16", BF16: "BF16", I32: "I32", U32: "U32",
	F32: "F32", C64: "C64", F64: "F64", I64: "I64", U64: "U64",
}

var dtypeBits = [numDTypes]uint8{
	BOOL: 8, F4: 4, F6_E2M3: 6, F6_E3M2: 6, U8: 8, I8: 8,
	F8_E5M2: 8, F8_E4M3: 8, F8_E8M0: 8, F8_E4M3FNUZ: 8, F8_E5M2FNUZ: 8,
	I16: 16, U16: 16, F16: 16, BF16: 16, I32: 32, U32: 32,
	F32: 32, C64: 64, F64: 64, I64: 64, U64: 64,
}

// DTypes returns every element type in the reference enum order.
func DTypes() []DType {
	out := make([]DType, 0, numDTypes-1)
	for d := BOOL; d < numDTypes; d++ {
		out = append(out, d)
	}
	return out
}

// ParseDType returns the element type with the given safetensors name (for
// example "BF16"). Names are case-sensitive, as in the format.
func ParseDType(name string) (DType, bool) {
	for d := BOOL; d < numDTypes; d++ {
		if dtypeNames[d] == name {
			return d, true
		}
	}
	return 0, false
}

// ParseUserDType parses a dtype as a user writes it on a command line or in a
// config: the safetensors names (F32, BF16, ...) in any case, and the common
// aliases float32, fp32, float16, fp16, half, bfloat16, float64, fp64, double.
func ParseUserDType(s string) (DType, error) {
	switch lower(s) {
	case "f32", "fp32", "float32", "float":
		return F32, nil
	case "f16", "fp16", "float16", "half":
		return F16, nil
	case "bf16", "bfloat16":
		return BF16, nil
	case "f64", "fp64", "float64", "double":
		return F64, nil
	}
	for d := BOOL; d < numDTypes; d++ {
		if lower(dtypeNames[d]) == lower(s) {
			return d, nil
		}
	}
	return 0, fmt.Errorf("unknown dtype %q (want f32, f16, bf16 or f64)", s)
}

func lower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// String returns the safetensors name of the type, such as "F32".
func (d DType) String() string {
	if d.Valid() {
		return dtypeNames[d]
	}
	return fmt.Sprintf("DType(%d)", uint8(d))
}

// Valid reports whether d is one of the declared element types.
func (d DType) Valid() bool { return d > 0 && d < numDTypes }

// Bits returns the size of one element in bits (4 for F4, 6 for F6_*).
func (d DType) Bits() int {
	if d.Valid() {
		return int(dtypeBits[d])
	}
	return 0
}

// IsFloat reports whether wtool can decode the type to float32/float64 for
// computation: F64, F32, F16 and BF16.
func (d DType) IsFloat() bool {
	return d == F32 || d == F16 || d == BF16 || d == F64
}

// ByteSize returns the number of bytes that n elements of type d occupy, and
// an error when n*bits overflows or is not a whole number of bytes (an odd
// number of F4 elements, for example).
func (d DType) ByteSize(n uint64) (uint64, error) {
	hi, nbits := bits.Mul64(n, uint64(d.Bits()))
	if hi != 0 {
		return 0, fmt.Errorf("%d elements of %s overflow 64 bits", n, d)
	}
	if nbits%8 != 0 {
		return 0, fmt.Errorf("%d elements of %s are not a whole number of bytes", n, d)
	}
	return nbits / 8, nil
}

// NumElements returns the product of the dimensions of shape (1 for a scalar,
// shape []), and false when the product overflows an int64.
func NumElements(shape []int64) (int64, bool) {
	n := int64(1)
	for _, d := range shape {
		if d < 0 {
			return 0, false
		}
		if d != 0 && n > math.MaxInt64/d {
			return 0, false
		}
		n *= d
	}
	return n, true
}
