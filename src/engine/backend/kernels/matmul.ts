import * as tf from '@tensorflow/tfjs';

/**
 * a·b with tfjs's transpose flags, but never handing the WASM backend a transposed operand: its
 * XNNPACK path takes only untransposed products and anything else falls to a scalar loop about
 * 17× slower, so there the operand is transposed first.
 */
export function matMul(a: tf.Tensor, b: tf.Tensor, transposeA = false, transposeB = false): tf.Tensor {
  if ((transposeA || transposeB) && tf.getBackend() === 'wasm') {
    return tf.tidy(() => tf.matMul(transposeA ? swapLast(a) : a, transposeB ? swapLast(b) : b));
  }
  return tf.matMul(a, b, transposeA, transposeB);
}

function swapLast(t: tf.Tensor): tf.Tensor {
  const perm = t.shape.map((_, i) => i);
  [perm[t.rank - 2], perm[t.rank - 1]] = [perm[t.rank - 1], perm[t.rank - 2]];
  return tf.transpose(t, perm);
}
