package tensors

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/x448/float16"
)

func TestBF16GoldenBytes(t *testing.T) {
	// formats.md: BF16 [2.25, 1, 1, 1] is 10 40 80 3F 80 3F 80 3F.
	golden := []byte{0x10, 0x40, 0x80, 0x3F, 0x80, 0x3F, 0x80, 0x3F}
	got, err := FromFloat32("x", BF16, []int64{4}, []float32{2.25, 1, 1, 1})
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Data) != string(golden) {
		t.Fatalf("encode: got % x, want % x", got.Data, golden)
	}
	back, err := (&Tensor{Name: "x", DType: BF16, Shape: []int64{4}, Data: golden}).Float32()
	if err != nil {
		t.Fatal(err)
	}
	if want := []float32{2.25, 1, 1, 1}; !equal32(back, want) {
		t.Fatalf("decode: got %v, want %v", back, want)
	}
}

func TestBF16Rounding(t *testing.T) {
	tests := []struct {
		name string
		in   float32
		want uint16
	}{
		{"one", 1, 0x3F80},
		{"tie to even down", 1 + 1.0/256, 0x3F80},           // halfway between 1 and 1+2^-7
		{"tie to even up", 1 + 3.0/256, 0x3F82},             // halfway between 1+2^-7 and 1+2^-6
		{"just above tie", 1 + 1.0/256 + 1.0/65536, 0x3F81}, // above halfway rounds up
		{"negative", -2.25, 0xC010},
		{"neg zero", float32(math.Copysign(0, -1)), 0x8000},
		{"inf", float32(math.Inf(1)), 0x7F80},
		{"-inf", float32(math.Inf(-1)), 0xFF80},
		{"max f32 overflows", math.MaxFloat32, 0x7F80},
		{"largest bf16", math.Float32frombits(0x7F7F0000), 0x7F7F},
		{"smallest subnormal f32 to zero", math.Float32frombits(1), 0x0000},
		{"bf16 subnormal", math.Float32frombits(0x00010000), 0x0001},
	}
	for _, tc := range tests {
		if got := BF16FromFloat32(tc.in); got != tc.want {
			t.Errorf("%s: BF16FromFloat32(%g) = %#04x, want %#04x", tc.name, tc.in, got, tc.want)
		}
	}
	for _, nan := range []uint32{0x7FC00000, 0x7F800001, 0xFFC00000, 0x7FFFFFFF, 0x7F80FFFF} {
		got := BF16FromFloat32(math.Float32frombits(nan))
		if f := BF16ToFloat32(got); !math.IsNaN(float64(f)) {
			t.Errorf("NaN %#08x became %#04x (%g)", nan, got, f)
		}
		if got>>15 != uint16(nan>>31) {
			t.Errorf("NaN %#08x lost its sign: %#04x", nan, got)
		}
	}
}

// TestBF16AgainstFloat64Rounding checks the bit trick against rounding done
// from first principles: pick the nearer of the two bfloat16 neighbours by
// comparing exact float64 distances, ties to the even one.
func TestBF16AgainstFloat64Rounding(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 1_000_000 {
		u := r.Uint32()
		f := math.Float32frombits(u)
		if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
			continue
		}
		if got, want := BF16FromFloat32(f), referenceBF16(f); got != want {
			t.Fatalf("BF16FromFloat32(%#08x) = %#04x, want %#04x", u, got, want)
		}
	}
}

func referenceBF16(f float32) uint16 {
	u := math.Float32bits(f)
	sign := uint16(u>>16) & 0x8000
	mag := u & 0x7fffffff
	lo := uint16(mag >> 16) // truncation: the neighbour towards zero
	value := func(h uint16) float64 {
		if h == 0x7F80 {
			return math.Ldexp(1, 128) // where the next value would be without Inf
		}
		return float64(math.Float32frombits(uint32(h) << 16))
	}
	x := float64(math.Float32frombits(mag))
	d1, d2 := x-value(lo), value(lo+1)-x
	if d1 < d2 || (d1 == d2 && lo&1 == 0) {
		return sign | lo
	}
	return sign | (lo + 1)
}

func TestF16AgainstX448(t *testing.T) {
	// Every sign/exponent/top-mantissa pattern with low bits at and around the
	// rounding boundaries, checked against github.com/x448/float16.
	lows := []uint32{0, 1, 0x0fff, 0x1000, 0x1001, 0x1fff, 0x2000, 0x2001, 0x3000, 0xffff, 0x8000, 0x7fff}
	for hi := uint32(0); hi < 1<<16; hi++ {
		for _, lo := range lows {
			u := hi<<16 | lo
			f := math.Float32frombits(u)
			got := F16FromFloat32(f)
			want := uint16(float16.Fromfloat32(f))
			if math.IsNaN(float64(f)) {
				if !math.IsNaN(float64(F16ToFloat32(got))) || got>>15 != uint16(u>>31) {
					t.Fatalf("NaN %#08x -> %#04x", u, got)
				}
				continue
			}
			if got != want {
				t.Fatalf("F16FromFloat32(%#08x = %g) = %#04x, x448 says %#04x", u, f, got, want)
			}
		}
	}
}

func TestF16Decode(t *testing.T) {
	for h := range 1 << 16 {
		got := F16ToFloat32(uint16(h))
		want := float16.Float16(uint16(h)).Float32()
		if math.Float32bits(got) != math.Float32bits(want) && !(math.IsNaN(float64(got)) && math.IsNaN(float64(want))) {
			t.Fatalf("F16ToFloat32(%#04x) = %g, want %g", h, got, want)
		}
		// every finite half round-trips exactly
		if !math.IsNaN(float64(got)) && F16FromFloat32(got) != uint16(h) {
			t.Fatalf("round trip %#04x -> %g -> %#04x", h, got, F16FromFloat32(got))
		}
	}
	// formats.md / hf_sample_f16: -3,-2,-1,0,1,2 are 00c2 00c0 00bc 0000 003c 0040
	golden := []byte{0x00, 0xc2, 0x00, 0xc0, 0x00, 0xbc, 0x00, 0x00, 0x00, 0x3c, 0x00, 0x40}
	vals := make([]float32, 6)
	if err := DecodeFloat32(vals, golden, F16); err != nil {
		t.Fatal(err)
	}
	if want := []float32{-3, -2, -1, 0, 1, 2}; !equal32(vals, want) {
		t.Fatalf("got %v want %v", vals, want)
	}
}

func TestF16Boundaries(t *testing.T) {
	tests := []struct {
		in   float32
		want uint16
	}{
		{65504, 0x7bff},                       // largest half
		{65519.99, 0x7bff},                    // below the halfway point to 65536
		{65520, 0x7c00},                       // halfway, ties to even = Inf
		{float32(math.Ldexp(1, -24)), 0x0001}, // smallest subnormal
		{float32(math.Ldexp(1, -25)), 0x0000}, // half of it: tie to even = 0
		{float32(math.Ldexp(1.5, -25)), 0x0001},
		{float32(math.Ldexp(3, -25)), 0x0002},      // 1.5 ulp: tie to even = 2 ulp
		{float32(math.Ldexp(1, -14)), 0x0400},      // smallest normal
		{float32(math.Ldexp(1023.5, -24)), 0x0400}, // rounds up from subnormal into normal
		{-1, 0xbc00},
	}
	for _, tc := range tests {
		if got := F16FromFloat32(tc.in); got != tc.want {
			t.Errorf("F16FromFloat32(%g) = %#04x, want %#04x", tc.in, got, tc.want)
		}
	}
}

func TestFloat64SingleRounding(t *testing.T) {
	// Just above a tie at float64 precision, but a tie after rounding to
	// float32 first: double rounding would go down; a single rounding goes up.
	x := 1 + math.Ldexp(1, -8) + math.Ldexp(1, -40)
	if got := BF16FromFloat64(x); got != 0x3F81 {
		t.Errorf("BF16FromFloat64(1+2^-8+2^-40) = %#04x, want 0x3F81", got)
	}
	// numpy: np.float16(1 + 2**-11 + 2**-40).view(np.uint16) == 0x3c01
	y := 1 + math.Ldexp(1, -11) + math.Ldexp(1, -40)
	if got := F16FromFloat64(y); got != 0x3c01 {
		t.Errorf("F16FromFloat64(1+2^-11+2^-40) = %#04x, want 0x3c01", got)
	}
	// exact ties still go to even
	if got := F16FromFloat64(1 + math.Ldexp(1, -11)); got != 0x3c00 {
		t.Errorf("tie: got %#04x", got)
	}
	if got := BF16FromFloat64(math.Inf(-1)); got != 0xFF80 {
		t.Errorf("-Inf: got %#04x", got)
	}
	if got := BF16FromFloat64(math.NaN()); !math.IsNaN(float64(BF16ToFloat32(got))) {
		t.Errorf("NaN: got %#04x", got)
	}
	if got := F16FromFloat64(1e300); got != 0x7c00 {
		t.Errorf("overflow: got %#04x", got)
	}
	if got := F16FromFloat64(-1e-300); got != 0x8000 {
		t.Errorf("underflow keeps sign: got %#04x", got)
	}
}

func equal32(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}
