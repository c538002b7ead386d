package bfgemm

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

func bf16(f float32) uint16 { return uint16(math.Float32bits(f) >> 16) } // truncation is fine for test data
func f32(h uint16) float64  { return float64(math.Float32frombits(uint32(h) << 16)) }

// operand stores an m x k matrix of random bf16 values in a layout, with
// some padding between rows, and returns it with the values.
func operand(r *rand.Rand, m, k int, layout Layout) (Operand, []uint16) {
	vals := make([]uint16, m*k)
	for i := range vals {
		vals[i] = bf16(float32(r.NormFloat64()))
	}
	if layout == Rows {
		ld := k + 6
		d := make([]uint16, m*ld)
		for i := range m {
			copy(d[i*ld:], vals[i*k:i*k+k])
		}
		return Operand{Data: d, Ld: ld, Layout: Rows}, vals
	}
	ld := 2*m + 4
	d := make([]uint16, (k/2)*ld)
	for i := range m {
		for p := range k {
			d[(p/2)*ld+2*i+p%2] = vals[i*k+p]
		}
	}
	return Operand{Data: d, Ld: ld, Layout: PairRows}, vals
}

// TestMulABt compares with a float64 product of the same bf16 values, for
// both layouts of both operands, edge tiles, K blocks and accumulation.
func TestMulABt(t *testing.T) {
	if !Available() {
		t.Skip("no AVX512-BF16 on this machine")
	}
	r := rand.New(rand.NewPCG(1, 2))
	for _, sh := range [][3]int{{1, 1, 2}, {12, 32, 2}, {13, 33, 4}, {30, 70, 600}, {100, 65, 1030}, {24, 64, 514}, {1600, 40, 10}} {
		m, n, k := sh[0], sh[1], sh[2]
		for _, la := range []Layout{Rows, PairRows} {
			for _, lb := range []Layout{Rows, PairRows} {
				for _, acc := range []bool{false, true} {
					a, av := operand(r, m, k, la)
					b, bv := operand(r, n, k, lb)
					ldc := n + 3
					c := make([]float32, m*ldc)
					for i := range c {
						c[i] = float32(i % 7)
					}
					init := append([]float32(nil), c...)
					MulABt(m, n, k, a, b, c, ldc, acc, Options{})
					for i := range m {
						for j := range n {
							want, mag := 0.0, 0.0
							for p := range k {
								x := f32(av[i*k+p]) * f32(bv[j*k+p])
								want += x
								mag += math.Abs(x)
							}
							if acc {
								want += float64(init[i*ldc+j])
								mag += math.Abs(float64(init[i*ldc+j]))
							}
							got := float64(c[i*ldc+j])
							if math.Abs(got-want) > 1e-6*mag+1e-30 {
								t.Fatalf("%v layouts %d/%d acc %v: C[%d,%d] = %v, want %v", sh, la, lb, acc, i, j, got, want)
							}
						}
						for j := n; j < ldc; j++ {
							if c[i*ldc+j] != init[i*ldc+j] {
								t.Fatalf("%v: wrote outside C", sh)
							}
						}
					}
				}
			}
		}
	}
}

func BenchmarkMulABt(b *testing.B) {
	if !Available() {
		b.Skip("no AVX512-BF16")
	}
	r := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{1024, 4096} {
		k := 1024
		for _, l := range []Layout{Rows, PairRows} {
			b.Run(fmt.Sprintf("n=%d/k=%d/layout=%d", n, k, l), func(b *testing.B) {
				x, _ := operand(r, n, k, l)
				y, _ := operand(r, n, k, l)
				c := make([]float32, n*n)
				start := time.Now()
				for b.Loop() {
					MulABt(n, n, k, x, y, c, n, false, Options{})
				}
				b.ReportMetric(2*float64(n)*float64(n)*float64(k)*float64(b.N)/time.Since(start).Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}
