"""The PyTorch side of `npm run bench`'s WASM comparison: one LoRA SFT step of a SmolLM2-135M-shaped
Llama (random weights) at 1×T tokens, float32 eager, one thread, as transformers' modeling_llama.py
(eager attention) with PEFT LoRA r=16, alpha 32, all linear layers, no dropout, and torch.optim.AdamW.
The base is frozen (requires_grad False), so autograd computes no weight gradient for it, as in the
engine. Prints progress to stderr and one JSON line to stdout: {"ms_per_step", "torch", "threads", ...}.

    /usr/bin/python3 -B tests/reference/bench_torch.py [--seq 512] [--steps 2]
"""
import argparse
import json
import math
import sys
import time

import torch
import torch.nn.functional as F

# SmolLM2-135M's config.json
H, I, L, NH, NKV, V, THETA, EPS = 576, 1536, 30, 9, 3, 49152, 100000.0, 1e-5
D = H // NH
R, ALPHA = 16, 32


class LoraLinear(torch.nn.Module):
    def __init__(self, inp, out):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.empty(out, inp).uniform_(-0.04, 0.04), requires_grad=False)
        self.lora_A = torch.nn.Parameter(torch.empty(R, inp).uniform_(-1 / math.sqrt(inp), 1 / math.sqrt(inp)))
        self.lora_B = torch.nn.Parameter(torch.zeros(out, R))

    def forward(self, x):
        return F.linear(x, self.weight) + F.linear(F.linear(x, self.lora_A), self.lora_B) * (ALPHA / R)


def rms_norm(x, w):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS))


def rotate_half(x):
    return torch.cat((-x[..., D // 2:], x[..., : D // 2]), dim=-1)


class Layer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.ln1 = torch.nn.Parameter(torch.ones(H), requires_grad=False)
        self.ln2 = torch.nn.Parameter(torch.ones(H), requires_grad=False)
        self.q, self.k, self.v, self.o = LoraLinear(H, NH * D), LoraLinear(H, NKV * D), LoraLinear(H, NKV * D), LoraLinear(NH * D, H)
        self.gate, self.up, self.down = LoraLinear(H, I), LoraLinear(H, I), LoraLinear(I, H)

    def forward(self, h, cos, sin, mask):
        B, T, _ = h.shape
        x = rms_norm(h, self.ln1)
        q = self.q(x).view(B, T, NH, D).transpose(1, 2)
        k = self.k(x).view(B, T, NKV, D).transpose(1, 2)
        v = self.v(x).view(B, T, NKV, D).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k, v = k.repeat_interleave(NH // NKV, dim=1), v.repeat_interleave(NH // NKV, dim=1)
        p = torch.softmax(q @ k.transpose(2, 3) / math.sqrt(D) + mask, dim=-1)
        h = h + self.o((p @ v).transpose(1, 2).reshape(B, T, NH * D))
        x = rms_norm(h, self.ln2)
        return h + self.down(F.silu(self.gate(x)) * self.up(x))


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Parameter(torch.empty(V, H).uniform_(-0.04, 0.04), requires_grad=False)
        self.layers = torch.nn.ModuleList(Layer() for _ in range(L))
        self.norm = torch.nn.Parameter(torch.ones(H), requires_grad=False)

    def forward(self, ids):
        T = ids.shape[1]
        inv = 1.0 / THETA ** (torch.arange(0, D, 2, dtype=torch.float32) / D)
        ang = torch.outer(torch.arange(T, dtype=torch.float32), inv)
        cos, sin = torch.cat((ang, ang), -1).cos(), torch.cat((ang, ang), -1).sin()
        mask = torch.full((T, T), float("-inf")).triu(1)
        h = F.embedding(ids, self.embed)
        for layer in self.layers:
            h = layer(h, cos, sin, mask)
        logits = F.linear(rms_norm(h, self.norm), self.embed)  # tied LM head
        return F.cross_entropy(logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = Model()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    ids = torch.randint(3, V, (1, args.seq))

    def step():
        loss = model(ids)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    for _ in range(args.warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    ms = (time.perf_counter() - t0) * 1000 / args.steps
    print(f"SmolLM2-135M LoRA 1x{args.seq}: {ms:.0f} ms/step, loss {loss:.3f}", file=sys.stderr)
    # What the step rests on: torch's matmul speed here and the BLAS it loaded (Debian's torch
    # calls whichever libblas.so.3 the alternatives system points at; netlib's is ~10x slower than OpenBLAS).
    a, w = torch.randn(args.seq, H), torch.randn(I, H)
    a @ w.t()
    t0 = time.perf_counter()
    a @ w.t()
    mm = 2 * args.seq * H * I / (time.perf_counter() - t0)
    with open("/proc/self/maps") as f:
        blas = sorted({line.split()[-1] for line in f if "blas" in line.split()[-1].lower()})
    print(json.dumps({"ms_per_step": ms, "torch": torch.__version__, "threads": torch.get_num_threads(), "seq": args.seq, "steps": args.steps,
                      "warmup": args.warmup, "loss": loss, "matmul_flops_per_s": mm, "blas": blas}))


if __name__ == "__main__":
    main()
