package safetensors

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/wtool/wtool/tensors"
)

// TestFirstNonFiniteMatchesScalar compares the word-at-a-time scan with a
// plain loop over every value, for every dtype, on random data with NaN,
// Inf, the largest finite values and subnormals planted at random places.
func TestFirstNonFiniteMatchesScalar(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	scalar := func(dt tensors.DType, data []byte) int {
		w := dt.Bits() / 8
		for k := 0; k+w <= len(data); k += w {
			var v float64
			switch dt {
			case tensors.BF16:
				v = float64(tensors.BF16ToFloat32(binary.LittleEndian.Uint16(data[k:])))
			case tensors.F16:
				v = float64(tensors.F16ToFloat32(binary.LittleEndian.Uint16(data[k:])))
			case tensors.F32:
				v = float64(math.Float32frombits(binary.LittleEndian.Uint32(data[k:])))
			case tensors.F64:
				v = math.Float64frombits(binary.LittleEndian.Uint64(data[k:]))
			}
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return k / w
			}
		}
		return -1
	}
	specials := map[tensors.DType][]uint64{
		tensors.BF16: {0x7f80, 0xff80, 0x7fc0, 0x7f7f, 0xff7f, 0x0001, 0x8000, 0x7f81},
		tensors.F16:  {0x7c00, 0xfc00, 0x7e00, 0x7bff, 0xfbff, 0x0001, 0x7c01},
		tensors.F32:  {0x7f800000, 0xff800000, 0x7fc00000, 0x7f7fffff, 0x00000001, 0x7f800001},
		tensors.F64:  {0x7ff0000000000000, 0xfff8000000000000, 0x7fefffffffffffff, 1},
	}
	for dt, sp := range specials {
		w := dt.Bits() / 8
		for trial := range 2000 {
			n := 1 + rng.IntN(40)
			data := make([]byte, n*w)
			for i := range data {
				data[i] = byte(rng.Uint32())
			}
			// mostly finite values: clear exponent bits, then plant specials
			for i := range n {
				switch w {
				case 2:
					binary.LittleEndian.PutUint16(data[i*2:], binary.LittleEndian.Uint16(data[i*2:])&0x3fff)
				case 4:
					binary.LittleEndian.PutUint32(data[i*4:], binary.LittleEndian.Uint32(data[i*4:])&0x3fffffff)
				case 8:
					binary.LittleEndian.PutUint64(data[i*8:], binary.LittleEndian.Uint64(data[i*8:])&0x3fffffffffffffff)
				}
				if rng.IntN(8) == 0 || trial%50 == 0 {
					v := sp[rng.IntN(len(sp))]
					for b := range w {
						data[i*w+b] = byte(v >> (8 * b))
					}
				}
			}
			got, _ := firstNonFinite(dt, data)
			if want := scalar(dt, data); got != want {
				t.Fatalf("%s %x: got %d, want %d", dt, data, got, want)
			}
		}
	}
}

func BenchmarkCheckFiniteBF16(b *testing.B) {
	data := make([]byte, 64<<20)
	for i := range data {
		data[i] = byte(i % 61)
	}
	e := Entry{Name: "x", DType: tensors.BF16}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if err := CheckFinite(e, 0, data); err != nil {
			b.Fatal(err)
		}
	}
}
