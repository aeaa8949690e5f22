/** Plain JavaScript reference kernels for RMSNorm and its gradient on tfjs's CPU backend. */
import type * as tf from '@tensorflow/tfjs';
import type { MathBackendCPU } from '@tensorflow/tfjs-backend-cpu';

function values(b: MathBackendCPU, t: tf.TensorInfo): Float32Array {
  return b.data.get(t.dataId).values as Float32Array;
}

export const normCpuKernels: tf.KernelConfig[] = [
  {
    kernelName: 'FtRmsNorm',
    backendName: 'cpu',
    kernelFunc: ({ inputs, backend, attrs }) => {
      const { x, w } = inputs as { x: tf.TensorInfo; w: tf.TensorInfo };
      const b = backend as MathBackendCPU;
      const xv = values(b, x);
      const wv = values(b, w);
      const eps = attrs!.eps as number;
      const H = x.shape[x.shape.length - 1];
      const rows = xv.length / H;
      const y = new Float32Array(xv.length);
      const rstd = new Float32Array(rows);
      for (let r = 0; r < rows; r++) {
        const o = r * H;
        let ss = 0;
        for (let j = 0; j < H; j++) ss += xv[o + j] * xv[o + j];
        const k = 1 / Math.sqrt(ss / H + eps);
        rstd[r] = k;
        for (let j = 0; j < H; j++) y[o + j] = xv[o + j] * k * wv[j];
      }
      return [b.makeTensorInfo(x.shape, 'float32', y), b.makeTensorInfo(x.shape.slice(0, -1), 'float32', rstd)];
    },
  },
  {
    kernelName: 'FtRmsNormGrad',
    backendName: 'cpu',
    kernelFunc: ({ inputs, backend, attrs }) => {
      const { dy, x, w, rstd } = inputs as { dy: tf.TensorInfo; x: tf.TensorInfo; w: tf.TensorInfo; rstd: tf.TensorInfo };
      const b = backend as MathBackendCPU;
      const dyv = values(b, dy);
      const xv = values(b, x);
      const wv = values(b, w);
      const rv = values(b, rstd);
      const H = x.shape[x.shape.length - 1];
      const rows = xv.length / H;
      const dx = new Float32Array(xv.length);
      const dw = attrs!.weightGrad ? new Float64Array(H) : null;
      for (let r = 0; r < rows; r++) {
        const o = r * H;
        const k = rv[r];
        let dot = 0;
        for (let j = 0; j < H; j++) dot += dyv[o + j] * wv[j] * xv[o + j];
        const c = (k * k * k * dot) / H;
        for (let j = 0; j < H; j++) dx[o + j] = k * dyv[o + j] * wv[j] - c * xv[o + j];
        if (dw != null) for (let j = 0; j < H; j++) dw[j] += dyv[o + j] * xv[o + j] * k;
      }
      const out = [b.makeTensorInfo(x.shape, 'float32', dx)];
      if (dw != null) out.push(b.makeTensorInfo([H], 'float32', Float32Array.from(dw)));
      return out;
    },
  },
];
