#!/usr/bin/python3
"""PyTorch references for fisher/nn's tests (testdata/families' modules).

    reference.py all OUTDIR FAMILY... [--pairs PAIRS NAME...]
                                           per family: checkpoints, data, logits,
                                           BatchNorm recomputation, statistics;
                                           then the pairs' references in OUTDIR/pairs
    reference.py pairs PAIRS OUTDIR NAME... testdata/pairs' trained pairs: logits,
                                           BatchNorm recomputation, joint statistics
    reference.py forward-dir MODEL DATA OUT logits of a checkpoint directory on data
    reference.py bn MODEL DATA OUT BATCH NBATCHES   running statistics recomputed
                                           in training mode (float64, momentum=None)
    reference.py stats MODEL[,MODEL2] DATA OUT BATCH   wtool_collect statistics with
                                           activation points

MODEL is a checkpoint directory whose config.json (or, for ResNets without
one, FAMILY=resnet18/resnet50 from the directory name) says which families.py
model to build. DATA is a safetensors file: "x" (images [n, ...] or token ids
[n, t]).
"""
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..", "..")
sys.path.insert(0, os.path.join(ROOT, "testdata", "families"))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import families as fam  # noqa: E402
import wtool_collect as wc  # noqa: E402

DECODERS = ("llama", "qwen2", "mistral", "gemma", "phi3", "mixtral")


def model_config(path):
    """(families.py family name, config) of a checkpoint directory."""
    cfgp = os.path.join(path, "config.json")
    if os.path.exists(cfgp):
        c = json.load(open(cfgp))
        mt = c.get("model_type")
        if mt in DECODERS or mt in ("gpt2", "bert", "vit"):
            return mt, c
        if "block" in c:
            return ("resnet18" if c["block"] == "basic" else "resnet50"), c
    base = os.path.basename(os.path.normpath(path))
    base = base[:-2] if base.endswith("-b") else base
    return base, fam.config(base)


def load_data(path, c, family):
    a, _ = wc.read_safetensors(path)
    x = torch.from_numpy(a["x"])
    if x.is_floating_point() and x.dim() == 2:  # flat images
        ch = c.get("num_channels", c.get("in_channels", 3))
        s = c["image_size"]
        x = x.view(-1, ch, s, s)
    return x


class BertIds(fam.BertForPreTraining):
    """families.py's BERT fed token ids only (every token of type 0)."""

    def forward(self, ids):
        return super().forward((ids, torch.zeros_like(ids)))


def build(path):
    family, c = model_config(path)
    sd = wc.load_checkpoint(path, torch.float64)
    m = BertIds(c).eval() if family == "bert" else fam.from_config(family, c)
    m = m.to(torch.float64)
    sd = {k: (v.to(torch.float64) if v.is_floating_point() else v) for k, v in sd.items()}
    m.load_state_dict(sd, strict=True)
    return family, c, m.eval()


def cmd_all(out, *families):
    """Per family: checkpoints (seeds 1 and 2), data, float64 logits, BatchNorm
    recomputation (ResNets), single and joint statistics with the default points."""
    for family in families:
        d = os.path.join(out, family)
        fam.write_checkpoint(d, family, seed=1)
        fam.write_checkpoint(d + "-b", family, seed=2)
        c = fam.config(family)
        x = fam.inputs(family, c, seed=1, batch=6)
        if family == "bert":
            x = x[0]
        data = os.path.join(d, "data.safetensors")
        wc.write_safetensors(data, {"x": x.contiguous()})
        cmd_forward_dir(d, data, os.path.join(d, "logits.safetensors"))
        if family.startswith("resnet"):  # 64x64 images: enough positions per channel at layer4
            g = torch.Generator().manual_seed(5)
            bn = os.path.join(d, "bn-data.safetensors")
            wc.write_safetensors(bn, {"x": torch.randn(16, 3, 64, 64, generator=g)})
            cmd_bn(d, bn, os.path.join(d, "bn.safetensors"), 8, 2)
            cmd_bn(d, bn, os.path.join(d, "bn-momentum.safetensors"), 8, 2, momentum=0.1)
        cmd_stats(d, data, os.path.join(d, "single.safetensors"), 4)
        cmd_stats(d + "," + d + "-b", data, os.path.join(d, "joint.safetensors"), 4)


def cmd_pairs(pairs, out, *names):
    """For trained pairs NAME (pairs/NAME-a, pairs/NAME-b): logits of both on
    the first 64 test samples, BatchNorm recomputation (ResNets: 2 batches of
    32 training images), joint statistics on 32 samples."""
    demo = os.path.join(pairs, "..", "demo")
    for name in names:
        a, b = os.path.join(pairs, name + "-a"), os.path.join(pairs, name + "-b")
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        if name == "llama":
            test, train = os.path.join(pairs, "text_test.safetensors"), os.path.join(pairs, "text_calib.safetensors")
            key = "ids"
        else:
            test, train = os.path.join(demo, "digits_test.safetensors"), os.path.join(demo, "digits_train.safetensors")
            key = "x"
        for src, dst, n in ((test, "test", 64), (train, "train", 64)):
            t, _ = wc.read_safetensors(src, [key])
            wc.write_safetensors(os.path.join(d, dst + ".safetensors"), {"x": torch.from_numpy(t[key][:n].copy())})
        for m, tag in ((a, "a"), (b, "b")):
            cmd_forward_dir(m, os.path.join(d, "test.safetensors"), os.path.join(d, f"logits-{tag}.safetensors"))
        if name == "resnet":
            cmd_bn(a, os.path.join(d, "train.safetensors"), os.path.join(d, "bn.safetensors"), 32, 2)
        cmd_stats(a + "," + b, os.path.join(d, "train.safetensors"), os.path.join(d, "joint.safetensors"), 16 if name != "llama" else 4)


def run(family, m, x):
    with torch.no_grad():
        if family == "bert":
            seq, _ = m.bert(x, torch.zeros_like(x))
            y = m.cls.predictions.transform(seq) @ m.bert.embeddings.word_embeddings.weight.t() + m.cls.predictions.bias
            return y.reshape(-1, y.shape[-1])
        x = x.to(torch.float64) if x.is_floating_point() else x
        y = m(x)
    return y.reshape(-1, y.shape[-1])


def cmd_forward_dir(model, data, out):
    family, c, m = build(model)
    x = load_data(data, c, family)
    wc.write_safetensors(out, {"logits": run(family, m, x).contiguous()})


def cmd_bn(model, data, out, bs, nb, momentum=None):
    family, c, m = build(model)
    x = load_data(data, c, family).to(torch.float64)
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.momentum = momentum
            mod.reset_running_stats()
    m.train()
    with torch.no_grad():
        for i in range(nb):
            b = x[i * bs:(i + 1) * bs]
            if len(b) == 0:
                break
            m(b)
    res = {}
    for name, mod in m.named_modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            res[name + ".running_mean"] = mod.running_mean.clone()
            res[name + ".running_var"] = mod.running_var.clone()
            res[name + ".num_batches_tracked"] = mod.num_batches_tracked.clone()
    wc.write_safetensors(out, res)


def cmd_stats(models, data, out, bs):
    paths = models.split(",")
    built = [build(p) for p in paths]
    family, c, _ = built[0]
    ms = [m for _, _, m in built]  # float64: the exact reference
    x = load_data(data, c, family)
    if x.is_floating_point():
        x = x.to(torch.float64)
    batches = [x[i:i + bs] for i in range(0, len(x), bs)]
    if len(ms) == 1:
        wc.collect_stats(ms[0], batches, out, points="default")
    else:
        wc.collect_joint_stats(ms[0], ms[1], batches, out, points="default")


if __name__ == "__main__":
    torch.set_num_threads(1)
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "all":  # all OUTDIR FAMILY... [--pairs PAIRS NAME...]: both, in one process
        if "--pairs" in args:
            i = args.index("--pairs")
            cmd_all(*args[:i])
            if len(args) > i + 2:
                cmd_pairs(args[i + 1], os.path.join(args[0], "pairs"), *args[i + 2:])
        else:
            cmd_all(*args)
    elif cmd == "pairs":
        cmd_pairs(*args)
    elif cmd == "forward-dir":
        cmd_forward_dir(*args)
    elif cmd == "bn":
        cmd_bn(args[0], args[1], args[2], int(args[3]), int(args[4]))
    elif cmd == "stats":
        cmd_stats(args[0], args[1], args[2], int(args[3]))
    else:
        sys.exit(f"unknown command {cmd}")
