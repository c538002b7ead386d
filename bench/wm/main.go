// Command wm times wtool's weight matching on two checkpoints for a fixed
// number of sweeps (bench/wm.sh compares it with bench/wm_numpy.py).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/permute"
)

func main() {
	sweeps := flag.Int("sweeps", 3, "sweeps to run (no early stop)")
	flag.Parse()
	if flag.NArg() != 2 {
		fmt.Fprintln(os.Stderr, "usage: wm [-sweeps N] MODEL_A MODEL_B")
		os.Exit(2)
	}
	a, err := checkpoint.Open(flag.Arg(0))
	check(err)
	b, err := checkpoint.Open(flag.Arg(1))
	check(err)
	spec, err := permute.BuiltinSpec("auto", a, nil)
	check(err)
	start := time.Now()
	sa, sb := permute.NewCheckpointSource(a, 0), permute.NewCheckpointSource(b, 0)
	res, err := permute.WeightMatching(context.Background(), spec, sa, sb, permute.MatchOptions{MaxSweeps: *sweeps, Tol: -1})
	check(err)
	fmt.Printf("%.3f %d %.6g %.6g\n", time.Since(start).Seconds(), res.Sweeps, res.DistanceBefore, res.DistanceAfter)
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "wm:", err)
		os.Exit(1)
	}
}
