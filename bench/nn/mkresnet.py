#!/usr/bin/python3
"""Write two ResNet-18-sized checkpoints (torchvision resnet18 names and
shapes, 11.7M parameters, random weights and BatchNorm statistics) and
random images, for bench/nn/stats.sh. Not committed.

    mkresnet.py OUTDIR [IMAGES [SIZE]]     (default 256 images of 64x64)
"""
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "testdata", "families"))
import families as fam  # noqa: E402
from families import wc  # noqa: E402

CONFIG = {"block": "basic", "layers": [2, 2, 2, 2], "widths": [64, 128, 256, 512], "stem": 64, "num_classes": 1000}


def main(out, n=256, size=64):
    for name, seed in (("a", 1), ("b", 2)):
        torch.manual_seed(seed)
        m = fam.from_config("resnet18", CONFIG)
        with torch.no_grad():
            for mod in m.modules():
                if isinstance(mod, torch.nn.BatchNorm2d):
                    mod.weight.uniform_(0.5, 1.5)
                    mod.bias.normal_(0, 0.1)
                    mod.running_mean.normal_(0, 0.1)
                    mod.running_var.uniform_(0.5, 1.5)
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        wc.write_safetensors(os.path.join(d, "model.safetensors"), fam.state_dict(m), {"format": "pt"})
    g = torch.Generator().manual_seed(3)
    wc.write_safetensors(os.path.join(out, "images.safetensors"), {"x": torch.randn(n, 3, size, size, generator=g)})
    print(f"{out}: resnet18 a, b ({sum(p.numel() for p in m.parameters())} parameters), {n} images of {size}x{size}")


if __name__ == "__main__":
    main(sys.argv[1], *(int(a) for a in sys.argv[2:]))
