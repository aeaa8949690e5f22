/**
 * Causal grouped-query attention, softmax(q·kᵀ·scale + mask)·v, forward and backward. The forward
 * pass returns each query row's log-sum-exp beside the output, so the backward pass recomputes
 * the probabilities instead of keeping a [heads × T × S] tensor.
 *
 * Each runs as our own fused kernel (`FtAttention` → [out, lse], `FtAttentionGrad` → [dq, dk, dv])
 * where one is registered for the active backend (WebGPU, CPU), else as the tfjs composition
 * below (the wasm backend), which is also the reference tests hold the kernels to. The kernels
 * have no registered gradient: `attention` in model/ops.ts differentiates through customGrad.
 */
import * as tf from '@tensorflow/tfjs';
import { hasKernel, registerKernels } from './registry.ts';
import { matMul } from './matmul.ts';
import { attentionCpuKernels } from './attention.cpu.ts';
import { attentionWebGPUKernels } from './attention.wgsl.ts';

registerKernels([...attentionWebGPUKernels, ...attentionCpuKernels]);

export interface AttentionOptions {
  /** Multiplies q·kᵀ (1/√head_dim). */
  scale: number;
  /**
   * Keys before the first query (a KV cache): query t sits at slot past + t and sees keys 0 ..
   * past + t. With left padding this counts padding slots too: it is the cache's write position.
   */
  past: number;
  /** [B, S] 1 for a real key, 0 for padding; omitted: every key is real. */
  keyMask?: tf.Tensor2D;
}

/**
 * Masked scores get this instead of −∞, so a row with no visible key stays finite: its scores are
 * all −1e30 over every one of the S keys, and its lse = −1e30 + log S rounds to −1e30 in float32,
 * so each key gets probability exp(0) = 1 (the row is the sum of v, not the mean). Only padding
 * query rows see no key, and nothing reads their output.
 */
const MASKED = -1e30;

/**
 * q [B, heads, T, D], k and v [B, kv_heads, S, D] with S ≥ past + T → out [B, heads, T, D] and
 * lse [B, heads, T]. Query head h reads kv head ⌊h / (heads / kv_heads)⌋. Keys past past + T − 1
 * (a static cache's slots not written yet) are hidden by the causal rule from every row that sees
 * some key; a row that sees none reads all S, so such slots must hold finite values (zeros).
 */
export function attentionForward(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, opts: AttentionOptions): { out: tf.Tensor4D; lse: tf.Tensor3D } {
  if (hasKernel('FtAttention', [q, k, v])) {
    const [out, lse] = tf.engine().runKernel('FtAttention', kernelInputs({ q, k, v }, opts), kernelAttrs(opts)) as tf.Tensor[];
    return { out: out as tf.Tensor4D, lse: lse as tf.Tensor3D };
  }
  return composedAttentionForward(q, k, v, opts);
}

/** dq, dk, dv from dout and what the forward pass returned. */
export function attentionBackward(
  dout: tf.Tensor4D, q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, out: tf.Tensor4D, lse: tf.Tensor3D, opts: AttentionOptions,
): { dq: tf.Tensor4D; dk: tf.Tensor4D; dv: tf.Tensor4D } {
  if (hasKernel('FtAttentionGrad', [dout, q, k, v, out, lse])) {
    const inputs = kernelInputs({ dout, q, k, v, out, lse }, opts);
    const [dq, dk, dv] = tf.engine().runKernel('FtAttentionGrad', inputs, kernelAttrs(opts)) as tf.Tensor4D[];
    return { dq, dk, dv };
  }
  return composedAttentionBackward(dout, q, k, v, out, lse, opts);
}

function kernelInputs(inputs: Record<string, tf.Tensor>, opts: AttentionOptions): tf.NamedTensorMap {
  return opts.keyMask != null ? { ...inputs, keyMask: opts.keyMask } : inputs;
}

function kernelAttrs(opts: AttentionOptions): tf.NamedAttrMap {
  return { scale: opts.scale, past: opts.past };
}

/** attentionForward as a tfjs composition, whatever the backend. */
export function composedAttentionForward(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, opts: AttentionOptions): { out: tf.Tensor4D; lse: tf.Tensor3D } {
  return tf.tidy(() => {
    const [B, H, T, D] = q.shape;
    const scores = groupedScores(q, k, opts);
    const lse = tf.logSumExp(scores, -1, true);
    const probs = tf.exp(tf.sub(scores, lse));
    const out = tf.reshape(matMul(probs, v), [B, H, T, D]) as tf.Tensor4D;
    return { out, lse: tf.reshape(lse, [B, H, T]) as tf.Tensor3D };
  });
}

/** attentionBackward as a tfjs composition, whatever the backend. */
export function composedAttentionBackward(
  dout: tf.Tensor4D, q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, out: tf.Tensor4D, lse: tf.Tensor3D, opts: AttentionOptions,
): { dq: tf.Tensor4D; dk: tf.Tensor4D; dv: tf.Tensor4D } {
  return tf.tidy(() => {
    const [B, H, T, D] = q.shape;
    const KV = k.shape[1];
    const G = H / KV;
    const grouped = (t: tf.Tensor) => tf.reshape(t, [B, KV, G * T, -1]);
    const probs = tf.exp(tf.sub(groupedScores(q, k, opts), grouped(lse)));
    const dO = grouped(dout);
    const dv = matMul(probs, dO, true, false) as tf.Tensor4D;
    const dprobs = matMul(dO, v, false, true);
    const rowDot = tf.sum(tf.mul(dO, grouped(out)), -1, true);
    const dscores = tf.mul(tf.mul(probs, tf.sub(dprobs, rowDot)), opts.scale);
    const dq = tf.reshape(matMul(dscores, k), [B, H, T, D]) as tf.Tensor4D;
    const dk = matMul(dscores, grouped(q), true, false) as tf.Tensor4D;
    return { dq, dk, dv };
  });
}

/** scale·q·kᵀ + mask with the query heads of each kv head stacked along the rows: [B, kv, G·T, S]. */
function groupedScores(q: tf.Tensor4D, k: tf.Tensor4D, opts: AttentionOptions): tf.Tensor4D {
  const [B, H, T, D] = q.shape;
  const [, KV, S] = k.shape;
  const G = H / KV;
  const qg = tf.reshape(q, [B, KV, G * T, D]);
  const raw = tf.mul(matMul(qg, k, false, true), opts.scale);
  // 1 where query t (at position past + t) may see key s, built on the host: tfjs-wasm's broadcast
  // comparisons are scalar loops, slower than the attention products themselves at T = 512.
  const causal = new Float32Array(T * S);
  for (let t = 0; t < T; t++) causal.fill(1, t * S, Math.min(S, opts.past + t + 1) + t * S);
  let allowed: tf.Tensor = tf.tensor(causal, [1, 1, 1, T, S]);
  if (opts.keyMask) allowed = tf.mul(allowed, tf.reshape(tf.cast(opts.keyMask, 'float32'), [B, 1, 1, 1, S]));
  // [B, 1, 1, T, S] broadcast over the kv heads and the query heads of each: no tiled copy.
  const bias = tf.mul(tf.sub(1, allowed), MASKED);
  return tf.reshape(tf.add(tf.reshape(raw, [B, KV, G, T, S]), bias), [B, KV, G * T, S]) as tf.Tensor4D;
}
