/**
 * What the preference methods (DPO, KTO, ORPO, SimPO) share: sequences built as prompt +
 * completion, right-padded into one batch, and the log-probability of each sequence's completion
 * under the model, as TRL computes it (the logits at position t score token t + 1; only tokens of
 * the completion count, as labels -100 on the prompt would).
 */
import * as tf from '@tensorflow/tfjs';
import type { CausalLM, ForwardOptions } from '../../model/llama.ts';
import { selectedLogProbs } from '../../model/logprobs.ts';
import type { PairExample } from '../../data/preference.ts';
import { bucketLength } from '../batch.ts';
import type { LossContext } from '../method.ts';

/** One sequence to score: its prompt, then its completion. */
export interface SequenceSpec {
  prompt: number[];
  completion: number[];
  /**
   * Also score the prompt's tokens (with weight 0 in the completion sums): ORPO's NLL term runs
   * over the whole chosen sequence, prompt included, as TRL's ORPOTrainer computes it.
   */
  wholeSequence?: boolean;
}

/** Right-padded sequences on the host, with the positions whose next token is scored. */
export interface SequenceBatch {
  rows: number;
  length: number;
  input_ids: Int32Array;
  attention_mask: Int32Array;
  /** Flat positions r·length + t whose next token is scored, row by row in order. */
  positions: Int32Array;
  /** The token each position predicts. */
  targets: Int32Array;
  /**
   * [rows × positions], row-major: 1 where a position scores a completion token of that row, 0
   * elsewhere. The per-row sums are a product with this mask: tfjs's unsortedSegmentSum (and
   * tf.gather's gradient, which uses it) has no WASM kernel, and rows × positions products are
   * nothing next to the LM head's positions × vocabulary × hidden.
   */
  completionMask: Float32Array;
  /** Scored completion tokens per row (TRL's `loss_mask.sum(-1)`, ORPO's and SimPO's length divisor). */
  scoredTokens: Int32Array;
  /** Completion length per row (TRL's `completion_mask.sum(1)`, IPO's length divisor). */
  completionLengths: Int32Array;
  /** Positions of each row: row r owns positions rowStart[r] .. rowStart[r + 1] - 1. */
  rowStart: Int32Array;
  /** Real (non-pad) tokens. */
  num_tokens: number;
}

export function collateSequences(specs: SequenceSpec[], padTokenId: number, bucket = true): SequenceBatch {
  const rows = specs.length;
  const longest = Math.max(...specs.map((s) => s.prompt.length + s.completion.length));
  const T = bucket ? bucketLength(longest) : longest;
  const input_ids = new Int32Array(rows * T).fill(padTokenId);
  const attention_mask = new Int32Array(rows * T);
  const positions: number[] = [];
  const targets: number[] = [];
  const inCompletion: boolean[] = [];
  const rowStart = new Int32Array(rows + 1);
  const scoredTokens = new Int32Array(rows);
  const completionLengths = new Int32Array(rows);
  let num_tokens = 0;
  specs.forEach((s, r) => {
    const ids = [...s.prompt, ...s.completion];
    input_ids.set(ids, r * T);
    attention_mask.fill(1, r * T, r * T + ids.length);
    num_tokens += ids.length;
    rowStart[r] = positions.length;
    // Token t + 1 is scored from position t; a completion token at index 0 (empty prompt) has no
    // position before it and is not scored, as in TRL's shifted completion mask.
    const first = s.wholeSequence ? 0 : Math.max(s.prompt.length - 1, 0);
    for (let t = first; t + 1 < ids.length; t++) {
      positions.push(r * T + t);
      targets.push(ids[t + 1]);
      const completion = t + 1 >= s.prompt.length;
      inCompletion.push(completion);
      if (completion) scoredTokens[r]++;
    }
    completionLengths[r] = s.completion.length;
  });
  rowStart[rows] = positions.length;
  const N = positions.length;
  const completionMask = new Float32Array(rows * N);
  for (let r = 0; r < rows; r++) {
    for (let i = rowStart[r]; i < rowStart[r + 1]; i++) if (inCompletion[i]) completionMask[r * N + i] = 1;
  }
  return {
    rows,
    length: T,
    input_ids,
    attention_mask,
    positions: Int32Array.from(positions),
    targets: Int32Array.from(targets),
    completionMask,
    scoredTokens,
    completionLengths,
    rowStart,
    num_tokens,
  };
}

/** Log-probs of a batch's sequences: every scored token's, and each row's completion sum. */
export interface SequenceLogProbs {
  /** log p(target | prefix) at each scored position, [positions]. */
  tokens: tf.Tensor1D;
  /** Sum over each row's completion tokens, [rows]. */
  sums: tf.Tensor1D;
}

/** One forward pass over the batch; differentiable when called under a gradient tape. */
export function sequenceLogProbs(model: CausalLM, seq: SequenceBatch, opts: Pick<ForwardOptions, 'adapter' | 'dropoutSeed' | 'gradientCheckpointing'>): SequenceLogProbs {
  const inputIds = tf.tensor2d(seq.input_ids, [seq.rows, seq.length], 'int32');
  const attentionMask = tf.tensor2d(seq.attention_mask, [seq.rows, seq.length], 'int32');
  const hidden = model.forward(inputIds, { attentionMask, adapter: opts.adapter, dropoutSeed: opts.dropoutSeed, gradientCheckpointing: opts.gradientCheckpointing });
  const tokens = selectedLogProbs(model, hidden, tf.tensor1d(seq.positions, 'int32'), tf.tensor1d(seq.targets, 'int32'));
  const N = seq.positions.length;
  const sums = tf.sum(tf.mul(tf.tensor2d(seq.completionMask, [seq.rows, N]), tokens), 1) as tf.Tensor1D;
  return { tokens, sums };
}

/** The policy's log-probs inside a method's loss: the adapter being trained, dropout and checkpointing as the step says. */
export function policyLogProbs(ctx: LossContext, seq: SequenceBatch): SequenceLogProbs {
  return sequenceLogProbs(ctx.model, seq, { adapter: ctx.adapter, dropoutSeed: ctx.dropoutSeed, gradientCheckpointing: ctx.gradientCheckpointing });
}

/**
 * Each row's completion log-prob sum without a gradient, read back to the host: the reference
 * model (`adapter: null`) of DPO and KTO, or KTO's detached KL pass with the policy.
 */
export async function completionLogProbsOnHost(model: CausalLM, seq: SequenceBatch, opts: Pick<ForwardOptions, 'adapter' | 'dropoutSeed'> = {}): Promise<Float32Array> {
  const sums = tf.tidy(() => sequenceLogProbs(model, seq, { adapter: opts.adapter ?? null, dropoutSeed: opts.dropoutSeed }).sums);
  const values = Float32Array.from((await sums.data()) as Float32Array);
  sums.dispose();
  return values;
}

/**
 * The reference is the model with the adapter off; while the model's own weights train there is
 * no adapter to switch off. (Evaluating the base model, with no adapter, is its own reference.)
 */
export function refuseWithoutAdapter(method: string, ctx: LossContext): void {
  if (!ctx.adapter && ctx.trainsModelWeights) {
    throw new Error(
      `${method}: the reference model is the model with its LoRA adapter switched off, so it needs an adapter; ` +
        'freeze/full fine-tuning has none (precomputed reference log-probs would be needed).',
    );
  }
}

/** A micro-batch of preference pairs: rows [chosen 0..B-1, rejected 0..B-1], as TRL's concatenated forward. */
export interface PairBatch {
  /** Pairs in the micro-batch (B). */
  pairs: number;
  seq: SequenceBatch;
  /**
   * The reference model's completion log-prob sums, [chosen…, rejected…] (2B): filled by
   * `prepareBatch`, or at collation from precomputed values. Methods without a reference leave it null.
   */
  ref: Float32Array | null;
}

/**
 * The rows of a pair micro-batch in TRL's order: every pair's prompt + chosen, then every pair's
 * prompt + rejected. `wholeChosen` also scores the chosen rows' prompt tokens (ORPO's NLL).
 */
export function collatePairs(examples: PairExample[], padTokenId: number, opts: { wholeChosen?: boolean } = {}): PairBatch {
  const specs: SequenceSpec[] = [
    ...examples.map((e) => ({ prompt: e.prompt_ids, completion: e.chosen_ids, wholeSequence: opts.wholeChosen ?? false })),
    ...examples.map((e) => ({ prompt: e.prompt_ids, completion: e.rejected_ids })),
  ];
  return { pairs: examples.length, seq: collateSequences(specs, padTokenId), ref: null };
}

/** Chosen and rejected halves of a [2B] tensor. */
export function halves(t: tf.Tensor1D, B: number): [tf.Tensor1D, tf.Tensor1D] {
  return [tf.slice(t, 0, B), tf.slice(t, B, B)];
}

/**
 * Each row's mean log-prob over its completion tokens (TRL's `get_batch_logps(average_log_prob=True)`),
 * [rows]. A row with no scored token divides by 1 rather than giving NaN.
 */
export function averageLogProbs(lp: SequenceLogProbs, seq: SequenceBatch): tf.Tensor1D {
  return tf.div(lp.sums, tf.tensor1d(Float32Array.from(seq.scoredTokens, (n) => Math.max(n, 1)))) as tf.Tensor1D;
}

/**
 * log σ(x) as −softplus(−x). tf.logSigmoid's gradient closes over its input instead of saving it,
 * so it reads a disposed tensor when that input was an intermediate of the loss.
 */
export function logSigmoid(x: tf.Tensor): tf.Tensor {
  return tf.neg(tf.softplus(tf.neg(x)));
}

/**
 * Keeps metric scalars alive past the scope the loss runs in (the gradient tape's tidy), so the
 * caller can read them after the step; the caller disposes them.
 */
export function keepMetrics(metrics: Record<string, tf.Scalar>): Record<string, tf.Scalar> {
  for (const m of Object.values(metrics)) tf.keep(m);
  return metrics;
}

/**
 * The metrics every pair method logs, as sums over the micro-batch's pairs (the step makes them
 * means): the rewards of chosen and rejected, how often chosen wins, the margin, and the
 * log-probs the rewards come from.
 */
export function pairMetrics(chosenRewards: tf.Tensor1D, rejectedRewards: tf.Tensor1D, chosenLogps: tf.Tensor1D, rejectedLogps: tf.Tensor1D): Record<string, tf.Scalar> {
  return {
    'rewards/chosen': tf.sum(chosenRewards),
    'rewards/rejected': tf.sum(rejectedRewards),
    'rewards/accuracies': tf.sum(tf.cast(tf.greater(chosenRewards, rejectedRewards), 'float32')),
    'rewards/margins': tf.sum(tf.sub(chosenRewards, rejectedRewards)),
    'logps/chosen': tf.sum(chosenLogps),
    'logps/rejected': tf.sum(rejectedLogps),
  };
}
