import * as tf from '@tensorflow/tfjs';
import type { CausalLM } from './llama.ts';
import { gatherRows } from './ops.ts';
import { matMul } from '../backend/kernels/matmul.ts';
import { linearForward, linearInputGrad, type FrozenWeight } from '../backend/kernels/linear.ts';

/**
 * log p(target | prefix) for chosen positions only, [N]. The LM head runs on those N hidden
 * states alone, in chunks of at most `chunkElements` logits, and its gradient recomputes each
 * chunk's logits instead of keeping them: a 150k-word vocabulary makes [tokens × vocab] logits
 * (and the softmax and one-hot beside them) far larger than everything else in a step, so only
 * one chunk of them ever exists at a time.
 */
export function selectedLogProbs(model: CausalLM, hidden: tf.Tensor3D, positions: tf.Tensor1D, targets: tf.Tensor1D, chunkElements = 1 << 22): tf.Tensor1D {
  const H = model.config.hidden_size;
  const rows = gatherRows(tf.reshape(hidden, [-1, H]) as tf.Tensor2D, positions);
  return chunkedLogProbs(rows, model.lmHead, targets, chunkElements);
}

/**
 * log_softmax(x Wᵀ)[target] row by row. The weight's gradient is computed only when it is being
 * trained (a variable: full fine-tuning, or tied embeddings being trained); a frozen head is
 * closed over rather than passed in, so the tape never asks for its gradient. When all N × vocab
 * probabilities fit in `keepElements`, the forward pass keeps them for the backward pass instead of
 * computing the logits a second time.
 */
export function chunkedLogProbs(rows: tf.Tensor2D, W: FrozenWeight | tf.Variable, targets: tf.Tensor1D, chunkElements = 1 << 22, keepElements = 1 << 24): tf.Tensor1D {
  const [N] = rows.shape;
  const V = W.shape[0];
  const size = Math.max(1, Math.floor(chunkElements / V));
  const chunks: [number, number][] = [];
  for (let start = 0; start < N; start += size) chunks.push([start, Math.min(size, N - start)]);
  const slice = <T extends tf.Tensor>(t: T, start: number, n: number): T => (chunks.length === 1 ? t : (tf.slice(t, start, n) as T));
  const keep = N * V <= keepElements;
  const trained = W instanceof tf.Variable;
  const logitsOf = (x: tf.Tensor2D, w: tf.Tensor2D | FrozenWeight) => (w instanceof tf.Tensor ? matMul(x, w, false, true) : linearForward(x, w)) as tf.Tensor2D;

  /** log p[target] per row, and the softmax of every row when it is kept. */
  const forward = (x: tf.Tensor2D, w: tf.Tensor2D | FrozenWeight, tgt: tf.Tensor1D): { logp: tf.Tensor1D; probs: tf.Tensor2D | null } => {
    const parts = chunks.map(([start, n]) =>
      tf.tidy(() => {
        const logits = logitsOf(slice(x, start, n), w);
        const lse = tf.logSumExp(logits, 1, true);
        const flat = tf.add(tf.mul(tf.range(0, n, 1, 'int32'), tf.scalar(V, 'int32')), slice(tgt, start, n));
        const logp = tf.sub(tf.gather(tf.reshape(logits, [-1]), flat), tf.reshape(lse, [-1])) as tf.Tensor1D;
        return keep ? [logp, tf.exp(tf.sub(logits, lse)) as tf.Tensor2D] : [logp];
      }) as [tf.Tensor1D, tf.Tensor2D?],
    );
    const join = <T extends tf.Tensor>(ts: T[]): T => (ts.length === 1 ? ts[0] : (tf.concat(ts) as T));
    return { logp: join(parts.map((p) => p[0])), probs: keep ? join(parts.map((p) => p[1]!)) : null };
  };

  // d logp[i] / d logits[i] = onehot(target[i]) − softmax(logits[i]), scaled by the incoming dy[i].
  const dLogits = (x: tf.Tensor2D, w: tf.Tensor2D | FrozenWeight, tgt: tf.Tensor1D, probs: tf.Tensor2D | null, dy: tf.Tensor1D, start: number, n: number): tf.Tensor2D => {
    const p = probs ? slice(probs, start, n) : tf.softmax(logitsOf(slice(x, start, n), w));
    const diff = tf.sub(tf.oneHot(slice(tgt, start, n), V), p);
    return tf.mul(diff, tf.expandDims(slice(dy, start, n), 1)) as tf.Tensor2D;
  };

  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const save = args[args.length - 1] as tf.GradSaveFunc;
    const [x, tgt] = args as [tf.Tensor2D, tf.Tensor1D];
    const w = trained ? (args[2] as tf.Tensor2D) : W;
    const { logp, probs } = forward(x, w, tgt);
    save(probs ? [x, tgt, probs] : [x, tgt]);
    probs?.dispose();
    return {
      value: logp,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [x, tgt, probs] = saved as [tf.Tensor2D, tf.Tensor1D, tf.Tensor2D | undefined];
        let dW: tf.Tensor | null = trained ? tf.zerosLike(w as tf.Tensor2D) : null;
        const dX = chunks.map(([start, n]) =>
          tf.tidy(() => {
            const g = dLogits(x, w, tgt, probs ?? null, dy as tf.Tensor1D, start, n);
            if (dW) {
              const next = tf.add(dW, matMul(g, slice(x, start, n), true, false));
              dW.dispose();
              dW = tf.keep(next);
            }
            return w instanceof tf.Tensor ? matMul(g, w) : linearInputGrad(g, w);
          }),
        );
        const dx = dX.length === 1 ? dX[0] : tf.concat(dX);
        return dW ? [dx, tf.zerosLike(tgt), dW] : [dx, tf.zerosLike(tgt)];
      },
    };
  });
  return (trained ? f(rows, targets, W as tf.Variable) : f(rows, targets)) as tf.Tensor1D;
}
