/**
 * DPO as TRL 1.x's DPOTrainer computes it (trl/trainer/dpo_trainer.py `_compute_loss`, default
 * f_divergence "reverse_kl", no `ld_alpha`, one loss type): logp = sum of the completion's token
 * log-probs; ρc = logp_c − ref_c, ρr = logp_r − ref_r; Δ = ρc − ρr;
 *   sigmoid: −log σ(βΔ);  hinge: relu(1 − βΔ);
 *   ipo: (ρc/|c| − ρr/|r| − 1/(2β))², |·| the completion's length (at least 1).
 * The reference is the same model with the adapter switched off.
 */
import * as tf from '@tensorflow/tfjs';
import type { CausalLM } from '../../model/llama.ts';
import type { PairExample } from '../../data/preference.ts';
import type { Method, MicroBatchLoss } from '../method.ts';
import { collatePairs, completionLogProbsOnHost, halves, keepMetrics, logSigmoid, pairMetrics, type PairBatch, policyLogProbs, refuseWithoutAdapter } from './pairs.ts';

export type DpoLossType = 'sigmoid' | 'ipo' | 'hinge';

/** The reference model's completion log-prob sums of one pair. */
export interface PairReference {
  chosen: number;
  rejected: number;
}

export interface DpoOptions {
  /** TRL's `beta` (default 0.1): the strength of the tie to the reference model. */
  beta: number;
  /** TRL's `loss_type` (one of them). */
  loss_type: DpoLossType;
  padTokenId: number;
  /**
   * The reference log-probs of each example, computed before training (TRL's
   * `precompute_ref_log_probs`, e.g. by `precomputeReferenceLogProbs`); then no reference pass
   * runs during training.
   */
  precomputedRef?: (example: PairExample) => PairReference;
}

/** TRL's DPO metrics; each is logged as the mean over the step's pairs. */
export const DPO_METRICS = ['rewards/chosen', 'rewards/rejected', 'rewards/accuracies', 'rewards/margins', 'logps/chosen', 'logps/rejected'] as const;

/**
 * DPO on pairs. A step's loss is the mean over its pairs (TRL takes the mean of each micro-batch
 * and averages micro-batches: the same when they hold as many pairs, as they do but for a last short one).
 *
 * The reference is the model with `adapter: null`, computed in `prepareBatch` without a gradient.
 * Freeze/full fine-tuning (no adapter) trains the very weights the reference would be read from,
 * so the caller must refuse that combination unless `precomputedRef` is given (computed before
 * the first step); `prepareBatch` throws if it is reached without an adapter.
 */
export function dpoMethod(o: DpoOptions): Method<PairExample, PairBatch> {
  const { beta, loss_type } = o;
  return {
    name: 'dpo',
    metrics: DPO_METRICS,
    collate(examples) {
      const batch = collatePairs(examples, o.padTokenId);
      if (o.precomputedRef) {
        const refs = examples.map(o.precomputedRef);
        batch.ref = Float32Array.from([...refs.map((r) => r.chosen), ...refs.map((r) => r.rejected)]);
      }
      return batch;
    },
    countItems: (batch) => batch.pairs,
    countTokens: (batch) => batch.seq.num_tokens,
    async prepareBatch(batch, ctx) {
      if (batch.ref) return;
      refuseWithoutAdapter('dpo', ctx);
      batch.ref = await completionLogProbsOnHost(ctx.model, batch.seq);
    },
    loss(batch, ctx): MicroBatchLoss {
      if (!batch.ref) throw new Error('dpo: prepareBatch must run before loss (the reference log-probs are missing)');
      const B = batch.pairs;
      const logps = policyLogProbs(ctx, batch.seq).sums;
      const [chosen, rejected] = halves(logps, B);
      const [chosenRatio, rejectedRatio] = halves(tf.sub(logps, tf.tensor1d(batch.ref)) as tf.Tensor1D, B);
      const delta = tf.sub(chosenRatio, rejectedRatio);
      let perPair: tf.Tensor;
      if (loss_type === 'sigmoid') perPair = tf.neg(logSigmoid(tf.mul(beta, delta)));
      else if (loss_type === 'hinge') perPair = tf.relu(tf.sub(1, tf.mul(beta, delta)));
      else {
        const lengths = tf.tensor1d(Float32Array.from(batch.seq.completionLengths, (n) => Math.max(n, 1)));
        const [lc, lr] = halves(lengths, B);
        const ipoDelta = tf.sub(tf.div(chosenRatio, lc), tf.div(rejectedRatio, lr));
        perPair = tf.square(tf.sub(ipoDelta, 1 / (2 * beta)));
      }
      const chosenRewards = tf.mul(beta, chosenRatio);
      const rejectedRewards = tf.mul(beta, rejectedRatio);
      return {
        loss: tf.sum(perPair),
        metrics: keepMetrics(pairMetrics(chosenRewards as tf.Tensor1D, rejectedRewards as tf.Tensor1D, chosen, rejected)),
      };
    },
  };
}

/**
 * The reference log-probs of every example, `batchSize` pairs per forward pass, for
 * `precomputedRef` (TRL's `precompute_ref_log_probs`): the model's own weights, no adapter.
 * With freeze/full fine-tuning, run it before the first step changes those weights.
 */
export async function precomputeReferenceLogProbs(model: CausalLM, examples: PairExample[], o: { padTokenId: number; batchSize: number }): Promise<PairReference[]> {
  const out: PairReference[] = [];
  for (let i = 0; i < examples.length; i += o.batchSize) {
    const part = examples.slice(i, i + o.batchSize);
    const sums = await completionLogProbsOnHost(model, collatePairs(part, o.padTokenId).seq);
    part.forEach((_, j) => out.push({ chosen: sums[j], rejected: sums[part.length + j] }));
  }
  return out;
}
