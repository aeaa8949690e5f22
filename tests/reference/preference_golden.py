#!/usr/bin/env python3
"""Golden fixtures for the preference methods (DPO sigmoid/ipo/hinge, KTO, ORPO, SimPO).

Run from the repository root with Debian's python (python3-torch, numpy):

    /usr/bin/python3 -B tests/reference/preference_golden.py

It (re)writes tests/fixtures/preference/; the output is byte-for-byte deterministic.
tests/reference/README.md describes every file; CI only reads them.

The model is make_golden.py's tiny Llama (the llama_f32 case, read back from
tests/fixtures/golden/llama_f32/model.safetensors) with a random LoRA adapter whose A and B are
both nonzero, so the policy differs from the reference (the same weights with the adapter off).
The losses and metrics are re-typed from TRL 1.x (trl/trainer/dpo_trainer.py `_compute_loss`,
trl/trainer/kto_trainer.py `_compute_loss` and its collator's KL rotation,
trl/experimental/orpo/orpo_trainer.py `concatenated_forward` + `odds_ratio_loss`,
trl/experimental/cpo/cpo_trainer.py `cpo_loss` with loss_type "simpo", cpo_alpha 0);
trl itself is not needed.
"""
import json
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_golden as mg  # noqa: E402  (tiny Llama + LoRA, safetensors reader/writer; sets one thread, deterministic)

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "fixtures" / "preference"
BASE_CASE = "llama_f32"
CFG = mg.CONFIGS["llama"]
VOCAB = CFG["vocab_size"]
PAD, BOS, EOS = 0, 1, 2
SCALING = mg.LORA["lora_alpha"] / mg.LORA["r"]

# (prompt tokens incl. BOS, chosen tokens incl. EOS, rejected tokens incl. EOS)
PAIR_LENGTHS = [(3, 4, 2), (5, 2, 5), (2, 6, 3), (4, 3, 1)]
# (prompt tokens incl. BOS, completion tokens incl. EOS, label)
KTO_ROWS = [(3, 4, True), (4, 2, False), (2, 5, True), (5, 3, False), (3, 2, False)]

SETTINGS = {
    "dpo_sigmoid": {"method": "dpo", "beta": 0.1, "loss_type": "sigmoid"},
    "dpo_ipo": {"method": "dpo", "beta": 0.1, "loss_type": "ipo"},
    # beta 2 puts some pairs on each side of the hinge's kink.
    "dpo_hinge": {"method": "dpo", "beta": 2.0, "loss_type": "hinge"},
    "kto": {"method": "kto", "beta": 0.5, "desirable_weight": 1.0, "undesirable_weight": 1.33},
    "orpo": {"method": "orpo", "beta": 0.1},
    "simpo": {"method": "simpo", "beta": 2.0, "simpo_gamma": 0.5},
}
TRAIN = {
    "method": "dpo", "beta": 0.1, "loss_type": "sigmoid",
    "lr": 1e-2, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01,
    "steps": 2, "micro_batches": [[0, 1], [2, 3]],
}
# The TypeScript test allows 1e-5 relative error (losses, metrics, and the gradient as
# ||delta|| / ||g|| over the whole adapter) against the float64 numbers written here; this
# reference's own float32 run must agree with them well inside that.
F64_TOLERANCE = 3e-6


# ---------------------------------------------------------------------------------------------
# Data

def make_data():
    g = torch.Generator().manual_seed(11)

    def ids(n, first=None, last=None):
        t = torch.randint(3, VOCAB, (n,), generator=g).tolist()
        if first is not None:
            t[0] = first
        if last is not None:
            t[-1] = last
        return t

    pairs = [{"prompt_ids": ids(p, first=BOS), "chosen_ids": ids(c, last=EOS), "rejected_ids": ids(r, last=EOS)}
             for p, c, r in PAIR_LENGTHS]
    kto = [{"prompt_ids": ids(p, first=BOS), "completion_ids": ids(c, last=EOS), "label": lab} for p, c, lab in KTO_ROWS]
    return pairs, kto


def pad_rows(rows, value):
    n = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (n - len(r)) for r in rows], dtype=torch.int64)


def preference_collate(pairs):
    """trl DataCollatorForPreference: rows [chosen..., rejected...], right padding."""
    ids = [p["prompt_ids"] + p["chosen_ids"] for p in pairs] + [p["prompt_ids"] + p["rejected_ids"] for p in pairs]
    comp = ([[0] * len(p["prompt_ids"]) + [1] * len(p["chosen_ids"]) for p in pairs]
            + [[0] * len(p["prompt_ids"]) + [1] * len(p["rejected_ids"]) for p in pairs])
    return {"input_ids": pad_rows(ids, PAD), "attention_mask": pad_rows([[1] * len(r) for r in ids], 0),
            "completion_mask": pad_rows(comp, 0)}


def unpaired_collate(rows):
    """trl DataCollatorForUnpairedPreference after _prepare_dataset's KL rotation:
    KL_completion_ids = [completion_ids[-1]] + completion_ids[:-1] (prompt i with completion i-1)."""
    completions = [r["completion_ids"] for r in rows]
    kl_completions = [completions[-1]] + completions[:-1]
    out = {"label": torch.tensor([r["label"] for r in rows])}
    for prefix, comps in (("", completions), ("KL_", kl_completions)):
        ids = [r["prompt_ids"] + c for r, c in zip(rows, comps)]
        out[prefix + "input_ids"] = pad_rows(ids, PAD)
        out[prefix + "attention_mask"] = pad_rows([[1] * len(x) for x in ids], 0)
        out[prefix + "completion_mask"] = pad_rows([[0] * len(r["prompt_ids"]) + [1] * len(c) for r, c in zip(rows, comps)], 0)
    return out


# ---------------------------------------------------------------------------------------------
# Log-probs (trl.trainer.utils.selective_log_softmax + the masking of each trainer)

def selective_log_softmax(logits, index):
    return torch.log_softmax(logits, dim=-1).gather(-1, index.unsqueeze(-1)).squeeze(-1)


def completion_logps(W, lora, input_ids, attention_mask, completion_mask):
    """Sum over completion tokens of log p(token | prefix), one per row (dpo/kto _compute_loss)."""
    logits = mg.forward(CFG, W, input_ids, attention_mask, lora, SCALING)
    per_token = selective_log_softmax(logits[:, :-1], input_ids[:, 1:])
    per_token = torch.where(completion_mask[:, 1:] == 0, torch.zeros_like(per_token), per_token)
    return per_token.sum(1)


# ---------------------------------------------------------------------------------------------
# Losses: (loss as TRL reports it = mean over rows, metrics as TRL logs them for one batch, per-row loss)

def dpo(W, lora, pairs, beta, loss_type):
    b = preference_collate(pairs)
    logps = completion_logps(W, lora, b["input_ids"], b["attention_mask"], b["completion_mask"])
    chosen_logps, rejected_logps = logps.chunk(2)
    with torch.no_grad():
        ref = completion_logps(W, None, b["input_ids"], b["attention_mask"], b["completion_mask"])
    ref_chosen, ref_rejected = ref.chunk(2)
    chosen_logratios = chosen_logps - ref_chosen
    rejected_logratios = rejected_logps - ref_rejected
    delta = chosen_logratios - rejected_logratios
    if loss_type == "sigmoid":
        per = -F.logsigmoid(beta * delta)
    elif loss_type == "hinge":
        per = torch.relu(1 - beta * delta)
    elif loss_type == "ipo":
        chosen_mask, rejected_mask = b["completion_mask"].chunk(2)
        ipo_delta = chosen_logratios / chosen_mask.sum(1).clamp(min=1.0) - rejected_logratios / rejected_mask.sum(1).clamp(min=1.0)
        per = (ipo_delta - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(loss_type)
    chosen_rewards = beta * chosen_logratios.detach()
    rejected_rewards = beta * rejected_logratios.detach()
    metrics = {
        "rewards/chosen": chosen_rewards.mean(),
        "rewards/rejected": rejected_rewards.mean(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).to(chosen_rewards.dtype).mean(),
        "rewards/margins": (chosen_rewards - rejected_rewards).mean(),
        "logps/chosen": chosen_logps.detach().mean(),
        "logps/rejected": rejected_logps.detach().mean(),
    }
    margins = {"beta_delta": (beta * delta).detach()}
    return per.mean(), metrics, per, margins


def kto(W, lora, rows, beta, desirable_weight, undesirable_weight, fixed_kl=None):
    b = unpaired_collate(rows)
    with torch.no_grad():  # _compute_kl_logps runs the policy under no_grad
        kl_logps = completion_logps(W, lora, b["KL_input_ids"], b["KL_attention_mask"], b["KL_completion_mask"])
    logps = completion_logps(W, lora, b["input_ids"], b["attention_mask"], b["completion_mask"])
    with torch.no_grad():
        ref_kl_logps = completion_logps(W, None, b["KL_input_ids"], b["KL_attention_mask"], b["KL_completion_mask"])
        ref_logps = completion_logps(W, None, b["input_ids"], b["attention_mask"], b["completion_mask"])
    kl = (kl_logps - ref_kl_logps).mean().detach().clamp(min=0)
    if fixed_kl is not None:  # finite differences: the KL term is detached, so hold it still
        kl = fixed_kl
    labels = b["label"]
    chosen_idx = torch.nonzero(labels, as_tuple=False).view(-1)
    rejected_idx = torch.nonzero(~labels, as_tuple=False).view(-1)
    chosen_logps, rejected_logps = logps.index_select(0, chosen_idx), logps.index_select(0, rejected_idx)
    chosen_logratios = chosen_logps - ref_logps.index_select(0, chosen_idx)
    rejected_logratios = rejected_logps - ref_logps.index_select(0, rejected_idx)
    chosen_losses = 1 - torch.sigmoid(beta * (chosen_logratios - kl))
    rejected_losses = 1 - torch.sigmoid(beta * (kl - rejected_logratios))
    losses = torch.cat((desirable_weight * chosen_losses, undesirable_weight * rejected_losses), 0)
    chosen_rewards = beta * chosen_logratios.detach()
    rejected_rewards = beta * rejected_logratios.detach()
    n_chosen, n_rejected = len(chosen_idx), len(rejected_idx)
    metrics = {
        "kl": kl.detach() if torch.is_tensor(kl) else torch.tensor(kl),
        "rewards/chosen": chosen_rewards.nansum() / n_chosen,
        "rewards/rejected": rejected_rewards.nansum() / n_rejected,
        "logps/chosen": chosen_logps.detach().nansum() / n_chosen,
        "logps/rejected": rejected_logps.detach().nansum() / n_rejected,
    }
    metrics["rewards/margins"] = metrics["rewards/chosen"] - metrics["rewards/rejected"]
    return losses.nanmean(), metrics, losses, {"kl_unclamped": (kl_logps - ref_kl_logps).mean()}


def pair_batch_logps(W, lora, pairs):
    """ORPO/CPO concatenated_forward: labels -100 on the prompt and padding; logits of all rows."""
    b = preference_collate(pairs)
    labels = torch.where(b["completion_mask"] == 1, b["input_ids"], torch.full_like(b["input_ids"], -100))
    logits = mg.forward(CFG, W, b["input_ids"], b["attention_mask"], lora, SCALING)
    return b, labels, logits


def get_batch_logps(logits, labels, average_log_prob):
    labels = labels[:, 1:].clone()
    logits = logits[:, :-1, :]
    loss_mask = labels != -100
    labels[labels == -100] = 0
    per_token_logps = selective_log_softmax(logits, labels)
    if average_log_prob:
        return (per_token_logps * loss_mask).sum(-1) / loss_mask.sum(-1)
    return (per_token_logps * loss_mask).sum(-1)


def log1mexp(x):
    t = -0.6931471805599453
    return torch.where(x < t, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def orpo(W, lora, pairs, beta):
    b, labels, logits = pair_batch_logps(W, lora, pairs)
    n = len(pairs)
    # "orpo chosen nll loss is computed over the full prompt and response": every real token.
    nll_labels = torch.where(b["attention_mask"] == 1, b["input_ids"], torch.full_like(b["input_ids"], -100))
    nll = F.cross_entropy(logits[:n, :-1].reshape(-1, VOCAB), nll_labels[:n, 1:].reshape(-1), ignore_index=-100)
    all_logps = get_batch_logps(logits, labels, average_log_prob=True)
    chosen_logps, rejected_logps = all_logps[:n], all_logps[n:]
    log_odds = (chosen_logps - rejected_logps) - (log1mexp(chosen_logps) - log1mexp(rejected_logps))
    ratio = F.logsigmoid(log_odds)
    losses = beta * ratio
    loss = nll - losses.mean()
    chosen_rewards = beta * chosen_logps.detach()
    rejected_rewards = beta * rejected_logps.detach()
    metrics = {
        "rewards/chosen": chosen_rewards.mean(),
        "rewards/rejected": rejected_rewards.mean(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).to(chosen_rewards.dtype).mean(),
        "rewards/margins": (chosen_rewards - rejected_rewards).mean(),
        "logps/rejected": rejected_logps.detach().mean(),
        "logps/chosen": chosen_logps.detach().mean(),
        "nll_loss": nll.detach(),
        "log_odds_ratio": ratio.detach().mean(),
        "log_odds_chosen": log_odds.detach().mean(),
    }
    return loss, metrics, nll - losses, {"chosen_minus_rejected": (chosen_rewards - rejected_rewards)}


def simpo(W, lora, pairs, beta, simpo_gamma):
    _, labels, logits = pair_batch_logps(W, lora, pairs)
    n = len(pairs)
    all_logps = get_batch_logps(logits, labels, average_log_prob=True)
    chosen_logps, rejected_logps = all_logps[:n], all_logps[n:]
    lg = (chosen_logps - rejected_logps) - simpo_gamma / beta
    losses = -F.logsigmoid(beta * lg)  # label_smoothing 0
    loss = losses.mean()  # + cpo_alpha (0) * nll
    chosen_rewards = beta * chosen_logps.detach()
    rejected_rewards = beta * rejected_logps.detach()
    metrics = {
        "rewards/chosen": chosen_rewards.mean(),
        "rewards/rejected": rejected_rewards.mean(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).to(chosen_rewards.dtype).mean(),
        "rewards/margins": (chosen_rewards - rejected_rewards).mean(),
        "logps/rejected": rejected_logps.detach().mean(),
        "logps/chosen": chosen_logps.detach().mean(),
    }
    return loss, metrics, losses, {"chosen_minus_rejected": (chosen_rewards - rejected_rewards)}


def run_case(name, W, lora, pairs, kto_rows, fixed_kl=None):
    s = SETTINGS[name]
    if s["method"] == "dpo":
        return dpo(W, lora, pairs, s["beta"], s["loss_type"])
    if s["method"] == "kto":
        return kto(W, lora, kto_rows, s["beta"], s["desirable_weight"], s["undesirable_weight"], fixed_kl)
    if s["method"] == "orpo":
        return orpo(W, lora, pairs, s["beta"])
    return simpo(W, lora, pairs, s["beta"], s["simpo_gamma"])


# ---------------------------------------------------------------------------------------------
# Checks

def rel_err(a, b):
    return abs(float(a) - float(b)) / max(abs(float(b)), 1e-30)


def as64(W, lora):
    return ({k: v.double() for k, v in W.items()},
            mg.as_leaves({k: (A.double(), B.double()) for k, (A, B) in lora.items()}))


def grad_rel_err(got, expected):
    """||got - expected|| / ||expected|| over the whole adapter gradient (all tensors as one vector)."""
    num = sum(float(((a.double() - b.double()) ** 2).sum()) for a, b in zip(got, expected))
    den = sum(float((b.double() ** 2).sum()) for b in expected)
    return math.sqrt(num / den)


def evaluate_case(name, W, lora0, pairs, kto_rows):
    """The case in float32 and in float64 autograd: (float32 result, float64 result), each
    (loss, metrics, LoRA leaves with .grad, extra values for the conditioning checks)."""
    out = []
    for W_, leaves in ((W, mg.as_leaves(lora0)), as64(W, lora0)):
        loss, metrics, _, extra = run_case(name, W_, leaves, pairs, kto_rows)
        loss.backward()
        out.append((loss, metrics, leaves, extra))
    return out


def conditioning_problem(name, r32, r64):
    """Why this adapter makes a poor fixture for the case, or None. The expected numbers must not
    hinge on rounding: float32 agrees with float64 well inside the TypeScript test's tolerance,
    no metric is a near-cancelled mean, and every discrete decision is away from its threshold."""
    (loss32, m32, l32, _), (loss64, m64, l64, extra) = r32, r64
    if rel_err(loss32, loss64) > F64_TOLERANCE:
        return f"loss f32 {float(loss32)} vs f64 {float(loss64)}"
    for k in m64:
        if abs(float(m64[k])) < 1e-3:
            return f"metric {k} = {float(m64[k])} too close to 0 for a relative check"
        if rel_err(m32[k], m64[k]) > F64_TOLERANCE:
            return f"{k} f32 {float(m32[k])} vs f64 {float(m64[k])}"
    g32 = [p.grad for p in mg.lora_params(l32)]
    g64 = [p.grad for p in mg.lora_params(l64)]
    if any(float(g.abs().max()) == 0 for g in g64):
        return "a LoRA tensor has no gradient"
    if grad_rel_err(g32, g64) > F64_TOLERANCE:
        return f"f32 vs f64 gradient {grad_rel_err(g32, g64)}"
    if name == "kto" and float(extra["kl_unclamped"]) < 0.05:
        return f"KL estimate {float(extra['kl_unclamped'])} is not clearly positive (the clamp would hide it)"
    if SETTINGS[name]["method"] == "dpo":
        bd = extra["beta_delta"]
        if float(bd.abs().min()) < 1e-3:
            return "a pair's reward margin is ~0"
        if name == "dpo_hinge" and (float((1 - bd).abs().min()) < 1e-2 or not ((bd > 1).any() and (bd < 1).any())):
            return "the hinge needs pairs on both sides of its kink, none on it"
    if "chosen_minus_rejected" in extra and float(extra["chosen_minus_rejected"].abs().min()) < 1e-4:
        return "a reward margin is ~0"
    return None


def finite_difference_check(name, W, lora0, pairs, kto_rows, r64):
    """float64 autograd vs a central finite difference along one random direction (the KTO KL
    term is detached in TRL, so it is held still)."""
    _, m64, l64, _ = r64
    W64 = {k: v.double() for k, v in W.items()}
    fixed_kl = m64["kl"].detach() if name == "kto" else None
    g = torch.Generator().manual_seed(99)
    dirs = [torch.randn(p.shape, generator=g, dtype=torch.float64) for p in mg.lora_params(l64)]
    analytic = sum(float((p.grad * d).sum()) for p, d in zip(mg.lora_params(l64), dirs))
    h = 1e-6

    def loss_at(sign):
        it = iter(dirs)
        shifted = {}
        for k in sorted(l64):
            A, B = l64[k]
            shifted[k] = (A.detach() + sign * h * next(it), B.detach() + sign * h * next(it))
        return float(run_case(name, W64, shifted, pairs, kto_rows, fixed_kl)[0])

    numeric = (loss_at(1) - loss_at(-1)) / (2 * h)
    assert abs(numeric - analytic) <= 1e-6 * max(1.0, abs(analytic)), f"{name}: finite difference {numeric} vs {analytic}"


def dpo_train(W, lora0, pairs):
    """2 AdamW steps, 2 micro-batches each; the step's loss is the sum of per-pair losses / the
    step's pair count (equal micro-batches: TRL's mean of micro-batch means is the same)."""
    lora = mg.as_leaves(lora0)
    params = mg.lora_params(lora)
    opt = torch.optim.AdamW(params, lr=TRAIN["lr"], betas=tuple(TRAIN["betas"]), eps=TRAIN["eps"],
                            weight_decay=TRAIN["weight_decay"])
    n_pairs = sum(len(mb) for mb in TRAIN["micro_batches"])
    losses, first_grads = [], None
    for _ in range(TRAIN["steps"]):
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for rows in TRAIN["micro_batches"]:
            _, _, per, _ = dpo(W, lora, [pairs[r] for r in rows], TRAIN["beta"], TRAIN["loss_type"])
            (per.sum() / n_pairs).backward()
            total += float(per.sum())
        if first_grads is None:
            first_grads = [p.grad.detach().clone() for p in params]
        losses.append(total / n_pairs)
        opt.step()
    return lora, losses, first_grads


def make_adapter(W, pairs, kto_rows, seed):
    """A random adapter with A and B both nonzero (A as PEFT's kaiming-uniform, B = N(0,1)), from
    the first seed that conditions every case well (conditioning_problem) and whose DPO step-1
    gradient has no element below 1e-7 in size: AdamW's first update is about lr * sign(g), so
    an element at float32 noise level could step either way."""
    W64 = {k: v.double() for k, v in W.items()}
    for s in range(seed, seed + 200):
        lora = mg.make_adapter(CFG, s, b_std=1.0)
        results = {name: evaluate_case(name, W, lora, pairs, kto_rows) for name in SETTINGS}
        if any(conditioning_problem(name, *r) for name, r in results.items()):
            continue
        _, _, g64 = dpo_train(W64, {k: (A.double(), B.double()) for k, (A, B) in lora.items()}, pairs)
        if min(float(g.abs().min()) for g in g64) >= 1e-7:
            return lora, s, results
    raise RuntimeError("no well-conditioned adapter seed found")


# ---------------------------------------------------------------------------------------------

def floats(d):
    return {k: float(v) for k, v in d.items()}


def write_json(path, obj):
    """One top-level key per line, each value compact."""
    lines = [f"  {json.dumps(k)}: {json.dumps(v, separators=(', ', ': '))}" for k, v in obj.items()]
    path.write_text("{\n" + ",\n".join(lines) + "\n}\n")


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    W = mg.load_safetensors(ROOT / "fixtures" / "golden" / BASE_CASE / "model.safetensors")
    assert all(v.dtype == torch.float32 for v in W.values())
    pairs, kto_rows = make_data()

    lora0, seed, results = make_adapter(W, pairs, kto_rows, 500)
    mg.save_safetensors(OUT / "lora_init.safetensors", mg.adapter_tensors(lora0))

    # Expected values are the float64 results (float32 agrees within F64_TOLERANCE, checked above).
    cases = {}
    for name, (_, r64) in results.items():
        finite_difference_check(name, W, lora0, pairs, kto_rows, r64)
        loss, metrics, leaves, _ = r64
        grads = {k: v.float() for k, v in mg.adapter_tensors(leaves, which="grad").items()}
        mg.save_safetensors(OUT / f"grad_{name}.safetensors", grads)
        cases[name] = {**SETTINGS[name], "loss": float(loss), "metrics": floats(metrics)}
        print(f"{name:12s} loss {float(loss):.6f}  " + "  ".join(f"{k} {float(v):.5f}" for k, v in metrics.items()))

    W64 = {k: v.double() for k, v in W.items()}
    trained, losses, _ = dpo_train(W64, {k: (A.double(), B.double()) for k, (A, B) in lora0.items()}, pairs)
    mg.save_safetensors(OUT / "dpo_after_2_steps.safetensors", {k: v.float() for k, v in mg.adapter_tensors(trained).items()})
    # The same run in float32 ends within 1e-6: the fixture does not hinge on rounding.
    t32, l32, _ = dpo_train(W, lora0, pairs)
    for p, q in zip(mg.lora_params(t32), mg.lora_params(trained)):
        mg.check_close("f32 vs f64 DPO training", p, q, 1e-6)
    assert max(abs(a - b) for a, b in zip(losses, l32)) < 1e-6
    # The first step's loss is the dpo_sigmoid case's loss (same pairs, same adapter).
    assert rel_err(losses[0], cases["dpo_sigmoid"]["loss"]) < 1e-12
    moved = max(float((p - q.double()).abs().max()) for p, q in zip(mg.lora_params(trained), mg.lora_params(mg.as_leaves(lora0))))
    assert moved > 1e-3, "training did not move the adapter"
    print(f"adapter seed {seed}; dpo training losses {losses}")

    write_json(OUT / "preference.json", {
        "base_case": BASE_CASE,
        "pad_token_id": PAD,
        "lora": {**mg.LORA, "scaling": SCALING},
        "adapter_seed": seed,
        "pairs": pairs,
        "kto_rows": kto_rows,
        "cases": cases,
        "train": {**TRAIN, "losses": losses},
    })


if __name__ == "__main__":
    main()
