/**
 * ORPO as TRL 1.x's ORPOTrainer computes it (trl/experimental/orpo/orpo_trainer.py
 * `concatenated_forward` and `odds_ratio_loss`): lc, lr = mean log-prob over the chosen /
 * rejected completion's tokens;
 *   log_odds = (lc − lr) − (log(1 − e^lc) − log(1 − e^lr));
 *   loss = NLL − β · mean(log σ(log_odds)),
 * where NLL is the token-mean cross-entropy over the WHOLE chosen sequences of the micro-batch,
 * prompt included ("orpo chosen nll loss is computed over the full prompt and response", as TRL
 * has computed it since its revert of the completion-only variant, PR #2527). No reference model.
 */
import * as tf from '@tensorflow/tfjs';
import type { PairExample } from '../../data/preference.ts';
import type { Method, MicroBatchLoss } from '../method.ts';
import { averageLogProbs, collatePairs, halves, keepMetrics, logSigmoid, pairMetrics, type PairBatch, policyLogProbs } from './pairs.ts';

export interface OrpoOptions {
  /** TRL's `beta` (default 0.1): the weight of the odds-ratio term (λ in the paper). */
  beta: number;
  padTokenId: number;
}

/** TRL's ORPO metrics (its `logits/*` aside); each is logged as the mean over the step's pairs. */
export const ORPO_METRICS = [
  'rewards/chosen',
  'rewards/rejected',
  'rewards/accuracies',
  'rewards/margins',
  'logps/rejected',
  'logps/chosen',
  'nll_loss',
  'log_odds_ratio',
  'log_odds_chosen',
] as const;

/**
 * log(1 − eˣ) for x < 0, TRL's `log1mexp`: two forms, each where it does not cancel. A custom
 * gradient, d/dx = −1 / expm1(−x), because the branch's comparison has no gradient for the tape
 * to walk through.
 */
export function log1mexp(x: tf.Tensor): tf.Tensor {
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [x, save] = args as [tf.Tensor, tf.GradSaveFunc];
    save([x]);
    return {
      value: tf.where(tf.less(x, -0.6931471805599453), tf.log1p(tf.neg(tf.exp(x))), tf.log(tf.neg(tf.expm1(x)))),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.div(tf.neg(dy), tf.expm1(tf.neg(saved[0]))),
    };
  });
  return f(x);
}

/**
 * ORPO on pairs. TRL's micro-batch loss is NLL (a token mean over the micro-batch) minus the
 * mean odds-ratio term; the sum handed to the step is B times that, so the step's loss is the
 * mean of micro-batch losses when micro-batches hold as many pairs (as TRL's averaging of
 * accumulated micro-batches gives). `nll_loss` is likewise the micro-batch's NLL times B.
 */
export function orpoMethod(o: OrpoOptions): Method<PairExample, PairBatch> {
  const { beta } = o;
  return {
    name: 'orpo',
    metrics: ORPO_METRICS,
    collate: (examples) => collatePairs(examples, o.padTokenId, { wholeChosen: true }),
    countItems: (batch) => batch.pairs,
    countTokens: (batch) => batch.seq.num_tokens,
    loss(batch, ctx): MicroBatchLoss {
      const B = batch.pairs;
      const lp = policyLogProbs(ctx, batch.seq);
      const [chosen, rejected] = halves(averageLogProbs(lp, batch.seq), B);
      // The chosen rows come first and score every real token: their positions are a prefix.
      const chosenPositions = batch.seq.rowStart[B];
      const nll = tf.div(tf.neg(tf.sum(tf.slice(lp.tokens, 0, chosenPositions))), Math.max(chosenPositions, 1));
      const logOdds = tf.sub(tf.sub(chosen, rejected), tf.sub(log1mexp(chosen), log1mexp(rejected)));
      const ratio = logSigmoid(logOdds);
      const nllTimesRows = tf.mul(nll, B) as tf.Scalar;
      const chosenRewards = tf.mul(beta, chosen);
      const rejectedRewards = tf.mul(beta, rejected);
      return {
        loss: tf.sub(nllTimesRows, tf.sum(tf.mul(beta, ratio))),
        metrics: keepMetrics({
          ...pairMetrics(chosenRewards as tf.Tensor1D, rejectedRewards as tf.Tensor1D, chosen, rejected),
          nll_loss: nllTimesRows,
          log_odds_ratio: tf.sum(ratio),
          log_odds_chosen: tf.sum(logOdds),
        }),
      };
    },
  };
}
