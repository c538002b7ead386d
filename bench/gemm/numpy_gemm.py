#!/usr/bin/python3
# Copyright ©2025 The wtool Authors.
"""Time dense matrix products in numpy, with the same output as main.go.

Usage: /usr/bin/python3 numpy_gemm.py [--shapes MxKxN,...] [--mintime 1.0]
       [--minreps 3] [--prec 32,64]

For every precision and shape one tab-separated line is printed:

    numpy  prec  M  K  N  best_seconds  GFLOP/s

The time is the best of repeated runs of np.matmul(a, b, out=c) after one
warm-up run. Use the Debian /usr/bin/python3, whose numpy uses OpenBLAS.
"""
import argparse
import sys
import time

import numpy as np

DEFAULT_SHAPES = "512x512x512,1024x1024x1024,2048x2048x2048,4096x4096x266,8192x1024x1024"


def parse_shapes(s):
    shapes = []
    for f in s.split(","):
        m, k, n = (int(x) for x in f.strip().split("x"))
        shapes.append((m, k, n))
    return shapes


def time_it(f, mintime, minreps):
    f()
    best = float("inf")
    start = time.perf_counter()
    reps = 0
    while reps < minreps or time.perf_counter() - start < mintime:
        t0 = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t0)
        reps += 1
    return best


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default=DEFAULT_SHAPES)
    p.add_argument("--prec", default="32,64")
    p.add_argument("--mintime", type=float, default=1.0)
    p.add_argument("--minreps", type=int, default=3)
    args = p.parse_args()
    rng = np.random.default_rng(1)
    for prec in args.prec.split(","):
        dtype = {"32": np.float32, "64": np.float64}[prec]
        for m, k, n in parse_shapes(args.shapes):
            a = rng.uniform(-1, 1, (m, k)).astype(dtype)
            b = rng.uniform(-1, 1, (k, n)).astype(dtype)
            c = np.empty((m, n), dtype)
            best = time_it(lambda: np.matmul(a, b, out=c), args.mintime, args.minreps)
            gflops = 2.0 * m * n * k / best / 1e9
            print(f"numpy\t{prec}\t{m}\t{k}\t{n}\t{best:.6f}\t{gflops:.2f}")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
