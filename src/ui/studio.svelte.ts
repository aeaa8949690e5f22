/**
 * The page's state and the actions the views call. It talks to the Worker only through the
 * `StudioApi` contract; everything heavy (tokenising, training, generating) happens there.
 */
import type { Remote } from 'comlink';
import type { BackendInfo } from '../engine/backend/index.ts';
import { parseRecipe, type Recipe } from '../engine/recipe.ts';
import type { LoadProgress } from '../engine/io/model_folder.ts';
import { RUN_OPEN_ELSEWHERE, type DataReport, type FolderFiles, type MemoryEstimate, type ModelSummary, type RunEvent, type RunRecord, type RunStatus, type StudioApi } from '../worker/protocol.ts';
import { connectWorker, proxy, transfer } from './connect.ts';
import { describeError, errorText } from './lib/errors.ts';
import { fileSafe, saveBytes, unzipFolder, type PickedFile, readFolder } from './lib/files.ts';
import { SpeedMeter, formatBytes } from './lib/format.ts';
import { estimateEta } from '../engine/train/eta.ts';
import { chooseHubUrl, downloadModel, isCached, normalizeHubUrl, type DownloadProgress } from './model/hub.ts';
import { CATALOG } from './model/catalog.ts';
import { defaultForm, formWithAdapterConfig, validateForm, type RawForm } from './recipe/form.ts';
import { addLog, emptySeries, seriesFromMetrics, type Series } from './train/series.ts';

export type View = 'model' | 'data' | 'recipe' | 'train' | 'chat' | 'runs';

export interface LogLine {
  time: number;
  kind: 'info' | 'warning' | 'error' | 'metric';
  text: string;
}

export interface ChatMessage {
  role: string;
  content: string;
}

const STORAGE = { hub: 'studio.hubUrl', token: 'studio.hfToken', lastModel: 'studio.lastModel' };
const MAX_LOG_LINES = 500;
/** A run that ended any other way than finishing can go on from its last checkpoint (a closed tab's run is listed as stopped). */
const RESUMABLE: readonly RunStatus[] = ['running', 'paused', 'stopped', 'failed'];
/** How often a run watched read-only (trained in another tab) is read again from IndexedDB. */
const WATCH_MS = 2000;

function readSetting(key: string): string | null {
  try {
    return localStorage.getItem(key);
  } catch {
    return null;
  }
}

function writeSetting(key: string, value: string | null): void {
  try {
    if (value === null) localStorage.removeItem(key);
    else localStorage.setItem(key, value);
  } catch {
    // Storage can be off (private windows); settings then last for this visit.
  }
}

/** The byte buffers to transfer; Blobs cross by reference and need none. */
function buffersOf(files: FolderFiles): ArrayBuffer[] {
  return [...new Set(Object.values(files).flatMap((b) => (b instanceof Uint8Array ? [b.buffer as ArrayBuffer] : [])))];
}

export class Studio {
  api: Remote<StudioApi> | null = null;

  view = $state<View>('model');

  // ---- backend ----
  backend = $state.raw<BackendInfo | null>(null);
  backendError = $state<string | null>(null);
  workerError = $state<string | null>(null);

  // ---- settings ----
  hubUrl = $state(chooseHubUrl(typeof location === 'undefined' ? '' : location.search, readSetting(STORAGE.hub)));
  token = $state(readSetting(STORAGE.token) ?? '');
  rememberToken = $state(readSetting(STORAGE.token) !== null);

  // ---- model ----
  model = $state.raw<ModelSummary | null>(null);
  modelBusy = $state<string | null>(null);
  modelError = $state<string | null>(null);
  download = $state.raw<(DownloadProgress & { speed: number; repo: string }) | null>(null);
  cached = $state.raw<ReadonlySet<string>>(new Set());
  private abortDownload: AbortController | null = null;

  // ---- data ----
  dataset = $state.raw<{ file: string; data: Blob; size: number } | null>(null);
  report = $state.raw<DataReport | null>(null);
  dataBusy = $state(false);
  dataError = $state<string | null>(null);
  private inspectSeq = 0;

  // ---- recipe ----
  form = $state<RawForm>(defaultForm());
  pageValues = $derived({ model: this.model?.name ?? 'model', train_file: this.dataset?.file ?? 'train.jsonl' });
  validation = $derived(validateForm(this.form, this.pageValues));
  estimate = $state.raw<MemoryEstimate | null>(null);
  estimateError = $state<string | null>(null);
  /** True from a recipe change until its estimate is back, so an old figure is not read as the new one. */
  estimatePending = $state(false);
  private estimateSeq = 0;

  // ---- training ----
  runId = $state<string | null>(null);
  status = $state<RunStatus | 'idle' | 'starting'>('idle');
  step = $state(0);
  totalSteps = $state(0);
  memoryBytes = $state<number | null>(null);
  series = $state.raw<Series>(emptySeries());
  log = $state.raw<LogLine[]>([]);
  trainError = $state<string | null>(null);
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
  active = $derived(this.watchingId === null && (this.status === 'running' || this.status === 'starting' || this.status === 'paused'));

  // ---- adapter and chat ----
  hasAdapter = $state(false);
  adapterLabel = $state<string | null>(null);
  adapterError = $state<string | null>(null);
  /** Start the next run from the dropped-in adapter (recipe.init_adapter) instead of fresh LoRA weights. */
  continueFromAdapter = $state(false);
  chat = $state<{ base: ChatMessage[]; adapter: ChatMessage[] }>({ base: [], adapter: [] });
  chatBusy = $state(false);
  chatError = $state<string | null>(null);

  // ---- runs ----
  runs = $state.raw<RunRecord[]>([]);
  storage = $state.raw<{ usage: number; quota: number; persisted: boolean } | null>(null);
  runsError = $state<string | null>(null);
  dismissedResume = $state(false);
  resumable = $derived(this.runs.filter((r) => RESUMABLE.includes(r.status) && r.checkpoint_step !== null && !r.open_elsewhere && !(this.active && r.id === this.runId)));

  /** Starts the Worker, picks the backend and reads the runs list. */
  async start(): Promise<void> {
    try {
      const conn = connectWorker();
      this.api = conn.api;
      conn.worker.addEventListener('error', (ev) => {
        this.workerError = `The training worker stopped: ${ev.message || 'it could not be loaded'}. Reload the page to start it again.`;
      });
      this.backend = await this.api.init('auto');
    } catch (e) {
      this.backendError = errorText(e);
      return;
    }
    await Promise.all([this.refreshRuns(), this.refreshCached()]);
  }

  // ---- settings ----

  setHubUrl(input: string): void {
    this.hubUrl = normalizeHubUrl(input);
    writeSetting(STORAGE.hub, this.hubUrl);
    void this.refreshCached();
  }

  setToken(token: string, remember: boolean): void {
    this.token = token.trim();
    this.rememberToken = remember;
    writeSetting(STORAGE.token, remember && this.token ? this.token : null);
  }

  // ---- model ----

  async refreshCached(): Promise<void> {
    const ids = new Set([...CATALOG.map((m) => m.id), ...(readSetting(STORAGE.lastModel) ? [readSetting(STORAGE.lastModel)!] : [])]);
    const hits = new Set<string>();
    for (const id of ids) {
      try {
        if (await isCached(id, this.hubUrl)) hits.add(id);
      } catch {
        // Cache Storage may be unavailable; then nothing counts as cached.
      }
    }
    this.cached = hits;
  }

  async loadFromHub(repo: string): Promise<boolean> {
    if (!this.api || this.modelBusy) return false;
    this.modelError = null;
    this.modelBusy = `Fetching ${repo}…`;
    const meter = new SpeedMeter();
    const abort = new AbortController();
    this.abortDownload = abort;
    try {
      const files = await downloadModel({
        repo,
        hubUrl: this.hubUrl,
        accessToken: this.token || undefined,
        signal: abort.signal,
        onProgress: (p) => {
          this.download = { ...p, repo, speed: meter.add(performance.now(), p.loaded) };
        },
      });
      writeSetting(STORAGE.lastModel, repo);
      this.download = null;
      await this.loadFiles(repo, files);
      await Promise.all([this.refreshCached(), this.refreshRuns()]);
      return true;
    } catch (e) {
      this.modelError = errorText(e);
      return false;
    } finally {
      this.download = null;
      this.modelBusy = null;
      this.abortDownload = null;
    }
  }

  cancelDownload(): void {
    this.abortDownload?.abort();
  }

  async loadLocal(picked: PickedFile[]): Promise<void> {
    if (!this.api || this.modelBusy) return;
    this.modelError = null;
    if (picked.length === 0) {
      this.modelError = 'No files were picked; choose the model folder (with config.json, tokenizer.json and model.safetensors).';
      return;
    }
    this.modelBusy = 'Reading the model folder…';
    try {
      const { name, files } = await readFolder(picked, 'local model');
      await this.loadFiles(name, files);
    } catch (e) {
      this.modelError = errorText(e);
    } finally {
      this.modelBusy = null;
    }
  }

  private async loadFiles(name: string, files: FolderFiles): Promise<void> {
    const where = this.backend?.name ?? 'the backend';
    this.modelBusy = `Loading ${name} onto ${where}…`;
    // Progress messages may arrive after the load's own answer; those are dropped.
    let loading = true;
    const onProgress = proxy((p: LoadProgress) => {
      if (loading) this.modelBusy = `Loading ${name} onto ${where}: ${formatBytes(p.bytes)} of ${formatBytes(p.totalBytes)} (tensor ${p.index} of ${p.count})…`;
    });
    // The bytes move to the Worker rather than being copied, and big files go as Blobs the
    // Worker reads a tensor at a time: a model can be gigabytes.
    try {
      this.model = await this.api!.loadModel(name, transfer(files, buffersOf(files)), onProgress);
    } finally {
      loading = false;
    }
    this.hasAdapter = false;
    this.adapterLabel = null;
    this.chat = { base: [], adapter: [] };
    void this.inspect();
    void this.runEstimate();
  }

  // ---- data ----

  async pickDataset(file: File): Promise<void> {
    this.dataError = null;
    if (!/\.(jsonl|json)$/i.test(file.name)) {
      this.dataError = `${file.name} is not a .jsonl or .json file; a dataset has one JSON object per line (.jsonl) or a JSON array of objects (.json).`;
      return;
    }
    try {
      // The File goes to the Worker as a handle (structured clone shares a Blob's bytes), so the
      // page never holds the text and the Worker reads it once.
      await this.setDataset(file.name, file);
    } catch (e) {
      this.dataError = errorText(e);
    }
  }

  async loadSample(file: string): Promise<void> {
    this.dataError = null;
    try {
      const res = await fetch(`${import.meta.env.BASE_URL}samples/${file}`);
      if (!res.ok) throw new Error(`the sample ${file} could not be fetched (${res.status})`);
      await this.setDataset(file, await res.blob());
    } catch (e) {
      this.dataError = errorText(e);
    }
  }

  async setDataset(file: string, data: Blob): Promise<void> {
    this.dataset = { file, data, size: data.size };
    this.report = null;
    await this.inspect();
  }

  /** The recipe the Worker gets: the form's when it is valid, the defaults otherwise. */
  recipeForWorker(): Recipe {
    return this.validation.recipe ?? parseRecipe(this.pageValues, 'recipe');
  }

  async inspect(): Promise<void> {
    if (!this.api || !this.dataset || !this.model) return;
    const seq = ++this.inspectSeq;
    const { file, data } = this.dataset;
    this.dataBusy = true;
    this.dataError = null;
    try {
      const report = await this.api.inspectData(file, data, this.recipeForWorker());
      if (seq === this.inspectSeq) this.report = report;
    } catch (e) {
      if (seq === this.inspectSeq) {
        this.report = null;
        this.dataError = errorText(e);
      }
    } finally {
      if (seq === this.inspectSeq) this.dataBusy = false;
    }
  }

  // ---- recipe ----

  async runEstimate(): Promise<void> {
    const recipe = this.validation.recipe;
    const seq = ++this.estimateSeq;
    if (!this.api || !this.model || !recipe) {
      this.estimate = null;
      this.estimatePending = false;
      return;
    }
    try {
      const estimate = await this.api.estimateMemory(recipe);
      if (seq === this.estimateSeq) {
        this.estimate = estimate;
        this.estimateError = null;
      }
    } catch (e) {
      if (seq === this.estimateSeq) {
        this.estimate = null;
        this.estimateError = errorText(e);
      }
    } finally {
      if (seq === this.estimateSeq) this.estimatePending = false;
    }
  }

  setForm(form: RawForm): void {
    this.form = form;
  }

  // ---- training ----

  /** Why the Train button is off, or null when a run can start. */
  get cannotTrain(): string | null {
    if (!this.api || !this.backend) return 'The training worker is still starting.';
    if (!this.model) return 'Load a model first (Model).';
    if (!this.dataset) return 'Choose a dataset first (Data).';
    if (this.report && this.report.num_rows - this.report.errors.length <= 0) return 'The dataset has no usable row.';
    if (this.report && this.report.errors.length > 0) return `Fix the ${this.report.errors.length === 1 ? 'bad row' : `${this.report.errors.length} bad rows`} in the dataset first (Data).`;
    if (!this.validation.recipe) return 'Fix the recipe first (Recipe).';
    if (this.active) return 'A run is in progress.';
    return null;
  }

  private pushLog(kind: LogLine['kind'], text: string): void {
    const next = [...this.log, { time: Date.now(), kind, text }];
    this.log = next.length > MAX_LOG_LINES ? next.slice(next.length - MAX_LOG_LINES) : next;
  }

  private resetRun(): void {
    this.series = emptySeries();
    this.log = [];
    this.trainError = null;
    this.step = 0;
    this.totalSteps = 0;
    this.memoryBytes = null;
    this.pace = null;
    this.lastLogTime = 0;
  }

  async train(): Promise<void> {
    const recipe = this.validation.recipe;
    if (this.cannotTrain || !recipe || !this.dataset) return;
    const fromAdapter = this.continueFromAdapter && this.adapterLabel !== null;
    await this.launch(fromAdapter ? { ...recipe, init_adapter: this.adapterLabel! } : recipe, this.dataset, undefined);
  }

  /** Continues a run from its last checkpoint (after a reload, or a run that stopped with an error). */
  async resumeRun(run: RunRecord): Promise<void> {
    if (!this.api || this.active) return;
    this.stopWatching();
    this.view = 'train';
    this.resetRun();
    this.status = 'starting';
    this.pushLog('info', `Resuming ${run.name} from step ${run.checkpoint_step}…`);
    const giveUp = (message: string) => {
      this.status = 'idle';
      this.trainError = message;
    };
    // The Worker keeps each run's recipe and training file; only the model must be loaded again,
    // which a model from the Hub is, from Cache Storage.
    if (this.model?.name !== run.model) {
      if (!(await isCached(run.model, this.hubUrl))) {
        return giveUp(`To resume ${run.name}, load ${run.model} first (Model), then press Resume again.`);
      }
      this.pushLog('info', `Loading ${run.model} from the browser cache…`);
      if (!(await this.loadFromHub(run.model))) return giveUp(this.modelError ?? `${run.model} could not be loaded from the browser cache.`);
    }
    await this.restoreCurves(run);
    await this.launch(run.recipe as Recipe, { file: String(run.recipe.train_file), data: '' }, run.id);
  }

  /** The curves up to the checkpoint a run resumes from, read from its stored metrics. */
  private async restoreCurves(run: RunRecord): Promise<void> {
    try {
      this.series = seriesFromMetrics(await this.api!.runMetrics(run.id), run.checkpoint_step ?? 0);
      this.step = run.checkpoint_step ?? 0;
      this.totalSteps = run.total_steps;
    } catch {
      // Without its history the curve starts at the checkpoint; training is unaffected.
    }
  }

  private async launch(recipe: Recipe, data: { file: string; data: Blob | string }, resumeRunId: string | undefined): Promise<void> {
    this.stopWatching();
    this.elsewhere = null;
    if (!resumeRunId) this.resetRun();
    this.status = 'starting';
    this.view = 'train';
    this.dismissedResume = true;
    this.runId = resumeRunId ?? null;
    // The Worker frees a dropped-in adapter when a run starts (a run may have continued from it).
    this.hasAdapter = false;
    this.adapterLabel = null;
    this.continueFromAdapter = false;
    this.chat = { base: [], adapter: [] };
    this.pushLog('info', resumeRunId ? 'Resuming from the last checkpoint…' : `Starting ${recipe.peft.type.toUpperCase()} ${recipe.method.toUpperCase()} on ${data.file}…`);
    void this.persistStorage();
    const onEvent = proxy((e: RunEvent) => this.onRunEvent(e));
    try {
      const id = await this.api!.startTraining(JSON.parse(JSON.stringify(recipe)), { file: data.file, data: data.data }, onEvent, resumeRunId);
      this.runId = id;
      if (this.status === 'starting') this.status = 'running';
    } catch (e) {
      const shown = describeError(e);
      this.trainError = shown.message;
      this.pushLog('error', shown.message);
      // Another tab trains this run: this one may only watch it.
      if (resumeRunId && shown.message === RUN_OPEN_ELSEWHERE) this.elsewhere = resumeRunId;
      // A run that never started leaves nothing to show as failed.
      if (this.status === 'starting') this.status = 'idle';
    }
    await this.refreshRuns();
  }

  /**
   * Asks the browser not to evict checkpoints under storage pressure. Only a page can ask (not the
   * Worker), and browsers grant it by their own rules, so a refusal changes nothing here.
   */
  private async persistStorage(): Promise<void> {
    try {
      if (navigator.storage?.persist && !(await navigator.storage.persisted())) await navigator.storage.persist();
    } catch {
      // Not offered in this context.
    }
  }

  onRunEvent(e: RunEvent): void {
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
        this.hasAdapter = e.status === 'paused' || e.status === 'stopped' || e.status === 'finished';
        this.pushLog(e.status === 'failed' ? 'error' : 'info', e.message ?? `Run ${e.status}${e.step !== undefined ? ` at step ${e.step}` : ''}.`);
        if (e.status !== 'running') void this.refreshRuns();
        break;
      case 'checkpoint':
        this.pushLog('info', e.message ?? `Checkpoint saved at step ${e.step}.`);
        void this.refreshRuns();
        break;
      case 'warning':
        if (e.message) this.pushLog('warning', e.message);
        break;
      case 'error':
        if (e.message) {
          this.trainError = e.message;
          this.pushLog('error', e.message);
        }
        break;
    }
  }

  async pause(): Promise<void> {
    await this.control(() => this.api!.pause());
  }

  async resume(): Promise<void> {
    await this.control(() => this.api!.resume());
  }

  async stop(): Promise<void> {
    await this.control(() => this.api!.stop());
  }

  private async control(action: () => Promise<void>): Promise<void> {
    if (!this.api) return;
    try {
      await action();
    } catch (e) {
      this.trainError = errorText(e);
    }
  }

  // ---- watching a run another tab trains ----

  /** Shows a run another tab holds, read-only: its status, step and curves as stored, re-read every few seconds. */
  async watchRun(id: string): Promise<void> {
    if (!this.api || this.active) return;
    this.stopWatching();
    this.resetRun();
    this.view = 'train';
    this.elsewhere = null;
    this.dismissedResume = true;
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
    if (!this.api || id === null) return;
    try {
      const [runs, metrics] = await Promise.all([this.api.listRuns(), this.api.runMetrics(id)]);
      if (this.watchingId !== id) return;
      this.runs = [...runs].sort((a, b) => b.created - a.created);
      const run = runs.find((r) => r.id === id);
      if (!run) {
        this.stopWatching();
        this.trainError = 'The watched run was deleted in the other tab.';
        return;
      }
      this.series = seriesFromMetrics(metrics, Infinity);
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
      this.trainError = errorText(e);
    }
  }

  // ---- chat ----

  async sendChat(text: string, opts: { max_new_tokens: number; temperature: number }): Promise<void> {
    if (!this.api || this.chatBusy || text.trim() === '') return;
    this.chatBusy = true;
    this.chatError = null;
    const system = this.validation.recipe?.system_prompt ?? null;
    const sides: ('base' | 'adapter')[] = this.hasAdapter ? ['base', 'adapter'] : ['base'];
    try {
      for (const side of sides) {
        const history: ChatMessage[] = [...this.chat[side], { role: 'user', content: text }];
        this.chat[side] = [...history, { role: 'assistant', content: '' }];
        const at = history.length;
        const messages = system ? [{ role: 'system', content: system }, ...history] : history;
        // The Worker sends the whole reply so far each time it grows.
        const onText = proxy((soFar: string) => {
          this.chat[side][at].content = soFar;
        });
        const reply = await this.api.chat(messages, { adapter: side === 'adapter', ...opts }, onText);
        this.chat[side][at].content = reply;
      }
    } catch (e) {
      this.chatError = errorText(e);
    } finally {
      this.chatBusy = false;
    }
  }

  clearChat(): void {
    this.chat = { base: [], adapter: [] };
    this.chatError = null;
  }

  /** A PEFT adapter zip downloaded earlier, for chat or to continue training. */
  async loadAdapterZip(file: File): Promise<void> {
    if (!this.api) return;
    this.adapterError = null;
    if (!this.model) {
      this.adapterError = 'Load the base model the adapter was trained on first (Model view).';
      return;
    }
    try {
      const files = unzipFolder(new Uint8Array(await file.arrayBuffer()));
      if (Object.keys(files).length === 0) throw new Error(`${file.name} is an empty zip`);
      const config = readJson(files['adapter_config.json']);
      await this.api.loadAdapter(transfer(files, buffersOf(files)));
      this.hasAdapter = true;
      this.adapterLabel = file.name;
      if (config) this.form = formWithAdapterConfig(this.form, config);
      this.chat = { base: [], adapter: [] };
    } catch (e) {
      const shown = describeError(e);
      this.adapterError = /invalid zip|unexpected EOF|zip/i.test(shown.message) && !shown.user
        ? `${file.name} is not a zip file that the studio wrote (an adapter zip holds adapter_config.json and adapter_model.safetensors).`
        : shown.message;
    }
  }

  // ---- runs and downloads ----

  async refreshRuns(): Promise<void> {
    if (!this.api) return;
    try {
      const [runs, storage] = await Promise.all([this.api.listRuns(), this.api.storageEstimate()]);
      this.runs = [...runs].sort((a, b) => b.created - a.created);
      this.storage = storage;
      this.runsError = null;
    } catch (e) {
      this.runsError = errorText(e);
    }
  }

  async deleteRun(id: string): Promise<void> {
    if (!this.api) return;
    try {
      await this.api.deleteRun(id);
      if (this.runId === id && !this.active) this.runId = null;
    } catch (e) {
      this.runsError = errorText(e);
    }
    await this.refreshRuns();
  }

  async exportRun(kind: 'adapter' | 'merged' | 'recipe', run: RunRecord | null): Promise<string | null> {
    if (!this.api) return 'The training worker is not running.';
    try {
      const bytes = await this.api.exportZip(kind, run?.id);
      const suffix = kind === 'recipe' ? 'recipe-metrics' : kind;
      saveBytes(bytes, `${fileSafe(run?.name ?? this.model?.name ?? 'studio')}-${suffix}.zip`);
      return null;
    } catch (e) {
      return errorText(e);
    }
  }
}

function readJson(bytes: Uint8Array | undefined): Record<string, unknown> | null {
  if (!bytes) return null;
  try {
    const v = JSON.parse(new TextDecoder().decode(bytes));
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? v : null;
  } catch {
    return null;
  }
}

function formatLoss(x: number): string {
  return Number.isFinite(x) ? x.toFixed(4) : String(x);
}

export const studio = new Studio();
