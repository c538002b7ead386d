package merge

import (
	"math/rand/v2"
	"testing"

	"github.com/wtool/wtool/tensors"
)

func BenchmarkFuseBF16(b *testing.B) {
	const n = 1 << 20
	x, y, d := make([]byte, 2*n), make([]byte, 2*n), make([]byte, 2*n)
	for i := range x {
		x[i], y[i] = byte(i*7)&0x3f, byte(i*13)&0x3f
	}
	ins := []*Input{{Data: x, DType: tensors.BF16}, {Data: y, DType: tensors.BF16}}
	b.SetBytes(2 * n)
	for b.Loop() {
		fuseBF16(ins, []float64{0.5, 0.5}, d, 0, n)
	}
}

// TestLerpBF16MatchesScalar: the vector kernel gives the scalar code's bits.
func TestLerpBF16MatchesScalar(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 7, 8, 9, 64, 1001} {
		x, y := make([]uint16, n), make([]uint16, n)
		for i := range x {
			x[i] = tensors.BF16FromFloat32(float32(r.NormFloat64() * 3))
			y[i] = tensors.BF16FromFloat32(float32(r.NormFloat64() * 1e-3))
		}
		for _, c := range [][2]float32{{0.5, 0.5}, {0.3, 0.7}, {1, -1}, {-2.5, 1e-3}} {
			d := make([]uint16, n)
			done, bad := lerpBF16(d, x, y, c[0], c[1])
			if bad {
				t.Fatal("finite inputs flagged")
			}
			for i := range done {
				want := tensors.BF16FromFloat32(c[0]*tensors.BF16ToFloat32(x[i]) + c[1]*tensors.BF16ToFloat32(y[i]))
				if d[i] != want {
					t.Fatalf("n=%d c=%v element %d: %#04x, scalar %#04x", n, c, i, d[i], want)
				}
			}
		}
	}
	// a NaN or an overflow is flagged
	x := []uint16{0x3f80, 0x7fc0, 0, 0, 0, 0, 0, 0}
	y := make([]uint16, 8)
	if _, bad := lerpBF16(make([]uint16, 8), x, y, 1, 1); !bad && haveVectorKernel() {
		t.Error("NaN not flagged")
	}
	x[1] = 0x7f7f // largest bf16: doubled, it overflows
	if _, bad := lerpBF16(make([]uint16, 8), x, x, 1, 1); !bad && haveVectorKernel() {
		t.Error("overflow not flagged")
	}
}
