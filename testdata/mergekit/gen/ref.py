"""Independent float64 formulas of mergekit's methods, written from docs/mergekit.md, used to
check the values mergekit's own code produces (and as the expected value where mergekit has a
bug wtool does not reproduce)."""
import numpy as np

def f64(x):
    return np.asarray(x, dtype=np.float64)

def split(inputs, base):
    b, others = None, []
    for i in inputs:
        if base and i["model"] == base:
            b = f64(i["x"])
        else:
            others.append(i)
    return b, others

def linear(inputs, base, g, tp):
    ws = [tp[i["model"]]["weight"] for i in inputs]
    s = sum(w * f64(i["x"]) for w, i in zip(ws, inputs))
    return s / sum(ws) if g["normalize"] else s

def slerp_pair(t, a, b, thr=0.9995, eps=1e-8):
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    ua = a / na if na > eps else a
    ub = b / nb if nb > eps else b
    dot = float(np.sum(ua * ub))
    if abs(dot) > thr:
        return (1 - t) * a + t * b
    th = np.arccos(dot)
    return (np.sin((1 - t) * th) * a + np.sin(t * th) * b) / np.sin(th)

def slerp(inputs, base, g, tp):
    b, others = split(inputs, base)
    if len(others) == 0:
        return b
    return slerp_pair(g["t"], b, f64(others[0]["x"]))

def _rows(a, row_wise, flatten):
    if flatten:
        return a.reshape(1, -1), lambda r: r.reshape(a.shape)
    if row_wise and a.ndim > 1:
        s = np.swapaxes(a, 0, -1)
        return s.reshape(-1, s.shape[-1]), lambda r: np.swapaxes(r.reshape(s.shape), 0, -1)
    return a.reshape(-1, a.shape[-1]), lambda r: r.reshape(a.shape)

def nuslerp_pair(t, a, b, row_wise, flatten):
    A, back = _rows(a, row_wise, flatten)
    B, _ = _rows(b, row_wise, flatten)
    out = np.empty_like(A)
    for r in range(A.shape[0]):
        x, y = A[r], B[r]
        ux = x / max(np.linalg.norm(x), 1e-7)
        uy = y / max(np.linalg.norm(y), 1e-7)
        th = np.arccos(np.clip(np.sum(ux * uy), -1, 1))
        s = np.sin(th)
        if abs(s) < 1e-8:
            out[r] = (1 - t) * x + t * y
        else:
            out[r] = (np.sin((1 - t) * th) * x + np.sin(t * th) * y) / s
    return back(out)

def nuslerp(inputs, base, g, tp):
    b, others = split(inputs, base)
    ws = [tp[i["model"]]["weight"] for i in others]
    t = 0.5 if abs(sum(ws)) < 1e-6 else ws[1] / sum(ws)
    x0, x1 = f64(others[0]["x"]), f64(others[1]["x"])
    rw, fl = g["nuslerp_row_wise"], g["nuslerp_flatten"]
    if b is not None:
        return b + nuslerp_pair(t, x0 - b, x1 - b, rw, fl)
    return nuslerp_pair(t, x0, x1, rw, fl)

def multislerp(inputs, base, g, tp):
    b, others = split(inputs, base)
    eps = g["eps"]
    ws = np.array([tp[i["model"]]["weight"] for i in others], dtype=np.float64)
    if g["normalize_weights"]:
        ws = ws / ws.sum()
    X = np.stack([f64(i["x"]) - (b if b is not None else 0) for i in others]).reshape(len(others), -1)
    norms = np.linalg.norm(X, axis=1)
    U = X / (norms[:, None] + eps)
    m = (ws[:, None] * U).sum(0)
    if np.linalg.norm(m) < eps:
        raise ValueError("antipodal")
    m = m / np.linalg.norm(m)
    T = U - (U @ m)[:, None] * m[None, :]
    tr = (ws[:, None] * T).sum(0)
    tn = np.linalg.norm(tr) + eps
    res = (m * np.cos(tn) + tr * np.sin(tn) / tn) * float((norms * ws).sum())
    res = res.reshape(others[0]["x"].shape)
    return res + b if b is not None else res

def karcher(inputs, base, g, tp):
    xs = [f64(i["x"]) for i in inputs]
    tol, max_iter = g["tol"], g["max_iter"]
    n = len(xs)
    alphas = [1.0 / n] * n
    norms = [np.linalg.norm(x) for x in xs]
    units = [x / nn if nn != 0 else np.zeros_like(x) for x, nn in zip(xs, norms)]
    valid = [i for i in range(n) if norms[i] > tol]
    if not valid:
        return np.zeros_like(xs[0])
    va = np.array([alphas[i] for i in valid]); va = va / va.sum()
    vu = [units[i] for i in valid]
    u = sum(a * x for a, x in zip(va, vu))
    nu = np.linalg.norm(u)
    u = vu[0].copy() if nu < tol else u / nu
    for _ in range(max_iter):
        T = np.zeros_like(u)
        for a, ui in zip(va, vu):
            d = np.clip(np.sum(u * ui), -1, 1)
            th = np.arccos(d)
            if th < tol:
                continue
            T += a * (th / np.sin(th)) * (ui - d * u)
        nT = np.linalg.norm(T)
        if nT < tol:
            break
        u = np.cos(nT) * u + np.sin(nT) * T / nT
        nu = np.linalg.norm(u)
        if nu > tol:
            u = u / nu
    return sum(a * nn for a, nn in zip(alphas, norms)) * u

def rescale_l1(d, kept):
    before, after = np.abs(d).sum(), np.abs(kept).sum()
    if before < 1e-7 or after < 1e-7:
        return kept
    return kept * (before / after)

def magnitude(d, density, rescale):
    if density >= 1:
        return d
    k = int(density * d.size)
    if k <= 0:
        raise AssertionError("density keeps no entry")
    order = np.argsort(-np.abs(d).ravel(), kind="stable")
    m = np.zeros(d.size); m[order[:k]] = 1
    kept = d * m.reshape(d.shape)
    return rescale_l1(d, kept) if rescale else kept

def magnitude_outliers(d, density, gamma, rescale):
    """Breadcrumbs as intended: drop the int(gamma n) largest, then the smallest down to int(density n)."""
    if density >= 1:
        return d
    n = d.size
    target, n_top = int(density * n), int(gamma * n)
    n_bot = n - target - n_top
    if n_bot < 0:
        n_top += n_bot; n_bot = 0
    order = np.argsort(np.abs(d).ravel(), kind="stable")
    m = np.zeros(n); m[order[n_bot:n - n_top]] = 1
    kept = d * m.reshape(d.shape)
    return rescale_l1(d, kept) if rescale else kept

def gta(sparsifier, consensus):
    def fn(inputs, base, g, tp):
        b, others = split(inputs, base)
        deltas, ws = [], []
        for i in others:
            p = tp[i["model"]]
            d = f64(i["x"]) - b
            if sparsifier == "magnitude":
                d = magnitude(d, p["density"], g["rescale"])
            elif sparsifier == "magnitude_outliers":
                d = magnitude_outliers(d, p["density"], p["gamma"], g["rescale"])
            elif sparsifier is not None:
                raise ValueError(sparsifier)
            deltas.append(d); ws.append(p["weight"])
        D = np.stack(deltas); W = np.array(ws).reshape((-1,) + (1,) * b.ndim)
        WD = D * W
        if consensus:
            maj = np.where(WD.sum(0) >= 0, 1.0, -1.0)
            mask = (np.sign(WD) == maj).astype(np.float64)
            mixed = (WD * mask).sum(0)
            div = (W * mask).sum(0); div[div == 0] = 1
        else:
            mixed = WD.sum(0)
            div = W.sum(0) * np.ones_like(mixed)
            div[np.abs(div) < 1e-8] = 1
        if g["normalize"]:
            mixed = mixed / div
        return b + g["lambda"] * mixed
    return fn

def model_stock(inputs, base, g, tp):
    b, others = split(inputs, base)
    ws = [f64(i["x"]) for i in others]
    shape = b.shape
    if g["filter_wise"]:
        rows = lambda x: x.reshape(1, -1) if x.ndim == 1 else x.reshape(x.shape[0], -1)
    else:
        rows = lambda x: x.reshape(1, -1)
    B = rows(b); O = [rows(w) - B for w in ws]
    coss = []
    for i in range(len(O)):
        for j in range(i + 1, len(O)):
            num = (O[i] * O[j]).sum(-1)
            den = np.maximum(np.linalg.norm(O[i], axis=-1) * np.linalg.norm(O[j], axis=-1), 1e-6)
            coss.append(np.clip(num / den, -1, 1))
    c = np.mean(coss, axis=0)[:, None]
    N = len(ws)
    t = N * c / (1 + (N - 1) * c)
    avg = sum(rows(w) for w in ws) / N
    return (t * avg + (1 - t) * B).reshape(shape)

def nearswap(inputs, base, g, tp):
    b, others = split(inputs, base)
    x = f64(others[0]["x"])
    w = np.clip(g["t"] / np.maximum(np.abs(b - x), 1e-6), 0, 1)
    return w * x + (1 - w) * b

def ram(plus):
    def fn(inputs, base, g, tp):
        b, others = split(inputs, base)
        eps = g["epsilon"]
        TV = np.stack([f64(i["x"]) - b for i in others]).reshape(len(others), -1)
        nz = np.abs(TV) > eps
        cnt = nz.sum(0)
        uniq, over = cnt == 1, cnt > 1
        scale = np.ones((len(others), 1))
        if plus:
            shared = (nz & over[None]).sum(1)
            unique = (nz & uniq[None]).sum(1)
            rho = shared / np.maximum(unique, eps)
            scale = (1 + g["r"] * np.clip(rho, 0, g["alpha"]))[:, None]
        Z = TV * nz
        merged = (Z * uniq[None] * scale + Z * over[None] / np.maximum(cnt, 1)[None]).sum(0)
        return b + merged.reshape(b.shape)
    return fn

def sce(inputs, base, g, tp):
    b, others = split(inputs, base)
    TV = np.stack([f64(i["x"]) - b for i in others])
    k_frac = g["select_topk"]
    if k_frac < 1:
        if k_frac <= 0:
            mask = np.zeros(b.shape)
        else:
            var = TV.var(0)
            k = int(np.count_nonzero(var) * k_frac)
            mask = np.zeros(b.size)
            if k > 0:
                order = np.argsort(-np.abs(var).ravel(), kind="stable")
                mask[order[:k]] = 1
            mask = mask.reshape(b.shape)
        TV = TV * mask[None]
    maj = np.where(TV.sum(0) >= 0, 1.0, -1.0)
    emask = (np.sign(TV) == maj).astype(np.float64)
    w = (TV ** 2).reshape(len(others), -1).mean(1)
    s = w.sum()
    w = np.ones_like(w) / len(w) if abs(s) < 1e-6 else w / s
    ew = w.reshape((-1,) + (1,) * b.ndim) * emask
    return b + (TV * ew).sum(0) / np.maximum(ew.sum(0), 1e-6)

def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)

def arcee_fusion(inputs, base, g, tp):
    b, others = split(inputs, base)
    x = f64(others[0]["x"])
    p = softmax(x) + 1e-8; q = softmax(b) + 1e-8
    kl = (p * np.log(p / q)).sum(-1)
    imp = np.abs(x - b) * np.expand_dims(kl, -1)
    s = np.sort(imp.ravel())
    idx = lambda qq: int(np.float32(qq) * np.float32(s.size - 1))
    thr = s[idx(0.5)] + 1.5 * (s[idx(0.75)] - s[idx(0.25)])
    return b + (x - b) * (imp >= thr)

def passthrough(inputs, base, g, tp):
    i = inputs[0]
    sc = tp[i["model"]].get("scale")
    x = f64(i["x"])
    return x * sc if sc is not None else x
