#!/usr/bin/env python3
"""Reference for the output of `finetune export-trl`'s TRL job: a PEFT adapter the studio loads back.

Run from the repository root with Debian's python (python3-torch, numpy):

    /usr/bin/python3 -B tests/reference/trl_job_adapter.py

It writes tests/fixtures/trl/job_adapter/: adapter_config.json and adapter_model.safetensors laid
out as PEFT 0.19.1's save_pretrained writes them when TRL 1.9.0's trainer.save_model(output_dir)
ends a LoRA job of stories260K (peft r 8, lora_alpha 16, use_rslora, "all-linear"), and
expected.json: the logits of stories260K with that adapter on fixed token ids. No PEFT package is
needed (Debian has none): the layout is written by hand from PEFT 0.19.1's source —
adapter_config.json is LoraConfig.to_dict() (every field of LoraConfig and PeftConfig but
runtime_config) as json.dumps(indent=2, sort_keys=True) without a final newline; "all-linear" is
saved as the module names it resolved to, in a set's order; the tensors are float32 (PEFT keeps
adapter weights in float32 under bf16 training) under base_model.model.<module>.lora_{A,B}.weight.
B is random and nonzero, as after training, so the adapter changes the logits. The output is
byte-for-byte deterministic. tests/unit/trl_job.test.ts loads it with loadAdapter and compares.
"""
import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_golden as mg  # noqa: E402  (Llama + LoRA, safetensors reader/writer; one thread, deterministic)

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT.parent / "shared" / "models" / "stories260K"
OUT = ROOT / "tests" / "fixtures" / "trl" / "job_adapter"

R, ALPHA = 8, 16
SCALING = ALPHA / math.sqrt(R)  # use_rslora
SEED = 1909
B_STD = 0.01
IDS = [1, 403, 407, 261, 378, 29]
# The order a Python set of these names happens to iterate in: PEFT saves target_modules as list(set).
TARGET_MODULES = ["down_proj", "o_proj", "k_proj", "up_proj", "q_proj", "gate_proj", "v_proj"]

# PEFT 0.19.1's LoraConfig.to_dict() for LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05,
# target_modules="all-linear", use_rslora=True, bias="none", task_type="CAUSAL_LM") after the model
# was wrapped and saved: base_model_name_or_path from the model, inference_mode True on save.
ADAPTER_CONFIG = {
    "alora_invocation_tokens": None,
    "alpha_pattern": {},
    "arrow_config": None,
    "auto_mapping": None,
    "base_model_name_or_path": "stories260K",
    "bias": "none",
    "corda_config": None,
    "ensure_weight_tying": False,
    "eva_config": None,
    "exclude_modules": None,
    "fan_in_fan_out": False,
    "inference_mode": True,
    "init_lora_weights": True,
    "layer_replication": None,
    "layers_pattern": None,
    "layers_to_transform": None,
    "loftq_config": {},
    "lora_alpha": ALPHA,
    "lora_bias": False,
    "lora_dropout": 0.05,
    "lora_ga_config": None,
    "megatron_config": None,
    "megatron_core": "megatron.core",
    "modules_to_save": None,
    "peft_type": "LORA",
    "peft_version": "0.19.1",
    "qalora_group_size": 16,
    "r": R,
    "rank_pattern": {},
    "revision": None,
    "target_modules": TARGET_MODULES,
    "target_parameters": None,
    "task_type": "CAUSAL_LM",
    "trainable_token_indices": None,
    "use_bdlora": None,
    "use_dora": False,
    "use_qalora": False,
    "use_rslora": True,
}


def main():
    cfg = json.loads((MODEL / "config.json").read_text())
    assert cfg["model_type"] == "llama" and cfg["rope_scaling"] is None and cfg["tie_word_embeddings"] is True
    W = mg.load_safetensors(MODEL / "model.safetensors")
    g = torch.Generator().manual_seed(SEED)
    lora = {}
    for name, o, n in mg.linear_shapes(cfg):
        bound = 1.0 / math.sqrt(n)
        A = (torch.rand(R, n, generator=g) * 2 - 1) * bound
        B = torch.randn(o, R, generator=g) * B_STD
        lora[name] = (A, B)
    ids = torch.tensor([IDS])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        base = mg.forward(cfg, W, ids, mask)
        tuned = mg.forward(cfg, W, ids, mask, lora=lora, scaling=SCALING)
    assert (tuned - base).abs().max().item() > 0.05, "the adapter must visibly change the logits"

    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "adapter_config.json").write_text(json.dumps(ADAPTER_CONFIG, indent=2, sort_keys=True))
    mg.save_safetensors(OUT / "adapter_model.safetensors", mg.adapter_tensors(lora))
    back = mg.load_safetensors(OUT / "adapter_model.safetensors")
    assert all(torch.equal(back[k], v) for k, v in mg.adapter_tensors(lora).items())
    expected = {"ids": IDS, "scaling": SCALING, "logits": tuned[0].tolist()}
    (OUT.parent / "job_adapter_expected.json").write_text(json.dumps(expected) + "\n")
    print(f"wrote {OUT} (max |adapter - base| logit {(tuned - base).abs().max().item():.4f})")


if __name__ == "__main__":
    main()
