/**
 * `FtKVCacheWrite` for tfjs's CPU and WASM backends: both keep a tensor's values in memory the
 * kernel can write (a typed array; the WebAssembly heap), so the write is a row copy in place.
 */
import type * as tf from '@tensorflow/tfjs';
import type { MathBackendCPU } from '@tensorflow/tfjs-backend-cpu';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';

/** Copies each [T, D] block of update into its (b, kv head) row of cache at `position`. */
function writeRows(cache: Float32Array, update: Float32Array, [B, KV, S, D]: number[], T: number, position: number): void {
  for (let row = 0; row < B * KV; row++) {
    cache.set(update.subarray(row * T * D, (row + 1) * T * D), (row * S + position) * D);
  }
}

function kernel(backendName: 'cpu' | 'wasm', values: (backend: unknown, t: tf.TensorInfo) => Float32Array): tf.KernelConfig {
  return {
    kernelName: 'FtKVCacheWrite',
    backendName,
    kernelFunc: ({ inputs, backend, attrs }) => {
      const { cache, update } = inputs as { cache: tf.TensorInfo; update: tf.TensorInfo };
      writeRows(values(backend, cache), values(backend, update), cache.shape, update.shape[2], attrs!.position as number);
      // The output is the cache's own buffer, counted once more, as Reshape returns its input's.
      (backend as tf.KernelBackend).incRef(cache.dataId);
      return { dataId: cache.dataId, shape: cache.shape, dtype: cache.dtype };
    },
  };
}

export const kvCacheCpuKernels: tf.KernelConfig[] = [
  kernel('cpu', (b, t) => (b as MathBackendCPU).data.get(t.dataId).values as Float32Array),
  // A view of the heap, taken at each call: the heap's buffer changes whenever it grows.
  kernel('wasm', (b, t) => (b as BackendWasm).typedArrayFromHeap(t) as Float32Array),
];
