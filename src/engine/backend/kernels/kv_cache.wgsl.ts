/**
 * `FtKVCacheWrite` on WebGPU: one dispatch, one thread per element of the update, writing into
 * the cache's own buffer (runWebGPUProgram's `output` argument), so nothing else is copied. The
 * write position is a uniform, so every decode step runs the same pipeline.
 */
import type * as tf from '@tensorflow/tfjs';
import type { WebGPUBackend, WebGPUProgram } from '@tensorflow/tfjs-backend-webgpu';

class KVCacheWriteProgram implements WebGPUProgram {
  variableNames = ['update'];
  outputShape: number[];
  shaderKey = 'ft_kv_cache_write';
  dispatchLayout = { x: [0] };
  dispatch: [number, number, number];
  workgroupSize: [number, number, number] = [64, 1, 1];
  uniforms = 'slots : i32, seq : i32, headDim : i32, position : i32, threads : i32,';

  /** `cacheSize` = B · kv_heads · S · D; `threads` = the update's size. */
  constructor(cacheSize: number, threads: number) {
    this.outputShape = [cacheSize];
    this.dispatch = [Math.ceil(threads / this.workgroupSize[0]), 1, 1];
  }

  getUserCode(): string {
    return `
      fn main(i : i32) {
        if (i >= uniforms.threads) { return; }
        let D = uniforms.headDim;
        let d = i % D;
        let t = (i / D) % uniforms.seq;
        let row = i / (D * uniforms.seq);   // (b, kv head)
        result[(row * uniforms.slots + uniforms.position + t) * D + d] = update[i];
      }`;
  }
}

export const kvCacheWebGPUKernels: tf.KernelConfig[] = [
  {
    kernelName: 'FtKVCacheWrite',
    backendName: 'webgpu',
    kernelFunc: ({ inputs, backend, attrs }) => {
      const { cache, update } = inputs as { cache: tf.TensorInfo; update: tf.TensorInfo };
      const b = backend as WebGPUBackend;
      const [B, KV, S, D] = cache.shape;
      const T = update.shape[2];
      const threads = B * KV * T * D;
      const flat = (t: tf.TensorInfo) => ({ ...t, shape: [t.shape.reduce((x, y) => x * y, 1)] });
      b.runWebGPUProgram(
        new KVCacheWriteProgram(B * KV * S * D, threads),
        [flat(update)],
        'float32',
        [
          { type: 'int32', data: [S] },
          { type: 'int32', data: [T] },
          { type: 'int32', data: [D] },
          { type: 'int32', data: [attrs!.position as number] },
          { type: 'int32', data: [threads] },
        ],
        flat(cache),
      );
      // The output is the cache's own buffer, counted once more, as Reshape returns its input's.
      b.incRef(cache.dataId);
      return { dataId: cache.dataId, shape: cache.shape, dtype: cache.dtype };
    },
  },
];
