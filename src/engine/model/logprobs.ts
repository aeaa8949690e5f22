import * as tf from '@tensorflow/tfjs';
import type { CausalLM } from './llama.ts';
import { gatherRows } from './ops.ts';

/**
 * log p(target | prefix) for chosen positions only, [N]. The LM head runs on those N hidden
 * states alone, in chunks of at most `chunkElements` logits, because a 150k-word vocabulary
 * makes [tokens × vocab] logits for a whole batch far larger than everything else in a step.
 */
export function selectedLogProbs(model: CausalLM, hidden: tf.Tensor3D, positions: tf.Tensor1D, targets: tf.Tensor1D, chunkElements = 1 << 22): tf.Tensor1D {
  const H = model.config.hidden_size;
  const V = model.config.vocab_size;
  const N = positions.shape[0];
  const rows = gatherRows(tf.reshape(hidden, [-1, H]) as tf.Tensor2D, positions);
  const chunk = Math.max(1, Math.floor(chunkElements / V));
  const parts: tf.Tensor1D[] = [];
  for (let start = 0; start < N; start += chunk) {
    const size = Math.min(chunk, N - start);
    const x = size === N ? rows : tf.slice(rows, [start, 0], [size, H]);
    const tgt = size === N ? targets : tf.slice(targets, [start], [size]);
    const logits = tf.matMul(x, model.lmHead, false, true);
    // log softmax at the target = logit[target] − logsumexp(logits); the one-hot product
    // differentiates without a gather.
    const picked = tf.sum(tf.mul(logits, tf.oneHot(tgt, V)), 1);
    parts.push(tf.sub(picked, tf.logSumExp(logits, 1)) as tf.Tensor1D);
  }
  return parts.length === 1 ? parts[0] : (tf.concat(parts) as tf.Tensor1D);
}
