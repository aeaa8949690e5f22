import * as tf from '@tensorflow/tfjs';
import type { CausalLM, ForwardOptions } from '../model/llama.ts';
import { selectedLogProbs } from '../model/logprobs.ts';
import { batchTensors, type HostBatch } from './batch.ts';

/**
 * SFT's loss for one micro-batch as a SUM of token NLLs over its trainable tokens. The trainer
 * divides the step's summed gradient once by the step's trainable-token count, which is TRL's
 * token mean over the whole effective batch (num_items_in_batch).
 */
export function sftLossSum(model: CausalLM, batch: HostBatch, opts: Pick<ForwardOptions, 'adapter' | 'dropoutSeed'>): tf.Scalar {
  const { inputIds, attentionMask } = batchTensors(batch);
  const hidden = model.forward(inputIds, { attentionMask, adapter: opts.adapter, dropoutSeed: opts.dropoutSeed });
  const logp = selectedLogProbs(model, hidden, tf.tensor1d(batch.positions, 'int32'), tf.tensor1d(batch.targets, 'int32'));
  return tf.neg(tf.sum(logp));
}
