#!/usr/bin/python3
"""numpy reference for bench/stats.sh: the statistics wtool stats computes
(per Linear layer: count, sum, sum of |x|, Gram of the layer input), with
float32 matmuls and float64 accumulation, batch by batch.

usage: stats_numpy.py MODEL.safetensors CALIB.safetensors BATCH
prints the wall time in seconds of the computation (reading excluded)."""
import json
import struct
import sys
import time

import numpy as np


def load(path):
    with open(path, "rb") as f:
        b = f.read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    out = {}
    for k, v in h.items():
        if k == "__metadata__":
            continue
        s, e = v["data_offsets"]
        out[k] = np.frombuffer(b, dtype=np.float32, count=(e - s) // 4, offset=8 + n + s).reshape(v["shape"])
    return out


def main():
    model, calib, batch = load(sys.argv[1]), load(sys.argv[2]), int(sys.argv[3])
    names = sorted(k for k in model if k.endswith(".weight"))
    ws = [model[k] for k in names]
    x = next(iter(calib.values()))
    t0 = time.perf_counter()
    grams = [np.zeros((w.shape[1], w.shape[1])) for w in ws]
    sums = [np.zeros(w.shape[1]) for w in ws]
    abss = [np.zeros(w.shape[1]) for w in ws]
    for lo in range(0, len(x), batch):
        h = x[lo:lo + batch]
        for i, w in enumerate(ws):
            grams[i] += h.T @ h
            sums[i] += h.sum(0, dtype=np.float64)
            abss[i] += np.abs(h).sum(0, dtype=np.float64)
            h = h @ w.T
            if i + 1 < len(ws):
                h = np.maximum(h, 0)
    t1 = time.perf_counter()
    print(f"{t1 - t0:.3f}")


if __name__ == "__main__":
    main()
