#!/usr/bin/python3
# Copyright ©2025 The wtool Authors.
"""Python side of bench/svd/compare.sh: makes the test matrices, times
sklearn's randomized_svd and numpy's SVD on them, and checks the accuracy of
every implementation's factors the same way.

Run with /usr/bin/python3 (Debian's, which has numpy, scipy and sklearn).

Subcommands (all files live in --dir):
  gen      write a.f32 (raw little-endian float32, row-major) and ref.f64
           (all singular values of that float32 matrix, exact, float64)
  sklearn  time sklearn.utils.extmath.randomized_svd; write sklearn_{U,S,Vt}
  numpy    time np.linalg.svd(A.astype(dtype), full_matrices=False); write
           numpy<bits>_{U,S,Vt}
  report   for each label, read <label>.json* (times of one or more rounds)
           and <label>_{U,S,Vt}; print the best time, its ratio to the first
           label's and the accuracy
  info     print the BLAS that numpy uses (threadpoolctl)
"""
import argparse
import json
import os
import sys
import time

import numpy as np


def load(d, m, n):
    return np.fromfile(os.path.join(d, "a.f32"), dtype="<f4").reshape(m, n)


def save_factors(d, label, u, s, vt):
    np.ascontiguousarray(u, dtype="<f4").tofile(os.path.join(d, label + "_U.f32"))
    np.asarray(s, dtype="<f8").tofile(os.path.join(d, label + "_S.f64"))
    np.ascontiguousarray(vt, dtype="<f4").tofile(os.path.join(d, label + "_Vt.f32"))


def cmd_gen(a):
    rng = np.random.default_rng(a.seed)
    m, n = a.m, a.n
    r = min(m, n)
    if a.kind == "gauss":
        x = rng.standard_normal((m, n), dtype=np.float32)
    elif a.kind == "powerlaw":
        # A = Q1·diag(s)·Q2ᵀ with Haar-random orthonormal Q1, Q2 and
        # s_i = (i+1)^-0.75, like the spectrum of a trained weight matrix.
        q1, _ = np.linalg.qr(rng.standard_normal((m, r)))
        q2, _ = np.linalg.qr(rng.standard_normal((n, r)))
        s = (1.0 + np.arange(r)) ** -0.75
        x = ((q1 * s) @ q2.T).astype(np.float32)
    else:
        sys.exit("unknown kind " + a.kind)
    x.astype("<f4").tofile(os.path.join(a.dir, "a.f32"))
    ref = np.linalg.svd(x.astype(np.float64), compute_uv=False)
    ref.astype("<f8").tofile(os.path.join(a.dir, "ref.f64"))


def best_of(reps, f):
    best, out = float("inf"), None
    for _ in range(reps):
        t = time.perf_counter()
        out = f()
        best = min(best, time.perf_counter() - t)
    return best, out


def cmd_sklearn(a):
    from sklearn.utils.extmath import randomized_svd

    x = load(a.dir, a.m, a.n)
    secs, (u, s, vt) = best_of(a.reps, lambda: randomized_svd(
        x, a.k, n_oversamples=a.p, n_iter=a.q, random_state=a.seed))
    save_factors(a.dir, "sklearn", u, s, vt)
    json.dump({"seconds": secs}, open(os.path.join(a.dir, "sklearn.json"), "w"))


def cmd_numpy(a):
    x = load(a.dir, a.m, a.n).astype(a.dtype)
    label = "numpy" + str(np.dtype(a.dtype).itemsize * 8)
    secs, (u, s, vt) = best_of(a.reps, lambda: np.linalg.svd(x, full_matrices=False))
    save_factors(a.dir, label, u, s, vt)
    json.dump({"seconds": secs}, open(os.path.join(a.dir, label + ".json"), "w"))


def metrics(d, m, n, label, ref, x64, xnorm):
    s = np.fromfile(os.path.join(d, label + "_S.f64"), dtype="<f8")
    k = len(s)
    u = np.fromfile(os.path.join(d, label + "_U.f32"), dtype="<f4").reshape(m, k).astype(np.float64)
    vt = np.fromfile(os.path.join(d, label + "_Vt.f32"), dtype="<f4").reshape(k, n).astype(np.float64)
    res = x64 - (u * s) @ vt
    top = min(k, 10)
    return {
        "k": k,
        "relerr": np.linalg.norm(res) / xnorm,
        "opt": np.sqrt(np.sum(ref[k:] ** 2)) / xnorm,
        "s_top10": np.max(np.abs(s[:top] - ref[:top])) / ref[0],
        "s_all": np.max(np.abs(s - ref[:k])) / ref[0],
        "orthU": np.max(np.abs(u.T @ u - np.eye(k))),
        "orthV": np.max(np.abs(vt @ vt.T - np.eye(k))),
    }


def cmd_report(a):
    x64 = load(a.dir, a.m, a.n).astype(np.float64)
    xnorm = np.linalg.norm(x64)
    ref = np.fromfile(os.path.join(a.dir, "ref.f64"), dtype="<f8")
    labels = a.labels.split(",")
    rows = []
    for label in labels:
        # One <label>.json per round (compare.sh renames them .json.<round>).
        times = [json.load(open(os.path.join(a.dir, f)))["seconds"] for f in os.listdir(a.dir)
                 if f == label + ".json" or f.startswith(label + ".json.")]
        rows.append((label, min(times), metrics(a.dir, a.m, a.n, label, ref, x64, xnorm)))
    base = rows[0]
    print(f"  {'implementation':<16} {'seconds':>8} {'ratio':>6} | {'rel. error':>10} {'optimal':>10} "
          f"{'max|ds|/s1 top10':>16} {'all k':>9} {'|UtU-I|':>8} {'|VtV-I|':>8}")
    bad = False
    for label, secs, mt in rows:
        print(f"  {label:<16} {secs:8.3f} {secs / base[1]:6.2f} | {mt['relerr']:10.4g} {mt['opt']:10.4g} "
              f"{mt['s_top10']:16.2e} {mt['s_all']:9.2e} {mt['orthU']:8.1e} {mt['orthV']:8.1e}")
    # Accuracy check: every implementation at least as accurate as the first
    # (the reference library), up to float32 noise.
    for label, secs, mt in rows[1:]:
        b = base[2]
        if mt["relerr"] > b["relerr"] * (1 + 1e-4) + 1e-6:
            print(f"  ACCURACY: {label} reconstruction error {mt['relerr']:.6g} > {base[0]} {b['relerr']:.6g}")
            bad = True
        if mt["s_top10"] > max(b["s_top10"] * 1.5, 1e-6):
            print(f"  ACCURACY: {label} top singular values off by {mt['s_top10']:.3g} > {base[0]} {b['s_top10']:.3g}")
            bad = True
        if max(mt["orthU"], mt["orthV"]) > max(b["orthU"], b["orthV"], 1e-5) * 10:
            print(f"  ACCURACY: {label} factors not orthonormal ({mt['orthU']:.2g}, {mt['orthV']:.2g})")
            bad = True
    sys.exit(1 if bad else 0)


def cmd_info(a):
    try:
        import threadpoolctl
        for p in threadpoolctl.threadpool_info():
            print(f"numpy BLAS: {p.get('internal_api')} {p.get('version')} "
                  f"kernel={p.get('architecture')} threads={p.get('num_threads')} ({p.get('filepath')})")
    except ImportError:
        print("numpy BLAS: (threadpoolctl not available)")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("cmd", choices=["gen", "sklearn", "numpy", "report", "info"])
    p.add_argument("--dir", default=".")
    p.add_argument("--kind", default="gauss")
    p.add_argument("--m", type=int, default=4096)
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--k", type=int, default=256)
    p.add_argument("--p", type=int, default=10)
    p.add_argument("--q", type=int, default=7)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--labels", default="")
    a = p.parse_args()
    {"gen": cmd_gen, "sklearn": cmd_sklearn, "numpy": cmd_numpy,
     "report": cmd_report, "info": cmd_info}[a.cmd](a)


if __name__ == "__main__":
    main()
