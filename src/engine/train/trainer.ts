/**
 * The training loop: epochs of seeded shuffled micro-batches, gradient accumulation into
 * optimizer steps, the learning-rate schedule, evaluation, logging and checkpoints. A checkpoint
 * holds everything that decides what happens next (trainable weights, optimizer moments, the
 * step, the epoch's order and position in it, the RNG state), so a resumed run continues
 * bit-for-bit as if it had never stopped.
 */
import * as tf from '@tensorflow/tfjs';
import { UserError } from '../errors.ts';
import { Rng, type RngState } from '../rng.ts';
import type { Recipe } from '../recipe.ts';
import type { CausalLM } from '../model/llama.ts';
import type { LoraAdapter } from '../model/lora.ts';
import type { AnyMethod, LossContext } from './method.ts';
import { createOptimizer, type Optimizer, type OptimizerState } from './optim.ts';
import { learningRateAt } from './schedule.ts';
import { evaluateMethod, trainStep } from './step.ts';
import { pathIn, readText, type FileSource } from '../io/files.ts';
import { describeValue, findUnusableTensor, parseLogHistory, parseResumeBlock } from './guard.ts';
import { parseSafetensors, tensorToFloat32, writeSafetensors, type TensorToWrite } from '../io/safetensors.ts';

/**
 * One line of metrics.jsonl and of trainer_state.json's log_history, with transformers' and
 * TRL's names: a training log (`kind` "train": loss, grad_norm, learning_rate, num_tokens,
 * tokens_per_second and the method's metrics) or an evaluation (`kind` "eval": eval_loss,
 * eval_num_tokens and the method's metrics prefixed `eval_`). Logs written before `kind` existed
 * lack it; `logKind` tells them apart by their keys.
 */
export interface LogEntry {
  step: number;
  epoch: number;
  kind?: 'train' | 'eval';
  loss?: number;
  grad_norm?: number;
  learning_rate?: number;
  num_tokens?: number;
  tokens_per_second?: number;
  eval_loss?: number;
  eval_num_tokens?: number;
  /** A method's own metrics (rewards/chosen, eval_rewards/margins, …). */
  [metric: string]: number | string | undefined;
}

/** Whether a log line is a training or an evaluation log. */
export function logKind(entry: LogEntry): 'train' | 'eval' {
  return entry.kind ?? (entry.eval_loss !== undefined ? 'eval' : 'train');
}

/** Where the loop is; saved in trainer_state.json under `resume`. */
export interface LoopState {
  global_step: number;
  /** Epoch being read, 0-based. */
  epoch_index: number;
  /** Next micro-batch of the epoch's order. */
  batch_index: number;
  /** The epoch's example order. */
  order: number[];
  rng: RngState;
  num_input_tokens_seen: number;
  num_train_examples: number;
}

export interface TrainerCallbacks {
  onLog?(entry: LogEntry): void | Promise<void>;
  /** Files of checkpoint-<step>; the store writes them all or none. */
  onCheckpoint?(step: number, files: Record<string, Uint8Array>): void | Promise<void>;
  /** Asked between optimizer steps; true ends the run there (pause or stop). */
  shouldStop?(): boolean;
}

export interface TrainerOptions {
  recipe: Recipe;
  model: CausalLM;
  /** The LoRA adapter being trained, or null for freeze/full fine-tuning. */
  adapter: LoraAdapter | null;
  /** Every trainable tensor by name: PEFT keys for LoRA, transformers names otherwise. */
  params: Map<string, tf.Variable>;
  /** What is trained and how its loss is taken; the examples are the method's. */
  method: AnyMethod;
  train: unknown[];
  eval: unknown[] | null;
  /** Writes the model part of a checkpoint (adapter files, or model.safetensors + config). */
  saveModel: () => Promise<Record<string, Uint8Array>>;
  callbacks?: TrainerCallbacks;
}

export class Trainer {
  readonly recipe: Recipe;
  readonly totalSteps: number;
  readonly stepsPerEpoch: number;
  readonly logHistory: LogEntry[] = [];
  state: LoopState;
  private readonly o: TrainerOptions;
  private readonly optimizer: Optimizer;
  private rng: Rng;
  /** The step whose weights were last checked as usable; -1 before any check. */
  private checkedStep = -1;
  /** The loss of the last step taken, for messages. */
  private lastLoss = NaN;
  /** Examples one micro-batch reads: per_device_train_batch_size rows, or an online method's prompts for them. */
  private readonly examplesPerMicro: number;
  /** Optimizer steps per rollout (GRPO's num_iterations); 1 for every offline method. */
  private readonly stepsPerRollout: number;
  /** The micro-batches of the last rollout while later steps still train on them. */
  private rolloutBatches: unknown[] | null = null;

  constructor(o: TrainerOptions) {
    this.o = o;
    this.recipe = o.recipe;
    const r = o.recipe;
    if (o.train.length === 0) throw new UserError(`${r.train_file}: no example is left to train on.`, { file: r.train_file });
    this.examplesPerMicro = o.method.examplesPerMicroBatch?.(r.per_device_train_batch_size) ?? r.per_device_train_batch_size;
    this.stepsPerRollout = o.method.rollout ? (o.method.stepsPerRollout ?? 1) : 1;
    const microPerEpoch = Math.ceil(o.train.length / this.examplesPerMicro);
    this.stepsPerEpoch = Math.ceil(microPerEpoch / r.gradient_accumulation_steps) * this.stepsPerRollout;
    this.totalSteps = r.max_steps > 0 ? r.max_steps : Math.max(1, Math.ceil(r.num_train_epochs * this.stepsPerEpoch));
    this.rng = new Rng(r.seed);
    this.optimizer = createOptimizer(r, o.params);
    this.state = {
      global_step: 0,
      epoch_index: 0,
      batch_index: 0,
      order: this.epochOrder(),
      rng: this.rng.state,
      num_input_tokens_seen: 0,
      num_train_examples: o.train.length,
    };
  }

  private epochOrder(): number[] {
    const n = this.o.train.length;
    return this.recipe.shuffle ? this.rng.permutation(n) : Array.from({ length: n }, (_, i) => i);
  }

  /** The examples of the next optimizer step's micro-batches; moves to the next epoch when one runs out. */
  private nextMicroBatches(): unknown[][] {
    const r = this.recipe;
    const s = this.state;
    const bs = this.examplesPerMicro;
    if (s.batch_index * bs >= s.order.length) {
      s.epoch_index += 1;
      s.batch_index = 0;
      s.order = this.epochOrder();
    }
    const out: unknown[][] = [];
    for (let k = 0; k < r.gradient_accumulation_steps && s.batch_index * bs < s.order.length; k++) {
      const ids = s.order.slice(s.batch_index * bs, (s.batch_index + 1) * bs);
      out.push(ids.map((i) => this.o.train[i]));
      s.batch_index += 1;
    }
    return out;
  }

  /** Fractional epoch, as transformers logs it. */
  private epoch(): number {
    const microPerEpoch = Math.ceil(this.state.order.length / this.examplesPerMicro);
    return this.state.epoch_index + this.state.batch_index / microPerEpoch;
  }

  /**
   * The step's micro-batches: collated from the next examples, or generated from them by an
   * online method's rollout, which serves `stepsPerRollout` steps in a row.
   */
  private async stepBatches(ctx: LossContext): Promise<unknown[]> {
    const method = this.o.method;
    if (!method.rollout) return this.nextMicroBatches().map((g) => method.collate(g));
    if (this.rolloutBatches && this.state.global_step % this.stepsPerRollout !== 0) return this.rolloutBatches;
    // An online method generates the step's batches from its examples (with the Trainer's RNG).
    const batches = await method.rollout(this.nextMicroBatches(), { ...ctx, rng: this.rng, step: this.state.global_step + 1 });
    this.rolloutBatches = this.stepsPerRollout > 1 ? batches : null;
    return batches;
  }

  async train(): Promise<LoopState> {
    const r = this.recipe;
    const { model, adapter, params, method } = this.o;
    const ctx: LossContext = { model, adapter, dropoutSeed: () => this.rng.nextU32(), gradientCheckpointing: r.gradient_checkpointing, trainsModelWeights: adapter === null };
    let windowLoss = 0;
    let windowMetrics: Record<string, number> = {};
    let windowSteps = 0;
    let windowTokens = 0;
    let windowStart = now();
    while (this.state.global_step < this.totalSteps) {
      if (this.o.callbacks?.shouldStop?.()) break;
      const micro = await this.stepBatches(ctx);
      const lr = learningRateAt(r, this.state.global_step, this.totalSteps);
      const result = await trainStep(params, micro, method, ctx, this.optimizer, lr, r.max_grad_norm);
      if (!Number.isFinite(result.loss) || !Number.isFinite(result.grad_norm)) {
        throw new UserError(
          `Training stopped at step ${this.state.global_step + 1}: the loss became ${result.loss} (grad norm ${result.grad_norm}); lower learning_rate or check the data.`,
          { field: 'learning_rate' },
        );
      }
      this.lastLoss = result.loss;
      this.state.global_step += 1;
      this.state.num_input_tokens_seen += result.num_tokens;
      this.state.rng = this.rng.state;
      windowLoss += result.loss;
      for (const [k, v] of Object.entries(result.metrics)) windowMetrics[k] = (windowMetrics[k] ?? 0) + v;
      windowSteps += 1;
      windowTokens += result.num_tokens;
      const step = this.state.global_step;
      const last = step === this.totalSteps;
      if (step % r.logging_steps === 0 || last || step === 1) {
        const seconds = (now() - windowStart) / 1000;
        await this.log({
          step,
          epoch: round(this.epoch()),
          kind: 'train',
          loss: windowLoss / windowSteps,
          ...Object.fromEntries(method.metrics.filter((m) => m in windowMetrics).map((m) => [m, windowMetrics[m] / windowSteps])),
          grad_norm: result.grad_norm,
          learning_rate: lr,
          num_tokens: this.state.num_input_tokens_seen,
          tokens_per_second: seconds > 0 ? windowTokens / seconds : 0,
        });
        windowLoss = windowSteps = windowTokens = 0;
        windowMetrics = {};
        windowStart = now();
      }
      // eval_steps null means transformers' eval_strategy "epoch": after the last step of each epoch.
      const epochEnd = this.state.batch_index * this.examplesPerMicro >= this.state.order.length && step % this.stepsPerRollout === 0;
      if (this.o.eval && (last || (r.eval_steps ? step % r.eval_steps === 0 : epochEnd))) {
        const ev = await this.evaluate();
        const metrics = Object.fromEntries(Object.entries(ev.metrics).map(([k, v]) => [`eval_${k}`, v]));
        await this.log({ step, epoch: round(this.epoch()), kind: 'eval', eval_loss: ev.loss, ...metrics, eval_num_tokens: ev.num_tokens });
      }
      if (this.o.callbacks?.onCheckpoint && (step % r.save_steps === 0 || last)) {
        await this.o.callbacks.onCheckpoint(step, await this.checkpointFiles());
      }
    }
    // The caller saves the weights next (the final adapter or model, a checkpoint on stop).
    await this.checkWeights();
    return this.state;
  }

  /**
   * Refuses to go on with trainable weights no step can use (NaN, ±Infinity, or past √float32max,
   * where squaring overflows): the loss check sees them only one step later, after a checkpoint
   * of them would have been written. One reduction per tensor, read back once; skipped when this
   * step's weights were already checked.
   */
  private async checkWeights(): Promise<void> {
    const step = this.state.global_step;
    if (this.checkedStep === step) return;
    const bad = await findUnusableTensor(this.o.params);
    if (bad) {
      throw new UserError(
        `Training stopped at step ${step}: the loss became ${this.lastLoss} but the update left ${bad.name} holding ${describeValue(bad.value)}, so nothing was saved for this step; lower learning_rate or check the data.`,
        { field: 'learning_rate' },
      );
    }
    this.checkedStep = step;
  }

  /**
   * The method's loss and metrics over the eval set, without dropout or gradients. num_tokens
   * counts the items the loss is averaged over (SFT: trainable tokens), as eval_num_tokens has.
   */
  async evaluate(examples = this.o.eval ?? []): Promise<{ loss: number; metrics: Record<string, number>; num_tokens: number }> {
    const { model, adapter, method } = this.o;
    const ev = await evaluateMethod(method, { model, adapter }, examples, this.recipe.per_device_eval_batch_size);
    return { loss: ev.loss, metrics: ev.metrics, num_tokens: ev.num_items };
  }

  private async log(entry: LogEntry): Promise<void> {
    this.logHistory.push(entry);
    await this.o.callbacks?.onLog?.(entry);
  }

  /** trainer_state.json as transformers writes it, plus what resuming needs under `resume`. */
  trainerStateJson(): Record<string, unknown> {
    const r = this.recipe;
    return {
      global_step: this.state.global_step,
      max_steps: this.totalSteps,
      epoch: round(this.epoch()),
      num_train_epochs: r.max_steps > 0 ? Math.ceil(this.totalSteps / this.stepsPerEpoch) : r.num_train_epochs,
      logging_steps: r.logging_steps,
      eval_steps: r.eval_steps,
      save_steps: r.save_steps,
      train_batch_size: r.per_device_train_batch_size,
      num_input_tokens_seen: this.state.num_input_tokens_seen,
      log_history: this.logHistory,
      resume: this.state,
    };
  }

  /** checkpoint-<step>: the model part, optimizer.safetensors and trainer_state.json. */
  async checkpointFiles(): Promise<Record<string, Uint8Array>> {
    await this.checkWeights();
    const enc = new TextEncoder();
    const opt = await this.optimizer.state();
    const tensors: TensorToWrite[] = [...opt.tensors].map(([name, t]) => ({ name, dtype: 'F32', shape: t.shape, data: t.data }));
    // Between two steps of one rollout, the rollout itself: a resumed run trains on the same batches.
    const rollout: Record<string, Uint8Array> = {};
    if (this.rolloutBatches && this.state.global_step % this.stepsPerRollout !== 0 && this.o.method.encodeRollout) {
      rollout['rollout.json'] = enc.encode(JSON.stringify(this.o.method.encodeRollout(this.rolloutBatches)));
    }
    return {
      ...(await this.o.saveModel()),
      'optimizer.safetensors': writeSafetensors(tensors, { step: String(opt.step) }),
      ...rollout,
      'trainer_state.json': enc.encode(JSON.stringify(this.trainerStateJson(), null, 2)),
    };
  }

  /**
   * Continues from a checkpoint folder written by `checkpointFiles`. The caller has already put
   * the checkpoint's weights into `params` (they are the model part, loaded like any adapter).
   */
  async restore(checkpoint: FileSource): Promise<void> {
    const where = checkpoint.location;
    const stateFile = pathIn(checkpoint, 'trainer_state.json');
    const optFile = pathIn(checkpoint, 'optimizer.safetensors');
    for (const [name, file] of [['trainer_state.json', stateFile], ['optimizer.safetensors', optFile]]) {
      if (!checkpoint.has(name)) {
        throw new UserError(`${file} is missing; is ${where} a complete checkpoint folder (checkpoint-<step>, or an output folder holding one)?`, { file });
      }
    }
    let state: Record<string, unknown>;
    try {
      state = JSON.parse(await readText(checkpoint, 'trainer_state.json'));
    } catch {
      throw new UserError(`${stateFile} is not valid JSON; is ${where} a checkpoint folder?`, { file: stateFile });
    }
    if (typeof state !== 'object' || state === null || state.resume === undefined) {
      throw new UserError(`${stateFile} has no "resume" block; only checkpoints written by this studio can be resumed.`, { file: stateFile });
    }
    const r = this.recipe;
    const resume = parseResumeBlock(state.resume, stateFile, { totalSteps: this.totalSteps, numExamples: this.o.train.length, batchSize: this.examplesPerMicro }, r.train_file);
    const logHistory = parseLogHistory<LogEntry>(state.log_history, stateFile);
    // The model part was loaded by the caller: refuse weights that no step could use.
    const bad = await findUnusableTensor(this.o.params);
    if (bad) {
      const modelFile = checkpoint.has('adapter_model.safetensors') ? 'adapter_model.safetensors' : 'model.safetensors';
      throw new UserError(`${pathIn(checkpoint, modelFile)}: ${bad.name} holds ${describeValue(bad.value)}; this checkpoint cannot be resumed.`, { file: pathIn(checkpoint, modelFile), field: bad.name });
    }
    const st = parseSafetensors(await checkpoint.read('optimizer.safetensors'), optFile);
    const step = st.metadata.step === undefined ? 0 : Number(st.metadata.step);
    const opt: OptimizerState = { step, tensors: new Map() };
    for (const [name, info] of st.tensors) opt.tensors.set(name, { shape: info.shape, data: tensorToFloat32(st, name) });
    this.optimizer.loadState(opt, optFile);
    this.rolloutBatches = null;
    if (this.stepsPerRollout > 1 && resume.global_step % this.stepsPerRollout !== 0) {
      const file = pathIn(checkpoint, 'rollout.json');
      if (!checkpoint.has('rollout.json') || !this.o.method.decodeRollout) {
        throw new UserError(`${file} is missing: step ${resume.global_step} is inside a rollout of ${this.stepsPerRollout} steps (num_iterations), whose completions the checkpoint must hold.`, { file });
      }
      try {
        this.rolloutBatches = this.o.method.decodeRollout(JSON.parse(await readText(checkpoint, 'rollout.json')));
      } catch {
        throw new UserError(`${file} is not valid JSON; the checkpoint is damaged.`, { file });
      }
    }
    this.state = { ...resume, order: [...resume.order], rng: [...resume.rng] };
    this.rng = new Rng(resume.rng);
    this.checkedStep = resume.global_step;
    this.logHistory.splice(0, this.logHistory.length, ...logHistory);
  }

  dispose(): void {
    this.optimizer.dispose();
  }
}

function round(x: number): number {
  return Math.round(x * 1e4) / 1e4;
}

function now(): number {
  return typeof performance !== 'undefined' ? performance.now() : Date.now();
}
