#!/usr/bin/python3
"""Train the image-classifier pairs of testdata/pairs (ResNet and ViT on digits).

Data: testdata/demo's digits split (digits_train/digits_test.safetensors: x
[n, 64] float32 standardised pixels, y [n] int64), seen as 1x8x8 images.

Models (families.py's modules, so the names are torchvision's and Hugging
Face's and families.forward runs them):

  resnet-{a,b,c,d}  torchvision ResNet-18 layout (BasicBlock, [2, 2, 2, 2]
                    blocks) with widths 16/32/64/128 and a small-image stem
                    (3x3 stride-1 convolution on one channel, no max pool);
  vit-{a,b,c,d}     ViTForImageClassification: 2x2 patches (16 + the class
                    token), hidden 64, 4 layers of 4 heads, MLP 128.

  a, b   all ten classes, seeds 1 and 2 (the permutation pair);
  c, d   digits 0-4 and digits 5-9 (ten-way heads, each model only ever saw
         half the labels: the "different label sets" pair).

Training: AdamW with a cosine schedule, batches of 64, random 1-pixel shifts
(zero fill), labels of the model's own classes only. Weights are written
in float16 (small files; the engine computes in float32) with config.json
(the widths and stem for ResNet, Hugging Face's ViTConfig keys for ViT).
Prints each model's test accuracy and the naive average's (all tensors
averaged, BatchNorm running statistics included) and writes results.json.

Run from the repository root or anywhere:
    /usr/bin/python3 testdata/pairs/train_pairs.py [resnet|vit|vit:a,c ...]
(models may be trained by several runs at once; each run writes its models,
and the naive averages of the pairs complete on disk, into results.json).
CPU only, deterministic for a given torch build (a few minutes).
"""
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "families"))
import families as fam  # noqa: E402
from families import wc  # noqa: E402

DEMO = os.path.join(HERE, "..", "demo")

RESNET = {"model_type": "torchvision_resnet", "architectures": ["ResNet"], "block": "basic",
          "layers": [2, 2, 2, 2], "widths": [16, 32, 64, 128], "stem": 16, "num_classes": 10,
          "in_channels": 1, "stem_kernel": 3, "stem_stride": 1, "stem_pool": False,
          "image_size": 8, "num_channels": 1, "torch_dtype": "float16"}
VIT = {"model_type": "vit", "architectures": ["ViTForImageClassification"], "hidden_size": 64,
       "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 128, "hidden_act": "gelu",
       "image_size": 8, "patch_size": 2, "num_channels": 1, "layer_norm_eps": 1e-12, "qkv_bias": True,
       "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "initializer_range": 0.02,
       "id2label": {str(i): str(i) for i in range(10)}, "label2id": {str(i): i for i in range(10)},
       "torch_dtype": "float16"}
JOBS = {"a": (1, None), "b": (2, None), "c": (3, range(0, 5)), "d": (4, range(5, 10))}
TRAIN = {"resnet": dict(epochs=40, lr=2e-3, wd=5e-4), "vit": dict(epochs=150, lr=2e-3, wd=0.05)}


def digits(split):
    a, _ = wc.read_safetensors(os.path.join(DEMO, f"digits_{split}.safetensors"))
    return torch.from_numpy(a["x"]).view(-1, 1, 8, 8), torch.from_numpy(a["y"])


def shift(x, g):
    """Random shifts by -1, 0 or 1 pixel in each direction, zero fill."""
    n = x.shape[0]
    p = F.pad(x, (1, 1, 1, 1))
    dy = torch.randint(0, 3, (n,), generator=g)
    dx = torch.randint(0, 3, (n,), generator=g)
    out = torch.empty_like(x)
    for i in range(n):
        out[i] = p[i, :, dy[i]:dy[i] + 8, dx[i]:dx[i] + 8]
    return out


def train(family, cfg, x, y, seed, epochs, lr, wd):
    torch.manual_seed(seed)
    model = fam.from_config("resnet18" if family == "resnet" else "vit", cfg)
    if family == "vit":  # Hugging Face's ViT initialisation: N(0, 0.02) linear weights, zero biases
        for name, p in model.named_parameters():
            if p.dim() > 1 or name.endswith(("cls_token", "position_embeddings")):
                torch.nn.init.trunc_normal_(p, std=0.02)
            elif name.endswith("bias"):
                torch.nn.init.zeros_(p)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
    steps = epochs * ((len(x) + 63) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 64):
            b = perm[i:i + 64]
            if len(b) < 2:
                continue
            opt.zero_grad()
            F.cross_entropy(model(shift(x[b], g)), y[b]).backward()
            opt.step()
            sched.step()
    return model.eval()


def accuracy(family, cfg, sd, x, y):
    out = fam.forward("resnet18" if family == "resnet" else "vit", sd, cfg, x, dtype=torch.float32)
    return float((out.argmax(1) == y).float().mean())


def stored(model):
    """The state dict as written: floats rounded to float16, read back as float32."""
    return {k: (v.half().float() if v.is_floating_point() else v) for k, v in fam.state_dict(model).items()}


def write(out, sd, cfg):
    os.makedirs(out, exist_ok=True)
    t = {k: (v.half() if v.is_floating_point() else v) for k, v in sd.items()}
    wc.write_safetensors(os.path.join(out, "model.safetensors"), t, {"format": "pt"})
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")


def load(family, name):
    """A written model's state dict (float32) and config."""
    d = os.path.join(HERE, f"{family}-{name}")
    return wc.load_checkpoint(d), json.load(open(os.path.join(d, "config.json")))


def record(updates):
    """Merge entries into results.json (re-read now: other runs may have written it)."""
    path = os.path.join(HERE, "results.json")
    results = json.load(open(path)) if os.path.exists(path) else {}
    results.update(updates)
    with open(path + ".tmp", "w") as f:
        json.dump(results, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(path + ".tmp", path)


def main(jobs):
    torch.set_num_threads(int(os.environ.get("WTOOL_TRAIN_THREADS", "2")))
    xtr, ytr = digits("train")
    xte, yte = digits("test")
    for job in jobs:
        family, _, names = job.partition(":")
        names = names.split(",") if names else list(JOBS)
        base = RESNET if family == "resnet" else VIT
        for name in names:
            seed, labels = JOBS[name]
            mask = torch.ones(len(ytr), dtype=torch.bool) if labels is None else torch.isin(ytr, torch.tensor(list(labels)))
            cfg = dict(base, trained_on="digits " + ("0-9" if labels is None else f"{labels.start}-{labels.stop - 1}"), seed=seed)
            t0 = time.time()
            model = train(family, cfg, xtr[mask], ytr[mask], seed, **TRAIN[family])
            sd = stored(model)
            write(os.path.join(HERE, f"{family}-{name}"), sd, cfg)
            acc = accuracy(family, cfg, sd, xte, yte)
            record({f"{family}-{name}": {"test_accuracy": round(acc, 4)}})
            print(f"{family}-{name}: test accuracy {acc:.4f} ({time.time() - t0:.0f} s)", flush=True)
        # the naive averages, once both models of a pair exist
        for p, q in (("a", "b"), ("c", "d")):
            if not all(os.path.exists(os.path.join(HERE, f"{family}-{m}", "model.safetensors")) for m in (p, q)):
                continue
            (sp, _), (sq, _) = load(family, p), load(family, q)
            avg = {k: ((sp[k] + sq[k]) / 2 if sp[k].is_floating_point() else sp[k]) for k in sp}
            acc = accuracy(family, base, avg, xte, yte)
            record({f"{family}-{p}{q} naive average": {"test_accuracy": round(acc, 4)}})
            print(f"{family}: naive average of {p} and {q}: test accuracy {acc:.4f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["resnet", "vit"])  # FAMILY or FAMILY:a,b,... (parallel runs may train different models)
