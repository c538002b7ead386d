#!/usr/bin/python3
"""Forward-pass invariance of wtool's permutation specs, in PyTorch.

    invariance.py DIR FAMILY...

For each family, DIR/FAMILY is its tiny checkpoint (testdata/families), and
DIR/FAMILY-perm, DIR/FAMILY-broken the same weights permuted by wtool: every
group by a random permutation of the family's built-in spec, and the same
with one tensor left unpermuted (a control: that must change the outputs).
Prints one JSON line per family: the largest absolute difference of the
outputs (float64) between the original and each copy, and the outputs'
scale.
"""

import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "testdata", "families"))
import families as fam  # noqa: E402


def main(d, names):
    for f in names:
        c = fam.config(f)
        x = fam.inputs(f, c, seed=3, batch=3)
        out = {"family": f}
        y = fam.forward(f, fam.load_checkpoint(os.path.join(d, f)), c, x)
        out["scale"] = float(y.abs().max())
        for kind in ("perm", "broken"):
            z = fam.forward(f, fam.load_checkpoint(os.path.join(d, f + "-" + kind)), c, x)
            out[kind] = float((y - z).abs().max())
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1], sys.argv[2:])
