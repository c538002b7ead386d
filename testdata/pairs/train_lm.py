#!/usr/bin/python3
"""Train testdata/pairs' tiny Llama pair: byte-level causal LMs on the Vim user manual.

Text: /usr/share/vim/vim90/doc/usr_*.txt (Debian package vim-runtime; the
Vim user manual, English prose with commands), concatenated in name order;
the last 10% of the bytes is the held-out split.

Tokenizer: one token per byte (256 ids, no merges, no special tokens), as a
tokenizer.json of the tokenizers library (a BPE model with an empty merge
list over GPT-2's byte-to-unicode alphabet and the ByteLevel pre-tokenizer
and decoder), which AutoTokenizer loads.

Models (families.py's CausalLM, Hugging Face LlamaForCausalLM names and
config.json): hidden 96, 4 layers, 4 query heads and 2 key/value heads of 24,
SwiGLU MLP 256, RoPE theta 10000, untied head; llama-a and llama-b from
seeds 1 and 2, trained with AdamW (warm-up, cosine) on 128-byte windows,
written in bfloat16 (as Llama checkpoints are).

Files: llama-{a,b}/{model.safetensors, config.json, tokenizer.json,
tokenizer_config.json, generation_config.json}; text_calib.safetensors (64
training windows, "ids" [64, 128] I32: calibration) and text_test.safetensors
(the held-out split in windows, "ids" [n, 128] I32). Prints and records
(results_lm.json) the held-out perplexity per byte of both models and of
their naive average.

    /usr/bin/python3 testdata/pairs/train_lm.py [a] [b] [report]
(default all three; "a" and "b" may run at once, then "report")
"""
import glob
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "families"))
import families as fam  # noqa: E402
from families import wc  # noqa: E402

TEXT = "/usr/share/vim/vim90/doc/usr_*.txt"
SEQ = 128
STEPS = int(os.environ.get("WTOOL_LM_STEPS", "400"))  # fewer on a loaded machine (the checked-in pair: see README)
BATCH = 24
CONFIG = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 256, "hidden_size": 96,
          "intermediate_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
          "head_dim": 24, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 256,
          "hidden_act": "silu", "tie_word_embeddings": False, "attention_bias": False, "mlp_bias": False,
          "initializer_range": 0.02, "rope_scaling": None, "torch_dtype": "bfloat16"}


def bytes_to_unicode():
    """GPT-2's reversible map from bytes to printable unicode characters."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def tokenizer_json():
    """A byte-level tokenizer.json: token id = byte value."""
    b2u = bytes_to_unicode()
    vocab = {b2u[b]: b for b in range(256)}
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
            "post_processor": None,
            "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                      "vocab": vocab, "merges": []}}


def text():
    files = sorted(glob.glob(TEXT))
    if not files:
        sys.exit(f"no {TEXT}: install Debian's vim-runtime")
    data = b"".join(open(f, "rb").read() for f in files)
    cut = len(data) * 9 // 10
    return torch.tensor(list(data[:cut]), dtype=torch.int64), torch.tensor(list(data[cut:]), dtype=torch.int64), files


def windows(ids, n=None):
    w = ids[: len(ids) // SEQ * SEQ].view(-1, SEQ)
    return w if n is None else w[:n]


def init(model):
    """Hugging Face's Llama initialisation: N(0, 0.02) weights, unit norms."""
    for name, p in model.named_parameters():
        if p.dim() > 1:
            torch.nn.init.normal_(p, std=0.02)


def train(train_ids, seed):
    torch.manual_seed(seed)
    model = fam.from_config("llama", CONFIG)
    init(model)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=STEPS, pct_start=0.05)
    g = torch.Generator().manual_seed(seed)
    for step in range(STEPS):
        starts = torch.randint(0, len(train_ids) - SEQ - 1, (BATCH,), generator=g)
        x = torch.stack([train_ids[s:s + SEQ] for s in starts])
        logits = model(x[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, 256), x[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 10 == 0 or step == STEPS - 1:
            print(f"  seed {seed} step {step}: loss {loss.item():.3f}", flush=True)
    return model.eval()


def perplexity(sd, test):
    """exp(mean next-byte cross-entropy) over the held-out windows (float32)."""
    with torch.no_grad():
        tot, n = 0.0, 0
        for i in range(0, len(test), 32):
            x = test[i:i + 32]
            logits = fam.forward("llama", sd, CONFIG, x, dtype=torch.float32)
            tot += F.cross_entropy(logits[:, :-1].reshape(-1, 256), x[:, 1:].reshape(-1), reduction="sum").item()
            n += x[:, 1:].numel()
    return math.exp(tot / n)


def main(which):
    torch.set_num_threads(int(os.environ.get("WTOOL_TRAIN_THREADS", "2")))
    train_ids, test_ids, files = text()
    test = windows(test_ids)
    g = torch.Generator().manual_seed(0)
    calib = windows(train_ids)[torch.randperm(len(windows(train_ids)), generator=g)[:64]]
    src = {"source": "Vim user manual (Debian vim-runtime) " + ", ".join(os.path.basename(f) for f in files[:1]) + " ... " + os.path.basename(files[-1]),
           "tokenizer": "bytes"}
    wc.write_safetensors(os.path.join(HERE, "text_calib.safetensors"), {"ids": calib.to(torch.int32).contiguous()}, dict(src, split="train (64 random windows)"))
    wc.write_safetensors(os.path.join(HERE, "text_test.safetensors"), {"ids": test.to(torch.int32).contiguous()}, dict(src, split="held-out (last 10%)"))
    for name, seed in (("a", 1), ("b", 2)):
        if name not in which:
            continue
        t0 = time.time()
        model = train(train_ids, seed)
        sd = {k: v.to(torch.bfloat16) for k, v in fam.state_dict(model).items()}
        out = os.path.join(HERE, f"llama-{name}")
        os.makedirs(out, exist_ok=True)
        wc.write_safetensors(os.path.join(out, "model.safetensors"), sd, {"format": "pt"})
        cfg = dict(CONFIG, trained_on="Vim user manual, first 90% of the bytes", seed=seed)
        with open(os.path.join(out, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2, sort_keys=True)
            f.write("\n")
        with open(os.path.join(out, "tokenizer.json"), "w") as f:
            json.dump(tokenizer_json(), f, indent=2, ensure_ascii=False)
            f.write("\n")
        with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
            json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 256, "clean_up_tokenization_spaces": False}, f, indent=2)
            f.write("\n")
        with open(os.path.join(out, "generation_config.json"), "w") as f:
            json.dump({"do_sample": False, "max_length": 256}, f, indent=2)
            f.write("\n")
        print(f"llama-{name}: trained ({time.time() - t0:.0f} s)", flush=True)
    if "report" not in which:
        return
    results, sds = {}, {}
    for name in ("a", "b"):
        sds[name] = wc.load_checkpoint(os.path.join(HERE, f"llama-{name}"))
        ppl = perplexity(sds[name], test)
        results[f"llama-{name}"] = {"test_perplexity": round(ppl, 4)}
        print(f"llama-{name}: held-out perplexity {ppl:.3f} per byte", flush=True)
    avg = {k: (sds["a"][k] + sds["b"][k]) / 2 for k in sds["a"]}
    ppl = perplexity(avg, test)
    results["llama-ab naive average"] = {"test_perplexity": round(ppl, 4)}
    print(f"llama: naive average: held-out perplexity {ppl:.3f}", flush=True)
    with open(os.path.join(HERE, "results_lm.json"), "w") as f:
        json.dump(results, f, indent=2, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1:] or ["a", "b", "report"])  # a, b: train that model; report: perplexities
