/**
 * Rotary position embedding as transformers applies it (rotate_half over the two halves of the
 * head dimension): out₁ = x₁·cos − x₂·sin, out₂ = x₂·cos + x₁·sin. Its gradient is the inverse
 * rotation (sin negated), so one op serves both directions.
 */
import * as tf from '@tensorflow/tfjs';

/** x [B, heads, T, D]; cos and sin [B, T, D/2] for each token's position; `inverse` rotates back. */
export function applyRope(x: tf.Tensor4D, cos: tf.Tensor3D, sin: tf.Tensor3D, inverse: boolean): tf.Tensor4D {
  return tf.tidy(() => {
    const [B, , T, D] = x.shape;
    const half = D / 2;
    const c = tf.reshape(cos, [B, 1, T, half]);
    const s = inverse ? tf.neg(tf.reshape(sin, [B, 1, T, half])) : tf.reshape(sin, [B, 1, T, half]);
    const [x1, x2] = tf.split(x, [half, half], 3);
    return tf.concat([tf.sub(tf.mul(x1, c), tf.mul(x2, s)), tf.add(tf.mul(x2, c), tf.mul(x1, s))], 3) as tf.Tensor4D;
  });
}
