// WebGPU in Node through Dawn, on SwiftShader where there is no GPU. Its own file because tfjs keeps
// one engine per process and vitest's forks pool gives each file its own process.
import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import { initBackend } from '../../src/engine/backend/index.ts';
import { installNodeWebGPU } from '../../src/engine/backend/node_webgpu.ts';
import { Rng } from '../../src/engine/rng.ts';

const hasWebGPU = await installNodeWebGPU();
const title = hasWebGPU
  ? 'the webgpu backend in Node'
  : "the webgpu backend in Node (skipped: Dawn found no adapter; install Debian's chromium for SwiftShader, or set VK_ICD_FILENAMES)";
// The default reporter shows a skipped suite's count, not its title.
if (!hasWebGPU) console.warn(title);

/** Each case's inputs as plain arrays, so the CPU and WebGPU runs see identical numbers. */
const rng = new Rng(42);
const X = rng.uniform(6 * 8, -1, 1); // 6 tokens × hidden 8
const W = rng.uniform(10 * 8, -0.5, 0.5); // vocab 10 × hidden 8, an nn.Linear weight [out, in]
const LABELS = Int32Array.from([3, 0, 9, 4, 4, 7]);
const TRAINABLE = Uint8Array.from([1, 1, 0, 1, 0, 1]);
const A = rng.uniform(2 * 4 * 8 * 16, -1, 1);
const B = rng.uniform(2 * 4 * 16 * 8, -1, 1);

type Results = Record<string, Float32Array | Int32Array | Uint8Array>;

/** Token-mean NLL of the trainable tokens, and its gradients, as a trainer step computes them. */
async function lossAndGrads(): Promise<Results> {
  const w = tf.tidy(() => tf.variable(tf.tensor2d(W, [10, 8])));
  const { value, grads } = tf.variableGrads(() => {
    const x = tf.tensor2d(X, [6, 8]);
    const labels = tf.tensor1d(LABELS, 'int32');
    const mask = tf.tensor1d(TRAINABLE, 'bool');
    const logp = tf.logSoftmax(tf.matMul(x, w, false, true));
    const picked = tf.gather(logp, labels, 1, 1);
    const kept = tf.where(mask, picked, tf.zerosLike(picked));
    return tf.neg(tf.div(tf.sum(kept), tf.sum(tf.cast(mask, 'float32'))));
  }, [w]);
  const out = { loss: await value.data(), dW: await grads[w.name].data() } as Results;
  tf.dispose([value, grads[w.name], w]);
  return out;
}

/** Attention-shaped batched products with a causal mask applied by tf.where, and their input gradients. */
async function batchedAndMasked(): Promise<Results> {
  const f = (a: tf.Tensor, b: tf.Tensor) => {
    const scores = tf.matMul(a, b); // [2,4,8,16] × [2,4,16,8] → [2,4,8,8]
    const causal = tf.linalg.bandPart(tf.ones([8, 8], 'bool'), -1, 0) as tf.Tensor;
    const masked = tf.where(tf.broadcastTo(causal, scores.shape), scores, tf.fill(scores.shape, -1e9));
    return tf.sum(tf.mul(tf.softmax(masked), scores));
  };
  const a = tf.tensor4d(A, [2, 4, 8, 16]);
  const b = tf.tensor4d(B, [2, 4, 16, 8]);
  const product = tf.matMul(a, b);
  const { value, grads } = tf.valueAndGrads(f)([a, b]);
  const out = {
    product: await product.data(),
    value: await value.data(),
    dA: await grads[0].data(),
    dB: await grads[1].data(),
  } as Results;
  tf.dispose([a, b, product, value, ...grads]);
  return out;
}

function expectClose(actual: Results, expected: Results, tol: number): void {
  expect(Object.keys(actual)).toEqual(Object.keys(expected));
  for (const key of Object.keys(expected)) {
    const e = expected[key];
    const a = actual[key];
    expect(a.length, key).toBe(e.length);
    let worst = 0;
    for (let i = 0; i < e.length; i++) worst = Math.max(worst, Math.abs(a[i] - e[i]) / Math.max(1, Math.abs(e[i])));
    expect(worst, `${key}: worst relative difference`).toBeLessThanOrEqual(tol);
  }
}

async function onBackend<T>(name: 'cpu' | 'webgpu', f: () => Promise<T>): Promise<T> {
  const info = await initBackend(name);
  expect(info.name).toBe(name);
  return f();
}

describe.skipIf(!hasWebGPU)(title, () => {
  beforeAll(() => {
    // Otherwise ops on small tensors that have not been uploaded yet run on tfjs's CPU kernels,
    // and a comparison with the CPU would compare the CPU with itself.
    tf.env().set('WEBGPU_CPU_FORWARD', false);
  });

  it('initialises with the adapter described and its maximum limits granted', async () => {
    const info = await initBackend('auto');
    expect(info.name).toBe('webgpu');
    expect(info.fallbackReason).toBeUndefined();
    expect(info.adapter?.description).toBeTruthy();
    // The WebGPU defaults are 256 MiB and 128 MiB; every adapter we target offers more.
    expect(info.limits?.maxBufferSize).toBeGreaterThan(256 * 2 ** 20);
    expect(info.limits?.maxStorageBufferBindingSize).toBeGreaterThan(128 * 2 ** 20);
    expect(tf.backend()).toBeInstanceOf(WebGPUBackend);
    console.log('webgpu adapter:', JSON.stringify(info));

    const again = await initBackend('webgpu');
    expect(again.limits).toEqual(info.limits);
  });

  it('keeps results on the GPU, so nothing silently ran on the CPU', async () => {
    await initBackend('webgpu');
    const x = tf.tensor2d([1, 2, 3, 4], [2, 2]);
    const y = tf.matMul(x, x);
    const backend = tf.backend() as WebGPUBackend;
    expect(backend.tensorMap.get(y.dataId).resource).toBeDefined();
    expect(Array.from(await y.data())).toEqual([7, 10, 15, 22]);
    tf.dispose([x, y]);
  });

  it('gives the CPU backend’s loss and gradients for a gathered log-softmax', async () => {
    const cpu = await onBackend('cpu', lossAndGrads);
    const gpu = await onBackend('webgpu', lossAndGrads);
    expectClose(gpu, cpu, 1e-5);
  });

  it('gives the CPU backend’s batched matMul and tf.where masking, forward and backward', async () => {
    const cpu = await onBackend('cpu', batchedAndMasked);
    const gpu = await onBackend('webgpu', batchedAndMasked);
    expectClose(gpu, cpu, 1e-5);
  });

  it('leaks no tensors across repeated steps', async () => {
    await initBackend('webgpu');
    await lossAndGrads();
    const before = tf.memory().numTensors;
    await lossAndGrads();
    await lossAndGrads();
    expect(tf.memory().numTensors).toBe(before);
  });

  it('times a tiny matMul (reported, not asserted)', async () => {
    const time = async (name: 'cpu' | 'webgpu', n: number, iterations: number) => {
      await initBackend(name);
      const a = tf.randomUniform([n, n]);
      const run = async () => {
        const c = tf.matMul(a, a);
        await c.data();
        c.dispose();
      };
      await run(); // compiles the pipeline on webgpu
      const t0 = performance.now();
      for (let i = 0; i < iterations; i++) await run();
      a.dispose();
      return (performance.now() - t0) / iterations;
    };
    const gpu = await time('webgpu', 64, 20);
    const cpu = await time('cpu', 64, 20);
    console.log(`matMul 64×64 with readback: webgpu ${gpu.toFixed(2)} ms, cpu ${cpu.toFixed(2)} ms`);
  });
});
