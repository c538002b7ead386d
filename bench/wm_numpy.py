#!/usr/bin/python3
"""numpy + scipy weight matching (Git Re-Basin's coordinate descent) on two
Llama-family checkpoints, the same algorithm as wtool's permute.WeightMatching:
groups residual / layers.N.mlp / layers.N.heads (whole kv heads, grouped-query
aware), cost per group = sum over the tensor axes it acts on of
A_units @ B_units^T (float32 matmuls, float64 sums) with every other
permutation applied to B, scipy.optimize.linear_sum_assignment (maximize),
groups visited in a shuffled order each sweep.

usage: wm_numpy.py MODEL_A MODEL_B SWEEPS   (Llama directories, or MLP
checkpoints: a chain of Linear weights)
prints: seconds (loading excluded, the distance computations included) sweeps
distance_before distance_after"""
import json
import os
import re
import struct
import sys
import time

import numpy as np
from scipy.optimize import linear_sum_assignment


def load(d):
    out = {}
    files = [d] if d.endswith(".safetensors") else [os.path.join(d, f) for f in os.listdir(d) if f.endswith(".safetensors")]
    for fn in files:
        with open(fn, "rb") as f:
            b = f.read()
        n = struct.unpack("<Q", b[:8])[0]
        h = json.loads(b[8:8 + n])
        for k, v in h.items():
            if k == "__metadata__":
                continue
            s, e = v["data_offsets"]
            raw = np.frombuffer(b, dtype=np.uint8, count=e - s, offset=8 + n + s)
            if v["dtype"] == "BF16":
                a = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
            elif v["dtype"] == "F32":
                a = raw.view(np.float32)
            else:
                raise SystemExit("unsupported dtype " + v["dtype"])
            out[k] = a.reshape(v["shape"]).copy()
    return out


def mlp_spec(shapes):
    """a chain of Linear layers (weights only, in name order): one group per
    hidden layer, acting on its rows and the next layer's columns"""
    names = sorted(k for k in shapes if k.endswith(".weight"))
    groups, t = {}, {}
    for i, n in enumerate(names):
        rows = (n, 1) if i + 1 < len(names) else None
        cols = (names[i - 1], 1) if i > 0 else None
        if rows:
            groups[n] = shapes[n][0]
        t[n] = [rows, cols]
    return groups, t


def spec(shapes, cfg):
    """tensor -> list of (group, block) per axis, and group sizes"""
    hidden = shapes["model.embed_tokens.weight"][1]
    heads, kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = hidden // heads
    groups = {"residual": hidden}
    t = {"model.embed_tokens.weight": [None, ("residual", 1)], "model.norm.weight": [("residual", 1)]}
    if "lm_head.weight" in shapes:
        t["lm_head.weight"] = [None, ("residual", 1)]
    layers = sorted({int(m.group(1)) for k in shapes for m in [re.match(r"model\.layers\.(\d+)\.", k)] if m})
    for n in layers:
        p = f"model.layers.{n}."
        mlp, hg = f"layers.{n}.mlp", f"layers.{n}.heads"
        groups[mlp] = shapes[p + "mlp.up_proj.weight"][0]
        groups[hg] = kv
        r = ("residual", 1)
        t[p + "mlp.gate_proj.weight"] = [(mlp, 1), r]
        t[p + "mlp.up_proj.weight"] = [(mlp, 1), r]
        t[p + "mlp.down_proj.weight"] = [r, (mlp, 1)]
        t[p + "input_layernorm.weight"] = [r]
        t[p + "post_attention_layernorm.weight"] = [r]
        q = (hg, hd * heads // kv)
        t[p + "self_attn.q_proj.weight"] = [q, r]
        t[p + "self_attn.k_proj.weight"] = [(hg, hd), r]
        t[p + "self_attn.v_proj.weight"] = [(hg, hd), r]
        t[p + "self_attn.o_proj.weight"] = [r, q]
    return groups, t


def index(perm, block):
    return (perm[:, None] * block + np.arange(block)[None, :]).reshape(-1)


def permuted(w, axes, perms, skip=None):
    for ax, g in enumerate(axes):
        if g is None or ax == skip:
            continue
        w = np.take(w, index(perms[g[0]], g[1]), axis=ax)
    return w


def units(w, ax, n):
    return np.moveaxis(w, ax, 0).reshape(n, -1)


def distance(A, B, t, perms):
    d = 0.0
    for name, axes in t.items():
        diff = A[name].astype(np.float64) - permuted(B[name], axes, perms).astype(np.float64)
        d += float((diff * diff).sum())
    return d ** 0.5


def main():
    da, db, sweeps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    A, B = load(da), load(db)
    shapes = {k: v.shape for k, v in A.items()}
    if "model.embed_tokens.weight" in shapes:
        with open(os.path.join(da, "config.json")) as f:
            cfg = json.load(f)
        groups, t = spec(shapes, cfg)
    else:
        groups, t = mlp_spec(shapes)
    uses = {g: [] for g in groups}
    for name, axes in t.items():
        for ax, g in enumerate(axes):
            if g is not None:
                uses[g[0]].append((name, ax))
    t0 = time.perf_counter()
    perms = {g: np.arange(n) for g, n in groups.items()}
    before = distance(A, B, t, perms)
    rng = np.random.default_rng(0)
    names = sorted(groups)
    for _ in range(sweeps):
        for gi in rng.permutation(len(names)):
            g = names[gi]
            n = groups[g]
            C = np.zeros((n, n))
            for name, ax in uses[g]:
                wb = permuted(B[name], t[name], perms, skip=ax)
                C += units(A[name], ax, n) @ units(wb, ax, n).T
            _, col = linear_sum_assignment(C, maximize=True)
            if C[np.arange(n), col].sum() > C[np.arange(n), perms[g]].sum() + 1e-12:
                perms[g] = col
    after = distance(A, B, t, perms)
    print(f"{time.perf_counter() - t0:.3f} {sweeps} {before:.6g} {after:.6g}")


if __name__ == "__main__":
    main()
