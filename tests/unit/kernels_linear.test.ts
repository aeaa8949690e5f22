// The frozen linear layer's kernels (FtLinear, FtLinearInputGrad, FtUnpack16) against the unfused
// tfjs composition on the dequantised matrix, on the cpu, wasm and webgpu backends (Dawn in Node,
// SwiftShader where there is no GPU, so shapes stay small). One file for all three backends since
// tfjs keeps one engine per process. Every value is read with `await data()`: dataSync throws on
// WebGPU in Node.
import { afterAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { countDispatches } from '../../src/engine/backend/dispatches.ts';
import { initBackend, type BackendName } from '../../src/engine/backend/index.ts';
import { installNodeWebGPU } from '../../src/engine/backend/node_webgpu.ts';
import {
  FT_LINEAR,
  FT_LINEAR_INPUT_GRAD,
  FT_UNPACK16,
  float32ToBits16,
  frozenWeightF32,
  linearForward,
  linearForwardComposed,
  linearInputGrad,
  linearInputGradComposed,
  packWeight16,
  unpackWeight,
  gatherWeightRows,
  type FrozenWeight,
  type Weight16DType,
} from '../../src/engine/backend/kernels/linear.ts';
import { bf16BitsToFloat32, f16BitsToFloat32 } from '../../src/engine/io/safetensors.ts';
import { maxAbsDiff } from './helpers/golden.ts';
import { Rng } from '../../src/engine/rng.ts';

const hasWebGPU = await installNodeWebGPU();
if (!hasWebGPU) {
  // The default reporter shows a skipped suite's count, not its title.
  console.warn("kernels_linear: webgpu skipped (Dawn found no WebGPU adapter; install Debian's chromium for SwiftShader, or set VK_ICD_FILENAMES)");
}
const BACKENDS: { name: BackendName; skip: boolean }[] = [
  { name: 'cpu', skip: false },
  { name: 'wasm', skip: false },
  { name: 'webgpu', skip: !hasWebGPU },
];

const TOL = 1e-5;

/** A small deterministic generator (values in [-1, 1)), so failures reproduce. */
function uniform(n: number, seed: number, scale = 1): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = ((s / 2 ** 32) * 2 - 1) * scale;
  }
  return out;
}

/** The weight as stored, and the float32 matrix it means (the dequantised values). */
function makeWeight(out: number, inDim: number, dtype: 'float32' | Weight16DType, seed: number): { w: FrozenWeight; dense: Float32Array } {
  const values = uniform(out * inDim, seed, 1 / Math.sqrt(inDim));
  if (dtype === 'float32') return { w: frozenWeightF32(tf.tensor2d(values, [out, inDim])), dense: values };
  const bits = float32ToBits16(values, dtype);
  const widen = dtype === 'bfloat16' ? bf16BitsToFloat32 : f16BitsToFloat32;
  return { w: packWeight16(bits, [out, inDim], dtype), dense: Float32Array.from(bits, widen) };
}

async function values(t: tf.Tensor): Promise<Float32Array> {
  return (await t.data()) as Float32Array;
}

/** [N, in, out]: ragged tiles, scalar and vec4 paths on every operand, odd out·in. */
const SHAPES: [number, number, number][] = [
  [5, 12, 7],
  [3, 5, 7],
  [17, 20, 13],
  [33, 64, 96],
];
const DTYPES: ('float32' | Weight16DType)[] = ['float32', 'bfloat16', 'float16'];

for (const { name, skip } of BACKENDS) {
  describe.skipIf(skip)(`linear kernels on ${name}`, () => {
    const use = async () => {
      expect((await initBackend(name)).name).toBe(name);
      // Otherwise tfjs runs the reference's small ops on its CPU kernels.
      if (name === 'webgpu') tf.env().set('WEBGPU_CPU_FORWARD', false);
    };

    it('has the kernels registered', async () => {
      await use();
      for (const kernel of [FT_LINEAR, FT_LINEAR_INPUT_GRAD, FT_UNPACK16]) expect(tf.getKernel(kernel, name)).toBeDefined();
    });

    it('unpacks bf16 and f16 exactly, including subnormals, ±0, ±inf and NaN, with odd out·in', async () => {
      await use();
      const special = [0x0000, 0x8000, 0x0001, 0x03ff, 0x0400, 0x3c00, 0xbc00, 0x7bff, 0x7c00, 0xfc00, 0x7e00, 0xfe01, 0x3555, 0x8123, 0x1234];
      const bf16special = [0x0000, 0x8000, 0x0001, 0x007f, 0x0080, 0x3f80, 0xbf80, 0x7f7f, 0x7f80, 0xff80, 0x7fc0, 0xffc1, 0x3eaa, 0x8123, 0x1234];
      for (const [dtype, list, widen] of [
        ['float16', special, f16BitsToFloat32],
        ['bfloat16', bf16special, bf16BitsToFloat32],
      ] as const) {
        const bits = Uint16Array.from(list);
        const w = packWeight16(bits, [3, 5], dtype);
        const t = unpackWeight(w);
        expect(t.shape).toEqual([3, 5]);
        expect(t.dtype).toBe('float32');
        const got = await values(t);
        const want = Float32Array.from(bits, widen);
        for (let i = 0; i < want.length; i++) {
          if (Number.isNaN(want[i])) expect(Number.isNaN(got[i]), `${dtype} bits 0x${list[i].toString(16)}`).toBe(true);
          else expect(Object.is(got[i], want[i]), `${dtype} bits 0x${list[i].toString(16)}: ${got[i]} vs ${want[i]}`).toBe(true);
        }
        t.dispose();
        w.data.dispose();
      }
    });

    it('gathers rows of bf16 and f16 matrices exactly, words above 2^24 included (an embedding lookup)', async () => {
      await use();
      for (const dtype of ['bfloat16', 'float16'] as const) {
        const rows = 9;
        const cols = 6;
        // Every high half-word sets the top bits, so each packed word is far above 2^24.
        const bits = Uint16Array.from({ length: rows * cols }, (_, i) => (i % 2 === 1 ? 0xbf80 + (i % 7) : 0x3c00 + 37 * i));
        const w = packWeight16(bits, [rows, cols], dtype);
        const idx = tf.tensor1d([7, 0, 7, 3], 'int32');
        const t = gatherWeightRows(w, idx);
        const full = unpackWeight(w);
        const all = await values(full);
        const want = Float32Array.from([7, 0, 7, 3].flatMap((r) => Array.from(all.subarray(r * cols, (r + 1) * cols))));
        expect(Array.from(await values(t))).toEqual(Array.from(want));
        tf.dispose([t, idx, full, w.data]);
      }
    });

    for (const dtype of DTYPES) {
      for (const [N, inDim, out] of SHAPES) {
        it(`${dtype} W [${out}, ${inDim}], N=${N}: forward and input gradient, ± bias, ± LoRA`, async () => {
          await use();
          const { w, dense } = makeWeight(out, inDim, dtype, out * 131 + inDim);
          const ref = frozenWeightF32(tf.tensor2d(dense, [out, inDim]));
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
                expect(maxAbsDiff(await values(got), await values(want)), `forward bias=${withBias} lora=${withLora}`).toBeLessThan(TOL);
                got.dispose();
                want.dispose();
              }
            }
            for (const withLora of [false, true]) {
              const lora = withLora ? { g, A, scale } : undefined;
              const got = linearInputGrad(dy, w, lora);
              const want = linearInputGradComposed(dy, ref, lora);
              expect(got.shape).toEqual([N, inDim]);
              expect(maxAbsDiff(await values(got), await values(want)), `input grad lora=${withLora}`).toBeLessThan(TOL);
              got.dispose();
              want.dispose();
            }
          } finally {
            tf.dispose([w.data, ref.data, x, dy, bias, xa, B, g, A]);
          }
        });
      }
    }

    it('differentiates linearForward (x, bias, xa, B) as the composition does', async () => {
      await use();
      const [N, inDim, out, r] = [6, 12, 10, 4];
      const { w, dense } = makeWeight(out, inDim, 'bfloat16', 3);
      const ref = frozenWeightF32(tf.tensor2d(dense, [out, inDim]));
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
          expect(maxAbsDiff(await values(got[i]), await values(want[i])), `gradient ${i}`).toBeLessThan(TOL);
        }
      } finally {
        tf.dispose([...got, ...want, w.data, ref.data, x, bias, xa, B, cot]);
      }
    });

    it('leaves no tensors behind across calls', async () => {
      await use();
      const [N, inDim, out, r] = [5, 12, 7, 4];
      const { w } = makeWeight(out, inDim, 'float16', 5);
      const x = tf.tensor2d(uniform(N * inDim, 53), [N, inDim]);
      const dy = tf.tensor2d(uniform(N * out, 59), [N, out]);
      const bias = tf.tensor1d(uniform(out, 61));
      const xa = tf.tensor2d(uniform(N * r, 67), [N, r]);
      const B = tf.tensor2d(uniform(out * r, 71), [out, r]);
      const A = tf.tensor2d(uniform(r * inDim, 73), [r, inDim]);
      const once = async () => {
        const y = linearForward(x, w, bias, { xa, B, scale: 2 });
        const dx = linearInputGrad(dy, w, { g: xa, A, scale: 2 });
        const W = unpackWeight(w);
        await Promise.all([y.data(), dx.data(), W.data()]);
        tf.dispose([y, dx, W]);
      };
      await once();
      const before = tf.memory().numTensors;
      for (let i = 0; i < 3; i++) await once();
      expect(tf.memory().numTensors).toBe(before);
      tf.dispose([w.data, x, dy, bias, xa, B, A]);
    });

    if (name === 'webgpu') {
      it('runs each product (bf16 weight, bias, LoRA) as one dispatch, with no unpack', async () => {
        await use();
        const [N, inDim, out, r] = [9, 16, 12, 4];
        const { w } = makeWeight(out, inDim, 'bfloat16', 9);
        const x = tf.tensor2d(uniform(N * inDim, 79), [N, inDim]);
        const bias = tf.tensor1d(uniform(out, 83));
        const xa = tf.tensor2d(uniform(N * r, 89), [N, r]);
        const B = tf.tensor2d(uniform(out * r, 97), [out, r]);
        const dy = tf.tensor2d(uniform(N * out, 101), [N, out]);
        const A = tf.tensor2d(uniform(r * inDim, 103), [r, inDim]);
        await Promise.all([x, bias, xa, B, dy, A, w.data].map((t) => t.data()));
        const forward = countDispatches(() => linearForward(x, w, bias, { xa, B, scale: 2 }));
        expect(forward.dispatches).toBe(1);
        const inputGrad = countDispatches(() => linearInputGrad(dy, w, { g: xa, A, scale: 2 }));
        expect(inputGrad.dispatches).toBe(1);
        await Promise.all([forward.result.data(), inputGrad.result.data()]);
        tf.dispose([forward.result, inputGrad.result, w.data, x, bias, xa, B, dy, A]);
      });
    }
  });
}

// A 16-bit weight above 2^24 values is widened on the host a block of rows at a time (the LM head
// of a big vocabulary): 4097 × 4096 makes a block of 4096 rows and one of a single row.
for (const name of ['cpu', 'wasm'] as const) {
  describe(`a 16-bit weight widened in blocks on ${name}`, () => {
    it('gives the product on the whole widened matrix, forward and input gradient', async () => {
      expect((await initBackend(name)).name).toBe(name);
      const [N, inDim, out] = [3, 4096, 4097];
      const rng = new Rng(11);
      const bits = float32ToBits16(rng.uniform(out * inDim, -0.05, 0.05), 'bfloat16');
      const w = packWeight16(bits, [out, inDim], 'bfloat16');
      const x = tf.tensor2d(rng.uniform(N * inDim, -1, 1), [N, inDim]);
      const dy = tf.tensor2d(rng.uniform(N * out, -1, 1), [N, out]);
      const full = unpackWeight(w);
      const y = linearForward(x, w);
      const wantY = tf.matMul(x, full, false, true);
      expect(maxAbsDiff(await y.data(), await wantY.data())).toBeLessThan(1e-4);
      const dx = linearInputGrad(dy, w);
      const wantDx = tf.matMul(dy, full);
      expect(maxAbsDiff(await dx.data(), await wantDx.data())).toBeLessThan(1e-4);
      tf.dispose([w.data, x, dy, full, y, wantY, dx, wantDx]);
    });
  });
}

afterAll(async () => {
  await tf.setBackend('cpu');
});
