/**
 * Writing new keys (or values) into a static KV cache, as transformers' StaticCache does with
 * `index_copy_`: the cache [B, kv_heads, S, D] is allocated once at its final length, and each
 * forward pass writes its T positions at slots position .. position + T - 1. The cache never
 * changes shape, so no decode step meets a tensor shape it has not met before.
 *
 * `FtKVCacheWrite` (WebGPU, CPU, WASM) writes in place and returns the same buffer under a new
 * tensor handle, as tfjs's Reshape returns its input's buffer: the caller swaps its handle for
 * the returned one and disposes the old. Writing in place is safe because nothing else holds the
 * cache, and reads of it issued before the write have already run (CPU, WASM) or are queued
 * ahead of it (WebGPU). Where the kernel is not registered the write is the composition below, a
 * new tensor of the same shape (the reference the kernels are held to).
 */
import * as tf from '@tensorflow/tfjs';
import { hasKernel, registerKernels } from './registry.ts';
import { kvCacheCpuKernels } from './kv_cache.cpu.ts';
import { kvCacheWebGPUKernels } from './kv_cache.wgsl.ts';

registerKernels([...kvCacheWebGPUKernels, ...kvCacheCpuKernels]);

/**
 * cache [B, kv_heads, S, D] with update [B, kv_heads, T, D] written at slots position ..
 * position + T - 1. The result may share `cache`'s buffer, whose contents then change: dispose
 * `cache` and keep the result.
 */
export function writeKVCache(cache: tf.Tensor4D, update: tf.Tensor4D, position: number): tf.Tensor4D {
  const [B, KV, S, D] = cache.shape;
  const T = update.shape[2];
  if (!tf.util.arraysEqual(update.shape, [B, KV, T, D]) || position < 0 || position + T > S) {
    throw new Error(`KV cache write of [${update.shape}] at slot ${position} does not fit a cache of [${cache.shape}]`);
  }
  if (hasKernel('FtKVCacheWrite', [cache, update])) {
    return tf.engine().runKernel('FtKVCacheWrite', { cache, update }, { position }) as tf.Tensor4D;
  }
  return composedKVCacheWrite(cache, update, position);
}

/** writeKVCache as a tfjs composition: a new tensor, `cache` unchanged. */
export function composedKVCacheWrite(cache: tf.Tensor4D, update: tf.Tensor4D, position: number): tf.Tensor4D {
  return tf.tidy(() => {
    const S = cache.shape[2];
    const T = update.shape[2];
    const slots = new Uint8Array(S).fill(1, position, position + T);
    const padded = tf.pad(update, [[0, 0], [0, 0], [position, S - position - T], [0, 0]]);
    return tf.where(tf.tensor4d(slots, [1, 1, S, 1], 'bool'), padded, cache) as tf.Tensor4D;
  });
}
