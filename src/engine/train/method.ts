/**
 * The seam every training method plugs into. The Trainer owns order, accumulation, schedule,
 * clipping, the optimizer, checkpoints and logging, and never names a method; a method says how
 * its examples become micro-batches, what a step's loss is averaged over, and what the loss and
 * its metrics are. One file per method under `methods/`.
 *
 * The reference model of DPO and KTO is the same model with the adapter switched off
 * (`adapter: null`), computed without a gradient in `prepareBatch`: never a second copy of the
 * weights.
 */
import type * as tf from '@tensorflow/tfjs';
import type { CausalLM } from '../model/llama.ts';
import type { LoraAdapter } from '../model/lora.ts';
import type { Rng } from '../rng.ts';

/** What a method's loss runs on: the model, the adapter being trained, and the step's options. */
export interface LossContext {
  model: CausalLM;
  /** The adapter being trained; null for freeze/full fine-tuning (the model's own weights train). */
  adapter: LoraAdapter | null;
  /** Draws one dropout seed; undefined without dropout (evaluation). */
  dropoutSeed?: () => number;
  gradientCheckpointing?: boolean;
  /**
   * The model's own weights are being trained (freeze/full): the reference of DPO and KTO (the
   * model with the adapter off) does not exist then. Without it, a null adapter means the base
   * model is evaluated, and is its own reference.
   */
  trainsModelWeights?: boolean;
}

/** What an online method's rollout generates with. */
export interface RolloutContext extends LossContext {
  /**
   * The Trainer's generator: sampling draws from it, and its state is in every checkpoint, so a
   * resumed run samples the same completions as the run that stopped.
   */
  rng: Rng;
  /** The optimizer step the rollout is for, 1-based. */
  step: number;
}

export interface MicroBatchLoss {
  /** The micro-batch's loss as a SUM over its items: the step divides the sum of these once by its item count. */
  loss: tf.Scalar;
  /**
   * Each declared metric as a SUM over the micro-batch's items (scalars, read after the step;
   * no gradient flows from them): the step divides them by the same item count, so a logged
   * metric is the mean over the step's items, as TRL's batch means are.
   */
  metrics: Record<string, tf.Scalar>;
}

export interface Method<E, B> {
  /** The recipe's `method`. */
  readonly name: string;
  /**
   * The metrics a step logs besides `loss`, `grad_norm`, `learning_rate`, `num_tokens` and
   * `tokens_per_second`, with TRL's names (evaluation logs them again prefixed `eval_`). The
   * studio draws its charts from this list.
   */
  readonly metrics: readonly string[];
  /** A micro-batch of examples, on the host (ids padded, masks, what the loss needs). */
  collate(examples: E[]): B;
  /** What the step's loss is averaged over in this micro-batch: trainable tokens (SFT), rows (DPO, KTO, ORPO, SimPO). */
  countItems(batch: B): number;
  /** Real input tokens of the micro-batch, for num_tokens and tokens/s. */
  countTokens(batch: B): number;
  /**
   * Work outside the gradient before the loss, e.g. the reference model's log-probs (adapter
   * off); may read tensors back. Optional.
   */
  prepareBatch?(batch: B, ctx: LossContext): Promise<void>;
  /** The micro-batch's loss sum and metric sums; called inside the gradient tape. */
  loss(batch: B, ctx: LossContext): MicroBatchLoss;
  /**
   * Online methods (GRPO): how many examples (prompts) one micro-batch of
   * `per_device_train_batch_size` rows reads, e.g. that many divided by num_generations.
   * Offline methods read one example a row.
   */
  examplesPerMicroBatch?(perDeviceTrainBatchSize: number): number;
  /**
   * Online methods: the step's micro-batches, produced by generating from the step's examples
   * (one group of examples per micro-batch, all the step's groups at once, as TRL generates for
   * the whole step before its passes). Runs outside the gradient, once per optimizer step; when
   * absent, each group is collated.
   */
  rollout?(groups: E[][], ctx: RolloutContext): Promise<B[]>;
  /**
   * Online methods: optimizer steps taken on each rollout (GRPO's `num_iterations`, μ): the
   * Trainer rolls out every this many steps and trains on the same micro-batches in between,
   * reading that many times fewer examples a step. Default 1.
   */
  readonly stepsPerRollout?: number;
  /**
   * A rollout as JSON, for a checkpoint written between two of its steps, and back: a resumed
   * run trains on the same micro-batches. Needed with `stepsPerRollout` above 1.
   */
  encodeRollout?(batches: B[]): unknown;
  decodeRollout?(json: unknown): B[];
}

/** Any method, for code that only moves its examples and batches along. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyMethod = Method<any, any>;
