#!/usr/bin/python3
"""Collect calibration statistics and diagonal Fisher information for wtool.

wtool's activation matching, PLeaS, RegMean, activation-aware and whitened
compression need the inputs of a model's layers on calibration data, and
FWSVD and Fisher-weighted merging need the diagonal Fisher information. wtool
computes both itself for plain MLPs; this file computes them for any PyTorch
model and writes the files specified in docs/stats.md (``wtool-stats`` v1,
kinds ``single`` and ``joint``, and ``wtool-fisher`` v1).

Use from Python with your own model (any nn.Module; statistics are kept for
its nn.Linear, nn.Conv2d and transformers Conv1D (GPT-2) modules, under their
``named_modules()`` names)::

    import torch, wtool_collect as wc
    model = MyModel(); model.load_state_dict(torch.load("weights.pt"))
    wc.collect_stats(model, (x for x, _ in loader), "stats.safetensors")
    wc.collect_joint_stats(model, other_model, (x for x, _ in loader), "joint.safetensors")
    wc.collect_fisher(model, loader, torch.nn.functional.cross_entropy, "fisher.safetensors")

or from the command line (``/usr/bin/python3 tools/wtool_collect.py --help``)::

    wtool_collect.py stats  MODEL [MODEL2] --calib X.safetensors -o stats.safetensors
    wtool_collect.py fisher MODEL --calib X.safetensors --labels Y.safetensors -o fisher.safetensors

where MODEL is a ``.safetensors`` checkpoint or a directory holding one (or a
sharded ``model.safetensors.index.json``): a plain MLP (a chain of Linear
layers, as wtool's built-in engine runs) unless ``--factory pkg.mod:fn``
builds the nn.Module to load it into.

Needs only torch (>= 1.13) and numpy. safetensors files are written with
``safetensors.torch.save_file`` when that package is installed and otherwise
with the small built-in writer below, which lays files out byte-for-byte as
the reference implementation does; the built-in reader serves the CLI's
inputs.
"""

import argparse
import functools
import importlib
import importlib.util
import json
import math
import os
import struct
import sys
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

try:  # optional: the reference writer
    from safetensors.torch import save_file as _st_save_file
except ImportError:  # pragma: no cover - depends on the machine
    _st_save_file = None

__version__ = "1.0"

__all__ = [
    "collect_stats",
    "collect_joint_stats",
    "collect_fisher",
    "default_points",
    "cross_entropy64",
    "read_safetensors",
    "read_safetensors_header",
    "write_safetensors",
    "load_checkpoint",
    "build_mlp",
    "mlp_chain",
    "MLP",
    "main",
]

STATS_FORMAT, STATS_VERSION = "wtool-stats", "1"
FISHER_FORMAT, FISHER_VERSION = "wtool-fisher", "1"

#: Default limit on the number of elements of one module's Gram matrix
#: (2^26 float64 values = 512 MiB).
MAX_GRAM_ELEMS = 2**26

# Rows x features of one float64 block when accumulating (64 MiB).
_CHUNK_ELEMS = 2**23

# ---------------------------------------------------------------------------
# safetensors reading and writing
# ---------------------------------------------------------------------------

# The safetensors dtypes in the reference implementation's enum order; the
# reference writer lays tensors out by this order, descending, then by name.
_DTYPE_ORDER = [
    "BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", "F8_E4M3",
    "F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ", "I16", "U16", "F16", "BF16",
    "I32", "U32", "F32", "C64", "F64", "I64", "U64",
]
_DTYPE_RANK = {name: i for i, name in enumerate(_DTYPE_ORDER)}

# safetensors dtype -> numpy dtype (little-endian) for the dtypes the reader
# decodes. BF16 is read as uint16 and widened to float32 (exactly).
_NP_OF = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2",
    "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
    "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "|b1",
}
_ITEMSIZE = {"F64": 8, "I64": 8, "U64": 8, "C64": 8, "F32": 4, "I32": 4, "U32": 4,
             "F16": 2, "BF16": 2, "I16": 2, "U16": 2, "I8": 1, "U8": 1, "BOOL": 1,
             "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1, "F8_E4M3FNUZ": 1, "F8_E5M2FNUZ": 1}

_TORCH_TO_ST = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16",
    torch.bfloat16: "BF16", torch.int64: "I64", torch.int32: "I32",
    torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL",
}
_NP_TO_ST = {
    np.dtype("float64"): "F64", np.dtype("float32"): "F32", np.dtype("float16"): "F16",
    np.dtype("int64"): "I64", np.dtype("int32"): "I32", np.dtype("int16"): "I16",
    np.dtype("int8"): "I8", np.dtype("uint64"): "U64", np.dtype("uint32"): "U32",
    np.dtype("uint16"): "U16", np.dtype("uint8"): "U8", np.dtype("bool"): "BOOL",
}


def read_safetensors_header(path):
    """Parse and check the header of a safetensors file.

    Returns ``(entries, metadata, data_start)``: ``entries`` maps each tensor
    name to ``{"dtype", "shape", "data_offsets"}`` in file order, ``metadata``
    is the ``__metadata__`` dict (empty if absent) and ``data_start`` the byte
    offset of the data section. Raises ValueError naming the file (and the
    tensor) for malformed headers and out-of-range data offsets.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{path}: not a safetensors file (shorter than 8 bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise ValueError(f"{path}: header length {n} exceeds the file size {size}")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: invalid safetensors header: {e}") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: the safetensors header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ValueError(f"{path}: __metadata__ must map strings to strings")
    data_len = size - 8 - n
    entries = {}
    for name, info in header.items():
        try:
            dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
        except (TypeError, KeyError, ValueError):
            raise ValueError(f"{path}: tensor {name!r}: malformed header entry {info!r}") from None
        if dtype not in _DTYPE_RANK:
            raise ValueError(f"{path}: tensor {name!r}: unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise ValueError(f"{path}: tensor {name!r}: invalid shape {shape!r}")
        if not (isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end <= data_len):
            raise ValueError(f"{path}: tensor {name!r}: data offsets [{begin}, {end}] outside the {data_len}-byte data section")
        if dtype in _ITEMSIZE and end - begin != math.prod(shape) * _ITEMSIZE[dtype]:
            raise ValueError(f"{path}: tensor {name!r}: {end - begin} bytes for {dtype} {shape}")
        entries[name] = {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}
    entries = dict(sorted(entries.items(), key=lambda kv: kv[1]["data_offsets"]))
    return entries, metadata, 8 + n


def read_safetensors(path, names=None):
    """Read tensors from a safetensors file into numpy arrays.

    Returns ``(arrays, metadata)``; ``names`` (optional) restricts which
    tensors are decoded. F64/F32/F16, the integer types and BOOL keep their
    dtype; BF16 is widened exactly to float32. Other dtypes (FP8, ...) raise
    ValueError naming the tensor.
    """
    entries, metadata, start = read_safetensors_header(path)
    if names is None:
        names = list(entries)
    out = {}
    with open(path, "rb") as f:
        for name in names:
            if name not in entries:
                raise ValueError(f"{path}: no tensor {name!r}")
            e = entries[name]
            if e["dtype"] not in _NP_OF:
                raise ValueError(f"{path}: tensor {name!r}: dtype {e['dtype']} is not supported by this reader")
            begin, end = e["data_offsets"]
            f.seek(start + begin)
            buf = f.read(end - begin)
            a = np.frombuffer(buf, dtype=np.dtype(_NP_OF[e["dtype"]])).reshape(e["shape"])
            if e["dtype"] == "BF16":
                a = (a.astype(np.uint32) << 16).view(np.float32)
            out[name] = a.astype(a.dtype.newbyteorder("="), copy=True)
    return out, metadata


def _tensor_bytes(t):
    """(safetensors dtype, shape, little-endian C-order bytes) of a tensor or array."""
    if isinstance(t, torch.Tensor):
        t = t.detach().cpu().contiguous()
        if t.dtype not in _TORCH_TO_ST:
            raise TypeError(f"unsupported tensor dtype {t.dtype}")
        dtype = _TORCH_TO_ST[t.dtype]
        if t.dtype == torch.bfloat16:
            a = t.view(torch.int16).numpy()
        else:
            a = t.numpy()
    else:
        a = np.asarray(t)
        if a.dtype.newbyteorder("=") not in _NP_TO_ST:
            raise TypeError(f"unsupported array dtype {a.dtype}")
        dtype = _NP_TO_ST[a.dtype.newbyteorder("=")]
    a = a.astype(a.dtype.newbyteorder("<"), order="C", copy=False)  # keeps 0-d shapes
    return dtype, list(a.shape), a.tobytes()


def _replace_atomically(path, write):
    """Call write(tmp) on a temporary file next to path, then rename it to path."""
    path = os.fspath(path)
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_safetensors(path, tensors, metadata=None):
    """Write ``{name: tensor or array}`` and string metadata to a safetensors file.

    Uses ``safetensors.torch.save_file`` when the package is installed;
    otherwise writes the reference layout itself: 8-byte little-endian header
    length, compact JSON header with ``__metadata__`` first (keys sorted),
    then the tensors in the reference order (dtype descending in the
    reference enum order, so 8-byte types first, then name), header padded
    with spaces to a multiple of 8, data little-endian in C order. The file is
    written under a temporary name and renamed into place.
    """
    metadata = {str(k): str(v) for k, v in (metadata or {}).items()}
    for name in tensors:
        if not isinstance(name, str) or name == "__metadata__":
            raise ValueError(f"invalid tensor name {name!r}")

    if _st_save_file is not None:
        tt = {k: (v if isinstance(v, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(v))).detach().cpu().contiguous()
              for k, v in tensors.items()}
        _replace_atomically(path, lambda tmp: _st_save_file(tt, tmp, metadata=metadata))
        return

    items = {name: _tensor_bytes(t) for name, t in tensors.items()}
    order = sorted(items, key=lambda k: (-_DTYPE_RANK[items[k][0]], k))
    header = {"__metadata__": dict(sorted(metadata.items()))}
    offset = 0
    for name in order:
        dtype, shape, data = items[name]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    h = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    h += b" " * (-len(h) % 8)

    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(h)))
            f.write(h)
            for name in order:
                f.write(items[name][2])
            f.flush()
            os.fsync(f.fileno())

    _replace_atomically(path, write)


# ---------------------------------------------------------------------------
# module inputs -> sample rows
# ---------------------------------------------------------------------------


def _is_conv1d(module):
    """transformers' Conv1D (GPT-2 and kin): weight [in, out], y = x W + b.

    Recognised by its class name and layout, so that transformers need not
    be installed (nor imported) to collect statistics of such a model.
    """
    w = getattr(module, "weight", None)
    return (type(module).__name__ == "Conv1D" and hasattr(module, "nf")
            and isinstance(w, torch.Tensor) and w.dim() == 2 and w.shape[1] == module.nf)


def _collected(module):
    return isinstance(module, (nn.Linear, nn.Conv2d)) or _is_conv1d(module)


def _input_dim(name, module):
    """Length of the input vector of a Linear, Conv1D or Conv2d module (docs/stats.md)."""
    if isinstance(module, nn.Linear):
        return module.in_features
    if _is_conv1d(module):
        return module.weight.shape[0]  # [in, out]
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return module.in_channels * kh * kw
    raise TypeError(f"module {name!r} is a {type(module).__name__}; statistics are collected for nn.Linear, "
                    "Conv1D and nn.Conv2d only")


def _conv_pad(module):
    """Explicit (left, right, top, bottom) padding of a Conv2d, as PyTorch applies it."""
    kh, kw = module.kernel_size
    dh, dw = module.dilation
    if isinstance(module.padding, str):
        if module.padding == "valid":
            return (0, 0, 0, 0)
        if module.padding == "same":  # the extra pixel of an odd total goes right/bottom
            th, tw = dh * (kh - 1), dw * (kw - 1)
            return (tw // 2, tw - tw // 2, th // 2, th - th // 2)
        raise ValueError(f"unsupported Conv2d padding {module.padding!r}")
    ph, pw = module.padding
    return (pw, pw, ph, ph)


def _rows(name, module, x):
    """Yield the sample rows [n, d] of one call's input x, in bounded chunks.

    Linear, Conv1D: all leading dims flattened. Conv2d: torch.nn.functional.unfold
    patches (channel-major, then kernel row, then kernel column), one row per
    output position per image, with the layer's stride, dilation and padding
    (padding modes other than "zeros" applied with F.pad as nn.Conv2d does).
    """
    d = _input_dim(name, module)
    if isinstance(module, nn.Linear) or _is_conv1d(module):
        if x.shape[-1] != d:
            raise ValueError(f"module {name!r}: input has {x.shape[-1]} features, expected {d}")
        x = x.reshape(-1, d)
        step = max(1, _CHUNK_ELEMS // d)
        for i in range(0, x.shape[0], step):
            yield x[i:i + step]
        return
    if x.dim() == 3:  # unbatched [C, H, W]
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[1] != module.in_channels:
        raise ValueError(f"module {name!r}: input shape {list(x.shape)} is not [N, {module.in_channels}, H, W]")
    pad = _conv_pad(module)
    symmetric = pad[0] == pad[1] and pad[2] == pad[3]
    per_image = d * max(1, x.shape[2] * x.shape[3])
    step = max(1, _CHUNK_ELEMS // per_image)
    for i in range(0, x.shape[0], step):
        xi = x[i:i + step]
        if xi.device.type == "cpu" and xi.dtype in (torch.float16, torch.bfloat16):
            xi = xi.float()  # exact; CPU unfold lacks half kernels in older torch
        if module.padding_mode == "zeros" and symmetric:
            padding = (pad[2], pad[0])
        else:
            mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
            xi = F.pad(xi, pad, mode=mode)
            padding = 0
        cols = F.unfold(xi, module.kernel_size, dilation=module.dilation, padding=padding, stride=module.stride)
        yield cols.transpose(1, 2).reshape(-1, d)


def _check_finite(t, what):
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{what} contains NaN or Inf")


# ---------------------------------------------------------------------------
# activation points
# ---------------------------------------------------------------------------


def _is_norm(module):
    """A LayerNorm or RMSNorm-like module (any class named *LayerNorm or *RMSNorm); not BatchNorm."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return False
    return isinstance(module, nn.LayerNorm) or type(module).__name__.endswith(("LayerNorm", "RMSNorm"))


def _is_resnet_block(module):
    """A ResNet-style block: children conv1, bn1, conv2, bn2 (torchvision's BasicBlock and Bottleneck)."""
    return all(isinstance(getattr(module, c, None), nn.Conv2d) for c in ("conv1", "conv2")) and \
        all(isinstance(getattr(module, b, None), nn.modules.batchnorm._BatchNorm) for b in ("bn1", "bn2"))


def default_points(model):
    """The activation points docs/stats.md defines for a model, as "MODULE:in"/"MODULE:out" names.

    - the input of every LayerNorm and RMSNorm (not BatchNorm): the
      residual stream wherever a block writes it (pre-LN transformers: at
      every block boundary and between attention and MLP; post-LN: the sum
      before the norm);
    - ResNet-style blocks (a module with children conv1, bn1, conv2, bn2):
      every block's output (a stage's channels after the block), the input
      of every convolution of a block after its first (the block's hidden
      channels), and the first block's input (the stem's output).

    wtool's engine (fisher/nn) records the same points under the same names.
    """
    pts, first = [], True
    for name, m in model.named_modules():
        if _is_norm(m):
            pts.append(f"{name}:in")
        elif _is_resnet_block(m):
            if first:
                pts.append(f"{name}:in")
                first = False
            convs = sorted((int(c[4:]), c) for c, _ in m.named_children() if c.startswith("conv") and c[4:].isdigit())
            pts += [f"{name}.{c}:in" for k, c in convs if k >= 2]
            pts.append(f"{name}:out")
    return pts


def _select_points(model, points, max_gram_elems):
    """[(point name, module, "in" or "out")] of the requested activation points, checked."""
    if points is None:
        return []
    if isinstance(points, str):
        points = default_points(model) if points == "default" else [p for p in points.split(",") if p]
    named = dict(model.named_modules())
    out = []
    for p in points:
        mod, sep, side = p.rpartition(":")
        if not sep or side not in ("in", "out"):
            raise ValueError(f"activation point {p!r}: want MODULE:in or MODULE:out")
        if mod not in named:
            raise ValueError(f"activation point {p!r}: no module {mod!r} in {type(model).__name__}")
        out.append((p, named[mod], side))
    if len({p for p, _, _ in out}) != len(out):
        raise ValueError(f"points= lists a point twice: {[p for p, _, _ in out]}")
    return out


def _point_rows(name, x, max_gram_elems):
    """Sample rows of an activation: [N, C, H, W] maps give one row of C channels per
    position per image; anything else one row per vector along the last axis."""
    if isinstance(x, (tuple, list)):
        x = x[0]
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"activation point {name!r} is not a tensor")
    x = x.detach()
    if x.dim() == 4:
        x = x.permute(0, 2, 3, 1)
    d = x.shape[-1]
    if d * d > max_gram_elems:
        raise ValueError(f"activation point {name!r}: {d} features give a Gram matrix of {d * d} elements, above max_gram_elems={max_gram_elems}")
    x = x.reshape(-1, d)
    if x.device.type == "cpu" and x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    step = max(1, _CHUNK_ELEMS // d)
    for i in range(0, x.shape[0], step):
        yield x[i:i + step]


def _point_hook(module, side, fn):
    """Register fn(tensor) on a module's input (pre-hook) or output (hook)."""
    if side == "in":
        return module.register_forward_pre_hook(lambda mod, inputs: fn(inputs[0] if inputs else None))
    return module.register_forward_hook(lambda mod, inputs, output: fn(output))


# ---------------------------------------------------------------------------
# accumulators
# ---------------------------------------------------------------------------


class _Moments:
    """Float64 sums over sample rows: count, sum, abs_sum, gram (and the
    B-side and cross terms for joint statistics)."""

    def __init__(self, d, joint):
        self.d, self.joint, self.count = d, joint, 0  # d None: set by the first rows
        self.t = None

    def _alloc(self, device):
        d = self.d
        names = ["sum", "abs_sum"] + (["sum_b", "abs_sum_b"] if self.joint else [])
        self.t = {k: torch.zeros(d, dtype=torch.float64, device=device) for k in names}
        for k in ["gram"] + (["gram_b", "cross"] if self.joint else []):
            self.t[k] = torch.zeros(d, d, dtype=torch.float64, device=device)

    def add(self, xa, xb=None):
        if self.d is None:
            self.d = xa.shape[1]
        if self.t is None:
            self._alloc(xa.device)
        t = self.t
        xa = xa.to(device=t["sum"].device, dtype=torch.float64)
        t["sum"] += xa.sum(0)
        t["abs_sum"] += xa.abs().sum(0)
        t["gram"].addmm_(xa.t(), xa)
        if self.joint:
            xb = xb.to(device=t["sum"].device, dtype=torch.float64)
            t["sum_b"] += xb.sum(0)
            t["abs_sum_b"] += xb.abs().sum(0)
            t["gram_b"].addmm_(xb.t(), xb)
            t["cross"].addmm_(xa.t(), xb)
        self.count += xa.shape[0]

    def tensors(self, name):
        """The file's tensors for module `name` (Gram matrices symmetrised)."""
        if self.t is None:
            self._alloc("cpu")
        out = {f"{name}.count": torch.tensor(self.count, dtype=torch.int64)}
        for k, v in self.t.items():
            if k in ("gram", "gram_b"):
                v = (v + v.t()) * 0.5  # exact when BLAS already gave a symmetric result
            key = {"sum": "sum_a", "abs_sum": "abs_sum_a", "gram": "gram_a"}.get(k, k) if self.joint else k
            out[f"{name}.{key}"] = v.cpu().contiguous()
        return out


# ---------------------------------------------------------------------------
# model helpers
# ---------------------------------------------------------------------------


def _select_modules(model, modules, max_gram_elems, allow_empty=False):
    """[(name, module, d)] of the Linear/Conv1D/Conv2d modules to hook, checked."""
    named = dict(model.named_modules())
    if modules is None:
        chosen = [(n, m) for n, m in named.items() if _collected(m)]
        if not chosen:
            raise ValueError(f"{type(model).__name__} has no nn.Linear, Conv1D or nn.Conv2d module")
    else:
        if isinstance(modules, str):
            modules = [m for m in modules.split(",") if m]
        modules = list(modules)
        if not modules and not allow_empty:
            raise ValueError("modules= is empty")
        chosen = []
        for n in modules:
            if n not in named:
                raise ValueError(f"no module {n!r} in {type(model).__name__} (see model.named_modules())")
            chosen.append((n, named[n]))
        if len(set(modules)) != len(modules):
            raise ValueError(f"modules= lists a module twice: {modules}")
    out = []
    for n, m in chosen:
        d = _input_dim(n, m)
        if d * d > max_gram_elems:
            raise ValueError(
                f"module {n!r}: input dimension {d} gives a Gram matrix of {d * d} elements "
                f"({d * d * 8 / 2**20:.0f} MiB in float64), above max_gram_elems={max_gram_elems}; "
                "leave it out with modules= or raise the limit")
        out.append((n, m, d))
    return out


def _moe_blocks(model):
    """{name: block} of a model's sparse mixture-of-experts blocks: modules
    with a router ``gate`` (nn.Linear), an ``experts`` ModuleList and
    ``top_k`` (Mixtral's block_sparse_moe, and blocks built like it)."""
    return {n: m for n, m in model.named_modules()
            if isinstance(getattr(m, "gate", None), nn.Linear) and isinstance(getattr(m, "experts", None), nn.ModuleList)
            and isinstance(getattr(m, "top_k", None), int)}


def _device(model):
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def _to(x, device):
    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, dict):
        return {k: _to(v, device) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return type(x)(_to(v, device) for v in x)
    return x


def _rows_of(x):
    """Number of samples (leading dim) of an input: tensor, or dict/tuple of tensors."""
    if isinstance(x, torch.Tensor):
        return x.shape[0] if x.dim() > 0 else 1
    vals = list(x.values()) if isinstance(x, dict) else list(x) if isinstance(x, (tuple, list)) else []
    for v in vals:
        if isinstance(v, torch.Tensor):
            return _rows_of(v)
    raise TypeError(f"cannot find the input tensor in a batch of type {type(x).__name__}")


def _check_inputs(x, what):
    if isinstance(x, torch.Tensor):
        _check_finite(x, what)
    elif isinstance(x, dict):
        for k, v in x.items():
            _check_inputs(v, f"{what} [{k!r}]")
    elif isinstance(x, (tuple, list)):
        for i, v in enumerate(x):
            _check_inputs(v, f"{what} [{i}]")


def _call(model, x):
    return model(**x) if isinstance(x, dict) else model(x)


def _batch_input(batch, i):
    """The model input of a calibration batch: the batch itself, or its first element."""
    if isinstance(batch, (tuple, list)):
        if not batch:
            raise ValueError(f"batch {i} is an empty tuple")
        batch = batch[0]
    if not isinstance(batch, (torch.Tensor, dict)):
        raise TypeError(f"batch {i}: expected a tensor, a dict of tensors, or a tuple/list whose first element is the input; got {type(batch).__name__}")
    n = _rows_of(batch)
    if n == 0:
        raise ValueError(f"batch {i} is empty (0 samples)")
    _check_inputs(batch, f"batch {i}: input")
    return batch, n


class _Modes:
    """Put a model in eval mode and restore every submodule's mode afterwards."""

    def __init__(self, *models):
        self.modes = [(m, m.training) for model in models for m in model.modules()]

    def __enter__(self):
        for m, _ in self.modes:
            m.training = False
        return self

    def __exit__(self, *exc):
        for m, mode in self.modes:
            m.training = mode


def _default_source(*models):
    names = " + ".join(type(m).__name__ for m in models)
    return f"wtool_collect.py {__version__} (torch {torch.__version__}): {names}"


# ---------------------------------------------------------------------------
# statistics
# ---------------------------------------------------------------------------


def collect_stats(model, batches, path, modules=None, max_gram_elems=MAX_GRAM_ELEMS, source=None, points=None):
    """Collect the input statistics of a model's Linear/Conv1D/Conv2d modules.

    Runs ``model`` in eval mode under ``torch.no_grad()`` on every batch of
    ``batches`` (input tensors; or tuples/lists whose first element is the
    input; or dicts passed as keyword arguments) and accumulates, in float64,
    per module: count, sum, abs_sum and gram (sum of x x^T) of its input
    vectors. Linear and Conv1D inputs have their leading dims flattened
    ([B, T, in] is B*T samples; a Conv1D's in is its weight's first axis);
    Conv2d inputs are unfolded into patches of length
    in_channels*kh*kw, one sample per output position. A module called
    several times in a forward pass contributes every call's inputs.

    ``modules``: names from ``model.named_modules()`` (list or
    comma-separated string) to restrict to; by default every nn.Linear,
    Conv1D and nn.Conv2d. Modules whose Gram matrix would have more than
    ``max_gram_elems`` elements are refused with ValueError (leave them out
    with ``modules``). Default modules that never run are left out with a
    warning; requested ones are an error.

    ``points``: activation points to record as well (docs/stats.md):
    ``"default"`` (:func:`default_points`: the residual stream at every
    norm, a ResNet's block outputs and hidden channels), or a list (or
    comma-separated string) of ``"MODULE:in"``/``"MODULE:out"`` names, the
    input or output of a module; a 4-D [N, C, H, W] activation gives one
    sample of C channels per position per image, others one sample per
    vector along the last axis. ``None`` (default): module inputs only.

    Writes the ``kind: single`` wtool-stats file (docs/stats.md) to ``path``
    and returns the written tensors as a dict.
    """
    pts = _select_points(model, points, max_gram_elems)
    sel = _select_modules(model, modules, max_gram_elems, allow_empty=bool(pts))
    mods = {n: (m, d) for n, m, d in sel}
    acc = {n: _Moments(d, joint=False) for n, _, d in sel}
    acc.update({p: _Moments(None, joint=False) for p, _, _ in pts})
    order = []
    state = {"batch": -1}

    def point_for(name):
        def fn(x):
            if not isinstance(x, torch.Tensor):
                raise ValueError(f"activation point {name!r} is not a tensor")
            _check_finite(x, f"activation point {name!r} in batch {state['batch']}")
            if name not in order:
                order.append(name)
            for rows in _point_rows(name, x, max_gram_elems):
                acc[name].add(rows)
        return fn

    def hook_for(name):
        module, _ = mods[name]

        def hook(mod, inputs, output):
            if not inputs or not isinstance(inputs[0], torch.Tensor):
                raise ValueError(f"module {name!r} was called without a positional input tensor")
            x = inputs[0].detach()
            _check_finite(x, f"module {name!r}: input in batch {state['batch']}")
            if name not in order:
                order.append(name)
            for rows in _rows(name, module, x):
                acc[name].add(rows)
        return hook

    device = _device(model)
    samples = 0
    handles = [m.register_forward_hook(hook_for(n)) for n, m, _ in sel]
    handles += [_point_hook(m, side, point_for(p)) for p, m, side in pts]
    try:
        with _Modes(model), torch.no_grad():
            for i, batch in enumerate(batches):
                state["batch"] = i
                x, n = _batch_input(batch, i)
                _call(model, _to(x, device))
                samples += n
    finally:
        for h in handles:
            h.remove()
    if state["batch"] < 0:
        raise ValueError("no calibration batches: `batches` is empty")
    order = _finish_order(order, [n for n, _, _ in sel] + [p for p, _, _ in pts], modules is not None or points not in (None, "default"))
    tensors = {}
    for n in order:
        tensors.update(acc[n].tensors(n))
    meta = {"format": STATS_FORMAT, "version": STATS_VERSION, "kind": "single",
            "modules": ",".join(order), "samples": str(samples),
            "source": source if source is not None else _default_source(model)}
    write_safetensors(path, tensors, meta)
    return tensors


def _finish_order(order, selected, explicit):
    """Check which selected modules ran; return the forward order."""
    missing = [n for n in selected if n not in order]
    if missing and explicit:
        raise ValueError(f"module(s) {', '.join(map(repr, missing))} never ran on the calibration batches")
    if missing:
        warnings.warn(f"module(s) {', '.join(missing)} never ran on the calibration batches; left out of the statistics")
    if not order:
        raise ValueError("no selected module ran on the calibration batches")
    for n in order:
        if "," in n:
            raise ValueError(f"module name {n!r} contains a comma, which the modules metadata list cannot hold")
    return order


def collect_joint_stats(model_a, model_b, batches, path, modules=None, max_gram_elems=MAX_GRAM_ELEMS, source=None,
                        points=None):
    """Collect joint input statistics of two models of the same architecture.

    The same batches (as for :func:`collect_stats`) go through both models;
    per module the file holds count, sum_a/sum_b, abs_sum_a/abs_sum_b,
    gram_a/gram_b and cross = sum of x_A x_B^T (row index: A's feature).
    Models whose selected modules differ (names, types, input sizes) or whose
    modules see different numbers of samples are refused with ValueError.
    One batch's inputs of every selected module of A are held in memory
    until B has run on it.

    Mixtures of experts (a block with a router ``gate``, an ``experts``
    ModuleList and ``top_k``, as Mixtral's block_sparse_moe): the two models
    route tokens differently, so an expert of A and the same expert of B see
    different tokens. Joint statistics of an expert's modules are defined on
    the tokens model A routes to that expert (its top-k at that layer): x_A
    is what A's expert receives, x_B what B's expert receives when it is run
    on B's hidden states at the same token positions, whatever B's router
    chose. count is the number of those tokens (a token counts once per
    expert). The routers themselves see every token in both models and get
    ordinary joint statistics. Single-model statistics (:func:`collect_stats`)
    of an expert are over the tokens the model routes to it, so gram_a of the
    joint file equals model A's own gram.

    ``points`` adds activation points, as for :func:`collect_stats`
    (``"default"`` takes model A's default points), on the same samples in
    both models.

    Writes the ``kind: joint`` wtool-stats file to ``path`` and returns the
    written tensors as a dict.
    """
    explicit_points = points not in (None, "default")
    if points == "default":
        points = default_points(model_a)
    pts_a = _select_points(model_a, points, max_gram_elems)
    pts_b = _select_points(model_b, points, max_gram_elems)
    pnames = {p for p, _, _ in pts_a}
    sel_a = _select_modules(model_a, modules, max_gram_elems, allow_empty=bool(pts_a))
    sel_b = _select_modules(model_b, modules, max_gram_elems, allow_empty=bool(pts_b))
    sig_a = [(n, type(m).__name__, d) for n, m, d in sel_a]
    sig_b = [(n, type(m).__name__, d) for n, m, d in sel_b]
    if sig_a != sig_b:
        diff = sorted(set(sig_a) ^ set(sig_b))
        raise ValueError(f"models A and B differ in their modules (name, type, input size): {diff[:6]}{' ...' if len(diff) > 6 else ''}")
    for (n, ma, _), (_, mb, _) in zip(sel_a, sel_b):
        if isinstance(ma, nn.Conv2d):
            ka = (ma.kernel_size, ma.stride, ma.padding, ma.dilation, ma.padding_mode)
            kb = (mb.kernel_size, mb.stride, mb.padding, mb.dilation, mb.padding_mode)
            if ka != kb:
                raise ValueError(f"module {n!r}: the convolutions of A and B differ: {ka} vs {kb}")
    mods_a = {n: m for n, m, _ in sel_a}
    mods_b = {n: m for n, m, _ in sel_b}
    acc = {n: _Moments(d, joint=True) for n, _, d in sel_a}
    acc.update({p: _Moments(None, joint=True) for p in pnames})
    calls = {"a": {}, "b": {}}
    order = {"a": [], "b": []}
    state = {"batch": -1}
    moe_a, moe_b = _moe_blocks(model_a), _moe_blocks(model_b)
    if sorted(moe_a) != sorted(moe_b):
        raise ValueError(f"models A and B differ in their mixture-of-experts blocks: {sorted(set(moe_a) ^ set(moe_b))}")
    experts = {}  # selected module -> (block, expert index): run on A's routing
    for n in mods_a:
        for blk in moe_a:
            prefix = (blk + "." if blk else "") + "experts."
            if n.startswith(prefix):
                experts[n] = (blk, int(n[len(prefix):].split(".")[0]))
    moe_in = {"a": {}, "b": {}}
    ran = []  # expert modules that got tokens, in the order they did

    def moe_hook_for(side, blk):
        def hook(mod, inputs):
            if not inputs or not isinstance(inputs[0], torch.Tensor):
                raise ValueError(f"mixture-of-experts block {blk!r} of model {side.upper()} was called without a positional input tensor")
            moe_in[side].setdefault(blk, []).append(inputs[0].detach())
        return hook

    def run_experts(i):
        for blk, xs_a in moe_in["a"].items():
            xs_b = moe_in["b"].get(blk, [])
            if len(xs_a) != len(xs_b):
                raise ValueError(f"batch {i}: mixture-of-experts block {blk!r} ran {len(xs_a)} times in A, {len(xs_b)} in B")
            block_a, block_b = moe_a[blk], moe_b[blk]
            for xa, xb in zip(xs_a, xs_b):
                if xa.shape != xb.shape:
                    raise ValueError(f"batch {i}: block {blk!r} got inputs of shapes {list(xa.shape)} in A but {list(xb.shape)} in B")
                ra, rb = xa.reshape(-1, xa.shape[-1]), xb.reshape(-1, xb.shape[-1])
                top = torch.topk(block_a.gate(ra), block_a.top_k, dim=-1).indices  # A's routing
                for e in range(len(block_a.experts)):
                    names = [n for n, (b, k) in experts.items() if b == blk and k == e]
                    rows = (top == e).any(dim=-1).nonzero().flatten()
                    if not names or rows.numel() == 0:
                        continue
                    got = {"a": {}, "b": {}}
                    hs = []
                    def grab(side, n, x):
                        if side == "a" and n not in ran:  # forward order: the order A's expert calls them
                            ran.append(n)
                        got[side].setdefault(n, []).append(x.detach())
                    for side, mods in (("a", mods_a), ("b", mods_b)):
                        for n in names:
                            hs.append(mods[n].register_forward_hook(
                                lambda mod, inputs, output, side=side, n=n: grab(side, n, inputs[0])))
                    try:
                        block_a.experts[e](ra[rows])
                        block_b.experts[e](rb[rows])
                    finally:
                        for h in hs:
                            h.remove()
                    for n in names:
                        if n not in ran:
                            ran.append(n)
                        for xa_n, xb_n in zip(got["a"].get(n, []), got["b"].get(n, [])):
                            for ra_n, rb_n in zip(_rows(n, mods_a[n], xa_n), _rows(n, mods_a[n], xb_n)):
                                acc[n].add(ra_n, rb_n)

    def hook_for(side, name):
        def hook(mod, inputs, output):
            if not inputs or not isinstance(inputs[0], torch.Tensor):
                raise ValueError(f"module {name!r} of model {side.upper()} was called without a positional input tensor")
            x = inputs[0].detach()
            _check_finite(x, f"module {name!r} of model {side.upper()}: input in batch {state['batch']}")
            if name not in order[side]:
                order[side].append(name)
            calls[side].setdefault(name, []).append(x)
        return hook

    def point_for(side, name):
        def fn(x):
            if not isinstance(x, torch.Tensor):
                raise ValueError(f"activation point {name!r} of model {side.upper()} is not a tensor")
            x = x.detach()
            _check_finite(x, f"activation point {name!r} of model {side.upper()}: batch {state['batch']}")
            if name not in order[side]:
                order[side].append(name)
            calls[side].setdefault(name, []).append(x)
        return fn

    def rows_of(name, x):
        if name in pnames:
            return _point_rows(name, x, max_gram_elems)
        return _rows(name, mods_a[name], x)

    handles = [m.register_forward_hook(hook_for("a", n)) for n, m, _ in sel_a if n not in experts]
    handles += [_point_hook(m, side, point_for("a", p)) for p, m, side in pts_a]
    handles += [_point_hook(m, side, point_for("b", p)) for p, m, side in pts_b]
    handles += [m.register_forward_hook(hook_for("b", n)) for n, m, _ in sel_b if n not in experts]
    handles += [b.register_forward_pre_hook(moe_hook_for("a", n)) for n, b in moe_a.items()]
    handles += [b.register_forward_pre_hook(moe_hook_for("b", n)) for n, b in moe_b.items()]
    dev_a, dev_b = _device(model_a), _device(model_b)
    samples = 0
    try:
        with _Modes(model_a, model_b), torch.no_grad():
            for i, batch in enumerate(batches):
                state["batch"] = i
                x, n = _batch_input(batch, i)
                calls["a"].clear()
                calls["b"].clear()
                moe_in["a"].clear()
                moe_in["b"].clear()
                _call(model_a, _to(x, dev_a))
                _call(model_b, _to(x, dev_b))
                if set(calls["a"]) != set(calls["b"]):
                    only = sorted(set(calls["a"]) ^ set(calls["b"]))
                    raise ValueError(f"batch {i}: module(s) {only} ran in only one of the two models")
                for name, xs_a in calls["a"].items():
                    xs_b = calls["b"][name]
                    shapes_a, shapes_b = [list(t.shape) for t in xs_a], [list(t.shape) for t in xs_b]
                    if shapes_a != shapes_b:
                        raise ValueError(f"batch {i}: module {name!r} got inputs of shapes {shapes_a} in A but {shapes_b} in B")
                    for xa, xb in zip(xs_a, xs_b):
                        for ra, rb in zip(rows_of(name, xa), rows_of(name, xb)):
                            acc[name].add(ra, rb)
                run_experts(i)
                samples += n
    finally:
        for h in handles:
            h.remove()
        calls.clear()
        moe_in.clear()
    if state["batch"] < 0:
        raise ValueError("no calibration batches: `batches` is empty")
    # expert modules go after their block's router in the forward order
    fwd = []
    for n in order["a"]:
        fwd.append(n)
        for blk in moe_a:
            if n == (blk + "." if blk else "") + "gate":
                fwd += sorted((m for m in ran if experts[m][0] == blk), key=lambda m: (experts[m][1], ran.index(m)))
    fwd += [m for m in ran if m not in fwd]
    names = _finish_order(fwd, [n for n, _, _ in sel_a] + sorted(pnames), modules is not None or explicit_points)
    tensors = {}
    for n in names:
        tensors.update(acc[n].tensors(n))
    meta = {"format": STATS_FORMAT, "version": STATS_VERSION, "kind": "joint",
            "modules": ",".join(names), "samples": str(samples),
            "source": source if source is not None else _default_source(model_a, model_b)}
    write_safetensors(path, tensors, meta)
    return tensors


# ---------------------------------------------------------------------------
# Fisher information
# ---------------------------------------------------------------------------


def collect_fisher(model, batches, loss_fn, path, source=None):
    """Compute the diagonal empirical Fisher information of a model.

    ``batches`` yields ``(inputs, labels)``. For each batch: gradients are
    cleared, ``loss = loss_fn(model(inputs), labels)`` (a scalar; pass
    ``torch.nn.functional.cross_entropy`` for docs/stats.md's definition, the
    batch mean; :func:`cross_entropy64` is the same loss evaluated in
    float64, more accurate for float32 models), ``loss.backward()``, and ``p.grad.double() ** 2`` is added up
    for every parameter with ``requires_grad``. The sums are divided by the
    number of batches B and written as float32 tensors named by
    ``model.named_parameters()`` (a trainable parameter that never gets a
    gradient has Fisher 0), with metadata format, version, batches,
    batch_size (size of the first batch), samples, loss (mean of the batch
    losses) and source.

    The model runs in eval mode (no dropout) in its own dtype; its ``.grad``
    fields are overwritten (left None at the end). Integer labels are checked
    to lie in [0, C) when the output is [N, C] logits. Returns the written
    tensors as a dict.
    """
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{type(model).__name__} has no parameter with requires_grad")
    device = _device(model)
    acc = {n: torch.zeros(p.shape, dtype=torch.float64, device=p.device) for n, p in params}
    losses, samples, batch_size = [], 0, None
    with _Modes(model), torch.enable_grad():
        try:
            for i, batch in enumerate(batches):
                if not isinstance(batch, (tuple, list)) or len(batch) < 2:
                    raise TypeError(f"batch {i}: expected (inputs, labels), got {type(batch).__name__}")
                x, y = batch[0], batch[1]
                n = _rows_of(x)
                if n == 0:
                    raise ValueError(f"batch {i} is empty (0 samples)")
                _check_inputs(x, f"batch {i}: inputs")
                if isinstance(y, torch.Tensor):
                    _check_finite(y, f"batch {i}: labels")
                    if y.dim() > 0 and y.shape[0] != n:
                        raise ValueError(f"batch {i}: {n} inputs but {y.shape[0]} labels")
                x, y = _to(x, device), _to(y, device)
                for _, p in params:
                    p.grad = None
                out = _call(model, x)
                _check_labels(out, y, i)
                loss = loss_fn(out, y)
                if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                    raise ValueError(f"batch {i}: loss_fn must return a scalar tensor")
                if not bool(torch.isfinite(loss.detach()).all()):
                    raise ValueError(f"batch {i}: the loss is {loss.item()}")
                loss.backward()
                for name, p in params:
                    if p.grad is None:
                        continue
                    _check_finite(p.grad, f"batch {i}: the gradient of {name!r}")
                    acc[name] += p.grad.detach().double() ** 2
                losses.append(float(loss.detach().double().item()))
                samples += n
                if batch_size is None:
                    batch_size = n
        finally:
            for _, p in params:
                p.grad = None
    if not losses:
        raise ValueError("no batches: `batches` is empty")
    nb = len(losses)
    tensors = {}
    for name, _ in params:
        f = (acc[name] / nb).float().cpu().contiguous()
        _check_finite(f, f"the Fisher information of {name!r} (float32 overflow?)")
        tensors[name] = f
    meta = {"format": FISHER_FORMAT, "version": FISHER_VERSION, "batches": str(nb),
            "batch_size": str(batch_size), "samples": str(samples),
            "loss": repr(math.fsum(losses) / nb),
            "source": source if source is not None else _default_source(model)}
    write_safetensors(path, tensors, meta)
    return tensors


def cross_entropy64(logits, labels):
    """``F.cross_entropy(logits, labels)`` (batch mean) evaluated in float64.

    The value and the gradient with respect to the logits, softmax - onehot,
    are computed in float64 and the gradient is cast back to the logits'
    dtype, so the backward pass through the model still runs in the model's
    dtype. This avoids float32's cancellation in 1 - p(true class) for
    confidently classified samples, which otherwise costs ~1e-4 relative
    accuracy in the Fisher of a well-trained model. The CLI uses it.
    """
    return F.cross_entropy(logits.double(), labels)


def _check_labels(out, y, i):
    """Class labels must lie in [0, C) for [N, C] logits."""
    if not (isinstance(out, torch.Tensor) and isinstance(y, torch.Tensor)):
        return
    if out.dim() != 2 or y.dim() != 1 or y.is_floating_point() or y.dtype == torch.bool or y.numel() == 0:
        return
    c = out.shape[1]
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= c:
        bad = lo if lo < 0 else hi
        raise ValueError(f"batch {i}: label {bad} is out of range for a model with {c} classes (labels must be in [0, {c}))")


# ---------------------------------------------------------------------------
# checkpoints and the built-in MLP
# ---------------------------------------------------------------------------


def _natural_cmp(a, b):
    """Natural order of module names: digit runs compare as numbers (fc2 < fc10).

    The same comparison as wtool's Go engine (fisher/mlp.naturalCompare):
    bytewise, except where both strings continue with a digit run.
    """
    a, b = a.encode(), b.encode()
    digits = b"0123456789"

    def run(s, i):
        j = i
        while j < len(s) and s[j] in digits:
            j += 1
        return j
    i = j = 0
    while i < len(a) and j < len(b):
        ea, eb = run(a, i), run(b, j)
        if ea > i and eb > j:
            na, nb = int(a[i:ea]), int(b[j:eb])
            if na != nb:
                return -1 if na < nb else 1
            i, j = ea, eb
            continue
        if a[i] != b[j]:
            return -1 if a[i] < b[j] else 1
        i, j = i + 1, j + 1
    return (len(a) - i) - (len(b) - j)


def _act_fn(act):
    fns = {"relu": F.relu, "gelu": F.gelu, "silu": F.silu, "swish": F.silu, "tanh": torch.tanh}
    if act not in fns:
        raise ValueError(f"unknown activation {act!r} (want relu, gelu, silu or tanh)")
    return fns[act]


class MLP(nn.Module):
    """A chain of nn.Linear layers with one activation between layers.

    The layers are registered under their exact checkpoint module names,
    dotted names becoming nested containers, so that ``named_modules()`` and
    ``state_dict()`` use the checkpoint's names (``model.layers.0.up`` ->
    ``model.layers.0.up.weight``). ``act`` is relu, gelu (exact erf form),
    silu or tanh; no activation follows the last layer.
    """

    def __init__(self, layers, act="relu"):
        """``layers``: [(name, in_features, out_features, bias)] in forward order."""
        super().__init__()
        self.act = act
        self._act = _act_fn(act)
        self.layer_names = [name for name, *_ in layers]
        for name, fin, fout, bias in layers:
            self._place(name, nn.Linear(fin, fout, bias=bias))

    def _place(self, name, layer):
        parts = name.split(".")
        if any(p == "" for p in parts):
            raise ValueError(f"invalid module name {name!r}")
        parent = self
        try:
            for p in parts[:-1]:
                child = parent._modules.get(p)
                if child is None:
                    child = nn.Module()
                    parent.add_module(p, child)
                elif isinstance(child, nn.Linear):
                    raise ValueError(f"module name {name!r} nests inside the Linear layer {p!r}")
                parent = child
            if parts[-1] in parent._modules:
                raise ValueError(f"module name {name!r} is both a layer and a container of layers")
            parent.add_module(parts[-1], layer)
        except KeyError as e:  # add_module: the name clashes with an attribute
            raise ValueError(f"module name {name!r} cannot be used: {e}") from None

    def forward(self, x):
        last = len(self.layer_names) - 1
        for i, name in enumerate(self.layer_names):
            x = self.get_submodule(name)(x)
            if i < last:
                x = self._act(x)
        return x


def mlp_chain(shapes, order=None):
    """Order the Linear modules of a plain MLP checkpoint.

    ``shapes`` maps every tensor name to its shape. Every tensor must be a
    ``<m>.weight`` [out, in] or a ``<m>.bias`` [out]. With ``order`` that
    order is checked (it must list every module once and chain); otherwise
    the natural order of the names (fc2 < fc10) is used if the shapes chain,
    failing that the only shape-consistent order if there is exactly one, as
    wtool's Go engine does. Returns ``[(name, in, out, has_bias)]``.
    """
    mods = {}
    for name, shape in shapes.items():
        if name.endswith(".weight") and len(shape) == 2:
            mods[name[:-len(".weight")]] = (int(shape[0]), int(shape[1]))
        elif not (name.endswith(".bias") and len(shape) == 1):
            raise ValueError(f"tensor {name!r} {list(shape)} is not a Linear weight or bias: without --factory the model "
                             "must be a plain MLP (a chain of Linear layers); pass --factory for other architectures")
    for name, shape in shapes.items():
        if name.endswith(".bias") and len(shape) == 1:
            m = name[:-len(".bias")]
            if m not in mods:
                raise ValueError(f"tensor {name!r} is a bias without a {m}.weight")
            if shape[0] != mods[m][0]:
                raise ValueError(f"tensor {name!r} has {shape[0]} values but {m}.weight has {mods[m][0]} rows")
    if not mods:
        raise ValueError("no Linear weights (2-D tensors named <module>.weight)")

    def chain_error(seq):
        for i in range(1, len(seq)):
            if mods[seq[i]][1] != mods[seq[i - 1]][0]:
                return f"{seq[i]} takes {mods[seq[i]][1]} inputs but {seq[i - 1]} gives {mods[seq[i - 1]][0]} outputs"
        return None

    def result(seq):
        return [(m, mods[m][1], mods[m][0], f"{m}.bias" in shapes) for m in seq]

    if order:
        for m in order:
            if m not in mods:
                raise ValueError(f"layer {m!r}: no tensor {m}.weight in the checkpoint")
        if len(order) != len(mods) or len(set(order)) != len(order):
            raise ValueError(f"the layer order lists {len(order)} modules ({','.join(order)}) but the checkpoint has {len(mods)} distinct ones")
        err = chain_error(order)
        if err:
            raise ValueError(f"layer order {','.join(order)} does not chain: {err}")
        return result(order)
    names = sorted(mods, key=functools.cmp_to_key(_natural_cmp))
    if chain_error(names) is None:
        return result(names)
    found, seq, used = [], [], set()

    def dfs():
        if len(found) > 1:
            return
        if len(seq) == len(names):
            found.append(list(seq))
            return
        for m in names:
            if m in used or (seq and mods[m][1] != mods[seq[-1]][0]):
                continue
            used.add(m)
            seq.append(m)
            dfs()
            seq.pop()
            used.discard(m)
    dfs()
    if not found:
        raise ValueError(f"the Linear layers ({', '.join(names)}) do not form a chain in any order: {chain_error(names)}; "
                         "give the order with --layers")
    if len(found) > 1:
        raise ValueError(f"the Linear layers can be chained in several orders ({','.join(found[0])} or {','.join(found[1])}); give the order with --layers")
    return result(found[0])


def _checkpoint_files(path):
    path = os.fspath(path)
    if os.path.isdir(path):
        single = os.path.join(path, "model.safetensors")
        index = os.path.join(path, "model.safetensors.index.json")
        if os.path.isfile(single):
            return [single]
        if os.path.isfile(index):
            path = index
        else:
            raise ValueError(f"{path}: no model.safetensors or model.safetensors.index.json in the directory")
    if path.endswith(".index.json"):
        with open(path) as f:
            weight_map = json.load(f).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ValueError(f"{path}: no weight_map in the index")
        base = os.path.dirname(path)
        return [os.path.join(base, s) for s in dict.fromkeys(weight_map.values())]
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file")
    return [path]


def load_checkpoint(path, dtype=torch.float32):
    """Read every tensor of a checkpoint into torch tensors.

    ``path``: a ``.safetensors`` file, a directory holding
    ``model.safetensors`` (or a sharded ``model.safetensors.index.json``), or
    such an index. Floating tensors (F64/F32/F16/BF16) are converted to
    ``dtype``; integer tensors keep theirs.
    """
    out = {}
    for f in _checkpoint_files(path):
        arrays, _ = read_safetensors(f)
        for name, a in arrays.items():
            if name in out:
                raise ValueError(f"{f}: tensor {name!r} appears in two shards")
            t = torch.from_numpy(a)
            out[name] = t.to(dtype) if t.is_floating_point() else t
    return out


def build_mlp(state, order=None, act="relu"):
    """Build an :class:`MLP` from a state dict of Linear weights and biases and load it."""
    layers = mlp_chain({k: list(v.shape) for k, v in state.items()}, order)
    model = MLP(layers, act)
    model.load_state_dict(state, strict=True)
    return model.to(next(iter(state.values())).dtype)


def _load_factory(spec):
    """Resolve ``pkg.module:function`` (or ``path/to/file.py:function``)."""
    if ":" not in spec:
        raise ValueError(f"--factory {spec!r}: expected pkg.module:function")
    mod_name, fn_name = spec.rsplit(":", 1)
    if mod_name.endswith(".py"):
        s = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(mod_name))[0], mod_name)
        if s is None:
            raise ValueError(f"--factory: cannot load {mod_name}")
        mod = importlib.util.module_from_spec(s)
        s.loader.exec_module(mod)
    else:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        mod = importlib.import_module(mod_name)
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise ValueError(f"--factory: {mod_name} has no function {fn_name!r}")
    return fn


def _load_model(path, args, dtype):
    state = load_checkpoint(path, dtype)
    if args.factory:
        model = _load_factory(args.factory)()
        if not isinstance(model, nn.Module):
            raise TypeError(f"--factory {args.factory} returned a {type(model).__name__}, not an nn.Module")
        model = model.to(dtype)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise ValueError(f"{path}: the checkpoint does not fit the model of --factory {args.factory}: {e}") from None
    else:
        layers = _split(args.layers)
        try:
            model = build_mlp(state, layers, args.act)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
    return model.to(args.device)


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------


def _split(s):
    return [x for x in s.split(",") if x] if s else None


def _pick(path, key, want, flag):
    """The tensor `key` of a data file, or its only tensor of the wanted kind."""
    entries, _, _ = read_safetensors_header(path)
    if key is None:
        floats = ("F64", "F32", "F16", "BF16")
        ints = ("I64", "I32", "I16", "I8", "U64", "U32", "U16", "U8")
        if want == "calib":
            cands = [n for n, e in entries.items() if e["dtype"] in floats and len(e["shape"]) == 2]
            what = "2-D floating tensor [samples, features]"
        else:
            cands = [n for n, e in entries.items() if e["dtype"] in ints and len(e["shape"]) == 1]
            what = "1-D integer tensor [samples]"
        if len(cands) != 1:
            raise ValueError(f"{path}: expected exactly one {what}, found {len(cands)} ({', '.join(cands) or 'none'}); name one with {flag}")
        key = cands[0]
    if key not in entries:
        raise ValueError(f"{path}: no tensor {key!r} (it has {', '.join(entries)})")
    arrays, _ = read_safetensors(path, [key])
    a = arrays[key]
    if want == "calib" and (a.ndim != 2 or a.dtype.kind != "f"):
        raise ValueError(f"{path}: tensor {key!r} is {a.dtype} {list(a.shape)}, not a 2-D floating tensor")
    if want == "labels" and (a.ndim != 1 or a.dtype.kind not in "iu"):
        raise ValueError(f"{path}: tensor {key!r} is {a.dtype} {list(a.shape)}, not a 1-D integer tensor")
    if a.shape[0] == 0:
        raise ValueError(f"{path}: tensor {key!r} has no samples")
    return key, a


def _slices(n, bs):
    return [(i, min(i + bs, n)) for i in range(0, n, bs)]


def _cmd_stats(args):
    dtype = {"float32": torch.float32, "float64": torch.float64}[args.dtype]
    key, x = _pick(args.calib, args.calib_key, "calib", "--calib-key")
    x = torch.from_numpy(x).to(dtype)
    _check_finite(x, f"{args.calib}: tensor {key!r}")
    models = [_load_model(p, args, dtype) for p in args.models]
    modules = _split(args.layers) if args.factory else None
    first = models[0].get_submodule(models[0].layer_names[0]) if isinstance(models[0], MLP) else None
    if first is not None and x.shape[1] != first.in_features:
        raise ValueError(f"{args.calib}: tensor {key!r} has {x.shape[1]} features but the model's first layer "
                         f"{models[0].layer_names[0]!r} takes {first.in_features}")
    batches = (x[a:b] for a, b in _slices(x.shape[0], args.batch_size))
    src = (f"wtool_collect.py {__version__} (torch {torch.__version__}) stats of "
           f"{' and '.join(args.models)} on {args.calib}:{key}")
    points = None if args.points == "none" else args.points
    if len(models) == 1:
        t = collect_stats(models[0], batches, args.output, modules=modules, source=src, points=points)
    else:
        t = collect_joint_stats(models[0], models[1], batches, args.output, modules=modules, source=src, points=points)
    nmod = sum(1 for k in t if k.endswith(".count"))
    kind = "single" if len(models) == 1 else "joint"
    _say(args, f"wrote {args.output}: {kind} statistics of {nmod} modules on {x.shape[0]} samples")


def _cmd_fisher(args):
    dtype = {"float32": torch.float32, "float64": torch.float64}[args.dtype]
    if args.factory and args.layers:
        raise ValueError("--layers gives the layer order of a plain MLP; with --factory, fisher covers every trainable parameter")
    key, x = _pick(args.calib, args.calib_key, "calib", "--calib-key")
    lkey, y = _pick(args.labels, args.labels_key, "labels", "--labels-key")
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"{args.labels}: {y.shape[0]} labels ({lkey!r}) for {x.shape[0]} samples ({args.calib}:{key})")
    x = torch.from_numpy(x).to(dtype)
    _check_finite(x, f"{args.calib}: tensor {key!r}")
    y = torch.from_numpy(y.astype(np.int64))
    model = _load_model(args.models[0], args, dtype)
    batches = ((x[a:b], y[a:b]) for a, b in _slices(x.shape[0], args.batch_size))
    src = (f"wtool_collect.py {__version__} (torch {torch.__version__}) fisher of "
           f"{args.models[0]} on {args.calib}:{key} labels {args.labels}:{lkey}")
    try:
        t = collect_fisher(model, batches, cross_entropy64, args.output, source=src)
    except ValueError as e:
        if "label" not in str(e):
            raise
        raise ValueError(f"{e}; labels: tensor {lkey!r} of {args.labels}") from None
    _say(args, f"wrote {args.output}: Fisher information of {len(t)} tensors on {x.shape[0]} samples")


def _say(args, msg):
    if not args.quiet:
        print(msg, file=sys.stderr)


def _parser():
    p = argparse.ArgumentParser(
        prog="wtool_collect.py",
        description="Write wtool calibration statistics (wtool-stats) and diagonal Fisher information "
                    "(wtool-fisher) files for a PyTorch model; formats in docs/stats.md.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", metavar="{stats,fisher}")
    sub.required = True

    def common(sp, batch_size):
        sp.add_argument("--calib", required=True, metavar="X.safetensors",
                        help="calibration inputs: the file's one 2-D floating tensor [samples, features]")
        sp.add_argument("--calib-key", metavar="NAME", help="the calibration tensor's name, when the file has several")
        sp.add_argument("-o", "--output", required=True, metavar="OUT.safetensors", help="output file (replaced if it exists)")
        sp.add_argument("--batch-size", type=int, default=batch_size,
                        help=f"rows per batch; batches are consecutive slices in file order, the last possibly smaller (default {batch_size})")
        sp.add_argument("--act", default="relu", choices=["relu", "gelu", "silu", "tanh"],
                        help="plain MLP: activation between layers (gelu: exact erf form; default relu)")
        sp.add_argument("--layers", metavar="M1,M2,...",
                        help="plain MLP: the order of the Linear modules (default: natural order of the names); "
                             "with --factory (stats only): the modules to collect")
        sp.add_argument("--factory", metavar="PKG.MODULE:FUNCTION",
                        help="build the model by calling this function with no arguments, then load the "
                             "checkpoint into it with load_state_dict(strict=True)")
        sp.add_argument("--dtype", default="float32", choices=["float32", "float64"],
                        help="compute dtype of the model (default float32; checkpoints of any float dtype are converted)")
        sp.add_argument("--device", default="cpu", help="torch device to run on (default cpu)")
        sp.add_argument("-q", "--quiet", action="store_true", help="no summary line on stderr")

    s = sub.add_parser("stats", help="input statistics of every Linear layer (two models: joint statistics)",
                       description="One model: kind single statistics. Two models (same architecture): kind joint, "
                                   "with the cross Gram. MODEL is a .safetensors file or a directory holding "
                                   "model.safetensors (or a sharded index).")
    s.add_argument("models", nargs="+", metavar="MODEL", help="checkpoint(s): one or two")
    s.add_argument("--points", default="default", metavar="default|none|M:in,M:out,...",
                   help="activation points to record besides the module inputs: default (every LayerNorm/RMSNorm "
                        "input, ResNet block outputs and hidden channels; none for a plain MLP), none, or a "
                        "comma-separated list of MODULE:in / MODULE:out (docs/stats.md)")
    common(s, 256)
    s.set_defaults(run=_cmd_stats)

    f = sub.add_parser("fisher", help="diagonal Fisher information (mean squared gradient of the batch cross-entropy)",
                       description="F = mean over batches of (d mean-cross-entropy / d theta)^2, as float32 tensors "
                                   "named like the model's parameters. The cross-entropy and its gradient with "
                                   "respect to the logits are evaluated in float64, the model's backward pass in --dtype.")
    f.add_argument("models", nargs=1, metavar="MODEL", help="checkpoint")
    f.add_argument("--labels", required=True, metavar="Y.safetensors",
                   help="labels: the file's one 1-D integer tensor [samples] (may be the --calib file)")
    f.add_argument("--labels-key", metavar="NAME", help="the labels tensor's name, when the file has several")
    common(f, 32)
    f.set_defaults(run=_cmd_fisher)
    return p


def _check_output(args):
    """Refuse an output that would replace one of the inputs."""
    inputs = [args.calib] + ([args.labels] if getattr(args, "labels", None) else [])
    for m in args.models:
        try:
            inputs += _checkpoint_files(m)
        except ValueError:
            pass  # reported when the model is loaded
    out = os.path.realpath(args.output)
    for p in inputs:
        if os.path.realpath(p) == out:
            raise ValueError(f"the output {args.output} is one of the inputs")
    if os.path.isdir(args.output):
        raise ValueError(f"the output {args.output} is a directory; give a .safetensors file")


def main(argv=None):
    """Command-line entry point; returns the exit code (0 ok, 1 error, 2 usage)."""
    p = _parser()
    args = p.parse_args(argv)
    if args.command == "stats" and len(args.models) > 2:
        p.error("stats takes one model (single statistics) or two (joint statistics)")
    if args.batch_size <= 0:
        p.error("--batch-size must be positive")
    try:
        _check_output(args)
        args.run(args)
    except (ValueError, TypeError, OSError, ImportError) as e:
        print(f"wtool_collect.py: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
