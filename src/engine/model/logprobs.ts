import * as tf from '@tensorflow/tfjs';
import type { CausalLM } from './llama.ts';
import { gatherRows } from './ops.ts';

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
 * closed over rather than passed in, so the tape never asks for its gradient.
 */
export function chunkedLogProbs(rows: tf.Tensor2D, W: tf.Tensor2D, targets: tf.Tensor1D, chunkElements = 1 << 22): tf.Tensor1D {
  const [N] = rows.shape;
  const V = W.shape[0];
  const size = Math.max(1, Math.floor(chunkElements / V));
  const chunks: [number, number][] = [];
  for (let start = 0; start < N; start += size) chunks.push([start, Math.min(size, N - start)]);
  const slice = <T extends tf.Tensor>(t: T, start: number, n: number): T => (chunks.length === 1 ? t : (tf.slice(t, start, n) as T));

  const forward = (x: tf.Tensor2D, w: tf.Tensor2D, tgt: tf.Tensor1D): tf.Tensor1D => {
    const parts = chunks.map(([start, n]) =>
      tf.tidy(() => {
        const logits = tf.matMul(slice(x, start, n), w, false, true);
        const flat = tf.add(tf.mul(tf.range(0, n, 1, 'int32'), tf.scalar(V, 'int32')), slice(tgt, start, n));
        return tf.sub(tf.gather(tf.reshape(logits, [-1]), flat), tf.logSumExp(logits, 1)) as tf.Tensor1D;
      }),
    );
    return parts.length === 1 ? parts[0] : (tf.concat(parts) as tf.Tensor1D);
  };

  // d logp[i] / d logits[i] = onehot(target[i]) − softmax(logits[i]), scaled by the incoming dy[i].
  const dLogits = (x: tf.Tensor2D, w: tf.Tensor2D, tgt: tf.Tensor1D, dy: tf.Tensor1D, start: number, n: number): tf.Tensor2D => {
    const logits = tf.matMul(slice(x, start, n), w, false, true);
    const diff = tf.sub(tf.oneHot(slice(tgt, start, n), V), tf.softmax(logits));
    return tf.mul(diff, tf.expandDims(slice(dy, start, n), 1)) as tf.Tensor2D;
  };

  if (W instanceof tf.Variable) {
    const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
      const [x, w, tgt, save] = args as [tf.Tensor2D, tf.Tensor2D, tf.Tensor1D, tf.GradSaveFunc];
      save([x, w, tgt]);
      return {
        value: forward(x, w, tgt),
        gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
          const [x, w, tgt] = saved as [tf.Tensor2D, tf.Tensor2D, tf.Tensor1D];
          let dW: tf.Tensor = tf.zerosLike(w);
          const dX = chunks.map(([start, n]) =>
            tf.tidy(() => {
              const g = dLogits(x, w, tgt, dy as tf.Tensor1D, start, n);
              const next = tf.add(dW, tf.matMul(g, slice(x, start, n), true, false));
              dW.dispose();
              dW = tf.keep(next);
              return tf.matMul(g, w);
            }),
          );
          return [dX.length === 1 ? dX[0] : tf.concat(dX), dW, tf.zerosLike(tgt)];
        },
      };
    });
    return f(rows, W, targets) as tf.Tensor1D;
  }

  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [x, tgt, save] = args as [tf.Tensor2D, tf.Tensor1D, tf.GradSaveFunc];
    save([x, tgt]);
    return {
      value: forward(x, W, tgt),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [x, tgt] = saved as [tf.Tensor2D, tf.Tensor1D];
        const dX = chunks.map(([start, n]) => tf.tidy(() => tf.matMul(dLogits(x, W, tgt, dy as tf.Tensor1D, start, n), W)));
        return [dX.length === 1 ? dX[0] : tf.concat(dX), tf.zerosLike(tgt)];
      },
    };
  });
  return f(rows, targets) as tf.Tensor1D;
}
