/**
 * SimPO as TRL 1.x runs it: CPOTrainer (trl/experimental/cpo/cpo_trainer.py `cpo_loss`) with
 * loss_type "simpo" and cpo_alpha 0 (no NLL term, what TRL's documentation prescribes for SimPO),
 * label_smoothing 0, alpha 0: lc, lr = mean log-prob over the chosen / rejected completion's
 * tokens;  loss = −log σ(β · ((lc − lr) − γ/β)),  the mean over pairs. No reference model.
 */
import * as tf from '@tensorflow/tfjs';
import type { PairExample } from '../../data/preference.ts';
import type { Method, MicroBatchLoss } from '../method.ts';
import { averageLogProbs, collatePairs, halves, keepMetrics, logSigmoid, pairMetrics, type PairBatch, policyLogProbs } from './pairs.ts';

export interface SimpoOptions {
  /** TRL's `beta` (CPOConfig default 0.1; the SimPO paper uses 2.0–2.5). */
  beta: number;
  /** TRL's `simpo_gamma` (default 0.5): the target reward margin γ. */
  simpo_gamma: number;
  padTokenId: number;
}

/** TRL's CPO/SimPO metrics (its `logits/*` and the zero `nll_loss` aside); each the mean over the step's pairs. */
export const SIMPO_METRICS = ['rewards/chosen', 'rewards/rejected', 'rewards/accuracies', 'rewards/margins', 'logps/rejected', 'logps/chosen'] as const;

export function simpoMethod(o: SimpoOptions): Method<PairExample, PairBatch> {
  const { beta, simpo_gamma } = o;
  return {
    name: 'simpo',
    metrics: SIMPO_METRICS,
    collate: (examples) => collatePairs(examples, o.padTokenId),
    countItems: (batch) => batch.pairs,
    countTokens: (batch) => batch.seq.num_tokens,
    loss(batch, ctx): MicroBatchLoss {
      const B = batch.pairs;
      const [chosen, rejected] = halves(averageLogProbs(policyLogProbs(ctx, batch.seq), batch.seq), B);
      const logits = tf.sub(tf.sub(chosen, rejected), simpo_gamma / beta);
      const chosenRewards = tf.mul(beta, chosen);
      const rejectedRewards = tf.mul(beta, rejected);
      return {
        loss: tf.sum(tf.neg(logSigmoid(tf.mul(beta, logits)))),
        metrics: keepMetrics(pairMetrics(chosenRewards as tf.Tensor1D, rejectedRewards as tf.Tensor1D, chosen, rejected)),
      };
    },
  };
}
