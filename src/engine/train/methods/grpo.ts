/**
 * GRPO (TRL 1.x's GRPOTrainer) on the Method seam's online path. Once per optimizer step the
 * rollout samples `num_generations` completions of each of the step's prompts (all at once, with
 * the Trainer's RNG), scores them with the reward functions, turns the rewards into group-relative
 * advantages, and builds one micro-batch per group of prompts; the loss is the clipped surrogate
 * of `grpo_loss.ts` on the completions' log-probs at the sampling temperature.
 *
 * A micro-batch is TRL's layout: each prompt left-padded to the micro-batch's longest, its
 * completion right-padded after it; the completion mask is 1 through the first EOS. With
 * `num_iterations` above 1 the log-probs at generation time are computed in the rollout (no
 * gradient) and kept as the old ones, and the Trainer trains on the same micro-batches that many
 * steps. With `beta` above 0 the reference log-probs (the adapter off) are computed there too.
 */
import * as tf from '@tensorflow/tfjs';
import type { PromptExample } from '../../data/prompts.ts';
import { generate } from '../../model/generate.ts';
import type { CausalLM } from '../../model/llama.ts';
import { selectedLogProbs } from '../../model/logprobs.ts';
import type { LossContext, Method } from '../method.ts';
import { grpoMetrics } from '../metrics.ts';
import type { LoadedReward } from '../reward_funcs.ts';
import { combineRewards, groupAdvantages, grpoTokenLoss, rewardMetrics, type GrpoLossType, type ImportanceSamplingLevel, type ScaleRewards } from './grpo_loss.ts';
import { keepMetrics, refuseWithoutAdapter } from './pairs.ts';

export interface GrpoOptions {
  num_generations: number;
  temperature: number;
  top_p: number;
  top_k: number;
  max_completion_length: number;
  beta: number;
  epsilon: number;
  epsilon_high: number | null;
  loss_type: GrpoLossType;
  scale_rewards: ScaleRewards;
  importance_sampling_level: ImportanceSamplingLevel;
  num_iterations: number;
  mask_truncated_completions: boolean;
  /** One per reward function; null weighs each 1. */
  reward_weights: number[] | null;
  rewards: LoadedReward[];
  padTokenId: number;
  eosTokenIds: number[];
  /** A completion's text as the reward functions read it (special tokens skipped, as TRL decodes). */
  decode: (ids: number[]) => string;
  /** Every completion of a step's rollout, with its rewards and advantage (the rollout log). */
  onCompletions?: (records: CompletionRecord[]) => void | Promise<void>;
  /** A reward function's problem (a throw, a timeout, a bad value), as one sentence. */
  onWarning?: (message: string) => void;
}

/** One line of completions.jsonl. */
export interface CompletionRecord {
  /** The optimizer step that trained on it first, 1-based. */
  step: number;
  prompt: PromptExample['prompt'];
  completion: string;
  /** The prompt's tokens, without padding. */
  prompt_ids: number[];
  /** The completion's tokens in the loss: through the first EOS, nothing after. */
  completion_ids: number[];
  /** Each reward function's value by its name; null where it gave none. */
  rewards: Record<string, number | null>;
  /** The weighted sum; null where no function scored it. */
  reward: number | null;
  advantage: number;
  /** Stopped by max_completion_length before an EOS (left out of the loss with mask_truncated_completions). */
  truncated: boolean;
}

/** One micro-batch: its rows are whole groups of `num_generations` completions. */
export interface GrpoBatch {
  rows: number;
  /** Width of the left-padded prompts. */
  promptLength: number;
  /** Width of the right-padded completions. */
  completionLength: number;
  /** [rows, promptLength + completionLength] */
  input_ids: number[];
  attention_mask: number[];
  /** [rows, promptLength + completionLength]: RoPE positions counting real tokens, as generation used. */
  position_ids: number[];
  /** [rows, completionLength]: 1 on the tokens in the loss. */
  completion_mask: number[];
  /** [rows] */
  advantages: number[];
  /** [rows, completionLength] at generation time, when num_iterations > 1. */
  old_logps: number[] | null;
  /** [rows, completionLength] with the adapter off, when beta > 0. */
  ref_logps: number[] | null;
  /** Completion tokens in the loss (dapo's item count). */
  num_completion_tokens: number;
  num_tokens: number;
  /** The generation batch's metrics (rewards, lengths), the same on each of its micro-batches. */
  rollout_metrics: Record<string, number>;
}

export function grpoMethod(o: GrpoOptions): Method<PromptExample, GrpoBatch> {
  const G = o.num_generations;
  const names = o.rewards.map((r) => r.name);
  const weights = o.reward_weights ?? o.rewards.map(() => 1);
  if (weights.length !== o.rewards.length) throw new Error(`grpoMethod: ${o.rewards.length} reward functions but ${weights.length} reward_weights`);
  const eos = new Set(o.eosTokenIds);
  const countItems = (b: GrpoBatch) => (o.loss_type === 'dapo' ? b.num_completion_tokens : b.rows > 0 ? 1 : 0);

  return {
    name: 'grpo',
    metrics: grpoMetrics(names),
    examplesPerMicroBatch: (rows) => {
      if (rows % G !== 0) throw new Error(`per_device_train_batch_size ${rows} is not a multiple of num_generations ${G}`);
      return rows / G;
    },
    stepsPerRollout: o.num_iterations,
    collate() {
      throw new Error('GRPO generates its batches in rollout; it has no evaluation loss');
    },
    countItems,
    countTokens: (b) => b.num_tokens,

    async rollout(groups, ctx) {
      const prompts = groups.flat();
      const adapter = ctx.adapter;
      const completions = await generate(ctx.model, prompts.map((p) => p.prompt_ids), {
        adapter,
        rng: ctx.rng,
        do_sample: true,
        temperature: o.temperature,
        top_k: o.top_k,
        top_p: o.top_p,
        max_new_tokens: o.max_completion_length,
        num_return_sequences: G,
        eos_token_id: o.eosTokenIds,
        pad_token_id: o.padTokenId,
      });
      // generate stops a row at its first EOS, so a completion is exactly the tokens in the loss.
      const truncated = completions.map((c) => c.length === 0 || !eos.has(c[c.length - 1]));
      const source = completions.map((_, i) => prompts[Math.floor(i / G)]);
      const texts = completions.map((c) => o.decode(c));
      const inputs = { prompts: source.map((p) => p.prompt), completions: texts, columns: source.map((p) => p.columns), completion_ids: completions };
      const perFunction: (number | null)[][] = [];
      for (const reward of o.rewards) {
        const { values, warnings } = await reward.score(inputs);
        perFunction.push(values);
        for (const w of warnings) o.onWarning?.(w);
      }
      const combined = combineRewards(perFunction, weights);
      const { advantages, fracZeroStd } = groupAdvantages(combined, G, o.scale_rewards);
      const lengths = completions.map((c) => c.length);
      const metrics: Record<string, number> = {
        ...rewardMetrics(perFunction, names, combined),
        frac_reward_zero_std: fracZeroStd,
        'completions/mean_length': lengths.reduce((a, b) => a + b, 0) / lengths.length,
        'completions/min_length': Math.min(...lengths),
        'completions/max_length': Math.max(...lengths),
        'completions/clipped_ratio': truncated.filter(Boolean).length / truncated.length,
      };

      await o.onCompletions?.(completions.map((c, i) => ({
        step: ctx.step,
        prompt: source[i].prompt,
        completion: texts[i],
        prompt_ids: source[i].prompt_ids,
        completion_ids: c,
        rewards: Object.fromEntries(names.map((n, k) => [n, perFunction[k][i]])),
        reward: Number.isNaN(combined[i]) ? null : combined[i],
        advantage: advantages[i],
        truncated: truncated[i],
      })));

      const batches: GrpoBatch[] = [];
      let first = 0;
      for (const group of groups) {
        const n = group.length * G;
        const idx = Array.from({ length: n }, (_, k) => first + k);
        first += n;
        const batch = layoutGrpoBatch(idx.map((i) => source[i].prompt_ids), idx.map((i) => completions[i]), idx.map((i) => (o.mask_truncated_completions && truncated[i] ? 0 : 1)), o.padTokenId);
        batch.advantages = idx.map((i) => advantages[i]);
        batch.rollout_metrics = metrics;
        if (o.num_iterations > 1) batch.old_logps = await grpoLogProbsOnHost(ctx.model, batch, adapter, o.temperature);
        if (o.beta > 0) {
          refuseWithoutAdapter('GRPO with beta > 0', ctx);
          batch.ref_logps = await grpoLogProbsOnHost(ctx.model, batch, null, o.temperature);
        }
        batches.push(batch);
      }
      return batches;
    },

    loss(b, ctx) {
      const [B, C] = [b.rows, b.completionLength];
      const hidden = forwardHidden(ctx.model, b, ctx);
      const { positions, targets } = completionTargets(b);
      // logits / T, as TRL divides them before the log-softmax: the LM head is linear without bias.
      const scaled = tf.mul(hidden, 1 / o.temperature) as tf.Tensor3D;
      const logp = tf.reshape(selectedLogProbs(ctx.model, scaled, positions, targets), [B, C]) as tf.Tensor2D;
      const completionMask = tf.tensor2d(b.completion_mask, [B, C]);
      const { loss, metrics } = grpoTokenLoss(
        {
          logp,
          oldLogp: b.old_logps ? tf.tensor2d(b.old_logps, [B, C]) : undefined,
          refLogp: b.ref_logps ? tf.tensor2d(b.ref_logps, [B, C]) : undefined,
          advantages: tf.tensor1d(b.advantages),
          completionMask,
        },
        {
          epsilon: o.epsilon,
          epsilon_high: o.epsilon_high,
          beta: o.beta,
          importance_sampling_level: o.importance_sampling_level,
          loss_type: o.loss_type,
          max_completion_length: o.max_completion_length,
          // On the seam dapo's micro-batch loss is its sum ΣL·m; the step divides by its completion tokens.
          num_items_in_batch: 1,
        },
      );
      const items = countItems(b);
      const tokens = Math.max(b.num_completion_tokens, 1);
      const entropy = tf.div(tf.sum(tf.mul(tokenEntropy(ctx.model, scaled, positions, [B, C]), completionMask)), tokens);
      // Metric sums over the micro-batch's items: the step divides by its item count, so each
      // logs as the step's (item-weighted) mean; the rollout's are the same on every micro-batch.
      const sums: Record<string, tf.Scalar> = { entropy: tf.mul(entropy, items) as tf.Scalar };
      for (const [k, v] of Object.entries(metrics)) sums[k] = tf.mul(v, items) as tf.Scalar;
      for (const [k, v] of Object.entries(b.rollout_metrics)) sums[k] = tf.scalar(v * items);
      return { loss, metrics: keepMetrics(sums) };
    },

    encodeRollout: (batches) => batches,
    decodeRollout: (json) => json as GrpoBatch[],
  };
}

/**
 * Prompts left-padded to the longest, completions right-padded after them: TRL's
 * `prompt_completion_ids`. `keep` is 1 for a completion in the loss, 0 for one masked out
 * (mask_truncated_completions). Advantages and log-probs are filled in by the caller.
 */
export function layoutGrpoBatch(prompts: number[][], completions: number[][], keep: number[], padTokenId: number): GrpoBatch {
  const rows = prompts.length;
  const P = Math.max(...prompts.map((p) => p.length));
  const C = Math.max(1, ...completions.map((c) => c.length));
  const W = P + C;
  const input_ids = new Array<number>(rows * W).fill(padTokenId);
  const attention_mask = new Array<number>(rows * W).fill(0);
  const position_ids = new Array<number>(rows * W).fill(0);
  const completion_mask = new Array<number>(rows * C).fill(0);
  let num_completion_tokens = 0;
  let num_tokens = 0;
  for (let r = 0; r < rows; r++) {
    const p = prompts[r];
    const c = completions[r];
    const start = r * W + (P - p.length);
    let pos = 0;
    for (let t = 0; t < p.length; t++, pos++) {
      input_ids[start + t] = p[t];
      attention_mask[start + t] = 1;
      position_ids[start + t] = pos;
    }
    for (let t = 0; t < c.length; t++, pos++) {
      input_ids[r * W + P + t] = c[t];
      attention_mask[r * W + P + t] = 1;
      position_ids[r * W + P + t] = pos;
      completion_mask[r * C + t] = keep[r];
    }
    num_completion_tokens += keep[r] * c.length;
    num_tokens += p.length + c.length;
  }
  return {
    rows, promptLength: P, completionLength: C, input_ids, attention_mask, position_ids, completion_mask,
    advantages: [], old_logps: null, ref_logps: null, num_completion_tokens, num_tokens, rollout_metrics: {},
  };
}

function forwardHidden(model: CausalLM, b: GrpoBatch, ctx: Pick<LossContext, 'adapter' | 'dropoutSeed' | 'gradientCheckpointing'>): tf.Tensor3D {
  const W = b.promptLength + b.completionLength;
  return model.forward(tf.tensor2d(b.input_ids, [b.rows, W], 'int32'), {
    attentionMask: tf.tensor2d(b.attention_mask, [b.rows, W], 'int32'),
    positionIds: tf.tensor2d(b.position_ids, [b.rows, W], 'int32'),
    adapter: ctx.adapter,
    dropoutSeed: ctx.dropoutSeed,
    gradientCheckpointing: ctx.gradientCheckpointing,
  });
}

/** The flat positions whose logits score completion token j of each row (P − 1 + j), and those tokens. */
function completionTargets(b: GrpoBatch): { positions: tf.Tensor1D; targets: tf.Tensor1D } {
  const [P, C] = [b.promptLength, b.completionLength];
  const W = P + C;
  const positions = new Int32Array(b.rows * C);
  const targets = new Int32Array(b.rows * C);
  for (let r = 0; r < b.rows; r++) {
    for (let j = 0; j < C; j++) {
      positions[r * C + j] = r * W + P - 1 + j;
      targets[r * C + j] = b.input_ids[r * W + P + j];
    }
  }
  return { positions: tf.tensor1d(positions, 'int32'), targets: tf.tensor1d(targets, 'int32') };
}

/** Per-token log-probs of a micro-batch's completions at the temperature, without a gradient, on the host: [rows × completionLength]. */
export async function grpoLogProbsOnHost(model: CausalLM, b: GrpoBatch, adapter: LossContext['adapter'], temperature: number): Promise<number[]> {
  const out = tf.tidy(() => {
    const hidden = tf.mul(forwardHidden(model, b, { adapter }), 1 / temperature) as tf.Tensor3D;
    const { positions, targets } = completionTargets(b);
    return selectedLogProbs(model, hidden, positions, targets);
  });
  const values = Array.from((await out.data()) as Float32Array);
  out.dispose();
  return values;
}

/**
 * The entropy of each scored position's next-token distribution at the temperature, [B, C],
 * computed outside the gradient tape: inside a customGrad's forward no op is recorded, so the
 * [tokens × vocab] probabilities are freed at once instead of being kept for a backward pass
 * the metric never has. Chunked over rows as the log-probs are.
 */
function tokenEntropy(model: CausalLM, scaledHidden: tf.Tensor3D, positions: tf.Tensor1D, shape: [number, number]): tf.Tensor2D {
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [h, pos] = args as [tf.Tensor3D, tf.Tensor1D];
    const value = tf.tidy(() => {
      const H = model.config.hidden_size;
      const rows = tf.gather(tf.reshape(h, [-1, H]), pos) as tf.Tensor2D;
      const size = Math.max(1, Math.floor((1 << 22) / model.config.vocab_size));
      const parts: tf.Tensor1D[] = [];
      for (let start = 0; start < rows.shape[0]; start += size) {
        const n = Math.min(size, rows.shape[0] - start);
        parts.push(tf.tidy(() => {
          const logp = tf.logSoftmax(model.logits(tf.slice(rows, start, n)) as tf.Tensor2D);
          return tf.neg(tf.sum(tf.mul(tf.exp(logp), logp), 1)) as tf.Tensor1D;
        }));
      }
      return tf.reshape(parts.length === 1 ? parts[0] : tf.concat(parts), shape);
    });
    return { value, gradFunc: () => [tf.zerosLike(h), tf.zerosLike(pos)] };
  });
  return f(scaledHidden, positions) as tf.Tensor2D;
}

