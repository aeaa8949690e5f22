// Our RMSNorm, RoPE and SiLU·mul kernels (FtRmsNorm, FtRmsNormGrad, FtRope, FtSiluMul,
// FtSiluMulGrad) on the CPU backend and on WebGPU (Dawn in Node; SwiftShader where there is no
// GPU), against the tfjs composition each exported function falls back to where no kernel is
// registered, and their backward formulas against tfjs's own gradients of that composition.
// Values are read with `await data()`: dataSync throws on WebGPU in Node.
import { beforeAll, describe, expect, it, vi } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { countDispatches } from '../../src/engine/backend/dispatches.ts';
import { initBackend } from '../../src/engine/backend/index.ts';
import { installNodeWebGPU } from '../../src/engine/backend/node_webgpu.ts';
import { rmsNormBackward, rmsNormForward } from '../../src/engine/backend/kernels/norm.ts';
import { applyRope } from '../../src/engine/backend/kernels/rope.ts';
import { siluMulBackward, siluMulForward } from '../../src/engine/backend/kernels/silu.ts';
import { normCpuKernels } from '../../src/engine/backend/kernels/norm.cpu.ts';
import { normWebGPUKernels } from '../../src/engine/backend/kernels/norm.wgsl.ts';
import { ropeCpuKernels } from '../../src/engine/backend/kernels/rope.cpu.ts';
import { ropeWebGPUKernels } from '../../src/engine/backend/kernels/rope.wgsl.ts';
import { siluCpuKernels } from '../../src/engine/backend/kernels/silu.cpu.ts';
import { siluWebGPUKernels } from '../../src/engine/backend/kernels/silu.wgsl.ts';

const hasWebGPU = await installNodeWebGPU();
if (!hasWebGPU) {
  console.warn("kernels on the webgpu backend skipped: Dawn found no WebGPU adapter; install Debian's chromium for SwiftShader, or set VK_ICD_FILENAMES");
}

const OWN_KERNELS = [...normWebGPUKernels, ...normCpuKernels, ...ropeWebGPUKernels, ...ropeCpuKernels, ...siluWebGPUKernels, ...siluCpuKernels];
const TOL = 1e-5;
const EPS = 1e-6;

/** Runs f with our kernels unregistered for the active backend, so every op takes the composition. */
function composition<R>(f: () => R): R {
  const backend = tf.getBackend();
  const mine = OWN_KERNELS.filter((k) => k.backendName === backend);
  for (const k of mine) tf.unregisterKernel(k.kernelName, backend);
  try {
    return f();
  } finally {
    for (const k of mine) tf.registerKernel(k);
  }
}

/** How many times our kernel `name` ran on the active backend during f. */
function kernelRuns<R>(name: string, f: () => R): { result: R; runs: number } {
  const config = tf.getKernel(name, tf.getBackend())!;
  const spy = vi.spyOn(config, 'kernelFunc');
  try {
    return { result: f(), runs: spy.mock.calls.length };
  } finally {
    spy.mockRestore();
  }
}

/** Compute-pass dispatches recorded during f (WebGPU records them synchronously as ops run). */
function dispatches<R>(f: () => R): { result: R; count: number } {
  const { result, dispatches: count } = countDispatches(f);
  return { result, count };
}

/** Deterministic values in [-scale, scale) (a small LCG; no tfjs RNG, so both backends see the same data). */
function values(n: number, seed: number, scale = 2, offset = 0): Float32Array {
  let s = seed >>> 0 || 1;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = offset + scale * (2 * (s / 2 ** 32) - 1);
  }
  return out;
}

function tensor<T extends tf.Tensor>(shape: number[], seed: number, scale = 2, offset = 0): T {
  return tf.tensor(values(shape.reduce((a, b) => a * b, 1), seed, scale, offset), shape) as T;
}

async function expectClose(actual: tf.Tensor, expected: tf.Tensor, what: string): Promise<void> {
  expect(actual.shape, what).toEqual(expected.shape);
  const [a, e] = await Promise.all([actual.data(), expected.data()]);
  let diff = 0;
  let scale = 1;
  for (let i = 0; i < e.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - e[i]));
    scale = Math.max(scale, Math.abs(e[i]));
  }
  expect(diff / scale, `${what}: max |difference| ${diff}`).toBeLessThanOrEqual(TOL);
}

/** Rotation tables for positions 0.. per batch row, as the model builds them (cos² + sin² = 1). */
function ropeTables(B: number, T: number, D: number): { cos: tf.Tensor3D; sin: tf.Tensor3D } {
  const half = D / 2;
  const c = new Float32Array(B * T * half);
  const s = new Float32Array(B * T * half);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      for (let i = 0; i < half; i++) {
        const angle = (t + 3 * b) * 10000 ** (-i / half);
        c[(b * T + t) * half + i] = Math.cos(angle);
        s[(b * T + t) * half + i] = Math.sin(angle);
      }
    }
  }
  return { cos: tf.tensor3d(c, [B, T, half]), sin: tf.tensor3d(s, [B, T, half]) };
}

function rmsNormComposite(x: tf.Tensor, w: tf.Tensor1D): { y: tf.Tensor; rstd: tf.Tensor } {
  return composition(() => rmsNormForward(x, w, EPS));
}

// Last axis 12, 20, 64 (vec4), 6 (vec2), 5 (scalar), 4100 (the wide-row workgroup); 1, 7, 14
// and 300 rows (several to a workgroup; more than the 16 row slices of the dw reduction).
const NORM_SHAPES = [[1, 12], [7, 20], [2, 7, 64], [7, 6], [3, 5], [300, 20], [2, 4100]].map((s) => [s]);
// B = 2; head_dim 8 and 64 (vec4 pairs), 12 (vec2), 6 (scalar); 1 to 7 positions.
const ROPE_SHAPES: [number, number, number, number][] = [[2, 3, 5, 8], [2, 2, 7, 64], [2, 2, 3, 12], [2, 1, 1, 6]];
const SILU_SHAPES = [[1, 12], [7, 20], [2, 7, 64], [5, 3]].map((s) => [s]);

for (const name of ['cpu', 'webgpu'] as const) {
  describe.skipIf(name === 'webgpu' && !hasWebGPU)(`elementwise kernels on the ${name} backend`, () => {
    beforeAll(async () => {
      const info = await initBackend(name);
      expect(info.name).toBe(name);
      // Otherwise the composition's ops on small tensors run on tfjs's CPU kernels under WebGPU.
      tf.env().set('WEBGPU_CPU_FORWARD', false);
    });

    const gpu = name === 'webgpu';

    describe('RMSNorm', () => {
      it.each(NORM_SHAPES)('forward equals the composition for %j', async (shape: number[]) => {
        const H = shape[shape.length - 1];
        const x = tensor(shape, 1 + H);
        const w = tensor<tf.Tensor1D>([H], 2 + H, 0.5, 1);
        const ref = rmsNormComposite(x, w);
        const { result: own, runs } = kernelRuns('FtRmsNorm', () => rmsNormForward(x, w, EPS));
        expect(runs).toBe(1);
        await expectClose(own.y, ref.y, 'y');
        await expectClose(own.rstd, ref.rstd, 'rstd');
        tf.dispose([x, w, ref.y, ref.rstd, own.y, own.rstd]);
      });

      it.each(NORM_SHAPES)('backward equals the composition and tf.grads of the forward for %j', async (shape: number[]) => {
        const H = shape[shape.length - 1];
        const x = tensor(shape, 3 + H);
        const w = tensor<tf.Tensor1D>([H], 4 + H, 0.5, 1);
        const dy = tensor(shape, 5 + H);
        const { rstd } = rmsNormForward(x, w, EPS);
        const ref = composition(() => rmsNormBackward(dy, x, w, rstd, true));
        // Independent of both: tfjs's own gradients of the forward composition.
        const loss = (a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(rmsNormForward(a, b as tf.Tensor1D, EPS).y, dy));
        const [gx, gw] = composition(() => tf.grads(loss)([x, w]));
        const own = kernelRuns('FtRmsNormGrad', () => rmsNormBackward(dy, x, w, rstd, true));
        expect(own.runs).toBe(1);
        await expectClose(own.result.dx, ref.dx, 'dx');
        await expectClose(own.result.dw!, ref.dw!, 'dw');
        await expectClose(own.result.dx, gx, 'dx against tf.grads');
        await expectClose(own.result.dw!, gw, 'dw against tf.grads');
        const noW = rmsNormBackward(dy, x, w, rstd, false);
        expect(noW.dw).toBeNull();
        await expectClose(noW.dx, ref.dx, 'dx without dw');
        tf.dispose([x, w, dy, rstd, ref.dx, ref.dw!, gx, gw, own.result.dx, own.result.dw!, noW.dx]);
      });

      it('differentiates through the kernel (y and rstd both used) like the composition', async () => {
        const x = tensor([2, 7, 20], 11);
        const w = tensor<tf.Tensor1D>([20], 12, 0.5, 1);
        const dy = tensor([2, 7, 20], 13);
        const dr = tensor([2, 7], 14);
        const loss = (a: tf.Tensor, b: tf.Tensor) => {
          const { y, rstd } = rmsNormForward(a, b as tf.Tensor1D, EPS);
          return tf.add(tf.sum(tf.mul(y, dy)), tf.sum(tf.mul(rstd, dr)));
        };
        const ref = composition(() => tf.grads(loss)([x, w]));
        const own = tf.grads(loss)([x, w]);
        await expectClose(own[0], ref[0], 'dx');
        await expectClose(own[1], ref[1], 'dw');
        tf.dispose([x, w, dy, dr, ...ref, ...own]);
      });

      it.skipIf(!gpu)('runs in two dispatches forward, one backward and two with dw', () => {
        const x = tensor([7, 20], 21);
        const w = tensor<tf.Tensor1D>([20], 22);
        const dy = tensor([7, 20], 23);
        const f = dispatches(() => rmsNormForward(x, w, EPS));
        const b = dispatches(() => rmsNormBackward(dy, x, w, f.result.rstd, false));
        const bw = dispatches(() => rmsNormBackward(dy, x, w, f.result.rstd, true));
        expect([f.count, b.count, bw.count]).toEqual([2, 1, 2]);
        tf.dispose([x, w, dy, f.result.y, f.result.rstd, b.result.dx, bw.result.dx, bw.result.dw!]);
      });
    });

    describe('RoPE', () => {
      it.each(ROPE_SHAPES)('equals the composition, both directions, for [%i, %i, %i, %i]', async (B, heads, T, D) => {
        const x = tensor<tf.Tensor4D>([B, heads, T, D], 31 + D);
        const { cos, sin } = ropeTables(B, T, D);
        for (const inverse of [false, true]) {
          const ref = composition(() => applyRope(x, cos, sin, inverse));
          const own = kernelRuns('FtRope', () => applyRope(x, cos, sin, inverse));
          expect(own.runs).toBe(1);
          await expectClose(own.result, ref, `inverse ${inverse}`);
          tf.dispose([ref, own.result]);
        }
        const back = applyRope(applyRope(x, cos, sin, false), cos, sin, true);
        await expectClose(back, x, 'inverse of the rotation');
        tf.dispose([x, cos, sin, back]);
      });

      it.each(ROPE_SHAPES)('inverse is tf.grad of the composition, and the registered gradient, for [%i, %i, %i, %i]', async (B, heads, T, D) => {
        const x = tensor<tf.Tensor4D>([B, heads, T, D], 41 + D);
        const dy = tensor<tf.Tensor4D>([B, heads, T, D], 42 + D);
        const { cos, sin } = ropeTables(B, T, D);
        const loss = (a: tf.Tensor) => tf.sum(tf.mul(applyRope(a as tf.Tensor4D, cos, sin, false), dy));
        const ref = composition(() => tf.grad(loss)(x));
        const own = applyRope(dy, cos, sin, true);
        const taped = tf.grad(loss)(x);
        await expectClose(own, ref, 'rope(dy, inverse)');
        await expectClose(taped, ref, 'registered gradient');
        tf.dispose([x, dy, cos, sin, ref, own, taped]);
      });

      it.skipIf(!gpu)('runs in one dispatch', () => {
        const x = tensor<tf.Tensor4D>([2, 2, 7, 64], 51);
        const { cos, sin } = ropeTables(2, 7, 64);
        const { result, count } = dispatches(() => applyRope(x, cos, sin, true));
        expect(count).toBe(1);
        tf.dispose([x, cos, sin, result]);
      });
    });

    describe('SiLU·mul', () => {
      /** Gates with some far out in both tails, where a naive sigmoid overflows exp. */
      function gate(shape: number[], seed: number): tf.Tensor {
        const v = values(shape.reduce((a, b) => a * b, 1), seed, 6);
        v[0] = 95;
        v[v.length - 1] = -95;
        if (v.length > 2) v[1] = -30;
        return tf.tensor(v, shape);
      }

      it.each(SILU_SHAPES)('forward and backward equal the composition and tf.grads for %j', async (shape: number[]) => {
        const g = gate(shape, 61 + shape.length);
        const u = tensor(shape, 62);
        const dy = tensor(shape, 63);
        const refY = composition(() => siluMulForward(g, u));
        const ownY = kernelRuns('FtSiluMul', () => siluMulForward(g, u));
        expect(ownY.runs).toBe(1);
        await expectClose(ownY.result, refY, 'silu(gate) · up');
        const ref = composition(() => siluMulBackward(dy, g, u));
        const own = kernelRuns('FtSiluMulGrad', () => siluMulBackward(dy, g, u));
        expect(own.runs).toBe(1);
        await expectClose(own.result.dgate, ref.dgate, 'dgate');
        await expectClose(own.result.dup, ref.dup, 'dup');
        const loss = (a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(siluMulForward(a, b), dy));
        const [gg, gu] = composition(() => tf.grads(loss)([g, u]));
        await expectClose(own.result.dgate, gg, 'dgate against tf.grads');
        await expectClose(own.result.dup, gu, 'dup against tf.grads');
        const [tg, tu] = tf.grads(loss)([g, u]);
        await expectClose(tg, gg, 'registered gradient, gate');
        await expectClose(tu, gu, 'registered gradient, up');
        for (const t of [ownY.result, own.result.dgate, own.result.dup]) {
          expect(Array.from(await t.data()).every(Number.isFinite)).toBe(true);
        }
        tf.dispose([g, u, dy, refY, ownY.result, ref.dgate, ref.dup, own.result.dgate, own.result.dup, gg, gu, tg, tu]);
      });

      it.skipIf(!gpu)('runs in one dispatch forward and two backward', () => {
        const g = tensor([7, 20], 71);
        const u = tensor([7, 20], 72);
        const f = dispatches(() => siluMulForward(g, u));
        const b = dispatches(() => siluMulBackward(u, g, u));
        expect([f.count, b.count]).toEqual([1, 2]);
        tf.dispose([g, u, f.result, b.result.dgate, b.result.dup]);
      });
    });

    it.skipIf(!gpu)('finds its rows when a reduction spreads over more than 65535 workgroups', async () => {
      // 8 rows of 5 to a workgroup; tfjs then spreads the dispatch over x and y. (The elementwise
      // programs index by tfjs's own global index.) tfjs's reductions are far too slow on
      // SwiftShader at this size, so the reference is plain JS.
      const rows = 8 * 65535 + 3;
      const xv = values(rows * 5, 91);
      const wv = values(5, 92, 0.5, 1);
      const x = tf.tensor2d(xv, [rows, 5]);
      const w = tf.tensor1d(wv);
      const { y, rstd } = rmsNormForward(x, w, EPS);
      const { dx } = rmsNormBackward(x, x, w, rstd, false);
      const [yv, rv, dxv] = await Promise.all([y.data(), rstd.data(), dx.data()]);
      let diff = 0;
      for (let r = 0; r < rows; r++) {
        const row = xv.subarray(5 * r, 5 * r + 5);
        const ss = row.reduce((a, v) => a + v * v, 0);
        const k = 1 / Math.sqrt(ss / 5 + EPS);
        const m = row.reduce((a, v, j) => a + v * wv[j] * v, 0);
        diff = Math.max(diff, Math.abs(rv[r] - k));
        for (let j = 0; j < 5; j++) {
          diff = Math.max(diff, Math.abs(yv[5 * r + j] - row[j] * k * wv[j]));
          diff = Math.max(diff, Math.abs(dxv[5 * r + j] - (k * row[j] * wv[j] - ((k * k * k * m) / 5) * row[j])));
        }
      }
      expect(diff).toBeLessThanOrEqual(TOL);
      tf.dispose([x, w, y, rstd, dx]);
    });

    it('leaves exactly its outputs behind, call after call', async () => {
      const x = tensor([2, 7, 20], 81);
      const w = tensor<tf.Tensor1D>([20], 82);
      const x4 = tensor<tf.Tensor4D>([2, 3, 7, 8], 83);
      const { cos, sin } = ropeTables(2, 7, 8);
      const calls: [string, () => tf.Tensor[]][] = [
        ['rmsNormForward', () => Object.values(rmsNormForward(x, w, EPS))],
        [
          'rmsNormBackward',
          () => {
            const f = rmsNormForward(x, w, EPS);
            const b = rmsNormBackward(x, x, w, f.rstd, true);
            tf.dispose([f.y, f.rstd]);
            return [b.dx, b.dw!];
          },
        ],
        ['applyRope', () => [applyRope(x4, cos, sin, false)]],
        ['siluMulForward', () => [siluMulForward(x, x)]],
        ['siluMulBackward', () => Object.values(siluMulBackward(x, x, x))],
      ];
      for (const [label, call] of calls) {
        tf.dispose(call());
        const before = tf.memory().numTensors;
        for (let i = 0; i < 3; i++) {
          const out = call();
          expect(tf.memory().numTensors - before, label).toBe(out.length);
          await Promise.all(out.map((t) => t.data()));
          tf.dispose(out);
        }
        expect(tf.memory().numTensors, label).toBe(before);
      }
      tf.dispose([x, w, x4, cos, sin]);
    });
  });
}
