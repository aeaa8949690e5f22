#!/usr/bin/env python3
"""Pre-quantised bitsandbytes 4-bit model folders, as transformers' save_pretrained writes them
after `load_in_4bit`, made with the PyTorch re-implementation of bitsandbytes in bnb_golden.py.

Run from the repository root with Debian's python (python3-torch, numpy):

    /usr/bin/python3 -B tests/reference/bnb_folder_golden.py

It (re)writes tests/fixtures/quant/<case>/{config.json, model.safetensors}, byte-for-byte
deterministic; CI only reads them. The tests load each folder (with a tokenizer from elsewhere)
and compare it with quantising the original on the fly, and `finetune quantize`'s output with it
tensor by tensor.

What transformers saves for a Linear4bit `P` (bitsandbytes nn/modules.py Linear4bit
_save_to_state_dict, functional.py QuantState.as_dict(packed=True)):
- `P.weight`: the packed codes, uint8 [ceil(n/2), 1] (functional.py quantize_4bit's `out`);
- `P.weight.absmax`: float32 [blocks], or uint8 [blocks] with double quantisation;
- `P.weight.quant_map`: float32 [16];
- double quantisation: `P.weight.nested_absmax` float32 [ceil(blocks/256)],
  `P.weight.nested_quant_map` float32 [256];
- `P.weight.quant_state.bitsandbytes__<nf4|fp4>`: uint8, json.dumps of quant_type, blocksize,
  dtype, shape (+ nested_blocksize, nested_dtype, nested_offset).
Only the decoder layers' q/k/v/o/gate/up/down projections are Linear4bit (transformers keeps the
embeddings, norms and lm_head as they were); config.json gains BitsAndBytesConfig.to_dict() as
`quantization_config`.
"""
import json
import struct
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bnb_golden as bg  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "fixtures" / "quant"
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
TORCH_NAMES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}


def read_safetensors(path):
    """name -> (dtype, shape, raw bytes), in header order."""
    b = Path(path).read_bytes()
    n = struct.unpack("<Q", b[:8])[0]
    header = json.loads(b[8:8 + n])
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        begin, end = e["data_offsets"]
        out[name] = (e["dtype"], e["shape"], b[8 + n + begin: 8 + n + end])
    return out


def to_float32(dtype, raw):
    if dtype == "F32":
        return torch.from_numpy(np.frombuffer(raw, dtype="<f4").copy())
    if dtype == "BF16":
        bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return torch.from_numpy(bits.view(np.float32).copy())
    if dtype == "F16":
        return torch.from_numpy(np.frombuffer(raw, dtype="<f2").astype(np.float32))
    raise ValueError(dtype)


def f32_bytes(t):
    return t.detach().contiguous().numpy().astype("<f4").tobytes()


def is_projection(name):
    parts = name.split(".")
    return (len(parts) == 6 and parts[0] == "model" and parts[1] == "layers" and parts[3] in ("self_attn", "mlp")
            and parts[4] in PROJECTIONS and parts[5] == "weight")


def quantization_config(quant_type, double_quant, compute_dtype):
    """transformers BitsAndBytesConfig(load_in_4bit=True, ...).to_dict(), keys sorted."""
    return {
        "_load_in_4bit": True,
        "_load_in_8bit": False,
        "bnb_4bit_compute_dtype": compute_dtype,
        "bnb_4bit_quant_storage": "uint8",
        "bnb_4bit_quant_type": quant_type,
        "bnb_4bit_use_double_quant": double_quant,
        "llm_int8_enable_fp32_cpu_offload": False,
        "llm_int8_has_fp16_weight": False,
        "llm_int8_skip_modules": None,
        "llm_int8_threshold": 6.0,
        "load_in_4bit": True,
        "load_in_8bit": False,
        "quant_method": "bitsandbytes",
    }


def quantize_folder(source, name, quant_type, double_quant):
    source = Path(source)
    weights = read_safetensors(source / "model.safetensors")
    out = {}
    counts = {}
    for wname, (dtype, shape, raw) in weights.items():
        counts[dtype] = counts.get(dtype, 0) + int(np.prod(shape))
        if not is_projection(wname):
            out[wname] = (dtype, shape, raw)
            continue
        values = to_float32(dtype, raw)
        packed, absmax = bg.quantize_4bit(values, quant_type)
        out[wname] = ("U8", [packed.numel(), 1], packed.numpy().tobytes())
        out[wname + ".quant_map"] = ("F32", [16], f32_bytes(bg.CODEBOOK[quant_type]))
        if double_quant:
            codes, nested_absmax, offset = bg.double_quantize(absmax)
            out[wname + ".absmax"] = ("U8", [codes.numel()], codes.numpy().tobytes())
            out[wname + ".nested_absmax"] = ("F32", [nested_absmax.numel()], f32_bytes(nested_absmax))
            out[wname + ".nested_quant_map"] = ("F32", [256], f32_bytes(bg.DYNAMIC_MAP))
            state = bg.quant_state_json(quant_type, 64, TORCH_NAMES[dtype], shape, offset)
        else:
            out[wname + ".absmax"] = ("F32", [absmax.numel()], f32_bytes(absmax))
            state = bg.quant_state_json(quant_type, 64, TORCH_NAMES[dtype], shape)
        raw_state = state.encode("utf-8")
        out[f"{wname}.quant_state.bitsandbytes__{quant_type}"] = ("U8", [len(raw_state)], raw_state)
    most = max(counts, key=counts.get)
    config = json.loads((source / "config.json").read_text())
    config["quantization_config"] = quantization_config(quant_type, double_quant, TORCH_NAMES[most])
    folder = OUT / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    bg.save_safetensors(folder / "model.safetensors", out)
    print(name, "tensors", len(out), "bytes", (folder / "model.safetensors").stat().st_size)


def main():
    quantize_folder(ROOT.parents[1] / "shared" / "models" / "stories260K", "stories260K-nf4-dq", "nf4", True)
    quantize_folder(ROOT / "fixtures" / "golden" / "llama_bf16", "llama_bf16-nf4-dq", "nf4", True)
    quantize_folder(ROOT / "fixtures" / "golden" / "qwen2_bf16", "qwen2_bf16-fp4", "fp4", False)


if __name__ == "__main__":
    main()
