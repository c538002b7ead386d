#!/usr/bin/python3
"""Tiny models of ten families, with the exact Hugging Face / torchvision names.

transformers is not installed here, so each family is a minimal PyTorch
re-implementation with the parameter names of the real model class and its
forward math: RMSNorm, Gemma's (1 + w) norm and sqrt(hidden) embedding scale,
rotary position embeddings (rotate_half convention), grouped-query attention,
SwiGLU and GELU-gated MLPs, Phi-3's fused qkv_proj and gate_up_proj, Mixtral's
top-k routed experts, GPT-2's Conv1D (weight [in, out], y = x W + b) with its
fused c_attn, BERT's post-LN encoder with its pre-training heads, ViT's pre-LN
encoder on patches, torchvision's ResNet with BatchNorm (BasicBlock and
Bottleneck).

API (for wtool's conformance tests and other tests that need real layouts):

    cfg = config("llama")                       # the family's config dict (config.json)
    model, cfg = build("llama", seed)           # random weights, float32, eval mode, and its config
    model = from_config("llama", cfg)           # the architecture only (widths from cfg)
    y = forward("llama", state_dict, cfg, x)    # load state_dict (strict) and run
    y = run("llama", model, x)                  # run a built model
    x = inputs("llama", cfg, seed, batch=2)     # example inputs
    write_checkpoint(dir, "llama", seed)        # model.safetensors (or shards) + config.json

Forward passes are deterministic (eval mode, no dropout, float64 unless the
state dict says otherwise) and work on any state dict that matches the config,
including widths changed in the config (intermediate_size, hidden sizes).
``run`` returns one float tensor (heads' outputs concatenated when a model has
several).
"""

import json
import math
import os
import sys

import torch
import torch.nn.functional as F
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools"))
import wtool_collect as wc  # noqa: E402  (the safetensors reader and writer)

FAMILIES = ["llama", "qwen2", "mistral", "gemma", "phi3", "gpt2", "mixtral", "bert", "vit", "resnet18", "resnet50"]

# ---------------------------------------------------------------------------
# configs
# ---------------------------------------------------------------------------


def config(family):
    """The family's tiny config (what config.json holds; ResNet has none on disk)."""
    dec = {"vocab_size": 96, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
           "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
           "max_position_embeddings": 64, "hidden_act": "silu", "tie_word_embeddings": False,
           "torch_dtype": "float32"}
    if family == "llama":
        return dict(dec, model_type="llama", architectures=["LlamaForCausalLM"], rope_theta=500000.0,
                    torch_dtype="bfloat16")
    if family == "qwen2":
        return dict(dec, model_type="qwen2", architectures=["Qwen2ForCausalLM"], tie_word_embeddings=True,
                    rope_theta=1000000.0)
    if family == "mistral":
        return dict(dec, model_type="mistral", architectures=["MistralForCausalLM"], num_key_value_heads=1,
                    sliding_window=4096)
    if family == "gemma":
        return dict(dec, model_type="gemma", architectures=["GemmaForCausalLM"], head_dim=24, num_key_value_heads=1,
                    hidden_act="gelu_pytorch_tanh", hidden_activation="gelu_pytorch_tanh", rms_norm_eps=1e-6,
                    tie_word_embeddings=True)
    if family == "phi3":
        return dict(dec, model_type="phi3", architectures=["Phi3ForCausalLM"], intermediate_size=80)
    if family == "mixtral":
        return dict(dec, model_type="mixtral", architectures=["MixtralForCausalLM"], intermediate_size=48,
                    num_local_experts=4, num_experts_per_tok=2)
    if family == "gpt2":
        return {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": 96, "n_embd": 128,
                "n_layer": 2, "n_head": 4, "n_positions": 32, "n_ctx": 32, "n_inner": None,
                "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5, "torch_dtype": "float32"}
    if family == "bert":
        return {"model_type": "bert", "architectures": ["BertForPreTraining"], "vocab_size": 96, "hidden_size": 64,
                "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128, "hidden_act": "gelu",
                "max_position_embeddings": 32, "type_vocab_size": 2, "layer_norm_eps": 1e-12, "torch_dtype": "float32"}
    if family == "vit":
        return {"model_type": "vit", "architectures": ["ViTForImageClassification"], "hidden_size": 128,
                "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 256, "hidden_act": "gelu",
                "image_size": 16, "patch_size": 4, "num_channels": 3, "layer_norm_eps": 1e-12, "qkv_bias": True,
                "id2label": {str(i): f"LABEL_{i}" for i in range(10)}, "torch_dtype": "float32"}
    if family == "resnet18":
        return {"block": "basic", "layers": [2, 2, 2, 2], "widths": [8, 16, 32, 64], "stem": 8, "num_classes": 10}
    if family == "resnet50":
        return {"block": "bottleneck", "layers": [1, 1, 1, 1], "widths": [4, 8, 8, 16], "stem": 8, "num_classes": 10}
    raise ValueError(f"unknown family {family!r} (want one of {', '.join(FAMILIES)})")


# ---------------------------------------------------------------------------
# decoders: Llama, Qwen2, Mistral, Gemma, Phi-3, Mixtral
# ---------------------------------------------------------------------------


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * w, or * (1 + w) for Gemma."""

    def __init__(self, n, eps, gemma=False):
        super().__init__()
        self.eps, self.gemma = eps, gemma
        self.weight = nn.Parameter(torch.zeros(n) if gemma else torch.ones(n))

    def forward(self, x):
        y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return y * (1 + self.weight) if self.gemma else y * self.weight


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def rope(x, theta):
    """Rotary embedding of x [B, heads, T, d] (Hugging Face's rotate_half form)."""
    d, t = x.shape[-1], x.shape[-2]
    inv = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    freqs = torch.outer(torch.arange(t, dtype=torch.float64), inv)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)
    return x * cos + rotate_half(x) * sin


def attention(q, k, v, causal, mask=None):
    """softmax(q k^T / sqrt(d) [+ mask]) v for q [B, H, T, d], k/v [B, KV, T, d] (grouped: kv head j serves q heads j*H/KV ...)."""
    h, kv = q.shape[1], k.shape[1]
    if h != kv:
        k = k.repeat_interleave(h // kv, dim=1)
        v = v.repeat_interleave(h // kv, dim=1)
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if causal:
        t = q.shape[2]
        s = s.masked_fill(torch.triu(torch.ones(t, t, dtype=torch.bool), 1), float("-inf"))
    if mask is not None:
        s = s + mask
    return torch.softmax(s, dim=-1) @ v


def heads(x, n):
    b, t, _ = x.shape
    return x.view(b, t, n, -1).transpose(1, 2)


def merge_heads(x):
    b, h, t, d = x.shape
    return x.transpose(1, 2).reshape(b, t, h * d)


class DecoderAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        h, kv, hd, d = c["num_attention_heads"], c["num_key_value_heads"], head_dim(c), c["hidden_size"]
        bias = c["model_type"] == "qwen2"
        if c["model_type"] == "phi3":
            self.qkv_proj = nn.Linear(d, (h + 2 * kv) * hd, bias=False)
        else:
            self.q_proj = nn.Linear(d, h * hd, bias=bias)
            self.k_proj = nn.Linear(d, kv * hd, bias=bias)
            self.v_proj = nn.Linear(d, kv * hd, bias=bias)
        self.o_proj = nn.Linear(h * hd, d, bias=False)

    def forward(self, x):
        c = self.c
        h, kv, hd = c["num_attention_heads"], c["num_key_value_heads"], head_dim(c)
        if hasattr(self, "qkv_proj"):
            qkv = self.qkv_proj(x)
            q, k, v = qkv[..., :h * hd], qkv[..., h * hd:(h + kv) * hd], qkv[..., (h + kv) * hd:]
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q, k, v = heads(q, h), heads(k, kv), heads(v, kv)
        q, k = rope(q, c["rope_theta"]), rope(k, c["rope_theta"])
        return self.o_proj(merge_heads(attention(q, k, v, causal=True)))


def act(name):
    return {"silu": F.silu, "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
            "gelu": F.gelu, "gelu_new": lambda x: F.gelu(x, approximate="tanh")}[name]


class DecoderMLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, i = c["hidden_size"], c["intermediate_size"]
        self.act = act(c["hidden_act"])
        if c["model_type"] == "phi3":
            self.gate_up_proj = nn.Linear(d, 2 * i, bias=False)
        else:
            self.gate_proj = nn.Linear(d, i, bias=False)
            self.up_proj = nn.Linear(d, i, bias=False)
        self.down_proj = nn.Linear(i, d, bias=False)

    def forward(self, x):
        if hasattr(self, "gate_up_proj"):
            gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        else:
            gate, up = self.gate_proj(x), self.up_proj(x)
        return self.down_proj(self.act(gate) * up)


class Expert(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, i = c["hidden_size"], c["intermediate_size"]
        self.w1 = nn.Linear(d, i, bias=False)  # gate
        self.w2 = nn.Linear(i, d, bias=False)  # down
        self.w3 = nn.Linear(d, i, bias=False)  # up

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class SparseMoE(nn.Module):
    """Mixtral's block_sparse_moe: softmax router, top-k experts, weights renormalised over the k."""

    def __init__(self, c):
        super().__init__()
        self.top_k = c["num_experts_per_tok"]
        self.num_experts = c["num_local_experts"]
        self.gate = nn.Linear(c["hidden_size"], self.num_experts, bias=False)
        self.experts = nn.ModuleList([Expert(c) for _ in range(self.num_experts)])

    def route(self, x):
        """(top-k expert indices, their weights) for rows x [N, d]."""
        p = torch.softmax(self.gate(x), dim=-1)
        w, idx = torch.topk(p, self.top_k, dim=-1)
        return idx, w / w.sum(-1, keepdim=True)

    def forward(self, x):
        b, t, d = x.shape
        rows = x.reshape(-1, d)
        idx, w = self.route(rows)
        out = torch.zeros_like(rows)
        for e, expert in enumerate(self.experts):
            tok, slot = torch.where(idx == e)
            if tok.numel():
                out.index_add_(0, tok, expert(rows[tok]) * w[tok, slot, None])
        return out.view(b, t, d)


class DecoderLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        gemma = c["model_type"] == "gemma"
        self.input_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"], gemma)
        self.self_attn = DecoderAttention(c)
        self.post_attention_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"], gemma)
        if c["model_type"] == "mixtral":
            self.block_sparse_moe = SparseMoE(c)
        else:
            self.mlp = DecoderMLP(c)

    def forward(self, x):
        x = x + self.self_attn(self.input_layernorm(x))
        ff = self.block_sparse_moe if hasattr(self, "block_sparse_moe") else self.mlp
        return x + ff(self.post_attention_layernorm(x))


class DecoderModel(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = nn.ModuleList([DecoderLayer(c) for _ in range(c["num_hidden_layers"])])
        self.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"], c["model_type"] == "gemma")

    def forward(self, ids):
        x = self.embed_tokens(ids)
        if self.c["model_type"] == "gemma":
            x = x * torch.tensor(math.sqrt(self.c["hidden_size"]), dtype=x.dtype)
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)


class CausalLM(nn.Module):
    """*ForCausalLM: model + lm_head (absent when tie_word_embeddings: the embedding is the head)."""

    def __init__(self, c):
        super().__init__()
        self.model = DecoderModel(c)
        if not c.get("tie_word_embeddings", False):
            self.lm_head = nn.Linear(c["hidden_size"], c["vocab_size"], bias=False)

    def forward(self, ids):
        h = self.model(ids)
        if hasattr(self, "lm_head"):
            return self.lm_head(h)
        return h @ self.model.embed_tokens.weight.t()


def head_dim(c):
    return c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]


# ---------------------------------------------------------------------------
# GPT-2 (names of the released checkpoint: no "transformer." prefix)
# ---------------------------------------------------------------------------


class Conv1D(nn.Module):
    """transformers.pytorch_utils.Conv1D: weight [nx, nf] = [in, out], y = x W + b."""

    def __init__(self, nf, nx):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.02)
        self.bias = nn.Parameter(torch.randn(nf) * 0.02)

    def forward(self, x):
        return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight).view(*x.shape[:-1], self.nf)


class GPT2Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, p = c["n_embd"], c["n_positions"]
        self.n_head = c["n_head"]
        self.c_attn = Conv1D(3 * d, d)
        self.c_proj = Conv1D(d, d)
        # the causal-mask buffers older checkpoints store
        self.register_buffer("bias", torch.tril(torch.ones(p, p)).view(1, 1, p, p))
        self.register_buffer("masked_bias", torch.tensor(-1e4))

    def forward(self, x):
        q, k, v = self.c_attn(x).split(x.shape[-1], dim=-1)
        q, k, v = heads(q, self.n_head), heads(k, self.n_head), heads(v, self.n_head)
        return self.c_proj(merge_heads(attention(q, k, v, causal=True)))


class GPT2MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["n_embd"]
        inner = c.get("n_inner") or 4 * d
        self.c_fc = Conv1D(inner, d)
        self.c_proj = Conv1D(d, inner)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class GPT2Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, eps = c["n_embd"], c["layer_norm_epsilon"]
        self.ln_1 = nn.LayerNorm(d, eps=eps)
        self.attn = GPT2Attention(c)
        self.ln_2 = nn.LayerNorm(d, eps=eps)
        self.mlp = GPT2MLP(c)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT2(nn.Module):
    """GPT2Model's parameters (wte, wpe, h.N, ln_f) with the tied LM head of GPT2LMHeadModel."""

    def __init__(self, c):
        super().__init__()
        self.wte = nn.Embedding(c["vocab_size"], c["n_embd"])
        self.wpe = nn.Embedding(c["n_positions"], c["n_embd"])
        self.h = nn.ModuleList([GPT2Block(c) for _ in range(c["n_layer"])])
        self.ln_f = nn.LayerNorm(c["n_embd"], eps=c["layer_norm_epsilon"])

    def forward(self, ids):
        x = self.wte(ids) + self.wpe(torch.arange(ids.shape[1]))
        for block in self.h:
            x = block(x)
        return self.ln_f(x) @ self.wte.weight.t()


# ---------------------------------------------------------------------------
# BERT (BertForPreTraining)
# ---------------------------------------------------------------------------


class BertEmbeddings(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["hidden_size"]
        self.word_embeddings = nn.Embedding(c["vocab_size"], d)
        self.position_embeddings = nn.Embedding(c["max_position_embeddings"], d)
        self.token_type_embeddings = nn.Embedding(c["type_vocab_size"], d)
        self.LayerNorm = nn.LayerNorm(d, eps=c["layer_norm_eps"])
        self.register_buffer("position_ids", torch.arange(c["max_position_embeddings"]).view(1, -1))

    def forward(self, ids, types):
        pos = self.position_ids[:, :ids.shape[1]]
        return self.LayerNorm(self.word_embeddings(ids) + self.position_embeddings(pos) + self.token_type_embeddings(types))


class BertSelfAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["hidden_size"]
        self.n = c["num_attention_heads"]
        self.query, self.key, self.value = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, x):
        q, k, v = heads(self.query(x), self.n), heads(self.key(x), self.n), heads(self.value(x), self.n)
        return merge_heads(attention(q, k, v, causal=False))


class BertDenseNorm(nn.Module):
    """dense then LayerNorm(dense(x) + residual): BertSelfOutput and BertOutput."""

    def __init__(self, fin, d, eps):
        super().__init__()
        self.dense = nn.Linear(fin, d)
        self.LayerNorm = nn.LayerNorm(d, eps=eps)

    def forward(self, x, residual):
        return self.LayerNorm(self.dense(x) + residual)


class BertAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.self = BertSelfAttention(c)
        self.output = BertDenseNorm(c["hidden_size"], c["hidden_size"], c["layer_norm_eps"])

    def forward(self, x):
        return self.output(self.self(x), x)


class BertIntermediate(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dense = nn.Linear(c["hidden_size"], c["intermediate_size"])

    def forward(self, x):
        return F.gelu(self.dense(x))


class BertLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.attention = BertAttention(c)
        self.intermediate = BertIntermediate(c)
        self.output = BertDenseNorm(c["intermediate_size"], c["hidden_size"], c["layer_norm_eps"])

    def forward(self, x):
        x = self.attention(x)
        return self.output(self.intermediate(x), x)


class BertEncoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.layer = nn.ModuleList([BertLayer(c) for _ in range(c["num_hidden_layers"])])


class BertPooler(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dense = nn.Linear(c["hidden_size"], c["hidden_size"])

    def forward(self, x):
        return torch.tanh(self.dense(x[:, 0]))


class BertModel(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embeddings = BertEmbeddings(c)
        self.encoder = BertEncoder(c)
        self.pooler = BertPooler(c)

    def forward(self, ids, types):
        x = self.embeddings(ids, types)
        for layer in self.encoder.layer:
            x = layer(x)
        return x, self.pooler(x)


class BertTransform(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dense = nn.Linear(c["hidden_size"], c["hidden_size"])
        self.LayerNorm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])

    def forward(self, x):
        return self.LayerNorm(F.gelu(self.dense(x)))


class BertLMPrediction(nn.Module):
    """cls.predictions: transform, then the decoder tied to the word embeddings, plus its bias."""

    def __init__(self, c):
        super().__init__()
        self.transform = BertTransform(c)
        self.bias = nn.Parameter(torch.zeros(c["vocab_size"]))


class BertHeads(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.predictions = BertLMPrediction(c)
        self.seq_relationship = nn.Linear(c["hidden_size"], 2)


class BertForPreTraining(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.bert = BertModel(c)
        self.cls = BertHeads(c)

    def forward(self, inputs):
        ids, types = inputs
        seq, pooled = self.bert(ids, types)
        mlm = self.cls.predictions.transform(seq) @ self.bert.embeddings.word_embeddings.weight.t() + self.cls.predictions.bias
        nsp = self.cls.seq_relationship(pooled)
        return torch.cat([mlm.flatten(), nsp.flatten()])


# ---------------------------------------------------------------------------
# ViT (ViTForImageClassification)
# ---------------------------------------------------------------------------


class ViTPatchEmbeddings(nn.Module):
    def __init__(self, c):
        super().__init__()
        p = c["patch_size"]
        self.projection = nn.Conv2d(c["num_channels"], c["hidden_size"], kernel_size=p, stride=p)

    def forward(self, x):
        return self.projection(x).flatten(2).transpose(1, 2)


class ViTEmbeddings(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["hidden_size"]
        n = (c["image_size"] // c["patch_size"]) ** 2
        self.cls_token = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.position_embeddings = nn.Parameter(torch.randn(1, n + 1, d) * 0.02)
        self.patch_embeddings = ViTPatchEmbeddings(c)

    def forward(self, x):
        p = self.patch_embeddings(x)
        return torch.cat([self.cls_token.expand(p.shape[0], -1, -1), p], dim=1) + self.position_embeddings


class ViTSelfAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["hidden_size"]
        self.n = c["num_attention_heads"]
        self.query = nn.Linear(d, d, bias=c["qkv_bias"])
        self.key = nn.Linear(d, d, bias=c["qkv_bias"])
        self.value = nn.Linear(d, d, bias=c["qkv_bias"])

    def forward(self, x):
        q, k, v = heads(self.query(x), self.n), heads(self.key(x), self.n), heads(self.value(x), self.n)
        return merge_heads(attention(q, k, v, causal=False))


class Dense(nn.Module):
    def __init__(self, fin, fout):
        super().__init__()
        self.dense = nn.Linear(fin, fout)

    def forward(self, x):
        return self.dense(x)


class ViTAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.attention = ViTSelfAttention(c)
        self.output = Dense(c["hidden_size"], c["hidden_size"])

    def forward(self, x):
        return self.output(self.attention(x))


class ViTLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, eps = c["hidden_size"], c["layer_norm_eps"]
        self.attention = ViTAttention(c)
        self.intermediate = Dense(d, c["intermediate_size"])
        self.output = Dense(c["intermediate_size"], d)
        self.layernorm_before = nn.LayerNorm(d, eps=eps)
        self.layernorm_after = nn.LayerNorm(d, eps=eps)

    def forward(self, x):
        x = x + self.attention(self.layernorm_before(x))
        return x + self.output(F.gelu(self.intermediate(self.layernorm_after(x))))


class ViTEncoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.layer = nn.ModuleList([ViTLayer(c) for _ in range(c["num_hidden_layers"])])


class ViTModel(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embeddings = ViTEmbeddings(c)
        self.encoder = ViTEncoder(c)
        self.layernorm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])

    def forward(self, x):
        x = self.embeddings(x)
        for layer in self.encoder.layer:
            x = layer(x)
        return self.layernorm(x)


class ViTForImageClassification(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.vit = ViTModel(c)
        self.classifier = nn.Linear(c["hidden_size"], len(c["id2label"]))

    def forward(self, x):
        return self.classifier(self.vit(x)[:, 0])

    def features(self, x):
        """The classifier's inputs (the class token after the final layernorm)."""
        return self.vit(x)[:, 0]


# ---------------------------------------------------------------------------
# torchvision ResNet
# ---------------------------------------------------------------------------


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride, downsample):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (self.downsample(x) if self.downsample is not None else x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride, downsample):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (self.downsample(x) if self.downsample is not None else x))


class ResNet(nn.Module):
    """torchvision.models.ResNet's names and forward, with widths from the config."""

    def __init__(self, c):
        super().__init__()
        block = BasicBlock if c["block"] == "basic" else Bottleneck
        # the stem: torchvision's 7x7/2 convolution and 3x3/2 max pool unless the
        # config says otherwise (small images: stem_kernel 3, stem_stride 1, stem_pool false)
        k = c.get("stem_kernel", 7)
        self.stem_pool = c.get("stem_pool", True)
        self.conv1 = nn.Conv2d(c.get("in_channels", 3), c["stem"], k, c.get("stem_stride", 2), k // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(c["stem"])
        cin = c["stem"]
        for s, (n, planes) in enumerate(zip(c["layers"], c["widths"])):
            stride = 1 if s == 0 else 2
            blocks = []
            for i in range(n):
                ds = None
                if i == 0 and (stride != 1 or cin != planes * block.expansion):
                    ds = nn.Sequential(nn.Conv2d(cin, planes * block.expansion, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes * block.expansion))
                blocks.append(block(cin, planes, stride if i == 0 else 1, ds))
                cin = planes * block.expansion
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(cin, c["num_classes"])

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        if self.stem_pool:
            x = F.max_pool2d(x, 3, 2, 1)
        for s in range(1, 5):
            x = getattr(self, f"layer{s}")(x)
        return self.fc(x.mean((2, 3)))


# ---------------------------------------------------------------------------
# API
# ---------------------------------------------------------------------------


def from_config(family, c):
    """The family's model for config c (no meaningful weights), in eval mode."""
    if family in ("llama", "qwen2", "mistral", "gemma", "phi3", "mixtral"):
        m = CausalLM(c)
    elif family == "gpt2":
        m = GPT2(c)
    elif family == "bert":
        m = BertForPreTraining(c)
    elif family == "vit":
        m = ViTForImageClassification(c)
    elif family in ("resnet18", "resnet50"):
        m = ResNet(c)
    else:
        raise ValueError(f"unknown family {family!r}")
    return m.eval()


def build(family, seed):
    """(model, config): the family's tiny model with random weights (seeded),
    float32, eval mode, and its config dict.

    Norm weights and biases, BatchNorm running statistics and biases are
    randomised too, so that no parameter is a trivial constant.
    """
    c = config(family)
    torch.manual_seed(seed)
    m = from_config(family, c)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("bias"):
                p.copy_(torch.randn_like(p) * 0.05)
            elif p.dim() == 1:  # norm weights
                p.add_(torch.randn_like(p) * 0.1)
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.copy_(torch.randn_like(mod.running_mean) * 0.1)
                mod.running_var.copy_(torch.rand_like(mod.running_var) + 0.5)
                mod.num_batches_tracked.fill_(seed + 3)
    return m, c


def run(family, model, x):
    """Run a built model on inputs (from ``inputs``); one float tensor."""
    with torch.no_grad():
        return model(x)


def forward(family, state_dict, c, x, dtype=torch.float64):
    """Load a state dict (strictly) into the family's model for config c and run it.

    Floating tensors are computed in ``dtype`` (float64 by default);
    integer buffers keep theirs.
    """
    m = from_config(family, c).to(dtype)
    sd = {k: (torch.as_tensor(v).to(dtype) if torch.as_tensor(v).is_floating_point() else torch.as_tensor(v))
          for k, v in state_dict.items()}
    m.load_state_dict(sd, strict=True)
    return run(family, m, cast_inputs(x, dtype))


def cast_inputs(x, dtype):
    if isinstance(x, tuple):
        return tuple(cast_inputs(v, dtype) for v in x)
    return x.to(dtype) if x.is_floating_point() else x


def inputs(family, c, seed, batch=2):
    """Example inputs: token ids [batch, 8] (BERT: ids and token types), images otherwise."""
    g = torch.Generator().manual_seed(1000 + seed)
    if family in ("llama", "qwen2", "mistral", "gemma", "phi3", "mixtral", "gpt2"):
        return torch.randint(0, c["vocab_size"], (batch, 8), generator=g)
    if family == "bert":
        return (torch.randint(0, c["vocab_size"], (batch, 8), generator=g),
                torch.randint(0, c["type_vocab_size"], (batch, 8), generator=g))
    if family == "vit":
        return torch.randn(batch, c["num_channels"], c["image_size"], c["image_size"], generator=g)
    return torch.randn(batch, 3, 32, 32, generator=g)


def state_dict(model):
    """The model's tensors as a checkpoint stores them (buffers included, tied weights once)."""
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def write_checkpoint(out, family, seed, dtype=None, shards=None):
    """Write the family's model (seeded) to directory out.

    model.safetensors, or with shards=N the Hugging Face sharded layout
    (model-0000i-of-0000N.safetensors and model.safetensors.index.json),
    and config.json (not for ResNet: torchvision checkpoints have none).
    Floating tensors are written in dtype (default: config's torch_dtype,
    else float32). Returns the state dict written (float32).
    """
    m, c = build(family, seed)
    sd = state_dict(m)
    dt = dtype or {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(c.get("torch_dtype"), torch.float32)
    tensors = {k: (v.to(dt) if v.is_floating_point() else v) for k, v in sd.items()}
    os.makedirs(out, exist_ok=True)
    meta = {"format": "pt"}
    names = sorted(tensors)
    if shards and shards > 1:
        per = math.ceil(len(names) / shards)
        groups = [names[i:i + per] for i in range(0, len(names), per)]
        weight_map, total = {}, 0
        for i, g in enumerate(groups):
            fn = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
            wc.write_safetensors(os.path.join(out, fn), {k: tensors[k] for k in g}, meta)
            for k in g:
                weight_map[k] = fn
                total += tensors[k].numel() * tensors[k].element_size()
        with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2, sort_keys=True)
    else:
        wc.write_safetensors(os.path.join(out, "model.safetensors"), tensors, meta)
    if family not in ("resnet18", "resnet50"):
        with open(os.path.join(out, "config.json"), "w") as f:
            json.dump(c, f, indent=2, sort_keys=True)
    return {k: (v.float() if v.is_floating_point() else v) for k, v in tensors.items()}


def load_checkpoint(path):
    """Every tensor of a checkpoint directory or file, as torch tensors (floats as float32)."""
    return wc.load_checkpoint(path)


if __name__ == "__main__":
    # families.py OUTDIR [family ...]: write each family's checkpoint to OUTDIR/<family>
    out = sys.argv[1]
    for fam in sys.argv[2:] or FAMILIES:
        write_checkpoint(os.path.join(out, fam), fam, seed=1, shards=2 if fam == "llama" else None)
        print(fam)
