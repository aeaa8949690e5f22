import * as tf from '@tensorflow/tfjs';

/**
 * a·b with tfjs's transpose flags, shaped for tfjs-wasm's fast path: its XNNPACK path takes only
 * untransposed products of plain matrices. A transposed operand falls to a scalar loop about 17×
 * slower, and so does a batched product (measured: [3, 1536, 64]·[3, 64, 512] 230 ms batched,
 * 12 ms as three matrix products), so on WASM operands are transposed first and batches run as
 * one product per matrix. Other backends get tf.matMul as it is.
 */
export function matMul(a: tf.Tensor, b: tf.Tensor, transposeA = false, transposeB = false): tf.Tensor {
  if (tf.getBackend() !== 'wasm' || (!transposeA && !transposeB && a.rank === 2 && b.rank === 2)) {
    return tf.matMul(a, b, transposeA, transposeB);
  }
  return tf.tidy(() => {
    const A = transposeA ? swapLast(a) : a;
    const B = transposeB ? swapLast(b) : b;
    if (A.rank === 2 && B.rank === 2) return tf.matMul(A, B);
    const batch = (A.rank > 2 ? A : B).shape.slice(0, -2);
    const n = batch.reduce((x, y) => x * y, 1);
    const [m, k] = A.shape.slice(-2);
    const p = B.shape[B.rank - 1];
    const as = A.rank > 2 ? tf.unstack(tf.reshape(A, [n, m, k])) : null;
    const bs = B.rank > 2 ? tf.unstack(tf.reshape(B, [n, k, p])) : null;
    const parts = Array.from({ length: n }, (_, i) => tf.matMul(as ? as[i] : A, bs ? bs[i] : B));
    return tf.reshape(tf.stack(parts), [...batch, m, p]);
  });
}

function swapLast(t: tf.Tensor): tf.Tensor {
  const perm = t.shape.map((_, i) => i);
  [perm[t.rank - 2], perm[t.rank - 1]] = [perm[t.rank - 1], perm[t.rank - 2]];
  return tf.transpose(t, perm);
}
