import numpy as np
import ref
from gen import Writer, add_case, make_models, inputs_from, SHAPES

def det_linear():
    w = Writer("linear")
    for sk, seed in [("vec", 1), ("mat", 2), ("tall", 3)]:
        m = make_models(SHAPES[sk], ["a", "b", "c"], seed, scale=0.5, base=False)
        p = {"a": {"weight": 1.0}, "b": {"weight": 0.5}, "c": {"weight": 0.25}}
        add_case(w, f"{sk}-normalized", sk, inputs_from(m, p, ["a", "b", "c"]), exact_fn=ref.linear)
        add_case(w, f"{sk}-unnormalized", sk, inputs_from(m, p, ["a", "b", "c"]), gp={"normalize": False}, exact_fn=ref.linear)
    m = make_models(SHAPES["mat"], ["a", "b"], 4, base=False)
    add_case(w, "global-weight-fallback", "mat", inputs_from(m, {}, ["a", "b"]), gp={"weight": 0.5},
             exact_fn=ref.linear, note="no per-model weight: the global parameters section supplies it")
    add_case(w, "negative-weight", "mat", inputs_from(m, {"a": {"weight": 1.5}, "b": {"weight": -0.5}}, ["a", "b"]), exact_fn=ref.linear)
    add_case(w, "missing-weight", "mat", inputs_from(m, {"a": {"weight": 1.0}}, ["a", "b"]), expect_error="missing required parameter weight",
             note="weight is required for every model (no default)")
    add_case(w, "zero-weight-sum", "mat", inputs_from(m, {"a": {"weight": 1.0}, "b": {"weight": -1.0}}, ["a", "b"]),
             note="normalize divides by sum(w) = 0: mergekit writes inf/NaN; wtool refuses non-finite results")
    w.save()

def det_slerp():
    w = Writer("slerp")
    for sk, seed in [("vec", 11), ("mat", 12), ("tall", 13)]:
        m = make_models(SHAPES[sk], ["b"], seed, scale=0.6, base=True)
        for t in [0.0, 0.3, 0.5, 1.0]:
            add_case(w, f"{sk}-t{t}", sk, inputs_from(m, {}, ["base", "b"]), base="base", gp={"t": t}, exact_fn=ref.slerp)
    m = make_models(SHAPES["mat"], ["b"], 14, base=True)
    m["b"] = (2.0 * m["base"] + 1e-4 * np.random.default_rng(5).normal(size=SHAPES["mat"])).astype(np.float32)
    add_case(w, "nearly-parallel-lerp", "mat", inputs_from(m, {}, ["base", "b"]), base="base", gp={"t": 0.3}, exact_fn=ref.slerp,
             note="|cos| > 0.9995 of the normalised tensors: linear interpolation of the raw tensors")
    m = make_models(SHAPES["mat"], ["b"], 15, scale=0.6)
    m["b"] = (-m["base"]).astype(np.float32)
    add_case(w, "antiparallel-lerp", "mat", inputs_from(m, {}, ["base", "b"]), base="base", gp={"t": 0.25}, exact_fn=ref.slerp)
    add_case(w, "missing-t", "mat", inputs_from(m, {}, ["base", "b"]), base="base", expect_error="missing required parameter t")
    m3 = make_models(SHAPES["mat"], ["b", "c"], 16)
    add_case(w, "three-models", "mat", inputs_from(m3, {}, ["base", "b", "c"]), base="base", gp={"t": 0.5},
             expect_error="slerp takes exactly two models")
    w.save()

def det_nuslerp():
    w = Writer("nuslerp")
    for sk, seed in [("vec", 21), ("mat", 22), ("tall", 23)]:
        m = make_models(SHAPES[sk], ["a", "b"], seed, scale=0.6, base=True)
        p = {"a": {"weight": 0.3}, "b": {"weight": 0.7}}
        for fl, rw, tag in [(True, False, "flatten"), (False, False, "lastaxis"), (False, True, "rowwise")]:
            gp = {"nuslerp_flatten": fl, "nuslerp_row_wise": rw}
            add_case(w, f"{sk}-{tag}", sk, inputs_from(m, p, ["a", "b"]), gp=gp, exact_fn=ref.nuslerp)
            add_case(w, f"{sk}-{tag}-base", sk, inputs_from(m, p, ["a", "b", "base"]), base="base", gp=gp, exact_fn=ref.nuslerp)
    m = make_models(SHAPES["mat"], ["a", "b"], 24, scale=0.6)
    add_case(w, "zero-weight-sum", "mat", inputs_from(m, {"a": {"weight": 1.0}, "b": {"weight": -1.0}}, ["a", "b"]),
             exact_fn=ref.nuslerp, note="|w1 + w2| < 1e-6: t = 0.5")
    m["b"] = (3.0 * m["a"]).astype(np.float32)
    add_case(w, "parallel-rows-lerp", "mat", inputs_from(m, {"a": {"weight": 0.5}, "b": {"weight": 0.5}}, ["a", "b"]),
             gp={"nuslerp_flatten": False}, exact_fn=ref.nuslerp, note="|sin theta| < 1e-8 per vector: lerp")
    add_case(w, "base-is-a-model", "mat", inputs_from(m, {"a": {"weight": 0.5}, "b": {"weight": 0.5}}, ["a", "b"]), base="a",
             expect_error="the base model cannot be one of the two models")
    w.save()

def det_multislerp():
    w = Writer("multislerp")
    for sk, seed in [("vec", 31), ("mat", 32), ("tall", 33)]:
        m = make_models(SHAPES[sk], ["a", "b", "c"], seed, scale=0.6)
        p = {"a": {"weight": 1.0}, "b": {"weight": 2.0}, "c": {"weight": 3.0}}
        add_case(w, f"{sk}", sk, inputs_from(m, p, ["a", "b", "c"]), exact_fn=ref.multislerp)
        add_case(w, f"{sk}-base", sk, inputs_from(m, p, ["a", "b", "c", "base"]), base="base", exact_fn=ref.multislerp)
        add_case(w, f"{sk}-unnormalized", sk, inputs_from(m, {k: {"weight": v["weight"] / 8} for k, v in p.items()}, ["a", "b", "c"]),
                 gp={"normalize_weights": False}, exact_fn=ref.multislerp)
    m = make_models(SHAPES["mat"], ["a"], 34, scale=0.6)
    m["b"] = (-2 * m["a"]).astype(np.float32)
    add_case(w, "antipodal-two-lerp", "mat", inputs_from(m, {"a": {"weight": 1.0}, "b": {"weight": 1.0}}, ["a", "b"]),
             exact_fn=lambda i, b, g, tp: 0.5 * i[0]["x"].astype(np.float64) + 0.5 * i[1]["x"].astype(np.float64),
             note="norm of the weighted mean of unit vectors < eps with two models: weighted (normalised) linear combination")
    m["b"] = (-m["a"]).astype(np.float32)
    m["c"] = (0 * m["a"]).astype(np.float32)
    add_case(w, "antipodal-three", "mat", inputs_from(m, {"a": {"weight": 1.0}, "b": {"weight": 1.0}, "c": {"weight": 1.0}}, ["a", "b", "c"]),
             expect_error="weighted sum of the unit vectors is zero")
    w.save()

def det_karcher():
    w = Writer("karcher")
    for sk, seed in [("vec", 41), ("mat", 42), ("tall", 43)]:
        m = make_models(SHAPES[sk], ["a", "b", "c"], seed, scale=0.6, base=False)
        add_case(w, f"{sk}", sk, inputs_from(m, {}, ["a", "b", "c"]), exact_fn=ref.karcher)
        add_case(w, f"{sk}-maxiter1", sk, inputs_from(m, {}, ["a", "b", "c"]), gp={"max_iter": 1}, exact_fn=ref.karcher)
    m = make_models(SHAPES["mat"], ["a", "b"], 44, scale=0.6)
    add_case(w, "with-base", "mat", inputs_from(m, {}, ["a", "b", "base"]), base="base", exact_fn=ref.karcher,
             note="karcher ignores base_model as a role: the base tensor is one more equally weighted input")
    m["a"] = np.zeros(SHAPES["mat"], np.float32)
    add_case(w, "zero-tensor", "mat", inputs_from(m, {}, ["a", "b"]), exact_fn=ref.karcher,
             note="a zero tensor is left out of the mean direction but counts (with norm 0) in the scale")
    w.save()

def det_gta(method, sparsifier, consensus):
    w = Writer(method)
    fn = ref.gta(sparsifier, consensus)
    for sk, seed in [("vec", 51), ("mat", 52), ("tall", 53)]:
        m = make_models(SHAPES[sk], ["a", "b", "c"], seed, spread=1.5)
        p = {"a": {"weight": 1.0, "density": 0.5}, "b": {"weight": 0.6, "density": 0.7}, "c": {"weight": 0.3, "density": 0.9}}
        if sparsifier == "magnitude_outliers":
            for k in p: p[k]["gamma"] = 0.2
            p["a"]["density"], p["b"]["density"], p["c"]["density"] = 0.6, 0.7, 0.5
        if sparsifier is None:
            p = {k: {"weight": v["weight"]} for k, v in p.items()}
        order = ["a", "b", "c", "base"]
        add_case(w, f"{sk}", sk, inputs_from(m, p, order), base="base", exact_fn=fn)
        add_case(w, f"{sk}-lambda", sk, inputs_from(m, p, order), base="base", gp={"lambda": 0.7}, exact_fn=fn)
        add_case(w, f"{sk}-normalize-flipped", sk, inputs_from(m, p, order), base="base",
                 gp={"normalize": not {"task_arithmetic": False, "ties": True, "breadcrumbs": False, "breadcrumbs_ties": False}[method]},
                 exact_fn=fn)
        if sparsifier is not None:
            add_case(w, f"{sk}-rescale", sk, inputs_from(m, p, order), base="base", gp={"rescale": True}, exact_fn=fn,
                     note="rescale: true multiplies each sparsified task vector by L1(before) / L1(after)")
        add_case(w, f"{sk}-int8-mask", sk, inputs_from(m, p, order), base="base", gp={"int8_mask": True}, exact_fn=fn,
                 note="int8_mask only changes the mask's storage type")
    m = make_models(SHAPES["mat"], ["a", "b"], 54, spread=1.5)
    p = {"a": {"weight": 1.0, "density": 0.5}, "b": {"weight": 1.0, "density": 0.5}}
    if sparsifier is None:
        p = {k: {"weight": 1.0} for k in p}
    if sparsifier == "magnitude_outliers":
        for k in p: p[k]["gamma"] = 0.2
    add_case(w, "global-fallback", "mat", inputs_from(m, {}, ["a", "b", "base"]), base="base",
             gp={k: v for k, v in p["a"].items()}, exact_fn=fn,
             note="per-model parameters missing: the global parameters section supplies weight and density")
    add_case(w, "no-weight", "mat", inputs_from(m, {"a": {"density": 0.5}, "b": {"density": 0.5}}, ["a", "b", "base"]), base="base",
             expect_error="missing required parameter weight")
    add_case(w, "no-base", "mat", inputs_from(m, p, ["a", "b"]), expect_error="base_model is required")
    add_case(w, "base-only", "mat", inputs_from(m, {}, ["base"]), base="base", exact_fn=lambda i, b, g, tp: i[0]["x"].astype(np.float64),
             note="no task vectors (tensor only in the base): the base tensor")
    if sparsifier == "magnitude":
        add_case(w, "density-keeps-nothing", "mat", inputs_from(m, {"a": {"weight": 1.0, "density": 0.02}, "b": {"weight": 1.0, "density": 0.5}},
                 ["a", "b", "base"]), base="base", expect_error="density keeps no entry",
                 note="int(density * numel) = 0: mergekit refuses (assertion)")
        add_case(w, "density-one", "mat", inputs_from(m, {"a": {"weight": 1.0, "density": 1.0}, "b": {"weight": 0.5, "density": 1.0}},
                 ["a", "b", "base"]), base="base", exact_fn=fn)
    if sparsifier == "magnitude_outliers":
        mm = make_models(SHAPES["mat"], ["a", "b"], 55, spread=1.5)
        pp = {"a": {"weight": 1.0, "density": 0.5, "gamma": 0.01}, "b": {"weight": 1.0, "density": 0.5, "gamma": 0.01}}
        add_case(w, "gamma-rounds-to-zero", "mat", inputs_from(mm, pp, ["a", "b", "base"]), base="base", exact_fn=fn,
                 mergekit_differs="int(gamma * numel) = 0 (here 0.01 * 30): mergekit's slice indices[n_bot:-0] is empty, "
                                  "so it drops the whole task vector; the formula keeps ranks [n_bot, numel)",)
        pp = {"a": {"weight": 1.0, "density": 0.6, "gamma": 0.3}, "b": {"weight": 1.0, "density": 0.5, "gamma": 0.2}}
        add_case(w, "gamma-exceeds-budget", "tall", inputs_from(make_models(SHAPES["tall"], ["a", "b"], 56, spread=1.5), pp, ["a", "b", "base"]),
                 base="base", exact_fn=fn, note="gamma > 1 - density: fewer top entries dropped so that int(density n) are kept")
    w.save()

def det_model_stock():
    w = Writer("model_stock")
    for sk, seed in [("vec", 61), ("mat", 62), ("tall", 63)]:
        m = make_models(SHAPES[sk], ["a", "b", "c"], seed)
        add_case(w, f"{sk}", sk, inputs_from(m, {}, ["a", "b", "c", "base"]), base="base", exact_fn=ref.model_stock)
        add_case(w, f"{sk}-filter-wise", sk, inputs_from(m, {}, ["a", "b", "c", "base"]), base="base", gp={"filter_wise": True},
                 exact_fn=ref.model_stock)
        add_case(w, f"{sk}-two", sk, inputs_from(m, {}, ["a", "b", "base"]), base="base", exact_fn=ref.model_stock)
    m = make_models(SHAPES["mat"], ["a"], 64)
    add_case(w, "one-fine-tune", "mat", inputs_from(m, {}, ["a", "base"]), base="base", expect_error="at least 3 models")
    w.save()

def det_simple(method, fn, gps, names, base=True, scale=0.05, sparse=None, extra=None):
    w = Writer(method)
    for sk, seed in [("vec", 71), ("mat", 72), ("tall", 73)]:
        m = make_models(SHAPES[sk], names, seed, scale=scale, sparse=sparse)
        order = names + (["base"] if base else [])
        for tag, gp, *differs in gps:
            note = differs[0].get(sk) if differs else None
            add_case(w, f"{sk}{tag}", sk, inputs_from(m, {}, order), base="base" if base else None, gp=gp, exact_fn=fn,
                     mergekit_differs=note)
    if extra:
        extra(w)
    w.save()

def nearswap_extra(w):
    m = make_models(SHAPES["mat"], ["a", "b"], 74)
    add_case(w, "two-fine-tunes", "mat", inputs_from(m, {}, ["a", "b", "base"]), base="base", gp={"t": 0.01},
             expect_error="nearswap takes the base and exactly one other model")
    add_case(w, "missing-t", "mat", inputs_from(m, {}, ["a", "base"]), base="base", expect_error="missing required parameter t")

def ram_extra(w):
    m = make_models(SHAPES["mat"], ["a", "b"], 75)
    add_case(w, "no-base", "mat", inputs_from(m, {}, ["a", "b"]), expect_error="base_model is required")

def sce_extra(w):
    m = make_models(SHAPES["mat"], ["a", "b"], 76)
    add_case(w, "no-base", "mat", inputs_from(m, {}, ["a", "b"]), expect_error="base_model is required")

def arcee_extra(w):
    m = make_models(SHAPES["mat"], ["a", "b"], 77)
    add_case(w, "two-fine-tunes", "mat", inputs_from(m, {}, ["a", "b", "base"]), base="base",
             expect_error="arcee_fusion takes the base and exactly one other model")

def det_passthrough():
    w = Writer("passthrough")
    for sk, seed in [("vec", 81), ("mat", 82), ("tall", 83)]:
        m = make_models(SHAPES[sk], ["a"], seed, base=False)
        add_case(w, f"{sk}", sk, inputs_from(m, {}, ["a"]), exact_fn=ref.passthrough)
        add_case(w, f"{sk}-scale", sk, inputs_from(m, {"a": {"scale": 0.5}}, ["a"]), exact_fn=ref.passthrough)
    m = make_models(SHAPES["mat"], ["a", "b"], 84, base=False)
    add_case(w, "global-scale", "mat", inputs_from(m, {}, ["a"]), gp={"scale": 2.0}, exact_fn=ref.passthrough,
             note="scale is a per-model parameter; the global section supplies it when the model has none")
    add_case(w, "two-models", "mat", inputs_from(m, {}, ["a", "b"]), expect_error="passthrough takes exactly one model per tensor")
    w.save()

def main():
    det_linear(); det_slerp(); det_nuslerp(); det_multislerp(); det_karcher()
    det_gta("task_arithmetic", None, False)
    det_gta("ties", "magnitude", True)
    det_gta("breadcrumbs", "magnitude_outliers", False)
    det_gta("breadcrumbs_ties", "magnitude_outliers", True)
    det_model_stock()
    det_simple("nearswap", ref.nearswap, [("-t0.01", {"t": 0.01}), ("-t0.05", {"t": 0.05}), ("-t1", {"t": 1.0})], ["a"],
               extra=nearswap_extra)
    det_simple("ram", ref.ram(False), [("", {}), ("-eps0.02", {"epsilon": 0.02})], ["a", "b", "c"], sparse=0.4, extra=ram_extra)
    det_simple("ramplus_tl", ref.ram(True), [("", {}), ("-r0.5-alpha1", {"r": 0.5, "alpha": 1.0})], ["a", "b", "c"], sparse=0.4,
               extra=ram_extra)
    det_simple("sce", ref.sce, [("", {}), ("-topk0.5", {"select_topk": 0.5}), ("-topk0.1", {"select_topk": 0.1},
               {"vec": "int(count_nonzero(var) * select_topk) = 0 (0.1 * 7): mergekit's sce_mask returns zeros shaped like the "
                       "stacked task vectors instead of like one tensor, and the merge returns a [3, 7] tensor (the base repeated); "
                       "the formula: no position selected, so the result is the base tensor"})], ["a", "b", "c"],
               extra=sce_extra)
    det_simple("arcee_fusion", ref.arcee_fusion, [("", {})], ["a"], scale=0.3, extra=arcee_extra)
    det_passthrough()

if __name__ == "__main__":
    main()
