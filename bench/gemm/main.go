// Copyright ©2025 The wtool Authors.

// Command gemm times dense matrix products with wtool's linalg kernels and
// with gonum's pure-Go BLAS, for comparison with numpy (see compare.sh).
//
// Usage:
//
//	go run ./bench/gemm [-shapes 2048x2048x2048,4096x4096x266] [-mintime 1s] [-impl linalg,gonum] [-prec 32,64]
//
// A shape MxKxN is the product of an M×K matrix A and a K×N matrix B
// (C = A·B, no transposes, beta = 0). For every implementation, precision
// and shape one tab-separated line is printed:
//
//	impl  prec  M  K  N  best_seconds  GFLOP/s
//
// The time is the best of repeated runs (after one warm-up run) that take
// at least -mintime in total, and at least -minreps runs.
package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"time"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"

	"github.com/wtool/wtool/tensors/linalg"
)

// DefaultShapes are the products benchmarked by default (MxKxN).
const DefaultShapes = "512x512x512,1024x1024x1024,2048x2048x2048,4096x4096x266,8192x1024x1024"

type shape struct{ m, k, n int }

func parseShapes(s string) ([]shape, error) {
	var r []shape
	for _, f := range strings.Split(s, ",") {
		parts := strings.Split(strings.TrimSpace(f), "x")
		if len(parts) != 3 {
			return nil, fmt.Errorf("bad shape %q, want MxKxN", f)
		}
		var d [3]int
		for i, p := range parts {
			v, err := strconv.Atoi(p)
			if err != nil || v <= 0 {
				return nil, fmt.Errorf("bad shape %q", f)
			}
			d[i] = v
		}
		r = append(r, shape{d[0], d[1], d[2]})
	}
	return r, nil
}

func main() {
	shapes := flag.String("shapes", DefaultShapes, "comma-separated list of MxKxN products")
	impls := flag.String("impl", "linalg,gonum", "implementations to time: linalg (wtool), gonum (gonum pure Go)")
	precs := flag.String("prec", "32,64", "precisions to time: 32, 64")
	minTime := flag.Duration("mintime", time.Second, "minimum total time per measurement")
	minReps := flag.Int("minreps", 3, "minimum number of timed runs per measurement")
	flag.Parse()

	list, err := parseShapes(*shapes)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	for _, impl := range strings.Split(*impls, ",") {
		var b32 blas.Float32
		var b64 blas.Float64
		switch impl {
		case "linalg":
			b32, b64 = linalg.Implementation{}, linalg.Implementation{}
		case "gonum":
			b32, b64 = gonum.Implementation{}, gonum.Implementation{}
		default:
			fmt.Fprintf(os.Stderr, "unknown implementation %q\n", impl)
			os.Exit(2)
		}
		for _, prec := range strings.Split(*precs, ",") {
			for _, s := range list {
				var run func()
				switch prec {
				case "32":
					run = sgemmRunner(b32, s)
				case "64":
					run = dgemmRunner(b64, s)
				default:
					fmt.Fprintf(os.Stderr, "unknown precision %q\n", prec)
					os.Exit(2)
				}
				best := timeIt(run, *minTime, *minReps)
				gflops := 2 * float64(s.m) * float64(s.n) * float64(s.k) / best.Seconds() / 1e9
				fmt.Printf("%s\t%s\t%d\t%d\t%d\t%.6f\t%.2f\n", impl, prec, s.m, s.k, s.n, best.Seconds(), gflops)
			}
		}
	}
}

// timeIt runs f once to warm up and then repeatedly, returning the best time.
func timeIt(f func(), minTime time.Duration, minReps int) time.Duration {
	f()
	best := time.Duration(1<<63 - 1)
	start := time.Now()
	for reps := 0; reps < minReps || time.Since(start) < minTime; reps++ {
		t0 := time.Now()
		f()
		best = min(best, time.Since(t0))
	}
	return best
}

func sgemmRunner(impl blas.Float32, s shape) func() {
	rnd := rand.New(rand.NewPCG(1, 2))
	a := make([]float32, s.m*s.k)
	b := make([]float32, s.k*s.n)
	c := make([]float32, s.m*s.n)
	for i := range a {
		a[i] = rnd.Float32()*2 - 1
	}
	for i := range b {
		b[i] = rnd.Float32()*2 - 1
	}
	return func() {
		impl.Sgemm(blas.NoTrans, blas.NoTrans, s.m, s.n, s.k, 1, a, s.k, b, s.n, 0, c, s.n)
	}
}

func dgemmRunner(impl blas.Float64, s shape) func() {
	rnd := rand.New(rand.NewPCG(1, 2))
	a := make([]float64, s.m*s.k)
	b := make([]float64, s.k*s.n)
	c := make([]float64, s.m*s.n)
	for i := range a {
		a[i] = rnd.Float64()*2 - 1
	}
	for i := range b {
		b[i] = rnd.Float64()*2 - 1
	}
	return func() {
		impl.Dgemm(blas.NoTrans, blas.NoTrans, s.m, s.n, s.k, 1, a, s.k, b, s.n, 0, c, s.n)
	}
}
