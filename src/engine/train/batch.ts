import * as tf from '@tensorflow/tfjs';

/** One tokenised example: labels are input_ids where trained, -100 elsewhere, not shifted. */
export interface Example {
  input_ids: number[];
  labels: number[];
}

/** A right-padded batch on the host, ready to become tensors. */
export interface HostBatch {
  batch: number;
  length: number;
  input_ids: Int32Array;
  attention_mask: Int32Array;
  /** Flat positions b·length + t whose next token is trained (labels[b][t+1] ≠ -100). */
  positions: Int32Array;
  /** The token each of those positions must predict. */
  targets: Int32Array;
  /** Real (non-pad) tokens in the batch, for tokens/s. */
  num_tokens: number;
}

/**
 * tfjs pools GPU buffers by exact size and never frees them, so sequence lengths are rounded up
 * to a few buckets: powers of two to 64, then multiples of 64. Padding is masked, so it does
 * not change any number.
 */
export function bucketLength(n: number): number {
  if (n <= 64) return Math.max(8, 2 ** Math.ceil(Math.log2(n)));
  return Math.ceil(n / 64) * 64;
}

export function collate(examples: Example[], padTokenId: number, bucket = true): HostBatch {
  const longest = Math.max(...examples.map((e) => e.input_ids.length));
  const T = bucket ? bucketLength(longest) : longest;
  const B = examples.length;
  const input_ids = new Int32Array(B * T).fill(padTokenId);
  const attention_mask = new Int32Array(B * T);
  const positions: number[] = [];
  const targets: number[] = [];
  let num_tokens = 0;
  examples.forEach((e, b) => {
    input_ids.set(e.input_ids, b * T);
    attention_mask.fill(1, b * T, b * T + e.input_ids.length);
    num_tokens += e.input_ids.length;
    for (let t = 0; t + 1 < e.labels.length; t++) {
      if (e.labels[t + 1] !== -100) {
        positions.push(b * T + t);
        targets.push(e.labels[t + 1]);
      }
    }
  });
  return { batch: B, length: T, input_ids, attention_mask, positions: Int32Array.from(positions), targets: Int32Array.from(targets), num_tokens };
}

export function batchTensors(b: HostBatch): { inputIds: tf.Tensor2D; attentionMask: tf.Tensor2D } {
  return {
    inputIds: tf.tensor2d(b.input_ids, [b.batch, b.length], 'int32'),
    attentionMask: tf.tensor2d(b.attention_mask, [b.batch, b.length], 'int32'),
  };
}
