import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/engine/backend/index.ts';
import { installNodeWebGPU } from '../src/engine/backend/node_webgpu.ts';
import { Rng } from '../src/engine/rng.ts';
await installNodeWebGPU();
tf.env().set('WEBGPU_CPU_FORWARD', false);
const rng = new Rng(1);
const X = rng.uniform(64 * 172, -3, 3);
const Wd = rng.uniform(172 * 64, -0.3, 0.3);
const ANG = Float32Array.from({ length: 512 }, (_, i) => (i % 64) * (1 + (i >> 6) * 0.37));
const ops: Record<string, () => tf.Tensor> = {
  matMul: () => tf.matMul(tf.tensor2d(X, [64, 172]), tf.tensor2d(Wd, [64, 172]), false, true),
  exp: () => tf.exp(tf.tensor1d(X)),
  sigmoid: () => tf.sigmoid(tf.tensor1d(X)),
  rsqrt: () => tf.rsqrt(tf.abs(tf.tensor1d(X))),
  softmax: () => tf.softmax(tf.tensor2d(X, [64, 172])),
  logSumExp: () => tf.logSumExp(tf.mul(tf.tensor2d(X, [64, 172]), 5), 1),
  cos: () => tf.cos(tf.tensor1d(ANG)),
  sin: () => tf.sin(tf.tensor1d(ANG)),
  cosSmall: () => tf.cos(tf.tensor1d(X)),
};
const res: Record<string, Record<string, Float32Array>> = { cpu: {}, webgpu: {} };
for (const b of ['cpu', 'webgpu'] as const) {
  await initBackend(b);
  for (const [k, f] of Object.entries(ops)) { const t = tf.tidy(f); res[b][k] = (await t.data()) as Float32Array; t.dispose(); }
}
for (const k of Object.keys(ops)) {
  const a = res.cpu[k], g = res.webgpu[k]; let w = 0, wi = 0;
  for (let i = 0; i < a.length; i++) { const d = Math.abs(a[i] - g[i]) / Math.max(1e-3, Math.abs(a[i])); if (d > w) { w = d; wi = i; } }
  console.log(k, 'worst rel', w.toExponential(2), 'at', wi, a[wi], g[wi]);
}
