#!/usr/bin/python3
"""Train the demo models bundled in testdata/demo.

Data: the handwritten digits set that ships inside scikit-learn
(sklearn.datasets.load_digits: 1,797 8x8 images, 10 classes; a copy of the
UCI "Optical Recognition of Handwritten Digits" test set). Debian package
python3-sklearn. Features are pixel values / 16, standardised with the
training split's mean and standard deviation.

Models: MLPs 64 -> 64 -> 64 -> 64 -> 64 -> 10 with ReLU (fc1 ... fc5),
trained with Adam (lr 1e-3, batch 32, 60 epochs) on the training split:
  mlp-a, mlp-b   all ten classes, seeds 1 and 2 (same data, different init
                 and batch order): the classic pair for permutation-aware
                 merging;
  mlp-c, mlp-d   digits 0-4 and digits 5-9 respectively (ten-way heads, each
                 model only ever saw half the labels): the "different label
                 spaces" pair of the PLeaS paper.

Written files (safetensors, float32, by the small writer below so that no
extra package is needed):
  mlp-{a,b,c,d}/model.safetensors + config.json
  digits_train.safetensors   x [n, 64] float32, y [n] int64  (calibration data)
  digits_test.safetensors    x [m, 64] float32, y [m] int64

Run from this directory:  /usr/bin/python3 train_demo.py
(torch 1.13 from Debian's python3-torch, numpy, scikit-learn). Training is
CPU-only and deterministic for a given torch build.
"""
import json
import os
import struct

import numpy as np
import torch
from sklearn.datasets import load_digits

HIDDEN = 64
DEPTH = 4  # hidden layers
EPOCHS = 60


def save_safetensors(path, tensors, metadata=None):
    """Minimal safetensors writer (the format's reference layout)."""
    dtypes = {np.dtype("float32"): "F32", np.dtype("int64"): "I64"}
    order = sorted(tensors, key=lambda k: (-np.dtype(tensors[k].dtype).itemsize, k))
    header, offset, blobs = {}, 0, []
    if metadata:
        header["__metadata__"] = metadata
    for name in order:
        a = np.ascontiguousarray(tensors[name])
        b = a.astype(a.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": dtypes[a.dtype], "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def data():
    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(x))
    n_test = 540
    test, train = idx[:n_test], idx[n_test:]
    mean, std = x[train].mean(0), x[train].std(0) + 1e-3
    x = ((x - mean) / std).astype(np.float32)
    return x[train], y[train], x[test], y[test]


def train(x, y, seed):
    torch.manual_seed(seed)
    layers, width = [], 64
    for _ in range(DEPTH):
        layers += [torch.nn.Linear(width, HIDDEN), torch.nn.ReLU()]
        width = HIDDEN
    model = torch.nn.Sequential(*layers, torch.nn.Linear(width, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    g = torch.Generator().manual_seed(seed)
    for _ in range(EPOCHS):
        perm = torch.randperm(len(xt), generator=g)
        for i in range(0, len(xt), 32):
            b = perm[i:i + 32]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xt[b]), yt[b]).backward()
            opt.step()
    return model


def accuracy(model, x, y):
    with torch.no_grad():
        return (model(torch.from_numpy(x)).argmax(1).numpy() == y).mean()


def main():
    xtr, ytr, xte, yte = data()
    save_safetensors("digits_train.safetensors", {"x": xtr, "y": ytr}, {"source": "sklearn.datasets.load_digits", "split": "train"})
    save_safetensors("digits_test.safetensors", {"x": xte, "y": yte}, {"source": "sklearn.datasets.load_digits", "split": "test"})
    jobs = {"mlp-a": (1, None), "mlp-b": (2, None), "mlp-c": (3, range(0, 5)), "mlp-d": (4, range(5, 10))}
    for name, (seed, labels) in jobs.items():
        mask = np.ones(len(ytr), bool) if labels is None else np.isin(ytr, list(labels))
        model = train(xtr[mask], ytr[mask], seed)
        os.makedirs(name, exist_ok=True)
        sd = {}
        linears = [m for m in model if isinstance(m, torch.nn.Linear)]
        for i, layer in enumerate(linears, 1):
            sd[f"fc{i}.weight"] = layer.weight.detach().numpy()
            sd[f"fc{i}.bias"] = layer.bias.detach().numpy()
        save_safetensors(f"{name}/model.safetensors", sd, {"format": "pt"})
        cfg = {"architectures": ["MLP"], "model_type": "mlp",
               "layers": [f"fc{i}" for i in range(1, DEPTH + 2)],
               "sizes": [64] + [HIDDEN] * DEPTH + [10], "activation": "relu",
               "trained_on": "digits " + ("0-9" if labels is None else f"{labels.start}-{labels.stop - 1}"),
               "seed": seed}
        with open(f"{name}/config.json", "w") as f:
            json.dump(cfg, f, indent=2)
            f.write("\n")
        print(f"{name}: test accuracy {accuracy(model, xte, yte):.4f}")


if __name__ == "__main__":
    main()
