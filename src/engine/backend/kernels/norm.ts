/**
 * LlamaRMSNorm, y = w · x / √(mean(x²) + ε) over the last axis, forward and backward. Each runs as
 * our own kernel (`FtRmsNorm`, `FtRmsNormGrad`) where one is registered for the active backend
 * (WebGPU, CPU), else as the tfjs composition below, which is also the reference tests hold the
 * kernels to. `FtRmsNorm` has a registered gradient, so the tape differentiates it like the
 * composition.
 */
import * as tf from '@tensorflow/tfjs';
import { hasKernel, registerKernels } from './registry.ts';
import { normCpuKernels } from './norm.cpu.ts';
import { normWebGPUKernels } from './norm.wgsl.ts';

registerKernels([...normWebGPUKernels, ...normCpuKernels]);
if (tf.getGradient('FtRmsNorm') == null) {
  tf.registerGradient({
    kernelName: 'FtRmsNorm',
    inputsToSave: ['x', 'w'],
    outputsToSave: [false, true],
    gradFunc: (dys, [x, w, rstd]) => {
      const [dyOut, dRstd] = dys as (tf.Tensor | null)[];
      const dy = dyOut ?? tf.zerosLike(x);
      return {
        x: () => {
          const { dx } = rmsNormBackward(dy, x, w as tf.Tensor1D, rstd, false);
          if (dRstd == null) return dx;
          // Through rstd itself: ∂rstd/∂x = −rstd³ · x / hidden.
          const H = x.shape[x.rank - 1];
          return tf.sub(dx, tf.mul(x, tf.expandDims(tf.mul(dRstd, tf.div(tf.pow(rstd, 3), H)), -1)));
        },
        w: () => rmsNormBackward(dy, x, w as tf.Tensor1D, rstd, true).dw!,
      };
    },
  });
}

/** y and the per-row 1/√(mean(x²) + ε) (shape of x without its last axis), which the backward pass reuses. */
export function rmsNormForward<T extends tf.Tensor>(x: T, w: tf.Tensor1D, eps: number): { y: T; rstd: tf.Tensor } {
  if (hasKernel('FtRmsNorm', [x, w])) {
    const [y, rstd] = tf.engine().runKernel('FtRmsNorm', { x, w }, { eps }) as tf.Tensor[];
    return { y: y as T, rstd };
  }
  return tf.tidy(() => {
    const rstd = tf.rsqrt(tf.add(tf.mean(tf.square(x), -1), eps));
    const y = tf.mul(tf.mul(x, tf.expandDims(rstd, -1)), w) as T;
    return { y, rstd };
  });
}

/**
 * dx = rstd · (g − x̂ · mean(g · x̂)) with g = dy · w and x̂ = x · rstd; dw = Σ dy · x̂ over every
 * leading axis, only when asked (a trained norm weight).
 */
export function rmsNormBackward<T extends tf.Tensor>(dy: T, x: T, w: tf.Tensor1D, rstd: tf.Tensor, weightGrad: boolean): { dx: T; dw: tf.Tensor1D | null } {
  if (hasKernel('FtRmsNormGrad', [dy, x, w, rstd])) {
    const [dx, dw] = tf.engine().runKernel('FtRmsNormGrad', { dy, x, w, rstd }, { weightGrad }) as tf.Tensor[];
    return { dx: dx as T, dw: weightGrad ? (dw as tf.Tensor1D) : null };
  }
  const r = tf.expandDims(rstd, -1);
  const xhat = tf.mul(x, r);
  const dx = tf.tidy(() => {
    const g = tf.mul(dy, w);
    return tf.mul(r, tf.sub(g, tf.mul(xhat, tf.mean(tf.mul(g, xhat), -1, true)))) as T;
  });
  const H = x.shape[x.rank - 1];
  const dw = weightGrad ? tf.tidy(() => tf.sum(tf.reshape(tf.mul(dy, xhat), [-1, H]), 0) as tf.Tensor1D) : null;
  tf.dispose([r, xhat]);
  return { dx, dw };
}
