#!/usr/bin/env python3
"""bitsandbytes' quantisation re-implemented in plain PyTorch, and golden fixtures from it.

Run from the repository root with Debian's python (python3-torch, numpy; bitsandbytes itself is
not needed and not imported):

    /usr/bin/python3 -B tests/reference/bnb_golden.py

It (re)writes tests/fixtures/quant/ (quant.json and one <case>.safetensors per case); the output is
byte-for-byte deterministic. tests/reference/README.md describes the files; CI only reads them.

What is re-implemented, and from where (bitsandbytes-foundation/bitsandbytes, main, read 2026-08):
- the 4-bit codebooks: bitsandbytes/functional.py `get_4bit_type("nf4" | "fp4")`;
- 4-bit blockwise quantisation: csrc/kernels.cu `kQuantizeBlockwise` / `kQuantizeBlockwiseSmall`
  (absmax of each block, the values times the float32 reciprocal of it, the decision trees
  `dQuantizeNF4` / `dQuantizeFP4`, two codes a byte with the first value in the high nibble), called
  by functional.py `quantize_4bit`; dequantisation as `kDequantizeBlockwise` (level × absmax);
- double quantisation: functional.py `quantize_4bit(compress_statistics=True)`: offset = the mean
  of the absmax values, `quantize_blockwise(absmax - offset, blocksize=256)` with
  `create_dynamic_map()` and the 8-bit search of kernels.cu `dQuantize<0>`;
  `dequantize_blockwise` + offset to get the absmax back;
- 8-bit rows: backends/default/ops.py `int8_vectorwise_quant` (threshold 0) and
  `int8_vectorwise_dequant`;
- functional.py `QuantState.as_dict(packed=True)` + utils.py `pack_dict_to_tensor`: the
  `quant_state.bitsandbytes__<type>` JSON.

Where the CUDA kernel and bitsandbytes' pure-PyTorch backend (backends/default/ops.py) disagree,
this follows the CUDA kernel (what `load_in_4bit` runs on a GPU) and `check_against_default_backend`
counts every disagreement and asserts it is one of the documented kinds.
"""
import json
import math
import struct
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

OUT = Path(__file__).resolve().parents[1] / "fixtures" / "quant"
f32 = np.float32

# ---------------------------------------------------------------------------------------------
# Codebooks: functional.py get_4bit_type (torch.tensor(data) float32, then divided by its absmax)

NF4_DATA = [
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0,
]
FP4_DATA = [0, 0.0625, 8.0, 12.0, 4.0, 6.0, 2.0, 3.0, -0.0, -0.0625, -8.0, -12.0, -4.0, -6.0, -2.0, -3.0]


def get_4bit_type(name):
    data = torch.tensor(NF4_DATA if name == "nf4" else FP4_DATA, dtype=torch.float32)
    return data / data.abs().max()


CODEBOOK = {"nf4": get_4bit_type("nf4"), "fp4": get_4bit_type("fp4")}

# csrc/kernels.cu dQuantizeNF4: "x > t" picks the upper side, so a value exactly on a threshold
# takes the lower code. The literals are float32 constants.
NF4_TREE = [
    -0.8480964004993439, -0.6106329262256622, -0.4599952697753906, -0.33967943489551544,
    -0.23460740596055984, -0.13791173323988914, -0.045525018125772476, 0.03979014977812767,
    0.1202552504837513, 0.2035212516784668, 0.2920137718319893, 0.3893125355243683,
    0.5016634166240692, 0.6427869200706482, 0.8614784181118011,
]
# csrc/kernels.cu dQuantizeFP4: sign bit from x < 0, then a tree on |x| with these literals.
FP4_TREE = {"t0": 0.00260417, "t1": 0.0859375, "t2": 0.20833333, "t3": 0.29166667,
            "t4": 0.4166667, "t5": 0.583333, "t6": 0.8333333}


def T(v):
    return torch.tensor(v, dtype=torch.float32)


def dquantize_nf4(x):
    """kernels.cu dQuantizeNF4, transcribed branch for branch (NaN falls through to 0b0000)."""
    t = [T(v) for v in NF4_TREE]
    w = torch.where
    c = lambda v: torch.full_like(x, v, dtype=torch.int32)  # noqa: E731
    hi = w(x > t[11],
           w(x > t[13], w(x > t[14], c(15), c(14)), w(x > t[12], c(13), c(12))),
           w(x > t[9], w(x > t[10], c(11), c(10)), w(x > t[8], c(9), c(8))))
    mid = w(x > t[5], w(x > t[6], c(7), c(6)), w(x > t[4], c(5), c(4)))
    lo = w(x > t[1], w(x > t[2], c(3), c(2)), w(x > t[0], c(1), c(0)))
    return w(x > t[7], hi, w(x > t[3], mid, lo))


def dquantize_fp4(x):
    """kernels.cu dQuantizeFP4, transcribed (sign = x < 0; |x| compared with "> t")."""
    sign = torch.where(x < 0, 8, 0).to(torch.int32)
    a = x.abs()
    t = {k: T(v) for k, v in FP4_TREE.items()}
    w = torch.where
    c = lambda v: torch.full_like(a, v, dtype=torch.int32)  # noqa: E731
    big = w(a > t["t5"], w(a > t["t6"], c(0b0011), c(0b0010)), w(a > t["t4"], c(0b101), c(0b100)))
    small = w(a > t["t1"], w(a > t["t2"], c(0b0111), c(0b0110)), w(a > t["t0"], c(0b0001), c(0b0000)))
    return w(a > t["t3"], big, small) + sign


# ---------------------------------------------------------------------------------------------
# 4-bit blockwise (kQuantizeBlockwise / kQuantizeBlockwiseSmall, kDequantizeBlockwise)

def quantize_4bit(values, quant_type, blocksize=64):
    """Flat float32 values -> (packed uint8 [ceil(n/2)], absmax float32 [ceil(n/blocksize)]).

    A partial last block is loaded padded with zeros (cub BlockLoad's default 0), which changes no
    absmax; an odd count's last byte gets the padding zero's code in its low nibble. Each value is
    multiplied by 1 / absmax (one float32 reciprocal per block, as the kernel's smem_absmax_value);
    an all-zero block gives 0 * inf = NaN, which both trees send to code 0.
    """
    n = values.numel()
    blocks = -(-n // blocksize)
    padded = torch.zeros(blocks * blocksize, dtype=torch.float32)
    padded[:n] = values
    a = padded.view(blocks, blocksize)
    absmax = a.abs().amax(dim=1)
    inv = 1.0 / absmax
    scaled = (a * inv[:, None]).reshape(-1)[: n + n % 2]
    codes = dquantize_nf4(scaled) if quant_type == "nf4" else dquantize_fp4(scaled)
    codes = codes.to(torch.uint8)
    packed = (codes[0::2] << 4) | codes[1::2]
    return packed, absmax


def unpack_4bit(packed, n):
    codes = torch.empty(packed.numel() * 2, dtype=torch.int64)
    codes[0::2] = (packed >> 4).to(torch.int64)
    codes[1::2] = (packed & 0xF).to(torch.int64)
    return codes[:n]


def dequantize_4bit(packed, absmax, quant_type, n, blocksize=64):
    """kDequantizeBlockwise (NF4 / FP4): level × absmax of the value's block, one float32 product."""
    levels = CODEBOOK[quant_type][unpack_4bit(packed, n)]
    block = torch.arange(n) // blocksize
    return levels * absmax[block]


# ---------------------------------------------------------------------------------------------
# The 8-bit signed dynamic map: functional.py create_dynamic_map, with torch.linspace written out

def fma32(a, b, c):
    """float32(a * b + c) with one rounding. For the operands used here (float32 values, small
    integers) the exact result fits a float64, which is asserted, so rounding that to float32 is
    the single rounding of a fused multiply-add."""
    exact = Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c))
    assert Fraction(float(exact)) == exact
    return f32(float(exact))


def linspace32(start, end, steps):
    """torch.linspace(start, end, steps, dtype=float32) as current torch's CPU kernel computes it on
    x86-64 (aten/src/ATen/native/cpu/RangeFactoriesKernel.cpp, a scalar loop now that its vectorised
    path is gone): step = (end - start) / (steps - 1) in float32; index i < steps // 2 is
    start + step * i, the rest end - step * (steps - 1 - i). The AVX2 / AVX512 builds of that kernel
    are compiled with FMA and the compiler fuses each into one rounding (`check_linspace_model`
    shows the same fusion reproduces this machine's torch bit for bit).
    """
    start, end = f32(start), f32(end)
    step = f32(f32(end - start) / f32(steps - 1))
    half = steps // 2
    return [fma32(step, f32(i), start) if i < half else fma32(-step, f32(steps - 1 - i), end) for i in range(steps)]


def create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8):
    """functional.py create_dynamic_map, line for line (including its reuse of the loop's last i
    for the additional items), with linspace32 in place of torch.linspace."""
    data = []
    non_sign_bits = total_bits - 1
    additional_items = 2 ** (non_sign_bits - max_exponent_bits) - 1
    i = 0
    for i in range(max_exponent_bits):
        fraction_items = int(
            2 ** (i + non_sign_bits - max_exponent_bits) + 1
            if signed
            else 2 ** (i + non_sign_bits - max_exponent_bits + 1) + 1,
        )
        data += scaled_means(fraction_items, max_exponent_bits, i, signed)
    if additional_items > 0:
        data += scaled_means(additional_items + 1, max_exponent_bits, i, signed)
    data.append(0)
    data.append(1.0)
    assert len(data) == 2**total_bits
    data += [0] * (256 - len(data))
    data.sort()
    return torch.tensor(data, dtype=torch.float32)


def scaled_means(count, max_exponent_bits, i, signed):
    """`(10 ** e) * means` (and its negation): torch multiplies a float32 tensor by a Python
    scalar in float32, so the scale is float32(10 ** e) and each product one float32 rounding."""
    b = linspace32(0.1, 1, count)
    means = [f32(f32(b[k] + b[k + 1]) / f32(2.0)) for k in range(count - 1)]
    scale = f32(10 ** (-(max_exponent_bits - 1) + i))
    out = [float(f32(m * scale)) for m in means]
    if signed:
        out += [float(f32(m * -scale)) for m in means]
    return out


def check_linspace_model():
    """This machine's torch (Debian's 1.13, AVX2) still has the older vectorised linspace: full
    8-float vectors from a fused base (start + step * idx) plus k * step, the rest scalar and fused.
    Modelling that with the same fusion reproduces torch.linspace bit for bit, which is the evidence
    that the fused form in linspace32 is how these kernels round. Printed, not asserted: another
    torch build runs another kernel."""
    def torch113(start, end, n, width=8):
        start, end = f32(start), f32(end)
        step = f32(f32(end - start) / f32(n - 1))
        half = n // 2

        def base(i):
            return fma32(step, f32(i), start) if i < half else fma32(-step, f32(n - 1 - i), end)
        out, i = [], 0
        while i <= n - 2 * width:
            for j in (i, i + width):
                b = base(j)
                out += [b] + [f32(b + f32(f32(k) * step)) for k in range(1, width)]
            i += 2 * width
        return out + [base(j) for j in range(i, n)]
    same = all(
        np.array_equal(torch.linspace(0.1, 1, n, dtype=torch.float32).numpy(), np.array(torch113(0.1, 1, n), dtype=f32))
        for n in range(2, 300)
    )
    real = create_dynamic_map_with_torch_linspace()
    ours = create_dynamic_map()
    ulps = (real.numpy().view(np.int32).astype(np.int64) - ours.numpy().view(np.int32).astype(np.int64))
    print(f"torch {torch.__version__}: linspace(0.1, 1, n) for n in 2..299 "
          f"{'equals' if same else 'does NOT equal'} the fused vectorised model; "
          f"bitsandbytes' create_dynamic_map run on this torch differs from the current-torch map in "
          f"{int((real != ours).sum())} of 256 entries, by at most {int(np.abs(ulps).max())} float32 ulp")


def create_dynamic_map_with_torch_linspace():
    """functional.py create_dynamic_map verbatim (this machine's torch.linspace)."""
    data = []
    for i in range(7):
        boundaries = torch.linspace(0.1, 1, 2**i + 1, dtype=torch.float32)
        means = (boundaries[:-1] + boundaries[1:]) / 2.0
        data += ((10 ** (-6 + i)) * means).tolist()
        data += (-(10 ** (-6 + i)) * means).tolist()
    data += [0, 1.0]
    data.sort()
    return torch.tensor(data, dtype=torch.float32)


DYNAMIC_MAP = create_dynamic_map()


# ---------------------------------------------------------------------------------------------
# 8-bit blockwise with a 256-value map (kQuantizeBlockwise<..., General8bit> + dQuantize<0>)

def dquantize_8bit(code, x):
    """kernels.cu dQuantize<0>, transcribed: a 7-step binary search over the sorted map, then the
    nearer of the final pivot and its neighbour, comparing with float32 midpoints
    (upper + val) * 0.5f. The final pivot is always an even index and a value exactly on a
    midpoint keeps it: ties go to the even index."""
    code = code.numpy()
    x = f32(x)
    pivot, upper_pivot, lower_pivot = 127, 255, 0
    lower, upper = f32(-1.0), f32(1.0)
    val = code[pivot]
    i = 64
    while i > 0:
        if x > val:
            lower_pivot, lower = pivot, val
            pivot += i
        else:
            upper_pivot, upper = pivot, val
            pivot -= i
        val = code[pivot]
        i >>= 1
    if upper_pivot == 255:
        upper = code[upper_pivot]
    if lower_pivot == 0:
        lower = code[lower_pivot]
    if x > val:
        return upper_pivot if x > f32(f32(upper + val) * f32(0.5)) else pivot
    return lower_pivot if x < f32(f32(lower + val) * f32(0.5)) else pivot


def quantize_blockwise(values, code, blocksize):
    """(uint8 codes [n], absmax float32 [ceil(n/blocksize)]); no padding is stored for 8 bits."""
    n = values.numel()
    blocks = -(-n // blocksize)
    absmax = torch.stack([values[b * blocksize:(b + 1) * blocksize].abs().max() for b in range(blocks)])
    inv = 1.0 / absmax
    scaled = values * inv[torch.arange(n) // blocksize]
    codes = torch.tensor([dquantize_8bit(code, v) for v in scaled.tolist()], dtype=torch.uint8)
    return codes, absmax


def dequantize_blockwise(codes, absmax, code, blocksize):
    return code[codes.to(torch.int64)] * absmax[torch.arange(codes.numel()) // blocksize]


def mean_offset(absmax):
    """The double-quantisation offset. bitsandbytes takes `absmax.mean()`, a float32 reduction
    whose summation order depends on the device (CUDA tree, CPU vector width), so its last bit is
    not reproducible across machines; the fixture fixes it as the float64 sum in index order,
    divided by n, rounded to float32."""
    s = 0.0
    for v in absmax.tolist():
        s += v
    return torch.tensor(s / absmax.numel(), dtype=torch.float32)


def double_quantize(absmax, blocksize=256):
    offset = mean_offset(absmax)
    shifted = absmax - offset
    codes, nested_absmax = quantize_blockwise(shifted, DYNAMIC_MAP, blocksize)
    return codes, nested_absmax, offset


def double_dequantize(codes, nested_absmax, offset, blocksize=256):
    """functional.py dequantize_4bit's nested branch: dequantize_blockwise(...) then `+= offset`."""
    return dequantize_blockwise(codes, nested_absmax, DYNAMIC_MAP, blocksize) + offset


# ---------------------------------------------------------------------------------------------
# 8-bit rows (backends/default/ops.py int8_vectorwise_quant / int8_vectorwise_dequant)

def int8_rows(a):
    """row absmax; q = round(w * (127 / absmax)), half to even (torch.round; the CUDA kernel's
    __float2int_rn likewise). A zero row gives 0 * inf = NaN, which becomes 0 (explicitly here: the
    default backend's NaN-to-int8 cast is 0 on x86, the CUDA kernel's __float2int_rn(NaN) is 0)."""
    absmax = a.abs().amax(dim=1)
    q = torch.round(a * (127.0 / absmax)[:, None])
    q = torch.where(torch.isnan(q), torch.zeros_like(q), q)
    return q.to(torch.int8), absmax


def int8_rows_dequant(q, absmax):
    """`A * stats.view(-1, 1) * 7.874015718698502e-3`: two float32 products, the second by
    float32(1/127)."""
    return q.to(torch.float32) * absmax[:, None] * 7.874015718698502e-3


# ---------------------------------------------------------------------------------------------
# QuantState.as_dict(packed=True) -> pack_dict_to_tensor(non-tensor items) = json.dumps(...)

def quant_state_json(quant_type, blocksize, dtype, shape, nested_offset=None):
    d = {"quant_type": quant_type, "blocksize": blocksize, "dtype": dtype, "shape": list(shape)}
    if nested_offset is not None:
        d.update({"nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": float(nested_offset)})
    return json.dumps(d)


# ---------------------------------------------------------------------------------------------
# bitsandbytes' pure-PyTorch backend (backends/default/ops.py), copied, to count where it differs

def default_quantize_4bit(A, blocksize, quant_type):
    code = CODEBOOK[quant_type]
    order = torch.argsort(code)
    bounds = (code[order[:-1]] + code[order[1:]]) / 2
    A_flat = A.reshape(-1).float()
    n = A_flat.numel()
    rem = n % blocksize
    full = n - rem
    blocks = full // blocksize
    A_com = A_flat[:full].reshape(blocks, blocksize)
    absmax = A_com.abs().max(dim=-1)[0]
    scaled = torch.clamp(A_com * (1.0 / absmax.clamp(min=1e-38).view(-1, 1)), -1, 1).reshape(-1)
    if rem:
        am = A_flat[full:].abs().max().clamp(min=1e-38)
        absmax = torch.cat([absmax, am.unsqueeze(0)])
        scaled = torch.cat([scaled, torch.clamp(A_flat[full:] / am, -1, 1)])
    if scaled.numel() % 2:
        scaled = torch.nn.functional.pad(scaled, (0, 1))
    q = torch.bucketize(scaled, bounds, out_int32=True)
    if quant_type != "nf4":
        q = order[q.long()]  # torch 1.13 cannot index with int32
    return q.to(torch.uint8), absmax, scaled


def default_quantize_blockwise(A, code, blocksize):
    A_flat = A.reshape(-1).float()
    n = A_flat.numel()
    rem = n % blocksize
    full = n - rem
    blocks = full // blocksize
    A_com = A_flat[:full].reshape(blocks, blocksize)
    absmax = A_com.abs().max(dim=-1)[0]
    scaled = torch.clamp(A_com * (1.0 / absmax.clamp(min=1e-38).view(-1, 1)), -1, 1).reshape(-1)
    if rem:
        am = A_flat[full:].abs().max().clamp(min=1e-38)
        absmax = torch.cat([absmax, am.unsqueeze(0)])
        scaled = torch.cat([scaled, torch.clamp(A_flat[full:] / am, -1, 1)])
    bounds = (code[:-1] + code[1:]) / 2
    q = torch.bucketize(scaled, bounds, out_int32=True).to(torch.uint8)
    return q, absmax, scaled


def check_against_default_backend(name, values, blocksize=64):
    """Our (CUDA-kernel) codes vs the default backend's, value by value. Allowed differences:
    - all-zero block: kernel 0 * inf = NaN -> code 0 (NF4 -1.0, FP4 +0; value 0 either way), default 0 -> code 7 / 0;
    - FP4 near zero: the default backend's sorted FP4 codebook has -0 and +0 side by side, so it
      swaps the two zero codes for |x| < 0.0026 (value 0 either way);
    - FP4 on the kernel's thresholds: five of its literals (0.00260417, 0.20833333, 0.29166667,
      0.583333, 0.8333333) are 14, 1, 1, 6 and 1 ulps from the float32 midpoints the default
      backend uses, and
      negative ties go towards zero in the kernel (sign-magnitude) but towards -inf in bucketize;
    - a partial last block: the default backend divides by absmax where the kernel multiplies by
      its reciprocal (one ulp apart at most).
    Returns the number of differing codes per kind."""
    counts = {}
    for qt in ("nf4", "fp4"):
        packed, absmax = quantize_4bit(values, qt, blocksize)
        ours = unpack_4bit(packed, values.numel() + values.numel() % 2)
        theirs, absmax_d, scaled = default_quantize_4bit(values, blocksize, qt)
        nonzero = absmax > 0
        assert torch.equal(absmax[nonzero], absmax_d[nonzero]), f"{name} {qt}: absmax"
        n = values.numel()
        full = n - n % blocksize
        diff = (ours != theirs.to(torch.int64)).nonzero().flatten().tolist()
        zero_block = lambda i: float(absmax[min(i, n - 1) // blocksize]) == 0.0  # noqa: E731
        kinds = {"zero_block": 0, "fp4_zero_sign": 0, "fp4_threshold": 0, "partial_block_division": 0}
        for i in diff:
            x = float(scaled[i])
            level_ours = float(CODEBOOK[qt][ours[i]])
            level_theirs = float(CODEBOOK[qt][int(theirs[i])])
            if zero_block(i):
                kinds["zero_block"] += 1
            elif qt == "fp4" and level_ours == 0.0 and level_theirs == 0.0:
                kinds["fp4_zero_sign"] += 1
            elif qt == "fp4" and near_fp4_threshold(x):
                kinds["fp4_threshold"] += 1
            elif i >= full:
                kinds["partial_block_division"] += 1
            else:
                raise AssertionError(f"{name} {qt}: value {i} ({x!r}) code {int(ours[i])} vs default {int(theirs[i])}")
        counts[qt] = {k: v for k, v in kinds.items() if v}
    return counts


def near_fp4_threshold(x):
    a = abs(f32(x))
    for t in FP4_TREE.values():
        lo, hi = sorted([f32(t), fp4_midpoint_near(t)])
        if lo <= a <= hi:
            return True
    return False


def fp4_midpoint_near(t):
    pos = sorted(set(abs(v) for v in CODEBOOK["fp4"].tolist()))
    mids = [f32(f32(f32(pos[k]) + f32(pos[k + 1])) / f32(2)) for k in range(len(pos) - 1)]
    return min(mids, key=lambda m: abs(float(m) - t))


def check_blockwise_against_default(name, values, blocksize):
    """8 bits: the kernel's search equals the default backend's bucketize except on exact float32
    midpoints (kernel: even index; bucketize: lower index) and in a partial last block (division)."""
    ours, absmax = quantize_blockwise(values, DYNAMIC_MAP, blocksize)
    theirs, absmax_d, scaled = default_quantize_blockwise(values, DYNAMIC_MAP, blocksize)
    mids = ((DYNAMIC_MAP[:-1] + DYNAMIC_MAP[1:]) * 0.5).tolist()
    n = values.numel()
    full = n - n % blocksize
    ties = other = 0
    for i in (ours != theirs).nonzero().flatten().tolist():
        if float(scaled[i]) in mids:
            ties += 1
        elif i >= full:
            other += 1
        else:
            raise AssertionError(f"{name}: 8-bit value {i} code {int(ours[i])} vs default {int(theirs[i])}")
    return {k: v for k, v in (("midpoint_tie", ties), ("partial_block_division", other)) if v}


# ---------------------------------------------------------------------------------------------
# Assertions about the rules themselves

def check_rules():
    nf4 = CODEBOOK["nf4"]
    # The NF4 tree's literals are exactly the float32 midpoints of the codebook, so the tree is
    # "nearest level, a tie to the lower level" for every non-NaN input.
    mids = (nf4[:-1] + nf4[1:]) / 2
    assert torch.equal(mids, T(NF4_TREE)), "NF4 thresholds"
    # FP4: the kernel's dequantisation table (fp4_dequantization_lut) equals get_4bit_type("fp4").
    lut = [0.0, 0.005208333333, 0.66666667, 1.0, 0.33333333, 0.5, 0.16666667, 0.25]
    assert torch.equal(T(lut + [-v for v in lut]), CODEBOOK["fp4"]), "FP4 table"
    # The FP4 tree sends each level to itself.
    assert torch.equal(dquantize_fp4(CODEBOOK["fp4"])[1:8], torch.arange(1, 8, dtype=torch.int32))
    assert torch.equal(dquantize_nf4(nf4), torch.arange(16, dtype=torch.int32))
    # dQuantize<0>: every float32 midpoint goes to the even index of its pair, all else to the nearest.
    dm = DYNAMIC_MAP
    dmids = (dm[:-1] + dm[1:]) * 0.5
    for k in range(255):
        assert dquantize_8bit(dm, float(dmids[k])) == (k if k % 2 == 0 else k + 1)
    gen = torch.Generator().manual_seed(7)
    xs = torch.rand(4000, generator=gen) * 2 - 1
    near = torch.bucketize(xs, dmids)
    assert all(dquantize_8bit(dm, float(x)) == int(q) for x, q in zip(xs, near))
    # The dynamic map: 256 sorted values, -0.99297 .. 1, zero at index 127.
    assert dm.numel() == 256 and torch.all(dm[1:] > dm[:-1]) and float(dm[127]) == 0.0 and float(dm[255]) == 1.0


# ---------------------------------------------------------------------------------------------
# Cases

def case_normal():
    g = torch.Generator().manual_seed(20260801)
    return "normal_64x128", (64, 128), torch.randn(64, 128, generator=g) * 0.05


def case_odd():
    # 303 values: a partial last block of 47, and an odd count, so the last byte's low nibble is
    # the padding zero's code.
    g = torch.Generator().manual_seed(20260802)
    return "odd_3x101", (3, 101), torch.randn(3, 101, generator=g)


def case_large():
    # 96 x 200 = 19200 values: 300 blocks of 64, so the absmax values make 2 blocks of 256 for
    # double quantisation (the second partial). Row scales spread over two decades.
    g = torch.Generator().manual_seed(20260803)
    scale = torch.exp(torch.randn(96, 1, generator=g)) * 0.02
    return "large_96x200", (96, 200), torch.randn(96, 200, generator=g) * scale


def nudge(x, direction):
    return float(np.nextafter(f32(x), f32(direction * np.inf)))


def case_edge():
    """8 rows of 64, one 4-bit block each (see README)."""
    nf4 = CODEBOOK["nf4"].tolist()
    nf4_mids = ((CODEBOOK["nf4"][:-1] + CODEBOOK["nf4"][1:]) / 2).tolist()
    rows = []
    rows.append([0.0] * 64)  # all-zero block
    r = [1.0] + nf4_mids + [nudge(m, 1) for m in nf4_mids] + [nudge(m, -1) for m in nf4_mids]
    r += [-0.0, 0.0] + nf4[1:-1]  # the levels themselves
    rows.append(r[:64] if len(r) >= 64 else r + [0.5] * (64 - len(r)))
    pos = sorted(set(abs(v) for v in CODEBOOK["fp4"].tolist()))
    fp4_mids = [float(f32(f32(f32(pos[k]) + f32(pos[k + 1])) / f32(2))) for k in range(len(pos) - 1)]
    lits = [float(f32(v)) for v in FP4_TREE.values()]
    r = [1.0] + lits + [-v for v in lits] + fp4_mids + [-v for v in fp4_mids]
    r += [nudge(v, 1) for v in lits] + [-nudge(v, 1) for v in lits]
    r += [1e-3, -1e-3, -1.0]
    rows.append(r + [0.25] * (64 - len(r)))
    g = torch.Generator().manual_seed(20260804)
    u = (torch.rand(64, generator=g) * 6 - 3).tolist()
    u[5] = -3.0  # absmax 3 from a negative value: the reciprocal is not exact
    rows.append(u)
    r = [0.0] * 64
    r[17] = 1e-30  # one tiny nonzero value in a block of zeros
    r[40] = -0.0
    rows.append(r)
    g = torch.Generator().manual_seed(20260805)
    u = (torch.rand(64, generator=g) * 0.2 - 0.1).tolist()
    u[0], u[1], u[2] = 0.1, -0.1, 0.09999999
    rows.append(u)
    rows.append([-0.5] * 64)  # constant negative block: every value is -absmax
    # int8 ties: absmax 127 makes 127 / absmax exactly 1, so k + 0.5 is an exact tie.
    r = [127.0, 0.5, 1.5, 2.5, 3.5, -0.5, -1.5, -2.5, 126.5, -126.5, 63.5, -64.5, 0.0]
    g = torch.Generator().manual_seed(20260806)
    rows.append(r + (torch.rand(64 - len(r), generator=g) * 250 - 125).tolist())
    x = torch.tensor(rows, dtype=torch.float32)
    assert x.shape == (8, 64)
    return "edge_8x64", (8, 64), x


def blockwise_ties_values():
    """For quantize_blockwise with the dynamic map, blocksize 256: block 0 is 1.0 and the 255
    float32 midpoints (absmax 1, so each is compared as it is); block 1 the midpoints' float32
    neighbours on either side (every other one, with -1.0 first); block 2 a partial block of 100
    seeded normals."""
    dm = DYNAMIC_MAP
    mids = ((dm[:-1] + dm[1:]) * 0.5).tolist()
    b0 = [1.0] + mids
    b1 = [-1.0]
    for k in range(0, 255, 2):
        b1 += [nudge(mids[k], 1), nudge(mids[k + 1] if k + 1 < 255 else mids[k], -1)]
    b1 = b1[:256]
    g = torch.Generator().manual_seed(20260807)
    b2 = torch.randn(100, generator=g).tolist()
    return torch.tensor(b0 + b1 + b2, dtype=torch.float32)


# ---------------------------------------------------------------------------------------------
# Output

def save_safetensors(path, tensors):
    """Own writer (Debian has no python3-safetensors): header padded with spaces to a multiple of
    8, __metadata__ {"format": "pt"}, tensors in name order, contiguous offsets. A value is a
    tensor, or a (dtype, shape, raw bytes) tuple written as it is."""
    header = {"__metadata__": {"format": "pt"}}
    blobs, offset = [], 0
    for name in sorted(tensors):
        if isinstance(tensors[name], tuple):  # (dtype, shape, raw bytes) as stored, e.g. BF16 copied across
            dtype, shape, data = tensors[name]
        else:
            t = tensors[name].detach().contiguous().cpu()
            kinds = {torch.float32: ("F32", "<f4"), torch.uint8: ("U8", "u1"), torch.int8: ("I8", "i1")}
            dtype, np_type = kinds[t.dtype]
            data = t.numpy().astype(np_type).tobytes()
            shape = t.shape
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for b in blobs:
            f.write(b)


def floats(t):
    return [float(v) for v in t.reshape(-1).tolist()]


def run_case(name, shape, x, dequantized=("nf4", "fp4"), double_dequantized=("nf4", "fp4"), int8_dequantized=True):
    """Quantises one case every way and writes <name>.safetensors; the dequantised tensors named
    in the arguments are stored too (all for the small cases, a few for the larger ones)."""
    flat = x.reshape(-1).contiguous()
    n = flat.numel()
    tensors = {"input": x.contiguous()}
    meta = {"shape": list(shape), "numel": n}
    for qt in ("nf4", "fp4"):
        packed, absmax = quantize_4bit(flat, qt)
        tensors[f"{qt}.packed"] = packed
        tensors[f"{qt}.absmax"] = absmax
        codes, nested_absmax, offset = double_quantize(absmax)
        tensors[f"{qt}.nested_codes"] = codes
        tensors[f"{qt}.nested_absmax"] = nested_absmax
        absmax_dq = double_dequantize(codes, nested_absmax, offset)
        tensors[f"{qt}.absmax_dequantized"] = absmax_dq
        if qt in dequantized:
            tensors[f"{qt}.dequantized"] = dequantize_4bit(packed, absmax, qt, n)
        if qt in double_dequantized:
            tensors[f"{qt}.double_dequantized"] = dequantize_4bit(packed, absmax_dq, qt, n)
        err = (dequantize_4bit(packed, absmax, qt, n) - flat).abs() / absmax[torch.arange(n) // 64].clamp(min=1e-30)
        meta[qt] = {
            "nested_offset": float(offset),
            "torch_float32_mean": float(absmax.mean()),
            "quant_state": quant_state_json(qt, 64, "float32", shape, offset),
            "quant_state_plain": quant_state_json(qt, 64, "bfloat16", shape),
            "max_error_over_absmax": float(err.max()),
            "absmax_double_max_relative_error": float(((absmax_dq - absmax).abs() / absmax.clamp(min=1e-30)).max()),
        }
    q, rows_absmax = int8_rows(x.reshape(shape[0], -1))
    tensors["int8.codes"] = q
    tensors["int8.absmax"] = rows_absmax
    if int8_dequantized:
        tensors["int8.dequantized"] = int8_rows_dequant(q, rows_absmax)
    meta["default_backend_differences"] = check_against_default_backend(name, flat)
    meta["default_backend_differences"]["nested"] = {}
    for qt in ("nf4", "fp4"):
        absmax = quantize_4bit(flat, qt)[1]
        meta["default_backend_differences"]["nested"][qt] = check_blockwise_against_default(name, absmax - mean_offset(absmax), 256)
    save_safetensors(OUT / f"{name}.safetensors", tensors)
    return meta


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    check_rules()
    check_linspace_model()
    out = {
        "codebooks": {"nf4": floats(CODEBOOK["nf4"]), "fp4": floats(CODEBOOK["fp4"])},
        "dynamic_maps": {
            f"{s}_{e}_{b}": floats(create_dynamic_map(s, e, b))
            for s, e, b in [(True, 7, 8), (False, 7, 8), (True, 4, 8), (True, 3, 4)]
        },
        "blocksize": 64,
        "nested_blocksize": 256,
        "cases": {},
    }
    name, shape, x = case_normal()
    out["cases"][name] = run_case(name, shape, x, double_dequantized=())
    for name, shape, x in [case_odd(), case_edge()]:
        out["cases"][name] = run_case(name, shape, x)
    name, shape, x = case_large()
    out["cases"][name] = run_case(name, shape, x, dequantized=(), double_dequantized=("nf4",), int8_dequantized=False)

    ties = blockwise_ties_values()
    codes, absmax = quantize_blockwise(ties, DYNAMIC_MAP, 256)
    save_safetensors(OUT / "blockwise_ties.safetensors", {
        "input": ties,
        "codes": codes,
        "absmax": absmax,
        "dequantized": dequantize_blockwise(codes, absmax, DYNAMIC_MAP, 256),
    })
    out["blockwise_ties"] = {"numel": ties.numel(), "blocksize": 256,
                             "default_backend_differences": check_blockwise_against_default("blockwise_ties", ties, 256)}

    # json.dumps' float formatting for the offset (Python's repr), on float32 values of all sizes.
    out["quant_state_examples"] = [
        {"offset": v, "json": quant_state_json("nf4", 64, "bfloat16", [4096, 11008], v)}
        for v in [float(f32(v)) for v in [0.0, -0.0, 1e-05, 0.0001, 0.00012345, 1.5e-07, 0.1, 0.0374, -0.0021,
                                          123.0, 12345678.0, 1e15, 1e16, 3.4028234663852886e38, 1.401298464324817e-45]]
        + [1e-05, 0.0001, 0.1, 123.0, 1e16, 1.5e16, 2.5e-300]
    ]
    lines = ["{"]
    items = list(out.items())
    for k, (key, value) in enumerate(items):
        lines.append(f"  {json.dumps(key)}: {json.dumps(value, sort_keys=True)}" + ("," if k < len(items) - 1 else ""))
    lines.append("}")
    (OUT / "quant.json").write_text("\n".join(lines) + "\n")
    for name, meta in out["cases"].items():
        print(name, "offsets", meta["nf4"]["nested_offset"], meta["fp4"]["nested_offset"],
              "default-backend differences", meta["default_backend_differences"])
    print("blockwise_ties default-backend differences", out["blockwise_ties"]["default_backend_differences"])


if __name__ == "__main__":
    main()
