#!/usr/bin/env python3
"""Golden fixtures for GRPO's objective (rewards -> advantages -> clipped token loss).

Run from the repository root with Debian's python (python3-torch, numpy):

    /usr/bin/python3 -B tests/reference/grpo_golden.py

It (re)writes tests/fixtures/grpo/grpo.json; the output is byte-for-byte deterministic.
tests/reference/README.md describes the file; CI only reads it.

Re-typed from TRL 1.9 (trl/trainer/grpo_trainer.py, multi_objective_aggregation
"sum_then_normalize"): the reward combination and advantages of `_generate_and_score_completions`
(None -> NaN, nansum of weighted rewards, completions where every function returned None marked
NaN and left out of the nan-aware group baseline, advantage NaN -> 0), `trl.trainer.utils.nanstd`,
the reward metrics it logs, and `_compute_loss` (ratio, GSPO sequence weights, two-sided clip, KL
penalty, the four aggregations, TRL's kl and clip_ratio metrics). trl itself is not needed.

The loss is a function of the policy's per-token log-probs `logp` only (a leaf tensor), so the
checked gradient is d loss / d logp; what the model does to produce them is tested elsewhere.
"""
import json
import math
from pathlib import Path

import torch

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "fixtures" / "grpo"

LOSS_TYPES = ["dapo", "grpo", "dr_grpo", "bnpo"]
LEVELS = ["token", "sequence"]
# old: "detached" = num_iterations 1 (old log-probs are logp.detach()); "given" = num_iterations > 1.
SETTINGS = {
    "on_policy": {"old": "detached", "beta": 0.0, "epsilon": 0.2, "epsilon_high": None},
    "on_policy_kl": {"old": "detached", "beta": 0.04, "epsilon": 0.2, "epsilon_high": 0.28},
    "off_policy": {"old": "given", "beta": 0.0, "epsilon": 0.2, "epsilon_high": 0.28},
    "off_policy_kl": {"old": "given", "beta": 0.1, "epsilon": 0.1, "epsilon_high": None},
}
NUM_GENERATIONS = 4
# Completion lengths of the micro-batch (T = 7); the 0 is a completion masked out entirely
# (mask_truncated_completions), which every aggregation must survive.
LENGTHS = [7, 3, 5, 0, 6, 1, 4, 7]
T = 7
MAX_COMPLETION_LENGTH = 8
# dapo divides by the completion tokens of the whole generation batch, more than this micro-batch holds.
NUM_ITEMS_IN_BATCH = 60
REWARD_NAMES = ["format", "accuracy"]
REWARD_WEIGHTS = [1.0, 0.5]
# [function][completion]; None = the function gave no reward for that completion.
MAIN_REWARDS = [
    [1.0, 0.0, None, 1.0, 0.0, 1.0, 1.0, 0.0],
    [0.5, 0.25, 0.75, None, None, 0.2, 0.9, 0.4],
]
ADVANTAGE_CASES = {
    "main": {"rewards": MAIN_REWARDS, "weights": REWARD_WEIGHTS, "num_generations": 4},
    # group 0 ties (std 0: "this group teaches nothing"), group 1 does not
    "zero_std_group": {"rewards": [[0.3, 0.3, 0.3, 0.3, 0.0, 1.0, 0.0, 1.0]], "weights": [1.0], "num_generations": 4},
    # completion 0 unscorable (all None); group 1 has a single scorable completion (std NaN);
    # group 2 is all None (mean NaN): every NaN advantage becomes 0
    "none_rewards": {
        "rewards": [[None, 2.0, 1.0, None, 3.0, None, None, None, 0.5],
                    [None, None, 1.5, None, None, None, None, None, -1.0]],
        "weights": [2.0, 1.0], "num_generations": 3,
    },
    # one function all None: its metrics are NaN, the other carries the reward
    "function_all_none": {
        "rewards": [[None, None, None, None], [1.0, 4.0, 2.0, 2.5]], "weights": [1.0, 1.0], "num_generations": 2,
    },
    "single_generation": {"rewards": [[0.5, 1.5, -2.0]], "weights": [1.0], "num_generations": 1},
}
# The TypeScript test allows 1e-5 relative error against the float64 numbers written here; this
# reference's own float32 run must agree with them well inside that.
F32_TOLERANCE = 2e-6
# No ratio (token or sequence, on a real token) within this relative distance of a clip bound,
# so the gradient does not hinge on which side of the kink rounding lands.
CLIP_MARGIN = 2e-3


# ---------------------------------------------------------------------------------------------
# Rewards and advantages: trl/trainer/grpo_trainer.py `_generate_and_score_completions`

def nanstd(tensor, dim=None):
    """trl.trainer.utils.nanstd: unbiased, NaNs ignored, NaN when fewer than 2 values."""
    if dim is None:
        mean = torch.nanmean(tensor)
        variance = torch.nanmean((tensor - mean) ** 2)
        count = torch.sum(~torch.isnan(tensor))
    else:
        mean = torch.nanmean(tensor, dim=dim, keepdim=True)
        variance = torch.nanmean((tensor - mean) ** 2, dim=dim, keepdim=True)
        count = torch.sum(~torch.isnan(tensor), dim=dim, keepdim=True)
    correction = count / (count - 1)
    correction = torch.where(count > 1, correction, torch.full_like(correction, float("nan")))
    std = torch.sqrt(variance * correction)
    return std if dim is None else std.squeeze(dim)


def rewards_per_func_tensor(rewards):
    """[function][completion] with None -> (completion, function) with NaN, as _calculate_rewards builds it."""
    return torch.tensor([[math.nan if r is None else r for r in f] for f in rewards], dtype=torch.float64).T.contiguous()


def combine_rewards(rewards_per_func, weights):
    unscorable_mask = torch.isnan(rewards_per_func).all(dim=1)
    rewards = (rewards_per_func * torch.tensor(weights, dtype=rewards_per_func.dtype).unsqueeze(0)).nansum(dim=1)
    rewards[unscorable_mask] = torch.nan
    return rewards


def advantages_from(rewards, num_generations, scale_rewards):
    mean_grouped_rewards = torch.nanmean(rewards.view(-1, num_generations), dim=1)
    mean_grouped_rewards = mean_grouped_rewards.repeat_interleave(num_generations, dim=0)
    if scale_rewards in ["group", "none"]:
        if num_generations > 1:
            std_rewards = nanstd(rewards.view(-1, num_generations), dim=1)
            std_rewards = std_rewards.repeat_interleave(num_generations, dim=0)
        else:
            std_rewards = torch.zeros_like(rewards)
    elif scale_rewards == "batch":
        if rewards.numel() > 1:
            std_rewards = nanstd(rewards).expand_as(rewards)
        else:
            std_rewards = torch.zeros_like(rewards)
    else:
        raise ValueError(scale_rewards)
    advantages = rewards - mean_grouped_rewards
    if scale_rewards != "none":
        advantages = advantages / (std_rewards + 1e-4)
    is_std_zero = torch.isclose(std_rewards, torch.zeros_like(std_rewards))
    advantages = torch.nan_to_num(advantages, nan=0.0)
    return advantages, std_rewards, is_std_zero.to(torch.float64).mean()


def reward_metrics(rewards_per_func, rewards, names):
    out = {}
    for i, name in enumerate(names):
        out[f"rewards/{name}/mean"] = torch.nanmean(rewards_per_func[:, i]).item()
        out[f"rewards/{name}/std"] = nanstd(rewards_per_func[:, i]).item()
    out["reward"] = torch.nanmean(rewards).item()
    out["reward_std"] = nanstd(rewards).item()
    return out


# ---------------------------------------------------------------------------------------------
# The loss: trl/trainer/grpo_trainer.py `_compute_loss` (loss types grpo, bnpo, dr_grpo, dapo)

def grpo_loss(logp, old, ref, advantages, mask, s, loss_type, level):
    per_token_logps = logp
    advantages = advantages.unsqueeze(1)
    old_per_token_logps = per_token_logps.detach() if old is None else old
    log_ratio = per_token_logps - old_per_token_logps
    if level == "token":
        log_importance_weights = log_ratio
    else:
        log_importance_weights = (log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
        log_importance_weights = log_importance_weights.unsqueeze(-1)
    coef_1 = torch.exp(log_importance_weights)
    beta = s["beta"]
    epsilon_low = s["epsilon"]
    epsilon_high = s["epsilon_high"] if s["epsilon_high"] is not None else s["epsilon"]
    if beta != 0.0:
        per_token_kl = torch.exp(ref - per_token_logps) - (ref - per_token_logps) - 1
    coef_2 = torch.clamp(coef_1, 1 - epsilon_low, 1 + epsilon_high)
    per_token_loss = -torch.min(coef_1 * advantages, coef_2 * advantages)
    if beta != 0.0:
        per_token_loss = per_token_loss + beta * per_token_kl
    if loss_type == "grpo":
        loss = ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    elif loss_type == "bnpo":
        loss = (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0)
    elif loss_type == "dr_grpo":
        loss = (per_token_loss * mask).sum() / (per_token_loss.size(0) * MAX_COMPLETION_LENGTH)
    elif loss_type == "dapo":
        loss = (per_token_loss * mask).sum() / torch.tensor(float(NUM_ITEMS_IN_BATCH)).clamp(min=1.0)
    else:
        raise ValueError(loss_type)

    def global_masked_mean(x):
        if x.shape[1] == 1:
            return (x.sum() / max(float(x.shape[0]), 1.0)).item()
        return ((x * mask).sum() / mask.sum().clamp(min=1.0)).item()

    metrics = {}
    if beta != 0.0:
        metrics["kl"] = global_masked_mean(per_token_kl.detach())
    is_low_clipped = (coef_1 < 1 - epsilon_low) & (advantages < 0)
    is_high_clipped = (coef_1 > 1 + epsilon_high) & (advantages > 0)
    is_region_clipped = is_low_clipped | is_high_clipped
    metrics["clip_ratio/low_mean"] = global_masked_mean(is_low_clipped.to(mask.dtype))
    metrics["clip_ratio/high_mean"] = global_masked_mean(is_high_clipped.to(mask.dtype))
    metrics["clip_ratio/region_mean"] = global_masked_mean(is_region_clipped.to(mask.dtype))
    return loss, metrics, coef_1.detach()


def loss_and_grad(inputs, s, loss_type, level, dtype):
    logp = inputs["logp"].to(dtype).clone().requires_grad_(True)
    old = inputs["old"].to(dtype) if s["old"] == "given" else None
    ref = inputs["ref"].to(dtype) if s["beta"] != 0.0 else None
    loss, metrics, coef_1 = grpo_loss(logp, old, ref, inputs["advantages"].to(dtype), inputs["mask"].to(dtype), s, loss_type, level)
    loss.backward()
    return loss.item(), metrics, logp.grad.detach().clone(), coef_1


def finite_difference(inputs, s, loss_type, level, seed):
    """Central difference of the float64 loss along a random direction, old log-probs held fixed
    (with num_iterations 1 they are logp.detach(): a constant for the gradient)."""
    x0 = inputs["logp"].to(torch.float64)
    old = inputs["old"].to(torch.float64) if s["old"] == "given" else x0.clone()
    given = dict(s, old="given")
    fixed = dict(inputs, old=old)
    v = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    h = 1e-6

    def f(x):
        with torch.no_grad():
            return grpo_loss(x, old, fixed["ref"].to(torch.float64), fixed["advantages"].to(torch.float64), fixed["mask"].to(torch.float64), given, loss_type, level)[0].item()

    return (f(x0 + h * v) - f(x0 - h * v)) / (2 * h), v


# ---------------------------------------------------------------------------------------------

def make_inputs(seed, advantages):
    g = torch.Generator().manual_seed(seed)
    B = len(LENGTHS)
    mask = torch.tensor([[1.0 if t < n else 0.0 for t in range(T)] for n in LENGTHS], dtype=torch.float32)
    logp = -(0.05 + 2.95 * torch.rand((B, T), generator=g))
    old = logp + 0.25 * torch.randn((B, T), generator=g)
    ref = logp + 0.3 * torch.randn((B, T), generator=g)
    # the inputs are float32 values, exactly what the TypeScript side holds
    return {"logp": logp.float(), "old": old.float(), "ref": ref.float(), "mask": mask,
            "advantages": advantages.to(torch.float32)}


def well_conditioned(inputs, problems):
    ok = True
    mask = inputs["mask"].bool()
    for name, s in SETTINGS.items():
        lo = 1 - s["epsilon"]
        hi = 1 + (s["epsilon_high"] if s["epsilon_high"] is not None else s["epsilon"])
        for level in LEVELS:
            _, _, _, coef = loss_and_grad(inputs, s, "bnpo", level, torch.float64)
            c = coef[mask] if level == "token" else coef.squeeze(1)[mask.any(1)]
            near = torch.minimum((c - lo).abs() / lo, (c - hi).abs() / hi).min().item()
            if near < CLIP_MARGIN:
                problems.append(f"{name}/{level}: a ratio {near:.1e} from a clip bound")
                ok = False
            for loss_type in LOSS_TYPES:
                l64, m64, g64, _ = loss_and_grad(inputs, s, loss_type, level, torch.float64)
                l32, m32, g32, _ = loss_and_grad(inputs, s, loss_type, level, torch.float32)
                if abs(l64) < 1e-2 or abs(l32 - l64) / abs(l64) > F32_TOLERANCE:
                    problems.append(f"{name}/{level}/{loss_type}: loss {l64} (f32 {l32})")
                    ok = False
                for k, v in m64.items():
                    if v != 0 and abs(m32[k] - v) / abs(v) > F32_TOLERANCE:
                        problems.append(f"{name}/{level}/{loss_type}: {k} {v} (f32 {m32[k]})")
                        ok = False
                if ((g32.double() - g64).norm() / g64.norm()).item() > F32_TOLERANCE:
                    problems.append(f"{name}/{level}/{loss_type}: gradient")
                    ok = False
    # clipping on both sides when off-policy, and of whole sequences (GSPO) too
    off = loss_and_grad(inputs, SETTINGS["off_policy"], "bnpo", "token", torch.float64)[1]
    seq = loss_and_grad(inputs, SETTINGS["off_policy_kl"], "bnpo", "sequence", torch.float64)[1]
    if not (off["clip_ratio/low_mean"] > 0 and off["clip_ratio/high_mean"] > 0 and seq["clip_ratio/region_mean"] > 0):
        problems.append("too little clipping")
        ok = False
    return ok


def jsonable(x):
    """NaN -> null (JSON has no NaN); the TypeScript test maps null back to NaN."""
    if isinstance(x, torch.Tensor):
        x = x.tolist()
    if isinstance(x, float):
        return None if math.isnan(x) else x
    if isinstance(x, list):
        return [jsonable(v) for v in x]
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    return x


def main():
    advantage_cases = {}
    for name, c in ADVANTAGE_CASES.items():
        rpf = rewards_per_func_tensor(c["rewards"])
        combined = combine_rewards(rpf, c["weights"])
        names = [f"f{i}" for i in range(len(c["rewards"]))]
        out = {"rewards": c["rewards"], "weights": c["weights"], "num_generations": c["num_generations"],
               "combined": combined, "metrics": reward_metrics(rpf, combined, names), "reward_names": names, "scales": {}}
        for scale in ["group", "batch", "none"]:
            adv, std, frac = advantages_from(combined, c["num_generations"], scale)
            out["scales"][scale] = {"advantages": adv, "std": std, "frac_reward_zero_std": frac.item()}
        advantage_cases[name] = out
    # the hand-picked edge cases do what they are there for
    zs = advantage_cases["zero_std_group"]["scales"]["group"]
    assert zs["frac_reward_zero_std"] == 0.5 and zs["advantages"][:4].abs().max() < 1e-10
    nr = advantage_cases["none_rewards"]
    assert math.isnan(nr["combined"][0]) and math.isnan(nr["scales"]["group"]["std"][3]) and math.isnan(nr["combined"][6:].sum())
    assert nr["scales"]["group"]["advantages"][0] == 0 and (nr["scales"]["group"]["advantages"][3:] == 0).all()
    assert math.isnan(advantage_cases["function_all_none"]["metrics"]["rewards/f0/mean"])

    main_rpf = rewards_per_func_tensor(MAIN_REWARDS)
    main_adv, _, _ = advantages_from(combine_rewards(main_rpf, REWARD_WEIGHTS), NUM_GENERATIONS, "group")
    assert (main_adv.abs() > 0.05).all(), "every completion should carry signal"

    problems = []
    for seed in range(200):
        inputs = make_inputs(seed, main_adv)
        if well_conditioned(inputs, problems):
            break
        problems.clear()
    else:
        raise SystemExit("no well-conditioned seed: " + "; ".join(problems[:5]))

    cases = {}
    for sname, s in SETTINGS.items():
        for level in LEVELS:
            for loss_type in LOSS_TYPES:
                loss, metrics, grad, _ = loss_and_grad(inputs, s, loss_type, level, torch.float64)
                fd, v = finite_difference(inputs, s, loss_type, level, seed=len(cases) + 1)
                analytic = (grad * v).sum().item()
                assert abs(fd - analytic) <= 1e-7 * max(1.0, abs(analytic)), (sname, level, loss_type, fd, analytic)
                # masked positions get no gradient
                assert (grad[inputs["mask"] == 0] == 0).all()
                cases[f"{sname}/{level}/{loss_type}"] = {
                    "setting": sname, "importance_sampling_level": level, "loss_type": loss_type,
                    "loss": loss, "metrics": metrics, "grad_logp": grad,
                }

    fixture = {
        "trl": "1.9 (trl/trainer/grpo_trainer.py, multi_objective_aggregation sum_then_normalize)",
        "seed": seed,
        "num_generations": NUM_GENERATIONS,
        "max_completion_length": MAX_COMPLETION_LENGTH,
        "num_items_in_batch": NUM_ITEMS_IN_BATCH,
        "lengths": LENGTHS,
        "inputs": {"logp": inputs["logp"], "old_logp": inputs["old"], "ref_logp": inputs["ref"],
                   "completion_mask": inputs["mask"], "advantages": inputs["advantages"]},
        "settings": SETTINGS,
        "cases": cases,
        "advantage_cases": advantage_cases,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    text = json.dumps(jsonable(fixture), indent=1, sort_keys=True, allow_nan=False) + "\n"
    (OUT / "grpo.json").write_text(text)
    print(f"seed {seed}; wrote {OUT / 'grpo.json'} ({len(cases)} loss cases, {len(advantage_cases)} advantage cases)")


if __name__ == "__main__":
    main()
