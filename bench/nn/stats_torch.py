#!/usr/bin/python3
"""PyTorch side of bench/nn/stats.sh: the same forward passes and statistics.

    stats_torch.py A B IMAGES BATCH MODE [OUT]

MODE forward: the two models' forward passes only (no statistics), the floor.
MODE lean: the forward passes plus the joint statistics of wtool's file
  (every Conv2d/Linear input as unfolded patches, the default activation
  points) with wtool's arithmetic: float32 products of at most 2048 rows,
  summed in float64 (torch.mm in float32, no file written).
MODE collector: tools/wtool_collect.py's collect_joint_stats (float64
  products), written to OUT.
Prints the wall-clock and CPU seconds taken (model loading excluded). torch
uses 2 threads.
"""
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "testdata", "families"))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools"))
import families as fam  # noqa: E402
import wtool_collect as wc  # noqa: E402

from mkresnet import CONFIG  # noqa: E402


def load(path):
    m = fam.from_config("resnet18", CONFIG)
    m.load_state_dict(wc.load_checkpoint(path), strict=True)
    return m.eval()


def lean(ma, mb, batches):
    pts = wc.default_points(ma)
    named_a, named_b = dict(ma.named_modules()), dict(mb.named_modules())
    mods = [n for n, m in ma.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    acc = {}
    got = {"a": {}, "b": {}}
    hs = []
    for side, named in (("a", named_a), ("b", named_b)):
        for n in mods:
            hs.append(named[n].register_forward_hook(lambda m, i, o, side=side, n=n: got[side].__setitem__(n, (m, i[0]))))
        for p in pts:
            mod, _, io = p.rpartition(":")
            if io == "in":
                hs.append(named[mod].register_forward_pre_hook(lambda m, i, side=side, p=p: got[side].__setitem__(p, (None, i[0]))))
            else:
                hs.append(named[mod].register_forward_hook(lambda m, i, o, side=side, p=p: got[side].__setitem__(p, (None, o))))

    def rows(name, m, x):
        if m is None:
            return torch.cat(list(wc._point_rows(name, x, 2**40)))
        return torch.cat(list(wc._rows(name, m, x)))

    with torch.no_grad():
        for x in batches:
            ma(x)
            mb(x)
            for name, (m, xa) in got["a"].items():
                ra, rb = rows(name, m, xa), rows(name, got["b"][name][0], got["b"][name][1])
                if name not in acc:
                    d = ra.shape[1]
                    acc[name] = [torch.zeros(d, d, dtype=torch.float64) for _ in range(3)] + [torch.zeros(d, dtype=torch.float64) for _ in range(4)]
                g = acc[name]
                for lo in range(0, ra.shape[0], 2048):
                    a, b = ra[lo:lo + 2048], rb[lo:lo + 2048]
                    g[0] += (a.t() @ a).double()
                    g[1] += (b.t() @ b).double()
                    g[2] += (a.t() @ b).double()
                    g[3] += a.sum(0).double()
                    g[4] += a.abs().sum(0).double()
                    g[5] += b.sum(0).double()
                    g[6] += b.abs().sum(0).double()
    for h in hs:
        h.remove()
    return acc


def main(a, b, images, bs, mode, out=None):
    torch.set_num_threads(2)
    ma, mb = load(a), load(b)
    x = torch.from_numpy(wc.read_safetensors(images)[0]["x"])
    batches = [x[i:i + int(bs)] for i in range(0, len(x), int(bs))]
    t, c = time.time(), time.process_time()
    if mode == "forward":
        with torch.no_grad():
            for xb in batches:
                ma(xb)
                mb(xb)
    elif mode == "lean":
        lean(ma, mb, batches)
    else:
        wc.collect_joint_stats(ma, mb, batches, out, points="default")
    print(f"{time.time() - t:.3f} {time.process_time() - c:.3f}")


if __name__ == "__main__":
    main(*sys.argv[1:])
