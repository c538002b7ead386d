package lap

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"testing"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"
)

// Benchmarks on the matrices of bench/lap/compare.py (same kinds, though
// not the same random numbers; compare.sh times scipy on identical
// matrices). The weight-matching kinds are maximised, as weight matching
// does, uniform is minimised. Run e.g.
//
//	go test -run XXX -bench . -benchtime 3x ./permute/lap/
//
// The matrices up to n = 4096 take a few seconds to generate, once.

var benchMatrices sync.Map // key string -> []float64

// benchMatrix returns an n x n matrix of the given kind:
//
//	indep      C = A B^T, A and B independent n x n/4 standard Gaussian
//	permnoisy  C = A B^T, B = A[P] + 0.5 G (a row-permuted noisy copy)
//	permnoisy16 the same with noise 16: a much harder instance
//	uniform    uniform on [0, 1)
func benchMatrix(kind string, n int) []float64 {
	key := fmt.Sprint(kind, n)
	if c, ok := benchMatrices.Load(key); ok {
		return c.([]float64)
	}
	r := rand.New(rand.NewPCG(uint64(n), 99))
	var c []float64
	switch kind {
	case "uniform":
		c = make([]float64, n*n)
		for k := range c {
			c[k] = r.Float64()
		}
	default:
		d := n / 4
		a := gaussian(r, n, d)
		var b blas64.General
		switch kind {
		case "indep":
			b = gaussian(r, n, d)
		case "permnoisy", "permnoisy16":
			noise := 0.5
			if kind == "permnoisy16" {
				noise = 16
			}
			b = gaussian(r, n, d)
			perm := r.Perm(n)
			for i := range n {
				for k := range d {
					b.Data[i*d+k] = a.Data[perm[i]*d+k] + noise*b.Data[i*d+k]
				}
			}
		default:
			panic("unknown kind " + kind)
		}
		out := blas64.General{Rows: n, Cols: n, Stride: n, Data: make([]float64, n*n)}
		blas64.Gemm(blas.NoTrans, blas.Trans, 1, a, b, 0, out)
		c = out.Data
	}
	benchMatrices.Store(key, c)
	return c
}

func gaussian(r *rand.Rand, rows, cols int) blas64.General {
	g := blas64.General{Rows: rows, Cols: cols, Stride: cols, Data: make([]float64, rows*cols)}
	for k := range g.Data {
		g.Data[k] = r.NormFloat64()
	}
	return g
}

func BenchmarkSolve(b *testing.B) {
	for _, kind := range []string{"indep", "permnoisy", "permnoisy16", "uniform"} {
		for _, n := range []int{512, 1024, 2048, 4096} {
			b.Run(fmt.Sprintf("%s/n=%d", kind, n), func(b *testing.B) {
				c := benchMatrix(kind, n)
				maximize := kind != "uniform"
				var s Solver
				var scanned int64
				for b.Loop() {
					if _, err := s.Solve(c, n, n, maximize); err != nil {
						b.Fatal(err)
					}
					scanned += s.Stats.Scanned + int64(s.Stats.ARRSteps)
				}
				b.ReportMetric(float64(scanned)/float64(b.N), "rowscans/op")
			})
		}
	}
}

// BenchmarkWarmStart solves, alternately, two perturbations of the same
// matrix (C + 0.01 std(C) G_1 and C + 0.01 std(C) G_2), cold and with a
// warm-starting Solver.
func BenchmarkWarmStart(b *testing.B) {
	for _, kind := range []string{"indep", "permnoisy16"} {
		for _, n := range []int{1024, 4096} {
			c := benchMatrix(kind, n)
			pair := perturbedPair(c, 0.01)
			for _, warm := range []bool{false, true} {
				b.Run(fmt.Sprintf("%s/n=%d/warm=%v", kind, n, warm), func(b *testing.B) {
					s := Solver{WarmStart: warm}
					if _, err := s.Solve(pair[1], n, n, true); err != nil {
						b.Fatal(err)
					}
					k := 0
					for b.Loop() {
						if _, err := s.Solve(pair[k%2], n, n, true); err != nil {
							b.Fatal(err)
						}
						k++
					}
				})
			}
		}
	}
}

func perturbedPair(c []float64, eps float64) [2][]float64 {
	mean, sq := 0.0, 0.0
	for _, x := range c {
		mean += x
		sq += x * x
	}
	mean /= float64(len(c))
	std := sq/float64(len(c)) - mean*mean
	if std > 0 {
		std = math.Sqrt(std)
	}
	r := rand.New(rand.NewPCG(5, 5))
	var out [2][]float64
	for t := range out {
		out[t] = make([]float64, len(c))
		for k, x := range c {
			out[t][k] = x + eps*std*r.NormFloat64()
		}
	}
	return out
}
