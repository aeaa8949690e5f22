/**
 * The contract between the page and the training Worker (reached through comlink). The page
 * never imports engine modules that touch tensors; everything heavy happens behind this API.
 * Callbacks passed from the page are wrapped with comlink's `proxy()`.
 */
import type { PrequantizedConfig } from '../engine/io/bnb.ts';
import type { GGUFOutType as GgufOuttype } from '../engine/export_gguf.ts';

export type { GGUFOutType as GgufOuttype } from '../engine/export_gguf.ts';
import type { BackendInfo } from '../engine/backend/index.ts';
import type { LogEntry } from '../engine/train/trainer.ts';
import type { RecipeInput } from '../engine/recipe.ts';
import type { LoadProgress } from '../engine/io/model_folder.ts';
import type { MemoryEstimate } from '../engine/estimate.ts';

import type { DataReport, PreviewPage } from '../engine/data/report.ts';
import type { CompletionRecord } from '../engine/train/methods/grpo.ts';
import type { ColumnMapping } from '../engine/data/columns.ts';
import type { TrainingMethod } from '../engine/data/formats.ts';
import type { DatasetFile, DatasetProgress, DatasetRead } from './datasets.ts';

export type { DatasetFile, DatasetProgress, DatasetRead } from './datasets.ts';

export type { CompletionRecord } from '../engine/train/methods/grpo.ts';

/** GRPO's reward functions tried on sample completions before a run (the recipe view's "Try it"). */
export interface RewardTrial {
  /** num_generations completions of each of the dataset's first prompts, grouped by prompt, scored and with advantages. */
  records: CompletionRecord[];
  /** The functions' names, in the recipe's order: the keys of each record's `rewards`. */
  reward_names: string[];
  num_generations: number;
  /** What the functions did wrong (a throw, a timeout, a bad value), one sentence each. */
  warnings: string[];
}

/** What the data view shows is the engine's data report (engine/data/report.ts), as `finetune data` prints it. */
export type { DataReport, PreviewPage, PreviewRow } from '../engine/data/report.ts';

/** A checkpoint or export folder as plain bytes keyed by file name (transferable). */
export type FolderBytes = Record<string, Uint8Array>;

/**
 * A dropped or downloaded model or adapter folder keyed by file name: small files as bytes
 * (transferable), large ones (safetensors weights) as Blobs — a dropped File or a Hub download
 * from Cache Storage — which cross to the Worker by reference and are read a tensor at a time,
 * never held whole.
 */
export type FolderFiles = Record<string, Uint8Array | Blob>;

export interface ModelSummary {
  /** Hub id or the dropped folder's name. */
  name: string;
  architecture: string;
  num_parameters: number;
  hidden_size: number;
  num_hidden_layers: number;
  vocab_size: number;
  dtype: string;
  has_chat_template: boolean;
  /** A pre-quantised bitsandbytes 4-bit checkpoint's storage (config.json's quantization_config), else null. */
  quantization: PrequantizedConfig | null;
}




/** A chat reply so far, sent each time it grows and returned when it ends. */
export interface ChatProgress {
  text: string;
  /** Tokens generated so far. */
  tokens: number;
  /** Measured after the first token (which compiles the GPU kernels); null until then. */
  tokens_per_second: number | null;
  /** The reply's length limit: the person's, or chosen from the measured speed (null until measured). */
  max_new_tokens: number | null;
  /** True when stopChat ended it. */
  stopped: boolean;
}

export type RunStatus = 'running' | 'paused' | 'stopped' | 'finished' | 'failed';

/**
 * The error message of startTraining (and resume, deleteRun) for a run that another tab trains or
 * holds paused: that tab alone may write its checkpoints, so this one can only watch it.
 */
export const RUN_OPEN_ELSEWHERE = 'This run is open in another tab.';

/**
 * What a run reports, in order: 'status' whenever its status changes (first 'running'; last
 * 'paused', 'stopped', 'finished' or 'failed'); 'warning' for data problems that do not stop it;
 * 'log' per logged step; 'checkpoint' once a checkpoint is safely stored; 'error' with the
 * sentence to show when it fails, just before the 'failed' status; GRPO's 'completions' once per
 * rollout, before that step trains (and its reward functions' problems as 'warning').
 */
export interface RunEvent {
  type: 'log' | 'checkpoint' | 'status' | 'warning' | 'error' | 'completions';
  /** For 'completions': the step's rollout, grouped by prompt. */
  records?: CompletionRecord[];
  /** For 'warning': 'reward' when a GRPO reward function caused it (a throw, a timeout, a bad value). */
  source?: 'reward';
  /** For 'log': the metrics of a step (loss, eval_loss, learning_rate, grad_norm, tokens_per_second, …). */
  log?: LogEntry;
  step?: number;
  status?: RunStatus;
  message?: string;
  /** GPU/tensor memory in bytes from tf.memory(), sampled with each log. */
  memory_bytes?: number;
  total_steps?: number;
}

export interface RunRecord {
  id: string;
  name: string;
  model: string;
  method: string;
  created: number;
  updated: number;
  status: RunStatus;
  recipe: RecipeInput;
  /** Last logged training loss. */
  final_loss: number | null;
  /** Last logged eval loss (runs stored before it was recorded lack it). */
  final_eval_loss?: number | null;
  global_step: number;
  total_steps: number;
  /** Bytes of its latest checkpoint. */
  size_bytes: number;
  /** Step of the latest complete checkpoint, or null. */
  checkpoint_step: number | null;
  /** Set by listRuns (never stored): another tab trains this run or holds it paused. */
  open_elsewhere?: boolean;
}

export interface StudioApi {
  init(preferred?: 'auto' | 'webgpu' | 'wasm' | 'cpu'): Promise<BackendInfo>;
  /** A model folder's files (dropped, picked, or downloaded by the page). */
  /** Streams the weights onto the backend tensor by tensor, reporting each to `onProgress`. */
  loadModel(name: string, files: FolderFiles, onProgress?: (p: LoadProgress) => void): Promise<ModelSummary>;
  /** `data` is the dropped File itself where possible: a Blob crosses to the Worker without copying its bytes. */
  inspectData(file: string, data: Blob | string, recipe: RecipeInput): Promise<DataReport>;
  /** `count` rows from row `start` (0-based, bad rows included), tokenised as training would. */
  previewRows(file: string, data: Blob | string, recipe: RecipeInput, start: number, count: number): Promise<PreviewPage>;
  /**
   * A Hub dataset split's files in order (Parquet read a row group at a time, with progress as rows
   * read of the total; or JSON Lines / JSON) as one JSON Lines Blob, its columns mapped onto
   * `method`'s fields (`mapping` null: proposed from the column names and first rows); the Blob
   * then goes to inspectData and startTraining as a dropped file does. A mapping that gives the
   * method no rows comes back with `problem` saying why, and no Blob.
   */
  readDataset(name: string, files: DatasetFile[], method: TrainingMethod, mapping: ColumnMapping | null, onProgress?: (p: DatasetProgress) => void): Promise<DatasetRead>;
  estimateMemory(recipe: RecipeInput): Promise<MemoryEstimate>;
  /**
   * Starts a run and resolves with its id once the recipe, model and data have been checked and
   * the run stored; training goes on in the background, its events streaming to `onEvent`. The
   * loaded model is the one trained: recipe.model and train_file are set to its and the file's
   * names. With `resumeRunId`, that stored run continues exactly from its latest checkpoint with
   * its own stored recipe and training file (`recipe` and `trainFile` are then not read); the
   * same model must be loaded. recipe.init_adapter (any name) continues training the adapter
   * dropped in with loadAdapter. A run that another tab trains or holds paused is refused with
   * RUN_OPEN_ELSEWHERE as the message: one tab at a time writes a run's checkpoints. `name` names
   * a new run (default: the training file's name).
   */
  startTraining(recipe: RecipeInput, trainFile: { file: string; data: Blob | string }, onEvent: (e: RunEvent) => void, resumeRunId?: string, name?: string, rewardScripts?: Record<string, string>): Promise<string>;
  /**
   * GRPO's JavaScript reward functions run in the page's sandboxed iframe (ui/lib/reward_sandbox.ts),
   * reached through this port; `startTraining` and `tryRewards` refuse a JavaScript reward until it
   * is attached. `rewardScripts` holds each file's text by the path `reward_funcs` names it with,
   * and is stored with the run so it resumes with the same functions.
   */
  attachRewardSandbox(port: MessagePort): Promise<void>;
  /** GRPO's reward functions on num_generations completions of the dataset's first 2 prompts, with the loaded model. */
  tryRewards(recipe: RecipeInput, trainFile: { file: string; data: Blob | string }, rewardScripts: Record<string, string>): Promise<RewardTrial>;
  /** A GRPO run's latest stored rollout (its completions.jsonl lines of the last step that generated). */
  runCompletions(id: string): Promise<CompletionRecord[]>;
  /** Gives a stored run a new name (used in its downloads' file names). */
  renameRun(id: string, name: string): Promise<void>;
  /** The training file a stored run reads (kept with the run, so resuming needs nothing from the person). */
  runTrainFile(id: string): Promise<{ file: string; text: string }>;
  /** Stops after the current step with a checkpoint there (status 'paused'); resolves once it is stored. */
  pause(): Promise<void>;
  /** Continues the paused run from its checkpoint, events going to its original `onEvent`. */
  resume(): Promise<void>;
  /** Like pause, with status 'stopped'; a paused run is just marked stopped. */
  stop(): Promise<void>;
  /**
   * A reply from the base model (adapter: false) or the trained one: the run's adapter (its
   * weights, for freeze/full), else the adapter dropped in. `onText` receives the whole reply so
   * far each time it grows; the promise resolves with the final reply. Refused while a run trains.
   * Base and adapter replies may run at once (their tokens interleave). Without max_new_tokens
   * the length is chosen from the speed of the first tokens (worker/chat.ts).
   */
  chat(messages: { role: string; content: string }[], opts: { adapter: boolean; max_new_tokens?: number; temperature?: number; seed?: number }, onProgress: (p: ChatProgress) => void): Promise<ChatProgress>;
  /** Ends every reply being written after its current token; each keeps what it wrote. */
  stopChat(): Promise<void>;
  /** Uses a PEFT adapter folder (a previous download) for chat or to continue training. */
  loadAdapter(files: FolderFiles): Promise<void>;
  /** Newest first; `open_elsewhere` marks the runs another tab holds (watch those read-only). */
  listRuns(): Promise<RunRecord[]>;
  /** A stored run's logged metrics (metrics.jsonl's lines), oldest first. */
  runMetrics(id: string): Promise<LogEntry[]>;
  deleteRun(id: string): Promise<void>;
  /**
   * Zip files, at the zip's root: the PEFT adapter, the merged model folder, or recipe.json +
   * metrics.jsonl. Without `runId`: the run in memory (or the dropped-in adapter); a run still
   * training is exported from its latest checkpoint. With `runId`: that stored run's latest
   * checkpoint (merging an adapter needs its base model loaded).
   */
  exportZip(kind: 'adapter' | 'merged' | 'recipe', runId?: string): Promise<Uint8Array>;
  /**
   * A GGUF file for llama.cpp, Ollama or LM Studio, of the same weights as exportZip: the merged
   * model in `outtype`, or (`lora`) the adapter alone, to load beside the base model's GGUF. A
   * Blob of the file's parts, never joined into one buffer in the Worker.
   */
  exportGguf(kind: 'model' | 'lora', outtype: GgufOuttype, runId?: string): Promise<Blob>;
  /**
   * Storage used and allowed for this origin. StorageManager.persist() exists in pages only, so
   * the page must request persistence itself; `persisted` says whether it was granted.
   */
  storageEstimate(): Promise<{ usage: number; quota: number; persisted: boolean }>;
}
