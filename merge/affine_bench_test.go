package merge

import (
	"testing"

	"github.com/wtool/wtool/tensors"
)

func BenchmarkFuseBF16(b *testing.B) {
	const n = 1 << 20
	x, y, d := make([]byte, 2*n), make([]byte, 2*n), make([]byte, 2*n)
	for i := range x {
		x[i], y[i] = byte(i*7)&0x3f, byte(i*13)&0x3f
	}
	ins := []input{{data: x, dt: tensors.BF16, c: 0.5}, {data: y, dt: tensors.BF16, c: 0.5}}
	b.SetBytes(2 * n)
	for b.Loop() {
		fuseBF16(ins, tensors.BF16, d, 0, n, false)
	}
}
