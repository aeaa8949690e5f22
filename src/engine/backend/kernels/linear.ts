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
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import type { WebGPUBackend, WebGPUProgram } from '@tensorflow/tfjs-backend-webgpu';
import { f16BitsToFloat32, float32ToBf16Bits, float32ToF16Bits } from '../../io/safetensors.ts';

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

/** The weight as a float32 [out, in] tensor (the caller disposes it unless it is `w.data` itself). */
/**
 * Rows `indices` of a 16-bit matrix [rows, cols] (cols even) widened to float32 [n, cols]: an
 * embedding lookup that reads only the rows it returns.
 */
export function gatherWeightRows(w: FrozenWeight, indices: tf.Tensor1D): tf.Tensor2D {
  if (w.dtype === 'float32') return tf.gather(w.data, indices) as tf.Tensor2D;
  if (w.shape[1] % 2 !== 0) throw new Error(`gatherWeightRows: a 16-bit matrix needs an even row length, not ${w.shape[1]}`);
  return tf.engine().runKernel(FT_UNPACK16, { w: w.data, rows: indices }, { wDtype: w.dtype, wShape: w.shape }) as tf.Tensor2D;
}

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
        grads.push(tf.mul(matMulTransposedA(dy, lora.xa), lora.scale));
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


/** aᵀ·b without handing tfjs-wasm a transposed operand (see the wasm notes below). */
function matMulTransposedA(a: tf.Tensor2D, b: tf.Tensor2D): tf.Tensor2D {
  return tf.getBackend() === 'wasm' ? tf.matMul(tf.transpose(a), b) : tf.matMul(a, b, true, false);
}

// ---------------------------------------------------------------------------------------------
// Widening 16-bit words on the host (cpu and wasm kernels, and the fallback).

let f16Table: Float32Array | undefined;

/** All 65,536 half-precision values, built once: a lookup beats decoding per element. */
function f16Lookup(): Float32Array {
  if (f16Table == null) {
    f16Table = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) f16Table[h] = f16BitsToFloat32(h);
  }
  return f16Table;
}

/** Widens the first out.length 16-bit values of `words` into `out`. */
function widen16(words: Int32Array, dtype: Weight16DType, out: Float32Array): void {
  const n = out.length;
  const pairs = n >> 1;
  if (dtype === 'bfloat16') {
    const bits = new Uint32Array(out.buffer, out.byteOffset, n);
    for (let j = 0; j < pairs; j++) {
      const w = words[j];
      bits[2 * j] = w << 16;
      bits[2 * j + 1] = w & 0xffff0000;
    }
    if (n & 1) bits[n - 1] = words[pairs] << 16;
  } else {
    const table = f16Lookup();
    for (let j = 0; j < pairs; j++) {
      const w = words[j];
      out[2 * j] = table[w & 0xffff];
      out[2 * j + 1] = table[w >>> 16];
    }
    if (n & 1) out[n - 1] = table[words[pairs] & 0xffff];
  }
}

// ---------------------------------------------------------------------------------------------
// cpu and wasm: widen (if 16-bit), then tfjs's own kernels on TensorInfos.
//
// tfjs-wasm gives XNNPACK only untransposed products (a transposed operand takes a scalar loop),
// and XNNPACK repacks its right-hand operand unless it is the same tensor as last time. Measured
// here (tfjs-wasm 4.22, Node 20, one shared machine, so ±30%) on SmolLM2-135M's MLP shapes, N=128:
//
//                                         W [1536, 576]        W [576, 1536]
//   fwd  x·Wᵀ as matMul(x, W, false, true)   127 ms  1.8 GFLOP/s  121 ms  1.9 GFLOP/s
//   fwd  x·transpose(W), W [out, in]      15–19 ms  12–15       12–18 ms 13–18
//   fwd  transpose(W·xᵀ), W [out, in]     10–13 ms  18–23         9–10 ms 23–24
//   fwd  x·Wt, W kept as [in, out]          7.5–9 ms 26–30         7.5–9 ms 25–30
//   grad dy·W, W [out, in]                  7.5–10 ms 23–30        8–8.3 ms 27–28
//   grad transpose(Wt·dyᵀ), W [in, out]   10.5–13 ms 18–21       9.6–14 ms 16–24
//   (N=512: both forward forms of [out, in] ≈ 39 ms, kept [in, out] 30 ms, grad dy·W 31 ms.)
//
// So a kept [in, out] copy wins the forward product but loses the backward one by as much; per
// training step (one of each) [out, in] with transpose(W·xᵀ) is as fast or faster, needs no
// second layout of the model, and transposes only activations. For 16-bit weights, widened fresh
// each call, the weight on the left keeps XNNPACK from repacking it: transpose(fresh W·xᵀ)
// 10–15 ms against x·fresh Wt 12–18 ms (the widening itself: 1.5–3 ms in JS).

/** What the cpu and wasm backends both offer beyond KernelBackend's typings. */
type HostBackend = tf.KernelBackend & {
  disposeData(dataId: tf.DataId, force?: boolean): boolean;
  makeTensorInfo(shape: number[], dtype: tf.DataType, values?: Float32Array): tf.TensorInfo;
};

/** The inputs of FtLinear / FtLinearInputGrad: x (or dy), w, and the optional bias and LoRA pair. */
interface LinearInputs {
  x: tf.TensorInfo;
  w: tf.TensorInfo;
  bias?: tf.TensorInfo;
  la?: tf.TensorInfo;
  lb?: tf.TensorInfo;
}

interface LinearAttrs {
  wDtype: WeightDType;
  wShape: [number, number];
  scale: number;
}

/**
 * Widening a 16-bit weight for a host product makes a float32 copy; a large one (an LM head of a
 * 150k-word vocabulary is 136M values, 0.5 GB widened) is widened this many values at a time.
 */
const WIDEN_BLOCK = 1 << 24;

/** Row ranges [r0, r1) of W to widen and multiply one at a time: the whole of a float32 or small W. */
function rowBlocks(a: LinearAttrs): [number, number][] {
  const [out, inDim] = a.wShape;
  if (a.wDtype === 'float32' || inDim % 2 !== 0 || out * inDim <= WIDEN_BLOCK) return [[0, out]];
  const rows = Math.max(1, Math.floor(WIDEN_BLOCK / inDim));
  const blocks: [number, number][] = [];
  for (let r0 = 0; r0 < out; r0 += rows) blocks.push([r0, Math.min(out, r0 + rows)]);
  return blocks;
}

function hostKernels(backendName: 'cpu' | 'wasm') {
  const call = (name: string, backend: tf.KernelBackend, inputs: Record<string, tf.TensorInfo>, attrs: object = {}): tf.TensorInfo => {
    const kernel = tf.getKernel(name, backendName);
    if (kernel == null) throw new Error(`${backendName} has no ${name} kernel`);
    return kernel.kernelFunc({ inputs, backend, attrs: attrs as tf.NamedAttrMap }) as tf.TensorInfo;
  };
  const dispose = (backend: tf.KernelBackend, ...infos: tf.TensorInfo[]) => {
    for (const info of infos) (backend as HostBackend).disposeData(info.dataId);
  };
  const transpose = (b: tf.KernelBackend, x: tf.TensorInfo) => call(tf.Transpose, b, { x }, { perm: [1, 0] });
  const matMul = (b: tf.KernelBackend, a: tf.TensorInfo, bb: tf.TensorInfo) =>
    call(tf.BatchMatMul, b, { a, b: bb }, { transposeA: false, transposeB: false });
  const scalar = (b: tf.KernelBackend, v: number): tf.TensorInfo =>
    backendName === 'wasm'
      ? (b as unknown as BackendWasm).makeOutput([], 'float32', undefined, Float32Array.of(v))
      : (b as HostBackend).makeTensorInfo([], 'float32', Float32Array.of(v));

  const unpack = (b: tf.KernelBackend, w: tf.TensorInfo, dtype: Weight16DType, shape: [number, number]): tf.TensorInfo => {
    if (backendName === 'wasm') {
      const wasm = b as unknown as BackendWasm;
      // makeOutput may grow the heap, which detaches earlier views: take them after it.
      const out = wasm.makeOutput(shape, 'float32');
      widen16(wasm.typedArrayFromHeap(w) as Int32Array, dtype, wasm.typedArrayFromHeap(out) as Float32Array);
      return out;
    }
    const out = new Float32Array(shape[0] * shape[1]);
    widen16(b.readSync(w.dataId) as Int32Array, dtype, out);
    return (b as HostBackend).makeTensorInfo(shape, 'float32', out);
  };
  /**
   * Rows [r0, r1) of the weight as float32, and whether that is a temporary to dispose (a float32
   * weight is used whole, as it is).
   */
  const widenedRows = (b: tf.KernelBackend, w: tf.TensorInfo, a: LinearAttrs, r0: number, r1: number): [tf.TensorInfo, boolean] => {
    if (a.wDtype === 'float32') return [w, false];
    const inDim = a.wShape[1];
    if (r0 === 0 && r1 === a.wShape[0]) return [unpack(b, w, a.wDtype, a.wShape), true];
    // Blocks exist only for an even row length, so a block starts and ends on a word boundary.
    const [from, to] = [(r0 * inDim) >> 1, (r1 * inDim) >> 1];
    const shape: [number, number] = [r1 - r0, inDim];
    if (backendName === 'wasm') {
      const wasm = b as unknown as BackendWasm;
      const out = wasm.makeOutput(shape, 'float32');
      widen16((wasm.typedArrayFromHeap(w) as Int32Array).subarray(from, to), a.wDtype, wasm.typedArrayFromHeap(out) as Float32Array);
      return [out, true];
    }
    const out = new Float32Array(shape[0] * shape[1]);
    widen16((b.readSync(w.dataId) as Int32Array).subarray(from, to), a.wDtype, out);
    return [(b as HostBackend).makeTensorInfo(shape, 'float32', out), true];
  };
  const concatRows = (b: tf.KernelBackend, parts: tf.TensorInfo[]): tf.TensorInfo => {
    const kernel = tf.getKernel(tf.Concat, backendName)!;
    const out = kernel.kernelFunc({ inputs: parts as unknown as tf.NamedTensorInfoMap, backend: b, attrs: { axis: 0 } }) as tf.TensorInfo;
    dispose(b, ...parts);
    return out;
  };
  /** y += scale · term, consuming both temporaries. */
  const addScaled = (b: tf.KernelBackend, y: tf.TensorInfo, term: tf.TensorInfo, scale: number): tf.TensorInfo => {
    const s = scalar(b, scale);
    const scaled = call(tf.Multiply, b, { a: term, b: s });
    const sum = call(tf.Add, b, { a: y, b: scaled });
    dispose(b, s, scaled, term, y);
    return sum;
  };

  const forward = ({ inputs, backend: b, attrs }: { inputs: tf.NamedTensorInfoMap; backend: unknown; attrs?: tf.NamedAttrMap }) => {
    const backend = b as tf.KernelBackend;
    const a = attrs as unknown as LinearAttrs;
    const { x, w, bias, la, lb } = inputs as unknown as LinearInputs;
    // y = (W·xᵀ)ᵀ: see the measurements above. A large 16-bit W is widened a block of rows at a
    // time, each block's product one slice of yᵀ.
    const xT = transpose(backend, x);
    const parts = rowBlocks(a).map(([r0, r1]) => {
      const [W, temp] = widenedRows(backend, w, a, r0, r1);
      const part = matMul(backend, W, xT);
      if (temp) dispose(backend, W);
      return part;
    });
    const yT = parts.length === 1 ? parts[0] : concatRows(backend, parts);
    let y = transpose(backend, yT);
    dispose(backend, xT, yT);
    if (bias) {
      const withBias = call(tf.Add, backend, { a: y, b: bias });
      dispose(backend, y);
      y = withBias;
    }
    if (la && lb) {
      const bT = transpose(backend, lb);
      const term = matMul(backend, la, bT);
      dispose(backend, bT);
      y = addScaled(backend, y, term, a.scale);
    }
    return y;
  };

  const inputGrad = ({ inputs, backend: b, attrs }: { inputs: tf.NamedTensorInfoMap; backend: unknown; attrs?: tf.NamedAttrMap }) => {
    const backend = b as tf.KernelBackend;
    const a = attrs as unknown as LinearAttrs;
    const { x: dy, w, la, lb } = inputs as unknown as LinearInputs;
    let dx: tf.TensorInfo | null = null;
    for (const [r0, r1] of rowBlocks(a)) {
      const [W, temp] = widenedRows(backend, w, a, r0, r1);
      const whole = r0 === 0 && r1 === a.wShape[0];
      const dyBlock = whole ? dy : call(tf.Slice, backend, { x: dy }, { begin: [0, r0], size: [dy.shape[0], r1 - r0] });
      const part = matMul(backend, dyBlock, W);
      if (!whole) dispose(backend, dyBlock);
      if (temp) dispose(backend, W);
      if (dx === null) dx = part;
      else {
        const sum = call(tf.Add, backend, { a: dx, b: part });
        dispose(backend, dx, part);
        dx = sum;
      }
    }
    if (dx === null) throw new Error('linear input gradient of an empty weight');
    if (la && lb) dx = addScaled(backend, dx, matMul(backend, la, lb), a.scale);
    return dx;
  };

  const unpack16 = ({ inputs, backend, attrs }: { inputs: tf.NamedTensorInfoMap; backend: unknown; attrs?: tf.NamedAttrMap }) => {
    const a = attrs as unknown as LinearAttrs;
    const { w, rows } = inputs as unknown as { w: tf.TensorInfo; rows?: tf.TensorInfo };
    if (!rows) return unpack(backend as tf.KernelBackend, w, a.wDtype as Weight16DType, a.wShape);
    return gatherRows16(backend as tf.KernelBackend, w, rows, a.wDtype as Weight16DType, a.wShape[1]);
  };
  /** The listed rows of a packed [rows, cols] matrix, widened: only those rows' words are read. */
  const gatherRows16 = (b: tf.KernelBackend, w: tf.TensorInfo, rows: tf.TensorInfo, dtype: Weight16DType, cols: number): tf.TensorInfo => {
    const n = rows.shape[0];
    const widenRows = (words: Int32Array, idx: Int32Array, out: Float32Array) => {
      const row = new Float32Array(cols);
      for (let i = 0; i < n; i++) {
        const start = idx[i] * cols;
        // cols is even for every model (hidden sizes are), so a row starts on a word boundary.
        widen16(words.subarray(start >> 1, (start + cols + 1) >> 1), dtype, row);
        out.set(row, i * cols);
      }
    };
    if (backendName === 'wasm') {
      const wasm = b as unknown as BackendWasm;
      const out = wasm.makeOutput([n, cols], 'float32');
      widenRows(wasm.typedArrayFromHeap(w) as Int32Array, wasm.typedArrayFromHeap(rows) as Int32Array, wasm.typedArrayFromHeap(out) as Float32Array);
      return out;
    }
    const out = new Float32Array(n * cols);
    widenRows(b.readSync(w.dataId) as Int32Array, b.readSync(rows.dataId) as Int32Array, out);
    return (b as HostBackend).makeTensorInfo([n, cols], 'float32', out);
  };

  return { forward, inputGrad, unpack16 };
}

// ---------------------------------------------------------------------------------------------
// WebGPU: one tiled program for both products.
//
// C[N, cols] = A[N, K] · op(B) where op(B) is Bᵀ for B [cols, K] ('nt', the forward product) or B
// for B [K, cols] ('nn', the input gradient). Each workgroup (8×8 threads) computes a 32×32 tile of
// C, each thread a 4×4 block, stepping K by 16 through two tiles in workgroup memory. Loads are
// vec4 (vec2<u32> for 16-bit: four halves) along a row's contiguous axis when its length is a
// multiple of 4, scalar otherwise; out-of-range elements load as 0. The LoRA term runs the same
// loop over its own operands (K = r) into a second accumulator.

const TILE_M = 32;
const TILE_N = 32;
const TILE_K = 16;

type Layout = 'nt' | 'nn';

/** How the shader reads one operand at an element index `e` (an i32 expression). */
interface OperandCode {
  /** Whether `load` reads four elements from `e` (a multiple of 4) as a vec4<f32>; else one f32. */
  vec: boolean;
  load: (e: string) => string;
}

function f32Operand(name: string, vec: boolean): OperandCode {
  return { vec, load: (e) => (vec ? `${name}[(${e}) >> 2]` : `${name}[${e}]`) };
}

/** W is array<f32>, array<vec4<f32>>, or, packed, array<i32> or array<vec2<i32>> (four halves each). */
function weightOperand(dtype: WeightDType, vec: boolean): OperandCode {
  if (dtype === 'float32') return f32Operand('W', vec);
  return {
    vec,
    load: (e) => (vec ? `halves4(bitcast<vec2<u32>>(W[(${e}) >> 2]))` : `half16(bitcast<u32>(W[(${e}) >> 1]), ((${e}) & 1) == 1)`),
  };
}

function halfHelpers(dtype: WeightDType): string {
  if (dtype === 'float32') return '';
  const f16 = dtype === 'float16';
  return `
    fn half16(w : u32, high : bool) -> f32 {
      ${f16 ? 'let v = unpack2x16float(w); return select(v.x, v.y, high);' : 'return bitcast<f32>(select(w << 16u, w & 0xffff0000u, high));'}
    }
    fn halves4(w : vec2<u32>) -> vec4<f32> {
      ${
        f16
          ? 'return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y));'
          : 'return bitcast<vec4<f32>>(vec4<u32>(w.x << 16u, w.x & 0xffff0000u, w.y << 16u, w.y & 0xffff0000u));'
      }
    }`;
}

/** WGSL of a function filling tileA (rows of A[N, K]) and tileB (op(B) as [k][col]) at k0. */
function tileLoader(fnName: string, a: OperandCode, b: OperandCode, layout: Layout, K: string): string {
  const threads = 64;
  const loadA = a.vec
    ? `for (var s = 0; s < ${(TILE_M * TILE_K) / 4 / threads}; s++) {
        let idx = t + s * ${threads};
        let row = idx / ${TILE_K / 4};
        let kk = (idx % ${TILE_K / 4}) * 4;
        let gr = rowBase + row;
        let gk = k0 + kk;
        var v = vec4<f32>(0.0);
        if (gr < uniforms.dimN && gk < ${K}) { v = ${a.load(`gr * ${K} + gk`)}; }
        tileA[row][kk] = v.x; tileA[row][kk + 1] = v.y; tileA[row][kk + 2] = v.z; tileA[row][kk + 3] = v.w;
      }`
    : `for (var s = 0; s < ${(TILE_M * TILE_K) / threads}; s++) {
        let idx = t + s * ${threads};
        let row = idx / ${TILE_K};
        let kk = idx % ${TILE_K};
        let gr = rowBase + row;
        let gk = k0 + kk;
        var v = 0.0;
        if (gr < uniforms.dimN && gk < ${K}) { v = ${a.load(`gr * ${K} + gk`)}; }
        tileA[row][kk] = v;
      }`;
  let loadB: string;
  if (layout === 'nt') {
    // B [cols, K]: contiguous along k.
    loadB = b.vec
      ? `for (var s = 0; s < ${(TILE_N * TILE_K) / 4 / threads}; s++) {
          let idx = t + s * ${threads};
          let col = idx / ${TILE_K / 4};
          let kk = (idx % ${TILE_K / 4}) * 4;
          let gc = colBase + col;
          let gk = k0 + kk;
          var v = vec4<f32>(0.0);
          if (gc < uniforms.dimC && gk < ${K}) { v = ${b.load(`gc * ${K} + gk`)}; }
          tileB[kk][col >> 2][col & 3] = v.x;
          tileB[kk + 1][col >> 2][col & 3] = v.y;
          tileB[kk + 2][col >> 2][col & 3] = v.z;
          tileB[kk + 3][col >> 2][col & 3] = v.w;
        }`
      : `for (var s = 0; s < ${(TILE_N * TILE_K) / threads}; s++) {
          let idx = t + s * ${threads};
          let col = idx / ${TILE_K};
          let kk = idx % ${TILE_K};
          let gc = colBase + col;
          let gk = k0 + kk;
          var v = 0.0;
          if (gc < uniforms.dimC && gk < ${K}) { v = ${b.load(`gc * ${K} + gk`)}; }
          tileB[kk][col >> 2][col & 3] = v;
        }`;
  } else {
    // B [K, cols]: contiguous along cols.
    loadB = b.vec
      ? `for (var s = 0; s < ${(TILE_N * TILE_K) / 4 / threads}; s++) {
          let idx = t + s * ${threads};
          let kk = idx / ${TILE_N / 4};
          let cq = idx % ${TILE_N / 4};
          let gc = colBase + cq * 4;
          let gk = k0 + kk;
          var v = vec4<f32>(0.0);
          if (gc < uniforms.dimC && gk < ${K}) { v = ${b.load(`gk * uniforms.dimC + gc`)}; }
          tileB[kk][cq] = v;
        }`
      : `for (var s = 0; s < ${(TILE_N * TILE_K) / threads}; s++) {
          let idx = t + s * ${threads};
          let kk = idx / ${TILE_N};
          let col = idx % ${TILE_N};
          let gc = colBase + col;
          let gk = k0 + kk;
          var v = 0.0;
          if (gc < uniforms.dimC && gk < ${K}) { v = ${b.load(`gk * uniforms.dimC + gc`)}; }
          tileB[kk][col >> 2][col & 3] = v;
        }`;
  }
  return `
    fn ${fnName}(k0 : i32, t : i32, rowBase : i32, colBase : i32) {
      ${loadA}
      ${loadB}
    }`;
}

interface LinearProgramOptions {
  layout: Layout;
  wDtype: WeightDType;
  /** In features: W's row length, the axis its vec loads run along. */
  inDim: number;
  K: number;
  cols: number;
  rank: number;
  bias: boolean;
}

class FtLinearProgram implements WebGPUProgram {
  outputShape: number[];
  shaderKey: string;
  dispatchLayout = { x: [1], y: [0] };
  dispatch: [number, number, number];
  variableNames: string[];
  variableComponents: number[];
  workgroupSize: [number, number, number] = [TILE_N / 4, TILE_M / 4, 1];
  uniforms = 'dimN : i32, dimK : i32, dimC : i32, dimR : i32, scale : f32,';
  private readonly o: LinearProgramOptions;
  private readonly vec: { a: boolean; w: boolean; la: boolean; lb: boolean };

  constructor(N: number, o: LinearProgramOptions) {
    this.o = o;
    this.outputShape = [N, o.cols];
    this.dispatch = [Math.ceil(o.cols / TILE_N), Math.ceil(N / TILE_M), 1];
    const lora = o.rank > 0;
    this.vec = {
      a: o.K % 4 === 0,
      w: o.inDim % 4 === 0,
      la: lora && o.rank % 4 === 0,
      lb: lora && (o.layout === 'nt' ? o.rank : o.cols) % 4 === 0,
    };
    this.variableNames = ['X', 'W'];
    this.variableComponents = [this.vec.a ? 4 : 1, this.vec.w ? (o.wDtype === 'float32' ? 4 : 2) : 1];
    if (o.bias) {
      this.variableNames.push('Bias');
      this.variableComponents.push(1);
    }
    if (lora) {
      this.variableNames.push('LA', 'LB');
      this.variableComponents.push(this.vec.la ? 4 : 1, this.vec.lb ? 4 : 1);
    }
    const v = this.vec;
    this.shaderKey = `ftlinear_${o.layout}_${o.wDtype}_${+v.a}${+v.w}${+v.la}${+v.lb}_${+o.bias}_${+lora}`;
  }

  getUserCode(): string {
    const { o, vec } = this;
    const lora = o.rank > 0;
    const main = tileLoader('loadMain', f32Operand('X', vec.a), weightOperand(o.wDtype, vec.w), o.layout, 'uniforms.dimK');
    const side = lora ? tileLoader('loadLora', f32Operand('LA', vec.la), f32Operand('LB', vec.lb), o.layout, 'uniforms.dimR') : '';
    const loop = (load: string, K: string, acc: string) => `
      for (var k0 = 0; k0 < ${K}; k0 += ${TILE_K}) {
        ${load}(k0, t, rowBase, colBase);
        workgroupBarrier();
        for (var k = 0; k < ${TILE_K}; k++) {
          let b = tileB[k][cq];
          for (var i = 0; i < 4; i++) { ${acc}[i] = fma(vec4<f32>(tileA[r0 + i][k]), b, ${acc}[i]); }
        }
        workgroupBarrier();
      }`;
    return `
      var<workgroup> tileA : array<array<f32, ${TILE_K}>, ${TILE_M}>;
      var<workgroup> tileB : array<array<vec4<f32>, ${TILE_N / 4}>, ${TILE_K}>;
      ${halfHelpers(o.wDtype)}
      ${main}
      ${side}
      fn main() {
        let t = i32(localIndex);
        let rowBase = i32(workgroupId.y) * ${TILE_M};
        let colBase = i32(workgroupId.x) * ${TILE_N};
        let r0 = i32(localId.y) * 4;
        let cq = i32(localId.x);
        var acc : array<vec4<f32>, 4>;
        ${loop('loadMain', 'uniforms.dimK', 'acc')}
        ${
          lora
            ? `var accL : array<vec4<f32>, 4>;
        ${loop('loadLora', 'uniforms.dimR', 'accL')}
        for (var i = 0; i < 4; i++) { acc[i] = fma(vec4<f32>(uniforms.scale), accL[i], acc[i]); }`
            : ''
        }
        for (var i = 0; i < 4; i++) {
          let row = rowBase + r0 + i;
          if (row >= uniforms.dimN) { break; }
          for (var j = 0; j < 4; j++) {
            let col = colBase + cq * 4 + j;
            if (col < uniforms.dimC) {
              result[row * uniforms.dimC + col] = acc[i][j]${o.bias ? ' + Bias[col]' : ''};
            }
          }
        }
      }`;
  }
}

class FtUnpack16Program implements WebGPUProgram {
  outputShape: number[];
  shaderKey: string;
  dispatchLayout: { x: number[] };
  dispatch: [number, number, number];
  variableNames: string[];
  uniforms = 'cols : i32,';
  workgroupSize: [number, number, number] = [64, 1, 1];
  size = true;
  private readonly dtype: Weight16DType;
  private readonly gather: boolean;

  /** The whole matrix, or with `gather` the rows listed by a second input (an embedding lookup). */
  constructor(shape: [number, number], dtype: Weight16DType, gather: boolean) {
    this.outputShape = shape;
    this.dtype = dtype;
    this.gather = gather;
    this.variableNames = gather ? ['W', 'Rows'] : ['W'];
    this.dispatchLayout = { x: [0, 1] };
    const groups = Math.ceil((shape[0] * shape[1]) / this.workgroupSize[0]);
    this.dispatch = [groups, 1, 1];
    this.shaderKey = `ftunpack16_${dtype}_${gather}`;
  }

  getUserCode(): string {
    // Gathering reads whole 32-bit words by index: tfjs's own gather of an int32 tensor goes
    // through float32 on WebGPU, which rounds packed words above 2²⁴.
    const source = this.gather ? 'Rows[index / uniforms.cols] * uniforms.cols + index % uniforms.cols' : 'index';
    return `
      ${halfHelpers(this.dtype)}
      fn main(index : i32) {
        if (index < uniforms.size) {
          let e = ${source};
          result[index] = half16(bitcast<u32>(W[e >> 1]), (e & 1) == 1);
        }
      }`;
  }
}

function webgpuKernels() {
  const linear = (layout: Layout) =>
    ({ inputs, backend, attrs }: { inputs: tf.NamedTensorInfoMap; backend: unknown; attrs?: tf.NamedAttrMap }) => {
      const gpu = backend as WebGPUBackend;
      const a = attrs as unknown as LinearAttrs;
      const { x, w, bias, la, lb } = inputs as unknown as LinearInputs;
      const [out, inDim] = a.wShape;
      const N = x.shape[0];
      const K = layout === 'nt' ? inDim : out;
      const cols = layout === 'nt' ? out : inDim;
      const rank = la && lb ? la.shape[1] : 0;
      const program = new FtLinearProgram(N, { layout, wDtype: a.wDtype, inDim, K, cols, rank, bias: bias != null });
      const tensors = [x, w];
      if (bias) tensors.push(bias);
      if (la && lb) tensors.push(la, lb);
      const uniforms = [
        { type: 'int32', data: [N] },
        { type: 'int32', data: [K] },
        { type: 'int32', data: [cols] },
        { type: 'int32', data: [rank] },
        { type: 'float32', data: [a.scale] },
      ];
      return gpu.runWebGPUProgram(program, tensors, 'float32', uniforms);
    };
  const unpack16 = ({ inputs, backend, attrs }: { inputs: tf.NamedTensorInfoMap; backend: unknown; attrs?: tf.NamedAttrMap }) => {
    const a = attrs as unknown as LinearAttrs;
    const { w, rows } = inputs as unknown as { w: tf.TensorInfo; rows?: tf.TensorInfo };
    const shape: [number, number] = rows ? [rows.shape[0], a.wShape[1]] : a.wShape;
    const program = new FtUnpack16Program(shape, a.wDtype as Weight16DType, rows != null);
    return (backend as WebGPUBackend).runWebGPUProgram(program, rows ? [w, rows] : [w], 'float32', [{ type: 'int32', data: [a.wShape[1]] }]);
  };
  return { forward: linear('nt'), inputGrad: linear('nn'), unpack16 };
}

registerKernels(
  (['cpu', 'wasm', 'webgpu'] as const).flatMap((backendName) => {
    const k = backendName === 'webgpu' ? webgpuKernels() : hostKernels(backendName);
    return [
      { kernelName: FT_LINEAR, backendName, kernelFunc: k.forward as tf.KernelFunc },
      { kernelName: FT_LINEAR_INPUT_GRAD, backendName, kernelFunc: k.inputGrad as tf.KernelFunc },
      { kernelName: FT_UNPACK16, backendName, kernelFunc: k.unpack16 as tf.KernelFunc },
    ];
  }),
);
