/** The SwiGLU activation of Llama's MLP, silu(gate) · up, forward and backward. */
import * as tf from '@tensorflow/tfjs';

export function siluMulForward<T extends tf.Tensor>(gate: T, up: T): T {
  return tf.tidy(() => tf.mul(tf.mul(gate, tf.sigmoid(gate)), up) as T);
}

/** d/dgate = dy · up · σ(g) · (1 + g · (1 − σ(g))), d/dup = dy · g · σ(g). */
export function siluMulBackward<T extends tf.Tensor>(dy: T, gate: T, up: T): { dgate: T; dup: T } {
  return tf.tidy(() => {
    const s = tf.sigmoid(gate);
    const dgate = tf.mul(tf.mul(dy, up), tf.mul(s, tf.add(1, tf.mul(gate, tf.sub(1, s))))) as T;
    const dup = tf.mul(dy, tf.mul(gate, s)) as T;
    return { dgate, dup };
  });
}
