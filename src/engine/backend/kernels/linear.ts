/**
 * The frozen linear layer's two products, y = x·Wᵀ (+ b) (+ s·xa·Bᵀ) and dx = dy·W (+ s·g·A),
 * reading W as it is stored: float32; 16-bit (bfloat16 / float16) packed two values per 32-bit
 * word; or quantised as bitsandbytes stores it (QLoRA): NF4 / FP4 eight 4-bit codes per word with
 * one absmax per block of 64 values (optionally itself 8-bit quantised, "double quantisation"), or
 * int8 four per word with one absmax per row. The LoRA terms ride along in the same kernel, so a
 * LoRA-wrapped frozen linear is one dispatch per product on WebGPU, and the dequantised matrix
 * never exists there (the host kernels widen a block of rows at a time).
 *
 * Kernels (registered when this module is imported, on the backends named):
 * - `FtLinear` (webgpu, wasm, cpu): inputs {x, w, bias?, la?, lb?, ...quantisation state},
 *   attrs {wDtype, wShape, scale, nestedOffset}.
 * - `FtLinearInputGrad` (webgpu, wasm, cpu): inputs {x: dy, w, la?: g, lb?: A, ...quantisation
 *   state}, same attrs.
 * - `FtUnpack16` (webgpu, wasm, cpu): inputs {w, rows?}, attrs {wDtype, wShape} → float32 [out, in]
 *   (or the listed rows) of a 16-bit weight.
 * - `FtUnpackQuantized` (webgpu, wasm, cpu): inputs {w, rows?, ...quantisation state}, attrs
 *   {wDtype, wShape, nestedOffset} → the same for nf4 / fp4 / int8.
 * The quantisation state is `absmax` (float32), or with double quantisation `qcodes` (int32
 * words), `qabsmax` and `qmap` (float32); see `FrozenWeight`.
 * On any other backend the plain tfjs composition below runs instead; it is also the reference
 * the tests hold the kernels against.
 */
import * as tf from '@tensorflow/tfjs';
import { hasKernel, registerKernels } from './registry.ts';
import { matMul } from './matmul.ts';
import { float32ToBf16Bits, float32ToF16Bits } from '../../io/safetensors.ts';
import { NESTED_BLOCK, QUANT_BLOCK, dequantizeRange, isQuantized, linearHostKernels, resolveAbsmax, widen16 } from './linear.cpu.ts';
import { linearWebGPUKernels } from './linear.wgsl.ts';

export type WeightDType = 'float32' | 'bfloat16' | 'float16' | 'nf4' | 'fp4' | 'int8';
export type Weight16DType = 'bfloat16' | 'float16';
export type QuantizedDType = 'nf4' | 'fp4' | 'int8';

/**
 * A frozen weight [out, in] as it lives on the backend, row-major over [out, in] (value i is
 * element [floor(i / in), i % in]).
 *
 * - float32: `data` is the float32 [out, in] tensor.
 * - bfloat16 / float16: `data` is an int32 tensor of ⌈out·in / 2⌉ words, value 2j in the low 16
 *   bits of word j and value 2j+1 in the high 16 bits (WGSL's unpack2x16float order).
 * - nf4 / fp4 (bitsandbytes' 4-bit): `data` is int32 [⌈out·in / 8⌉]. bitsandbytes' packed byte k
 *   holds value 2k in its HIGH nibble and value 2k+1 in its low nibble, and bytes lie in words
 *   little-endian (byte k in bits 8·(k & 3) of word k >> 2). So value i: word i >> 3, shift
 *   8·((i >> 1) & 3) + (i & 1 ? 0 : 4), code = (word >> shift) & 15, and
 *   w = FOUR_BIT_LEVELS[dtype][code] · absmax[floor(i / 64)] (one float32 product).
 * - int8: `data` is int32 [⌈out·in / 4⌉], value i the signed byte in byte (i & 3) of word i >> 2,
 *   and w = q · absmax[row] / 127 computed as bitsandbytes' float32 `int8_vectorwise_dequant`
 *   does: `A * stats * 7.874015718698502e-3`, i.e. fround(fround(q · absmax) · INT8_INV_127) with
 *   INT8_INV_127 = fround(1 / 127) (two correctly rounded products, so WGSL gives the same bits;
 *   a true division by 127 differs from it by at most an ulp).
 */
export interface FrozenWeight {
  readonly data: tf.Tensor;
  readonly dtype: WeightDType;
  readonly shape: [number, number];
  /**
   * nf4/fp4: float32 [⌈out·in / 64⌉], one per block of 64 values of the row-major flattened
   * weight; int8: float32 [out], one per row. Absent when `nested` holds them.
   */
  readonly absmax?: tf.Tensor;
  /**
   * nf4/fp4 with double quantisation: the block absmax values as 8-bit codes,
   * absmax[b] = map[code[b]] · nestedAbsmax[floor(b / 256)] + offset, in float32 in that order
   * (the product rounded, then the sum).
   */
  readonly nested?: {
    /** int32 words, code b in byte (b & 3) of word b >> 2, little-endian. */
    codes: tf.Tensor;
    /** float32 [⌈blocks / 256⌉]. */
    absmax: tf.Tensor;
    /** float32 [256]. */
    map: tf.Tensor;
    offset: number;
  };
}

// The layout's constants live with the JavaScript reference (linear.cpu.ts, which imports only
// types from here, so either module may be imported first).
export { FOUR_BIT_LEVELS, INT8_INV_127, NESTED_BLOCK, QUANT_BLOCK, isQuantized } from './linear.cpu.ts';

/** The LoRA term fused into the forward product: y += scale · xa·Bᵀ. */
export interface LoraForward {
  /** [N, r] = dropout(x)·Aᵀ. */
  xa: tf.Tensor2D;
  /** [out, r]. */
  B: tf.Tensor2D;
  scale: number;
}

/** The LoRA term fused into the input gradient: dx += scale · g·A. */
export interface LoraInputGrad {
  /** [N, r] = dy·B. */
  g: tf.Tensor2D;
  /** [r, in]. */
  A: tf.Tensor2D;
  scale: number;
}

export const FT_LINEAR = 'FtLinear';
export const FT_LINEAR_INPUT_GRAD = 'FtLinearInputGrad';
export const FT_UNPACK16 = 'FtUnpack16';
export const FT_UNPACK_QUANTIZED = 'FtUnpackQuantized';

export function frozenWeightF32(t: tf.Tensor2D): FrozenWeight {
  return { data: t, dtype: 'float32', shape: [t.shape[0], t.shape[1]] };
}

/** Packs 16-bit values (row-major [out, in]) into a FrozenWeight; an odd count pads a zero half-word. */
export function packWeight16(bits: Uint16Array, shape: [number, number], dtype: Weight16DType): FrozenWeight {
  const count = shape[0] * shape[1];
  if (bits.length !== count) throw new Error(`packWeight16: ${bits.length} values for shape [${shape.join(', ')}]`);
  const words = new Int32Array((count + 1) >> 1);
  // Little-endian hosts (every browser and Node target) lay u16 pairs out exactly as the words want.
  new Uint16Array(words.buffer, 0, count).set(bits);
  return { data: tf.tensor1d(words, 'int32'), dtype, shape: [shape[0], shape[1]] };
}

/** The host-side arrays of a quantised weight, laid out as `FrozenWeight` describes. */
export interface QuantizedWeightHost {
  dtype: QuantizedDType;
  shape: [number, number];
  words: Int32Array;
  absmax?: Float32Array;
  nested?: { codes: Int32Array; absmax: Float32Array; map: Float32Array; offset: number };
}

/** Uploads a quantised weight (words and its absmax or nested state) as a FrozenWeight. */
export function packQuantizedWeight(host: QuantizedWeightHost): FrozenWeight {
  const { dtype, shape, words, absmax, nested } = host;
  const count = shape[0] * shape[1];
  const perWord = dtype === 'int8' ? 4 : 8;
  const where = `packQuantizedWeight(${dtype} [${shape.join(', ')}])`;
  if (!isQuantized(dtype)) throw new Error(`${where}: not a quantised dtype`);
  if (words.length !== Math.ceil(count / perWord)) throw new Error(`${where}: ${words.length} words, expected ${Math.ceil(count / perWord)}`);
  const scales = dtype === 'int8' ? shape[0] : Math.ceil(count / QUANT_BLOCK);
  if ((absmax == null) === (nested == null)) throw new Error(`${where}: give exactly one of absmax and nested`);
  if (absmax && absmax.length !== scales) throw new Error(`${where}: ${absmax.length} absmax values, expected ${scales}`);
  if (nested) {
    if (dtype === 'int8') throw new Error(`${where}: int8 has no double quantisation`);
    if (nested.codes.length !== Math.ceil(scales / 4)) throw new Error(`${where}: ${nested.codes.length} nested code words, expected ${Math.ceil(scales / 4)}`);
    if (nested.absmax.length !== Math.ceil(scales / NESTED_BLOCK)) throw new Error(`${where}: ${nested.absmax.length} nested absmax values, expected ${Math.ceil(scales / NESTED_BLOCK)}`);
    if (nested.map.length !== 256) throw new Error(`${where}: a nested map of ${nested.map.length} values, expected 256`);
  }
  return {
    data: tf.tensor1d(words, 'int32'),
    dtype,
    shape: [shape[0], shape[1]],
    ...(absmax ? { absmax: tf.tensor1d(absmax, 'float32') } : {}),
    ...(nested
      ? {
          nested: {
            codes: tf.tensor1d(nested.codes, 'int32'),
            absmax: tf.tensor1d(nested.absmax, 'float32'),
            map: tf.tensor1d(nested.map, 'float32'),
            offset: nested.offset,
          },
        }
      : {}),
  };
}

/** Disposes every tensor of a frozen weight: its data and any absmax or nested state. */
export function disposeFrozenWeight(w: FrozenWeight): void {
  w.data.dispose();
  w.absmax?.dispose();
  if (w.nested) {
    w.nested.codes.dispose();
    w.nested.absmax.dispose();
    w.nested.map.dispose();
  }
}

/** The kernels' extra inputs for a quantised weight (none for the other dtypes). */
function quantInputs(w: FrozenWeight): tf.NamedTensorMap {
  if (w.nested) return { qcodes: w.nested.codes, qabsmax: w.nested.absmax, qmap: w.nested.map };
  return w.absmax ? { absmax: w.absmax } : {};
}

function weightAttrs(w: FrozenWeight) {
  return { wDtype: w.dtype, wShape: w.shape, nestedOffset: w.nested ? Math.fround(w.nested.offset) : 0 };
}

/** float32 values → bf16 / f16 bits, rounding to nearest even (for tests and converters). */
export function float32ToBits16(values: ArrayLike<number>, dtype: Weight16DType): Uint16Array {
  const convert = dtype === 'bfloat16' ? float32ToBf16Bits : float32ToF16Bits;
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = convert(values[i]);
  return out;
}

/**
 * Rows `indices` of a packed matrix [rows, cols] (16-bit: cols even) widened to float32
 * [n, cols]: an embedding lookup that reads only the rows it returns.
 */
export function gatherWeightRows(w: FrozenWeight, indices: tf.Tensor1D): tf.Tensor2D {
  if (w.dtype === 'float32') return tf.gather(w.data, indices) as tf.Tensor2D;
  if (isQuantized(w.dtype)) {
    if (!hasKernel(FT_UNPACK_QUANTIZED)) return tf.tidy(() => tf.gather(unpackWeight(w), indices) as tf.Tensor2D);
    return tf.engine().runKernel(FT_UNPACK_QUANTIZED, { w: w.data, rows: indices, ...quantInputs(w) }, weightAttrs(w)) as tf.Tensor2D;
  }
  if (w.shape[1] % 2 !== 0) throw new Error(`gatherWeightRows: a 16-bit matrix needs an even row length, not ${w.shape[1]}`);
  return tf.engine().runKernel(FT_UNPACK16, { w: w.data, rows: indices }, { wDtype: w.dtype, wShape: w.shape }) as tf.Tensor2D;
}

/** The weight as a float32 [out, in] tensor (the caller disposes it unless it is `w.data` itself). */
export function unpackWeight(w: FrozenWeight): tf.Tensor2D {
  if (w.dtype === 'float32') return w.data as tf.Tensor2D;
  const quantized = isQuantized(w.dtype);
  if (hasKernel(quantized ? FT_UNPACK_QUANTIZED : FT_UNPACK16)) {
    const inputs = { w: w.data, ...quantInputs(w) };
    return tf.engine().runKernel(quantized ? FT_UNPACK_QUANTIZED : FT_UNPACK16, inputs, weightAttrs(w)) as tf.Tensor2D;
  }
  // Any other backend: widen on the host. Synchronous readback, but correct everywhere it can read.
  const out = new Float32Array(w.shape[0] * w.shape[1]);
  if (isQuantized(w.dtype)) {
    const n = w.nested;
    const absmax = resolveAbsmax(
      w.dtype,
      w.shape,
      w.absmax?.dataSync() as Float32Array | undefined,
      n ? { codes: n.codes.dataSync() as Int32Array, absmax: n.absmax.dataSync() as Float32Array, map: n.map.dataSync() as Float32Array, offset: Math.fround(n.offset) } : undefined,
    );
    dequantizeRange(w.data.dataSync() as Int32Array, w.dtype, absmax, w.shape[1], 0, out);
  } else {
    widen16(w.data.dataSync() as Int32Array, w.dtype, out);
  }
  return tf.tensor2d(out, w.shape);
}

/** y = x·Wᵀ (+ bias) (+ lora.scale · lora.xa·lora.Bᵀ): x [N, in], W [out, in] → [N, out]. */
export function linearForward(x: tf.Tensor2D, w: FrozenWeight, bias?: tf.Tensor1D, lora?: LoraForward): tf.Tensor2D {
  if (!hasKernel(FT_LINEAR)) return linearForwardComposed(x, w, bias, lora);
  const inputs: tf.Tensor[] = [x];
  if (bias) inputs.push(bias);
  if (lora) inputs.push(lora.xa, lora.B);
  // The kernel has no registered gradient, so its gradient is spelled out here: d/dx through our
  // own input-gradient kernel, the rest with plain ops (W is frozen and gets none).
  const op = tf.customGrad(() => {
    const named: tf.NamedTensorMap = { x, w: w.data, ...quantInputs(w) };
    if (bias) named.bias = bias;
    if (lora) {
      named.la = lora.xa;
      named.lb = lora.B;
    }
    const attrs = { ...weightAttrs(w), scale: lora?.scale ?? 0 };
    const value = tf.engine().runKernel(FT_LINEAR, named, attrs) as tf.Tensor2D;
    const gradFunc = (dy: tf.Tensor2D): tf.Tensor[] => {
      const grads: tf.Tensor[] = [linearInputGrad(dy, w)];
      if (bias) grads.push(tf.sum(dy, 0));
      if (lora) {
        grads.push(tf.mul(tf.matMul(dy, lora.B), lora.scale));
        grads.push(tf.mul(matMul(dy, lora.xa, true, false) as tf.Tensor2D, lora.scale));
      }
      return grads;
    };
    return { value, gradFunc };
  });
  return op(...inputs) as tf.Tensor2D;
}

/** dx = dy·W (+ lora.scale · lora.g·lora.A): dy [N, out], W [out, in] → [N, in]. */
export function linearInputGrad(dy: tf.Tensor2D, w: FrozenWeight, lora?: LoraInputGrad): tf.Tensor2D {
  if (!hasKernel(FT_LINEAR_INPUT_GRAD)) return linearInputGradComposed(dy, w, lora);
  const named: tf.NamedTensorMap = { x: dy, w: w.data, ...quantInputs(w) };
  if (lora) {
    named.la = lora.g;
    named.lb = lora.A;
  }
  const attrs = { ...weightAttrs(w), scale: lora?.scale ?? 0 };
  return tf.engine().runKernel(FT_LINEAR_INPUT_GRAD, named, attrs) as tf.Tensor2D;
}

/** The forward product as plain tfjs ops on the widened weight: the fallback and the reference. */
export function linearForwardComposed(x: tf.Tensor2D, w: FrozenWeight, bias?: tf.Tensor1D, lora?: LoraForward): tf.Tensor2D {
  return tf.tidy(() => {
    let y = tf.matMul(x, unpackWeight(w), false, true);
    if (bias) y = tf.add(y, bias);
    if (lora) y = tf.add(y, tf.mul(tf.matMul(lora.xa, lora.B, false, true), lora.scale));
    return y as tf.Tensor2D;
  });
}

/** The input gradient as plain tfjs ops on the widened weight: the fallback and the reference. */
export function linearInputGradComposed(dy: tf.Tensor2D, w: FrozenWeight, lora?: LoraInputGrad): tf.Tensor2D {
  return tf.tidy(() => {
    let dx = tf.matMul(dy, unpackWeight(w));
    if (lora) dx = tf.add(dx, tf.mul(tf.matMul(lora.g, lora.A), lora.scale));
    return dx as tf.Tensor2D;
  });
}



/** A quantised weight's extra inputs: its absmax, or the nested codes, absmax and map. */
export interface QuantInputs {
  absmax?: tf.TensorInfo;
  qcodes?: tf.TensorInfo;
  qabsmax?: tf.TensorInfo;
  qmap?: tf.TensorInfo;
}

/** The inputs of FtLinear / FtLinearInputGrad: x (or dy), w, the optional bias and LoRA pair, and a quantised weight's state. */
export interface LinearInputs extends QuantInputs {
  x: tf.TensorInfo;
  w: tf.TensorInfo;
  bias?: tf.TensorInfo;
  la?: tf.TensorInfo;
  lb?: tf.TensorInfo;
}

export interface LinearAttrs {
  wDtype: WeightDType;
  wShape: [number, number];
  scale: number;
  /** The nested offset (float32) of a double-quantised weight; 0 otherwise. */
  nestedOffset: number;
}

registerKernels(
  (['cpu', 'wasm', 'webgpu'] as const).flatMap((backendName) => {
    const k = backendName === 'webgpu' ? linearWebGPUKernels() : linearHostKernels(backendName);
    return [
      { kernelName: FT_LINEAR, backendName, kernelFunc: k.forward as tf.KernelFunc },
      { kernelName: FT_LINEAR_INPUT_GRAD, backendName, kernelFunc: k.inputGrad as tf.KernelFunc },
      { kernelName: FT_UNPACK16, backendName, kernelFunc: k.unpack16 as tf.KernelFunc },
      { kernelName: FT_UNPACK_QUANTIZED, backendName, kernelFunc: k.unpackQuantized as tf.KernelFunc },
    ];
  }),
);
