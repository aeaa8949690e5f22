// The fused causal GQA attention kernels (FtAttention, FtAttentionGrad) against the tfjs
// composition they replace, on the CPU backend and on WebGPU (Dawn in Node; SwiftShader where
// there is no GPU), and the composition's backward against tf.grads of a plain softmax attention.
// Values are read with `await data()`: dataSync throws on WebGPU in Node. Shapes stay small,
// since SwiftShader is slow.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { countDispatches } from '../../src/engine/backend/dispatches.ts';
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import { tileRows } from '../../src/engine/backend/kernels/attention.wgsl.ts';
import { initBackend, type BackendName } from '../../src/engine/backend/index.ts';
import { installNodeWebGPU } from '../../src/engine/backend/node_webgpu.ts';
import {
  attentionBackward,
  attentionForward,
  composedAttentionBackward,
  composedAttentionForward,
  type AttentionOptions,
} from '../../src/engine/backend/kernels/attention.ts';

const hasWebGPU = await installNodeWebGPU();
const webgpuTitle = hasWebGPU
  ? 'fused attention on the webgpu backend'
  : "fused attention on the webgpu backend (skipped: Dawn found no WebGPU adapter; install Debian's chromium for SwiftShader, or set VK_ICD_FILENAMES)";
// The default reporter shows a skipped suite's count, not its title.
if (!hasWebGPU) console.warn(webgpuTitle);

/**
 * Absolute below magnitude 1, relative above: rows that see no key sum over all S keys, and their
 * gradients reach the hundreds, where float32 rounding alone is a few 1e-5.
 */
const TOL = 1e-5;

interface Case {
  name: string;
  B: number;
  H: number;
  KV: number;
  T: number;
  D: number;
  past: number;
  /** [B][S] with S = past + T. */
  mask?: number[][];
  maskDtype?: 'int32' | 'float32' | 'bool';
}

const ones = (n: number) => Array<number>(n).fill(1);
const padRight = (real: number, S: number) => [...ones(real), ...Array<number>(S - real).fill(0)];
const padLeft = (pad: number, S: number) => [...Array<number>(pad).fill(0), ...ones(S - pad)];

const CASES: Case[] = [
  { name: 'GQA H=4 KV=2, T=5, D=8', B: 1, H: 4, KV: 2, T: 5, D: 8, past: 0 },
  { name: 'MHA H=KV=3, T=17, D=16', B: 2, H: 3, KV: 3, T: 17, D: 16, past: 0 },
  { name: 'GQA H=4 KV=2, T=40, D=64', B: 1, H: 4, KV: 2, T: 40, D: 64, past: 0 },
  { name: 'GQA H=2 KV=1, T=9, D=128', B: 1, H: 2, KV: 1, T: 9, D: 128, past: 0 },
  { name: 'KV cache past=6, T=1, GQA, D=16', B: 2, H: 4, KV: 2, T: 1, D: 16, past: 6 },
  {
    name: 'KV cache past=5, T=3, MHA, D=8, right padding',
    B: 2, H: 3, KV: 3, T: 3, D: 8, past: 5, mask: [ones(8), padRight(6, 8)],
  },
  {
    name: 'right padding, T=17, GQA, D=16 (float32 mask)',
    B: 2, H: 4, KV: 2, T: 17, D: 16, past: 0, mask: [ones(17), padRight(11, 17)], maskDtype: 'float32',
  },
  {
    // Rows 0..5 of the second sequence see no key at all; the third sees none anywhere.
    name: 'left padding with fully masked rows, T=40, GQA, D=8',
    B: 3, H: 4, KV: 2, T: 40, D: 8, past: 0, mask: [ones(40), padLeft(6, 40), Array<number>(40).fill(0)],
  },
  {
    // Queries at positions 4 and 5 of the second sequence see no key (bool mask).
    name: 'KV cache past=4, T=3, left padding with fully masked rows, MHA, D=16',
    B: 2, H: 3, KV: 3, T: 3, D: 16, past: 4, mask: [padLeft(1, 7), padLeft(6, 7)], maskDtype: 'bool',
  },
];

interface Inputs {
  q: tf.Tensor4D;
  k: tf.Tensor4D;
  v: tf.Tensor4D;
  dout: tf.Tensor4D;
  opts: AttentionOptions;
  /** [B, H, T] 1 where the query row sees at least one key. */
  rowSeesKey: Float32Array;
}

function makeInputs(c: Case): Inputs {
  const S = c.past + c.T;
  const keyMask = c.mask != null ? tf.tensor2d(c.mask, [c.B, S], c.maskDtype ?? 'int32') : undefined;
  const rowSeesKey = new Float32Array(c.B * c.H * c.T);
  for (let b = 0; b < c.B; b++) {
    for (let h = 0; h < c.H; h++) {
      for (let t = 0; t < c.T; t++) {
        const seen = c.mask == null || c.mask[b].slice(0, c.past + t + 1).some((m) => m !== 0);
        rowSeesKey[(b * c.H + h) * c.T + t] = seen ? 1 : 0;
      }
    }
  }
  return {
    q: tf.randomNormal([c.B, c.H, c.T, c.D], 0, 1, 'float32', 1),
    k: tf.randomNormal([c.B, c.KV, S, c.D], 0, 1, 'float32', 2),
    v: tf.randomNormal([c.B, c.KV, S, c.D], 0, 1, 'float32', 3),
    dout: tf.randomNormal([c.B, c.H, c.T, c.D], 0, 1, 'float32', 4),
    opts: { scale: 1 / Math.sqrt(c.D), past: c.past, keyMask },
    rowSeesKey,
  };
}

function disposeInputs(x: Inputs): void {
  tf.dispose([x.q, x.k, x.v, x.dout]);
  x.opts.keyMask?.dispose();
}

/** max |a − b| / max(1, |b|) elementwise. */
async function maxDiff(a: tf.Tensor, b: tf.Tensor): Promise<number> {
  expect(a.shape).toEqual(b.shape);
  const [x, y] = await Promise.all([a.data(), b.data()]);
  let m = 0;
  for (let i = 0; i < x.length; i++) {
    const d = Math.abs(x[i] - y[i]) / Math.max(1, Math.abs(y[i]));
    if (!(d <= m)) m = d; // NaN wins
  }
  return m;
}


/** The fused kernels against the composition, on whichever backend is active. */
function fusedMatchesComposition(backend: BackendName): void {
  const dispatchLog: string[] = [];
  const diffLog: string[] = [];
  afterAll(() => {
    console.log(`${backend}: largest difference from the composition (relative above 1):\n  ${diffLog.join('\n  ')}`);
    if (backend !== 'webgpu') return;
    const storage = (tf.backend() as WebGPUBackend).device.limits.maxComputeWorkgroupStorageSize;
    const tiles = [8, 16, 64, 128].map((d) => `D=${d}: ${tileRows(d, storage)}`).join(', ');
    console.log(`webgpu dispatches per call (workgroup storage ${storage} B; tile rows ${tiles}):\n  ${dispatchLog.join('\n  ')}`);
  });

  it('runs our kernels, not the composition', async () => {
    const x = makeInputs(CASES[0]);
    const fwd = await tf.profile(() => {
      const { out, lse } = attentionForward(x.q, x.k, x.v, x.opts);
      return [out, lse];
    });
    expect(fwd.kernelNames).toEqual(['FtAttention']);
    const { out, lse } = attentionForward(x.q, x.k, x.v, x.opts);
    const bwd = await tf.profile(() => Object.values(attentionBackward(x.dout, x.q, x.k, x.v, out, lse, x.opts)));
    expect(bwd.kernelNames).toEqual(['FtAttentionGrad']);
    tf.dispose([out, lse]);
    disposeInputs(x);
  });

  for (const c of CASES) {
    it(`equals the composition within ${TOL}: ${c.name}`, async () => {
      const x = makeInputs(c);
      const before = tf.memory().numTensors;
      const ref = composedAttentionForward(x.q, x.k, x.v, x.opts);
      const refGrads = composedAttentionBackward(x.dout, x.q, x.k, x.v, ref.out, ref.lse, x.opts);

      const fwd = countDispatches(() => attentionForward(x.q, x.k, x.v, x.opts));
      const { out, lse } = fwd.result;
      const bwd = countDispatches(() => attentionBackward(x.dout, x.q, x.k, x.v, out, lse, x.opts));
      const grads = bwd.result;
      dispatchLog.push(`${c.name}: forward ${fwd.dispatches}, backward ${bwd.dispatches}`);
      if (backend === 'webgpu') {
        expect(fwd.dispatches).toBe(2);
        expect(bwd.dispatches).toBe(3);
      }

      const diffs = {
        out: await maxDiff(out, ref.out),
        lse: await maxDiff(lse, ref.lse),
        dq: await maxDiff(grads.dq, refGrads.dq),
        dk: await maxDiff(grads.dk, refGrads.dk),
        dv: await maxDiff(grads.dv, refGrads.dv),
      };
      diffLog.push(`${c.name}: ${Object.entries(diffs).map(([n, d]) => `${n} ${d.toExponential(1)}`).join(', ')}`);
      for (const [name, d] of Object.entries(diffs)) expect(d, name).toBeLessThanOrEqual(TOL);
      const values = await out.data();
      expect(values.every(Number.isFinite)).toBe(true);

      tf.dispose([ref.out, ref.lse, refGrads.dq, refGrads.dk, refGrads.dv, out, lse, grads.dq, grads.dk, grads.dv]);
      expect(tf.memory().numTensors).toBe(before);
      disposeInputs(x);
    });
  }

  it('keeps the tensor count flat across calls', async () => {
    const x = makeInputs(CASES[7]);
    const step = () => {
      const { out, lse } = attentionForward(x.q, x.k, x.v, x.opts);
      const g = attentionBackward(x.dout, x.q, x.k, x.v, out, lse, x.opts);
      tf.dispose([out, lse, g.dq, g.dk, g.dv]);
    };
    step();
    const before = tf.memory().numTensors;
    for (let i = 0; i < 3; i++) step();
    expect(tf.memory().numTensors).toBe(before);
    disposeInputs(x);
  });
}

describe('fused attention on the cpu backend', () => {
  beforeAll(async () => {
    expect((await initBackend('cpu')).name).toBe('cpu');
  });

  fusedMatchesComposition('cpu');

  // An independent reference: tf.grads of softmax(q·kᵀ·scale + mask)·v with k and v repeated per
  // query head. Rows that see no key differ by design (plain softmax averages all S keys; the
  // composition, whose lse = −1e30 + log S rounds to −1e30 in float32, weighs each by 1), so
  // their outputs are left out and their dout is zero, as it is in training.
  for (const c of CASES) {
    it(`composition backward equals tf.grads of a plain softmax attention: ${c.name}`, async () => {
      const x = makeInputs(c);
      const S = c.past + c.T;
      const G = c.H / c.KV;
      const seen = tf.tensor4d(x.rowSeesKey, [c.B, c.H, c.T, 1]);
      const dout = tf.mul(x.dout, seen) as tf.Tensor4D;
      const plain = (q: tf.Tensor, k: tf.Tensor, v: tf.Tensor) => {
        const heads = tf.tensor1d(Array.from({ length: c.H }, (_, h) => Math.floor(h / G)), 'int32');
        const scores = tf.mul(tf.matMul(q, tf.gather(k, heads, 1), false, true), x.opts.scale);
        const qpos = tf.reshape(tf.range(c.past, S, 1, 'int32'), [c.T, 1]);
        let allowed = tf.reshape(tf.lessEqual(tf.reshape(tf.range(0, S, 1, 'int32'), [1, S]), qpos), [1, 1, c.T, S]);
        if (x.opts.keyMask) allowed = tf.logicalAnd(allowed, tf.reshape(tf.cast(x.opts.keyMask, 'bool'), [c.B, 1, 1, S]));
        const probs = tf.softmax(tf.where(allowed, scores, tf.fill(scores.shape, -1e30)));
        return tf.matMul(probs, tf.gather(v, heads, 1)) as tf.Tensor4D;
      };
      const [dq, dk, dv] = tf.grads((q, k, v) => tf.sum(tf.mul(plain(q, k, v), dout)))([x.q, x.k, x.v]);
      const ref = composedAttentionForward(x.q, x.k, x.v, x.opts);
      const g = composedAttentionBackward(dout, x.q, x.k, x.v, ref.out, ref.lse, x.opts);
      const plainOut = tf.mul(plain(x.q, x.k, x.v), seen);
      expect(await maxDiff(tf.mul(ref.out, seen), plainOut), 'out').toBeLessThanOrEqual(TOL);
      expect(await maxDiff(g.dq, dq), 'dq').toBeLessThanOrEqual(TOL);
      expect(await maxDiff(g.dk, dk), 'dk').toBeLessThanOrEqual(TOL);
      expect(await maxDiff(g.dv, dv), 'dv').toBeLessThanOrEqual(TOL);
      disposeInputs(x);
    });
  }

  it('gives a row that sees no key the sum of v over all S keys, as the composition does', async () => {
    const c = CASES[7];
    const x = makeInputs(c);
    const { out } = attentionForward(x.q, x.k, x.v, x.opts);
    // Third sequence (b = 2): every key masked; query head 0 reads kv head 0.
    const row = tf.slice(out, [2, 0, 0, 0], [1, 1, 1, c.D]).reshape([c.D]);
    const sum = tf.sum(tf.slice(x.v, [2, 0, 0, 0], [1, 1, c.T, c.D]), [0, 1, 2]);
    expect(await maxDiff(row, sum)).toBeLessThanOrEqual(TOL);
    disposeInputs(x);
  });
});

describe.skipIf(!hasWebGPU)(webgpuTitle, () => {
  beforeAll(async () => {
    expect((await initBackend('webgpu')).name).toBe('webgpu');
    // Otherwise ops on small tensors not yet uploaded run on tfjs's CPU kernels.
    tf.env().set('WEBGPU_CPU_FORWARD', false);
  });

  fusedMatchesComposition('webgpu');
});
