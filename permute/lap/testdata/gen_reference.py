#!/usr/bin/python3
"""Generates the reference matrices in this directory and prints the optimal
costs and assignments that lap_test.go hard-codes, computed with
scipy.optimize.linear_sum_assignment (scipy 1.10.1, numpy 1.24.2, Debian's
/usr/bin/python3). Run from this directory:

    /usr/bin/python3 gen_reference.py

The tests do not need Python; this script only documents where the numbers
come from.
"""
import numpy as np
from scipy.optimize import linear_sum_assignment as lsa


def unique(c, maximize):
    """True if the optimal assignment is unique: forbidding any one of its
    pairs makes the optimum strictly worse."""
    r, k = lsa(c, maximize=maximize)
    best = c[r, k].sum()
    for i, j in zip(r, k):
        d = c.copy()
        d[i, j] = -np.inf if maximize else np.inf
        try:
            r2, k2 = lsa(d, maximize=maximize)
        except ValueError:  # infeasible without this pair
            continue
        alt = d[r2, k2].sum()
        if (alt >= best) if maximize else (alt <= best):
            return False
    return True


def report(name, c, maximize):
    r, k = lsa(c, maximize=maximize)
    cost = c[r, k].sum()
    line = "%s maximize=%s cost=%r" % (name, maximize, float(cost))
    if c.dtype == np.float64 and np.any(c != np.round(c)):
        line += " unique=%s" % unique(c, maximize)
    print(line)
    if c.shape[0] <= c.shape[1]:
        print("  rowToCol", list(map(int, k)))
    else:
        col_to_row = [0] * c.shape[1]
        for i, j in zip(r, k):
            col_to_row[j] = int(i)
        print("  colToRow", col_to_row)


def formula(rows, cols):
    i = np.arange(rows)[:, None]
    j = np.arange(cols)[None, :]
    return ((i * 7919 + j * 104729) % 1000).astype(np.float64)


def formula2(rows, cols):
    i = np.arange(rows)[:, None]
    j = np.arange(cols)[None, :]
    return (((i + 1) * (j + 3) * 31 + i * i * 7 + j * j * j) % 997).astype(np.float64)


def main():
    rng = np.random.default_rng(20240611)
    # Weight-matching type: C = A B^T with B a row-permuted noisy copy of A.
    a = rng.standard_normal((128, 32))
    b = a[rng.permutation(128)] + 1.0 * rng.standard_normal((128, 32))
    wm = np.ascontiguousarray(a @ b.T)
    wm.astype("<f8").tofile("wm128.f64")
    un = np.ascontiguousarray(rng.random((96, 160)))
    un.astype("<f8").tofile("unif96x160.f64")

    for maximize in (False, True):
        report("wm128", wm, maximize)
        report("unif96x160", un, maximize)
        report("unif96x160^T", np.ascontiguousarray(un.T), maximize)
    for n in (100, 500):
        for maximize in (False, True):
            print("formula %d: maximize=%s cost=%r" % (n, maximize, float(formula(n, n)[lsa(formula(n, n), maximize=maximize)].sum())))
    for (r, c) in ((60, 90), (90, 60), (300, 200)):
        for maximize in (False, True):
            f = formula2(r, c)
            print("formula2 %dx%d: maximize=%s cost=%r" % (r, c, maximize, float(f[lsa(f, maximize=maximize)].sum())))


if __name__ == "__main__":
    main()
