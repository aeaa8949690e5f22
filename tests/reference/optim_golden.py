"""Golden numbers for tests/unit/optim.test.ts from PyTorch itself.

Writes tests/fixtures/optim_golden.json: torch.optim.AdamW and torch.optim.SGD (single-tensor
path, foreach=False) over three steps with a changing learning rate, and
torch.nn.utils.clip_grad_norm_ with and without clipping. Run with Debian's python3-torch:
    /usr/bin/python3 tests/reference/optim_golden.py
"""

import json
import pathlib

import torch

torch.manual_seed(0)
OUT = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "optim_golden.json"


def tolist(t):
    return t.detach().flatten().tolist()


def make_params():
    return {
        "w": torch.randn(3, 4, dtype=torch.float32),
        "b": torch.randn(4, dtype=torch.float32),
    }


def make_grads(steps):
    return [{"w": torch.randn(3, 4) * scale, "b": torch.randn(4) * scale} for scale in (1.0, 0.01, 3.0)[:steps]]


def run(optimizer_cls, kwargs, init, grads, lrs, moments):
    params = {k: torch.nn.Parameter(v.clone()) for k, v in init.items()}
    opt = optimizer_cls(list(params.values()), lr=lrs[0], foreach=False, **kwargs)
    names = {id(p): k for k, p in params.items()}
    after = []
    for g, lr in zip(grads, lrs):
        for group in opt.param_groups:
            group["lr"] = lr
        for k, p in params.items():
            p.grad = g[k].clone()
        opt.step()
        after.append({k: tolist(p) for k, p in params.items()})
    state = {}
    for p, s in opt.state.items():
        for key in moments:
            state[f"{names[id(p)]}.{key}"] = tolist(s[key])
    return {"after": after, "state": state}


init = make_params()
grads = make_grads(3)
lrs = [1e-2, 5e-3, 2e-3]
adamw_kwargs = {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.1}
sgd_kwargs = {"weight_decay": 0.1}


def clip_case(max_norm):
    g = {k: v.clone() for k, v in grads[2].items()}
    params = [torch.nn.Parameter(torch.zeros_like(v)) for v in g.values()]
    for p, v in zip(params, g.values()):
        p.grad = v
    total = torch.nn.utils.clip_grad_norm_(params, max_norm)
    return {"max_norm": max_norm, "total_norm": float(total), "grads": {k: tolist(p.grad) for k, p in zip(g, params)}}


golden = {
    "torch_version": torch.__version__,
    "shapes": {k: list(v.shape) for k, v in init.items()},
    "init": {k: tolist(v) for k, v in init.items()},
    "grads": [{k: tolist(v) for k, v in g.items()} for g in grads],
    "lrs": lrs,
    "adamw": {"kwargs": {"betas": list(adamw_kwargs["betas"]), "eps": adamw_kwargs["eps"], "weight_decay": adamw_kwargs["weight_decay"]},
              **run(torch.optim.AdamW, adamw_kwargs, init, grads, lrs, ["exp_avg", "exp_avg_sq", "step"])},
    "sgd": {"kwargs": sgd_kwargs, **run(torch.optim.SGD, sgd_kwargs, init, grads, lrs, [])},
    "clip": [clip_case(1.0), clip_case(100.0)],
}
OUT.write_text(json.dumps(golden) + "\n")
print(f"wrote {OUT}")
