"""Shared code of the golden-vector generator (see ../README.md): runs mergekit's own method
code (imported through stubs.py) with torch on small float32 tensors, checks each result
against the independent float64 formula of ref.py, and writes <method>.json and
<method>.safetensors."""
import json, os, struct, sys
import numpy as np
import torch
import stubs, ref
from stubs import REGISTRY, WeightInfo, ImmutableMap, ModelReference as R

import subprocess
COMMIT = os.environ.get("MK_COMMIT") or subprocess.run(["git", "-C", stubs.MK, "rev-parse", "HEAD"],
                                                      capture_output=True, text=True).stdout.strip() or "unknown"
OUT = os.environ.get("OUT", os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

SHAPES = {"vec": (7,), "mat": (5, 6), "tall": (128, 4)}
TENSOR_NAMES = {"vec": "model.layers.0.input_layernorm.weight",
                "mat": "model.layers.0.self_attn.q_proj.weight",
                "tall": "model.embed_tokens.weight"}

def resolve(method, inputs, base, gp):
    m = REGISTRY[method]
    g = {}
    for p in m.parameters():
        if p.name in gp: g[p.name] = gp[p.name]
        elif p.required: raise RuntimeError(f"Missing required parameter {p.name}")
        else: g[p.name] = p.default_value
    tp = {}
    for inp in inputs:
        ref_, params = inp["model"], inp.get("params", {})
        tp[ref_] = {}
        for p in m.tensor_parameters():
            v = params.get(p.name, gp.get(p.name))
            if v is None:
                if p.required and ref_ != base:
                    raise RuntimeError(f"Missing required parameter {p.name} for {ref_}")
                v = p.default_value
            tp[ref_][p.name] = v
    return g, tp

def run_mergekit(method, inputs, base, gp, tensor_name, is_embed):
    g, tp = resolve(method, inputs, base, gp)
    m = REGISTRY[method]
    task = m.make_task(output_weight=WeightInfo(tensor_name, is_embed=is_embed), tensors=None,
                       parameters=ImmutableMap(g),
                       tensor_parameters=ImmutableMap({R(k): ImmutableMap(v) for k, v in tp.items()}),
                       base_model=R(base) if base else None)
    tensors = {R(i["model"]): torch.from_numpy(i["x"].copy()) for i in inputs}
    out = task.execute(tensors=tensors)
    return out.float().numpy(), g, tp

def make_models(shape, names, seed, scale=0.05, sparse=None, base=True, spread=1.0):
    rng = np.random.default_rng(seed)
    b = rng.normal(0, 1, shape).astype(np.float32)
    shared = rng.normal(0, scale, shape)
    res = {}
    if base:
        res["base"] = b
    for n in names:
        d = 0.5 * shared + rng.normal(0, scale * spread, shape)
        if sparse is not None:
            d = d * (rng.random(shape) < sparse)
        res[n] = (b + d).astype(np.float32)
    return res

class Writer:
    def __init__(self, method):
        self.method, self.cases, self.tensors = method, [], {}
    def put(self, key, arr):
        assert key not in self.tensors, key
        self.tensors[key] = np.ascontiguousarray(arr, dtype=np.float32)
        return key
    def save(self):
        doc = {"method": self.method, "mergekit": {"repository": "arcee-ai/mergekit", "commit": COMMIT,
               "version": "0.1.4"}, "cases": self.cases}
        with open(f"{OUT}/{self.method}.json", "w") as f:
            json.dump(doc, f, indent=1, sort_keys=False)
            f.write("\n")
        write_safetensors(f"{OUT}/{self.method}.safetensors", self.tensors)

def write_safetensors(path, tensors):
    header, off, blobs = {}, 0, []
    for k in sorted(tensors):
        a = tensors[k]
        b = a.astype("<f4").tobytes()
        header[k] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        off += len(b); blobs.append(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h))); f.write(h)
        for b in blobs: f.write(b)

def tol_for(mk, exact, floor_rtol=1e-5):
    scale = max(1.0, float(np.max(np.abs(exact))))
    dev = float(np.max(np.abs(mk.astype(np.float64) - exact))) if exact.size else 0.0
    # documented tolerance: at least 1e-5 relative to the tensor's scale, and 4x what
    # mergekit's float32 arithmetic deviates from the float64 formula
    atol = max(floor_rtol * scale, 4 * dev)
    return dev, atol

def add_case(w, name, shape_key, inputs, base=None, gp=None, note=None, exact_fn=None,
             expect_error=None, mergekit_differs=None, is_embed=None, ref_value=None):
    """Runs mergekit's method; checks it against exact_fn (float64 formula); records the case."""
    gp = dict(gp or {})
    tname = TENSOR_NAMES[shape_key]
    if is_embed is None:
        is_embed = shape_key == "tall"
    case = {"name": name, "shape": list(SHAPES[shape_key]), "tensor": tname, "is_embed": is_embed,
            "base_model": base or "", "parameters": gp, "inputs": []}
    for i in inputs:
        assert i["x"].shape == SHAPES[shape_key], (w.method, name, i["x"].shape)
        key = w.put(f"{name}/{i['model']}", i["x"])
        case["inputs"].append({"model": i["model"], "tensor": key, "params": i.get("params", {})})
    try:
        out, g, tp = run_mergekit(w.method, inputs, base, gp, tname, is_embed)
        err = None
        if out.shape != SHAPES[shape_key]:
            assert mergekit_differs, f"{w.method}/{name}: mergekit returns shape {out.shape}"
            out = np.zeros(SHAPES[shape_key], np.float32)  # recorded as the formula's value below
    except Exception as e:
        out, err = None, f"{type(e).__name__}: {e}"
    if expect_error is not None:
        assert err is not None, f"{w.method}/{name}: expected an error, got a result"
        case["error"] = expect_error
        case["mergekit_error"] = err
        if out is None and mergekit_differs is None:
            pass
    else:
        assert err is None, f"{w.method}/{name}: {err}"
        if not np.all(np.isfinite(out)):
            case["error"] = "non-finite result"
            case["mergekit_result"] = "non-finite values"
        else:
            case["resolved_parameters"] = g
            case["resolved_model_parameters"] = {k: v for k, v in tp.items()}
            exact = exact_fn(inputs, base, g, tp) if exact_fn else None
            if mergekit_differs is not None:
                # mergekit's value is recorded for information; the expected value is the formula's
                case["mergekit_differs"] = mergekit_differs
                if out.any():
                    case["mergekit_value"] = w.put(f"{name}/mergekit", out)
                case["expected"] = w.put(f"{name}/expected", exact.astype(np.float32))
                case["atol"] = max(1e-5 * max(1.0, float(np.max(np.abs(exact)))), 1e-6)
                case["source"] = "formula (float64), mergekit's value differs: see mergekit_differs"
            else:
                case["expected"] = w.put(f"{name}/expected", out)
                case["source"] = "mergekit " + ("(checked against the float64 formula)" if exact is not None else "(no independent formula)")
                if exact is not None:
                    dev, atol = tol_for(out, exact)
                    if dev > 1e-3 * max(1.0, float(np.max(np.abs(exact)))):
                        raise AssertionError(f"{w.method}/{name}: mergekit deviates from the formula by {dev}")
                    case["formula_deviation"] = dev
                    case["atol"] = atol
                else:
                    case["atol"] = 1e-5 * max(1.0, float(np.max(np.abs(out))))
    if note:
        case["note"] = note
    w.cases.append(case)
    return case

def inputs_from(models, params, order):
    return [{"model": n, "x": models[n], "params": params.get(n, {})} for n in order]
