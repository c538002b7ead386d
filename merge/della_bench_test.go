package merge

import (
	"context"
	"testing"

	"github.com/wtool/wtool/tensors"
)

// benchRows runs the task-vector kernel of two models on a [rows, cols]
// BF16 tensor, as BenchmarkTIES does on a flat one.
func benchRows(b *testing.B, o TaskVectorOptions) {
	const rows, cols = 1024, 4096
	const n = rows * cols
	ms, base := benchInputs(n, 2)
	shape := []int64{rows, cols}
	for _, in := range append(ms, base) {
		in.Shape = shape
	}
	t := &TensorJob{Job: &Job{Report: &Report{}}, Name: "w", Shape: shape, N: n, DType: tensors.BF16, workers: 1}
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

// BenchmarkDella: DELLA (density 0.5, epsilon 0.15, inverse rescaling,
// TIES' consensus) on a [1024, 4096] tensor; BenchmarkDellaTIES is TIES on
// the same tensor, the reference for the ratio.
func BenchmarkDella(b *testing.B) {
	benchRows(b, TaskVectorOptions{Weights: []float64{1, 1}, Densities: []float64{0.5, 0.15, 0.5, 0.15}, Sparsify: Magnitude,
		Rescale: RescaleInverse, Consensus: true, Normalize: true, sparsifier: dellaSparsifier{seed: 1, inverse: true}})
}

// BenchmarkDellaTIES is TIES (density 0.5) on BenchmarkDella's tensor.
func BenchmarkDellaTIES(b *testing.B) {
	benchRows(b, TaskVectorOptions{Weights: []float64{1, 1}, Densities: []float64{0.5, 0.5}, Sparsify: Magnitude, Consensus: true, Normalize: true})
}

// BenchmarkDellaL1 is DELLA as mergekit runs it by default (rescale: L1,
// which needs a pass for the norms before the merge pass).
func BenchmarkDellaL1(b *testing.B) {
	benchRows(b, TaskVectorOptions{Weights: []float64{1, 1}, Densities: []float64{0.5, 0.15, 0.5, 0.15}, Sparsify: Magnitude,
		Rescale: RescaleL1, Consensus: true, Normalize: true, sparsifier: dellaSparsifier{seed: 1}})
}
