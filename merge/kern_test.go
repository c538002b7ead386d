package merge

import (
	"context"
	"math"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"github.com/wtool/wtool/tensors"
)

func benchInputs(n, k int) ([]*Input, *Input) {
	r := rand.New(rand.NewPCG(1, 2))
	mk := func() *Input {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(r.NormFloat64())
		}
		x, _ := tensors.FromFloat32("w", tensors.BF16, []int64{int64(n)}, v)
		return &Input{File: "f", Tensor: "w", DType: tensors.BF16, Shape: x.Shape, Data: x.Data}
	}
	var ms []*Input
	for range k {
		ms = append(ms, mk())
	}
	return ms, mk()
}

func benchKernel(b *testing.B, sp Sparsify, consensus bool) {
	const n = 1 << 22
	ms, base := benchInputs(n, 2)
	t := &TensorJob{Job: &Job{Report: &Report{}}, Name: "w", Shape: []int64{n}, N: n, DType: tensors.BF16, workers: 1}
	o := TaskVectorOptions{Weights: []float64{1, 1}, Densities: []float64{0.5, 0.5}, Sparsify: sp, Consensus: consensus, Normalize: true}
	dst := make([]byte, 2*n)
	b.SetBytes(n)
	c0 := cpuTime()
	defer func() { b.ReportMetric(float64(cpuTime()-c0)/float64(b.N)/n, "cpu-ns/elem") }()
	for b.Loop() {
		k, err := taskVectorKernel(context.Background(), t, ms, base, o, 1)
		if err != nil {
			b.Fatal(err)
		}
		if err := elementwise(context.Background(), k, 0, n, tensors.BF16, dst, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkTIES(b *testing.B)            { benchKernel(b, Magnitude, true) }
func BenchmarkTaskVecNoSparse(b *testing.B) { benchKernel(b, NoSparsify, true) }
func BenchmarkSelect(b *testing.B) {
	const n = 1 << 22
	ms, base := benchInputs(n, 2)
	t := &TensorJob{Job: &Job{Report: &Report{}}, Name: "w", Shape: []int64{n}, N: n, DType: tensors.BF16, workers: 1}
	b.SetBytes(n)
	c0 := cpuTime()
	defer func() { b.ReportMetric(float64(cpuTime()-c0)/float64(b.N)/n, "cpu-ns/elem") }()
	ins := append(append([]*Input{}, ms...), base)
	for b.Loop() {
		var sels []*selection
		var fns []func(in [][]float64, keys []uint64)
		for i := range 2 {
			sels = append(sels, newSelection(n/2, n))
			fns = append(fns, func(in [][]float64, keys []uint64) {
				x, bb := in[i], in[2]
				for e := range keys {
					keys[e] = math.Float64bits(math.Abs(x[e] - bb[e]))
				}
			})
		}
		if err := selectTop(context.Background(), t, ins, [][]int{{0, 2}, {1, 2}}, sels, fns); err != nil {
			b.Fatal(err)
		}
	}
}
func BenchmarkDARETies(b *testing.B) { benchKernel(b, Random, true) }
func BenchmarkSlerpK(b *testing.B) {
	const n = 1 << 22
	ms, _ := benchInputs(n, 2)
	t := &TensorJob{Job: &Job{Report: &Report{}}, Name: "w", Shape: []int64{n}, N: n, DType: tensors.BF16, workers: 1}
	dst := make([]byte, 2*n)
	b.SetBytes(n)
	c0 := cpuTime()
	defer func() { b.ReportMetric(float64(cpuTime()-c0)/float64(b.N)/n, "cpu-ns/elem") }()
	for b.Loop() {
		k, _ := slerpKernel(context.Background(), t, ms[0], ms[1], 0.3)
		elementwise(context.Background(), k, 0, n, tensors.BF16, dst, nil)
	}
}
func BenchmarkDecode(b *testing.B) {
	const n = 1 << 22
	ms, _ := benchInputs(n, 1)
	dst := make([]float64, BlockSize)
	b.SetBytes(n)
	c0 := cpuTime()
	defer func() { b.ReportMetric(float64(cpuTime()-c0)/float64(b.N)/n, "cpu-ns/elem") }()
	for b.Loop() {
		for lo := 0; lo < n; lo += BlockSize {
			ms[0].Decode(dst, lo)
		}
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func BenchmarkConsensusOnly(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	d := [][]float64{make([]float64, BlockSize), make([]float64, BlockSize)}
	base := make([]float64, BlockSize)
	out := make([]float64, BlockSize)
	for i := range d {
		for k := range d[i] {
			if r.IntN(2) == 0 {
				d[i][k] = r.NormFloat64()
			}
		}
	}
	w := []float64{1, 1}
	b.SetBytes(BlockSize)
	for b.Loop() {
		consensus(out, d, base, w, true, 1)
	}
}

func BenchmarkKeepMagOnly(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	x, base, d := make([]float64, BlockSize), make([]float64, BlockSize), make([]float64, BlockSize)
	for k := range x {
		x[k] = r.NormFloat64()
	}
	b.SetBytes(BlockSize)
	for b.Loop() {
		keepMagnitude(d, x, base, Threshold{Key: math.Float64bits(0.67), Cutoff: 100}, 0, 1)
	}
}

func BenchmarkKeepRandOnly(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	x, base, d := make([]float64, BlockSize), make([]float64, BlockSize), make([]float64, BlockSize)
	for k := range x {
		x[k] = r.NormFloat64()
	}
	b.SetBytes(BlockSize)
	for b.Loop() {
		keepRandom(d, x, base, 12345, 0, 0.5, RescaleInverse, 0, 1)
	}
}

var sinkF float64

func BenchmarkCalibrateSum(b *testing.B) {
	x := make([]float64, BlockSize)
	for i := range x {
		x[i] = float64(i)
	}
	b.SetBytes(BlockSize)
	for b.Loop() {
		var s0, s1, s2, s3 float64
		for i := 0; i < len(x); i += 4 {
			s0 += x[i]
			s1 += x[i+1]
			s2 += x[i+2]
			s3 += x[i+3]
		}
		sinkF = s0 + s1 + s2 + s3
	}
}

func TestDecodeFastFinite(t *testing.T) {
	for _, c := range []struct {
		dt   tensors.DType
		v    float32
		fine bool
	}{{tensors.BF16, 1, true}, {tensors.BF16, float32(math.Inf(-1)), false}, {tensors.BF16, float32(math.NaN()), false},
		{tensors.BF16, 3e38, true}, {tensors.F16, 65504, true}, {tensors.F16, float32(math.Inf(1)), false},
		{tensors.F32, 3.4e38, true}, {tensors.F32, float32(math.NaN()), false}, {tensors.F32, -0, true}} {
		v := []float32{1, 2, c.v, 4}
		x, _ := tensors.FromFloat32("", c.dt, []int64{4}, v)
		dst := make([]float64, 4)
		fin, ok := decodeFast(dst, x.Data, c.dt)
		if !ok || fin != c.fine {
			t.Errorf("%s %v: finite %v ok %v", c.dt, c.v, fin, ok)
		}
	}
}
