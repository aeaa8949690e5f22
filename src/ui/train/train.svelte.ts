/**
 * The Train view's state: the run this tab trains (or watches read-only when another tab holds
 * it), its events, curves, step and time left, and the controls, each showing what it is doing
 * until the Worker confirms it.
 */
import type { AppState } from '../app.svelte.ts';
import { describeError, errorText } from '../lib/errors.ts';
import { proxy } from '../connect.ts';
import { isCached } from '../model/hub.ts';
import { estimateEta } from '../../engine/train/eta.ts';
import type { MethodName, Recipe } from '../../engine/recipe.ts';
import { RUN_OPEN_ELSEWHERE, type CompletionRecord, type RunEvent, type RunRecord, type RunStatus } from '../../worker/protocol.ts';
import { addLog, emptySeries, seriesFromMetrics, type Series } from './series.ts';

export interface LogLine {
  time: number;
  kind: 'info' | 'warning' | 'error' | 'metric';
  text: string;
}

const MAX_LOG_LINES = 500;
/** How often a run watched read-only (trained in another tab) is read again from IndexedDB. */
const WATCH_MS = 2000;

/** A default run name: the model, the method and the adapter, and when it started. */
export function defaultRunName(model: string, recipe: Pick<Recipe, 'method' | 'peft'>, when: Date = new Date()): string {
  const pad = (n: number) => String(n).padStart(2, '0');
  const stamp = `${when.getFullYear()}-${pad(when.getMonth() + 1)}-${pad(when.getDate())} ${pad(when.getHours())}:${pad(when.getMinutes())}`;
  const kind = recipe.peft.type === 'lora' ? 'LoRA' : recipe.peft.type;
  return `${model.split('/').pop()} ${recipe.method.toUpperCase()} ${kind} ${stamp}`;
}

export class TrainStore {
  runId = $state<string | null>(null);
  status = $state<RunStatus | 'idle' | 'starting'>('idle');
  /** A control the Worker is carrying out; its buttons are off until it is done. */
  pending = $state<'pausing' | 'stopping' | 'resuming' | null>(null);
  step = $state(0);
  totalSteps = $state(0);
  memoryBytes = $state<number | null>(null);
  series = $state.raw<Series>(emptySeries());
  log = $state.raw<LogLine[]>([]);
  error = $state<string | null>(null);
  /** The method of the run shown, whose declared metrics get charts. */
  method = $state<MethodName>('sft');
  /** The name the next run gets; empty means the default (model, method, date). */
  runName = $state('');
  /** GRPO: the latest step's rollout, grouped by prompt (num_generations records each). */
  completions = $state.raw<CompletionRecord[]>([]);
  /** GRPO: the reward functions' names, in the recipe's order (the keys of each record's rewards). */
  rewardNames = $state.raw<string[]>([]);
  numGenerations = $state(1);
  /** GRPO: each distinct problem a reward function had during the run (a throw, a timeout, a bad value). */
  rewardWarnings = $state.raw<string[]>([]);
  // State, not a plain field: `eta` reads it first, and a derived value that short-circuits on a
  // plain null never subscribes to anything, so it would never recompute.
  private pace = $state<{ step: number; time: number } | null>(null);
  lastLogTime = $state(0);
  eta = $derived(this.pace && this.lastLogTime ? estimateEta(this.pace.step, this.pace.time, this.step, this.lastLogTime, this.totalSteps) : null);
  /** A run another tab trains, shown read-only from what it stores: this tab cannot pause or stop it. */
  watchingId = $state<string | null>(null);
  /** The run this tab was refused because another tab holds it; the Train view offers to watch it. */
  elsewhere = $state<string | null>(null);
  private watchTimer: ReturnType<typeof setInterval> | null = null;
  /** Running, with no step logged since it (re)started: the first step compiles the GPU kernels. */
  firstStepPending = $derived(this.status === 'starting' || (this.status === 'running' && this.pace === null && this.watchingId === null));
  active = $derived(this.watchingId === null && (this.status === 'running' || this.status === 'starting' || this.status === 'paused'));

  constructor(private readonly app: AppState) {}

  /** Why the Train button is off, or null when a run can start. */
  get cannotTrain(): string | null {
    const { app } = this;
    const report = app.data.report;
    if (!app.backend) return 'The training worker is still starting.';
    if (!app.model.model) return 'Load a model first (Model).';
    if (!app.data.dataset) return 'Choose a dataset first (Data).';
    if (report && report.num_rows - report.errors.length <= 0) return 'The dataset has no usable row.';
    if (report && report.errors.length > 0) return `Fix the ${report.errors.length === 1 ? 'bad row' : `${report.errors.length} bad rows`} in the dataset first (Data).`;
    if (!app.recipe.validation.recipe) return 'Fix the recipe first (Recipe).';
    if (this.active) return 'A run is in progress.';
    return null;
  }

  private pushLog(kind: LogLine['kind'], text: string): void {
    const next = [...this.log, { time: Date.now(), kind, text }];
    this.log = next.length > MAX_LOG_LINES ? next.slice(next.length - MAX_LOG_LINES) : next;
  }

  private reset(): void {
    this.series = emptySeries();
    this.log = [];
    this.error = null;
    this.step = 0;
    this.totalSteps = 0;
    this.memoryBytes = null;
    this.pace = null;
    this.lastLogTime = 0;
    this.pending = null;
    this.completions = [];
    this.rewardWarnings = [];
  }

  /** What the rollout table needs to know of a GRPO recipe; the functions' names come with the first rollout. */
  private showRewards(recipe: Recipe | RunRecord['recipe']): void {
    if (recipe.method !== 'grpo') return;
    this.numGenerations = (recipe as { num_generations?: number }).num_generations ?? 8;
  }

  private showCompletions(records: CompletionRecord[]): void {
    this.completions = records;
    // A JavaScript reward is named by its default export's function name, which only the Worker reads.
    if (records.length > 0) this.rewardNames = Object.keys(records[0].rewards);
  }

  async train(): Promise<void> {
    const { app } = this;
    const recipe = app.recipe.validation.recipe;
    const dataset = app.data.dataset;
    const model = app.model.model;
    if (this.cannotTrain || !recipe || !dataset || !model) return;
    const adapter = app.runs.adapter;
    const fromAdapter = adapter.continueFrom && adapter.label !== null;
    const name = this.runName.trim() || defaultRunName(model.name, recipe);
    this.runName = '';
    await this.launch(fromAdapter ? { ...recipe, init_adapter: adapter.label! } : recipe, { file: dataset.file, data: dataset.data }, undefined, name);
  }

  /** Continues a run from its last checkpoint (after a reload, or a run that stopped with an error). */
  async resumeRun(run: RunRecord): Promise<void> {
    const { app } = this;
    if (this.active) return;
    this.stopWatching();
    app.view = 'train';
    this.reset();
    this.status = 'starting';
    this.pushLog('info', `Resuming ${run.name} from step ${run.checkpoint_step}…`);
    const giveUp = (message: string) => {
      this.status = 'idle';
      this.error = message;
    };
    // The Worker keeps each run's recipe and training file; only the model must be loaded again,
    // which a model from the Hub is, from Cache Storage (perhaps already, as the page restores it).
    await app.model.settled();
    if (app.model.model?.name !== run.model) {
      const blocked = await resumeNeedsModel(run, app.model.hubUrl);
      if (blocked) return giveUp(blocked);
      this.pushLog('info', `Loading ${run.model} from the browser cache…`);
      if (!(await app.model.loadFromHub(run.model))) return giveUp(app.model.error ?? `${run.model} could not be loaded from the browser cache.`);
    }
    // The views show what the run trains with: its stored recipe and its training file.
    app.recipe.showRecipe(run.recipe);
    void app.data.showRunData(run.id);
    await this.restoreCurves(run);
    this.showRewards(run.recipe);
    if (run.recipe.method === 'grpo') {
      try {
        this.showCompletions(await app.api.runCompletions(run.id));
      } catch {
        // The table fills again at the next step.
      }
    }
    await this.launch(run.recipe as Recipe, { file: String(run.recipe.train_file), data: '' }, run.id, run.name);
  }

  /** The curves up to the checkpoint a run resumes from, read from its stored metrics. */
  private async restoreCurves(run: RunRecord): Promise<void> {
    try {
      this.series = seriesFromMetrics(await this.app.api.runMetrics(run.id), run.checkpoint_step ?? 0);
      this.step = run.checkpoint_step ?? 0;
      this.totalSteps = run.total_steps;
    } catch {
      // Without its history the curve starts at the checkpoint; training is unaffected.
    }
  }

  private async launch(recipe: Recipe, data: { file: string; data: Blob | string }, resumeRunId: string | undefined, name: string): Promise<void> {
    const { app } = this;
    this.stopWatching();
    this.elsewhere = null;
    if (!resumeRunId) this.reset();
    this.status = 'starting';
    this.method = recipe.method;
    this.showRewards(recipe);
    if (!resumeRunId && recipe.max_steps > 0) this.totalSteps = recipe.max_steps;
    app.view = 'train';
    app.runs.dismissedResume = true;
    this.runId = resumeRunId ?? null;
    // The Worker frees a dropped-in adapter when a run starts (a run may have continued from it).
    app.runs.clearAdapter();
    app.chat.clear();
    const kind = recipe.peft.type === 'lora' ? 'LoRA' : recipe.peft.type;
    this.pushLog('info', resumeRunId ? 'Resuming from the last checkpoint…' : `Starting ${name}: ${kind} ${recipe.method.toUpperCase()} on ${data.file}…`);
    void app.persistStorage();
    const onEvent = proxy((e: RunEvent) => this.onRunEvent(e));
    try {
      const scripts = recipe.method === 'grpo' && !resumeRunId ? app.recipe.rewardScripts() : {};
      const id = await app.api.startTraining(JSON.parse(JSON.stringify(recipe)), { file: data.file, data: data.data }, onEvent, resumeRunId, name, scripts);
      this.runId = id;
      if (this.status === 'starting') this.status = 'running';
    } catch (e) {
      const shown = describeError(e);
      this.error = shown.message;
      this.pushLog('error', shown.message);
      // Another tab trains this run: this one may only watch it.
      if (resumeRunId && shown.message === RUN_OPEN_ELSEWHERE) this.elsewhere = resumeRunId;
      // A run that never started leaves nothing to show as failed.
      if (this.status === 'starting') this.status = 'idle';
    }
    await app.runs.refresh();
  }

  onRunEvent(e: RunEvent): void {
    const { app } = this;
    if (e.total_steps !== undefined) this.totalSteps = e.total_steps;
    if (e.memory_bytes !== undefined) this.memoryBytes = e.memory_bytes;
    if (e.step !== undefined && e.type !== 'checkpoint') this.step = e.step;
    switch (e.type) {
      case 'log': {
        if (!e.log) break;
        const now = performance.now();
        this.series = addLog(this.series, e.log);
        this.step = e.log.step;
        if (!this.pace) this.pace = { step: e.log.step, time: now };
        this.lastLogTime = now;
        if (this.status === 'starting') this.status = 'running';
        const parts = [`step ${e.log.step}`];
        if (e.log.loss !== undefined) parts.push(`loss ${formatLoss(e.log.loss)}`);
        if (e.log.eval_loss !== undefined) parts.push(`eval loss ${formatLoss(e.log.eval_loss)}`);
        this.pushLog('metric', parts.join(' · '));
        break;
      }
      case 'status':
        if (!e.status) break;
        this.status = e.status;
        // Time spent paused is not training time; the ETA restarts its clock.
        if (e.status === 'running') this.pace = null;
        // A failed run's tensors are gone (they may hold NaNs); the others stay for chat and downloads.
        app.runs.setRunAdapter(e.status === 'paused' || e.status === 'stopped' || e.status === 'finished');
        this.pushLog(e.status === 'failed' ? 'error' : 'info', e.message ?? `Run ${e.status}${e.step !== undefined ? ` at step ${e.step}` : ''}.`);
        if (e.status !== 'running') void app.runs.refresh();
        break;
      case 'checkpoint':
        this.pushLog('info', e.message ?? `Checkpoint saved at step ${e.step}.`);
        void app.runs.refresh();
        break;
      case 'warning':
        if (e.message) this.pushLog('warning', e.message);
        if (e.message && e.source === 'reward' && !this.rewardWarnings.includes(e.message)) this.rewardWarnings = [...this.rewardWarnings, e.message];
        break;
      case 'completions':
        if (e.records) this.showCompletions(e.records);
        break;
      case 'error':
        if (e.message) {
          this.error = e.message;
          this.pushLog('error', e.message);
        }
        break;
    }
  }

  async pause(): Promise<void> {
    await this.control('pausing', () => this.app.api.pause());
  }

  async resume(): Promise<void> {
    await this.control('resuming', () => this.app.api.resume());
  }

  async stop(): Promise<void> {
    await this.control('stopping', () => this.app.api.stop());
  }

  private async control(what: NonNullable<TrainStore['pending']>, action: () => Promise<void>): Promise<void> {
    if (this.pending) return;
    this.pending = what;
    try {
      await action();
    } catch (e) {
      this.error = errorText(e);
    } finally {
      this.pending = null;
    }
  }

  // ---- watching a run another tab trains ----

  /** Shows a run another tab holds, read-only: its status, step and curves as stored, re-read every few seconds. */
  async watchRun(id: string): Promise<void> {
    const { app } = this;
    if (this.active) return;
    this.stopWatching();
    this.reset();
    app.view = 'train';
    this.elsewhere = null;
    app.runs.dismissedResume = true;
    this.runId = id;
    this.watchingId = id;
    this.pushLog('info', 'Watching the run read-only; the tab that trains it writes its checkpoints.');
    this.watchTimer = setInterval(() => void this.refreshWatched(), WATCH_MS);
    await this.refreshWatched();
  }

  stopWatching(): void {
    if (this.watchTimer !== null) clearInterval(this.watchTimer);
    this.watchTimer = null;
    if (this.watchingId === null) return;
    this.watchingId = null;
    this.status = 'idle';
  }

  private async refreshWatched(): Promise<void> {
    const id = this.watchingId;
    if (id === null) return;
    try {
      const [runs, metrics] = await Promise.all([this.app.api.listRuns(), this.app.api.runMetrics(id)]);
      if (this.watchingId !== id) return;
      this.app.runs.setRuns(runs);
      const run = runs.find((r) => r.id === id);
      if (!run) {
        this.stopWatching();
        this.error = 'The watched run was deleted in the other tab.';
        return;
      }
      this.series = seriesFromMetrics(metrics, Infinity);
      this.method = (run.recipe.method ?? 'sft') as MethodName;
      this.step = run.global_step;
      this.totalSteps = run.total_steps;
      this.status = run.status;
      if (!run.open_elsewhere) {
        // The other tab let go of it (it ended, or the tab closed): it is a stored run like any other now.
        const ended = run.status;
        this.stopWatching();
        // A paused run let go of can only be resumed from its checkpoint (the runs list), not with Resume here.
        this.status = ended === 'paused' || ended === 'running' ? 'idle' : ended;
        this.pushLog('info', `The other tab let go of the run: ${ended} at step ${run.global_step}.`);
      }
    } catch (e) {
      this.error = errorText(e);
    }
  }
}

/**
 * Why a run cannot be resumed without the person's help, before anything starts: its model came
 * from a folder (pick it again) or is no longer in the browser cache. Null when it can go on.
 */
export async function resumeNeedsModel(run: RunRecord, hubUrl: string): Promise<string | null> {
  let cached = false;
  try {
    cached = await isCached(run.model, hubUrl);
  } catch {
    cached = false;
  }
  if (cached) return null;
  return `To resume ${run.name}, load ${run.model} first (Model: ${looksLikeHubId(run.model) ? 'download it again' : 'pick its folder again'}), then press Resume again.`;
}

function looksLikeHubId(name: string): boolean {
  return /^[\w.-]+\/[\w.-]+$/.test(name);
}

function formatLoss(x: number): string {
  return Number.isFinite(x) ? x.toFixed(4) : String(x);
}
