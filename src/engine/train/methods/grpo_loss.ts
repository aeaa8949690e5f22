/**
 * GRPO's objective as TRL 1.x's GRPOTrainer computes it (trl/trainer/grpo_trainer.py, checked
 * against TRL 1.9 with its default `multi_objective_aggregation` "sum_then_normalize"): rewards
 * combined per completion, group-relative advantages, and the clipped per-token loss with its four
 * aggregations. Plain functions of rewards and per-token log-probs; the method (rollout, log-probs
 * from the model at the sampling temperature, the recipe) builds on them.
 */
import * as tf from '@tensorflow/tfjs';

/** TRL's `scale_rewards` (`true` is "group", `false` is "none"). */
export type ScaleRewards = 'group' | 'batch' | 'none';
/** TRL's `loss_type` values this engine implements (TRL's default is "dapo"). */
export type GrpoLossType = 'dapo' | 'grpo' | 'dr_grpo' | 'bnpo';
/** TRL's `importance_sampling_level`: "sequence" is GSPO. */
export type ImportanceSamplingLevel = 'token' | 'sequence';

/** What `_generate_and_score_completions` adds to the rewards' spread before dividing by it. */
const STD_EPS = 1e-4;

const isMissing = (r: number | null): r is null => r === null || Number.isNaN(r);

function nanMean(values: readonly number[]): number {
  let sum = 0;
  let count = 0;
  for (const v of values) {
    if (Number.isNaN(v)) continue;
    sum += v;
    count++;
  }
  return count > 0 ? sum / count : NaN;
}

/** trl.trainer.utils.nanstd: the unbiased standard deviation of the non-NaN values; NaN for fewer than two. */
export function nanStd(values: readonly number[]): number {
  const mean = nanMean(values);
  const count = values.filter((v) => !Number.isNaN(v)).length;
  if (count < 2) return NaN;
  return Math.sqrt(nanMean(values.map((v) => (v - mean) ** 2)) * (count / (count - 1)));
}

/**
 * The reward of each completion: Σₖ wₖ·rₖ over the functions that scored it (TRL's `nansum`;
 * a null or NaN reward is skipped). A completion that no function scored is NaN, not 0: TRL
 * (since 1.8, "unscorable" completions) marks it NaN so that it stays out of its group's baseline
 * and gets advantage 0, rather than nansum's 0 pulling the baseline down.
 *
 * @param rewards `[function][completion]`, as the reward functions return them.
 * @param weights one per function (TRL's `reward_weights`, all 1 by default).
 */
export function combineRewards(rewards: readonly (readonly (number | null)[])[], weights: readonly number[]): number[] {
  if (rewards.length !== weights.length) throw new Error(`combineRewards: ${rewards.length} reward functions but ${weights.length} weights`);
  const n = rewards[0]?.length ?? 0;
  return Array.from({ length: n }, (_, i) => {
    let sum = 0;
    let scored = false;
    rewards.forEach((f, k) => {
      const r = f[i];
      if (isMissing(r)) return;
      scored = true;
      const weighted = r * weights[k];
      if (!Number.isNaN(weighted)) sum += weighted;
    });
    return scored ? sum : NaN;
  });
}

export interface Advantages {
  /** One per completion: (r − group mean) / (std + 1e-4), or r − group mean for "none"; 0 where that is NaN. */
  advantages: number[];
  /** The std each completion's advantage was scaled by (its group's, or the batch's for "batch"); NaN when under two rewards. */
  std: number[];
  /** TRL's `frac_reward_zero_std`: the fraction of completions whose std is 0 (torch.isclose: ≤ 1e-8). */
  fracZeroStd: number;
}

/**
 * Group-relative advantages as TRL computes them. Completions come in groups of `numGenerations`
 * consecutive entries (one prompt each). The baseline is always the group's mean of the non-NaN
 * rewards; the divisor is the group's unbiased std ("group"), the whole batch's ("batch"), or none
 * ("none", whose std is still reported for `frac_reward_zero_std`). With `numGenerations` 1 (or a
 * batch of one under "batch") the std is 0, as in TRL. NaN advantages (an unscored completion, a
 * group with one scored completion) become 0: they carry no signal.
 */
export function groupAdvantages(rewards: readonly number[], numGenerations: number, scale: ScaleRewards): Advantages {
  const G = numGenerations;
  if (!(Number.isInteger(G) && G >= 1) || rewards.length % G !== 0) {
    throw new Error(`groupAdvantages: ${rewards.length} rewards do not form groups of ${numGenerations}`);
  }
  const groups = Array.from({ length: rewards.length / G }, (_, g) => rewards.slice(g * G, (g + 1) * G));
  const means = groups.map(nanMean);
  let std: number[];
  if (scale === 'batch') std = rewards.map(() => (rewards.length > 1 ? nanStd(rewards) : 0));
  else std = groups.flatMap((group) => group.map(() => (G > 1 ? nanStd(group) : 0)));
  const advantages = rewards.map((r, i) => {
    const centred = r - means[Math.floor(i / G)];
    const a = scale === 'none' ? centred : centred / (std[i] + STD_EPS);
    return Number.isNaN(a) ? 0 : a;
  });
  const zero = std.filter((s) => Math.abs(s) <= 1e-8).length;
  return { advantages, std, fracZeroStd: rewards.length > 0 ? zero / rewards.length : NaN };
}

/**
 * TRL's reward metrics for one generation batch: `reward` and `reward_std` over the combined
 * rewards (unscored completions left out), and `rewards/<name>/mean`, `/std` over the completions
 * each function scored. A value is NaN where nothing was scored (TRL logs it as None).
 */
export function rewardMetrics(rewards: readonly (readonly (number | null)[])[], names: readonly string[], combined: readonly number[]): Record<string, number> {
  const out: Record<string, number> = {};
  rewards.forEach((f, k) => {
    const values = f.map((r) => (r === null ? NaN : r));
    out[`rewards/${names[k]}/mean`] = nanMean(values);
    out[`rewards/${names[k]}/std`] = nanStd(values);
  });
  out.reward = nanMean(combined);
  out.reward_std = nanStd(combined);
  return out;
}

export interface GrpoLossOptions {
  /** TRL's `epsilon` (0.2): the lower clip bound is 1 − epsilon. */
  epsilon: number;
  /** TRL's `epsilon_high` (null: equal to `epsilon`; DAPO uses 0.28): the upper clip bound is 1 + epsilon_high. */
  epsilon_high?: number | null;
  /** TRL's `beta` (0.0): the weight of the k3 KL estimate to the reference; `refLogp` is required when > 0. */
  beta: number;
  importance_sampling_level: ImportanceSamplingLevel;
  loss_type: GrpoLossType;
  /** TRL's `max_completion_length`: dr_grpo's constant divisor is B · max_completion_length. */
  max_completion_length: number;
  /** dapo only: the completion tokens (mask sum) of the whole generation batch, all its micro-batches. */
  num_items_in_batch?: number;
}

export interface GrpoLossInputs {
  /** The policy's log-prob of each completion token, `[B, T]`, with its gradient. */
  logp: tf.Tensor2D;
  /**
   * The log-probs at generation time, `[B, T]`, no gradient (`num_iterations` > 1). Omitted:
   * `logp` itself, detached, as TRL does when `num_iterations` is 1 (ratio 1, gradient A).
   */
  oldLogp?: tf.Tensor2D;
  /** The reference model's log-probs, `[B, T]`, no gradient; needed when beta > 0. */
  refLogp?: tf.Tensor2D;
  /** One per completion, `[B]`. */
  advantages: tf.Tensor1D;
  /** 1 on the completion tokens in the loss (through the first EOS), 0 elsewhere, `[B, T]`. */
  completionMask: tf.Tensor2D;
}

/** The metrics `_compute_loss` logs (entropy aside), each this micro-batch's value; `kl` only when beta > 0. */
export const GRPO_LOSS_METRICS = ['kl', 'clip_ratio/low_mean', 'clip_ratio/high_mean', 'clip_ratio/region_mean'] as const;

export interface GrpoLoss {
  /**
   * The micro-batch's loss as TRL's `_compute_loss` returns it before dividing by the gradient
   * accumulation steps: dapo ΣL·m / num_items_in_batch; grpo the mean over sequences of each one's
   * token mean; bnpo ΣL·m / Σm; dr_grpo ΣL·m / (B · max_completion_length).
   *
   * On the Method seam (a micro-batch's loss is a sum the step divides once by its item count):
   * dapo counts completion tokens, so its sum is ΣL·m (= loss · num_items_in_batch) and the step's
   * count is num_items_in_batch when the step's micro-batches are the generation batch; grpo, bnpo
   * and dr_grpo count one item per micro-batch, so the sum is this loss and the step divides by
   * the number of micro-batches, as TRL divides by gradient_accumulation_steps.
   */
  loss: tf.Scalar;
  /**
   * TRL's values for this micro-batch: `kl` = Σ kl·m / Σm; `clip_ratio/*` the fraction of masked
   * tokens (token level) or of sequences (sequence level) whose ratio is clipped while it matters —
   * low: ratio < 1 − ε with A < 0; high: ratio > 1 + ε_high with A > 0; region: either. TRL logs
   * the mean of these over the step's micro-batches. Inside a gradient tape only the loss
   * survives its scope: `tf.keep` these to read them after (pairs.ts `keepMetrics`).
   */
  metrics: Record<string, tf.Scalar>;
}

/** Identity whose gradient is zero: torch's `.detach()`. */
const detach = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => ({
  value: tf.clone(args[0] as tf.Tensor),
  gradFunc: (dy: tf.Tensor) => tf.zerosLike(dy),
})) as (x: tf.Tensor) => tf.Tensor;

/**
 * The clipped surrogate with optional KL penalty, per token, aggregated as `loss_type` says.
 *   ratio = exp(logp − oldLogp) per token, or for "sequence" (GSPO) exp of the sequence's mean
 *   token log-ratio over the mask, one per sequence;
 *   Lₜ = −min(ratio·A, clip(ratio, 1 − ε, 1 + ε_high)·A) + β·(exp(ref − logp) − (ref − logp) − 1).
 * Rows whose mask is all zero (a masked truncated completion) count as length 1, as TRL clamps.
 */
export function grpoTokenLoss(inputs: GrpoLossInputs, o: GrpoLossOptions): GrpoLoss {
  const { logp, oldLogp, refLogp, advantages, completionMask } = inputs;
  const [B] = logp.shape;
  if (o.beta !== 0 && !refLogp) throw new Error('grpoTokenLoss: beta > 0 needs the reference log-probs');
  if (o.loss_type === 'dapo' && o.num_items_in_batch === undefined) throw new Error('grpoTokenLoss: dapo needs num_items_in_batch');
  const epsLow = o.epsilon;
  const epsHigh = o.epsilon_high ?? o.epsilon;
  return tf.tidy(() => {
    const mask = tf.cast(completionMask, 'float32');
    const rowTokens = tf.maximum(tf.sum(mask, 1, true), 1);
    const old = oldLogp ?? detach(logp);
    const logRatio = tf.sub(logp, old);
    const logWeights = o.importance_sampling_level === 'token' ? logRatio : tf.div(tf.sum(tf.mul(logRatio, mask), 1, true), rowTokens);
    const ratio = tf.exp(logWeights);
    const A = tf.reshape(advantages, [B, 1]);
    const clipped = tf.clipByValue(ratio, 1 - epsLow, 1 + epsHigh);
    let perToken = tf.neg(tf.minimum(tf.mul(ratio, A), tf.mul(clipped, A)));
    let kl: tf.Tensor | null = null;
    if (o.beta !== 0) {
      const d = tf.sub(refLogp!, logp);
      kl = tf.sub(tf.sub(tf.exp(d), d), 1);
      perToken = tf.add(perToken, tf.mul(o.beta, kl));
    }
    const masked = tf.mul(perToken, mask);
    const tokens = tf.maximum(tf.sum(mask), 1);
    let loss: tf.Scalar;
    switch (o.loss_type) {
      case 'grpo':
        loss = tf.mean(tf.div(tf.sum(masked, 1, true), rowTokens));
        break;
      case 'bnpo':
        loss = tf.div(tf.sum(masked), tokens);
        break;
      case 'dr_grpo':
        loss = tf.div(tf.sum(masked), B * o.max_completion_length);
        break;
      case 'dapo':
        loss = tf.div(tf.sum(masked), Math.max(o.num_items_in_batch!, 1));
        break;
    }

    // TRL's global_masked_mean: a mean over the masked tokens, or over sequences for one value per sequence.
    const tokenMean = (x: tf.Tensor): tf.Scalar => tf.div(tf.sum(tf.mul(x, mask)), tokens);
    const clipMean = (x: tf.Tensor): tf.Scalar => (o.importance_sampling_level === 'sequence' ? tf.mean(x) : tokenMean(x));
    const low = tf.logicalAnd(tf.less(ratio, 1 - epsLow), tf.less(A, 0));
    const high = tf.logicalAnd(tf.greater(ratio, 1 + epsHigh), tf.greater(A, 0));
    const metrics: Record<string, tf.Scalar> = {
      'clip_ratio/low_mean': clipMean(tf.cast(low, 'float32')),
      'clip_ratio/high_mean': clipMean(tf.cast(high, 'float32')),
      'clip_ratio/region_mean': clipMean(tf.cast(tf.logicalOr(low, high), 'float32')),
    };
    if (kl) metrics.kl = tokenMean(kl);
    return { loss, metrics };
  });
}
