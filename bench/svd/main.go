// Copyright ©2025 The wtool Authors.

// Command svd times wtool's SVD engine (package lowrank) on a matrix stored
// as raw little-endian float32 (row-major), as written by compare.py, and
// writes the factors for compare.py to check. See compare.sh.
//
// Usage:
//
//	svd -file a.f32 -m 4096 -n 4096 -mode rsvd -k 256 -reps 3 -out dir/go_
//	svd -file a.f32 -m 2048 -n 2048 -mode exact -reps 3 -out dir/go_
//
// It prints one JSON object: the best wall-clock time in seconds over -reps
// runs, the build ("purego" or "openblas") and GOMAXPROCS. With -out it
// writes <out>U.f32 (m×k), <out>S.f64 (k) and <out>Vt.f32 (k×n).
package main

import (
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"runtime"
	"time"

	"github.com/wtool/wtool/lowrank"
)

func main() {
	file := flag.String("file", "", "raw little-endian float32 matrix, row-major")
	m := flag.Int("m", 0, "rows")
	n := flag.Int("n", 0, "columns")
	mode := flag.String("mode", "rsvd", "rsvd (TruncatedSVD) or exact (ExactSVD)")
	k := flag.Int("k", 256, "rank for -mode rsvd")
	p := flag.Int("p", 10, "oversampling for -mode rsvd")
	q := flag.Int("q", 7, "power iterations for -mode rsvd (negative: automatic)")
	seed := flag.Uint64("seed", 0, "seed of the test matrix")
	reps := flag.Int("reps", 3, "timed runs; the minimum is reported")
	out := flag.String("out", "", "prefix of the factor files to write")
	flag.Parse()
	if err := run(*file, *m, *n, *mode, *k, *p, *q, *seed, *reps, *out); err != nil {
		fmt.Fprintln(os.Stderr, "svd:", err)
		os.Exit(1)
	}
}

func run(file string, m, n int, mode string, k, p, q int, seed uint64, reps int, out string) error {
	raw, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	if len(raw) != 4*m*n {
		return fmt.Errorf("%s has %d bytes, want 4·%d·%d", file, len(raw), m, n)
	}
	a := make([]float32, m*n)
	for i := range a {
		a[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	var f *lowrank.Factors
	best := math.Inf(1)
	for range max(reps, 1) {
		start := time.Now()
		switch mode {
		case "rsvd":
			f, err = lowrank.TruncatedSVD(a, m, n, lowrank.SVDOptions{Rank: k, Oversample: p, PowerIters: q, Seed: seed})
		case "exact":
			f, err = lowrank.ExactSVD(a, m, n)
		default:
			return fmt.Errorf("unknown mode %q", mode)
		}
		if err != nil {
			return err
		}
		best = min(best, time.Since(start).Seconds())
	}
	if out != "" {
		if err := writeF32(out+"U.f32", f.U); err != nil {
			return err
		}
		if err := writeF32(out+"Vt.f32", f.Vt); err != nil {
			return err
		}
		s := make([]byte, 8*len(f.S))
		for i, v := range f.S {
			binary.LittleEndian.PutUint64(s[8*i:], math.Float64bits(v))
		}
		if err := os.WriteFile(out+"S.f64", s, 0o644); err != nil {
			return err
		}
	}
	return json.NewEncoder(os.Stdout).Encode(map[string]any{
		"seconds": best, "build": build, "gomaxprocs": runtime.GOMAXPROCS(0), "k": f.K,
	})
}

func writeF32(name string, x []float32) error {
	b := make([]byte, 4*len(x))
	for i, v := range x {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return os.WriteFile(name, b, 0o644)
}
