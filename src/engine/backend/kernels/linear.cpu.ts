/**
 * The frozen linear's kernels on the host backends (cpu and wasm): 16-bit words widened in
 * JavaScript, then tfjs's own kernels on TensorInfos; see linear.ts for the kernels' contract.
 */
import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { f16BitsToFloat32 } from '../../io/safetensors.ts';
import type { LinearAttrs, LinearInputs, Weight16DType } from './linear.ts';

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
export function widen16(words: Int32Array, dtype: Weight16DType, out: Float32Array): void {
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

export function linearHostKernels(backendName: 'cpu' | 'wasm') {
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
