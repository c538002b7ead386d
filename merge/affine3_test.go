package merge

import (
	"math/rand/v2"
	"testing"

	"github.com/wtool/wtool/tensors"
)

// TestLerp3BF16MatchesScalar: the three-input vector kernel gives the
// general affine path's bits (((0 + a x) + b y) + c z in float32, rounded
// once), zeros of both signs included; a NaN or an overflow is flagged.
func TestLerp3BF16MatchesScalar(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{0, 1, 7, 8, 9, 64, 1001} {
		x, y, z := make([]uint16, n), make([]uint16, n), make([]uint16, n)
		for i := range x {
			x[i] = tensors.BF16FromFloat32(float32(r.NormFloat64() * 3))
			y[i] = tensors.BF16FromFloat32(float32(r.NormFloat64() * 1e-3))
			z[i] = tensors.BF16FromFloat32(float32(r.NormFloat64()))
			if r.IntN(8) == 0 {
				x[i], y[i], z[i] = 0x8000, 0x8000, uint16(r.IntN(2))<<15 // -0s
			}
		}
		for _, c := range [][3]float32{{0.5, 0.25, 0.25}, {0.3, 0.7, 0}, {1, -1, 0.5}, {-2.5, 1e-3, 7}} {
			d := make([]uint16, n)
			done, bad := lerp3BF16(d, x, y, z, c[0], c[1], c[2])
			if bad {
				t.Fatal("finite inputs flagged")
			}
			if haveVectorKernel() && done != n&^7 {
				t.Fatalf("n=%d: the kernel did %d elements", n, done)
			}
			for i := range done {
				var a float32
				a += c[0] * tensors.BF16ToFloat32(x[i])
				a += c[1] * tensors.BF16ToFloat32(y[i])
				a += c[2] * tensors.BF16ToFloat32(z[i])
				if want := tensors.BF16FromFloat32(a); d[i] != want {
					t.Fatalf("n=%d c=%v element %d: %#04x, scalar %#04x", n, c, i, d[i], want)
				}
			}
		}
	}
	x := []uint16{0x3f80, 0x7fc0, 0, 0, 0, 0, 0, 0}
	y := make([]uint16, 8)
	if _, bad := lerp3BF16(make([]uint16, 8), y, y, x, 1, 1, 1); !bad && haveVectorKernel() {
		t.Error("NaN not flagged")
	}
	x[1] = 0x7f7f // largest bf16: tripled, it overflows
	if _, bad := lerp3BF16(make([]uint16, 8), x, x, x, 1, 1, 1); !bad && haveVectorKernel() {
		t.Error("overflow not flagged")
	}
}
