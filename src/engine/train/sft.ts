import * as tf from '@tensorflow/tfjs';
import type { CausalLM, ForwardOptions } from '../model/llama.ts';
import { selectedLogProbs } from '../model/logprobs.ts';
import { batchTensors, collate, type Example, type HostBatch } from './batch.ts';
import type { LoraAdapter } from '../model/lora.ts';

/**
 * SFT's loss for one micro-batch as a SUM of token NLLs over its trainable tokens. The trainer
 * divides the step's summed gradient once by the step's trainable-token count, which is TRL's
 * token mean over the whole effective batch (num_items_in_batch).
 */
export function sftLossSum(model: CausalLM, batch: HostBatch, opts: Pick<ForwardOptions, 'adapter' | 'dropoutSeed' | 'gradientCheckpointing'>): tf.Scalar {
  const { inputIds, attentionMask } = batchTensors(batch);
  const hidden = model.forward(inputIds, { attentionMask, adapter: opts.adapter, dropoutSeed: opts.dropoutSeed, gradientCheckpointing: opts.gradientCheckpointing });
  const logp = selectedLogProbs(model, hidden, tf.tensor1d(batch.positions, 'int32'), tf.tensor1d(batch.targets, 'int32'));
  return tf.neg(tf.sum(logp));
}

/** Token-mean SFT loss over examples, without dropout or gradients (eval_loss). */
export async function sftEvalLoss(
  model: CausalLM,
  examples: Example[],
  opts: { adapter?: LoraAdapter | null; padTokenId: number; batchSize: number },
): Promise<{ loss: number; num_tokens: number }> {
  let sum = 0;
  let count = 0;
  for (let i = 0; i < examples.length; i += opts.batchSize) {
    const batch = collate(examples.slice(i, i + opts.batchSize), opts.padTokenId);
    if (batch.targets.length === 0) continue;
    const t = tf.tidy(() => sftLossSum(model, batch, { adapter: opts.adapter ?? null }));
    sum += (await t.data())[0];
    t.dispose();
    count += batch.targets.length;
  }
  return { loss: count > 0 ? sum / count : NaN, num_tokens: count };
}
