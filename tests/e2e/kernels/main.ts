// Our kernels against the plain tfjs composition of the same math, on the browser's own WebGPU
// (tests/e2e/kernels.spec.ts opens this page). Each op runs once with our kernels registered and
// once with them unregistered, when the same function falls back to the composition; the page
// reports the largest difference per op.
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../../../src/engine/backend/index.ts';
import { float32ToBits16, frozenWeightF32, gatherWeightRows, linearForward, linearInputGrad, packWeight16, unpackWeight } from '../../../src/engine/backend/kernels/linear.ts';
import { attentionBackward, attentionForward } from '../../../src/engine/backend/kernels/attention.ts';
import { rmsNormBackward, rmsNormForward } from '../../../src/engine/backend/kernels/norm.ts';
import { applyRope } from '../../../src/engine/backend/kernels/rope.ts';
import { siluMulBackward, siluMulForward } from '../../../src/engine/backend/kernels/silu.ts';
import { Rng } from '../../../src/engine/rng.ts';

const rng = new Rng(7);
const rand = (shape: number[], lo = -1, hi = 1) => tf.tensor(rng.uniform(shape.reduce((a, b) => a * b, 1), lo, hi), shape);

/**
 * Runs `f` with our kernels, then with them unregistered (the composition); the largest difference
 * relative to max(1, |value|). The bit-exact widening of 16-bit words stays registered: the
 * composition of a 16-bit product is the float32 product on the widened matrix.
 */
async function compare(f: () => tf.Tensor[]): Promise<number> {
  const ours = f();
  const kernels = tf.getKernelsForBackend('webgpu').filter((k) => k.kernelName.startsWith('Ft') && k.kernelName !== 'FtUnpack16');
  for (const k of kernels) tf.unregisterKernel(k.kernelName, 'webgpu');
  let ref: tf.Tensor[];
  try {
    ref = f();
  } finally {
    for (const k of kernels) tf.registerKernel(k);
  }
  let worst = 0;
  for (let i = 0; i < ours.length; i++) worst = Math.max(worst, difference(await ours[i].data(), await ref[i].data()));
  tf.dispose([...ours, ...ref]);
  return worst;
}

function difference(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity;
  let worst = 0;
  for (let j = 0; j < a.length; j++) worst = Math.max(worst, Math.abs(a[j] - b[j]) / Math.max(1, Math.abs(b[j])));
  return worst;
}

async function run(): Promise<Record<string, number>> {
  const info = await initBackend('webgpu');
  if (info.name !== 'webgpu') throw new Error(`no WebGPU: ${info.fallbackReason}`);
  tf.env().set('WEBGPU_CPU_FORWARD', false);
  const out: Record<string, number> = {
    kernels: tf.getKernelsForBackend('webgpu').filter((k) => k.kernelName.startsWith('Ft')).length,
  };

  const [N, inDim, outDim, r] = [13, 40, 24, 4];
  const x = rand([N, inDim]);
  const dy = rand([N, outDim]);
  const W = rand([outDim, inDim], -0.3, 0.3) as tf.Tensor2D;
  const bias = rand([outDim]) as tf.Tensor1D;
  const xa = rand([N, r]) as tf.Tensor2D;
  const B = rand([outDim, r]) as tf.Tensor2D;
  const g = rand([N, r]) as tf.Tensor2D;
  const A = rand([r, inDim]) as tf.Tensor2D;
  const bf16 = packWeight16(float32ToBits16(await W.data(), 'bfloat16'), [outDim, inDim], 'bfloat16');
  for (const [name, w] of [['f32', frozenWeightF32(W)], ['bf16', bf16]] as const) {
    out[`linear forward ${name}`] = await compare(() => [linearForward(x as tf.Tensor2D, w, bias, { xa, B, scale: 2 })]);
    out[`linear input gradient ${name}`] = await compare(() => [linearInputGrad(dy as tf.Tensor2D, w, { g, A, scale: 2 })]);
  }
  const ids = tf.tensor1d([5, 0, 23, 5], 'int32');
  // The lookup against tfjs's gather of the widened matrix (the same values, exactly).
  const widened = unpackWeight(bf16);
  out['embedding rows bf16'] = difference(await gatherWeightRows(bf16, ids).data(), await tf.gather(widened, ids).data());

  const h = rand([2, 9, 20]);
  const nw = rand([20], 0.5, 1.5) as tf.Tensor1D;
  const dh = rand([2, 9, 20]);
  out['rmsnorm forward'] = await compare(() => {
    const { y, rstd } = rmsNormForward(h, nw, 1e-5);
    return [y, rstd];
  });
  out['rmsnorm backward'] = await compare(() => {
    const { rstd } = rmsNormForward(h, nw, 1e-5);
    const { dx, dw } = rmsNormBackward(dh, h, nw, rstd, true);
    return [dx, dw!, rstd];
  });

  const q = rand([2, 4, 7, 16]) as tf.Tensor4D;
  const cos = rand([2, 7, 8]) as tf.Tensor3D;
  const sin = rand([2, 7, 8]) as tf.Tensor3D;
  out['rope'] = await compare(() => [applyRope(q, cos, sin, false), applyRope(q, cos, sin, true)]);

  const gate = rand([11, 24], -4, 4);
  const up = rand([11, 24]);
  const da = rand([11, 24]);
  out['silu·mul forward'] = await compare(() => [siluMulForward(gate, up)]);
  out['silu·mul backward'] = await compare(() => {
    const { dgate, dup } = siluMulBackward(da, gate, up);
    return [dgate, dup];
  });

  const k = rand([2, 2, 9, 16]) as tf.Tensor4D;
  const v = rand([2, 2, 9, 16]) as tf.Tensor4D;
  const qa = rand([2, 4, 9, 16]) as tf.Tensor4D;
  const dout = rand([2, 4, 9, 16]) as tf.Tensor4D;
  const keyMask = tf.tensor2d([[1, 1, 1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 0, 0, 0]], [2, 9], 'int32');
  const opts = { scale: 0.25, past: 0, keyMask };
  out['attention forward'] = await compare(() => {
    const { out: o, lse } = attentionForward(qa, k, v, opts);
    return [o, lse];
  });
  out['attention backward'] = await compare(() => {
    const { out: o, lse } = attentionForward(qa, k, v, opts);
    const { dq, dk, dv } = attentionBackward(dout, qa, k, v, o, lse, opts);
    return [dq, dk, dv, o, lse];
  });
  return out;
}

const status = document.getElementById('status')!;
run().then(
  (results) => {
    (window as unknown as { kernelResults: unknown }).kernelResults = results;
    status.textContent = 'done';
  },
  (e) => {
    (window as unknown as { kernelResults: unknown }).kernelResults = { error: String(e instanceof Error ? e.stack ?? e.message : e) };
    status.textContent = 'failed';
  },
);
