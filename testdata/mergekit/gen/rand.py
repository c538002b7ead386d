"""Random methods (dare_*, della*): statistical expectations from mergekit's own code."""
import numpy as np, torch
import ref
import gen
from gen import Writer, add_case, make_models, inputs_from, SHAPES, run_mergekit, resolve, TENSOR_NAMES

SHAPES["col"] = (6, 1)
TENSOR_NAMES["col"] = "score.weight"
M = 3000

def della_keep_prob(d, density, eps):
    x = np.abs(d.astype(np.float64))
    rows = x.reshape(1, -1) if x.ndim < 2 else x.reshape(x.shape[0], -1) if x.ndim == 2 else None
    assert rows is not None
    p = np.empty_like(rows)
    n = rows.shape[1]
    for r in range(rows.shape[0]):
        rank = np.argsort(np.argsort(rows[r], kind="stable"), kind="stable")  # 0..n-1
        p[r] = density if n == 1 else (density - eps) + 2 * eps * rank / (n - 1)
    return p.reshape(d.shape)

def add_random(w, name, sk, models, params, order, base, gp, sparsifier, single, differs=None, mk_runs=M):
    tname = TENSOR_NAMES[sk]
    inputs = inputs_from(models, params, order)
    case = {"name": name, "shape": list(SHAPES[sk]), "tensor": tname, "is_embed": sk == "tall",
            "base_model": base, "parameters": dict(gp), "inputs": []}
    for i in inputs:
        key = w.put(f"{name}/{i['model']}", i["x"])
        case["inputs"].append({"model": i["model"], "tensor": key, "params": i.get("params", {})})
    g, tp = resolve(w.method, inputs, base, gp)
    case["resolved_parameters"] = g
    case["resolved_model_parameters"] = tp
    b = models[base].astype(np.float64)
    rnd = {"mergekit_runs": mk_runs}
    if single:
        fine = [i for i in inputs if i["model"] != base][0]
        d = fine["x"].astype(np.float64) - b
        p = tp[fine["model"]]
        if sparsifier == "random":
            keep = np.full(d.shape, float(p["density"]))
        else:
            keep = della_keep_prob(fine["x"].astype(np.float32) - models[base], p["density"], p["epsilon"])
        rnd["keep_prob"] = w.put(f"{name}/keep_prob", keep)
        rnd["delta_model"] = fine["model"]
        rnd["rescale"] = "l1" if g["rescale"] else "none"
        rnd["factor"] = g["lambda"] * (1.0 if g["normalize"] else p["weight"])
    outs = []
    kept = []
    if differs is None:
        for s in range(mk_runs):
            torch.manual_seed(s)
            out, _, _ = run_mergekit(w.method, inputs, base, gp, tname, sk == "tall")
            outs.append(out.astype(np.float64))
            if single:
                delta = out.astype(np.float64) - b
                k = delta != 0
                kept.append(k)
                # the scale structure mergekit's output has (what the Go helper checks on wtool's)
                if k.any():
                    if g["rescale"]:
                        want = rnd["factor"] * np.abs(d).sum() / np.abs(d[k]).sum()
                    else:
                        want = rnd["factor"]
                    rec = b + want * d * k
                    err = np.abs(out.astype(np.float64) - rec).max()
                    assert err <= 1e-6 * max(1.0, np.abs(out).max()), (name, err, want)
        O = np.stack(outs)
        rnd["mean"] = w.put(f"{name}/mean", O.mean(0))
        rnd["std"] = w.put(f"{name}/std", O.std(0))
        if single:
            freq = np.stack(kept).mean(0)
            keep = w.tensors[rnd["keep_prob"]].astype(np.float64)
            z = np.abs(freq - keep) / np.sqrt(np.maximum(keep * (1 - keep), 1e-12) / mk_runs)
            rnd["mergekit_keep_z_max"] = float(z.max())
            assert z.max() < 5.5, (name, z.max())
    else:
        try:
            run_mergekit(w.method, inputs, base, gp, tname, sk == "tall")
            raise AssertionError("expected mergekit to fail")
        except Exception as e:
            case["mergekit_differs"] = differs
            case["mergekit_error"] = f"{type(e).__name__}: {e}"
    case["random"] = rnd
    case["source"] = f"mergekit's statistics over {mk_runs} torch seeds (mean, std per entry); keep probabilities by formula" \
        if differs is None else "formula only (mergekit fails: see mergekit_differs)"
    w.cases.append(case)

def rand_method(method, sparsifier, consensus):
    w = Writer(method)
    det = ref.gta(None, consensus)
    della = sparsifier == "della_magprune"
    for sk, seed in [("vec", 91), ("mat", 92), ("tall", 93)]:
        m = make_models(SHAPES[sk], ["a", "b", "c"], seed, spread=1.5)
        p1 = {"a": {"weight": 0.8, "density": 0.5}}
        if della:
            p1["a"]["epsilon"] = 0.2
        add_random(w, f"{sk}-single", sk, m, p1, ["a", "base"], "base", {}, sparsifier, True)
        add_random(w, f"{sk}-single-norescale", sk, m, p1, ["a", "base"], "base", {"rescale": False, "lambda": 0.5}, sparsifier, True)
        p3 = {"a": {"weight": 1.0, "density": 0.5}, "b": {"weight": 0.6, "density": 0.7}, "c": {"weight": 0.3, "density": 0.3}}
        if della:
            for k, e in zip("abc", [0.1, 0.2, 0.15]): p3[k]["epsilon"] = e
        add_random(w, f"{sk}-three", sk, m, p3, ["a", "b", "c", "base"], "base", {}, sparsifier, False,
                   mk_runs=M if sk != "tall" else 1500)
    m = make_models(SHAPES["mat"], ["a", "b"], 94, spread=1.5)
    pd = {"a": {"weight": 1.0, "density": 1.0}, "b": {"weight": 0.5, "density": 1.0}}
    add_case(w, "density-one", "mat", inputs_from(m, pd, ["a", "b", "base"]), base="base", exact_fn=det,
             note="density >= 1: no sparsification, no rescaling (deterministic)")
    pz = {"a": {"weight": 1.0, "density": 0.0}, "b": {"weight": 0.5, "density": 0.0}}
    if della:
        for k in pz: pz[k]["epsilon"] = 0.1
    add_case(w, "density-zero", "mat", inputs_from(m, pz, ["a", "b", "base"]), base="base",
             exact_fn=lambda i, b, g, tp: i[2]["x"].astype(np.float64),
             note="density 0 drops every entry: the base tensor")
    add_case(w, "no-base", "mat", inputs_from(m, pd, ["a", "b"]), expect_error="base_model is required")
    if della:
        pe = {"a": {"weight": 1.0, "density": 0.9, "epsilon": 0.15}}
        add_case(w, "epsilon-out-of-range", "mat", inputs_from(m, pe, ["a", "base"]), base="base",
                 expect_error="density - epsilon and density + epsilon must lie in (0, 1)")
        mc = make_models(SHAPES["col"], ["a"], 95, spread=1.5)
        add_random(w, "one-column", "col", mc, {"a": {"weight": 1.0, "density": 0.5, "epsilon": 0.1}}, ["a", "base"], "base", {},
                   sparsifier, True,
                   differs="rows of one element: mergekit's rank normalisation divides 0 by 0 and torch.bernoulli fails on NaN; "
                           "the formula keeps such entries with probability density")
    w.save()

def main():
    rand_method("dare_linear", "random", False)
    rand_method("dare_ties", "random", True)
    rand_method("della", "della_magprune", True)
    rand_method("della_linear", "della_magprune", False)

if __name__ == "__main__":
    main()
