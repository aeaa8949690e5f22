#!/usr/bin/env python3
"""Reference for `finetune train` with method "dpo" on the real stories260K model.

Run from the repository root with Debian's python (python3-torch, numpy):

    /usr/bin/python3 -B tests/reference/dpo_cli_reference.py

It reads tests/fixtures/dpo_cli/pairs_tokens.jsonl (what `finetune data --method dpo --dump`
says the CLI trains on, committed) and ../shared/models/stories260K, and (re)writes
tests/fixtures/dpo_cli/init_adapter/ (a fixed, nonzero PEFT adapter), expected_adapter.safetensors
and expected.json. The output is byte-for-byte deterministic. tests/reference/README.md describes
the files; tests/unit/cli_dpo.test.ts runs the CLI and compares.

The model is make_golden.py's plain-PyTorch Llama (stories260K's config fits it: rope_scaling
null, GQA 8/4, tied embeddings). DPO is TRL 1.x's `DPOTrainer._compute_loss` with loss_type
"sigmoid": logp = sum of the completion tokens' log-probs (labels != -100, shifted), the
reference is the same model with the adapter off, loss = mean over the step's pairs of
-log sigma(beta * ((pi_c - ref_c) - (pi_r - ref_r))). The optimizer is torch.optim.SGD (no
momentum, no weight decay), constant learning rate, no clipping.
"""
import json
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_golden as mg  # noqa: E402  (Llama + LoRA, safetensors reader/writer; one thread, deterministic)

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT.parent / "shared" / "models" / "stories260K"
OUT = ROOT / "tests" / "fixtures" / "dpo_cli"
IGNORE = -100
PAD = 0  # any id: padded positions are masked out of attention and out of every sum

LORA = {
    "r": 4,
    "lora_alpha": 8,
    "lora_dropout": 0.0,
    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}
SCALING = LORA["lora_alpha"] / LORA["r"]
ADAPTER_SEED = 2024
B_STD = 0.02  # lora_B = B_STD * N(0, 1): the policy starts near, but not at, the reference

# The recipe's training fields (tests/unit/cli_dpo.test.ts sends exactly these).
TRAIN = {
    "method": "dpo",
    "beta": 0.1,
    "loss_type": "sigmoid",
    "optim": "sgd",
    "learning_rate": 0.05,
    "weight_decay": 0.0,
    "max_grad_norm": 0.0,
    "lr_scheduler_type": "constant",
    "warmup_steps": 0,
    "shuffle": False,
    "per_device_train_batch_size": 2,
    "gradient_accumulation_steps": 2,
    "max_steps": 2,
}
# The Trainer's order with shuffle false: 6 pairs, 2 per micro-batch, 2 micro-batches per step;
# step 2 gets what is left of the epoch (one micro-batch). Each step's loss is the mean over its pairs.
STEPS = [[[0, 1], [2, 3]], [[4, 5]]]
# The TypeScript test allows 1e-5 (relative where |value| > 1) on the logged numbers; this
# reference's own float32 run must agree with its float64 one well inside that. float32 gradients
# of this model carry ~1e-6 relative noise (the grad norm lands ~1e-6 off).
F64_TOLERANCE = 3e-6
METRICS = ["rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected"]


# ---------------------------------------------------------------------------------------------
# Inputs

def load_model():
    cfg = json.loads((MODEL / "config.json").read_text())
    # What make_golden.forward implements; anything else would need more code.
    assert cfg["model_type"] == "llama" and cfg["rope_scaling"] is None and cfg["tie_word_embeddings"] is True
    assert not cfg["attention_bias"] and not cfg["mlp_bias"] and cfg["hidden_act"] == "silu"
    W = mg.load_safetensors(MODEL / "model.safetensors")
    assert all(v.dtype == torch.float32 for v in W.values())
    assert "lm_head.weight" not in W
    return cfg, W


def decode(vocab_by_id, ids):
    """tokenizer.json's decoder: '▁' -> ' ', byte fallback, fuse, strip one leading space."""
    out = bytearray()
    for i in ids:
        piece = vocab_by_id[i]
        if piece.startswith("<0x") and piece.endswith(">") and len(piece) == 6:
            out.append(int(piece[3:5], 16))
        else:
            out += piece.replace("\u2581", " ").encode("utf-8")
    text = out.decode("utf-8")
    return text[1:] if text.startswith(" ") else text


def load_pairs():
    """The CLI's dump: per pair, prompt ids (shared), chosen and rejected completion ids."""
    tok = json.loads((MODEL / "tokenizer.json").read_text())
    vocab_by_id = {i: p for p, i in tok["model"]["vocab"].items()}
    texts = [json.loads(l) for l in (OUT / "pairs.jsonl").read_text().splitlines() if l.strip()]
    dumped = [json.loads(l) for l in (OUT / "pairs_tokens.jsonl").read_text().splitlines() if l.strip()]
    assert len(texts) == len(dumped)
    pairs = []
    for text, row in zip(texts, dumped):
        split = {}
        for side in ("chosen", "rejected"):
            ids, labels = row[f"{side}_input_ids"], row[f"{side}_labels"]
            n = next(i for i, l in enumerate(labels) if l != IGNORE)
            assert all(l == IGNORE for l in labels[:n]) and labels[n:] == ids[n:], "labels: -100 on the prompt, ids after"
            split[side] = (ids[:n], ids[n:])
        (pc, chosen), (pr, rejected) = split["chosen"], split["rejected"]
        assert pc == pr, "chosen and rejected share the prompt's tokens"
        # The dump is the text of pairs.jsonl: BOS + prompt, then completion + EOS (TRL appends EOS to text completions).
        assert pc[0] == 1 and chosen[-1] == 2 and rejected[-1] == 2
        assert decode(vocab_by_id, pc[1:]) == text["prompt"]
        assert decode(vocab_by_id, pc[1:] + chosen[:-1]) == text["prompt"] + text["chosen"]
        assert decode(vocab_by_id, pc[1:] + rejected[:-1]) == text["prompt"] + text["rejected"]
        pairs.append({"prompt_ids": pc, "chosen_ids": chosen, "rejected_ids": rejected})
    return pairs


def make_init_adapter(cfg):
    """A as PEFT's kaiming-uniform U(-1/sqrt(in), 1/sqrt(in)), B = B_STD * N(0, 1): both nonzero."""
    g = torch.Generator().manual_seed(ADAPTER_SEED)
    lora = {}
    for name, o, n in mg.linear_shapes(cfg):
        if name.rsplit(".", 1)[-1] not in LORA["target_modules"]:
            continue
        bound = 1.0 / math.sqrt(n)
        A = (torch.rand(LORA["r"], n, generator=g) * 2 - 1) * bound
        B = torch.randn(o, LORA["r"], generator=g) * B_STD
        lora[name] = (A, B)
    return lora


# ---------------------------------------------------------------------------------------------
# DPO (TRL DataCollatorForPreference + DPOTrainer._compute_loss, loss_type "sigmoid")

def collate(pairs):
    """Rows [chosen..., rejected...], prompt + completion, right padding; completion_mask 1 on completions."""
    seqs = [p["prompt_ids"] + p["chosen_ids"] for p in pairs] + [p["prompt_ids"] + p["rejected_ids"] for p in pairs]
    comp = ([[0] * len(p["prompt_ids"]) + [1] * len(p["chosen_ids"]) for p in pairs]
            + [[0] * len(p["prompt_ids"]) + [1] * len(p["rejected_ids"]) for p in pairs])
    T = max(len(s) for s in seqs)
    pad = lambda rows, v: torch.tensor([r + [v] * (T - len(r)) for r in rows], dtype=torch.int64)  # noqa: E731
    return pad(seqs, PAD), pad([[1] * len(s) for s in seqs], 0), pad(comp, 0)


def completion_logps(cfg, W, lora, ids, mask, comp):
    logits = mg.forward(cfg, W, ids, mask, lora, SCALING)
    per_token = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    return torch.where(comp[:, 1:] == 1, per_token, torch.zeros_like(per_token)).sum(1)


def dpo_micro_batch(cfg, W, lora, pairs, beta):
    """Per-pair losses and per-pair metric values of one micro-batch."""
    ids, mask, comp = collate(pairs)
    logps = completion_logps(cfg, W, lora, ids, mask, comp)
    with torch.no_grad():
        ref = completion_logps(cfg, W, None, ids, mask, comp)
    n = len(pairs)
    chosen, rejected = logps[:n], logps[n:]
    chosen_ratio, rejected_ratio = chosen - ref[:n], rejected - ref[n:]
    per = -F.logsigmoid(beta * (chosen_ratio - rejected_ratio))
    cr, rr = beta * chosen_ratio.detach(), beta * rejected_ratio.detach()
    metrics = {
        "rewards/chosen": cr,
        "rewards/rejected": rr,
        "rewards/accuracies": (cr > rr).to(cr.dtype),
        "rewards/margins": cr - rr,
        "logps/chosen": chosen.detach(),
        "logps/rejected": rejected.detach(),
    }
    return per, metrics


def direct_loss(cfg, W, lora, pairs, beta):
    """Step-1 loss written out another way: each sequence on its own (no padding), its completion's
    log-prob as minus F.cross_entropy summed over the completion's tokens, one mean at the end."""
    def logp(l, prompt, completion):
        ids = torch.tensor([prompt + completion])
        logits = mg.forward(cfg, W, ids, torch.ones_like(ids), l, SCALING)[0]
        targets = torch.tensor([IGNORE] * (len(prompt) - 1) + completion)
        return -F.cross_entropy(logits[:-1], targets, ignore_index=IGNORE, reduction="sum")
    total = 0.0
    for p in pairs:
        pc, pr = logp(lora, p["prompt_ids"], p["chosen_ids"]), logp(lora, p["prompt_ids"], p["rejected_ids"])
        rc, rr = logp(None, p["prompt_ids"], p["chosen_ids"]), logp(None, p["prompt_ids"], p["rejected_ids"])
        z = beta * ((pc - rc) - (pr - rr))
        total += math.log1p(math.exp(-float(z)))  # -log sigma(z)
    return total / len(pairs)


# ---------------------------------------------------------------------------------------------
# Training

def train(cfg, W, lora0, pairs):
    """torch.optim.SGD over STEPS: per step, each micro-batch's per-pair loss sum / the step's pair
    count is backpropagated (gradients add up), then one optimizer step."""
    lora = mg.as_leaves(lora0)
    params = mg.lora_params(lora)
    opt = torch.optim.SGD(params, lr=TRAIN["learning_rate"], momentum=0.0, weight_decay=TRAIN["weight_decay"])
    log, grads = [], []
    for step in STEPS:
        opt.zero_grad(set_to_none=True)
        n_pairs = sum(len(mb) for mb in step)
        total, sums, margins = 0.0, {k: 0.0 for k in METRICS}, []
        for rows in step:
            per, metrics = dpo_micro_batch(cfg, W, lora, [pairs[r] for r in rows], TRAIN["beta"])
            (per.sum() / n_pairs).backward()
            total += float(per.sum())
            for k in METRICS:
                sums[k] += float(metrics[k].sum())
            margins += metrics["rewards/margins"].tolist()
        grads.append([p.grad.detach().clone() for p in params])
        norm = float(torch.sqrt(sum((p.grad.double() ** 2).sum() for p in params)))
        log.append({"loss": total / n_pairs, "grad_norm": norm, **{k: v / n_pairs for k, v in sums.items()},
                    "min_abs_margin": min(abs(m) for m in margins)})
        opt.step()
    return lora, log, grads


def rel_update_err(got, expected, start):
    """||(got - start) - (expected - start)|| / ||expected - start|| over the whole adapter."""
    num = sum(float(((a.double() - b.double()) ** 2).sum()) for a, b in zip(got, expected))
    den = sum(float(((b.double() - s.double()) ** 2).sum()) for b, s in zip(expected, start))
    return math.sqrt(num / den)


def finite_difference_check(cfg, W64, lora0, pairs):
    """float64 autograd of step 1's loss vs a central finite difference along a random direction."""
    leaves = mg.as_leaves({k: (A.double(), B.double()) for k, (A, B) in lora0.items()})
    rows = [r for mb in STEPS[0] for r in mb]
    per, _ = dpo_micro_batch(cfg, W64, leaves, [pairs[r] for r in rows], TRAIN["beta"])
    per.mean().backward()
    g = torch.Generator().manual_seed(99)
    params = mg.lora_params(leaves)
    dirs = [torch.randn(p.shape, generator=g, dtype=torch.float64) for p in params]
    analytic = sum(float((p.grad * d).sum()) for p, d in zip(params, dirs))
    h = 1e-6

    def loss_at(sign):
        it = iter(dirs)
        shifted = {}
        for k in sorted(leaves):
            A, B = leaves[k]
            shifted[k] = (A.detach() + sign * h * next(it), B.detach() + sign * h * next(it))
        with torch.no_grad():
            return float(dpo_micro_batch(cfg, W64, shifted, [pairs[r] for r in rows], TRAIN["beta"])[0].mean())

    numeric = (loss_at(1) - loss_at(-1)) / (2 * h)
    assert abs(numeric - analytic) <= 1e-6 * max(1.0, abs(analytic)), f"finite difference {numeric} vs {analytic}"


# ---------------------------------------------------------------------------------------------

def adapter_config():
    """adapter_config.json as PEFT writes it (keys sorted, as PEFT's to_json_string does)."""
    return {
        "alpha_pattern": {},
        "auto_mapping": None,
        "base_model_name_or_path": "stories260K",
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "layers_pattern": None,
        "layers_to_transform": None,
        "lora_alpha": LORA["lora_alpha"],
        "lora_dropout": LORA["lora_dropout"],
        "modules_to_save": None,
        "peft_type": "LORA",
        "r": LORA["r"],
        "rank_pattern": {},
        "revision": None,
        "target_modules": LORA["target_modules"],
        "task_type": "CAUSAL_LM",
        "use_dora": False,
        "use_rslora": False,
    }


def write_json(path, obj):
    """One top-level key per line, each value compact."""
    lines = [f"  {json.dumps(k)}: {json.dumps(v, separators=(', ', ': '))}" for k, v in obj.items()]
    path.write_text("{\n" + ",\n".join(lines) + "\n}\n")


def main():
    cfg, W = load_model()
    pairs = load_pairs()
    assert len(pairs) == sum(len(mb) for step in STEPS for mb in step) == 6

    lora0 = make_init_adapter(cfg)
    (OUT / "init_adapter").mkdir(parents=True, exist_ok=True)
    (OUT / "init_adapter" / "adapter_config.json").write_text(json.dumps(adapter_config(), indent=2, sort_keys=True) + "\n")
    mg.save_safetensors(OUT / "init_adapter" / "adapter_model.safetensors", mg.adapter_tensors(lora0))
    back = mg.load_safetensors(OUT / "init_adapter" / "adapter_model.safetensors")
    assert all(torch.equal(back[k], v) for k, v in mg.adapter_tensors(lora0).items())

    W64 = {k: v.double() for k, v in W.items()}
    lora64 = {k: (A.double(), B.double()) for k, (A, B) in lora0.items()}
    t64, log64, grads64 = train(cfg, W64, lora64, pairs)
    t32, log32, _ = train(cfg, W, lora0, pairs)

    # Cross-checks (the fixture exists only if they pass).
    start = mg.lora_params(mg.as_leaves(lora0))
    p64, p32 = mg.lora_params(t64), mg.lora_params(t32)
    # 1) float32 and float64 training agree: the expected adapter does not hinge on rounding.
    scale = max(float(p.abs().max()) for p in p64)
    adapter_f32_err = max(float((a.double() - b).abs().max()) for a, b in zip(p32, p64))
    assert adapter_f32_err <= 1e-6 * scale, f"f32 vs f64 adapter: {adapter_f32_err} (max |value| {scale})"
    update_f32_err = rel_update_err(p32, p64, start)
    assert update_f32_err <= 1e-5, f"f32 vs f64 update: {update_f32_err}"
    for a, b in zip(log32, log64):
        for k in ["loss", "grad_norm", *METRICS]:
            assert abs(a[k] - b[k]) <= F64_TOLERANCE * max(1.0, abs(b[k])), f"f32 vs f64 {k}: {a[k]} vs {b[k]}"
    # 2) step 1's loss at the initial adapter equals the formula written out directly.
    rows = [r for mb in STEPS[0] for r in mb]
    direct = direct_loss(cfg, W64, lora64, [pairs[r] for r in rows], TRAIN["beta"])
    assert abs(direct - log64[0]["loss"]) < 1e-12, f"step-1 loss {log64[0]['loss']} vs direct {direct}"
    # 3) the gradient is the loss's: float64 autograd vs a central finite difference.
    finite_difference_check(cfg, W64, lora0, pairs)
    # 4) torch.optim.SGD is p -= lr * g, replayed by hand on the recorded gradients.
    for i, (p, s) in enumerate(zip(p64, start)):
        by_hand = s.double() - TRAIN["learning_rate"] * sum(g[i] for g in grads64)
        assert torch.allclose(p, by_hand, rtol=0, atol=1e-15), "SGD vs p - lr * sum(g)"
    # 5) well conditioned: every pair's margin is away from 0 (rewards/accuracies is a count of
    #    margins > 0), the policy is not the reference, and training moves the adapter visibly.
    for entry in log64:
        assert entry["min_abs_margin"] >= 1e-3, f"a pair's reward margin is {entry['min_abs_margin']}"
    assert abs(log64[0]["loss"] - math.log(2)) > 1e-3, "the initial adapter should already differ from the reference"
    moved = max(float((p - s.double()).abs().max()) for p, s in zip(p64, start))
    assert moved > 1e-3, f"training moved the adapter by at most {moved}"

    expected = {k: v.float() for k, v in mg.adapter_tensors(t64).items()}
    mg.save_safetensors(OUT / "expected_adapter.safetensors", expected)
    steps = [{"step": i + 1, "pairs": sum(len(mb) for mb in step), "micro_batches": step,
              **{k: e[k] for k in ["loss", "grad_norm", *METRICS]}} for i, (step, e) in enumerate(zip(STEPS, log64))]
    write_json(OUT / "expected.json", {
        "model": "stories260K",
        "lora": {**LORA, "scaling": SCALING, "adapter_seed": ADAPTER_SEED, "b_std": B_STD},
        "train": TRAIN,
        "steps": steps,
        "largest_update": moved,
        "f32_vs_f64": {"adapter_max_abs": adapter_f32_err, "update_rel": update_f32_err},
    })
    for s in steps:
        print(f"step {s['step']}: " + "  ".join(f"{k} {s[k]:.7g}" for k in ["loss", "grad_norm", *METRICS]))
    print(f"largest update {moved:.4g}; max |adapter| {scale:.4g}; f32 vs f64: adapter {adapter_f32_err:.3g}, update {update_f32_err:.3g}")


if __name__ == "__main__":
    main()
