// The frozen linear layer's kernels reading quantised weights (bitsandbytes' NF4 / FP4 with one
// absmax per 64 values, plain or double-quantised, and int8 with one absmax per row) against the
// unfused tfjs composition on the dequantised float32 matrix, on the cpu, wasm and webgpu backends
// (Dawn in Node, SwiftShader where there is no GPU, so shapes stay small). The dequantisation here
// is written from the layout's description, independently of the kernels' own. Codes are random:
// every code is valid. Every value is read with `await data()`: dataSync throws on WebGPU in Node.
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { countDispatches } from '../../src/engine/backend/dispatches.ts';
import { initBackend, type BackendName } from '../../src/engine/backend/index.ts';
import { installNodeWebGPU } from '../../src/engine/backend/node_webgpu.ts';
import {
  FOUR_BIT_LEVELS,
  FT_UNPACK_QUANTIZED,
  disposeFrozenWeight,
  frozenWeightF32,
  gatherWeightRows,
  linearForward,
  linearForwardComposed,
  linearInputGrad,
  linearInputGradComposed,
  packQuantizedWeight,
  unpackWeight,
  type FrozenWeight,
  type QuantizedWeightHost,
} from '../../src/engine/backend/kernels/linear.ts';
import { setLinearStorageBufferLimit } from '../../src/engine/backend/kernels/linear.wgsl.ts';

const hasWebGPU = await installNodeWebGPU();
if (!hasWebGPU) {
  console.warn("kernels_linear_quant: webgpu skipped (Dawn found no WebGPU adapter; install Debian's chromium for SwiftShader, or set VK_ICD_FILENAMES)");
}
const BACKENDS: { name: BackendName; skip: boolean }[] = [
  { name: 'cpu', skip: false },
  { name: 'wasm', skip: false },
  { name: 'webgpu', skip: !hasWebGPU },
];

const TOL = 1e-5;

/** A small deterministic generator of 32-bit words, so failures reproduce. */
function words(n: number, seed: number): Int32Array {
  let s = (seed * 2654435761) >>> 0;
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const hi = s >>> 16;
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = (hi << 16) | (s >>> 16);
  }
  return out;
}

/** Values in [lo, hi). */
function uniform(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = lo + (s / 2 ** 32) * (hi - lo);
  }
  return out;
}

type Kind = { dtype: 'nf4' | 'fp4' | 'int8'; nested: boolean };
const KINDS: Kind[] = [
  { dtype: 'nf4', nested: false },
  { dtype: 'nf4', nested: true },
  { dtype: 'fp4', nested: false },
  { dtype: 'fp4', nested: true },
  { dtype: 'int8', nested: false },
];
const label = (k: Kind) => `${k.dtype}${k.nested ? ' (double-quantised)' : ''}`;

/** Random codes and scales of a [out, in] weight, scaled so a product's outputs are O(1). */
function randomHost(kind: Kind, out: number, inDim: number, seed: number): QuantizedWeightHost {
  const count = out * inDim;
  const s = 1 / Math.sqrt(inDim);
  if (kind.dtype === 'int8') {
    return { dtype: 'int8', shape: [out, inDim], words: words(Math.ceil(count / 4), seed), absmax: uniform(out, seed + 1, 0.5 * s, 1.5 * s) };
  }
  const blocks = Math.ceil(count / 64);
  const host: QuantizedWeightHost = { dtype: kind.dtype, shape: [out, inDim], words: words(Math.ceil(count / 8), seed) };
  if (!kind.nested) return { ...host, absmax: uniform(blocks, seed + 1, 0.5 * s, 1.5 * s) };
  return {
    ...host,
    nested: {
      codes: words(Math.ceil(blocks / 4), seed + 2),
      absmax: uniform(Math.ceil(blocks / 256), seed + 3, 0.5 * s, 1.5 * s),
      map: uniform(256, seed + 4, -1, 1),
      offset: 0.7 * s + 1e-9, // not a float32: the kernels round it
    },
  };
}

/** The float32 matrix a quantised weight means, straight from the layout's description. */
function dequantize(h: QuantizedWeightHost): Float32Array {
  const [out, inDim] = h.shape;
  const f = Math.fround;
  const dense = new Float32Array(out * inDim);
  const byte = (w: Int32Array, k: number) => (w[k >> 2] >>> (8 * (k & 3))) & 255;
  if (h.dtype === 'int8') {
    for (let i = 0; i < dense.length; i++) {
      const b = byte(h.words, i);
      const q = b >= 128 ? b - 256 : b;
      dense[i] = f(f(q * h.absmax![Math.floor(i / inDim)]) * f(1 / 127)); // bitsandbytes: A * stats * 7.874015718698502e-3
    }
    return dense;
  }
  const blocks = Math.ceil(dense.length / 64);
  const absmax = new Float32Array(blocks);
  for (let b = 0; b < blocks; b++) {
    const n = h.nested;
    absmax[b] = n ? f(f(n.map[byte(n.codes, b)] * n.absmax[Math.floor(b / 256)]) + f(n.offset)) : h.absmax![b];
  }
  const levels = FOUR_BIT_LEVELS[h.dtype];
  for (let i = 0; i < dense.length; i++) {
    const b = byte(h.words, i >> 1); // byte k holds values 2k (high nibble) and 2k + 1 (low)
    const code = i % 2 === 0 ? b >> 4 : b & 15;
    dense[i] = f(levels[code] * absmax[Math.floor(i / 64)]);
  }
  return dense;
}

async function values(t: tf.Tensor): Promise<Float32Array> {
  return (await t.data()) as Float32Array;
}

/** max |a − b| over max(1, max |b|): the error relative to the output's scale. */
function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let diff = 0;
  let scale = 1;
  for (let i = 0; i < a.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  return diff / scale;
}

// tests/fixtures/quant (tests/reference/bnb_golden.py: bitsandbytes' quantisation re-implemented
// in PyTorch) holds real packed bytes with what bitsandbytes dequantises them to: the layout read
// here must give the same values.
const FIXTURES = fileURLToPath(new URL('../fixtures/quant/', import.meta.url));

/** A safetensors file's tensors as raw bytes with their dtype and shape. */
function readFixture(name: string): Map<string, { dtype: string; shape: number[]; bytes: Uint8Array }> {
  const file = readFileSync(`${FIXTURES}${name}.safetensors`);
  const bytes = new Uint8Array(file.buffer, file.byteOffset, file.byteLength);
  const headerLen = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLen))) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const out = new Map<string, { dtype: string; shape: number[]; bytes: Uint8Array }>();
  for (const [key, t] of Object.entries(header)) {
    if (key === '__metadata__') continue;
    out.set(key, { dtype: t.dtype, shape: t.shape, bytes: bytes.slice(8 + headerLen + t.data_offsets[0], 8 + headerLen + t.data_offsets[1]) });
  }
  return out;
}
const f32Of = (t: { bytes: Uint8Array }) => new Float32Array(t.bytes.buffer, t.bytes.byteOffset, t.bytes.byteLength / 4);
/** Bytes as little-endian 32-bit words, zero-padded. */
function bytesToWords(b: Uint8Array): Int32Array {
  const words = new Int32Array(Math.ceil(b.length / 4));
  new Uint8Array(words.buffer).set(b);
  return words;
}

/** The largest error measured per backend and kind, printed at the end. */
const worst = new Map<string, number>();
const note = (key: string, e: number) => worst.set(key, Math.max(worst.get(key) ?? 0, e));

/**
 * [N, in, out]. Up to 8 rows (WebGPU's skinny program), forward chunks of: a vec4<u32> unit (in a
 * multiple of 128 for 4-bit, 64 for int8), a word of 4-bit values (in a multiple of 8), four
 * values (in a multiple of 4), one (in odd). More rows (the tiled program, 16- and 32-row tiles):
 * vec4 units (in a multiple of 32 / 16), one-word units (of 8 / 4), single values (in 4 mod 8, or
 * odd). Blocks straddling rows (in not a multiple of 64); out·in not a multiple of 64; several K
 * steps and column tiles; over 256 blocks (two nested absmax groups).
 */
const SHAPES: [number, number, number][] = [
  [2, 32, 5],
  [5, 64, 96],
  [3, 40, 7],
  [6, 36, 9],
  [1, 13, 11],
  [4, 256, 80],
  [9, 20, 13],
  [12, 40, 10],
  [17, 13, 11],
  [33, 96, 40],
];

for (const { name, skip } of BACKENDS) {
  describe.skipIf(skip)(`quantised linear kernels on ${name}`, () => {
    const use = async () => {
      expect((await initBackend(name)).name).toBe(name);
      if (name === 'webgpu') tf.env().set('WEBGPU_CPU_FORWARD', false);
    };

    it('has the kernel registered, and the codebooks as bitsandbytes has them', async () => {
      await use();
      expect(tf.getKernel(FT_UNPACK_QUANTIZED, name)).toBeDefined();
      expect(Array.from(FOUR_BIT_LEVELS.fp4)).toEqual(
        [0, 0.005208333333, 0.66666667, 1, 0.33333333, 0.5, 0.16666667, 0.25, -0, -0.005208333333, -0.66666667, -1, -0.33333333, -0.5, -0.16666667, -0.25].map(Math.fround),
      );
      expect(FOUR_BIT_LEVELS.nf4[0]).toBe(-1);
      expect(FOUR_BIT_LEVELS.nf4[7]).toBe(0);
      expect(FOUR_BIT_LEVELS.nf4[15]).toBe(1);
    });

    it.skipIf(!existsSync(FIXTURES))('dequantises bitsandbytes-packed fixtures (tests/fixtures/quant) to the values bitsandbytes gives', async () => {
      await use();
      const json = JSON.parse(readFileSync(`${FIXTURES}quant.json`, 'utf8')) as {
        dynamic_maps: Record<string, number[]>;
        cases: Record<string, { shape: [number, number]; nf4: { nested_offset: number }; fp4: { nested_offset: number } }>;
      };
      // bitsandbytes' create_dynamic_map(signed=True, 7, 8): the second quantisation's code.
      const map = Float32Array.from(json.dynamic_maps.True_7_8);
      // Every case of quant.json with its file (the large one is skipped: it has no plain dequantised values).
      const fixtures = Object.keys(json.cases).filter((c) => existsSync(`${FIXTURES}${c}.safetensors`) && !c.startsWith('large'));
      expect(fixtures.length).toBeGreaterThan(0);
      for (const fixture of fixtures) {
        const t = readFixture(fixture);
        const shape = json.cases[fixture].shape;
        const hosts: [string, QuantizedWeightHost, Float32Array][] = [
          ['int8', { dtype: 'int8', shape, words: bytesToWords(t.get('int8.codes')!.bytes), absmax: f32Of(t.get('int8.absmax')!) }, f32Of(t.get('int8.dequantized')!)],
        ];
        for (const dtype of ['nf4', 'fp4'] as const) {
          const words = bytesToWords(t.get(`${dtype}.packed`)!.bytes);
          hosts.push([dtype, { dtype, shape, words, absmax: f32Of(t.get(`${dtype}.absmax`)!) }, f32Of(t.get(`${dtype}.dequantized`)!)]);
          const nested = { codes: bytesToWords(t.get(`${dtype}.nested_codes`)!.bytes), absmax: f32Of(t.get(`${dtype}.nested_absmax`)!), map, offset: json.cases[fixture][dtype].nested_offset };
          // Where the case has no double_dequantized values, bitsandbytes' dequantised absmax stands in.
          const twice = t.get(`${dtype}.double_dequantized`);
          const viaAbsmax = () => dequantize({ dtype, shape, words, absmax: f32Of(t.get(`${dtype}.absmax_dequantized`)!) });
          hosts.push([`${dtype} nested`, { dtype, shape, words, nested }, twice ? f32Of(twice) : viaAbsmax()]);
        }
        for (const [what, host, want] of hosts) {
          const w = packQuantizedWeight(host);
          const got = unpackWeight(w);
          const v = await values(got);
          let e = 0;
          for (let i = 0; i < want.length; i++) e = Math.max(e, Math.abs(v[i] - want[i]) / Math.max(Math.abs(want[i]), 1e-30));
          // Exact on the host; on WebGPU a·b + c (the nested absmax) may fuse into one rounding.
          expect(e, `${fixture} ${what}`).toBeLessThanOrEqual(name === 'webgpu' ? 1e-6 : 0);
          got.dispose();
          disposeFrozenWeight(w);
        }
      }
    });

    for (const kind of KINDS) {
      it(`${label(kind)}: unpackWeight and gatherWeightRows equal a plain dequantisation`, async () => {
        await use();
        for (const [out, inDim] of [[7, 13], [5, 64], [9, 40], [3, 96], [70, 300]] as const) {
          const host = randomHost(kind, out, inDim, out * 31 + inDim);
          const want = dequantize(host);
          const w = packQuantizedWeight(host);
          const rows = [out - 1, 0, Math.floor(out / 2), out - 1];
          const idx = tf.tensor1d(rows, 'int32');
          const full = unpackWeight(w);
          const some = gatherWeightRows(w, idx);
          try {
            expect(full.shape).toEqual([out, inDim]);
            expect(full.dtype).toBe('float32');
            const got = await values(full);
            const gathered = await values(some);
            const wantRows = Float32Array.from(rows.flatMap((r) => Array.from(want.subarray(r * inDim, (r + 1) * inDim))));
            if (name === 'webgpu') {
              // a·b + c (the nested absmax) may fuse into one rounding on the GPU.
              const close = (a: ArrayLike<number>, b: ArrayLike<number>) => {
                let e = 0;
                for (let i = 0; i < b.length; i++) e = Math.max(e, Math.abs(a[i] - b[i]) / Math.max(Math.abs(b[i]), 1e-30));
                return e;
              };
              note(`${name} unpack ${label(kind)} (relative per value)`, close(got, want));
              expect(close(got, want)).toBeLessThan(1e-6);
              expect(close(gathered, wantRows)).toBeLessThan(1e-6);
            } else {
              for (let i = 0; i < want.length; i++) if (!Object.is(got[i], want[i])) expect(`${i}: ${got[i]}`).toBe(`${i}: ${want[i]}`);
              expect(Array.from(gathered)).toEqual(Array.from(wantRows));
            }
          } finally {
            tf.dispose([full, some, idx]);
            disposeFrozenWeight(w);
          }
        }
      });

      for (const [N, inDim, out] of SHAPES) {
        it(`${label(kind)} W [${out}, ${inDim}], N=${N}: forward and input gradient, ± bias, ± LoRA`, async () => {
          await use();
          const host = randomHost(kind, out, inDim, out * 131 + inDim + N);
          const w = packQuantizedWeight(host);
          const ref = frozenWeightF32(tf.tensor2d(dequantize(host), [out, inDim]));
          const x = tf.tensor2d(uniform(N * inDim, 7 + N), [N, inDim]);
          const dy = tf.tensor2d(uniform(N * out, 11 + N), [N, out]);
          const bias = tf.tensor1d(uniform(out, 13));
          // r = 4 takes the vec4 path for the LoRA operands, r = 3 the scalar one.
          const r = inDim % 8 === 4 ? 3 : 4;
          const xa = tf.tensor2d(uniform(N * r, 17), [N, r]);
          const B = tf.tensor2d(uniform(out * r, 19), [out, r]);
          const g = tf.tensor2d(uniform(N * r, 23), [N, r]);
          const A = tf.tensor2d(uniform(r * inDim, 29), [r, inDim]);
          const scale = 1.75;
          try {
            for (const withBias of [false, true]) {
              for (const withLora of [false, true]) {
                const lora = withLora ? { xa, B, scale } : undefined;
                const got = linearForward(x, w, withBias ? bias : undefined, lora);
                const want = linearForwardComposed(x, ref, withBias ? bias : undefined, lora);
                expect(got.shape).toEqual([N, out]);
                const e = relErr(await values(got), await values(want));
                note(`${name} ${label(kind)} forward`, e);
                expect(e, `forward bias=${withBias} lora=${withLora}`).toBeLessThan(TOL);
                tf.dispose([got, want]);
              }
            }
            for (const withLora of [false, true]) {
              const lora = withLora ? { g, A, scale } : undefined;
              const got = linearInputGrad(dy, w, lora);
              const want = linearInputGradComposed(dy, ref, lora);
              expect(got.shape).toEqual([N, inDim]);
              const e = relErr(await values(got), await values(want));
              note(`${name} ${label(kind)} input grad`, e);
              expect(e, `input grad lora=${withLora}`).toBeLessThan(TOL);
              tf.dispose([got, want]);
            }
          } finally {
            disposeFrozenWeight(w);
            tf.dispose([ref.data, x, dy, bias, xa, B, g, A]);
          }
        });
      }
    }

    it('differentiates linearForward on an nf4 weight (x, bias, xa, B) as the composition does', async () => {
      await use();
      const [N, inDim, out, r] = [6, 64, 10, 4];
      const host = randomHost({ dtype: 'nf4', nested: true }, out, inDim, 3);
      const w = packQuantizedWeight(host);
      const ref = frozenWeightF32(tf.tensor2d(dequantize(host), [out, inDim]));
      const x = tf.tensor2d(uniform(N * inDim, 31), [N, inDim]);
      const bias = tf.tensor1d(uniform(out, 37));
      const xa = tf.tensor2d(uniform(N * r, 41), [N, r]);
      const B = tf.tensor2d(uniform(out * r, 43), [out, r]);
      const cot = tf.tensor2d(uniform(N * out, 47), [N, out]);
      const grads = (forward: typeof linearForward, weight: FrozenWeight) =>
        tf.grads((a: tf.Tensor, b: tf.Tensor, c: tf.Tensor, d: tf.Tensor) =>
          tf.sum(tf.mul(forward(a as tf.Tensor2D, weight, b as tf.Tensor1D, { xa: c as tf.Tensor2D, B: d as tf.Tensor2D, scale: 0.5 }), cot)),
        )([x, bias, xa, B]);
      const got = grads(linearForward, w);
      const want = grads(linearForwardComposed, ref);
      try {
        for (let i = 0; i < want.length; i++) {
          expect(got[i].shape).toEqual(want[i].shape);
          expect(relErr(await values(got[i]), await values(want[i])), `gradient ${i}`).toBeLessThan(TOL);
        }
      } finally {
        tf.dispose([...got, ...want, ref.data, x, bias, xa, B, cot]);
        disposeFrozenWeight(w);
      }
    });

    it('leaves no tensors behind across calls, and disposeFrozenWeight frees every part', async () => {
      await use();
      const [N, inDim, out, r] = [5, 40, 7, 4];
      const start = tf.memory().numTensors;
      const weights = KINDS.map((k, i) => packQuantizedWeight(randomHost(k, out, inDim, 50 + i)));
      expect(tf.memory().numTensors).toBe(start + 2 + 4 + 2 + 4 + 2); // words and absmax, or words and three nested tensors
      const x = tf.tensor2d(uniform(N * inDim, 53), [N, inDim]);
      const dy = tf.tensor2d(uniform(N * out, 59), [N, out]);
      const bias = tf.tensor1d(uniform(out, 61));
      const xa = tf.tensor2d(uniform(N * r, 67), [N, r]);
      const B = tf.tensor2d(uniform(out * r, 71), [out, r]);
      const A = tf.tensor2d(uniform(r * inDim, 73), [r, inDim]);
      const once = async () => {
        for (const w of weights) {
          const y = linearForward(x, w, bias, { xa, B, scale: 2 });
          const dx = linearInputGrad(dy, w, { g: xa, A, scale: 2 });
          const W = unpackWeight(w);
          await Promise.all([y.data(), dx.data(), W.data()]);
          tf.dispose([y, dx, W]);
        }
      };
      await once();
      const before = tf.memory().numTensors;
      for (let i = 0; i < 2; i++) await once();
      expect(tf.memory().numTensors).toBe(before);
      tf.dispose([x, dy, bias, xa, B, A]);
      for (const w of weights) disposeFrozenWeight(w);
      expect(tf.memory().numTensors).toBe(start);
    });

    if (name === 'webgpu') {
      it('runs each product (double-quantised nf4 and int8, bias, LoRA; 1 and 9 rows) as one dispatch', async () => {
        await use();
        const [inDim, out, r] = [64, 12, 4];
        for (const [kind, N] of [[KINDS[1], 9], [KINDS[4], 9], [KINDS[1], 1], [KINDS[4], 1]] as const) {
          const host = randomHost(kind, out, inDim, 9);
          const w = packQuantizedWeight(host);
          const x = tf.tensor2d(uniform(N * inDim, 79), [N, inDim]);
          const bias = tf.tensor1d(uniform(out, 83));
          const xa = tf.tensor2d(uniform(N * r, 89), [N, r]);
          const B = tf.tensor2d(uniform(out * r, 97), [out, r]);
          const dy = tf.tensor2d(uniform(N * out, 101), [N, out]);
          const A = tf.tensor2d(uniform(r * inDim, 103), [r, inDim]);
          const parts = [w.data, w.absmax, w.nested?.codes, w.nested?.absmax, w.nested?.map].filter((t): t is tf.Tensor => t != null);
          await Promise.all([x, bias, xa, B, dy, A, ...parts].map((t) => t.data()));
          const forward = countDispatches(() => linearForward(x, w, bias, { xa, B, scale: 2 }));
          expect(forward.dispatches, `${label(kind)} N=${N}`).toBe(1);
          const inputGrad = countDispatches(() => linearInputGrad(dy, w, { g: xa, A, scale: 2 }));
          expect(inputGrad.dispatches, `${label(kind)} N=${N}`).toBe(1);
          await Promise.all([forward.result.data(), inputGrad.result.data()]);
          tf.dispose([forward.result, inputGrad.result, x, bias, xa, B, dy, A]);
          disposeFrozenWeight(w);
        }
      });

      it('adds the bias as its own dispatch where the device binds too few storage buffers, with the same result', async () => {
        await use();
        const [N, inDim, out, r] = [9, 64, 12, 4];
        const host = randomHost(KINDS[1], out, inDim, 19);
        const w = packQuantizedWeight(host);
        const ref = frozenWeightF32(tf.tensor2d(dequantize(host), [out, inDim]));
        const x = tf.tensor2d(uniform(N * inDim, 109), [N, inDim]);
        const bias = tf.tensor1d(uniform(out, 113));
        const xa = tf.tensor2d(uniform(N * r, 127), [N, r]);
        const B = tf.tensor2d(uniform(out * r, 131), [out, r]);
        await Promise.all([x, bias, xa, B].map((t) => t.data()));
        setLinearStorageBufferLimit(8);
        try {
          const got = countDispatches(() => linearForward(x, w, bias, { xa, B, scale: 2 }));
          expect(got.dispatches).toBe(2);
          const want = linearForwardComposed(x, ref, bias, { xa, B, scale: 2 });
          expect(relErr(await values(got.result), await values(want))).toBeLessThan(TOL);
          tf.dispose([got.result, want]);
        } finally {
          setLinearStorageBufferLimit(null);
          disposeFrozenWeight(w);
          tf.dispose([ref.data, x, bias, xa, B]);
        }
      });
    }
  });
}

// A quantised weight above 2^24 values is dequantised on the host a block of rows at a time:
// 4097 × 4099 makes a block of 4093 rows and one of 4, the second starting on an odd value in the
// middle of a 64-value block.
for (const name of ['cpu', 'wasm'] as const) {
  describe(`a quantised weight dequantised in blocks on ${name}`, () => {
    it('gives the product on the whole dequantised matrix, forward and input gradient', async () => {
      expect((await initBackend(name)).name).toBe(name);
      const [N, inDim, out] = [3, 4099, 4097];
      const host = randomHost({ dtype: 'nf4', nested: true }, out, inDim, 23);
      const w = packQuantizedWeight(host);
      const full = tf.tensor2d(dequantize(host), [out, inDim]);
      const x = tf.tensor2d(uniform(N * inDim, 5), [N, inDim]);
      const dy = tf.tensor2d(uniform(N * out, 6), [N, out]);
      const y = linearForward(x, w);
      const wantY = tf.matMul(x, full, false, true);
      expect(relErr(await y.data(), await wantY.data())).toBeLessThan(TOL);
      const dx = linearInputGrad(dy, w);
      const wantDx = tf.matMul(dy, full);
      expect(relErr(await dx.data(), await wantDx.data())).toBeLessThan(TOL);
      tf.dispose([x, dy, full, y, wantY, dx, wantDx]);
      disposeFrozenWeight(w);
    });
  });
}

afterAll(async () => {
  console.log('largest error measured (max |got − want| / max(1, max |want|)):');
  for (const [key, e] of [...worst].sort()) console.log(`  ${key}: ${e.toExponential(2)}`);
  await tf.setBackend('cpu');
});
