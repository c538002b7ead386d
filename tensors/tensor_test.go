package tensors

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

func TestDTypeTable(t *testing.T) {
	// The reference enum order and bit sizes (formats.md).
	want := []struct {
		name string
		bits int
	}{
		{"BOOL", 8}, {"F4", 4}, {"F6_E2M3", 6}, {"F6_E3M2", 6}, {"U8", 8}, {"I8", 8},
		{"F8_E5M2", 8}, {"F8_E4M3", 8}, {"F8_E8M0", 8}, {"F8_E4M3FNUZ", 8}, {"F8_E5M2FNUZ", 8},
		{"I16", 16}, {"U16", 16}, {"F16", 16}, {"BF16", 16}, {"I32", 32}, {"U32", 32},
		{"F32", 32}, {"C64", 64}, {"F64", 64}, {"I64", 64}, {"U64", 64},
	}
	all := DTypes()
	if len(all) != len(want) {
		t.Fatalf("%d dtypes, want %d", len(all), len(want))
	}
	for i, w := range want {
		d, ok := ParseDType(w.name)
		if !ok || d != all[i] || d.String() != w.name || d.Bits() != w.bits {
			t.Errorf("%s: parsed %v ok=%v index %d bits %d", w.name, d, ok, i, d.Bits())
		}
	}
	if _, ok := ParseDType("f32"); ok {
		t.Error("ParseDType must be case-sensitive like the format")
	}
}

func TestParseUserDType(t *testing.T) {
	for in, want := range map[string]DType{"bf16": BF16, "BF16": BF16, "bfloat16": BF16, "float16": F16,
		"fp32": F32, "F32": F32, "float64": F64, "half": F16, "i64": I64} {
		got, err := ParseUserDType(in)
		if err != nil || got != want {
			t.Errorf("ParseUserDType(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := ParseUserDType("float8"); err == nil {
		t.Error("want an error for an unknown dtype")
	}
}

func TestByteSize(t *testing.T) {
	tests := []struct {
		dt    DType
		shape []int64
		want  int64
		err   bool
	}{
		{F32, []int64{}, 4, false}, // scalar
		{F32, []int64{2, 0}, 0, false},
		{F4, []int64{4}, 2, false},
		{F4, []int64{3}, 0, true}, // odd F4 count is not whole bytes
		{F6_E2M3, []int64{4}, 3, false},
		{C64, []int64{2, 3}, 48, false},
		{BF16, []int64{1 << 62, 4}, 0, true}, // overflow
		{F32, []int64{-1}, 0, true},
	}
	for _, tc := range tests {
		got, err := ByteSize(tc.dt, tc.shape)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ByteSize(%s, %v) = %d, %v; want %d, err=%v", tc.dt, tc.shape, got, err, tc.want, tc.err)
		}
	}
}

func TestConvertMatrix(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	vals := make([]float64, 1000)
	for i := range vals {
		vals[i] = r.NormFloat64() * math.Pow(10, float64(r.IntN(10)-5))
	}
	vals[0], vals[1], vals[2] = math.Inf(1), math.Inf(-1), 0
	floats := []DType{F64, F32, F16, BF16}
	for _, from := range floats {
		src, err := FromFloat64("t", from, []int64{1000}, vals)
		if err != nil {
			t.Fatal(err)
		}
		for _, to := range floats {
			got, err := src.ConvertTo(to)
			if err != nil {
				t.Fatalf("%s->%s: %v", from, to, err)
			}
			// independent path: decode to float64, encode with the single-value functions
			v64, _ := src.Float64()
			want, _ := FromFloat64("t", to, []int64{1000}, v64)
			if string(got.Data) != string(want.Data) {
				t.Errorf("%s->%s differs from decode+encode", from, to)
			}
		}
	}
}

func TestConvertLarge(t *testing.T) {
	// Exercise the parallel path and compare with element-by-element encoding.
	n := 3*parallelMin + 17
	r := rand.New(rand.NewPCG(5, 6))
	src := make([]float32, n)
	for i := range src {
		src[i] = math.Float32frombits(r.Uint32())
	}
	in, _ := FromFloat32("x", F32, []int64{int64(n)}, src)
	for _, to := range []DType{BF16, F16} {
		out, err := in.ConvertTo(to)
		if err != nil {
			t.Fatal(err)
		}
		for i, v := range src {
			var want uint16
			if to == BF16 {
				want = BF16FromFloat32(v)
			} else {
				want = F16FromFloat32(v)
			}
			if got := le.Uint16(out.Data[2*i:]); got != want {
				t.Fatalf("%s element %d: %#04x want %#04x", to, i, got, want)
			}
		}
		back := make([]float32, n)
		if err := DecodeFloat32(back, out.Data, to); err != nil {
			t.Fatal(err)
		}
		for i := range back {
			var want float32
			if to == BF16 {
				want = BF16ToFloat32(le.Uint16(out.Data[2*i:]))
			} else {
				want = F16ToFloat32(le.Uint16(out.Data[2*i:]))
			}
			if math.Float32bits(back[i]) != math.Float32bits(want) {
				t.Fatalf("decode %s element %d", to, i)
			}
		}
	}
}

func TestNoSilentConversion(t *testing.T) {
	for _, dt := range []DType{I64, I32, U8, BOOL, F8_E4M3, F4, C64} {
		x := &Tensor{Name: "ids", DType: dt, Shape: []int64{2}, Data: make([]byte, 2*dt.Bits()/8)}
		if _, err := x.ConvertTo(F32); !errors.Is(err, ErrNotFloat) {
			t.Errorf("%s -> F32: err = %v, want ErrNotFloat", dt, err)
		}
		if _, err := x.Float32(); !errors.Is(err, ErrNotFloat) {
			t.Errorf("%s Float32: err = %v, want ErrNotFloat", dt, err)
		}
		same, err := x.ConvertTo(dt)
		if err != nil || same != x {
			t.Errorf("%s -> %s must be the identity", dt, dt)
		}
	}
}

func TestMatrixShape(t *testing.T) {
	tests := []struct {
		shape      []int64
		rows, cols int
		err        bool
	}{
		{[]int64{16, 256}, 16, 256, false},
		{[]int64{4, 3, 3, 3}, 4, 27, false}, // conv kernel (out, in, kh, kw)
		{[]int64{8}, 0, 0, true},
		{[]int64{}, 0, 0, true},
		{[]int64{3, 0}, 3, 0, false},
	}
	for _, tc := range tests {
		r, c, err := MatrixShape(tc.shape)
		if (err != nil) != tc.err || r != tc.rows || c != tc.cols {
			t.Errorf("MatrixShape(%v) = %d, %d, %v", tc.shape, r, c, err)
		}
	}
	// A conv kernel's matrix rows are its output channels: element
	// [o, i, y, x] sits at row o, column i*kh*kw + y*kw + x.
	vals := make([]float32, 4*3*3*3)
	for i := range vals {
		vals[i] = float32(i)
	}
	k, _ := FromFloat32("conv.weight", F32, []int64{4, 3, 3, 3}, vals)
	m, rows, cols, err := k.Matrix()
	if err != nil || rows != 4 || cols != 27 {
		t.Fatal(rows, cols, err)
	}
	if got := m[2*cols+1*9+2*3+1]; got != float32(((2*3+1)*3+2)*3+1) {
		t.Errorf("conv element [2,1,2,1] = %v", got)
	}
	back, _ := FromFloat32(k.Name, F32, k.Shape, m)
	if string(back.Data) != string(k.Data) {
		t.Error("matrix view does not round-trip to the kernel")
	}
}

func ExampleTensor_ConvertTo() {
	w, _ := FromFloat32("w", F32, []int64{2, 2}, []float32{2.25, 1, 1, -0.1})
	b, _ := w.ConvertTo(BF16)
	fmt.Printf("% x\n", b.Data)
	v, _ := b.Float32()
	fmt.Println(v)
	// Output:
	// 10 40 80 3f 80 3f cd bd
	// [2.25 1 1 -0.100097656]
}
