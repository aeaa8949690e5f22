/** Plain JavaScript reference kernel for the rotary position embedding on tfjs's CPU backend. */
import type * as tf from '@tensorflow/tfjs';
import type { MathBackendCPU } from '@tensorflow/tfjs-backend-cpu';

export const ropeCpuKernels: tf.KernelConfig[] = [
  {
    kernelName: 'FtRope',
    backendName: 'cpu',
    kernelFunc: ({ inputs, backend, attrs }) => {
      const { x, cos, sin } = inputs as { x: tf.TensorInfo; cos: tf.TensorInfo; sin: tf.TensorInfo };
      const b = backend as MathBackendCPU;
      const xv = b.data.get(x.dataId).values as Float32Array;
      const cv = b.data.get(cos.dataId).values as Float32Array;
      const sv = b.data.get(sin.dataId).values as Float32Array;
      const sign = attrs!.inverse ? -1 : 1;
      const [B, heads, T, D] = x.shape;
      const half = D / 2;
      const out = new Float32Array(xv.length);
      for (let bi = 0; bi < B; bi++) {
        for (let h = 0; h < heads; h++) {
          for (let t = 0; t < T; t++) {
            const lo = ((bi * heads + h) * T + t) * D;
            const cs = (bi * T + t) * half;
            for (let i = 0; i < half; i++) {
              const c = cv[cs + i];
              const s = sign * sv[cs + i];
              const x1 = xv[lo + i];
              const x2 = xv[lo + half + i];
              out[lo + i] = x1 * c - x2 * s;
              out[lo + half + i] = x2 * c + x1 * s;
            }
          }
        }
      }
      return b.makeTensorInfo(x.shape, 'float32', out);
    },
  },
];
