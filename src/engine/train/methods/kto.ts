/**
 * KTO as TRL 1.x's KTOTrainer computes it (trl/trainer/kto_trainer.py `_compute_loss`, loss_type
 * "kto"): ρ = logp − ref per row (completion log-prob sums); the KL estimate
 * kl = max(0, mean over the micro-batch of (logp − ref) on mismatched pairs), without a gradient;
 *   desirable rows: w_d · (1 − σ(β(ρ − kl))),  undesirable rows: w_u · (1 − σ(β(kl − ρ)));
 * the loss is the plain mean of those weighted terms over all rows (TRL's `losses.nanmean()`).
 *
 * The mismatched pairs are TRL's: the completions rotated by one within the batch, so row i's
 * prompt goes with row i − 1's completion (row 0's with the last row's). TRL rotates within each
 * `per_device_train_batch_size` chunk of the dataset in order (it requires sequential sampling);
 * here the rotation is within each micro-batch as collated, which is the same set of rows.
 */
import * as tf from '@tensorflow/tfjs';
import type { KtoExample } from '../../data/preference.ts';
import type { Method, MicroBatchLoss } from '../method.ts';
import { collateSequences, completionLogProbsOnHost, keepMetrics, policyLogProbs, refuseWithoutAdapter, type SequenceBatch } from './pairs.ts';

export interface KtoOptions {
  /** TRL's `beta` (default 0.1). */
  beta: number;
  /** TRL's `desirable_weight` (default 1.0): weight of a desirable row's loss. */
  desirable_weight: number;
  /** TRL's `undesirable_weight` (default 1.0): weight of an undesirable row's loss. */
  undesirable_weight: number;
  padTokenId: number;
}

/** A KTO micro-batch: each row's own sequence, its mismatched KL sequence, and its label. */
export interface KtoBatch {
  rows: number;
  /** prompt_i + completion_i. */
  seq: SequenceBatch;
  /** prompt_i + completion_{i−1} (cyclic): TRL's KL_input_ids. */
  kl: SequenceBatch;
  /** 1 for a desirable row, 0 for an undesirable one. */
  desirable: Float32Array;
  /** The reference model's completion log-prob sums of `seq`, set by `prepareBatch`. */
  ref: Float32Array | null;
  /** The micro-batch's KL estimate (detached, ≥ 0), set by `prepareBatch`. */
  klEstimate: number | null;
}

/** TRL's KTO metrics that are means (its `*_sum` counterparts are what it gathers to build them). */
export const KTO_METRICS = ['kl', 'rewards/chosen', 'logps/chosen', 'rewards/rejected', 'logps/rejected', 'rewards/margins'] as const;

/**
 * KTO on unpaired rows; a step's loss is the mean over its rows.
 *
 * `prepareBatch` runs, without a gradient: the policy (with dropout, as TRL's train-mode pass) on
 * the KL sequences, then the reference (`adapter: null`) on the KL sequences and on the rows. It
 * must run with the weights the step's loss will see. The KL term is per micro-batch, as in TRL
 * (each `compute_loss` call has its own), so it does not depend on gradient accumulation; a
 * micro-batch of one row pairs the row with itself (TRL refuses per_device_train_batch_size 1;
 * so should the caller).
 *
 * Metrics: TRL logs `rewards/chosen`, `logps/chosen` as means over the desirable rows of each
 * micro-batch (and `…/rejected` over the undesirable ones; `rewards/margins` = their difference,
 * `kl` the estimate). Since the step divides every metric sum by its row count, each is given
 * here as that mean times the micro-batch's rows: exact for one micro-batch, and the
 * row-weighted mean of micro-batch means under accumulation (TRL's plain mean when micro-batches
 * are equal). A micro-batch without desirable (undesirable) rows adds 0 to the chosen (rejected)
 * metrics and the margin, where TRL leaves it out.
 *
 * Freeze/full fine-tuning (no adapter) has no reference to switch to: the caller must refuse
 * that combination; `prepareBatch` throws if it is reached without an adapter.
 */
export function ktoMethod(o: KtoOptions): Method<KtoExample, KtoBatch> {
  const { beta, desirable_weight, undesirable_weight } = o;
  return {
    name: 'kto',
    metrics: KTO_METRICS,
    collate(examples) {
      const n = examples.length;
      return {
        rows: n,
        seq: collateSequences(examples.map((e) => ({ prompt: e.prompt_ids, completion: e.completion_ids })), o.padTokenId),
        kl: collateSequences(examples.map((e, i) => ({ prompt: e.prompt_ids, completion: examples[(i + n - 1) % n].completion_ids })), o.padTokenId),
        desirable: Float32Array.from(examples, (e) => (e.label ? 1 : 0)),
        ref: null,
        klEstimate: null,
      };
    },
    countItems: (batch) => batch.rows,
    // TRL counts the rows' own tokens (attention_mask), not the KL sequences'.
    countTokens: (batch) => batch.seq.num_tokens,
    async prepareBatch(batch, ctx) {
      refuseWithoutAdapter('kto', ctx);
      const policyKl = await completionLogProbsOnHost(ctx.model, batch.kl, { adapter: ctx.adapter, dropoutSeed: ctx.dropoutSeed });
      const refKl = await completionLogProbsOnHost(ctx.model, batch.kl);
      batch.ref = await completionLogProbsOnHost(ctx.model, batch.seq);
      let sum = 0;
      for (let i = 0; i < batch.rows; i++) sum += policyKl[i] - refKl[i];
      batch.klEstimate = Math.max(0, sum / batch.rows);
    },
    loss(batch, ctx): MicroBatchLoss {
      if (!batch.ref || batch.klEstimate === null) throw new Error('kto: prepareBatch must run before loss (reference log-probs and KL are missing)');
      const R = batch.rows;
      const kl = batch.klEstimate;
      const logps = policyLogProbs(ctx, batch.seq).sums;
      const ratio = tf.sub(logps, tf.tensor1d(batch.ref));
      const d = tf.tensor1d(batch.desirable);
      const u = tf.sub(1, d);
      const chosenLosses = tf.sub(1, tf.sigmoid(tf.mul(beta, tf.sub(ratio, kl))));
      const rejectedLosses = tf.sub(1, tf.sigmoid(tf.mul(beta, tf.sub(kl, ratio))));
      const perRow = tf.add(tf.mul(tf.mul(d, desirable_weight), chosenLosses), tf.mul(tf.mul(u, undesirable_weight), rejectedLosses));

      const nChosen = batch.desirable.reduce((a, x) => a + x, 0);
      const nRejected = R - nChosen;
      const rewards = tf.mul(beta, ratio);
      // The mean over one label's rows, times the micro-batch's rows (see the doc above).
      const meanTimesRows = (x: tf.Tensor, mask: tf.Tensor, n: number): tf.Scalar => (n > 0 ? tf.mul(tf.sum(tf.mul(mask, x)), R / n) : tf.scalar(0));
      const chosenRewards = meanTimesRows(rewards, d, nChosen);
      const rejectedRewards = meanTimesRows(rewards, u, nRejected);
      return {
        loss: tf.sum(perRow),
        metrics: keepMetrics({
          kl: tf.scalar(kl * R),
          'rewards/chosen': chosenRewards,
          'logps/chosen': meanTimesRows(logps, d, nChosen),
          'rewards/rejected': rejectedRewards,
          'logps/rejected': meanTimesRows(logps, u, nRejected),
          'rewards/margins': nChosen > 0 && nRejected > 0 ? tf.sub(chosenRewards, rejectedRewards) : tf.scalar(0),
        }),
      };
    },
  };
}
