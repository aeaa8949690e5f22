// What the generate tests on every backend check the same way: greedy decoding without a cache
// (the reference the static KV cache is held to) and the in-place cache write.
import { expect } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { composedKVCacheWrite, writeKVCache } from '../../../src/engine/backend/kernels/kv_cache.ts';
import type { CausalLM } from '../../../src/engine/model/llama.ts';
import { Rng } from '../../../src/engine/rng.ts';

/** Greedy decoding without a cache: the whole unpadded sequence through the model at every step. */
export function greedyNoCache(model: CausalLM, ids: number[], n: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const next = tf.tidy(() => {
      const h = model.forward(tf.tensor2d([[...ids, ...out]], undefined, 'int32'));
      return tf.argMax(model.logits(tf.slice(h, [0, ids.length + out.length - 1, 0], [1, 1, -1])), -1).dataSync()[0];
    });
    out.push(next);
  }
  return out;
}

/**
 * writeKVCache writes `T` positions at `position` of a [2, 3, 7, headDim] cache in place (the
 * same buffer under a new handle) and gives what the tfjs composition gives, leaking no tensor.
 */
export async function expectKVCacheWritesInPlace(cases: [T: number, position: number][], headDim: number): Promise<void> {
  const rng = new Rng(3);
  for (const [T, position] of cases) {
    const cache = tf.tensor4d(rng.uniform(2 * 3 * 7 * headDim, -1, 1), [2, 3, 7, headDim]);
    const update = tf.tensor4d(rng.uniform(2 * 3 * T * headDim, -1, 1), [2, 3, T, headDim]);
    const expected = composedKVCacheWrite(cache, update, position);
    const tensors = tf.memory().numTensors;
    const written = writeKVCache(cache, update, position);
    // Disposing the old handle keeps the buffer the new one holds.
    expect(written.dataId).toBe(cache.dataId);
    cache.dispose();
    expect(Array.from(await written.data())).toEqual(Array.from(await expected.data()));
    expect(tf.memory().numTensors).toBe(tensors);
    tf.dispose([written, update, expected]);
  }
}
