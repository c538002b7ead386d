// Command wm times wtool's weight matching on two checkpoints (MergeMany on
// three or more) for a fixed number of sweeps (bench/wm.sh compares it with
// bench/wm_numpy.py; bench/wm8b.sh runs it on 8B-shaped checkpoints).
//
// It prints "seconds sweeps distance_before distance_after" on stdout and,
// on stderr, where the time went: the cost matrices (decoding and GEMM,
// with the GEMM's GFLOP/s), the assignment solves and the passes over the
// models, with the groups solved and skipped.
package main

import (
	"context"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/permute"
	"github.com/wtool/wtool/permute/bfgemm"
	"github.com/wtool/wtool/tensors/linalg"
)

func main() {
	sweeps := flag.Int("sweeps", 3, "sweeps to run (no early stop); MergeMany: rounds")
	noSkip := flag.Bool("noskip", false, "solve every group in every sweep")
	cache := flag.String("cache", "1GiB", "bytes of each model kept mapped between uses")
	seed := flag.Uint64("seed", 0, "seed of the group order")
	profile := flag.String("cpuprofile", "", "write a CPU profile to this file")
	peak := flag.Int("peak", 0, "instead: print the GFLOP/s (of wall time and per CPU-second) of the bf16 cost GEMM and of the float32 GEMM on n x n x n random matrices")
	flag.Parse()
	if *peak > 0 {
		peakBF16(*peak)
		return
	}
	if flag.NArg() < 2 {
		fmt.Fprintln(os.Stderr, "usage: wm [-sweeps N] [-noskip] [-cache SIZE] MODEL_A MODEL_B [MODEL_C...]")
		os.Exit(2)
	}
	var models []*checkpoint.Model
	for _, p := range flag.Args() {
		m, err := checkpoint.Open(p)
		check(err)
		models = append(models, m)
	}
	spec, err := permute.BuiltinSpec("auto", models[0], nil)
	check(err)
	cacheBytes, err := checkpoint.ParseSize(*cache)
	if *cache == "0" {
		cacheBytes, err = -1, nil
	}
	check(err)
	if *profile != "" {
		f, err := os.Create(*profile)
		check(err)
		check(pprof.StartCPUProfile(f))
		defer pprof.StopCPUProfile()
	}
	shapes := permute.Shapes(models[0])
	start := time.Now()
	last := start
	opts := permute.MatchOptions{MaxSweeps: *sweeps, Tol: -1, NoSkip: *noSkip, CacheBytes: cacheBytes, Seed: *seed,
		OnSweep: func(ev permute.SweepEvent) {
			fmt.Fprintf(os.Stderr, "sweep %d: %d groups solved, %d skipped, %d changed, %.1f s\n",
				ev.Sweep, ev.Solved, ev.Skipped, ev.Changed, time.Since(last).Seconds())
			last = time.Now()
		}}
	res, err := permute.MatchModels(context.Background(), spec, models, opts)
	check(err)
	el := time.Since(start).Seconds()
	fmt.Printf("%.3f %d %.6g %.6g\n", el, res.Sweeps, res.DistanceBefore, res.DistanceAfter)
	st := res.Stats
	fmt.Fprintf(os.Stderr, "models %d, groups %d, one full sweep %.3g FLOP\n", len(models), len(spec.Groups), permute.SweepFLOPs(spec, shapes))
	fmt.Fprintf(os.Stderr, "total %.1f s: cost matrices %.1f s (GEMM %.1f s, %.4g FLOP, %.1f GFLOP/s; decoding and the rest %.1f s), assignment solves %.1f s (overlapping), passes over the models %.1f s; %d solves, %d skipped\n",
		el, st.CostTime.Seconds(), st.GEMMTime.Seconds(), st.GEMMFLOPs, st.GEMMFLOPs/st.GEMMTime.Seconds()/1e9,
		(st.CostTime - st.GEMMTime).Seconds(), st.SolveTime.Seconds(), st.PassTime.Seconds(), res.Solved, res.Skipped)
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "wm:", err)
		os.Exit(1)
	}
}

// peakBF16 times the bf16 GEMM the cost matrices use, and the float32 GEMM
// of tensors/linalg, on n x n x n random matrices (best of 3). Besides
// GFLOP/s of wall time it prints GFLOP per CPU-second (user + system time
// of the process), which other processes on a shared machine disturb much
// less.
func peakBF16(n int) {
	flop := 2 * float64(n) * float64(n) * float64(n)
	r := rand.New(rand.NewPCG(1, 2))
	time3 := func(f func()) (wall, cpu float64) {
		wall, cpu = math.Inf(1), math.Inf(1)
		for range 3 {
			c0 := cpuSeconds()
			t := time.Now()
			f()
			wall = min(wall, time.Since(t).Seconds())
			cpu = min(cpu, cpuSeconds()-c0)
		}
		return wall, cpu
	}
	c := make([]float32, n*n)
	if bfgemm.Available() {
		mk := func() bfgemm.Operand {
			d := make([]uint16, n*n)
			for i := range d {
				d[i] = uint16(math.Float32bits(float32(r.NormFloat64())) >> 16)
			}
			return bfgemm.Operand{Data: d, Ld: 2 * n, Layout: bfgemm.PairRows}
		}
		a, b := mk(), mk()
		wall, cpu := time3(func() { bfgemm.MulABt(n, n, n, a, b, c, n, false, bfgemm.Options{}) })
		fmt.Printf("bf16\t%d\t%.6f\t%.2f\t%.2f\n", n, wall, flop/wall/1e9, flop/cpu/1e9)
	} else {
		fmt.Println("bf16 GEMM: not available (no AVX512-BF16)")
	}
	a, b := make([]float32, n*n), make([]float32, n*n)
	for i := range a {
		a[i], b[i] = float32(r.NormFloat64()), float32(r.NormFloat64())
	}
	wall, cpu := time3(func() { linalg.MatMul32(c, a, b, n, n, n, false, true) })
	fmt.Printf("f32\t%d\t%.6f\t%.2f\t%.2f\n", n, wall, flop/wall/1e9, flop/cpu/1e9)
}

// cpuSeconds is the process's user and system time.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}
