// Command lap times the Go LAP solver (package permute/lap) on a cost matrix
// stored as raw little-endian float64 values in row-major order, such as the
// one written by compare.py, and prints one JSON line with the best time and
// the optimal cost. compare.sh runs it next to scipy and prints the ratio.
//
// Usage:
//
//	go run ./bench/lap -file m.f64 -rows 4096 -max -reps 3
//
// With -warm K it instead measures warm starts: it solves a sequence of K
// matrices C_t = C + eps*std(C)*N_t (N_t i.i.d. standard Gaussian, a new
// draw each step, seeded) once with a fresh Solver each time (cold) and once
// with one Solver that has WarmStart set, checks that both give the same
// optimal cost, and prints one JSON line per step.
package main

import (
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/wtool/wtool/permute/lap"
)

func main() {
	file := flag.String("file", "", "raw little-endian float64 matrix, row-major")
	rows := flag.Int("rows", 0, "number of rows")
	cols := flag.Int("cols", 0, "number of columns (default: rows)")
	maximize := flag.Bool("max", false, "maximise instead of minimise")
	reps := flag.Int("reps", 3, "timed runs; the minimum is reported")
	warm := flag.Int("warm", 0, "if > 0, time a sequence of this many perturbed matrices, cold and warm")
	eps := flag.Float64("eps", 0.01, "relative size of the perturbations for -warm")
	prof := flag.String("cpuprofile", "", "write a CPU profile to this file")
	flag.Parse()
	if *cols == 0 {
		*cols = *rows
	}
	if err := run(*file, *rows, *cols, *maximize, *reps, *warm, *eps, *prof); err != nil {
		fmt.Fprintln(os.Stderr, "lap:", err)
		os.Exit(1)
	}
}

func run(file string, rows, cols int, maximize bool, reps, warm int, eps float64, prof string) error {
	c, err := load(file, rows, cols)
	if err != nil {
		return err
	}
	if prof != "" {
		f, err := os.Create(prof)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if warm > 0 {
		return warmSequence(c, rows, cols, maximize, warm, eps)
	}

	best, bestCPU := math.Inf(1), math.Inf(1)
	var a lap.Assignment
	var st lap.Stats
	for range max(reps, 1) {
		var s lap.Solver // cold start each time, like scipy
		c0 := cpuTime()
		t0 := time.Now()
		a, err = s.Solve(c, rows, cols, maximize)
		dt := time.Since(t0).Seconds()
		bestCPU = min(bestCPU, cpuTime()-c0)
		if err != nil {
			return err
		}
		best = min(best, dt)
		st = s.Stats
	}
	return json.NewEncoder(os.Stdout).Encode(map[string]any{
		"impl":          "go",
		"rows":          rows,
		"cols":          cols,
		"maximize":      maximize,
		"seconds":       best,
		"cpuSeconds":    bestCPU,
		"cost":          a.Cost,
		"initAssigned":  st.InitAssigned,
		"arrSteps":      st.ARRSteps,
		"augmentations": st.Augmentations,
		"scanned":       st.Scanned,
	})
}

func warmSequence(c []float64, rows, cols int, maximize bool, steps int, eps float64) error {
	mean, sq := 0.0, 0.0
	for _, x := range c {
		mean += x
		sq += x * x
	}
	mean /= float64(len(c))
	std := math.Sqrt(max(sq/float64(len(c))-mean*mean, 0))
	r := rand.New(rand.NewPCG(7, uint64(steps)))
	cur := make([]float64, len(c))
	ws := lap.Solver{WarmStart: true}
	var coldTot, warmTot float64
	for t := range steps {
		for k, x := range c {
			cur[k] = x + eps*std*r.NormFloat64()
		}
		var cs lap.Solver
		t0 := time.Now()
		ca, err := cs.Solve(cur, rows, cols, maximize)
		cold := time.Since(t0).Seconds()
		if err != nil {
			return err
		}
		t0 = time.Now()
		wa, err := ws.Solve(cur, rows, cols, maximize)
		wt := time.Since(t0).Seconds()
		if err != nil {
			return err
		}
		if math.Abs(ca.Cost-wa.Cost) > 1e-9*math.Abs(ca.Cost) {
			return fmt.Errorf("step %d: warm cost %v != cold cost %v", t, wa.Cost, ca.Cost)
		}
		coldTot += cold
		if t > 0 {
			warmTot += wt
		} else {
			warmTot += cold // the first warm solve is a cold one
		}
		if err := json.NewEncoder(os.Stdout).Encode(map[string]any{
			"step": t, "eps": eps, "cold": cold, "warm": wt, "cost": ca.Cost,
			"coldScanned": cs.Stats.Scanned, "warmScanned": ws.Stats.Scanned,
			"coldARR": cs.Stats.ARRSteps, "warmARR": ws.Stats.ARRSteps,
			"warmUsed": ws.Stats.Warm,
		}); err != nil {
			return err
		}
	}
	fmt.Printf("total over %d steps: cold %.3fs, warm %.3fs (ratio %.2f)\n", steps, coldTot, warmTot, warmTot/coldTot)
	return nil
}

func load(file string, rows, cols int) ([]float64, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	if len(raw) != 8*rows*cols {
		return nil, fmt.Errorf("%s has %d bytes, want 8*%d*%d", file, len(raw), rows, cols)
	}
	c := make([]float64, rows*cols)
	for k := range c {
		c[k] = math.Float64frombits(binary.LittleEndian.Uint64(raw[8*k:]))
	}
	return c, nil
}

// cpuTime returns the user+system CPU time of the process in seconds.
func cpuTime() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}
