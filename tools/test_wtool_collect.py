"""Tests of wtool_collect.py.

Run from the repository root:
    /usr/bin/python3 -m unittest discover -s tools -p 'test_*.py'
"""

import contextlib
import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import unittest
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wtool_collect as wc  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, "testdata", "demo")
DIGITS = os.path.join(DEMO, "digits_train.safetensors")
SCRIPT = os.path.join(ROOT, "tools", "wtool_collect.py")


class TwoLayer(nn.Module):
    """Linear -> act -> Linear; `head` is registered before `body` so that
    registration order differs from forward order."""

    def __init__(self, din=5, dh=4, dout=3, act=torch.relu, dtype=torch.float64):
        super().__init__()
        self.head = nn.Linear(dh, dout).to(dtype)
        self.body = nn.Linear(din, dh).to(dtype)
        self.act = act

    def forward(self, x):
        return self.head(self.act(self.body(x)))


def np64(t):
    return t.detach().double().numpy()


def header_of(path):
    """Raw header dict (with order) and the length field of a safetensors file."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        raw = f.read(n)
    return json.loads(raw), n, raw


class Tmp(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.dir = self._tmp.name

    def tearDown(self):
        self._tmp.cleanup()

    def path(self, name):
        return os.path.join(self.dir, name)


class TestStatsFormulas(Tmp):
    def test_linear_single_stats(self):
        torch.manual_seed(0)
        model = TwoLayer()
        # [B, T, in] inputs (flattened to B*T samples), uneven batches, tuple batches
        xs = [torch.randn(3, 2, 5, dtype=torch.float64), torch.randn(1, 2, 5, dtype=torch.float64)]
        batches = [(xs[0], "ignored"), xs[1]]
        out = self.path("s.safetensors")
        wc.collect_stats(model, batches, out)
        arrays, meta = wc.read_safetensors(out)

        x1 = np.concatenate([np64(x).reshape(-1, 5) for x in xs])
        w1, b1 = np64(model.body.weight), np64(model.body.bias)
        x2 = np.maximum(x1 @ w1.T + b1, 0)
        for name, x in (("body", x1), ("head", x2)):
            self.assertEqual(arrays[f"{name}.count"], x.shape[0])
            np.testing.assert_allclose(arrays[f"{name}.sum"], x.sum(0), rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(arrays[f"{name}.abs_sum"], np.abs(x).sum(0), rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(arrays[f"{name}.gram"], x.T @ x, rtol=1e-12, atol=1e-12)
        self.assertEqual(meta["modules"], "body,head")  # forward order, not registration order
        self.assertEqual(meta["samples"], "4")  # rows of the inputs (B), not B*T
        self.assertEqual(meta["kind"], "single")

    def test_modules_selection_and_float32_model(self):
        torch.manual_seed(1)
        model = TwoLayer(dtype=torch.float32)
        x = torch.randn(7, 5)
        out = self.path("s.safetensors")
        wc.collect_stats(model, [x], out, modules=["head"], source="test")
        arrays, meta = wc.read_safetensors(out)
        self.assertEqual(sorted(arrays), ["head.abs_sum", "head.count", "head.gram", "head.sum"])
        self.assertEqual(meta["modules"], "head")
        self.assertEqual(meta["source"], "test")
        h = np64(torch.relu(model.body(x)))
        np.testing.assert_allclose(arrays["head.gram"], h.T @ h, rtol=1e-6)
        self.assertTrue(model.training, "the model's training mode is restored")

    def test_conv_patch_gram_explicit_loop(self):
        torch.manual_seed(2)
        conv = nn.Conv2d(2, 3, kernel_size=(2, 3), stride=(2, 1), padding=(1, 2), dilation=(1, 2)).double()
        model = nn.Sequential(conv)
        x = torch.randn(2, 2, 5, 6, dtype=torch.float64)
        out = self.path("c.safetensors")
        wc.collect_stats(model, [x[:1], x[1:]], out)
        arrays, meta = wc.read_safetensors(out)
        self.assertEqual(meta["modules"], "0")

        # explicit loop over output positions
        kh, kw, sh, sw, ph, pw, dh, dw = 2, 3, 2, 1, 1, 2, 1, 2
        xp = np.pad(np64(x), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        oh = (5 + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        ow = (6 + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        rows = []
        for b in range(2):
            for i in range(oh):
                for j in range(ow):
                    patch = [xp[b, c, i * sh + u * dh, j * sw + v * dw] for c in range(2) for u in range(kh) for v in range(kw)]
                    rows.append(patch)
        p = np.array(rows)
        self.assertEqual(arrays["0.count"], 2 * oh * ow)
        self.assertEqual(arrays["0.gram"].shape, (12, 12))
        np.testing.assert_allclose(arrays["0.gram"], p.T @ p, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(arrays["0.sum"], p.sum(0), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(arrays["0.abs_sum"], np.abs(p).sum(0), rtol=1e-12, atol=1e-12)
        # the patches times the flattened weight are the conv's output
        np.testing.assert_allclose(p @ np64(conv.weight).reshape(3, -1).T + np64(conv.bias),
                                   np64(conv(x)).transpose(0, 2, 3, 1).reshape(-1, 3), rtol=1e-12, atol=1e-12)

    def test_conv_padding_variants_reproduce_output(self):
        torch.manual_seed(3)
        cases = [
            dict(kernel_size=3, padding=1, padding_mode="reflect"),
            dict(kernel_size=3, padding=(1, 2), padding_mode="circular", stride=2),
            dict(kernel_size=3, padding=1, padding_mode="replicate", dilation=2),
            dict(kernel_size=(2, 4), padding="same", dilation=(1, 1)),  # asymmetric 'same'
            dict(kernel_size=(2, 3), padding="same", padding_mode="reflect"),
            dict(kernel_size=3, padding="valid", bias=False),
        ]
        for kw in cases:
            with self.subTest(**{k: str(v) for k, v in kw.items()}):
                conv = nn.Conv2d(2, 3, **kw).double()
                x = torch.randn(2, 2, 7, 8, dtype=torch.float64)
                rows = torch.cat(list(wc._rows("c", conv, x)))
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # torch's note on even kernels with 'same'
                    y = conv(x)
                want = y.permute(0, 2, 3, 1).reshape(-1, 3)
                got = rows @ conv.weight.reshape(3, -1).t()
                if conv.bias is not None:
                    got = got + conv.bias
                torch.testing.assert_close(got, want)

    def test_half_precision_conv(self):
        torch.manual_seed(12)
        conv = nn.Conv2d(2, 2, 3, padding=1)
        x = torch.randn(1, 2, 4, 4)
        for dt in (torch.float16, torch.bfloat16):  # (torch 1.13 cannot run a half conv on CPU: test the unfold)
            want = torch.cat(list(wc._rows("c", conv, x.to(dt).float())))
            got = torch.cat(list(wc._rows("c", conv.to(dt), x.to(dt))))
            torch.testing.assert_close(got.float(), want, rtol=0, atol=0)

    def test_grouped_conv_whole_input_patch(self):
        conv = nn.Conv2d(4, 4, 3, groups=2, padding=1).double()
        out = self.path("g.safetensors")
        arrays = wc.collect_stats(nn.Sequential(conv), [torch.randn(1, 4, 4, 4, dtype=torch.float64)], out)
        self.assertEqual(list(arrays["0.gram"].shape), [36, 36])  # in_channels * kh * kw
        self.assertEqual(int(arrays["0.count"]), 16)

    def test_joint_cross_gram(self):
        torch.manual_seed(4)
        ma, mb = TwoLayer(act=torch.tanh), TwoLayer(act=torch.tanh)
        xs = [torch.randn(4, 5, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)]
        out = self.path("j.safetensors")
        wc.collect_joint_stats(ma, mb, xs, out)
        arrays, meta = wc.read_safetensors(out)
        self.assertEqual(meta["kind"], "joint")
        self.assertEqual(meta["modules"], "body,head")
        self.assertEqual(meta["samples"], "7")
        x = np.concatenate([np64(t) for t in xs])
        ha = np.tanh(x @ np64(ma.body.weight).T + np64(ma.body.bias))
        hb = np.tanh(x @ np64(mb.body.weight).T + np64(mb.body.bias))
        tol = dict(rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(arrays["body.cross"], x.T @ x, **tol)
        np.testing.assert_allclose(arrays["head.cross"], ha.T @ hb, **tol)  # row index: A's feature
        np.testing.assert_allclose(arrays["head.gram_a"], ha.T @ ha, **tol)
        np.testing.assert_allclose(arrays["head.gram_b"], hb.T @ hb, **tol)
        np.testing.assert_allclose(arrays["head.sum_a"], ha.sum(0), **tol)
        np.testing.assert_allclose(arrays["head.sum_b"], hb.sum(0), **tol)
        np.testing.assert_allclose(arrays["head.abs_sum_a"], np.abs(ha).sum(0), **tol)
        np.testing.assert_allclose(arrays["head.abs_sum_b"], np.abs(hb).sum(0), **tol)
        self.assertEqual(arrays["head.count"], 7)


class TestFamilies(Tmp):
    """Statistics of the families' tiny models (testdata/families)."""

    @classmethod
    def setUpClass(cls):
        sys.path.insert(0, os.path.join(ROOT, "testdata", "families"))
        import families
        cls.fam = families

    def test_gpt2_conv1d_inputs(self):
        # transformers' Conv1D (weight [in, out]) is collected like a Linear:
        # its input vectors, of length weight.shape[0]
        m = self.fam.build("gpt2", 1)[0].double()
        ids = self.fam.inputs("gpt2", self.fam.config("gpt2"), 1, batch=3)
        out = self.path("g.safetensors")
        wc.collect_stats(m, [ids], out)
        arrays, meta = wc.read_safetensors(out)
        self.assertIn("h.0.attn.c_attn", meta["modules"].split(","))
        x = m.wte(ids) + m.wpe(torch.arange(ids.shape[1]))
        a = np64(m.h[0].ln_1(x)).reshape(-1, 128)
        np.testing.assert_allclose(arrays["h.0.attn.c_attn.gram"], a.T @ a, rtol=1e-12, atol=1e-12)
        self.assertEqual(arrays["h.0.attn.c_attn.count"], 24)
        self.assertEqual(arrays["h.0.mlp.c_proj.gram"].shape, (512, 512))
        self.assertEqual(arrays["h.1.attn.c_proj.sum"].shape, (128,))

    def moe_inputs(self, m, ids):
        """Layer 0's mixture-of-experts input rows [N, d]."""
        h = m.model.embed_tokens(ids)
        layer = m.model.layers[0]
        h = h + layer.self_attn(layer.input_layernorm(h))
        return layer.post_attention_layernorm(h).reshape(-1, h.shape[-1])

    def test_mixtral_joint_experts(self):
        # joint statistics of an expert are over the tokens model A routes to
        # it; B's expert runs on B's hidden states at those positions
        a, b = self.fam.build("mixtral", 1)[0].double(), self.fam.build("mixtral", 2)[0].double()
        c = self.fam.config("mixtral")
        batches = [self.fam.inputs("mixtral", c, s, batch=2) for s in (1, 2)]
        joint, single = self.path("j.safetensors"), self.path("s.safetensors")
        wc.collect_joint_stats(a, b, batches, joint)
        wc.collect_stats(a, batches, single)
        j, jm = wc.read_safetensors(joint)
        s, _ = wc.read_safetensors(single)
        names = jm["modules"].split(",")
        self.assertEqual(names[:4], ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj",
                                     "model.layers.0.self_attn.v_proj", "model.layers.0.self_attn.o_proj"])
        gate = names.index("model.layers.0.block_sparse_moe.gate")
        self.assertTrue(names[gate + 1].startswith("model.layers.0.block_sparse_moe.experts.0."), names[gate:gate + 3])
        tol = dict(rtol=1e-10, atol=1e-10)
        xa = torch.cat([self.moe_inputs(a, ids) for ids in batches]).detach()
        xb = torch.cat([self.moe_inputs(b, ids) for ids in batches]).detach()
        blk_a, blk_b = a.model.layers[0].block_sparse_moe, b.model.layers[0].block_sparse_moe
        top = torch.topk(blk_a.gate(xa), 2, dim=-1).indices
        total = 0
        for e in range(4):
            p = f"model.layers.0.block_sparse_moe.experts.{e}."
            rows = (top == e).any(-1).nonzero().flatten()
            total += rows.numel()
            self.assertEqual(j[p + "w1.count"], rows.numel())
            # A's side is exactly A's own statistics
            for w in ("w1", "w2", "w3"):
                np.testing.assert_allclose(j[p + w + ".gram_a"], s[p + w + ".gram"], **tol)
                self.assertEqual(j[p + w + ".count"], s[p + w + ".count"])
            ra, rb = np64(xa[rows]), np64(xb[rows])
            np.testing.assert_allclose(j[p + "w1.cross"], ra.T @ rb, **tol)
            np.testing.assert_allclose(j[p + "w3.gram_b"], rb.T @ rb, **tol)
            ea, eb = blk_a.experts[e], blk_b.experts[e]
            ha = np64(F.silu(ea.w1(xa[rows])) * ea.w3(xa[rows]))
            hb = np64(F.silu(eb.w1(xb[rows])) * eb.w3(xb[rows]))
            np.testing.assert_allclose(j[p + "w2.cross"], ha.T @ hb, **tol)
            np.testing.assert_allclose(j[p + "w2.sum_b"], hb.sum(0), **tol)
        self.assertEqual(total, 2 * xa.shape[0])  # top-2: each token reaches two experts
        # the router sees every token in both models
        self.assertEqual(j["model.layers.0.block_sparse_moe.gate.count"], xa.shape[0])
        np.testing.assert_allclose(j["model.layers.0.block_sparse_moe.gate.cross"], np64(xa).T @ np64(xb), **tol)


class TestFisher(Tmp):
    @staticmethod
    def manual_grads(w1, b1, w2, b2, x, y):
        """Gradients of the mean cross-entropy of relu MLP logits, by hand (numpy)."""
        z = x @ w1.T + b1
        h = np.maximum(z, 0)
        logits = h @ w2.T + b2
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        n = x.shape[0]
        loss = -np.log(p[np.arange(n), y]).mean()
        d = p.copy()
        d[np.arange(n), y] -= 1
        d /= n
        gw2, gb2 = d.T @ h, d.sum(0)
        dz = (d @ w2) * (z > 0)
        gw1, gb1 = dz.T @ x, dz.sum(0)
        return {"body.weight": gw1, "body.bias": gb1, "head.weight": gw2, "head.bias": gb2}, loss

    def fisher_case(self, dtype, rtol):
        torch.manual_seed(5)
        model = TwoLayer(din=6, dh=5, dout=4, dtype=dtype)
        x = torch.randn(10, 6, dtype=dtype)
        y = torch.randint(0, 4, (10,))
        batches = [(x[0:4], y[0:4]), (x[4:8], y[4:8]), (x[8:], y[8:])]
        out = self.path("f.safetensors")
        wc.collect_fisher(model, batches, F.cross_entropy, out)
        arrays, meta = wc.read_safetensors(out)
        want, losses = {}, []
        params = {n: np64(p) for n, p in model.named_parameters()}
        for xb, yb in batches:
            g, loss = self.manual_grads(params["body.weight"], params["body.bias"], params["head.weight"],
                                        params["head.bias"], np64(xb), yb.numpy())
            losses.append(loss)
            for k, v in g.items():
                want[k] = want.get(k, 0) + v ** 2 / len(batches)
        self.assertEqual(sorted(arrays), sorted(want))
        for k in want:
            self.assertEqual(arrays[k].dtype, np.float32)
            np.testing.assert_allclose(arrays[k], want[k], rtol=rtol, atol=rtol * np.abs(want[k]).max())
        self.assertEqual(meta["batches"], "3")
        self.assertEqual(meta["batch_size"], "4")
        self.assertEqual(meta["samples"], "10")
        self.assertAlmostEqual(float(meta["loss"]), float(np.mean(losses)), delta=rtol * 10)
        self.assertIsNone(model.body.weight.grad)

    def test_fisher_manual_backprop_float64(self):
        self.fisher_case(torch.float64, 1e-6)  # the file stores float32

    def test_fisher_manual_backprop_float32(self):
        self.fisher_case(torch.float32, 1e-4)

    def test_fisher_finite_differences_conv(self):
        """Finite differences of the mean loss (float64) on a tiny conv net."""
        torch.manual_seed(6)
        model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3)).double()
        model[0].bias.requires_grad_(False)  # frozen: left out of the file
        x = torch.randn(5, 1, 4, 4, dtype=torch.float64)
        y = torch.tensor([0, 2, 1, 1, 0])
        batches = [(x[:3], y[:3]), (x[3:], y[3:])]
        out = self.path("f.safetensors")
        arrays = wc.collect_fisher(model, batches, F.cross_entropy, out)
        self.assertEqual(sorted(arrays), ["0.weight", "3.bias", "3.weight"])
        eps = 1e-6
        with torch.no_grad():
            for name, idx in (("0.weight", (1, 0, 2, 0)), ("0.weight", (0, 0, 1, 1)), ("3.weight", (2, 7)), ("3.bias", (1,))):
                p = dict(model.named_parameters())[name]
                f = 0.0
                for xb, yb in batches:
                    old = p[idx].item()
                    p[idx] = old + eps
                    lp = F.cross_entropy(model(xb), yb).item()
                    p[idx] = old - eps
                    lm = F.cross_entropy(model(xb), yb).item()
                    p[idx] = old
                    f += ((lp - lm) / (2 * eps)) ** 2 / len(batches)
                self.assertAlmostEqual(float(arrays[name][idx]), f, delta=1e-6 * max(1.0, f))


class TestFileFormat(Tmp):
    def test_stats_file_layout(self):
        torch.manual_seed(7)
        model = TwoLayer()
        out = self.path("s.safetensors")
        wc.collect_stats(model, [torch.randn(6, 5, dtype=torch.float64)], out, source="unit test")
        hdr, n, raw = header_of(out)
        self.assertEqual(n % 8, 0)
        keys = list(hdr)
        self.assertEqual(keys[0], "__metadata__")
        self.assertEqual(hdr["__metadata__"], {"format": "wtool-stats", "kind": "single", "modules": "body,head",
                                               "samples": "6", "source": "unit test", "version": "1"})
        # reference layout: I64 before F64 (enum order, descending), then by name
        self.assertEqual(keys[1:], ["body.count", "head.count", "body.abs_sum", "body.gram", "body.sum",
                                    "head.abs_sum", "head.gram", "head.sum"])
        want = {"body.count": ("I64", []), "body.sum": ("F64", [5]), "body.abs_sum": ("F64", [5]),
                "body.gram": ("F64", [5, 5]), "head.count": ("I64", []), "head.sum": ("F64", [4]),
                "head.abs_sum": ("F64", [4]), "head.gram": ("F64", [4, 4])}
        off = 0
        for k in keys[1:]:
            self.assertEqual((hdr[k]["dtype"], hdr[k]["shape"]), want[k], k)
            b, e = hdr[k]["data_offsets"]
            self.assertEqual(b, off)
            off = e
        self.assertEqual(8 + n + off, os.path.getsize(out))
        entries, meta, _ = wc.read_safetensors_header(out)
        self.assertEqual(meta["format"], "wtool-stats")
        arrays, _ = wc.read_safetensors(out)
        self.assertEqual(arrays["body.count"].dtype, np.int64)
        self.assertEqual(arrays["body.count"].shape, ())
        np.testing.assert_array_equal(arrays["body.gram"], arrays["body.gram"].T)

    def test_joint_file_names(self):
        out = self.path("j.safetensors")
        wc.collect_joint_stats(TwoLayer(), TwoLayer(), [torch.randn(3, 5, dtype=torch.float64)], out)
        entries, meta, _ = wc.read_safetensors_header(out)
        fields = {"count": ("I64", []), "sum_a": ("F64", [4]), "sum_b": ("F64", [4]), "abs_sum_a": ("F64", [4]),
                  "abs_sum_b": ("F64", [4]), "gram_a": ("F64", [4, 4]), "gram_b": ("F64", [4, 4]), "cross": ("F64", [4, 4])}
        self.assertEqual(sorted(entries), sorted([f"body.{k}" for k in fields] + [f"head.{k}" for k in fields]))
        for k, (dt, shape) in fields.items():
            self.assertEqual((entries[f"head.{k}"]["dtype"], entries[f"head.{k}"]["shape"]), (dt, shape))
        self.assertEqual(entries["body.cross"]["shape"], [5, 5])
        self.assertEqual({k: meta[k] for k in ("format", "version", "kind", "modules", "samples")},
                         {"format": "wtool-stats", "version": "1", "kind": "joint", "modules": "body,head", "samples": "3"})

    def test_fisher_file_layout(self):
        torch.manual_seed(8)
        model = TwoLayer(dtype=torch.float32)
        out = self.path("f.safetensors")
        wc.collect_fisher(model, [(torch.randn(3, 5), torch.tensor([0, 1, 2]))], F.cross_entropy, out)
        hdr, n, _ = header_of(out)
        self.assertEqual(list(hdr), ["__metadata__", "body.bias", "body.weight", "head.bias", "head.weight"])
        meta = hdr["__metadata__"]
        self.assertEqual(sorted(meta), ["batch_size", "batches", "format", "loss", "samples", "source", "version"])
        self.assertEqual((meta["format"], meta["version"], meta["batches"], meta["batch_size"], meta["samples"]),
                         ("wtool-fisher", "1", "1", "3", "3"))
        float(meta["loss"])
        for name, p in model.named_parameters():
            self.assertEqual((hdr[name]["dtype"], hdr[name]["shape"]), ("F32", list(p.shape)))

    def test_writer_matches_reference_layout_bytes(self):
        """Re-writing a reference-layout file reproduces it byte for byte."""
        src = os.path.join(DEMO, "mlp-a", "model.safetensors")
        arrays, meta = wc.read_safetensors(src)
        out = self.path("copy.safetensors")
        wc.write_safetensors(out, arrays, meta)
        with open(src, "rb") as a, open(out, "rb") as b:
            self.assertEqual(a.read(), b.read())

    def test_reader_dtypes_and_refusals(self):
        out = self.path("d.safetensors")
        bf = torch.tensor([1.5, -2.25, 3e38], dtype=torch.bfloat16)
        wc.write_safetensors(out, {"bf": bf, "h": np.array([0.5], np.float16), "i": np.array([[1, 2]], np.int32),
                                   "b": np.array([True, False])}, {"k": "v"})
        arrays, meta = wc.read_safetensors(out)
        self.assertEqual(meta, {"k": "v"})
        np.testing.assert_array_equal(arrays["bf"], bf.float().numpy())
        self.assertEqual(arrays["bf"].dtype, np.float32)
        self.assertEqual(arrays["h"].dtype, np.float16)
        self.assertEqual(arrays["i"].tolist(), [[1, 2]])
        self.assertEqual(arrays["b"].tolist(), [True, False])
        bad = self.path("bad.safetensors")
        with open(bad, "wb") as f:
            h = b'{"t":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}'
            f.write(struct.pack("<Q", len(h)) + h + b"\0" * 8)
        with self.assertRaisesRegex(ValueError, "'t'.*outside"):
            wc.read_safetensors(bad)


class TestRefusals(Tmp):
    def test_too_large_gram(self):
        with self.assertRaisesRegex(ValueError, r"'body'.*input dimension 5.*25 elements"):
            wc.collect_stats(TwoLayer(), [torch.randn(2, 5, dtype=torch.float64)], self.path("x"), max_gram_elems=20)
        conv = nn.Sequential(nn.Conv2d(512, 8, 3))
        with self.assertRaisesRegex(ValueError, r"module '0'.*4608.*21233664 elements"):
            wc.collect_stats(conv, [torch.zeros(1, 512, 3, 3)], self.path("x"), max_gram_elems=2**24)
        self.assertFalse(os.path.exists(self.path("x")))

    def test_nan_and_inf_inputs(self):
        x = torch.randn(4, 5, dtype=torch.float64)
        x[2, 1] = float("nan")
        with self.assertRaisesRegex(ValueError, "batch 1: input contains NaN or Inf"):
            wc.collect_stats(TwoLayer(), [torch.ones(2, 5, dtype=torch.float64), x], self.path("x"))
        model = TwoLayer(dtype=torch.float32)
        with torch.no_grad():
            model.body.weight.fill_(3e38)  # the hidden layer overflows to Inf
        with self.assertRaisesRegex(ValueError, "module 'head': input in batch 0 contains NaN or Inf"):
            wc.collect_stats(model, [torch.ones(2, 5)], self.path("x"))
        with self.assertRaisesRegex(ValueError, "batch 0: inputs contains NaN"):
            wc.collect_fisher(TwoLayer(), [(x, torch.zeros(4, dtype=torch.long))], F.cross_entropy, self.path("x"))

    def test_labels_out_of_range(self):
        x = torch.randn(3, 5, dtype=torch.float64)
        with self.assertRaisesRegex(ValueError, r"label 3 is out of range for a model with 3 classes"):
            wc.collect_fisher(TwoLayer(), [(x, torch.tensor([0, 3, 1]))], F.cross_entropy, self.path("x"))
        with self.assertRaisesRegex(ValueError, r"label -1 is out of range"):
            wc.collect_fisher(TwoLayer(), [(x, torch.tensor([0, -1, 1]))], F.cross_entropy, self.path("x"))

    def test_empty(self):
        with self.assertRaisesRegex(ValueError, "empty"):
            wc.collect_stats(TwoLayer(), [], self.path("x"))
        with self.assertRaisesRegex(ValueError, "empty"):
            wc.collect_joint_stats(TwoLayer(), TwoLayer(), iter([]), self.path("x"))
        with self.assertRaisesRegex(ValueError, "empty"):
            wc.collect_fisher(TwoLayer(), [], F.cross_entropy, self.path("x"))
        with self.assertRaisesRegex(ValueError, "batch 0 is empty"):
            wc.collect_stats(TwoLayer(), [torch.zeros(0, 5, dtype=torch.float64)], self.path("x"))

    def test_mismatched_joint_models(self):
        with self.assertRaisesRegex(ValueError, "differ in their modules"):
            wc.collect_joint_stats(TwoLayer(dh=4), TwoLayer(dh=6), [torch.randn(2, 5, dtype=torch.float64)], self.path("x"))
        other = nn.Sequential(nn.Linear(5, 4))
        with self.assertRaisesRegex(ValueError, "differ in their modules"):
            wc.collect_joint_stats(TwoLayer(), other, [torch.randn(2, 5)], self.path("x"))

    def test_bad_modules(self):
        with self.assertRaisesRegex(ValueError, "no module 'nope'"):
            wc.collect_stats(TwoLayer(), [torch.randn(2, 5, dtype=torch.float64)], self.path("x"), modules=["nope"])
        with self.assertRaisesRegex(TypeError, "'act'|'0'"):
            wc.collect_stats(nn.Sequential(nn.ReLU()), [torch.randn(2, 5)], self.path("x"), modules=["0"])

    def test_unused_module(self):
        class Unused(TwoLayer):
            def __init__(self):
                super().__init__()
                self.spare = nn.Linear(2, 2).double()
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            arrays = wc.collect_stats(Unused(), [torch.randn(2, 5, dtype=torch.float64)], self.path("x"))
        self.assertTrue(any("spare" in str(m.message) for m in w))
        self.assertNotIn("spare.count", arrays)
        with self.assertRaisesRegex(ValueError, "'spare'.*never ran"):
            wc.collect_stats(Unused(), [torch.randn(2, 5, dtype=torch.float64)], self.path("x"), modules="body,spare")


class TestMLPBuilder(unittest.TestCase):
    def test_natural_order_and_nested_names(self):
        torch.manual_seed(9)
        state = {"fc10.weight": torch.randn(2, 4), "fc2.weight": torch.randn(4, 3), "fc2.bias": torch.randn(4),
                 "fc1.weight": torch.randn(3, 6), "fc1.bias": torch.randn(3)}
        model = wc.build_mlp(state, act="gelu")
        self.assertEqual(model.layer_names, ["fc1", "fc2", "fc10"])
        self.assertEqual(sorted(model.state_dict()), sorted(state))
        x = torch.randn(5, 6)
        want = F.gelu(F.gelu(x @ state["fc1.weight"].T + state["fc1.bias"]) @ state["fc2.weight"].T + state["fc2.bias"]) @ state["fc10.weight"].T
        torch.testing.assert_close(model(x), want)

        nested = {"model.layers.0.up.weight": torch.randn(4, 3), "model.layers.0.down.weight": torch.randn(3, 4),
                  "model.layers.0.down.bias": torch.randn(3)}
        m = wc.build_mlp(nested, order=["model.layers.0.up", "model.layers.0.down"])
        self.assertIn("model.layers.0.up", dict(m.named_modules()))
        self.assertEqual(sorted(m.state_dict()), sorted(nested))

    def test_chain_errors(self):
        shapes = {"a.weight": [4, 3], "b.weight": [4, 3]}
        with self.assertRaisesRegex(ValueError, "do not form a chain.*--layers"):
            wc.mlp_chain(shapes)
        with self.assertRaisesRegex(ValueError, "several orders.*--layers"):
            wc.mlp_chain({"a.weight": [3, 3], "b.weight": [3, 3], "c.weight": [3, 4]})
        # natural order fails, the one consistent order is used (as wtool's Go engine does)
        self.assertEqual([n for n, *_ in wc.mlp_chain({"fc1.weight": [2, 4], "fc2.weight": [4, 3]})], ["fc2", "fc1"])
        with self.assertRaisesRegex(ValueError, "does not chain"):
            wc.mlp_chain({"fc1.weight": [4, 3], "fc2.weight": [5, 4]}, ["fc2", "fc1"])
        with self.assertRaisesRegex(ValueError, "not a Linear weight or bias.*--factory"):
            wc.mlp_chain({"fc1.weight": [4, 3], "norm.weight": [4]})
        self.assertLess(wc._natural_cmp("fc2", "fc10"), 0)
        self.assertLess(wc._natural_cmp("layers.2.up", "layers.10.up"), 0)
        self.assertLess(wc._natural_cmp("a!", "a1"), 0)  # bytewise where not both digits


def run_cli(*argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = wc.main(list(argv))
    return code, err.getvalue()


def demo_sequential(path):
    """The demo checkpoint as an nn.Sequential built independently of the collector."""
    arrays, _ = wc.read_safetensors(os.path.join(path, "model.safetensors"))
    layers = []
    for i in range(1, 6):
        lin = nn.Linear(*arrays[f"fc{i}.weight"].shape[::-1])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(arrays[f"fc{i}.weight"]))
            lin.bias.copy_(torch.from_numpy(arrays[f"fc{i}.bias"]))
        layers += [lin, nn.ReLU()]
    return nn.Sequential(*layers[:-1])


class TestCLI(Tmp):
    def test_stats_single_and_joint_on_demo(self):
        out = self.path("stats.safetensors")
        code, err = run_cli("stats", os.path.join(DEMO, "mlp-a"), "--calib", DIGITS, "-o", out)
        self.assertEqual(code, 0, err)
        arrays, meta = wc.read_safetensors(out)
        self.assertEqual(meta["modules"], "fc1,fc2,fc3,fc4,fc5")
        self.assertEqual(meta["samples"], "1257")
        self.assertEqual((meta["format"], meta["version"], meta["kind"]), ("wtool-stats", "1", "single"))
        self.assertEqual(int(arrays["fc1.count"]), 1257)
        x, _ = wc.read_safetensors(DIGITS, ["x"])
        x = x["x"].astype(np.float64)
        np.testing.assert_allclose(arrays["fc1.gram"], x.T @ x, rtol=1e-10, atol=1e-8)
        # the same model built independently as nn.Sequential, its modules named "0", "2", ...
        seq = demo_sequential(os.path.join(DEMO, "mlp-a"))
        ref = wc.collect_stats(seq, torch.from_numpy(x.astype(np.float32)).split(256), self.path("ref.safetensors"))
        for i, m in enumerate(["0", "2", "4", "6", "8"], 1):
            np.testing.assert_allclose(arrays[f"fc{i}.gram"], ref[f"{m}.gram"].numpy(), rtol=1e-6, atol=1e-6)

        joint = self.path("joint.safetensors")
        code, err = run_cli("stats", os.path.join(DEMO, "mlp-a"), os.path.join(DEMO, "mlp-b", "model.safetensors"),
                            "--calib", DIGITS, "--calib-key", "x", "-o", joint, "--batch-size", "100")
        self.assertEqual(code, 0, err)
        j, jmeta = wc.read_safetensors(joint)
        self.assertEqual(jmeta["kind"], "joint")
        np.testing.assert_allclose(j["fc3.gram_a"], arrays["fc3.gram"], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(j["fc1.cross"], arrays["fc1.gram"], rtol=1e-10)
        self.assertFalse(np.allclose(j["fc2.cross"], j["fc2.gram_a"]))

    def test_fisher_on_demo(self):
        out = self.path("fisher.safetensors")
        code, err = run_cli("fisher", os.path.join(DEMO, "mlp-a"), "--calib", DIGITS, "--labels", DIGITS, "-o", out)
        self.assertEqual(code, 0, err)
        entries, meta, _ = wc.read_safetensors_header(out)
        self.assertEqual(sorted(entries), sorted(f"fc{i}.{k}" for i in range(1, 6) for k in ("weight", "bias")))
        self.assertEqual((meta["batches"], meta["batch_size"], meta["samples"]), ("40", "32", "1257"))
        arrays, _ = wc.read_safetensors(out)
        # against the independently built nn.Sequential
        seq = demo_sequential(os.path.join(DEMO, "mlp-a"))
        d, _ = wc.read_safetensors(DIGITS)
        x, y = torch.from_numpy(d["x"]), torch.from_numpy(d["y"])
        ref = wc.collect_fisher(seq, list(zip(x.split(32), y.split(32))), wc.cross_entropy64, self.path("ref.safetensors"))
        for i, m in enumerate(["0", "2", "4", "6", "8"], 1):
            for k in ("weight", "bias"):
                np.testing.assert_allclose(arrays[f"fc{i}.{k}"], ref[f"{m}.{k}"].numpy(), rtol=1e-5, atol=1e-12)
        self.assertTrue(all(np.isfinite(a).all() and (a >= 0).all() for a in arrays.values()))
        self.assertLess(float(meta["loss"]), 0.5)  # a trained model
        # float32 model with the float64 loss: within 1e-5 of an all-float64 computation
        out64 = self.path("fisher64.safetensors")
        code, err = run_cli("fisher", os.path.join(DEMO, "mlp-a"), "--calib", DIGITS, "--labels", DIGITS, "-o", out64, "--dtype", "float64")
        self.assertEqual(code, 0, err)
        exact, meta64 = wc.read_safetensors(out64)
        for k, v in exact.items():
            self.assertLess(np.abs(arrays[k] - v).max() / np.abs(v).max(), 1e-5, k)
        self.assertAlmostEqual(float(meta["loss"]) / float(meta64["loss"]), 1, delta=1e-6)

    def test_cross_entropy64(self):
        torch.manual_seed(11)
        logits = (torch.randn(6, 4) * 20).requires_grad_()
        y = torch.randint(0, 4, (6,))
        loss = wc.cross_entropy64(logits, y)
        loss.backward()
        self.assertEqual(logits.grad.dtype, torch.float32)
        l64 = logits.detach().double().requires_grad_()
        F.cross_entropy(l64, y).backward()
        torch.testing.assert_close(loss, F.cross_entropy(l64, y).detach())
        torch.testing.assert_close(logits.grad, l64.grad.float())

    def test_cli_errors(self):
        out = self.path("x.safetensors")
        code, err = run_cli("stats", os.path.join(DEMO, "mlp-a"), "--calib", DIGITS, "-o", out, "--layers", "fc5,fc1,fc2,fc3,fc4")
        self.assertEqual(code, 1)
        self.assertIn("does not chain", err)
        code, err = run_cli("fisher", os.path.join(DEMO, "mlp-a"), "--calib", DIGITS, "--labels", DIGITS, "-o", out, "--labels-key", "x")
        self.assertEqual(code, 1)
        self.assertIn("not a 1-D integer tensor", err)
        bad = self.path("labels.safetensors")
        wc.write_safetensors(bad, {"y": np.full(1257, 10, np.int64)})
        code, err = run_cli("fisher", os.path.join(DEMO, "mlp-a"), "--calib", DIGITS, "--labels", bad, "-o", out)
        self.assertEqual(code, 1)
        self.assertIn("label 10 is out of range for a model with 10 classes", err)
        self.assertIn("'y'", err)
        self.assertFalse(os.path.exists(out))
        code, err = run_cli("stats", os.path.join(DEMO, "mlp-a"), "--calib", bad, "-o", bad)
        self.assertEqual(code, 1)
        self.assertIn("is one of the inputs", err)

    def test_factory(self):
        mod = self.path("factory_mod.py")
        with open(mod, "w") as f:
            f.write("import torch\n"
                    "def make():\n"
                    "    return torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))\n")
        ckpt = self.path("m.safetensors")
        torch.manual_seed(10)
        net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
        wc.write_safetensors(ckpt, {k: v.to(torch.bfloat16) for k, v in net.state_dict().items()})
        out = self.path("s.safetensors")
        code, err = run_cli("stats", ckpt, "--factory", f"{mod}:make", "--calib", DIGITS, "-o", out, "--layers", "2")
        self.assertEqual(code, 0, err)
        _, meta = wc.read_safetensors(out)
        self.assertEqual(meta["modules"], "2")
        code, err = run_cli("fisher", ckpt, "--factory", f"{mod}:make", "--calib", DIGITS, "--labels", DIGITS, "-o", out)
        self.assertEqual(code, 0, err)
        self.assertEqual(sorted(wc.read_safetensors(out)[0]), ["0.bias", "0.weight", "2.bias", "2.weight"])

    def test_script_help(self):
        r = subprocess.run([sys.executable, SCRIPT, "--help"], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("stats", r.stdout)
        self.assertIn("fisher", r.stdout)


if __name__ == "__main__":
    unittest.main()


class ResBlock(nn.Module):
    """A torchvision-style BasicBlock (conv1, bn1, conv2, bn2)."""

    def __init__(self, c):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, 1, 1, bias=False).double(), nn.BatchNorm2d(c).double()
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, 1, 1, bias=False).double(), nn.BatchNorm2d(c).double()

    def forward(self, x):
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class TinyResNet(nn.Module):
    def __init__(self, c=3):
        super().__init__()
        self.conv1 = nn.Conv2d(1, c, 3, 1, 1, bias=False).double()
        self.layer1 = nn.Sequential(ResBlock(c), ResBlock(c))
        self.norm = nn.LayerNorm(c).double()
        self.fc = nn.Linear(c, 2).double()

    def forward(self, x):
        y = self.layer1(F.relu(self.conv1(x)))
        return self.fc(self.norm(y.mean((2, 3))))


class TestActivationPoints(Tmp):
    def test_default_points(self):
        m = TinyResNet()
        self.assertEqual(wc.default_points(m), [
            "layer1.0:in", "layer1.0.conv2:in", "layer1.0:out", "layer1.1.conv2:in", "layer1.1:out", "norm:in"])

    def test_point_statistics_by_hand(self):
        torch.manual_seed(0)
        m = TinyResNet().eval()
        x = torch.randn(5, 1, 4, 4, dtype=torch.float64)
        out = self.path("s.safetensors")
        t = wc.collect_stats(m, [x[:2], x[2:]], out, points="default")
        with torch.no_grad():
            stem = F.relu(m.conv1(x))
            b0 = m.layer1[0](stem)
            hidden = F.relu(m.layer1[0].bn1(m.layer1[0].conv1(stem)))
            pooled = m.layer1(stem).mean((2, 3))
        for name, act in (("layer1.0:in", stem), ("layer1.0:out", b0), ("layer1.0.conv2:in", hidden)):
            rows = act.permute(0, 2, 3, 1).reshape(-1, 3)  # one sample per position per image
            self.assertEqual(int(t[name + ".count"]), 5 * 16)
            np.testing.assert_allclose(np64(t[name + ".gram"]), np64(rows.t() @ rows), rtol=1e-12)
            np.testing.assert_allclose(np64(t[name + ".sum"]), np64(rows.sum(0)), rtol=1e-12)
        np.testing.assert_allclose(np64(t["norm:in.gram"]), np64(pooled.t() @ pooled), rtol=1e-12)
        _, meta = wc.read_safetensors(out)
        names = meta["modules"].split(",")
        # forward order, points and module inputs interleaved
        self.assertEqual(names[:5], ["conv1", "layer1.0:in", "layer1.0.conv1", "layer1.0.conv2:in", "layer1.0.conv2"])
        self.assertEqual(names[-2:], ["norm:in", "fc"])

    def test_joint_points_and_explicit_list(self):
        torch.manual_seed(1)
        a, b = TinyResNet().eval(), TinyResNet().eval()
        x = torch.randn(3, 1, 4, 4, dtype=torch.float64)
        t = wc.collect_joint_stats(a, b, [x], self.path("j.safetensors"), modules=[], points="layer1.1:out,fc:in")
        with torch.no_grad():
            ya = a.layer1(F.relu(a.conv1(x))).permute(0, 2, 3, 1).reshape(-1, 3)
            yb = b.layer1(F.relu(b.conv1(x))).permute(0, 2, 3, 1).reshape(-1, 3)
        np.testing.assert_allclose(np64(t["layer1.1:out.cross"]), np64(ya.t() @ yb), rtol=1e-12)
        self.assertEqual(sorted(k.rsplit(".", 1)[0] for k in t if k.endswith(".count")), ["fc:in", "layer1.1:out"])
        with self.assertRaisesRegex(ValueError, "MODULE:in or MODULE:out"):
            wc.collect_stats(a, [x], self.path("e.safetensors"), points="layer1.1")
        with self.assertRaisesRegex(ValueError, "no module"):
            wc.collect_stats(a, [x], self.path("e.safetensors"), points="nope:in")
