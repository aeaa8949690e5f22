/**
 * Causal grouped-query attention, softmax(q·kᵀ·scale + mask)·v, forward and backward. The forward
 * pass returns each query row's log-sum-exp beside the output, so the backward pass recomputes
 * the probabilities instead of keeping a [heads × T × S] tensor.
 */
import * as tf from '@tensorflow/tfjs';

export interface AttentionOptions {
  /** Multiplies q·kᵀ (1/√head_dim). */
  scale: number;
  /** Keys before the first query (a KV cache): query t sits at position past + t and sees keys 0 .. past + t. */
  past: number;
  /** [B, S] 1 for a real key, 0 for padding; omitted: every key is real. */
  keyMask?: tf.Tensor2D;
}

/** Masked scores get this instead of −∞, so a row with no visible key stays finite (uniform). */
const MASKED = -1e30;

/**
 * q [B, heads, T, D], k and v [B, kv_heads, S, D] with S = past + T → out [B, heads, T, D] and
 * lse [B, heads, T]. Query head h reads kv head ⌊h / (heads / kv_heads)⌋.
 */
export function attentionForward(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, opts: AttentionOptions): { out: tf.Tensor4D; lse: tf.Tensor3D } {
  return tf.tidy(() => {
    const [B, H, T, D] = q.shape;
    const scores = groupedScores(q, k, opts);
    const lse = tf.logSumExp(scores, -1, true);
    const probs = tf.exp(tf.sub(scores, lse));
    const out = tf.reshape(tf.matMul(probs, v), [B, H, T, D]) as tf.Tensor4D;
    return { out, lse: tf.reshape(lse, [B, H, T]) as tf.Tensor3D };
  });
}

/** dq, dk, dv from dout and what the forward pass returned. */
export function attentionBackward(
  dout: tf.Tensor4D, q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, out: tf.Tensor4D, lse: tf.Tensor3D, opts: AttentionOptions,
): { dq: tf.Tensor4D; dk: tf.Tensor4D; dv: tf.Tensor4D } {
  return tf.tidy(() => {
    const [B, H, T, D] = q.shape;
    const KV = k.shape[1];
    const G = H / KV;
    const grouped = (t: tf.Tensor) => tf.reshape(t, [B, KV, G * T, -1]);
    const probs = tf.exp(tf.sub(groupedScores(q, k, opts), grouped(lse)));
    const dO = grouped(dout);
    const dv = tf.matMul(probs, dO, true, false) as tf.Tensor4D;
    const dprobs = tf.matMul(dO, v, false, true);
    const rowDot = tf.sum(tf.mul(dO, grouped(out)), -1, true);
    const dscores = tf.mul(tf.mul(probs, tf.sub(dprobs, rowDot)), opts.scale);
    const dq = tf.reshape(tf.matMul(dscores, k), [B, H, T, D]) as tf.Tensor4D;
    const dk = tf.matMul(dscores, grouped(q), true, false) as tf.Tensor4D;
    return { dq, dk, dv };
  });
}

/** scale·q·kᵀ + mask with the query heads of each kv head stacked along the rows: [B, kv, G·T, S]. */
function groupedScores(q: tf.Tensor4D, k: tf.Tensor4D, opts: AttentionOptions): tf.Tensor4D {
  const [B, H, T, D] = q.shape;
  const [, KV, S] = k.shape;
  const G = H / KV;
  const qg = tf.reshape(q, [B, KV, G * T, D]);
  const raw = tf.mul(tf.matMul(qg, k, false, true), opts.scale);
  const qpos = tf.reshape(tf.range(opts.past, opts.past + T, 1, 'int32'), [T, 1]);
  const kpos = tf.reshape(tf.range(0, S, 1, 'int32'), [1, S]);
  let allowed = tf.reshape(tf.lessEqual(kpos, qpos), [1, 1, T, S]);
  if (opts.keyMask) allowed = tf.logicalAnd(allowed, tf.reshape(tf.cast(opts.keyMask, 'bool'), [B, 1, 1, S]));
  const bias = tf.tile(tf.mul(tf.sub(1, tf.cast(allowed, 'float32')), MASKED), [allowed.shape[0] === 1 ? B : 1, 1, G, 1]);
  return tf.add(raw, bias) as tf.Tensor4D;
}
