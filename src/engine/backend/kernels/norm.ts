/** LlamaRMSNorm, y = w · x / √(mean(x²) + ε) over the last axis, forward and backward. */
import * as tf from '@tensorflow/tfjs';

/** y and the per-row 1/√(mean(x²) + ε) (shape of x without its last axis), which the backward pass reuses. */
export function rmsNormForward<T extends tf.Tensor>(x: T, w: tf.Tensor1D, eps: number): { y: T; rstd: tf.Tensor } {
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
