/** Plain JavaScript reference kernels for silu(gate) · up and its gradient on tfjs's CPU backend. */
import type * as tf from '@tensorflow/tfjs';
import type { MathBackendCPU } from '@tensorflow/tfjs-backend-cpu';

/** σ(v) without overflow: exp of a non-positive number only. */
function sigmoidStable(v: number): number {
  const e = Math.exp(-Math.abs(v));
  return v >= 0 ? 1 / (1 + e) : e / (1 + e);
}

function cpuValues(backend: MathBackendCPU, t: tf.TensorInfo): Float32Array {
  return backend.data.get(t.dataId).values as Float32Array;
}

export const siluCpuKernels: tf.KernelConfig[] = [
  {
    kernelName: 'FtSiluMul',
    backendName: 'cpu',
    kernelFunc: ({ inputs, backend }) => {
      const { gate, up } = inputs as { gate: tf.TensorInfo; up: tf.TensorInfo };
      const b = backend as MathBackendCPU;
      const g = cpuValues(b, gate);
      const u = cpuValues(b, up);
      const out = new Float32Array(g.length);
      for (let i = 0; i < g.length; i++) out[i] = g[i] * sigmoidStable(g[i]) * u[i];
      return b.makeTensorInfo(gate.shape, 'float32', out);
    },
  },
  {
    kernelName: 'FtSiluMulGrad',
    backendName: 'cpu',
    kernelFunc: ({ inputs, backend }) => {
      const { dy, gate, up } = inputs as { dy: tf.TensorInfo; gate: tf.TensorInfo; up: tf.TensorInfo };
      const b = backend as MathBackendCPU;
      const d = cpuValues(b, dy);
      const g = cpuValues(b, gate);
      const u = cpuValues(b, up);
      const dgate = new Float32Array(g.length);
      const dup = new Float32Array(g.length);
      for (let i = 0; i < g.length; i++) {
        const s = sigmoidStable(g[i]);
        dgate[i] = d[i] * u[i] * s * (1 + g[i] * (1 - s));
        dup[i] = d[i] * g[i] * s;
      }
      return [b.makeTensorInfo(gate.shape, 'float32', dgate), b.makeTensorInfo(gate.shape, 'float32', dup)];
    },
  },
];
