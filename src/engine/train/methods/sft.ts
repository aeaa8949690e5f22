/**
 * SFT: the shifted next-token NLL on the trainable tokens (labels ≠ -100), averaged over every
 * trainable token of the optimizer step (TRL's num_items_in_batch).
 */
import * as tf from '@tensorflow/tfjs';
import type { CausalLM, ForwardOptions } from '../../model/llama.ts';
import { selectedLogProbs } from '../../model/logprobs.ts';
import { batchTensors, collate, type Example, type HostBatch } from '../batch.ts';
import type { Method } from '../method.ts';

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

export function sftMethod(o: { padTokenId: number }): Method<Example, HostBatch> {
  return {
    name: 'sft',
    metrics: [],
    collate: (examples) => collate(examples, o.padTokenId),
    countItems: (batch) => batch.targets.length,
    countTokens: (batch) => batch.num_tokens,
    loss: (batch, ctx) => ({ loss: sftLossSum(ctx.model, batch, ctx), metrics: {} }),
  };
}
