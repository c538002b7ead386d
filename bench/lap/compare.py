#!/usr/bin/python3
"""Generate a weight-matching-type or uniform cost matrix, time
scipy.optimize.linear_sum_assignment on it, and write the matrix as raw
little-endian float64 (row-major) so that the Go solver can be timed on the
very same matrix (see compare.sh).

Run with /usr/bin/python3 (Debian's, which has numpy and scipy).

Kinds:
  indep      C = A B^T, A and B independent n x d standard Gaussian
  permnoisy  C = A B^T, B = A[P] + noise * Gaussian, P a random permutation
             (B is a row-permuted noisy copy of A, as for two networks that
             are permutations of each other)
  uniform    C uniform on [0, 1)
The weight-matching kinds are maximised, uniform is minimised.
"""
import argparse
import json
import sys
import time

import numpy as np
from scipy.optimize import linear_sum_assignment


def make(kind, n, d, noise, seed):
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        return rng.random((n, n)), False
    a = rng.standard_normal((n, d))
    if kind == "indep":
        b = rng.standard_normal((n, d))
    elif kind == "permnoisy":
        b = a[rng.permutation(n)] + noise * rng.standard_normal((n, d))
    else:
        sys.exit("unknown kind " + kind)
    return a @ b.T, True


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--kind", default="indep")
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--d", type=int, default=1024, help="inner dimension of A B^T")
    p.add_argument("--noise", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--reps", type=int, default=3, help="timed runs; the minimum is reported")
    p.add_argument("--out", required=True, help="file for the raw float64 matrix")
    args = p.parse_args()

    c, maximize = make(args.kind, args.n, args.d, args.noise, args.seed)
    c = np.ascontiguousarray(c, dtype="<f8")
    c.tofile(args.out)

    best = float("inf")
    for _ in range(args.reps):
        t0 = time.perf_counter()
        r, col = linear_sum_assignment(c, maximize=maximize)
        best = min(best, time.perf_counter() - t0)
    cost = float(c[r, col].sum())
    json.dump({"impl": "scipy", "scipy": __import__("scipy").__version__,
               "kind": args.kind, "n": args.n, "maximize": maximize,
               "seconds": best, "cost": cost}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
