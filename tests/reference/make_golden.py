#!/usr/bin/env python3
"""Golden fixtures for tiny Llama / Qwen2 / Qwen3 models, computed with plain PyTorch.

Run from the repository root with Debian's python (python3-torch, numpy):

    /usr/bin/python3 tests/reference/make_golden.py

It (re)writes tests/fixtures/golden/<case>/ for the six cases llama_f32, llama_bf16,
qwen2_f32, qwen2_bf16, qwen3_f32, qwen3_bf16. The output is byte-for-byte deterministic.
tests/reference/README.md describes every file; CI only reads them.

The three architectures are re-implemented here, independently of the TypeScript engine,
following Hugging Face transformers' modeling_llama.py / modeling_qwen2.py / modeling_qwen3.py
(eager attention) and modeling_rope_utils.py (_compute_llama3_parameters), and PEFT's
tuners/lora/layer.py for LoRA. transformers and peft themselves are not needed.
"""
import json
import math
import struct
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

OUT = Path(__file__).resolve().parents[1] / "fixtures" / "golden"

VOCAB = 96
SEQ_LEN = 10
ROW_LENGTHS = [7, 10]
PROMPT_TOKENS = 3
PAD_ID = 0
IGNORE_INDEX = -100

LORA = {
    "r": 4,
    "lora_alpha": 8,
    "lora_dropout": 0.0,
    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}
TRAIN = {
    "lr": 1e-2,
    "betas": [0.9, 0.999],
    "eps": 1e-8,
    "weight_decay": 0.01,
    "max_grad_norm": 1.0,
    "steps": 3,
    "micro_batches": [[0], [1]],
}

COMMON = {
    "hidden_act": "silu",
    "hidden_size": 32,
    "initializer_range": 0.02,
    "intermediate_size": 64,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "num_key_value_heads": 2,
    "vocab_size": VOCAB,
    "use_cache": True,
    "attention_dropout": 0.0,
    "bos_token_id": 1,
    "eos_token_id": 2,
}

CONFIGS = {
    "llama": {
        **COMMON,
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "head_dim": 8,
        "max_position_embeddings": 128,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "rope_scaling": {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 16,
        },
        "tie_word_embeddings": True,
        "attention_bias": False,
        "mlp_bias": False,
        "pretraining_tp": 1,
    },
    # Like real Qwen2.5 config.json files: no head_dim (it is hidden_size / heads) and no
    # attention_bias key (Qwen2's q/k/v projections always have a bias, o_proj never).
    "qwen2": {
        **COMMON,
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "max_position_embeddings": 128,
        "max_window_layers": 2,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "rope_scaling": None,
        "sliding_window": None,
        "use_sliding_window": False,
        "tie_word_embeddings": False,
    },
    # head_dim 16 on purpose: != hidden_size / heads = 8, so q_proj is [64, 32], o_proj [32, 64].
    "qwen3": {
        **COMMON,
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "head_dim": 16,
        "max_position_embeddings": 128,
        "max_window_layers": 2,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "rope_scaling": None,
        "sliding_window": None,
        "use_sliding_window": False,
        "tie_word_embeddings": True,
        "attention_bias": False,
    },
}
ARCH_SEED = {"llama": 101, "qwen2": 202, "qwen3": 303}


# ---------------------------------------------------------------------------------------------
# safetensors (own writer/reader: Debian has no python3-safetensors)

def save_safetensors(path, tensors):
    header = {"__metadata__": {"format": "pt"}}
    blobs, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        if t.dtype == torch.float32:
            dtype, data = "F32", t.numpy().astype("<f4").tobytes()
        elif t.dtype == torch.bfloat16:
            dtype, data = "BF16", t.view(torch.int16).numpy().astype("<i2").tobytes()
        else:
            raise ValueError(f"unsupported dtype {t.dtype}")
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for b in blobs:
            f.write(b)


def load_safetensors(path):
    raw = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    header.pop("__metadata__", None)
    out = {}
    for name, info in header.items():
        a, b = info["data_offsets"]
        buf = raw[8 + n + a:8 + n + b]
        if info["dtype"] == "F32":
            t = torch.from_numpy(np.frombuffer(buf, dtype="<f4").copy())
        else:
            t = torch.from_numpy(np.frombuffer(buf, dtype="<i2").copy()).view(torch.bfloat16)
        out[name] = t.reshape(info["shape"])
    return out


# ---------------------------------------------------------------------------------------------
# Model (functional: weights are a dict keyed by Hugging Face tensor names)

def head_dim_of(cfg):
    return cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]


def rope_inv_freq(cfg):
    """LlamaRotaryEmbedding / ROPE_INIT_FUNCTIONS: default or llama3, float32 as in transformers."""
    dim = head_dim_of(cfg)
    base = cfg["rope_theta"]
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).to(dtype=torch.float) / dim))
    rs = cfg.get("rope_scaling")
    if rs is None:
        return inv_freq
    assert rs["rope_type"] == "llama3"
    factor = rs["factor"]
    low_freq_factor = rs["low_freq_factor"]
    high_freq_factor = rs["high_freq_factor"]
    old_context_len = rs["original_max_position_embeddings"]
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    inv_freq_llama = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth_factor = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed_inv_freq = (1 - smooth_factor) * inv_freq_llama / factor + smooth_factor * inv_freq_llama
    is_medium_freq = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium_freq, smoothed_inv_freq, inv_freq_llama)


def rope_cos_sin(cfg, seq_len, dtype):
    # position_ids = arange(seq_len) for every row (right padding: real tokens sit at 0..len-1)
    inv_freq = rope_inv_freq(cfg)
    pos = torch.arange(seq_len, dtype=torch.float32)
    freqs = pos[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)  # attention_scaling is 1.0 for default and llama3


def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def rms_norm(x, w, eps):
    # Compute precision is float32 (float64 in the finite-difference check), so no casts needed.
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def repeat_kv(x, n_rep):
    """[B, kv, T, D] -> [B, kv*n_rep, T, D]; query head h reads kv head h // n_rep."""
    b, kv, t, d = x.shape
    if n_rep == 1:
        return x
    return x[:, :, None, :, :].expand(b, kv, n_rep, t, d).reshape(b, kv * n_rep, t, d)


def linear(x, W, name, lora, scaling):
    y = x @ W[name + ".weight"].T
    bias = W.get(name + ".bias")
    if bias is not None:
        y = y + bias
    if lora is not None and name in lora:
        A, B = lora[name]
        # PEFT: result + lora_B(lora_A(dropout(x))) * scaling (dropout 0 = identity)
        y = y + (x @ A.T) @ B.T * scaling
    return y


def attention_mask_additive(attention_mask, dtype):
    """Causal + key padding, as the additive 4-D mask of transformers' eager attention."""
    b, t = attention_mask.shape
    causal = torch.tril(torch.ones(t, t, dtype=torch.bool))
    allowed = causal[None, :, :] & attention_mask.bool()[:, None, :]
    zero = torch.zeros((), dtype=dtype)
    return torch.where(allowed, zero, torch.tensor(torch.finfo(dtype).min, dtype=dtype))[:, None, :, :]


def forward(cfg, W, input_ids, attention_mask, lora=None, scaling=None):
    """Returns logits [B, T, V] in the weights' dtype (float32 here)."""
    dtype = W["model.embed_tokens.weight"].dtype
    nh, nkv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], head_dim_of(cfg)
    eps = cfg["rms_norm_eps"]
    bsz, T = input_ids.shape
    cos, sin = rope_cos_sin(cfg, T, dtype)
    mask = attention_mask_additive(attention_mask, dtype)
    h = W["model.embed_tokens.weight"][input_ids]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}"
        x = rms_norm(h, W[p + ".input_layernorm.weight"], eps)
        q = linear(x, W, p + ".self_attn.q_proj", lora, scaling).view(bsz, T, nh, hd)
        k = linear(x, W, p + ".self_attn.k_proj", lora, scaling).view(bsz, T, nkv, hd)
        v = linear(x, W, p + ".self_attn.v_proj", lora, scaling).view(bsz, T, nkv, hd)
        if cfg["model_type"] == "qwen3":
            q = rms_norm(q, W[p + ".self_attn.q_norm.weight"], eps)
            k = rms_norm(k, W[p + ".self_attn.k_norm.weight"], eps)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k, v = repeat_kv(k, nh // nkv), repeat_kv(v, nh // nkv)
        scores = (q @ k.transpose(2, 3)) * hd ** -0.5 + mask
        # softmax in float32 (never below: the float64 finite-difference check must stay float64)
        probs = torch.softmax(scores, dim=-1, dtype=torch.promote_types(q.dtype, torch.float32)).to(q.dtype)
        o = (probs @ v).transpose(1, 2).reshape(bsz, T, nh * hd)
        h = h + linear(o, W, p + ".self_attn.o_proj", lora, scaling)
        x = rms_norm(h, W[p + ".post_attention_layernorm.weight"], eps)
        gate = linear(x, W, p + ".mlp.gate_proj", lora, scaling)
        up = linear(x, W, p + ".mlp.up_proj", lora, scaling)
        h = h + linear(F.silu(gate) * up, W, p + ".mlp.down_proj", lora, scaling)
    h = rms_norm(h, W["model.norm.weight"], eps)
    head = W["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else W["lm_head.weight"]
    return h @ head.T


def nll_sum(logits, labels):
    """Sum of token NLLs after the causal shift: logits[:, :-1] predict labels[:, 1:]."""
    lg = logits[:, :-1].reshape(-1, logits.shape[-1])
    lb = labels[:, 1:].reshape(-1)
    keep = lb != IGNORE_INDEX
    lp = lg[keep] - torch.logsumexp(lg[keep], dim=-1, keepdim=True)
    return -lp.gather(1, lb[keep][:, None]).sum(), int(keep.sum())


# ---------------------------------------------------------------------------------------------
# Weights, data, adapters

def linear_shapes(cfg):
    """(module path, out, in) for every LoRA-targetable linear."""
    hs, inter, hd = cfg["hidden_size"], cfg["intermediate_size"], head_dim_of(cfg)
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    out = []
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}"
        out += [
            (p + ".self_attn.q_proj", nh * hd, hs),
            (p + ".self_attn.k_proj", nkv * hd, hs),
            (p + ".self_attn.v_proj", nkv * hd, hs),
            (p + ".self_attn.o_proj", hs, nh * hd),
            (p + ".mlp.gate_proj", inter, hs),
            (p + ".mlp.up_proj", inter, hs),
            (p + ".mlp.down_proj", hs, inter),
        ]
    return out


def make_weights(cfg, seed):
    g = torch.Generator().manual_seed(seed)
    hs, hd = cfg["hidden_size"], head_dim_of(cfg)

    def normal(*shape, std=0.15):
        return torch.randn(*shape, generator=g) * std

    def norm_w(n):
        return 1.0 + 0.1 * torch.randn(n, generator=g)

    W = {"model.embed_tokens.weight": normal(cfg["vocab_size"], hs)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}"
        W[p + ".input_layernorm.weight"] = norm_w(hs)
        for name, o, n in linear_shapes(cfg)[7 * i: 7 * i + 7]:
            W[name + ".weight"] = normal(o, n)
            if cfg["model_type"] == "qwen2" and name.split(".")[-1] in ("q_proj", "k_proj", "v_proj"):
                W[name + ".bias"] = 0.1 * torch.randn(o, generator=g)
        if cfg["model_type"] == "qwen3":
            W[p + ".self_attn.q_norm.weight"] = norm_w(hd)
            W[p + ".self_attn.k_norm.weight"] = norm_w(hd)
        W[p + ".post_attention_layernorm.weight"] = norm_w(hs)
    W["model.norm.weight"] = norm_w(hs)
    if not cfg["tie_word_embeddings"]:
        W["lm_head.weight"] = normal(cfg["vocab_size"], hs)
    return W


def make_batch():
    g = torch.Generator().manual_seed(7)
    ids = torch.full((len(ROW_LENGTHS), SEQ_LEN), PAD_ID, dtype=torch.int64)
    mask = torch.zeros_like(ids)
    for r, n in enumerate(ROW_LENGTHS):
        ids[r, :n] = torch.randint(1, VOCAB, (n,), generator=g)
        mask[r, :n] = 1
    labels = ids.clone()
    labels[:, :PROMPT_TOKENS] = IGNORE_INDEX
    labels[mask == 0] = IGNORE_INDEX
    return ids, mask, labels


def peft_key(module, ab):
    return f"base_model.model.{module}.lora_{ab}.weight"


def make_adapter(cfg, seed, b_std):
    """A ~ kaiming_uniform_(a=sqrt(5)) as PEFT = U(-1/sqrt(in), 1/sqrt(in)); B = b_std * normal (0 = PEFT init)."""
    g = torch.Generator().manual_seed(seed)
    r = LORA["r"]
    lora = {}
    for name, o, n in linear_shapes(cfg):
        bound = 1.0 / math.sqrt(n)
        A = (torch.rand(r, n, generator=g) * 2 - 1) * bound
        B = torch.randn(o, r, generator=g) * b_std if b_std else torch.zeros(o, r)
        lora[name] = (A, B)
    return lora


def adapter_tensors(lora, which=None):
    out = {}
    for name, (A, B) in lora.items():
        a, b = (A, B) if which is None else (A.grad, B.grad)
        out[peft_key(name, "A")] = a.detach().clone()
        out[peft_key(name, "B")] = b.detach().clone()
    return out


def as_leaves(lora):
    return {k: (A.detach().clone().requires_grad_(True), B.detach().clone().requires_grad_(True)) for k, (A, B) in lora.items()}


def lora_params(lora):
    return [t for name in sorted(lora) for t in lora[name]]


# ---------------------------------------------------------------------------------------------
# Training (TRL/transformers Trainer semantics with gradient accumulation)

def micro_batches(ids, mask, labels):
    out = []
    for rows in TRAIN["micro_batches"]:
        n = int(mask[rows].sum(1).max())  # trim to the longest real row of the micro-batch
        out.append((ids[rows, :n], mask[rows, :n], labels[rows, :n]))
    return out


def train(cfg, W, lora0, mbs, scaling):
    lora = as_leaves(lora0)
    params = lora_params(lora)
    opt = torch.optim.AdamW(params, lr=TRAIN["lr"], betas=tuple(TRAIN["betas"]), eps=TRAIN["eps"],
                            weight_decay=TRAIN["weight_decay"])
    n_items = sum(int((lb[:, 1:] != IGNORE_INDEX).sum()) for _, _, lb in mbs)
    losses, norms, grads = [], [], []
    for _ in range(TRAIN["steps"]):
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for ids, mask, labels in mbs:
            s, _ = nll_sum(forward(cfg, W, ids, mask, lora, scaling), labels)
            (s / n_items).backward()
            total += float(s)
        grads.append([p.grad.detach().clone() for p in params])
        losses.append(total / n_items)
        norms.append(float(torch.nn.utils.clip_grad_norm_(params, max_norm=TRAIN["max_grad_norm"])))
        opt.step()
    return lora, losses, norms, grads


def well_conditioned_adapter(cfg, W, mbs, scaling, seed):
    """A PEFT-initialised adapter (B = 0) whose first-step gradient has no element at float32
    noise level. AdamW's first update is lr * g / (|g| + eps), about lr * sign(g), whatever |g| is:
    an element whose exact gradient is ~1e-7 gets a full step whose size depends on rounding,
    so two correct float32 implementations summing in different orders can land 1e-5 apart.
    Seeds are tried in order until every nonzero step-1 gradient element is at least 1e-6."""
    for s in range(seed, seed + 100):
        lora = make_adapter(cfg, s, b_std=0.0)
        leaves = {k: (A.double().requires_grad_(True), B.double().requires_grad_(True)) for k, (A, B) in lora.items()}
        W64 = {k: v.double() for k, v in W.items()}
        n_items = sum(int((lb[:, 1:] != IGNORE_INDEX).sum()) for _, _, lb in mbs)
        for ids, mask, labels in mbs:
            total, _ = nll_sum(forward(cfg, W64, ids, mask, leaves, scaling), labels)
            (total / n_items).backward()
        smallest = min(float(B.grad.abs().min()) for _, B in leaves.values())
        if smallest >= 1e-6:
            return lora
    raise RuntimeError("no well-conditioned adapter seed found")


def manual_adamw(lora0, grads_per_step):
    """The design's AdamW + clip formula, replayed on recorded raw gradients (cross-check)."""
    params = [p.detach().clone() for p in lora_params(lora0)]
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    lr, (b1, b2), eps, wd = TRAIN["lr"], TRAIN["betas"], TRAIN["eps"], TRAIN["weight_decay"]
    for t, grads in enumerate(grads_per_step, start=1):
        norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads))
        coef = min(1.0, TRAIN["max_grad_norm"] / (float(norm) + 1e-6))
        for i, g in enumerate(grads):
            g = g * coef
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            params[i] = params[i] * (1 - lr * wd)
            params[i] = params[i] - lr * (m[i] / (1 - b1 ** t)) / (torch.sqrt(v[i] / (1 - b2 ** t)) + eps)
    return params


# ---------------------------------------------------------------------------------------------
# Cross-checks

def check_close(what, a, b, tol):
    err = float((a.double() - b.double()).abs().max())
    assert err <= tol, f"{what}: max abs diff {err} > {tol}"


def cross_checks(cfg, W, ids, mask, labels, lora_g, scaling):
    logits = forward(cfg, W, ids, mask)
    s, n = nll_sum(logits, labels)
    # 1) loss = torch's cross_entropy on the shifted logits
    ce = F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX)
    check_close("nll vs F.cross_entropy", s / n, ce, 1e-6)
    # 2) GQA = MHA with the kv heads materialised (k/v rows duplicated per query head)
    rep = cfg["num_attention_heads"] // cfg["num_key_value_heads"]
    hd = head_dim_of(cfg)
    Wm = dict(W)
    for i in range(cfg["num_hidden_layers"]):
        for proj in ("k_proj", "v_proj"):
            for suffix in (".weight", ".bias"):
                key = f"model.layers.{i}.self_attn.{proj}{suffix}"
                if key in W:
                    t = W[key].reshape(cfg["num_key_value_heads"], hd, *W[key].shape[1:])
                    Wm[key] = t.repeat_interleave(rep, dim=0).reshape(-1, *W[key].shape[1:])
    mha = forward({**cfg, "num_key_value_heads": cfg["num_attention_heads"]}, Wm, ids, mask)
    check_close("GQA vs MHA", logits, mha, 1e-5)
    # 3) padding is invisible: row 0 trimmed to its real tokens gives the same logits
    n0 = ROW_LENGTHS[0]
    alone = forward(cfg, W, ids[:1, :n0], mask[:1, :n0])
    check_close("padded vs trimmed row", logits[:1, :n0], alone, 1e-5)
    # 4) the causal mask: changing a later token leaves earlier logits untouched
    ids2 = ids.clone()
    ids2[1, 6] = (ids2[1, 6] % (VOCAB - 1)) + 1
    check_close("causality", forward(cfg, W, ids2, mask)[1, :6], logits[1, :6], 0.0)
    # 5) LoRA gradients: float32 autograd vs float64 autograd vs central finite difference (float64)
    W64 = {k: v.double() for k, v in W.items()}
    l64 = as_leaves({k: (A.double(), B.double()) for k, (A, B) in lora_g.items()})
    s64, _ = nll_sum(forward(cfg, W64, ids, mask, l64, scaling), labels)
    (s64 / n).backward()
    l32 = as_leaves(lora_g)
    s32, _ = nll_sum(forward(cfg, W, ids, mask, l32, scaling), labels)
    (s32 / n).backward()
    for p32, p64 in zip(lora_params(l32), lora_params(l64)):
        check_close("f32 vs f64 grad", p32.grad, p64.grad, 1e-5 + 1e-4 * float(p64.grad.abs().max()))
    g = torch.Generator().manual_seed(99)
    dirs = [torch.randn(p.shape, generator=g, dtype=torch.float64) for p in lora_params(l64)]
    analytic = sum(float((p.grad * d).sum()) for p, d in zip(lora_params(l64), dirs))
    h = 1e-6

    def loss_at(sign):
        shifted = {}
        it = iter(dirs)
        for k in sorted(l64):
            A, B = l64[k]
            shifted[k] = (A.detach() + sign * h * next(it), B.detach() + sign * h * next(it))
        return float(nll_sum(forward(cfg, W64, ids, mask, shifted, scaling), labels)[0] / n)

    numeric = (loss_at(1) - loss_at(-1)) / (2 * h)
    assert abs(numeric - analytic) <= 1e-6 * max(1.0, abs(analytic)), f"finite difference {numeric} vs {analytic}"
    # 6) the accumulated micro-batch gradient equals the padded full-batch gradient
    mbs = micro_batches(ids, mask, labels)
    l_mb = as_leaves(lora_g)
    for mi, mm, ml in mbs:
        (nll_sum(forward(cfg, W, mi, mm, l_mb, scaling), ml)[0] / n).backward()
    for a, b in zip(lora_params(l_mb), lora_params(l32)):
        check_close("micro-batch vs full-batch grad", a.grad, b.grad, 1e-6)


# ---------------------------------------------------------------------------------------------

def write_json(path, obj):
    path.write_text(json.dumps(obj, indent=2) + "\n")


def write_golden_json(path, obj):
    """One top-level key per line, each value compact (keeps the 2x10 arrays readable)."""
    lines = [f"  {json.dumps(k)}: {json.dumps(v, separators=(', ', ': '))}" for k, v in obj.items()]
    path.write_text("{\n" + ",\n".join(lines) + "\n}\n")


def make_case(arch, dtype_name, ids, mask, labels):
    cfg = CONFIGS[arch]
    case = f"{arch}_{dtype_name}"
    out = OUT / case
    out.mkdir(parents=True, exist_ok=True)
    config = {**cfg, "torch_dtype": "float32" if dtype_name == "f32" else "bfloat16"}
    write_json(out / "config.json", dict(sorted(config.items())))

    W32 = make_weights(cfg, ARCH_SEED[arch])
    if dtype_name == "bf16":
        stored = {k: v.to(torch.bfloat16) for k, v in W32.items()}
        W = {k: v.float() for k, v in stored.items()}
    else:
        stored = W = W32
    save_safetensors(out / "model.safetensors", stored)
    back = load_safetensors(out / "model.safetensors")
    assert all(torch.equal(back[k], stored[k]) for k in stored) and set(back) == set(stored)

    scaling = LORA["lora_alpha"] / LORA["r"]
    with torch.no_grad():
        logits = forward(cfg, W, ids, mask)
        s, n_items = nll_sum(logits, labels)
    loss = float(s / n_items)
    save_safetensors(out / "logits.safetensors", {"logits": logits})

    lora_g = make_adapter(cfg, ARCH_SEED[arch] + 1, b_std=0.1)
    leaves = as_leaves(lora_g)
    sg, _ = nll_sum(forward(cfg, W, ids, mask, leaves, scaling), labels)
    (sg / n_items).backward()
    grad_loss = float(sg / n_items)
    for A, B in leaves.values():
        assert torch.isfinite(A.grad).all() and torch.isfinite(B.grad).all()
        assert (A.grad != 0).any() and (B.grad != 0).any()
    save_safetensors(out / "lora_grad_init.safetensors", adapter_tensors(lora_g))
    save_safetensors(out / "lora_grad_expected.safetensors", adapter_tensors(leaves, which="grad"))

    cross_checks(cfg, W, ids, mask, labels, lora_g, scaling)

    lora_i = well_conditioned_adapter(cfg, W, micro_batches(ids, mask, labels), scaling, ARCH_SEED[arch] + 2)
    save_safetensors(out / "lora_init.safetensors", adapter_tensors(lora_i))
    trained, losses, norms, grads = train(cfg, W, lora_i, micro_batches(ids, mask, labels), scaling)
    save_safetensors(out / "lora_after_3_steps.safetensors", adapter_tensors(trained))
    for p, q in zip(lora_params(trained), manual_adamw(lora_i, grads)):
        check_close("torch AdamW vs manual AdamW", p, q, 1e-6)
    assert abs(losses[0] - loss) < 1e-5, "step-1 loss (B = 0) must equal the base loss"
    # The same training in float64 lands within 1e-5: the fixture is not at the mercy of rounding
    # (AdamW's first steps are sign-like, so a tiny gradient could otherwise flip an update).
    t64, l64, n64, _ = train(cfg, {k: v.double() for k, v in W.items()},
                             {k: (A.double(), B.double()) for k, (A, B) in lora_i.items()},
                             micro_batches(ids, mask, labels), scaling)
    for p, q in zip(lora_params(trained), lora_params(t64)):
        check_close("f32 vs f64 training", p, q, 1e-5)
    assert max(abs(a - b) for a, b in zip(losses + norms, l64 + n64)) < 1e-5

    write_golden_json(out / "golden.json", {
        "case": case,
        "input_ids": ids.tolist(),
        "attention_mask": mask.tolist(),
        "labels": labels.tolist(),
        "pad_token_id": PAD_ID,
        "ignore_index": IGNORE_INDEX,
        "loss": loss,
        "num_items": n_items,
        "lora": {**LORA, "scaling": scaling},
        "lora_grad_loss": grad_loss,
        "train": {**TRAIN, "num_items_per_step": n_items, "losses": losses, "grad_norms": norms},
    })
    return {"case": case, "loss": loss, "lora_grad_loss": grad_loss, "losses": losses, "grad_norms": norms,
            "logits": logits, "mask": mask}


def main():
    ids, mask, labels = make_batch()
    results = {}
    for arch in ("llama", "qwen2", "qwen3"):
        for dt in ("f32", "bf16"):
            r = make_case(arch, dt, ids, mask, labels)
            results[r["case"]] = r
            assert abs(r["loss"] - math.log(VOCAB)) < 1.5, f"{r['case']}: loss {r['loss']} far from ln(V)"
            print(f"{r['case']:11s} loss {r['loss']:.6f}  lora_grad_loss {r['lora_grad_loss']:.6f}  "
                  f"steps {[round(x, 6) for x in r['losses']]}  grad_norms {[round(x, 6) for x in r['grad_norms']]}")
        f32, bf = results[f"{arch}_f32"], results[f"{arch}_bf16"]
        real = mask.bool()
        d = float((f32["logits"][real] - bf["logits"][real]).abs().max())
        assert 0 < d < 0.5, f"{arch}: bf16 vs f32 logits differ by {d}"
        print(f"{arch}: max |logits f32 - bf16| on real tokens = {d:.4g}")


if __name__ == "__main__":
    main()
