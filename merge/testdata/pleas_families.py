#!/usr/bin/python3
"""PyTorch side of merge's PLeaS family test (TestPLeaSFamiliesPyTorch).

    pleas_families.py gen DIR FAMILY...
        DIR/FAMILY and DIR/FAMILY-b: testdata/families' tiny checkpoint of the
        family, seeds 1 and 2, in float32 (whatever config.json's torch_dtype
        says, so that a merge written in the sources' dtype is not rounded);
        DIR/FAMILY.data.safetensors: "x", 32 inputs (token ids [32, 8] or
        images), what the merges calibrate on and every model is run on.
    pleas_families.py forward DIR MODEL...
        DIR/MODEL.logits.safetensors: "logits" of checkpoint DIR/MODEL, built
        by families.py from the config.json written next to its weights and
        loaded strictly (a width config.json does not describe fails), in
        float64, on DIR/FAMILY.data.safetensors (FAMILY: config.json's
        model_type); the layout of fisher/nn.Forward's output (reference.py).
"""
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "fisher", "nn", "testdata"))
import reference as ref  # noqa: E402  (families.py, wtool_collect and the forward conventions)

fam, wc = ref.fam, ref.wc


def gen(d, families):
    for f in families:
        fam.write_checkpoint(os.path.join(d, f), f, seed=1, dtype=torch.float32)
        fam.write_checkpoint(os.path.join(d, f + "-b"), f, seed=2, dtype=torch.float32)
        x = fam.inputs(f, fam.config(f), seed=1, batch=32)
        if f == "bert":
            x = x[0]  # token ids only (every token of type 0), as fisher/nn runs BERT
        wc.write_safetensors(os.path.join(d, f + ".data.safetensors"), {"x": x.contiguous()})


def forward(d, models):
    for m in models:
        path = os.path.join(d, m)
        family = json.load(open(os.path.join(path, "config.json")))["model_type"]
        ref.cmd_forward_dir(path, os.path.join(d, family + ".data.safetensors"), path + ".logits.safetensors")
        print(m, flush=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    cmd, d, rest = sys.argv[1], sys.argv[2], sys.argv[3:]
    {"gen": gen, "forward": forward}[cmd](d, rest)
