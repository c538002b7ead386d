package merge

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/wtool/wtool/tensors"
)

// specials are values that exercise rounding and special cases.
var specials = []float64{0, math.Copysign(0, -1), 1, -1, math.Inf(1), math.Inf(-1), math.NaN(),
	math.MaxFloat32, -math.MaxFloat32, 3.3961e38, 3.4e38, 1e39, math.SmallestNonzeroFloat32, 1e-40, -1e-45, 1e-46,
	5e-324, 1 + 1.0/256, 1 + 3.0/512, 1 + 1.0/512, 1 + 1.0/512 + 1e-12, 1 + 1.0/512 - 1e-12, 65504, 1e300, -2.5}

func randomBlock(r *rand.Rand, n int, withSpecials bool) []float64 {
	v := make([]float64, n)
	for i := range v {
		switch {
		case withSpecials && r.IntN(8) == 0:
			v[i] = specials[r.IntN(len(specials))]
		case r.IntN(4) == 0:
			v[i] = float64(float32(r.NormFloat64())) // exact in float32
		default:
			v[i] = r.NormFloat64() * math.Pow(2, float64(r.IntN(40)-20))
		}
	}
	return v
}

// sameBits compares bit for bit, except that any NaN equals any NaN (which
// NaN payload an operation with NaN operands gives is up to the compiler's
// choice of operand order, and Go does not specify it).
func sameBits(t *testing.T, what string, got, want []float64) {
	t.Helper()
	for i := range want {
		if math.IsNaN(got[i]) && math.IsNaN(want[i]) {
			continue
		}
		if math.Float64bits(got[i]) != math.Float64bits(want[i]) {
			t.Fatalf("%s: element %d = %v (%#x), Go %v (%#x)", what, i, got[i], math.Float64bits(got[i]), want[i], math.Float64bits(want[i]))
		}
	}
}

// TestSIMDKernelsMatchGo: the AVX-512 kernels give the Go code's bits, on
// random blocks with NaN, infinities, zeros of both signs, subnormals,
// float32 overflow and rounding ties, at every length mod 16.
func TestSIMDKernelsMatchGo(t *testing.T) {
	if !haveAVX512 {
		t.Skip("no AVX-512 on this CPU (or purego): only the Go code runs")
	}
	r := rand.New(rand.NewPCG(21, 22))
	for _, n := range []int{1, 7, 8, 9, 15, 16, 17, 31, 64, 1000, BlockSize} {
		x, y, b := randomBlock(r, n, true), randomBlock(r, n, true), randomBlock(r, n, true)
		// encode
		got := make([]byte, 2*n)
		encodeBF16(got, x)
		for i, v := range x {
			if h := uint16(got[2*i]) | uint16(got[2*i+1])<<8; h != tensors.BF16FromFloat64(v) {
				t.Fatalf("encode n=%d element %d (%v): %#04x, Go %#04x", n, i, v, h, tensors.BF16FromFloat64(v))
			}
		}
		// decode
		for _, dt := range []tensors.DType{tensors.BF16, tensors.F32} {
			raw := make([]byte, n*dt.Bits()/8)
			tensors.EncodeFloat64(raw, x, dt)
			dst, want := make([]float64, n), make([]float64, n)
			fin, ok := decodeFast(dst, raw, dt)
			tensors.DecodeFloat64(want, raw, dt)
			wantFin := true
			for _, v := range want {
				wantFin = wantFin && !math.IsInf(v, 0) && !math.IsNaN(v)
			}
			if !ok || fin != wantFin {
				t.Fatalf("decode %s n=%d: finite %v, want %v", dt, n, fin, wantFin)
			}
			sameBits(t, "decode "+dt.String(), dst, want)
		}
		// keepMagnitude, with thresholds at an existing key
		for _, w := range []float64{1, -0.7} {
			k := math.Float64bits(math.Abs(x[n/2]-b[n/2])) &^ (1 << 63)
			for _, th := range []Threshold{keepAll, keepNone, {Key: k, Cutoff: 3 + n/3}, {Key: k, Cutoff: -1}} {
				got, want := make([]float64, n), make([]float64, n)
				keepMagnitude(got, x, b, th, 5, w)
				keepMagnitudeGo(want, x, b, th, 5, w)
				sameBits(t, "keepMagnitude", got, want)
			}
			for _, rs := range []struct {
				r     Rescale
				scale float64
			}{{RescaleInverse, 0}, {RescaleL1, 1.7}, {RescaleL1, 0}, {RescaleNone, 0}} {
				got, want := make([]float64, n), make([]float64, n)
				keepRandom(got, x, b, 0xdeadbeef, 1<<40, 0.37, rs.r, rs.scale, w)
				keepRandomGo(want, x, b, 0xdeadbeef, 1<<40, 0.37, rs.r, rs.scale, w)
				sameBits(t, "keepRandom", got, want)
			}
		}
		for _, norm := range []bool{true, false} {
			got, want := make([]float64, n), make([]float64, n)
			consensus2(got, x, y, b, 0.3, -1.1, norm, 0.9)
			consensus2Go(want, x, y, b, 0.3, -1.1, norm, 0.9)
			sameBits(t, "consensus2", got, want)
			// with zeros in the deltas (trimmed entries)
			xz, yz := append([]float64(nil), x...), append([]float64(nil), y...)
			for i := range xz {
				if i%3 == 0 {
					xz[i] = 0
				}
				if i%2 == 0 {
					yz[i] = 0
				}
			}
			consensus2(got, xz, yz, b, 1, 1, norm, 1)
			consensus2Go(want, xz, yz, b, 1, 1, norm, 1)
			sameBits(t, "consensus2 zeros", got, want)
			linear2(got, x, y, b, 1.7, norm, 0.9)
			for i := range want {
				var mixed float64
				mixed += x[i]
				mixed += y[i]
				if norm {
					mixed /= 1.7
				}
				want[i] = b[i] + 0.9*mixed
			}
			sameBits(t, "linear2", got, want)
		}
		for _, models := range []int{1, 3, 4, 9} {
			var ds [][]float64
			var ws []float64
			for i := range models {
				v := randomBlock(r, n, i != 1)
				for k := range v {
					if (k+i)%3 == 0 {
						v[k] = 0
					}
				}
				ds = append(ds, v)
				ws = append(ws, float64(i)-0.5)
			}
			for _, norm := range []bool{true, false} {
				got, want := make([]float64, n), make([]float64, n)
				consensus(got, ds, b, ws, norm, 1.3)
				consensusGo(want, ds, b, ws, norm, 1.3)
				sameBits(t, fmt.Sprintf("consensus of %d", models), got, want)
				linearN(got, ds, b, 0.7, norm, 1.3)
				for k := range want {
					var mixed float64
					for i := range ds {
						mixed += ds[i][k]
					}
					if norm {
						mixed /= 0.7
					}
					want[k] = b[k] + 1.3*mixed
				}
				sameBits(t, fmt.Sprintf("linear of %d", models), got, want)
			}
		}
		got2, want2 := make([]float64, n), make([]float64, n)
		lerp(got2, x, y, 0.3, 0.7000000001)
		for i := range want2 {
			want2[i] = 0.3*x[i] + 0.7000000001*y[i]
		}
		sameBits(t, "lerp", got2, want2)
	}
}
