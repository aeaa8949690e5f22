/**
 * The frozen linear layer's two products, y = x·Wᵀ (+ b) (+ s·xa·Bᵀ) and dx = dy·W (+ s·g·A),
 * reading W as it is stored: float32, or 16-bit (bfloat16 / float16) packed two values per 32-bit
 * word. The LoRA terms ride along in the same kernel, so a LoRA-wrapped frozen linear is one
 * dispatch per product on WebGPU.
 *
 * Kernels (registered when this module is imported, on the backends named):
 * - `FtLinear` (webgpu, wasm, cpu): inputs {x, w, bias?, la?, lb?}, attrs {wDtype, wShape, scale}.
 * - `FtLinearInputGrad` (webgpu, wasm, cpu): inputs {x: dy, w, la?: g, lb?: A}, same attrs.
 * - `FtUnpack16` (webgpu, wasm, cpu): inputs {w}, attrs {wDtype, wShape} → float32 [out, in].
 * On any other backend the plain tfjs composition below runs instead; it is also the reference
 * the tests hold the kernels against.
 */
import * as tf from '@tensorflow/tfjs';
import { hasKernel, registerKernels } from './registry.ts';
import { matMul } from './matmul.ts';
import { float32ToBf16Bits, float32ToF16Bits } from '../../io/safetensors.ts';
import { linearHostKernels, widen16 } from './linear.cpu.ts';
import { linearWebGPUKernels } from './linear.wgsl.ts';

export type WeightDType = 'float32' | 'bfloat16' | 'float16';
export type Weight16DType = Exclude<WeightDType, 'float32'>;

/**
 * A frozen weight [out, in] as it lives on the backend. For 16-bit storage `data` is an int32
 * tensor of ⌈out·in / 2⌉ words, element 2j in the low 16 bits of word j and element 2j+1 in the
 * high 16 bits (WGSL's unpack2x16float order), row-major over [out, in].
 */
export interface FrozenWeight {
  readonly data: tf.Tensor;
  readonly dtype: WeightDType;
  readonly shape: [number, number];
}

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

/** float32 values → bf16 / f16 bits, rounding to nearest even (for tests and converters). */
export function float32ToBits16(values: ArrayLike<number>, dtype: Weight16DType): Uint16Array {
  const convert = dtype === 'bfloat16' ? float32ToBf16Bits : float32ToF16Bits;
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = convert(values[i]);
  return out;
}

/**
 * Rows `indices` of a 16-bit matrix [rows, cols] (cols even) widened to float32 [n, cols]: an
 * embedding lookup that reads only the rows it returns.
 */
export function gatherWeightRows(w: FrozenWeight, indices: tf.Tensor1D): tf.Tensor2D {
  if (w.dtype === 'float32') return tf.gather(w.data, indices) as tf.Tensor2D;
  if (w.shape[1] % 2 !== 0) throw new Error(`gatherWeightRows: a 16-bit matrix needs an even row length, not ${w.shape[1]}`);
  return tf.engine().runKernel(FT_UNPACK16, { w: w.data, rows: indices }, { wDtype: w.dtype, wShape: w.shape }) as tf.Tensor2D;
}

/** The weight as a float32 [out, in] tensor (the caller disposes it unless it is `w.data` itself). */
export function unpackWeight(w: FrozenWeight): tf.Tensor2D {
  if (w.dtype === 'float32') return w.data as tf.Tensor2D;
  if (hasKernel(FT_UNPACK16)) {
    return tf.engine().runKernel(FT_UNPACK16, { w: w.data }, { wDtype: w.dtype, wShape: w.shape }) as tf.Tensor2D;
  }
  // Any other backend: widen on the host. Synchronous readback, but correct everywhere it can read.
  const out = new Float32Array(w.shape[0] * w.shape[1]);
  widen16(w.data.dataSync() as Int32Array, w.dtype, out);
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
    const named: tf.NamedTensorMap = { x, w: w.data };
    if (bias) named.bias = bias;
    if (lora) {
      named.la = lora.xa;
      named.lb = lora.B;
    }
    const attrs = { wDtype: w.dtype, wShape: w.shape, scale: lora?.scale ?? 0 };
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
  const named: tf.NamedTensorMap = { x: dy, w: w.data };
  if (lora) {
    named.la = lora.g;
    named.lb = lora.A;
  }
  const attrs = { wDtype: w.dtype, wShape: w.shape, scale: lora?.scale ?? 0 };
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



/** The inputs of FtLinear / FtLinearInputGrad: x (or dy), w, and the optional bias and LoRA pair. */
export interface LinearInputs {
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
}

registerKernels(
  (['cpu', 'wasm', 'webgpu'] as const).flatMap((backendName) => {
    const k = backendName === 'webgpu' ? linearWebGPUKernels() : linearHostKernels(backendName);
    return [
      { kernelName: FT_LINEAR, backendName, kernelFunc: k.forward as tf.KernelFunc },
      { kernelName: FT_LINEAR_INPUT_GRAD, backendName, kernelFunc: k.inputGrad as tf.KernelFunc },
      { kernelName: FT_UNPACK16, backendName, kernelFunc: k.unpack16 as tf.KernelFunc },
    ];
  }),
);
