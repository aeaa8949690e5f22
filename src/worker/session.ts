/**
 * One training run inside the Worker: prepared by the engine, recorded in the store, trained in
 * the background with its events streamed out, checkpointed every save_steps and wherever it
 * stops, and ended with a status a person can act on. A run that fails keeps its last checkpoint.
 */
import * as tf from '@tensorflow/tfjs';
import { releaseFreeGpuBuffers } from '../engine/backend/gpu_pool.ts';
import { backendMemoryBytes } from '../engine/backend/memory.ts';
import type { DeviceLimits } from '../engine/backend/index.ts';
import { isAllocationError, isUserError, UserError } from '../engine/errors.ts';
import { estimateMemory, shrinkAdvice } from '../engine/estimate.ts';
import type { Recipe } from '../engine/recipe.ts';
import { prepareRun, type LoadedModel, type OnlineRunOptions, type PreparedRun, type RunSources } from '../engine/run.ts';
import type { CompletionRecord } from '../engine/train/methods/grpo.ts';
import type { RewardScriptHost } from '../engine/train/script_reward.ts';
import { onceEach } from '../engine/train/reward_funcs.ts';
import type { LogEntry } from '../engine/train/trainer.ts';
import { activeDevice, guardDevice, type DeviceGuard, type DeviceProblem } from './device_guard.ts';
import type { FolderBytes, RunEvent, RunRecord, RunStatus } from './protocol.ts';
import { appendMetrics, createRun, putCompletions, putRun, saveCheckpoint, truncateCompletions, truncateMetrics, type StudioDb } from './store.ts';

/** A JavaScript reward's text by the path reward_funcs names it with, from the scripts the page sent (or the run stored). */
export function scriptReader(scripts: Record<string, string>): (path: string) => Promise<string> {
  return async (path) => {
    if (!Object.hasOwn(scripts, path)) throw new UserError(`reward_funcs: "${path}" names a JavaScript reward whose code the studio does not have; write it in the recipe view's reward editor.`, { field: 'reward_funcs' });
    return scripts[path];
  };
}

export class TrainingSession {
  record!: RunRecord;
  prepared!: PreparedRun;
  /** False once the run's tensors are gone (it failed, or its model was handed back or disposed). */
  alive = true;
  private stopAs: 'paused' | 'stopped' | null = null;
  private guard: DeviceGuard = guardDevice(null);
  private done: Promise<void> = Promise.resolve();

  private constructor(
    private readonly db: StudioDb,
    /** Where the run's events go (the page's callback, detached). */
    readonly emit: (e: RunEvent) => void,
    private readonly limits: DeviceLimits | undefined,
  ) {}

  get status(): RunStatus {
    return this.record.status;
  }

  /**
   * Prepares a run, checking the recipe, model and data before anything is stored: a mistake
   * rejects here with its sentence and leaves no run behind. `existing` resumes that run from the
   * checkpoint in `sources.resumeFrom`; otherwise the new run gets `id` (chosen by the caller, who
   * may lock it before it exists).
   */
  static async open(
    db: StudioDb,
    recipe: Recipe,
    sources: RunSources,
    existing: RunRecord | null,
    emit: (e: RunEvent) => void,
    limits: DeviceLimits | undefined,
    id: string = existing?.id ?? crypto.randomUUID(),
    name: string = sources.train.file,
    rewards: { host: RewardScriptHost | null; scripts: Record<string, string> } = { host: null, scripts: {} },
  ): Promise<TrainingSession> {
    const s = new TrainingSession(db, emit, limits);
    const online: OnlineRunOptions = {
      host: rewards.host,
      readScript: scriptReader(rewards.scripts),
      onCompletions: (records) => s.onCompletions(records),
      onWarning: onceEach((message) => s.emit({ type: 'warning', message, source: 'reward' })),
    };
    s.prepared = await prepareRun(recipe, sources, {
      onLog: (entry) => s.onLog(entry),
      onCheckpoint: (step, files) => s.onCheckpoint(step, files),
      shouldStop: () => s.stopAs !== null || s.guard.beforeStep(s.prepared.trainer.state.global_step + 1),
    }, {}, { online });
    try {
      const { trainer } = s.prepared;
      const now = Date.now();
      if (existing) {
        const step = trainer.state.global_step;
        s.record = { ...existing, status: 'running', global_step: step, total_steps: trainer.totalSteps, updated: now };
        await truncateMetrics(db, existing.id, step);
        await truncateCompletions(db, existing.id, step);
        await putRun(db, s.record);
      } else {
        s.record = {
          id,
          name,
          model: recipe.model,
          method: recipe.method,
          created: now,
          updated: now,
          status: 'running',
          recipe,
          final_loss: null,
          global_step: 0,
          total_steps: trainer.totalSteps,
          size_bytes: 0,
          checkpoint_step: null,
        };
        await createRun(db, s.record, recipe.method === 'grpo' ? { ...sources.train, reward_scripts: rewards.scripts } : sources.train);
      }
    } catch (e) {
      s.dispose();
      throw e;
    }
    return s;
  }

  /** Trains in the background; events report progress and the end. */
  start(): void {
    const { train, trainer } = this.prepared;
    this.guard = guardDevice(activeDevice());
    this.emit({ type: 'status', status: 'running', step: trainer.state.global_step, total_steps: trainer.totalSteps });
    for (const message of train.warnings) this.emit({ type: 'warning', message });
    if (train.dropped.length > 0) {
      const first = train.dropped[0];
      this.emit({ type: 'warning', message: `${train.dropped.length} row${train.dropped.length > 1 ? 's were' : ' was'} left out for having no token to train on (first: line ${first.line}, ${first.reason}).` });
    }
    this.done = this.loop().catch((e: unknown) => {
      // Only the store can fail here, recording the end; the checkpoints written before stand.
      this.emit({ type: 'error', message: isUserError(e) ? e.message : `The run's end could not be recorded (${e instanceof Error ? e.message : String(e)}).` });
    });
  }

  /** Ends training after the current step with a checkpoint there; resolves once the run has ended. */
  async requestStop(as: 'paused' | 'stopped'): Promise<void> {
    this.stopAs ??= as;
    await this.done;
  }

  /** A paused run that will not be resumed in this session. */
  async markStopped(): Promise<void> {
    await this.setStatus('stopped');
  }

  private async loop(): Promise<void> {
    // The first step's synchronous part (shader compilation on WebGPU) can take seconds; startTraining answers the page first.
    await new Promise((resolve) => setTimeout(resolve, 0));
    const { trainer } = this.prepared;
    let error: unknown = null;
    try {
      await trainer.train();
    } catch (e) {
      error = e;
    }
    let problem = await this.guard.finish(error !== null);
    const step = trainer.state.global_step;
    if (error === null && problem === null && step < trainer.totalSteps && this.record.checkpoint_step !== step) {
      try {
        await this.onCheckpoint(step, await trainer.checkpointFiles());
      } catch (e) {
        error = e;
        problem = await this.guard.check(step);
      }
    }
    // The step's working buffers stay pooled on the GPU until freed; the weights stay for chat.
    releaseFreeGpuBuffers();
    if (error !== null || problem !== null) {
      await this.fail(this.failureMessage(error, problem, step));
      return;
    }
    await this.setStatus(step < trainer.totalSteps ? (this.stopAs ?? 'stopped') : 'finished');
  }

  private async onLog(entry: LogEntry): Promise<void> {
    this.emit({ type: 'log', log: entry, step: entry.step, total_steps: this.record.total_steps, memory_bytes: backendMemoryBytes() });
    this.record = {
      ...this.record,
      global_step: entry.step,
      final_loss: entry.loss ?? this.record.final_loss,
      final_eval_loss: entry.eval_loss ?? this.record.final_eval_loss ?? null,
      updated: Date.now(),
    };
    await appendMetrics(this.db, this.record.id, [entry]);
    await putRun(this.db, this.record);
  }

  /** A GRPO rollout: stored with the run (its completions.jsonl) and shown live. */
  private async onCompletions(records: CompletionRecord[]): Promise<void> {
    if (records.length === 0) return;
    const step = records[0].step;
    if (this.prepared.recipe.method === 'grpo' && this.prepared.recipe.log_completions) await putCompletions(this.db, this.record.id, step, records);
    this.emit({ type: 'completions', step, records });
  }

  private async onCheckpoint(step: number, files: FolderBytes): Promise<void> {
    // A step that hit an allocation failure computed garbage; it must not replace a good checkpoint.
    const problem = await this.guard.check(step);
    if (problem) throw new Error(problem.detail);
    this.record = await saveCheckpoint(this.db, this.record.id, step, files, { ...this.record, global_step: step });
    this.emit({ type: 'checkpoint', step, total_steps: this.record.total_steps });
  }

  private async setStatus(status: RunStatus): Promise<void> {
    this.record = { ...this.record, status, updated: Date.now() };
    try {
      await putRun(this.db, this.record);
    } finally {
      // The run has ended here even when the store refuses the record (another tab moved the run on).
      this.emit({ type: 'status', status, step: this.record.global_step, total_steps: this.record.total_steps });
    }
  }

  private async fail(message: string): Promise<void> {
    // After a failure the tensors are suspect (NaN weights, a lost device, half-made buffers).
    this.dispose();
    this.emit({ type: 'error', message, step: this.prepared.trainer.state.global_step });
    await this.setStatus('failed');
  }

  private failureMessage(error: unknown, problem: DeviceProblem | null, step: number): string {
    // An allocation failure is reported a step or two late; its scope knows the step it watched.
    const at = problem?.kind === 'oom' ? problem.step : step + 1;
    const saved = this.record.checkpoint_step;
    const kept = saved === null ? 'no checkpoint had been saved yet' : `the checkpoint from step ${saved} is kept`;
    if (problem?.kind === 'lost') {
      const next = saved === null ? 'start the run again' : 'resume the run to continue from there';
      return `The GPU device was lost during step ${at} (${problem.detail.replace(/\.$/, '')}); ${kept}, so ${next}.`;
    }
    if (problem?.kind === 'oom' || isAllocationError(error)) {
      const estimate = estimateMemory(this.prepared.loaded.model, this.prepared.recipe, this.limits);
      return `Training ran out of memory at step ${at} (${kept}); to make it fit, ${shrinkAdvice(estimate, this.prepared.recipe, this.prepared.loaded.model)}.`;
    }
    if (isUserError(error)) return error.message;
    const reason = error instanceof Error ? error.message : String(error);
    return `Training failed at step ${at} (${kept}): ${reason.replace(/\.$/, '')}.`;
  }

  /**
   * Gives the run's base model back for chat and export on their own, freeing the adapter and the
   * optimizer. A freeze or full run changed the weights themselves, so it has no base to give.
   */
  release(): LoadedModel | null {
    if (!this.alive) return null;
    const { adapter, trainer, loaded } = this.prepared;
    this.alive = false;
    if (adapter === null) {
      this.prepared.dispose();
      return null;
    }
    adapter.dispose();
    trainer.dispose();
    return loaded;
  }

  dispose(): void {
    if (!this.alive) return;
    this.alive = false;
    try {
      this.prepared.dispose();
    } catch {
      // Tensors of a lost WebGPU device can fail to free; the device took their memory with it.
    }
  }
}

// Moved to the engine so the CLI shares it; re-exported for existing importers.
