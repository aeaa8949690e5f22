/**
 * bitsandbytes' quantisation, bit for bit: NF4 / FP4 in blocks of 64 with one float32 absmax each
 * (two codes a byte, first value in the high nibble), double quantisation of those absmax values
 * with the signed 8-bit dynamic map, and 8-bit rows (LLM.int8()'s vector-wise quantisation
 * without outlier columns). Pure TypeScript, no tfjs: the host quantises a weight as it streams in.
 *
 * The rules are bitsandbytes-foundation/bitsandbytes' (main, read 2026-08), file and function
 * named at each. Where its CUDA kernel and its pure-PyTorch backend (backends/default/ops.py)
 * disagree, this follows the CUDA kernel (csrc/kernels.cu), what `load_in_4bit` runs on a GPU:
 * - an all-zero 4-bit block: the kernel multiplies 0 by 1/0 = inf, and the NaN falls through both
 *   decision trees to code 0 (the default backend clamps absmax to 1e-38 and gets NF4 code 7);
 *   the value is 0 either way;
 * - FP4's thresholds are the kernel's float32 literals (five of seven 1 to 14 ulps from the
 *   midpoints the default backend uses) and a tie goes towards zero; near 0 the kernel keeps the
 *   sign bit of x, where the default backend swaps the +0 and -0 codes;
 * - 8 bits: a value exactly on a float32 midpoint of the map goes to the even index (dQuantize's
 *   search), where the default backend's bucketize takes the lower one;
 * - a partial last block is scaled by the reciprocal of its absmax like every other block (the
 *   default backend divides there).
 * `tests/reference/bnb_golden.py` re-implements the same rules in PyTorch, counts every one of
 * these differences against a copy of the default backend, and writes the fixtures
 * `tests/unit/quant.test.ts` compares with.
 *
 * Two more things are not bit-reproducible in bitsandbytes itself, so they are fixed here:
 * - the kernel's `1.0f / absmax` and `127 / absmax` are compiled with --use_fast_math (approximate
 *   reciprocal and division, within an ulp or two); this uses IEEE float32 division, as the default
 *   backend does;
 * - the double-quantisation offset is `absmax.mean()`, a float32 reduction whose summation order
 *   depends on the device; this is the float64 sum in index order over n, rounded to float32.
 */

export type FourBitType = 'nf4' | 'fp4';

const fround = Math.fround;

/** functional.py get_4bit_type("nf4"): the 16 NF4 levels, code order = value order. */
export const NF4_CODEBOOK: Float32Array = Float32Array.from([
  -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
  -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
  0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
  0.7229568362236023, 1.0,
]);

/**
 * functional.py get_4bit_type("fp4"): [0, 0.0625, 8, 12, 4, 6, 2, 3] / 12 in bit-pattern order
 * (1 sign bit, 2 exponent bits, 1 mantissa bit), then the same negated: code 8 is -0.
 */
export const FP4_CODEBOOK: Float32Array = Float32Array.from(
  [0, 0.0625, 8, 12, 4, 6, 2, 3, -0, -0.0625, -8, -12, -4, -6, -2, -3].map((v) => fround(v / 12)),
);

export const CODEBOOKS: Readonly<Record<FourBitType, Float32Array>> = { nf4: NF4_CODEBOOK, fp4: FP4_CODEBOOK };

/**
 * csrc/kernels.cu dQuantizeNF4's thresholds (float32 literals). They are exactly the float32
 * midpoints of neighbouring levels, so the tree is "nearest level", and since it asks `x > t`, a
 * value exactly on a midpoint takes the lower level.
 */
const NF4_T = [
  -0.8480964004993439, -0.6106329262256622, -0.4599952697753906, -0.33967943489551544,
  -0.23460740596055984, -0.13791173323988914, -0.045525018125772476, 0.03979014977812767,
  0.1202552504837513, 0.2035212516784668, 0.2920137718319893, 0.3893125355243683,
  0.5016634166240692, 0.6427869200706482, 0.8614784181118011,
].map(fround);

/** csrc/kernels.cu dQuantizeNF4, branch for branch; NaN (an all-zero block) falls through to 0. */
function nf4Code(x: number): number {
  const t = NF4_T;
  if (x > t[7]) {
    if (x > t[11]) {
      if (x > t[13]) return x > t[14] ? 0b1111 : 0b1110;
      return x > t[12] ? 0b1101 : 0b1100;
    }
    if (x > t[9]) return x > t[10] ? 0b1011 : 0b1010;
    return x > t[8] ? 0b1001 : 0b1000;
  }
  if (x > t[3]) {
    if (x > t[5]) return x > t[6] ? 0b0111 : 0b0110;
    return x > t[4] ? 0b0101 : 0b0100;
  }
  if (x > t[1]) return x > t[2] ? 0b0011 : 0b0010;
  return x > t[0] ? 0b0001 : 0b0000;
}

/**
 * csrc/kernels.cu dQuantizeFP4's thresholds on |x| (float32 literals), between neighbouring
 * magnitudes 0, 1/192, 2/12, 3/12, 4/12, 6/12, 8/12, 1. Five of the seven are not the float32
 * midpoints: 0.00260417 is 14 ulps above, 0.583333 6 below, the others 1 below.
 */
const FP4_T = [0.00260417, 0.0859375, 0.20833333, 0.29166667, 0.4166667, 0.583333, 0.8333333].map(fround);

/**
 * csrc/kernels.cu dQuantizeFP4: the sign bit is x < 0 (so -0 and tiny negatives keep code 8 + …),
 * then a tree on |x| asking `|x| > t`: a value exactly on a threshold takes the smaller magnitude.
 */
function fp4Code(x: number): number {
  const sign = x < 0 ? 0b1000 : 0;
  const a = Math.abs(x);
  const t = FP4_T;
  if (a > t[3]) {
    if (a > t[5]) return (a > t[6] ? 0b0011 : 0b0010) + sign;
    return (a > t[4] ? 0b0101 : 0b0100) + sign;
  }
  if (a > t[1]) return (a > t[2] ? 0b0111 : 0b0110) + sign;
  return (a > t[0] ? 0b0001 : 0b0000) + sign;
}

const FOUR_BIT_BLOCKSIZES = [32, 64, 128, 256, 512, 1024, 2048, 4096];

function checkBlocksize(blocksize: number, allowed: readonly number[] | null, where: string): void {
  const ok = allowed ? allowed.includes(blocksize) : Number.isInteger(blocksize) && blocksize > 0;
  if (!ok) throw new Error(`${where}: invalid blocksize ${blocksize}`);
}

/** The largest |v| of values[begin, end) (0 for an all-zero block). */
function blockAbsmax(values: Float32Array, begin: number, end: number): number {
  let m = 0;
  for (let i = begin; i < end; i++) {
    const a = Math.abs(values[i]);
    if (a > m) m = a;
  }
  return m;
}

/**
 * functional.py quantize_4bit → csrc/kernels.cu kQuantizeBlockwise / kQuantizeBlockwiseSmall
 * (NF4 / FP4). `values` is the weight flattened row-major; each block of `blocksize` gets
 * absmax = max |v| and each value the code of fround(v · fround(1 / absmax)). A partial last block
 * is loaded padded with zeros, which changes no absmax; with an odd count the last byte's low
 * nibble is the padding zero's code (NF4 7, FP4 0; 0 in an all-zero block). Two codes a byte,
 * the first value in the high nibble; `packed` has ⌈n/2⌉ bytes (bitsandbytes stores it as
 * uint8 [⌈n/2⌉, 1]), `absmax` ⌈n/blocksize⌉ float32 values.
 */
export function quantize4bit(values: Float32Array, type: FourBitType, blocksize = 64): { packed: Uint8Array; absmax: Float32Array } {
  checkBlocksize(blocksize, FOUR_BIT_BLOCKSIZES, 'quantize4bit');
  const code = type === 'nf4' ? nf4Code : fp4Code;
  const n = values.length;
  const blocks = Math.ceil(n / blocksize);
  const absmax = new Float32Array(blocks);
  const packed = new Uint8Array(Math.ceil(n / 2));
  for (let b = 0; b < blocks; b++) {
    const begin = b * blocksize;
    const end = Math.min(begin + blocksize, n);
    const m = blockAbsmax(values, begin, end);
    absmax[b] = m;
    const inv = fround(1 / m);
    // blocksize is even, so a block starts on a byte; i + 1 past the end is the padding zero.
    for (let i = begin; i < end; i += 2) {
      const hi = code(fround(values[i] * inv));
      const lo = code(fround((i + 1 < end ? values[i + 1] : 0) * inv));
      packed[i >> 1] = (hi << 4) | lo;
    }
  }
  return { packed, absmax };
}

/**
 * functional.py dequantize_4bit → kDequantizeBlockwise: value i = fround(level[code i] ·
 * absmax[⌊i / blocksize⌋]), in float32 (bitsandbytes then casts to the weight's dtype).
 */
export function dequantize4bit(packed: Uint8Array, absmax: Float32Array, type: FourBitType, numel: number, blocksize = 64): Float32Array {
  checkBlocksize(blocksize, FOUR_BIT_BLOCKSIZES, 'dequantize4bit');
  if (packed.length < Math.ceil(numel / 2) || absmax.length < Math.ceil(numel / blocksize)) {
    throw new Error(`dequantize4bit: ${packed.length} bytes and ${absmax.length} absmax values cannot hold ${numel} values`);
  }
  const levels = CODEBOOKS[type];
  const out = new Float32Array(numel);
  for (let i = 0; i < numel; i++) {
    const byte = packed[i >> 1];
    out[i] = levels[i & 1 ? byte & 15 : byte >> 4] * absmax[Math.floor(i / blocksize)];
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The 8-bit dynamic map and blockwise 8-bit quantisation

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** The float32 next to x (a float32, finite, nonzero) away from zero (+1) or towards it (-1). */
function stepFloat32(x: number, away: 1 | -1): number {
  f32[0] = x;
  u32[0] += away;
  return f32[0];
}

/**
 * fround(a · b + c) with one rounding, for float32 a, b, c: a · b is exact in float64 (48 bits),
 * the sum is rounded once to float64, and when that rounding landed exactly halfway between two
 * float32 values its error (TwoSum) says which way the exact sum lies.
 */
function fmaf(a: number, b: number, c: number): number {
  const p = a * b;
  const s = p + c;
  const bv = s - p;
  const err = p - (s - bv) + (c - bv);
  const r = fround(s);
  if (err === 0 || r === 0 || !Number.isFinite(r)) return r;
  const other = Math.abs(r) > Math.abs(s) ? stepFloat32(r, -1) : stepFloat32(r, 1);
  if ((r + other) / 2 !== s) return r;
  const up = Math.max(r, other);
  const down = Math.min(r, other);
  return err > 0 ? up : down;
}

/**
 * torch.linspace(start, end, steps, dtype=float32) as current torch's CPU kernel computes it on
 * x86-64 (aten/src/ATen/native/cpu/RangeFactoriesKernel.cpp, a scalar loop now that its vectorised
 * path is gone): step = (end − start) / (steps − 1) in float32, index i < steps/2 is
 * start + step·i and the rest end − step·(steps − 1 − i), each fused into one rounding (the AVX2 /
 * AVX512 builds of the kernel are compiled with FMA). The older vectorised kernel (torch 1.13)
 * differs by an ulp or two here and there; see tests/reference/README.md.
 */
function linspace32(start: number, end: number, steps: number): number[] {
  const s = fround(start);
  const e = fround(end);
  const step = fround(fround(e - s) / (steps - 1));
  const half = Math.floor(steps / 2);
  const out: number[] = [];
  for (let i = 0; i < steps; i++) out.push(i < half ? fmaf(step, i, s) : fmaf(-step, steps - 1 - i, e));
  return out;
}

/**
 * One exponent's share of the map: the midpoints of linspace(0.1, 1, count) times 10^e (and their
 * negations). torch multiplies a float32 tensor by a Python scalar in float32, so the scale is
 * fround(10^e) and each product one float32 rounding.
 */
function scaledMeans(count: number, exponent: number, signed: boolean): number[] {
  const b = linspace32(0.1, 1, count);
  const scale = fround(Number(`1e${exponent}`));
  const means: number[] = [];
  for (let k = 0; k + 1 < count; k++) means.push(fround(fround(b[k] + b[k + 1]) / 2));
  const out = means.map((m) => fround(m * scale));
  if (signed) out.push(...means.map((m) => fround(m * -scale)));
  return out;
}

/**
 * functional.py create_dynamic_map: the dynamic-exponent 8-bit data type (Dettmers, "8-Bit
 * Approximations for Parallelism in Deep Learning"), 256 float32 values sorted ascending. The
 * signed default runs from -0.99297 to 1 with 0 at index 127. Line for line, including its reuse of
 * the loop's last exponent for the "additional items" when max_exponent_bits < total_bits - 1.
 */
export function createDynamicMap(signed = true, maxExponentBits = 7, totalBits = 8): Float32Array {
  const data: number[] = [];
  const nonSignBits = totalBits - 1;
  const additionalItems = 2 ** (nonSignBits - maxExponentBits) - 1;
  for (let i = 0; i < maxExponentBits; i++) {
    const fractionItems = signed ? 2 ** (i + nonSignBits - maxExponentBits) + 1 : 2 ** (i + nonSignBits - maxExponentBits + 1) + 1;
    data.push(...scaledMeans(fractionItems, -(maxExponentBits - 1) + i, signed));
  }
  // Python's loop variable keeps its last value, i = maxExponentBits - 1, so the exponent is 0.
  if (additionalItems > 0) data.push(...scaledMeans(additionalItems + 1, 0, signed));
  data.push(0, 1);
  if (data.length !== 2 ** totalBits) {
    throw new Error(`createDynamicMap(${signed}, ${maxExponentBits}, ${totalBits}): ${data.length} values, not ${2 ** totalBits}`);
  }
  while (data.length < 256) data.push(0);
  return Float32Array.from(data.sort((a, b) => a - b));
}

/** bitsandbytes' default map for quantize_blockwise and double quantisation (signed, 7, 8). */
const DYNAMIC_MAP = createDynamicMap();

/**
 * csrc/kernels.cu dQuantize<0>: a 7-step binary search over the sorted 256-value map, then the
 * nearer of the final pivot and its neighbour against the float32 midpoint (upper + val) · 0.5.
 * The final pivot is always an even index and keeps a value exactly on the midpoint: ties go to
 * the even index. NaN (an all-zero block) goes to 0.
 */
function dynamicCode(code: Float32Array, x: number): number {
  let pivot = 127;
  let upperPivot = 255;
  let lowerPivot = 0;
  let lower = -1;
  let upper = 1;
  let val = code[pivot];
  for (let i = 64; i > 0; i >>= 1) {
    if (x > val) {
      lowerPivot = pivot;
      lower = val;
      pivot += i;
    } else {
      upperPivot = pivot;
      upper = val;
      pivot -= i;
    }
    val = code[pivot];
  }
  if (upperPivot === 255) upper = code[upperPivot];
  if (lowerPivot === 0) lower = code[lowerPivot];
  if (x > val) return x > fround(fround(upper + val) * 0.5) ? upperPivot : pivot;
  return x < fround(fround(lower + val) * 0.5) ? lowerPivot : pivot;
}

/**
 * functional.py quantize_blockwise → kQuantizeBlockwise<…, General8bit> with dQuantize<0>: per
 * block of `blocksize`, absmax = max |v| and code = the map index for fround(v · fround(1 / absmax)).
 * `code` is a sorted 256-value map (createDynamicMap()).
 */
export function quantizeBlockwise(values: Float32Array, code: Float32Array = DYNAMIC_MAP, blocksize = 4096): { codes: Uint8Array; absmax: Float32Array } {
  checkBlocksize(blocksize, null, 'quantizeBlockwise');
  if (code.length !== 256) throw new Error(`quantizeBlockwise: the map has ${code.length} values, not 256`);
  const n = values.length;
  const blocks = Math.ceil(n / blocksize);
  const absmax = new Float32Array(blocks);
  const codes = new Uint8Array(n);
  for (let b = 0; b < blocks; b++) {
    const begin = b * blocksize;
    const end = Math.min(begin + blocksize, n);
    const m = blockAbsmax(values, begin, end);
    absmax[b] = m;
    const inv = fround(1 / m);
    for (let i = begin; i < end; i++) codes[i] = dynamicCode(code, fround(values[i] * inv));
  }
  return { codes, absmax };
}

/** functional.py dequantize_blockwise → kDequantizeBlockwise: fround(code[q] · absmax[block]). */
export function dequantizeBlockwise(codes: Uint8Array, absmax: Float32Array, code: Float32Array = DYNAMIC_MAP, blocksize = 4096): Float32Array {
  checkBlocksize(blocksize, null, 'dequantizeBlockwise');
  const out = new Float32Array(codes.length);
  for (let i = 0; i < codes.length; i++) out[i] = code[codes[i]] * absmax[Math.floor(i / blocksize)];
  return out;
}

/** Double quantisation's result: what QuantState calls absmax (8-bit), state2.absmax, offset, state2.code. */
export interface DoubleQuantized {
  /** One uint8 code per 4-bit block (transformers' `weight.absmax`, dtype uint8). */
  codes: Uint8Array;
  /** float32, one per `blocksize` codes (`weight.nested_absmax`). */
  nested_absmax: Float32Array;
  /** A float32 value: the mean of the absmax values (`nested_offset` in the quant_state JSON). */
  offset: number;
  /** The signed dynamic map, 256 float32 values (`weight.nested_quant_map`). */
  quant_map: Float32Array;
}

/**
 * functional.py quantize_4bit(compress_statistics=True): offset = the mean of the absmax values,
 * then quantize_blockwise(absmax − offset, blocksize=256) with create_dynamic_map(). Each
 * absmax − offset is one float32 subtraction. The offset is the float64 sum in index order over
 * n, rounded to float32 (bitsandbytes' float32 `mean()` is device-dependent in its last bit).
 */
export function doubleQuantize(absmax: Float32Array, blocksize = 256): DoubleQuantized {
  if (absmax.length === 0) throw new Error('doubleQuantize: no absmax values');
  let sum = 0;
  for (let i = 0; i < absmax.length; i++) sum += absmax[i];
  const offset = fround(sum / absmax.length);
  const shifted = new Float32Array(absmax.length);
  for (let i = 0; i < absmax.length; i++) shifted[i] = absmax[i] - offset;
  const { codes, absmax: nested } = quantizeBlockwise(shifted, DYNAMIC_MAP, blocksize);
  return { codes, nested_absmax: nested, offset, quant_map: DYNAMIC_MAP.slice() };
}

/**
 * The absmax values back from double quantisation, as functional.py dequantize_4bit's nested
 * branch: dequantize_blockwise (fround(quant_map[code] · nested_absmax[block])) then `+= offset`
 * (a second float32 rounding).
 */
export function doubleDequantize(q: DoubleQuantized, blocksize = 256): Float32Array {
  const out = dequantizeBlockwise(q.codes, q.nested_absmax, q.quant_map, blocksize);
  for (let i = 0; i < out.length; i++) out[i] = out[i] + q.offset;
  return out;
}

// ---------------------------------------------------------------------------------------------
// 8-bit rows

/** Rounds half to even, as torch.round and CUDA's __float2int_rn. */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * backends/default/ops.py int8_vectorwise_quant with threshold 0 (csrc/kernels.cu
 * kInt8VectorQuant likewise): per row absmax = max |w| and q = round(w · fround(127 / absmax)),
 * half to even. A zero row gives 0 · inf = NaN, which both backends turn into 0 (the CUDA
 * kernel's __float2int_rn(NaN)); its absmax is 0. `values` is [rows, cols] row-major. (bitsandbytes'
 * CUDA path quantises float16 weights: to match it on a bf16 or f32 checkpoint, pass the values
 * rounded to float16 first, as transformers' load_in_8bit does when it casts the model.)
 */
export function quantizeInt8Rows(values: Float32Array, rows: number, cols: number): { codes: Int8Array; absmax: Float32Array } {
  if (values.length !== rows * cols) throw new Error(`quantizeInt8Rows: ${values.length} values are not ${rows}×${cols}`);
  const codes = new Int8Array(rows * cols);
  const absmax = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    const begin = r * cols;
    const m = blockAbsmax(values, begin, begin + cols);
    absmax[r] = m;
    const scale = fround(127 / m);
    for (let i = begin; i < begin + cols; i++) {
      const q = roundHalfEven(fround(values[i] * scale));
      codes[i] = Number.isNaN(q) ? 0 : q;
    }
  }
  return { codes, absmax };
}

/** float32(1/127), the constant int8_vectorwise_dequant multiplies by. */
const INV_127 = fround(7.874015718698502e-3);

/**
 * backends/default/ops.py int8_vectorwise_dequant: `A * stats.view(-1, 1) * 7.874015718698502e-3`,
 * i.e. w = fround(fround(q · absmax) · fround(1/127)), within an ulp of q · absmax / 127.
 */
export function dequantizeInt8Rows(codes: Int8Array, absmax: Float32Array, rows: number, cols: number): Float32Array {
  if (codes.length !== rows * cols || absmax.length !== rows) {
    throw new Error(`dequantizeInt8Rows: ${codes.length} codes and ${absmax.length} scales are not ${rows}×${cols}`);
  }
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const a = absmax[r];
    for (let i = r * cols; i < (r + 1) * cols; i++) out[i] = fround(codes[i] * a) * INV_127;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Serialisation and size

/** Python's repr of a float: shortest round-trip digits (as JavaScript's), exponent form below 1e-4 and from 1e16. */
function pythonFloatRepr(x: number): string {
  if (Number.isNaN(x)) return 'NaN';
  if (!Number.isFinite(x)) return x > 0 ? 'Infinity' : '-Infinity';
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0';
  const sign = x < 0 ? '-' : '';
  // Decimal digits d1 d2 … and exponent exp of |x| = d1.d2… × 10^exp, from String()'s shortest form.
  const str = String(Math.abs(x));
  let digits: string;
  let exp: number;
  const e = str.indexOf('e');
  if (e >= 0) {
    digits = str.slice(0, e).replace('.', '');
    exp = Number(str.slice(e + 1));
  } else {
    const [int, frac = ''] = str.split('.');
    if (int !== '0') {
      digits = int + frac;
      exp = int.length - 1;
    } else {
      const lead = frac.length - frac.replace(/^0+/, '').length;
      digits = frac.slice(lead);
      exp = -lead - 1;
    }
  }
  digits = digits.replace(/0+$/, '') || '0';
  if (exp < -4 || exp >= 16) {
    const mant = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    return `${sign}${mant}e${exp < 0 ? '-' : '+'}${String(Math.abs(exp)).padStart(2, '0')}`;
  }
  if (exp < 0) return `${sign}0.${'0'.repeat(-exp - 1)}${digits}`;
  const padded = digits.padEnd(exp + 1, '0');
  return `${sign}${padded.slice(0, exp + 1)}.${padded.slice(exp + 1) || '0'}`;
}

/** What a 4-bit weight's `quant_state.bitsandbytes__<type>` entry records besides its tensors. */
export interface QuantStateInfo {
  quant_type: FourBitType;
  blocksize: number;
  /** The weight's dtype as torch names it without "torch.": "bfloat16", "float16", "float32". */
  dtype: string;
  shape: readonly number[];
  /** Double quantisation's blocksize and offset (the nested dtype is always float32). */
  nested?: { blocksize: number; offset: number };
}

/**
 * The text of transformers' `<weight>.quant_state.bitsandbytes__nf4` (or `__fp4`) tensor, a uint8
 * tensor of these UTF-8 bytes: functional.py QuantState.as_dict(packed=True) puts the non-tensor
 * items, in this order, through utils.py pack_dict_to_tensor, i.e. Python's json.dumps (", " and
 * ": " separators, the offset as Python's float repr).
 */
export function quantStateJson(s: QuantStateInfo): string {
  const parts = [
    `"quant_type": ${JSON.stringify(s.quant_type)}`,
    `"blocksize": ${s.blocksize}`,
    `"dtype": ${JSON.stringify(s.dtype)}`,
    `"shape": [${s.shape.join(', ')}]`,
  ];
  if (s.nested) {
    parts.push(`"nested_blocksize": ${s.nested.blocksize}`, `"nested_dtype": "float32"`, `"nested_offset": ${pythonFloatRepr(s.nested.offset)}`);
  }
  return `{${parts.join(', ')}}`;
}

/** How a weight is stored: `kind` as bitsandbytes' quant types (int8 = LLM.int8() rows). */
export interface QuantStorageConfig {
  kind: FourBitType | 'int8';
  /** 4-bit only: quantise the absmax values too (bnb_4bit_use_double_quant). */
  double_quant?: boolean;
  /** 4-bit block (default 64) and double quantisation's block (default 256). */
  blocksize?: number;
  nested_blocksize?: number;
}

/**
 * Bytes per parameter of a weight of `shape` quantised as `config`, counting the tensors
 * transformers saves for it: 4-bit `weight` (⌈n/2⌉ bytes), `absmax` (float32 per block, or uint8
 * with double quantisation plus float32 `nested_absmax` per nested block, the offset, and the
 * 256-value `nested_quant_map`) and the 16-value `quant_map`; int8 `weight` (n bytes) and `SCB`
 * (float32 per row). The quant_state JSON (about 150 bytes) is left out.
 */
export function bytesPerParameter(config: QuantStorageConfig, shape: readonly number[]): number {
  const n = shape.reduce((a, b) => a * b, 1);
  if (n === 0) return 0;
  if (config.kind === 'int8') {
    const rows = shape.length > 1 ? n / shape[shape.length - 1] : 1;
    return (n + 4 * rows) / n;
  }
  const blocks = Math.ceil(n / (config.blocksize ?? 64));
  let bytes = Math.ceil(n / 2) + 16 * 4;
  if (config.double_quant) bytes += blocks + 4 * Math.ceil(blocks / (config.nested_blocksize ?? 256)) + 4 + 256 * 4;
  else bytes += 4 * blocks;
  return bytes / n;
}
