#!/usr/bin/python3
"""Check wtool's outputs on the families' tiny checkpoints against
independent references (PyTorch forward passes, numpy SVDs, PEFT's layer
semantics). Used by internal/conformance's Go tests:

    check.py MANIFEST.json

The manifest is {"readme": path, "checks": [{"check": NAME, ...}, ...]};
every check raises AssertionError with what differs, and prints one line
when it passes.
"""

import json
import math
import os
import re
import sys
import types

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import families as fam  # noqa: E402
from families import wc  # noqa: E402

# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def raw_tensors(path):
    """{name: (dtype, shape, bytes)} of every tensor of a checkpoint (file, directory, shards)."""
    out = {}
    for f in wc._checkpoint_files(path):
        entries, _, start = wc.read_safetensors_header(f)
        with open(f, "rb") as fh:
            for name, e in entries.items():
                b, end = e["data_offsets"]
                fh.seek(start + b)
                out[name] = (e["dtype"], e["shape"], fh.read(end - b))
    return out


def load(path):
    return {k: v.double() if v.is_floating_point() else v for k, v in wc.load_checkpoint(path).items()}


def config_of(c):
    p = os.path.join(c["orig"], "config.json")
    if os.path.exists(p):
        with open(p) as f:
            return json.load(f)
    return fam.config(c["family"])


def matrix(kind, w):
    """A weight as the matrix of its module's own orientation [out, in]."""
    if kind in ("conv1d", "embedding"):
        return w.t()
    return w.reshape(w.shape[0], -1)


def rank_r(m, r):
    u, s, vt = np.linalg.svd(m.numpy(), full_matrices=False)
    return torch.from_numpy((u[:, :r] * s[:r]) @ vt[:r]), s


def close(a, b, rel, what):
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    err = (a - b).abs().max().item()
    scale = max(b.abs().max().item(), 1e-30)
    assert err <= rel * scale, f"{what}: max |difference| {err:.3g} > {rel:g} x {scale:.3g}"
    return err / scale


def readme_recipe(readme):
    """The README's PyTorch recipe that loads a factored checkpoint (the python
    block that reads compression.json)."""
    with open(readme) as f:
        text = f.read()
    for block in re.findall(r"```python\n(.*?)```", text, re.S):
        if "compression.json" in block:
            return block
    raise AssertionError("README.md has no python block reading compression.json")


def load_factored(readme, family, cfg, out):
    """Run the README's recipe on a fresh model of the family, loading the factored checkpoint at out."""
    model = fam.from_config(family, cfg)
    st = types.ModuleType("safetensors")
    st.torch = types.ModuleType("safetensors.torch")
    st.torch.load_file = lambda p: wc.load_checkpoint(p)
    saved = {k: sys.modules.get(k) for k in ("safetensors", "safetensors.torch")}
    sys.modules["safetensors"], sys.modules["safetensors.torch"] = st, st.torch
    try:
        code = readme_recipe(readme).replace('"out/', '"' + out + "/")
        exec(compile(code, "README.md recipe", "exec"), {"model": model, "__name__": "recipe"})
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return model.double().eval()


# ---------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------


def check_compress(c, readme):
    """Factored output loads into the family's modules by the README recipe and
    computes what the dense output computes; the dense output holds the rank-r
    optimum of each target in its module's orientation; every other tensor is
    byte-identical."""
    fam_, cfg = c["family"], config_of(c)
    x = fam.inputs(fam_, cfg, 3)
    # factored (F32) vs dense (F32): the same function
    model = load_factored(readme, fam_, cfg, c["factored"])
    y = fam.run(fam_, model, fam.cast_inputs(x, torch.float64))
    z = fam.forward(fam_, load(c["dense_f32"]), cfg, x)
    e = close(y, z, 1e-5, f"{fam_}: factored vs dense forward")
    comp = json.load(open(os.path.join(c["factored"], "compression.json")))
    kinds = sorted({m["kind"] for m in comp["modules"].values()})
    # dense, in the model's dtype: the optimum, the rest untouched
    orig, dense = load(c["orig"]), load(c["dense"])
    raw_o, raw_d = raw_tensors(c["orig"]), raw_tensors(c["dense"])
    rel = 1e-5 if c["dtype"] != "BF16" else 8e-3
    for t in c["targets"]:
        w, r = orig[t["name"]], t["rank"]
        opt, s = rank_r(matrix(t["kind"], w), r)
        got = matrix(t["kind"], dense[t["name"]])
        close(got, opt, rel, f"{fam_}: {t['name']} dense vs the rank-{r} optimum")
        assert got.shape == opt.shape
    targets = {t["name"] for t in c["targets"]}
    assert set(raw_o) == set(raw_d), f"{fam_}: tensors differ: {sorted(set(raw_o) ^ set(raw_d))}"
    for name in raw_o:
        if name not in targets:
            assert raw_o[name] == raw_d[name], f"{fam_}: {name} changed"
    print(f"compress {fam_}: {len(c['targets'])} targets ({', '.join(kinds)}), factored = dense to {e:.1g}, optimum and untouched tensors ok")


def peft_expect(family, cfg, name, mod, r):
    """(A key, A shape, B key, B shape, delta(A, B) -> weight layout) as PEFT creates them for this module."""
    path = name
    if family == "gpt2" and not name.startswith("transformer."):
        path = "transformer." + name  # GPT2LMHeadModel's module path
    k = "base_model.model." + path
    if isinstance(mod, nn.Embedding):
        return (k + ".lora_embedding_A", (r, mod.num_embeddings), k + ".lora_embedding_B", (mod.embedding_dim, r),
                lambda a, b: (b @ a).t())
    if isinstance(mod, fam.Conv1D):  # fan_in_fan_out: in and out of the module, transposed delta
        nx, nf = mod.weight.shape
        return k + ".lora_A.weight", (r, nx), k + ".lora_B.weight", (nf, r), lambda a, b: (b @ a).t()
    if isinstance(mod, nn.Conv2d):
        kh, kw = mod.kernel_size
        return (k + ".lora_A.weight", (r, mod.in_channels, kh, kw), k + ".lora_B.weight", (mod.out_channels, r, 1, 1),
                lambda a, b: (b.flatten(1) @ a.flatten(1)).reshape(mod.weight.shape))
    assert isinstance(mod, nn.Linear), f"{name}: {type(mod).__name__}"
    return k + ".lora_A.weight", (r, mod.in_features), k + ".lora_B.weight", (mod.out_features, r), lambda a, b: b @ a


def check_pissa(c, readme):
    """The adapter has the keys and shapes PEFT creates for each module type;
    residual + scaling * delta (PEFT's get_delta_weight) reproduces W; the
    config says fan_in_fan_out for Conv1D, the task type and the base model."""
    fam_, cfg = c["family"], config_of(c)
    model = fam.from_config(fam_, cfg)
    orig, res = load(c["orig"]), load(c["out"])
    adir = os.path.join(c["out"], "adapter")
    ad, meta = wc.read_safetensors(os.path.join(adir, "adapter_model.safetensors"))
    acfg = json.load(open(os.path.join(adir, "adapter_config.json")))
    assert meta.get("format") == "pt", meta
    rel = 1e-5 if c["dtype"] != "BF16" else 8e-3
    seen, conv1d = set(), False
    for t in c["modules"]:
        name, r = t["module"], t["rank"]
        mod = model.get_submodule(name)
        conv1d |= isinstance(mod, fam.Conv1D)
        ka, sa, kb, sb, delta = peft_expect(fam_, cfg, name, mod, r)
        assert ka in ad and kb in ad, f"{fam_}: {ka} / {kb} not in the adapter ({sorted(ad)[:4]} ...)"
        a, b = torch.from_numpy(ad[ka]).double(), torch.from_numpy(ad[kb]).double()
        assert tuple(a.shape) == sa and tuple(b.shape) == sb, f"{fam_}: {name}: A {tuple(a.shape)} B {tuple(b.shape)}, PEFT creates {sa} {sb}"
        path = ka[len("base_model.model."):].rsplit(".lora_", 1)[0]
        scaling = acfg["alpha_pattern"].get(path, acfg["lora_alpha"]) / acfg["rank_pattern"].get(path, acfg["r"])
        w = name + ".weight"
        close(res[w] + scaling * delta(a, b), orig[w], rel, f"{fam_}: {name}: residual + scaling B A vs W")
        seen |= {ka, kb}
    assert seen == set(ad), f"{fam_}: unexpected adapter tensors {sorted(set(ad) - seen)}"
    assert acfg["fan_in_fan_out"] == conv1d, f"{fam_}: fan_in_fan_out {acfg['fan_in_fan_out']}"
    assert acfg["task_type"] == c["task_type"], f"{fam_}: task_type {acfg['task_type']!r}, want {c['task_type']!r}"
    assert acfg["base_model_name_or_path"] == os.path.abspath(c["out"]), acfg["base_model_name_or_path"]
    assert acfg["init_lora_weights"] is True and acfg["peft_type"] == "LORA"
    # PEFT's target_modules must select exactly the adapted modules
    tm = acfg["target_modules"]
    names = [n for n, _ in model.named_modules() if n]
    prefixed = lambda n: ("transformer." + n) if fam_ == "gpt2" else n  # noqa: E731
    sel = {n for n in names if any(prefixed(n) == t or prefixed(n).endswith("." + t) for t in tm)}
    assert sel == {t["module"] for t in c["modules"]}, f"{fam_}: target_modules {tm} select {sorted(sel)}"
    # and the residual model plus the adapter is the original model
    x = fam.inputs(fam_, cfg, 5)
    merged = dict(res)
    for t in c["modules"]:
        ka, _, kb, _, delta = peft_expect(fam_, cfg, t["module"], model.get_submodule(t["module"]), t["rank"])
        path = ka[len("base_model.model."):].rsplit(".lora_", 1)[0]
        scaling = acfg["alpha_pattern"].get(path, acfg["lora_alpha"]) / acfg["rank_pattern"].get(path, acfg["r"])
        merged[t["module"] + ".weight"] = res[t["module"] + ".weight"] + scaling * delta(torch.from_numpy(ad[ka]).double(), torch.from_numpy(ad[kb]).double())
    close(fam.forward(fam_, merged, cfg, x), fam.forward(fam_, orig, cfg, x), rel * 10, f"{fam_}: residual + adapter forward")
    kinds = sorted({type(model.get_submodule(t["module"])).__name__ for t in c["modules"]})
    print(f"pissa {fam_}: {len(c['modules'])} modules ({', '.join(kinds)}), PEFT shapes, W reproduced, task_type {acfg['task_type']}")


def check_svd_adapter(c, readme):
    """SORSA/SVFit: W = residual + B diag(S) A in the module's orientation."""
    fam_ = c["family"]
    orig, out = load(c["orig"]), load(c["out"])
    names = {"sorsa": ("sorsa_A", "sorsa_S", "sorsa_B"), "svfit": ("svfit_Vt", "svfit_S", "svfit_U")}[c["method"]]
    rel = 1e-5 if c["dtype"] != "BF16" else 8e-3
    for t in c["modules"]:
        m = t["module"]
        a, s, b = (out[m + "." + n] for n in names)
        low = b @ torch.diag(s) @ a
        close(matrix(t["kind"], out[m + ".weight"]) + low, matrix(t["kind"], orig[m + ".weight"]), rel, f"{fam_} {c['method']}: {m}")
        assert a.shape[1] == t["in"] and b.shape[0] == t["out"], f"{m}: A {tuple(a.shape)} B {tuple(b.shape)}"
    print(f"{c['method']} {fam_}: {len(c['modules'])} modules, W = residual + B diag(S) A")


def conv1d_inputs(model, names, batches):
    """Each Conv1D module's input rows [N, in] on the batches."""
    got = {n: [] for n in names}
    hs = [model.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: got[n].append(i[0].detach().reshape(-1, i[0].shape[-1])))
          for n in names]
    with torch.no_grad():
        for x in batches:
            model(x)
    for h in hs:
        h.remove()
    return {n: torch.cat(v) for n, v in got.items()}


def gpt2_batches(c):
    ids = torch.from_numpy(wc.read_safetensors(c["calib"])[0]["x"])
    return [ids[i:i + 4] for i in range(0, ids.shape[0], 4)]


def check_whiten(c, readme):
    """Whitening reaches the closed-form optimum of the output error for Conv1D
    modules: ||(W - W') X|| = sqrt(sum_{i>r} sigma_i(W X)^2), in the module's
    orientation, on the calibration inputs."""
    orig, out = load(c["orig"]), load(c["out"])
    cfg = config_of(c)
    model = fam.from_config("gpt2", cfg).double()
    model.load_state_dict(orig)
    names = [t["module"] for t in c["targets"]]
    xs = conv1d_inputs(model, names, gpt2_batches(c))
    for t in c["targets"]:
        n, r = t["module"], t["rank"]
        w, wr = matrix("conv1d", orig[n + ".weight"]), matrix("conv1d", out[n + ".weight"])
        wx = (w @ xs[n].t()).numpy()
        s = np.linalg.svd(wx, compute_uv=False)
        opt = math.sqrt((s[r:] ** 2).sum())
        err = torch.linalg.norm((w - wr) @ xs[n].t()).item()
        assert err <= opt * (1 + 1e-3) + 1e-9, f"whiten {n}: output error {err:.6g} > optimum {opt:.6g}"
        svd_err = torch.linalg.norm((w - rank_r(w, r)[0]) @ xs[n].t()).item()
        assert svd_err > err, f"{n}: plain SVD's output error {svd_err:.6g} is not above whitening's {err:.6g}"
    print(f"whiten gpt2: {len(names)} Conv1D modules at the output-error optimum")


def check_fwsvd(c, readme):
    """FWSVD with a Fisher file written without wtool's metadata: columns of the
    [out, in] matrix scaled by sqrt(sum over rows of the Fisher in the same
    orientation), SVD, unscaled."""
    orig, out = load(c["orig"]), load(c["out"])
    fisher = load(c["fisher"])
    for t in c["targets"]:
        n, r = t["module"], t["rank"]
        w = matrix("conv1d", orig[n + ".weight"])
        f = matrix("conv1d", fisher[n + ".weight"])
        d = f.sum(0).sqrt()
        d = torch.clamp(d, min=1e-6 * d.mean().item())
        lr, _ = rank_r(w * d, r)
        close(matrix("conv1d", out[n + ".weight"]), lr / d, 1e-4, f"fwsvd {n}")
    print(f"fwsvd gpt2: {len(c['targets'])} Conv1D modules match the reference with a foreign Fisher file")


def check_regmean(c, readme):
    """RegMean on Conv1D modules: W* = (sum W_i G~_i)(sum G~_i)^-1 in [out, in]
    orientation, the bias a constant input, G~ = alpha G + (1 - alpha) diag G."""
    models = [load(p) for p in c["models"]]
    stats = [wc.read_safetensors(p)[0] for p in c["stats"]]
    out = load(c["out"])
    alpha = c["alpha"]
    for n in c["modules"]:
        ws, gs = [], []
        for m, s in zip(models, stats):
            w = matrix("conv1d", m[n + ".weight"]).numpy()
            b = m[n + ".bias"].numpy()
            ws.append(np.concatenate([w, b[:, None]], axis=1))
            g, sm, cnt = s[n + ".gram"], s[n + ".sum"], float(s[n + ".count"])
            ga = np.block([[g, sm[:, None]], [sm[None, :], np.array([[cnt]])]])
            gs.append(alpha * ga + (1 - alpha) * np.diag(np.diag(ga)))
        sol = sum(w @ g for w, g in zip(ws, gs)) @ np.linalg.inv(sum(gs))
        close(matrix("conv1d", out[n + ".weight"]), torch.from_numpy(sol[:, :-1]), 1e-4, f"regmean {n} weight")
        close(out[n + ".bias"], torch.from_numpy(sol[:, -1]), 1e-4, f"regmean {n} bias")
    print(f"regmean gpt2: {len(c['modules'])} Conv1D modules match the closed form (alpha {alpha})")


CHECKS = {"compress": check_compress, "pissa": check_pissa, "svd_adapter": check_svd_adapter,
          "whiten": check_whiten, "fwsvd": check_fwsvd, "regmean": check_regmean}


def main(manifest):
    with open(manifest) as f:
        m = json.load(f)
    torch.set_grad_enabled(False)
    failed = 0
    for c in m["checks"]:
        try:
            CHECKS[c["check"]](c, m.get("readme"))
        except AssertionError as e:
            failed += 1
            print(f"FAIL {c['check']} {c.get('family', '')}: {e}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
