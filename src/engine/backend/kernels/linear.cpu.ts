/**
 * The frozen linear's kernels on the host backends (cpu and wasm): 16-bit or quantised words
 * widened in JavaScript (the reference dequantisation), then tfjs's own kernels on TensorInfos;
 * see linear.ts for the kernels' contract.
 */
import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { f16BitsToFloat32 } from '../../io/safetensors.ts';
import type { LinearAttrs, LinearInputs, QuantInputs, QuantizedDType, Weight16DType, WeightDType } from './linear.ts';

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
// The quantised layouts' constants (re-exported by linear.ts, which documents the layouts).

/** float32(1 / 127): int8 values are fround(q · absmax) times this (see FrozenWeight). */
export const INT8_INV_127 = Math.fround(1 / 127);

/** Values per absmax block of the 4-bit formats, and blocks per nested-absmax block. */
export const QUANT_BLOCK = 64;
export const NESTED_BLOCK = 256;

/**
 * The 4-bit codebooks (float32 values), indexed by code. NF4 is bitsandbytes' normal-float table.
 * FP4 is bitsandbytes' FP4 (E2M1, bias 3, subnormal 0.0625) scaled so its largest magnitude is 1,
 * as its kernels dequantise it (csrc `fp4_dequantization_lut` / `dDequantizeFP4Tree`): code bit 3
 * is the sign, bits 0–2 index [0, 1/192, 2/3, 1, 1/3, 1/2, 1/6, 1/4] (the table bitsandbytes'
 * `get_4bit_type('fp4')` normalises: [0, 0.0625, 8, 12, 4, 6, 2, 3] / 12); code 8 is −0.
 */
export const FOUR_BIT_LEVELS: Readonly<Record<'nf4' | 'fp4', Float32Array>> = {
  nf4: Float32Array.from([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
  ]),
  fp4: (() => {
    const magnitudes = [0, 0.0625, 8, 12, 4, 6, 2, 3].map((v) => Math.fround(v / 12));
    return Float32Array.from([...magnitudes, ...magnitudes.map((v) => -v)]);
  })(),
};

export function isQuantized(dtype: WeightDType): dtype is QuantizedDType {
  return dtype === 'nf4' || dtype === 'fp4' || dtype === 'int8';
}

// ---------------------------------------------------------------------------------------------
// Dequantising nf4 / fp4 / int8 on the host: the JavaScript reference of the layout in linear.ts.

/** The host arrays of a double-quantised weight's absmax. */
export interface NestedHost {
  codes: Int32Array;
  absmax: Float32Array;
  map: Float32Array;
  /** Already rounded to float32. */
  offset: number;
}

/**
 * A quantised weight's absmax as float32 (a fresh array): `absmax` copied, or the nested state
 * expanded, absmax[b] = fround(fround(map[code[b]] · nestedAbsmax[b >> 8]) + offset).
 */
export function resolveAbsmax(dtype: QuantizedDType, shape: [number, number], absmax: Float32Array | undefined, nested: NestedHost | undefined): Float32Array {
  const count = dtype === 'int8' ? shape[0] : Math.ceil((shape[0] * shape[1]) / QUANT_BLOCK);
  if (absmax) return absmax.slice(0, count);
  if (!nested) throw new Error(`a ${dtype} weight without absmax or nested state`);
  const out = new Float32Array(count);
  const { codes, absmax: outer, map, offset } = nested;
  for (let b = 0; b < count; b++) {
    const code = (codes[b >> 2] >>> (8 * (b & 3))) & 255;
    out[b] = Math.fround(map[code] * outer[Math.floor(b / NESTED_BLOCK)]) + offset;
  }
  return out;
}

/**
 * Dequantises values [start, start + out.length) of a quantised [rows, inDim] weight into `out`
 * (float32 rounding at each step as linear.ts specifies; a Float32Array store rounds).
 */
export function dequantizeRange(words: Int32Array, dtype: QuantizedDType, absmax: Float32Array, inDim: number, start: number, out: Float32Array): void {
  const end = start + out.length;
  // Little-endian hosts (every browser and Node target): byte k of the words is byte k of memory.
  if (dtype === 'int8') {
    const q = new Int8Array(words.buffer, words.byteOffset, words.length * 4);
    for (let row = Math.floor(start / inDim), i = start; i < end; row++) {
      const a = absmax[row];
      const stop = Math.min(end, (row + 1) * inDim);
      for (; i < stop; i++) out[i - start] = Math.fround(q[i] * a) * INT8_INV_127;
    }
    return;
  }
  const [hi, lo] = nibbleTables(dtype);
  const bytes = new Uint8Array(words.buffer, words.byteOffset, words.length * 4);
  let i = start;
  // A leading odd value (the low nibble of its byte), then whole bytes, then a trailing even one.
  if (i & 1 && i < end) {
    out[0] = lo[bytes[i >> 1]] * absmax[i >> 6];
    i++;
  }
  while (i + 1 < end) {
    // Whole bytes up to the end of this 64-value block (i is even, so a byte never straddles one).
    const a = absmax[i >> 6];
    const stop = Math.min(end - 1, ((i >> 6) + 1) << 6);
    for (; i < stop; i += 2) {
      const byte = bytes[i >> 1];
      out[i - start] = hi[byte] * a;
      out[i + 1 - start] = lo[byte] * a;
    }
  }
  if (i < end) out[i - start] = hi[bytes[i >> 1]] * absmax[i >> 6];
}

const nibbles: Partial<Record<'nf4' | 'fp4', [Float32Array, Float32Array]>> = {};

/** Per byte, the level of its high nibble and of its low nibble. */
function nibbleTables(dtype: 'nf4' | 'fp4'): [Float32Array, Float32Array] {
  let t = nibbles[dtype];
  if (!t) {
    const levels = FOUR_BIT_LEVELS[dtype];
    t = [Float32Array.from({ length: 256 }, (_, b) => levels[b >> 4]), Float32Array.from({ length: 256 }, (_, b) => levels[b & 15])];
    nibbles[dtype] = t;
  }
  return t;
}

// ---------------------------------------------------------------------------------------------
// cpu and wasm: widen (if 16-bit or quantised), then tfjs's own kernels on TensorInfos.
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

/**
 * Row ranges [r0, r1) of W to widen and multiply one at a time: the whole of a float32 or small W
 * (a 16-bit one with an odd row length too, whose rows do not start on words).
 */
function rowBlocks(a: LinearAttrs): [number, number][] {
  const [out, inDim] = a.wShape;
  if (a.wDtype === 'float32' || (!isQuantized(a.wDtype) && inDim % 2 !== 0) || out * inDim <= WIDEN_BLOCK) return [[0, out]];
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

  const read = <T extends Int32Array | Float32Array>(b: tf.KernelBackend, info: tf.TensorInfo): T =>
    (backendName === 'wasm' ? (b as unknown as BackendWasm).typedArrayFromHeap(info) : b.readSync(info.dataId)) as T;
  /** A quantised weight's absmax on the host (a fresh array, so later heap growth cannot detach it). */
  const absmaxOf = (b: tf.KernelBackend, q: QuantInputs, dtype: QuantizedDType, shape: [number, number], offset: number): Float32Array =>
    resolveAbsmax(
      dtype,
      shape,
      q.absmax ? read<Float32Array>(b, q.absmax) : undefined,
      q.qcodes && q.qabsmax && q.qmap ? { codes: read<Int32Array>(b, q.qcodes), absmax: read<Float32Array>(b, q.qabsmax), map: read<Float32Array>(b, q.qmap), offset } : undefined,
    );
  /**
   * Values [start, start + shape[0]·shape[1]) of a quantised weight, dequantised into a new
   * float32 tensor of `shape`.
   */
  const dequantized = (b: tf.KernelBackend, w: tf.TensorInfo, dtype: QuantizedDType, absmax: Float32Array, inDim: number, start: number, shape: [number, number]): tf.TensorInfo => {
    if (backendName === 'wasm') {
      const wasm = b as unknown as BackendWasm;
      // makeOutput may grow the heap, which detaches earlier views: take them after it.
      const out = wasm.makeOutput(shape, 'float32');
      dequantizeRange(wasm.typedArrayFromHeap(w) as Int32Array, dtype, absmax, inDim, start, wasm.typedArrayFromHeap(out) as Float32Array);
      return out;
    }
    const out = new Float32Array(shape[0] * shape[1]);
    dequantizeRange(b.readSync(w.dataId) as Int32Array, dtype, absmax, inDim, start, out);
    return (b as HostBackend).makeTensorInfo(shape, 'float32', out);
  };

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
  const widenedRows = (b: tf.KernelBackend, w: tf.TensorInfo, a: LinearAttrs, r0: number, r1: number, absmax: Float32Array | null): [tf.TensorInfo, boolean] => {
    if (a.wDtype === 'float32') return [w, false];
    const inDim = a.wShape[1];
    if (isQuantized(a.wDtype)) return [dequantized(b, w, a.wDtype, absmax!, inDim, r0 * inDim, [r1 - r0, inDim]), true];
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
    const absmax = isQuantized(a.wDtype) ? absmaxOf(backend, inputs as QuantInputs, a.wDtype, a.wShape, a.nestedOffset) : null;
    // y = (W·xᵀ)ᵀ: see the measurements above. A large 16-bit or quantised W is widened a block
    // of rows at a time, each block's product one slice of yᵀ.
    const xT = transpose(backend, x);
    const parts = rowBlocks(a).map(([r0, r1]) => {
      const [W, temp] = widenedRows(backend, w, a, r0, r1, absmax);
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
    // dy·W with the fresh W on the right, which XNNPACK packs each call: measured on SmolLM2's gate
    // projection (NF4, 576 × 1536) against (Wᵀ·dyᵀ)ᵀ with W dequantised transposed, this is 2 ms
    // slower at 1–8 rows but 4 ms faster at 512 (35 against 39 ms), where training runs.
    const absmax = isQuantized(a.wDtype) ? absmaxOf(backend, inputs as QuantInputs, a.wDtype, a.wShape, a.nestedOffset) : null;
    let dx: tf.TensorInfo | null = null;
    for (const [r0, r1] of rowBlocks(a)) {
      const [W, temp] = widenedRows(backend, w, a, r0, r1, absmax);
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

  /** FtUnpackQuantized: the whole quantised matrix dequantised, or the rows listed by `rows`. */
  const unpackQuantized = ({ inputs, backend, attrs }: { inputs: tf.NamedTensorInfoMap; backend: unknown; attrs?: tf.NamedAttrMap }) => {
    const b = backend as tf.KernelBackend;
    const a = attrs as unknown as LinearAttrs;
    const dtype = a.wDtype as QuantizedDType;
    const { w, rows } = inputs as unknown as { w: tf.TensorInfo; rows?: tf.TensorInfo };
    const absmax = absmaxOf(b, inputs as QuantInputs, dtype, a.wShape, a.nestedOffset);
    const cols = a.wShape[1];
    if (!rows) return dequantized(b, w, dtype, absmax, cols, 0, a.wShape);
    const idx = read<Int32Array>(b, rows).slice();
    const n = idx.length;
    const fill = (words: Int32Array, out: Float32Array) => {
      for (let i = 0; i < n; i++) dequantizeRange(words, dtype, absmax, cols, idx[i] * cols, out.subarray(i * cols, (i + 1) * cols));
    };
    if (backendName === 'wasm') {
      const wasm = b as unknown as BackendWasm;
      const out = wasm.makeOutput([n, cols], 'float32');
      fill(wasm.typedArrayFromHeap(w) as Int32Array, wasm.typedArrayFromHeap(out) as Float32Array);
      return out;
    }
    const out = new Float32Array(n * cols);
    fill(b.readSync(w.dataId) as Int32Array, out);
    return (b as HostBackend).makeTensorInfo([n, cols], 'float32', out);
  };

  return { forward, inputGrad, unpack16, unpackQuantized };
}
