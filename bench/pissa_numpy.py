#!/usr/bin/python3
"""numpy reference for bench/pissa.sh: PiSSA initialisation of every 2-D
projection of a Llama-shaped BF16 checkpoint, the same work as
`wtool adapter --method pissa`: read each weight, randomized SVD
(sklearn.utils.extmath.randomized_svd, n_oversamples=10, power iterations as
sklearn's "auto"), PEFT's factors (scaling 1), the residual W - B A rounded to
bf16 (nearest even), and the outputs written (residual model + adapter).

usage: pissa_numpy.py MODEL_DIR OUT_DIR RANK   prints the wall time"""
import json
import os
import struct
import sys
import time

import numpy as np
from sklearn.utils.extmath import randomized_svd


def read(path):
    with open(path, "rb") as f:
        b = f.read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    return b, n, h


def bf16_to_f32(raw):
    return (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16(x):
    u = x.view(np.uint32)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    r[nan] = ((u[nan] >> 16) | 0x40).astype(np.uint16)
    return r


def write(path, tensors, meta):
    dt = {np.dtype("uint16"): "BF16", np.dtype("float32"): "F32"}
    header, off, blobs = {"__metadata__": meta}, 0, []
    for name in sorted(tensors, key=lambda k: (-tensors[k][1].itemsize, k)):
        kind, a = tensors[name]
        b = a.tobytes()
        header[name] = {"dtype": kind, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
        f.flush()
        os.fsync(f.fileno())


def main():
    src, out, rank = sys.argv[1], sys.argv[2], int(sys.argv[3])
    t0 = time.perf_counter()
    b, n, h = read(os.path.join(src, "model.safetensors"))
    model, adapter = {}, {}
    for name, v in h.items():
        if name == "__metadata__":
            continue
        s, e = v["data_offsets"]
        raw = np.frombuffer(b, dtype=np.uint8, count=e - s, offset=8 + n + s)
        shape = v["shape"]
        if len(shape) == 2 and "proj" in name:
            w = bf16_to_f32(raw).reshape(shape)
            u, sv, vt = randomized_svd(w, rank, n_oversamples=10, n_iter="auto", random_state=0)
            sq = np.sqrt(sv).astype(np.float32)
            a = (sq[:, None] * vt).astype(np.float32)
            bb = (u * sq[None, :]).astype(np.float32)
            res = (w.astype(np.float64) - bb.astype(np.float64) @ a.astype(np.float64)).astype(np.float32)
            model[name] = ("BF16", f32_to_bf16(res).reshape(shape))
            mod = name[: -len(".weight")]
            adapter["base_model.model." + mod + ".lora_A.weight"] = ("F32", a)
            adapter["base_model.model." + mod + ".lora_B.weight"] = ("F32", bb)
        else:
            model[name] = (v["dtype"], raw.view(np.uint16).reshape(shape) if v["dtype"] == "BF16" else raw)
    os.makedirs(os.path.join(out, "adapter"), exist_ok=True)
    write(os.path.join(out, "model.safetensors"), model, {"format": "pt"})
    write(os.path.join(out, "adapter", "adapter_model.safetensors"), adapter, {"format": "pt"})
    print(f"{time.perf_counter() - t0:.3f}")


if __name__ == "__main__":
    main()
