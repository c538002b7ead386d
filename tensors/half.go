package tensors

import (
	"math"
	"sync"
)

// BF16FromFloat32 rounds f to the nearest bfloat16, ties to even (the rounding
// PyTorch and llama.cpp use). NaN stays a quiet NaN with its sign; values past
// the largest bfloat16 become infinities. Truncating the low 16 bits, as some
// packages do, is not a correct conversion.
func BF16FromFloat32(f float32) uint16 {
	u := math.Float32bits(f)
	if u&0x7fffffff > 0x7f800000 { // NaN: keep sign and top payload, force quiet
		return uint16(u>>16) | 0x0040
	}
	return uint16((u + 0x7fff + (u>>16)&1) >> 16)
}

// BF16ToFloat32 widens a bfloat16 to float32 exactly.
func BF16ToFloat32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// F16FromFloat32 rounds f to the nearest IEEE 754 half-precision value, ties to
// even, with correct subnormals; overflow gives an infinity and NaN stays a
// quiet NaN with its sign.
func F16FromFloat32(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23) & 0xff
	mant := b & 0x7fffff
	if exp == 0xff {
		if mant == 0 {
			return sign | 0x7c00
		}
		return sign | 0x7c00 | 0x0200 | uint16(mant>>13)
	}
	e := exp - 127 + 15
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 {
		if e < -10 {
			return sign
		}
		mant |= 0x800000
		shift := uint(14 - e)
		half := uint32(1) << (shift - 1)
		rem := mant & (half<<1 - 1)
		m := mant >> shift
		if rem > half || (rem == half && m&1 == 1) {
			m++
		}
		return sign | uint16(m)
	}
	h := uint32(e)<<10 | mant>>13
	rem := mant & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && h&1 == 1) {
		h++ // a carry into the exponent is the right result, up to infinity
	}
	return sign | uint16(h)
}

// F16ToFloat32 widens a half-precision value to float32 exactly.
func F16ToFloat32(h uint16) float32 { return f16Table()[h] }

var f16TableOnce = sync.OnceValue(func() *[1 << 16]float32 {
	var t [1 << 16]float32
	for i := range t {
		t[i] = f16ToFloat32Slow(uint16(i))
	}
	return &t
})

func f16Table() *[1 << 16]float32 { return f16TableOnce() }

func f16ToFloat32Slow(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case exp != 0:
		return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
	case mant == 0:
		return math.Float32frombits(sign)
	default: // subnormal: mant * 2^-24
		f := float32(mant) * (1.0 / (1 << 24))
		return math.Float32frombits(sign | math.Float32bits(f))
	}
}

// float32RoundOdd converts x to float32 rounding to odd: the result is x when
// representable, else whichever neighbour of x has an odd last bit. Rounding
// to odd first and to nearest-even after gives a correctly rounded result for
// any target with at least two fewer significand bits than float32, so
// float64 -> float16/bfloat16 is rounded once, not twice.
func float32RoundOdd(x float64) float32 {
	t := float32(x)
	if float64(t) == x || math.IsInf(float64(t), 0) || x != x {
		return t
	}
	u := math.Float32bits(t)
	if u&1 == 0 {
		if math.Abs(float64(t)) > math.Abs(x) {
			u--
		} else {
			u++
		}
	}
	return math.Float32frombits(u)
}

// BF16FromFloat64 rounds x to the nearest bfloat16, ties to even, in one
// rounding step.
func BF16FromFloat64(x float64) uint16 { return BF16FromFloat32(float32RoundOdd(x)) }

// F16FromFloat64 rounds x to the nearest half-precision value, ties to even, in
// one rounding step.
func F16FromFloat64(x float64) uint16 { return F16FromFloat32(float32RoundOdd(x)) }
