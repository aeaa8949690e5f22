/**
 * The SwiGLU activation of Llama's MLP, silu(gate) · up, forward and backward. Each runs as our
 * own kernel (`FtSiluMul`, `FtSiluMulGrad`) where one is registered for the active backend
 * (WebGPU, CPU), else as the tfjs composition below, which is also the reference tests hold the
 * kernels to. `FtSiluMul` has a registered gradient, so the tape differentiates it like the
 * composition.
 */
import * as tf from '@tensorflow/tfjs';
import { hasKernel, registerKernels } from './registry.ts';
import { siluCpuKernels } from './silu.cpu.ts';
import { siluWebGPUKernels } from './silu.wgsl.ts';

registerKernels([...siluWebGPUKernels, ...siluCpuKernels]);
if (tf.getGradient('FtSiluMul') == null) {
  tf.registerGradient({
    kernelName: 'FtSiluMul',
    inputsToSave: ['gate', 'up'],
    gradFunc: (dy, [gate, up]) => {
      const g = siluMulBackward(dy as tf.Tensor, gate, up);
      return { gate: () => g.dgate, up: () => g.dup };
    },
  });
}

/** Whether our kernel can take these tensors: registered for the backend, float32, one shape. */
function ownKernel(name: string, ...ts: tf.Tensor[]): boolean {
  return hasKernel(name, ts) && ts.every((t) => tf.util.arraysEqual(t.shape, ts[0].shape));
}

export function siluMulForward<T extends tf.Tensor>(gate: T, up: T): T {
  if (ownKernel('FtSiluMul', gate, up)) return tf.engine().runKernel('FtSiluMul', { gate, up }) as T;
  return tf.tidy(() => tf.mul(tf.mul(gate, tf.sigmoid(gate)), up) as T);
}

/** d/dgate = dy · up · σ(g) · (1 + g · (1 − σ(g))), d/dup = dy · g · σ(g). */
export function siluMulBackward<T extends tf.Tensor>(dy: T, gate: T, up: T): { dgate: T; dup: T } {
  if (ownKernel('FtSiluMulGrad', dy, gate, up)) {
    const [dgate, dup] = tf.engine().runKernel('FtSiluMulGrad', { dy, gate, up }) as T[];
    return { dgate, dup };
  }
  return tf.tidy(() => {
    const s = tf.sigmoid(gate);
    const dgate = tf.mul(tf.mul(dy, up), tf.mul(s, tf.add(1, tf.mul(gate, tf.sub(1, s))))) as T;
    const dup = tf.mul(dy, tf.mul(gate, s)) as T;
    return { dgate, dup };
  });
}
