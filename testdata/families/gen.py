#!/usr/bin/python3
"""Write the conformance suite's inputs: every family's tiny checkpoint, and
the calibration data, statistics and Fisher files the data-aware checks use.

    gen.py OUTDIR

OUTDIR/<family>            each family's checkpoint (seed 1; Llama sharded bf16)
OUTDIR/gpt2-b, vit-b       a second model (seed 2) for merges
OUTDIR/gpt2.calib.safetensors   token ids [16, 8] (tensor "x")
OUTDIR/gpt2.stats.safetensors, gpt2-b.stats.safetensors  collector statistics
OUTDIR/gpt2.fisher.safetensors  a diagonal Fisher written by a plain PyTorch
                           loop, without wtool's metadata (another tool's file)
OUTDIR/vit.stats.safetensors, vit-b.stats.safetensors   statistics on 32 images
"""

import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import families as fam  # noqa: E402
from families import wc  # noqa: E402


def main(out):
    for f in fam.FAMILIES:
        fam.write_checkpoint(os.path.join(out, f), f, seed=1, shards=2 if f == "llama" else None)
    for f in ("gpt2", "vit"):
        fam.write_checkpoint(os.path.join(out, f + "-b"), f, seed=2)

    # GPT-2: calibration ids, statistics of both models, a foreign Fisher file
    c = fam.config("gpt2")
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(0, c["vocab_size"], (16, 8), generator=g)
    wc.write_safetensors(os.path.join(out, "gpt2.calib.safetensors"), {"x": ids})
    batches = [ids[i:i + 4] for i in range(0, 16, 4)]
    for name, seed in (("gpt2", 1), ("gpt2-b", 2)):
        m, _ = fam.build("gpt2", seed)
        wc.collect_stats(m, batches, os.path.join(out, name + ".stats.safetensors"))
    m, _ = fam.build("gpt2", 1)
    fisher = {n: torch.zeros_like(p) for n, p in m.named_parameters()}
    for x in batches:  # the five-line loop: mean of squared gradients, saved as is
        m.zero_grad()
        F.cross_entropy(m(x)[:, :-1].reshape(-1, c["vocab_size"]), x[:, 1:].reshape(-1)).backward()
        for n, p in m.named_parameters():
            fisher[n] += p.grad.detach() ** 2 / len(batches)
    wc.write_safetensors(os.path.join(out, "gpt2.fisher.safetensors"), fisher)

    # ViT: 32 calibration images for a 129-feature classifier (128 + bias)
    c = fam.config("vit")
    imgs = torch.randn(32, 3, c["image_size"], c["image_size"], generator=g)
    for name, seed in (("vit", 1), ("vit-b", 2)):
        m, _ = fam.build("vit", seed)
        wc.collect_stats(m, [imgs[:16], imgs[16:]], os.path.join(out, name + ".stats.safetensors"))


if __name__ == "__main__":
    main(sys.argv[1])
