/**
 * Everything the page asks of the training Worker (protocol.ts's StudioApi). The Worker entry
 * exposes one StudioWorker through comlink; Node tests construct it directly with fake-indexeddb and
 * the CPU backend. It holds at most one base model, one run (training, paused or ended) and one
 * dropped-in adapter, and frees tensors before loading more: browsers have little GPU memory.
 */
import * as tf from '@tensorflow/tfjs';
import { releaseFreeGpuBuffers } from '../engine/backend/gpu_pool.ts';
import { zipSync, type Zippable } from 'fflate';
import { initBackend, type BackendInfo } from '../engine/backend/index.ts';
import { decodeUtf8Text, UserError } from '../engine/errors.ts';
import { memoryFiles, type FileSource } from '../engine/io/files.ts';
import type { LoadProgress } from '../engine/io/model_folder.ts';
import type { LoraAdapter } from '../engine/model/lora.ts';
import { parseRecipe, type Recipe, type RecipeInput } from '../engine/recipe.ts';
import { loadModel, type LoadedModel } from '../engine/run.ts';
import { adapterFiles, loadAdapter } from '../engine/io/peft.ts';
import { modelFiles, savedDType } from '../engine/export.ts';
import { ggufLoraFile, ggufModelFile } from '../engine/export_gguf.ts';
import type { TextTokenizer } from '../engine/data/tokenizer.ts';
import { chatReply } from './chat.ts';
import { dataReport, previewRows } from '../engine/data/report.ts';
import { activeDevice, lostSoon } from './device_guard.ts';
import { checkFiniteAdapter } from '../engine/model/check.ts';
import { countParameters, estimateMemory, type MemoryEstimate } from '../engine/estimate.ts';
import { RUN_OPEN_ELSEWHERE, type ChatProgress, type CompletionRecord, type RewardTrial, type DataReport, type FolderBytes, type PreviewPage, type FolderFiles, type GgufOuttype, type ModelSummary, type RunEvent, type RunRecord, type StudioApi } from './protocol.ts';
import type { LogEntry } from '../engine/train/trainer.ts';
import { runLocks, type LockManagerLike, type RunLock, type RunLocks } from './run_lock.ts';
import { scriptReader, TrainingSession } from './session.ts';
import { portRewardHost } from './reward_port_host.ts';
import type { RewardScriptHost } from '../engine/train/script_reward.ts';
import { loadRewardFunctions } from '../engine/train/reward_funcs.ts';
import { createMethod, prepareMethodData } from '../engine/train/methods/index.ts';
import { Rng } from '../engine/rng.ts';
import * as store from './store.ts';
import * as datasets from './datasets.ts';
import type { ColumnMapping } from '../engine/data/columns.ts';
import type { TrainingMethod } from '../engine/data/formats.ts';

export interface StudioOptions {
  /** Where runs are kept; Node tests pass fake-indexeddb's factory. Defaults to the global indexedDB. */
  idbFactory?: IDBFactory;
  dbName?: string;
  /** Folder of the tfjs-backend-wasm binaries, for initBackend (the Worker entry maps them itself). */
  wasmPaths?: string;
  /** Web Locks that keep a run to one tab; defaults to navigator.locks, and to none where that is missing. */
  locks?: LockManagerLike;
  /** Where GRPO's JavaScript rewards run; the page attaches its sandbox instead (attachRewardSandbox). Node tests pass nodeRewardHost(). */
  rewardHost?: RewardScriptHost;
}

type BackendChoice = 'auto' | 'webgpu' | 'wasm' | 'cpu';
type ChatOptions = Parameters<StudioApi['chat']>[1];

interface BaseModel {
  name: string;
  /** The folder's bytes: a run loads its own copy from them, and a lost GPU is recovered from them. */
  files: FolderFiles;
  tokenizer: TextTokenizer;
  /** The base weights when they are in memory outside a run; loaded again on demand. */
  loaded: LoadedModel | null;
}

/** Files a checkpoint holds besides the model part. */
const TRAINER_FILES = new Set(['optimizer.safetensors', 'trainer_state.json']);
const ADAPTER_FILES = ['adapter_model.safetensors', 'adapter_config.json'];

export class StudioWorker implements StudioApi {
  private backend: BackendInfo | null = null;
  private preferred: BackendChoice = 'auto';
  private device: GPUDevice | null = null;
  private deviceLost = false;
  private dbOpen: Promise<store.StudioDb> | null = null;
  private model: BaseModel | null = null;
  private session: TrainingSession | null = null;
  private readonly texts = new WeakMap<Blob, string>();
  private dropped: { files: FolderFiles; adapter: LoraAdapter } | null = null;
  /** The last paused run and where its events go, for resume(). */
  private paused: { id: string; emit: (e: RunEvent) => void } | null = null;
  /** What is being changed right now (a sentence fragment), while models and runs are swapped. */
  private busy: string | null = null;
  /** Chats, estimates and downloads under way, which read the tensors a swap would free. */
  private readers = 0;
  private readonly locks: RunLocks;
  /** The lock of the run this studio trains or holds paused; no other tab may train it meanwhile. */
  private held: RunLock | null = null;
  /** Replies being written, counted so stopChat ends exactly these. */
  private chatGeneration = 0;
  /** Where GRPO's JavaScript reward functions run (the page's sandboxed iframe). */
  private rewardHost: RewardScriptHost | null = null;

  constructor(private readonly options: StudioOptions = {}) {
    this.locks = runLocks(options.locks);
    this.rewardHost = options.rewardHost ?? null;
  }

  async init(preferred: BackendChoice = 'auto'): Promise<BackendInfo> {
    this.preferred = preferred;
    const info = await initBackend(preferred, { wasmPaths: this.options.wasmPaths });
    const device = activeDevice();
    this.backend = info;
    this.device = device;
    this.deviceLost = false;
    device?.lost.then(() => {
      if (this.device === device) this.deviceLost = true;
    });
    return info;
  }

  /** The backend, initialised on first use and again after the GPU device was lost. */
  private async ready(): Promise<BackendInfo> {
    if (this.deviceLost) {
      // Every tensor went with the device; the base model is loaded again from its bytes.
      this.dropTensors();
      tf.removeBackend('webgpu');
      this.backend = null;
    }
    return this.backend ?? this.init(this.preferred);
  }

  private db(): Promise<store.StudioDb> {
    this.dbOpen ??= store.openStudioDb(this.options.dbName, this.options.idbFactory);
    return this.dbOpen;
  }

  async loadModel(name: string, files: FolderFiles, onProgress?: (p: LoadProgress) => void): Promise<ModelSummary> {
    return this.exclusive('loading a model', async () => {
      await this.ready();
      // The old model goes first: two models rarely fit in a browser's GPU memory at once.
      this.dropTensors();
      this.model = null;
      const loaded = await loadModel(memoryFiles(name, files), { onProgress });
      const { config } = loaded.model;
      const summary: ModelSummary = {
        name,
        architecture: config.architecture,
        num_parameters: countParameters(loaded.model),
        hidden_size: config.hidden_size,
        num_hidden_layers: config.num_hidden_layers,
        vocab_size: config.vocab_size,
        dtype: loaded.folder.weightsDType,
        has_chat_template: loaded.tokenizer.hasChatTemplate,
        quantization: loaded.folder.prequantized,
      };
      this.model = { name, files, tokenizer: loaded.tokenizer, loaded };
      return summary;
    });
  }

  async inspectData(file: string, data: Blob | string, recipe: RecipeInput): Promise<DataReport> {
    const model = this.requireModel();
    const parsed = parseRecipe({ ...recipe, model: model.name, train_file: file }, 'recipe');
    return dataReport(file, await this.textOf(data, file), model.tokenizer, parsed);
  }

  async previewRows(file: string, data: Blob | string, recipe: RecipeInput, start: number, count: number): Promise<PreviewPage> {
    const model = this.requireModel();
    const parsed = parseRecipe({ ...recipe, model: model.name, train_file: file }, 'recipe');
    return previewRows(file, await this.textOf(data, file), model.tokenizer, parsed, start, count);
  }

  async readDataset(name: string, files: datasets.DatasetFile[], method: TrainingMethod, mapping: ColumnMapping | null, onProgress?: (p: datasets.DatasetProgress) => void): Promise<datasets.DatasetRead> {
    return datasets.readDataset(name, files, { method, mapping, onProgress: onProgress && detached(onProgress) });
  }

  /**
   * A dataset's text, read once per File: the data view re-inspects it whenever a setting that
   * changes tokenisation does, and training starts from the same File.
   */
  private async textOf(data: Blob | string, file: string): Promise<string> {
    if (typeof data === 'string') return data;
    let text = this.texts.get(data);
    if (text === undefined) {
      // Invalid UTF-8 is refused naming its line, as the CLI does, rather than silently replaced.
      text = decodeUtf8Text(new Uint8Array(await data.arrayBuffer()), file);
      this.texts.set(data, text);
    }
    return text;
  }

  async estimateMemory(recipe: RecipeInput): Promise<MemoryEstimate> {
    return this.reading('estimate', async () => {
      const model = this.requireModel();
      const info = await this.ready();
      // The data file may not be chosen yet; the estimate does not depend on it.
      const parsed = parseRecipe({ ...recipe, train_file: recipe.train_file || 'train.jsonl', model: model.name }, 'recipe');
      const weights = this.session?.alive ? this.session.prepared.loaded.model : (await this.baseModel()).model;
      return estimateMemory(weights, parsed, info.limits);
    });
  }

  async attachRewardSandbox(port: MessagePort): Promise<void> {
    const previous = this.rewardHost;
    this.rewardHost = portRewardHost(port);
    if (previous && previous !== this.options.rewardHost) await previous.dispose();
  }

  async tryRewards(recipe: RecipeInput, trainFile: { file: string; data: Blob | string }, rewardScripts: Record<string, string>): Promise<RewardTrial> {
    return this.reading('trying the reward functions', async () => {
      const model = this.requireModel();
      if (this.session?.status === 'running') throw new UserError('A run is training; try the reward functions once it is paused or has ended.');
      await this.ready();
      const parsed = parseRecipe({ ...recipe, model: model.name, train_file: trainFile.file }, 'recipe');
      if (parsed.method !== 'grpo') throw new UserError('recipe: reward functions are GRPO\'s; set "method" to "grpo" to try them.', { field: 'method' });
      const data = prepareMethodData(await this.textOf(trainFile.data, trainFile.file), trainFile.file, model.tokenizer, parsed);
      const warnings: string[] = [];
      const rewards = await loadRewardFunctions(parsed.reward_funcs, { host: this.rewardHostFor(parsed.reward_funcs), readScript: scriptReader(rewardScripts) });
      let records: CompletionRecord[] = [];
      // The run's own path: one rollout of the first prompts from the base model, no reference pass, no training.
      const { model: weights } = await this.baseModel();
      const method = await createMethod({ ...parsed, beta: 0, num_iterations: 1 }, weights, model.tokenizer, [], {
        rewards,
        onCompletions: (r) => void (records = r),
        onWarning: (w) => void (warnings.includes(w) || warnings.push(w)),
      });
      await method.rollout!([(data.examples as unknown[]).slice(0, 2)], { model: weights, adapter: null, rng: new Rng(parsed.seed), step: 0 });
      return { records, reward_names: rewards.map((r) => r.name), num_generations: parsed.num_generations, warnings };
    });
  }

  async runCompletions(id: string): Promise<CompletionRecord[]> {
    return store.getCompletions(await this.db(), id, true);
  }

  /** The sandbox, where a recipe names a JavaScript reward; refused in a sentence until the page has attached it. */
  private rewardHostFor(specs: readonly unknown[]): RewardScriptHost | null {
    if (!specs.some((f) => typeof f === 'string')) return null;
    if (!this.rewardHost) throw new UserError('reward_funcs: the sandbox that runs JavaScript rewards is not ready; reload the page.', { field: 'reward_funcs' });
    return this.rewardHost;
  }

  async startTraining(recipe: RecipeInput, trainFile: { file: string; data: Blob | string }, onEvent: (e: RunEvent) => void, resumeRunId?: string, name?: string, rewardScripts: Record<string, string> = {}): Promise<string> {
    const emit = detached(onEvent);
    const runName = name?.trim() || undefined;
    return this.exclusive('preparing a run', async () => {
      if (resumeRunId !== undefined) return this.begin(await this.resumePoint(resumeRunId), emit);
      const model = this.requireModel();
      const parsed = parseRecipe({ ...recipe, model: model.name, train_file: trainFile.file }, 'recipe');
      if (parsed.eval_file !== undefined) {
        throw new UserError('recipe: eval_file is a path, which the browser cannot open; hold out part of the training file with eval_split instead.', { field: 'eval_file' });
      }
      if (parsed.resume_from_checkpoint !== undefined) {
        throw new UserError('recipe: resume_from_checkpoint is a path, which the browser cannot open; resume a run from the runs list instead.', { field: 'resume_from_checkpoint' });
      }
      return this.begin({ recipe: parsed, train: { file: trainFile.file, text: await this.textOf(trainFile.data, trainFile.file) }, existing: null, resumeFrom: null, name: runName, rewardScripts }, emit);
    });
  }

  /** A stored run's recipe, data and latest checkpoint, checked against the loaded model. */
  private async resumePoint(id: string): Promise<RunStart> {
    // What another tab is changing cannot be judged from the store here; begin() takes the lock itself.
    if (this.held?.runId !== id && (await this.locks.held()).has(id)) throw new UserError(RUN_OPEN_ELSEWHERE);
    const db = await this.db();
    const model = this.requireModel();
    const record = await store.getRun(db, id);
    if (!record) throw new UserError(`There is no saved run ${id}; it may have been deleted.`);
    if (record.status === 'finished') {
      throw new UserError(`Run "${record.name}" has finished all ${record.total_steps} steps; to train further, start a new run from its adapter (download it and drop it in).`);
    }
    if (record.model !== model.name) {
      throw new UserError(`Run "${record.name}" trains ${record.model}, but the loaded model is ${model.name}; load ${record.model} to resume it.`);
    }
    const checkpoint = await store.latestCheckpoint(db, id);
    const train = await store.getRunData(db, id);
    if (!checkpoint || !train) throw new UserError(`Run "${record.name}" has no checkpoint to resume from; start it again.`);
    return {
      recipe: parseRecipe(record.recipe, `run "${record.name}"`),
      train: { file: train.file, text: train.text },
      rewardScripts: train.reward_scripts ?? {},
      existing: record,
      resumeFrom: memoryFiles(`${record.name}/checkpoint-${checkpoint.step}`, checkpoint.files),
      name: record.name,
    };
  }

  private async begin(start: RunStart, emit: (e: RunEvent) => void): Promise<string> {
    const model = this.requireModel();
    const info = await this.ready();
    const initAdapter = start.resumeFrom === null && start.recipe.init_adapter !== undefined ? this.droppedAdapterFolder() : null;
    // A new run is locked under its id before it is stored, so no other tab can ever resume it meanwhile.
    const id = start.existing?.id ?? crypto.randomUUID();
    const lock = await this.claim(id);
    const ended = (e: RunEvent) => {
      if (e.type === 'status' && (e.status === 'stopped' || e.status === 'finished' || e.status === 'failed')) this.letGo(id);
      emit(e);
    };
    let session: TrainingSession;
    try {
      // prepareRun loads its own copy of the weights; nothing else may hold one meanwhile.
      this.dropTensors();
      session = await TrainingSession.open(
        await this.db(),
        start.recipe,
        { model: memoryFiles(model.name, model.files), train: start.train, initAdapter, resumeFrom: start.resumeFrom },
        start.existing,
        ended,
        info.limits,
        id,
        start.name,
        { host: start.recipe.method === 'grpo' ? this.rewardHostFor(start.recipe.reward_funcs) : null, scripts: start.rewardScripts },
      );
    } catch (e) {
      lock.release();
      throw e;
    }
    this.held = lock;
    this.session = session;
    this.paused = null;
    session.start();
    return session.record.id;
  }

  /** The run's lock: the one this studio holds already, else a new one unless another tab has it. */
  private async claim(id: string): Promise<RunLock> {
    if (this.held?.runId === id) {
      const lock = this.held;
      this.held = null;
      return lock;
    }
    const lock = await this.locks.acquire(id);
    if (!lock) throw new UserError(RUN_OPEN_ELSEWHERE);
    return lock;
  }

  /** Lets other tabs train the held run (all of them, or only run `id`'s). */
  private letGo(id?: string): void {
    if (!this.held || (id !== undefined && this.held.runId !== id)) return;
    this.held.release();
    this.held = null;
  }

  /** recipe.init_adapter names the adapter folder dropped in with loadAdapter; its bytes start the run. */
  private droppedAdapterFolder(): FileSource {
    if (!this.dropped) {
      throw new UserError('recipe: init_adapter asks to continue training an adapter, but none was dropped in; drop the adapter folder first or remove init_adapter.', { field: 'init_adapter' });
    }
    return memoryFiles('adapter', this.dropped.files);
  }

  async pause(): Promise<void> {
    const session = this.runningSession();
    await session.requestStop('paused');
    if (session.status === 'paused') this.paused = { id: session.record.id, emit: session.emit };
  }

  async resume(): Promise<void> {
    const paused = this.paused;
    if (!paused) throw new UserError('There is no paused run to resume.');
    await this.exclusive('resuming a run', async () => {
      await this.begin(await this.resumePoint(paused.id), paused.emit);
    });
  }

  async stop(): Promise<void> {
    const session = this.session;
    if (session?.status === 'paused' && this.paused?.id === session.record.id) {
      this.paused = null;
      await session.markStopped();
      return;
    }
    await this.runningSession().requestStop('stopped');
  }

  async chat(messages: { role: string; content: string }[], opts: ChatOptions, onProgress: (p: ChatProgress) => void): Promise<ChatProgress> {
    if (this.session?.status === 'running') throw new UserError('Chat is available while a run is paused and after it ends; pause the run first.');
    this.requireModel();
    const generation = this.chatGeneration;
    return this.reading('chat', () => this.reply(messages, opts, onProgress, () => this.chatGeneration !== generation));
  }

  async stopChat(): Promise<void> {
    this.chatGeneration++;
  }

  private async reply(messages: { role: string; content: string }[], opts: ChatOptions, onProgress: (p: ChatProgress) => void, stopped: () => boolean): Promise<ChatProgress> {
    const device = this.device;
    try {
      await this.ready();
      const { loaded, adapter } = opts.adapter ? await this.trainedModel() : { loaded: await this.baseModel(), adapter: null };
      // Talk to the adapter the way it was trained: a run with use_chat_template off saw plain text.
      const plainText = opts.adapter && this.session?.prepared.recipe.use_chat_template === false;
      const { max_new_tokens, temperature, seed } = opts;
      return await chatReply(loaded, messages, { max_new_tokens, temperature, seed, plainText, adapter, stopped }, detached(onProgress));
    } catch (e) {
      if (await lostSoon(device)) throw new UserError('The GPU device was lost while replying; send the message again to reload the model on a new device.');
      throw e;
    }
  }

  async loadAdapter(files: FolderFiles): Promise<void> {
    await this.exclusive('loading an adapter', async () => {
      this.requireModel();
      await this.ready();
      const adapter = await loadAdapter((await this.baseModel()).model, memoryFiles('adapter', files));
      try {
        await checkFiniteAdapter(adapter, 'adapter_model.safetensors');
      } catch (e) {
        adapter.dispose();
        throw e;
      }
      // The dropped adapter replaces the run as what chat and downloads use; the run stays resumable from its checkpoint.
      this.releaseSession();
      this.dropped?.adapter.dispose();
      this.dropped = { files, adapter };
    });
  }

  async listRuns(): Promise<RunRecord[]> {
    const live = this.session?.status === 'running' ? this.session.record.id : null;
    const [runs, held] = await Promise.all([store.listRuns(await this.db()), this.locks.held()]);
    return runs.map((r) => {
      if (held.has(r.id) && r.id !== this.held?.runId) return { ...r, open_elsewhere: true };
      // A run left 'running' by a closed or crashed tab is not running: it can be resumed from its checkpoint.
      return r.status === 'running' && r.id !== live ? { ...r, status: 'stopped' } : r;
    });
  }

  async renameRun(id: string, name: string): Promise<void> {
    const trimmed = name.trim();
    if (trimmed === '') throw new UserError('A run needs a name; type one, or press Escape to keep the old one.');
    if (trimmed.length > 200) throw new UserError('A run name is at most 200 characters.');
    const db = await this.db();
    const record = await store.getRun(db, id);
    if (!record) throw new UserError(`There is no saved run ${id}; it may have been deleted.`);
    if (this.session?.record.id === id) this.session.record = { ...this.session.record, name: trimmed };
    await store.renameRun(db, id, trimmed);
  }

  async runTrainFile(id: string): Promise<{ file: string; text: string }> {
    const data = await store.getRunData(await this.db(), id);
    if (!data) throw new UserError(`There is no saved run ${id}; it may have been deleted.`);
    return data;
  }

  async runMetrics(id: string): Promise<LogEntry[]> {
    return store.getMetrics(await this.db(), id);
  }

  async deleteRun(id: string): Promise<void> {
    await this.exclusive('deleting a run', async () => {
      if (this.session?.record.id === id) {
        if (this.session.status === 'running') throw new UserError('Stop the run before deleting it.');
        this.releaseSession();
      }
      if (this.paused?.id === id) this.paused = null;
      // Deleting what another tab trains would pull its checkpoints from under it.
      const lock = await this.claim(id);
      try {
        await store.deleteRun(await this.db(), id);
      } finally {
        lock.release();
      }
    });
  }

  async exportZip(kind: 'adapter' | 'merged' | 'recipe', runId?: string): Promise<Uint8Array> {
    const id = this.exportedRun(runId);
    return this.reading('download', async () => {
      if (kind === 'merged') {
        // A stored freeze/full checkpoint already is the trained model folder: it is zipped as it is.
        const files = await this.withWeights(id, ({ folder, model, adapter }) => modelFiles(folder, model, savedDType(folder), adapter), async (whole) => whole);
        return zip(files);
      }
      return zip(id !== undefined ? await this.storedRunFiles(kind, id) : await this.liveFiles(kind));
    });
  }

  async exportGguf(kind: 'model' | 'lora', outtype: GgufOuttype, runId?: string): Promise<Blob> {
    const id = this.exportedRun(runId);
    return this.reading('download', () =>
      this.withWeights(id, async ({ folder, model, adapter }) => {
        if (kind === 'lora' && !adapter) throw new UserError('This run trained the model\'s own weights, so it has no adapter; download the GGUF model instead.');
        const parts = kind === 'model' ? await ggufModelFile(folder, model, adapter, outtype) : await ggufLoraFile(folder, model, adapter!);
        // Each part becomes a Blob of its own as it is made (a browser keeps Blob data outside
        // the Worker's heap), so the file is never whole in the Worker's memory.
        const blobs: Blob[] = [];
        for await (const part of parts) blobs.push(new Blob([part as Uint8Array<ArrayBuffer>]));
        return new Blob(blobs, { type: 'application/octet-stream' });
      }),
    );
  }

  /** A run in progress changes its weights under the reader: its latest checkpoint is exported instead. */
  private exportedRun(runId: string | undefined): string | undefined {
    const session = this.session;
    return runId ?? (session && (session.status === 'running' || !session.alive) ? session.record.id : undefined);
  }

  private async liveFiles(kind: 'adapter' | 'recipe'): Promise<FolderFiles> {
    const session = this.session?.alive ? this.session : null;
    if (kind === 'recipe') {
      if (!session) throw new UserError('There is no run to download the recipe of; pick one in the runs list.');
      const db = await this.db();
      return recipeFiles(session.record, await store.getMetrics(db, session.record.id), await store.getCompletions(db, session.record.id));
    }
    if (session) {
      const { adapter, recipe } = session.prepared;
      if (!adapter) throw fullRunNeedsMerged(recipe.peft.type);
      return adapterFiles(adapter, recipe.model);
    }
    if (!this.dropped) throw new UserError('There is nothing trained to download yet: train a run or drop in an adapter.');
    return pick(this.dropped.files, ADAPTER_FILES);
  }

  private async storedRunFiles(kind: 'adapter' | 'recipe', id: string): Promise<FolderFiles> {
    const db = await this.db();
    const record = await store.getRun(db, id);
    if (!record) throw new UserError(`There is no saved run ${id}; it may have been deleted.`);
    if (kind === 'recipe') return recipeFiles(record, await store.getMetrics(db, id), await store.getCompletions(db, id));
    const { files } = await this.runCheckpoint(record);
    if (!('adapter_model.safetensors' in files)) throw fullRunNeedsMerged(parseRecipe(record.recipe, 'recipe').peft.type);
    return pick(files, ADAPTER_FILES);
  }

  /**
   * The trained weights an export reads: without `id`, the run in memory (its model, and its
   * adapter for LoRA) or the base model with the dropped-in adapter; with `id`, that stored run's
   * latest checkpoint: an adapter on the loaded base model, or a freeze/full checkpoint's whole
   * model folder, handed to `whole` as its files where the caller can use them as they are, else
   * loaded for the export and disposed after it.
   */
  private async withWeights<T>(
    id: string | undefined,
    use: (w: { folder: LoadedModel['folder']; model: LoadedModel['model']; adapter: LoraAdapter | null }) => Promise<T>,
    whole?: (files: FolderFiles) => Promise<T>,
  ): Promise<T> {
    if (id === undefined) {
      const session = this.session?.alive ? this.session : null;
      if (session) return use({ folder: session.prepared.loaded.folder, model: session.prepared.loaded.model, adapter: session.prepared.adapter });
      if (!this.dropped) throw new UserError('There is nothing trained to download yet: train a run or drop in an adapter.');
      await this.ready();
      const base = await this.baseModel();
      return use({ folder: base.folder, model: base.model, adapter: this.dropped.adapter });
    }
    const db = await this.db();
    const record = await store.getRun(db, id);
    if (!record) throw new UserError(`There is no saved run ${id}; it may have been deleted.`);
    const checkpoint = await this.runCheckpoint(record);
    await this.ready();
    const source = memoryFiles(`${record.name}/checkpoint-${checkpoint.step}`, checkpoint.files);
    if (!('adapter_model.safetensors' in checkpoint.files)) {
      // A freeze or full checkpoint is a whole model folder (in f32).
      if (whole) return whole(checkpoint.files);
      const trained = await loadModel(source);
      try {
        return await use({ folder: trained.folder, model: trained.model, adapter: null });
      } finally {
        trained.model.dispose();
      }
    }
    const model = this.requireModel();
    if (record.model !== model.name) {
      throw new UserError(`Run "${record.name}" trains ${record.model}, but the loaded model is ${model.name}; load ${record.model} to export it merged.`);
    }
    const base = await this.baseModel();
    const adapter = await loadAdapter(base.model, source);
    try {
      return await use({ folder: base.folder, model: base.model, adapter });
    } finally {
      adapter.dispose();
    }
  }

  /** A stored run's latest checkpoint, its trainer files left out. */
  private async runCheckpoint(record: RunRecord): Promise<{ step: number; files: FolderFiles }> {
    const checkpoint = await store.latestCheckpoint(await this.db(), record.id);
    if (!checkpoint) throw new UserError(`Run "${record.name}" has no checkpoint yet; the first is saved at step ${parseRecipe(record.recipe, 'recipe').save_steps}.`);
    return { step: checkpoint.step, files: Object.fromEntries(Object.entries(checkpoint.files).filter(([name]) => !TRAINER_FILES.has(name))) };
  }

  async storageEstimate(): Promise<{ usage: number; quota: number; persisted: boolean }> {
    return store.storageEstimate();
  }

  /** The weights chat and merging treat as the base: a LoRA run's model is untouched by training. */
  private async baseModel(): Promise<LoadedModel> {
    const model = this.requireModel();
    const session = this.session?.alive ? this.session : null;
    if (session?.prepared.adapter) return session.prepared.loaded;
    model.loaded ??= await loadModel(memoryFiles(model.name, model.files));
    return model.loaded;
  }

  /** The run's model with its adapter (or its trained weights), else the base with the dropped adapter. */
  private async trainedModel(): Promise<{ loaded: LoadedModel; adapter: LoraAdapter | null }> {
    const session = this.session?.alive ? this.session : null;
    if (session) return { loaded: session.prepared.loaded, adapter: session.prepared.adapter };
    if (this.dropped) return { loaded: await this.baseModel(), adapter: this.dropped.adapter };
    throw new UserError('There is no trained adapter to chat with yet: train a run or drop in an adapter.');
  }

  private releaseSession(): void {
    this.letGo();
    const base = this.session?.release() ?? null;
    this.session = null;
    if (base && this.model) {
      this.model.loaded?.model.dispose();
      this.model.loaded = base;
    }
  }

  /** Frees every tensor the studio holds; the base model's bytes stay, to load it again. */
  private dropTensors(): void {
    // Without its session, this tab no longer holds the run open for training.
    if (this.session) this.letGo();
    this.session?.dispose();
    this.session = null;
    this.dropped?.adapter.dispose();
    this.dropped = null;
    if (this.model?.loaded) {
      this.model.loaded.model.dispose();
      this.model.loaded = null;
    }
    releaseFreeGpuBuffers();
  }

  private requireModel(): BaseModel {
    if (!this.model) throw new UserError('Load a model first.');
    return this.model;
  }

  /** Chats, estimates and downloads may overlap one another (base and adapter replies side by side), not a swap. */
  private async reading<T>(what: string, work: () => Promise<T>): Promise<T> {
    if (this.busy) throw new UserError(`The studio is busy ${this.busy}; ${what} once that has finished.`);
    this.readers++;
    try {
      return await work();
    } finally {
      this.readers--;
    }
  }

  private runningSession(): TrainingSession {
    if (this.session?.status !== 'running') throw new UserError('No run is training.');
    return this.session;
  }

  /** Operations that swap models, adapters or runs run one at a time, and never under a reader. */
  private async exclusive<T>(what: string, work: () => Promise<T>): Promise<T> {
    if (this.busy) throw new UserError(`The studio is busy ${this.busy}; try again once that has finished.`);
    if (this.readers > 0) throw new UserError('Wait for the chat reply or download to finish first.');
    if (this.session?.status === 'running' && what !== 'deleting a run') {
      throw new UserError('A run is training; pause or stop it first.');
    }
    this.busy = what;
    try {
      return await work();
    } finally {
      this.busy = null;
    }
  }
}

interface RunStart {
  recipe: Recipe;
  train: { file: string; text: string };
  existing: RunRecord | null;
  resumeFrom: FileSource | null;
  /** A new run's name; undefined names it after its training file. */
  name: string | undefined;
  /** GRPO's JavaScript rewards by path (stored with the run). */
  rewardScripts: Record<string, string>;
}


/**
 * A callback from the page that can never stop the Worker: through comlink it answers with a
 * promise, which rejects if the page has gone away.
 */
function detached<A extends unknown[]>(callback: (...args: A) => unknown): (...args: A) => void {
  return (...args) => {
    try {
      Promise.resolve(callback(...args)).catch(() => undefined);
    } catch {
      // A page that throws in its own handler does not stop training either.
    }
  };
}

function pick(files: FolderFiles, names: string[]): FolderFiles {
  return Object.fromEntries(names.map((n) => [n, files[n]]));
}

/** recipe.json and metrics.jsonl, and GRPO's completions.jsonl, as `finetune train` leaves them in output_dir. */
function recipeFiles(record: RunRecord, metrics: unknown[], completions: CompletionRecord[] = []): FolderBytes {
  const enc = new TextEncoder();
  const jsonl = (rows: unknown[]) => enc.encode(rows.map((m) => JSON.stringify(m) + '\n').join(''));
  return {
    'recipe.json': enc.encode(JSON.stringify(record.recipe, null, 2) + '\n'),
    'metrics.jsonl': jsonl(metrics),
    ...(completions.length > 0 ? { 'completions.jsonl': jsonl(completions) } : {}),
  };
}

function fullRunNeedsMerged(type: string): UserError {
  return new UserError(`This run trained the model's own weights (peft.type "${type}"), so it has no adapter; download the merged model instead.`);
}

/** Safetensors hardly compress and can be gigabytes, so they are stored; the JSON files are deflated. */
async function zip(files: FolderFiles): Promise<Uint8Array> {
  const entries: Zippable = {};
  for (const [name, data] of Object.entries(files)) {
    const bytes = data instanceof Uint8Array ? data : new Uint8Array(await data.arrayBuffer());
    entries[name] = [bytes, { level: name.endsWith('.safetensors') ? 0 : 6 }];
  }
  return zipSync(entries);
}
