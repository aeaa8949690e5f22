/**
 * The Runs view's state: the stored runs, browser storage, downloads, renaming, the curves of runs
 * opened or compared, and the adapter in memory that chat and "continue training" use (this tab's
 * run, or a dropped-in zip).
 */
import type { AppState } from '../app.svelte.ts';
import { describeError, errorText } from '../lib/errors.ts';
import { fileSafe, saveBlob, saveBytes, unzipFolder } from '../lib/files.ts';
import { buffersOf, transfer } from '../connect.ts';
import { resumeNeedsModel } from '../train/train.svelte.ts';
import { seriesFromMetrics, type Series } from '../train/series.ts';
import type { GgufOuttype, RunRecord, RunStatus } from '../../worker/protocol.ts';

/** A run that ended any other way than finishing can go on from its last checkpoint (a closed tab's run is listed as stopped). */
const RESUMABLE: readonly RunStatus[] = ['running', 'paused', 'stopped', 'failed'];

export interface AdapterState {
  /** Chat has a trained side: this tab's run (paused or ended) or a dropped-in adapter. */
  available: boolean;
  /** The dropped-in adapter zip's file name, or null. */
  label: string | null;
  error: string | null;
  /** Start the next run from the dropped-in adapter (recipe.init_adapter) instead of fresh LoRA weights. */
  continueFrom: boolean;
}

export class RunsStore {
  runs = $state.raw<RunRecord[]>([]);
  storage = $state.raw<{ usage: number; quota: number; persisted: boolean } | null>(null);
  error = $state<string | null>(null);
  dismissedResume = $state(false);
  adapter = $state<AdapterState>({ available: false, label: null, error: null, continueFrom: false });
  /** For each resumable run whose model is not at hand: what the person must do first (pick the folder again…). */
  resumeNotes = $state.raw<ReadonlyMap<string, string>>(new Map());
  /** The run whose curves are open, or null. */
  shownId = $state<string | null>(null);
  /** Runs ticked for comparison, in the order they were ticked (which gives their colours). */
  compareIds = $state.raw<string[]>([]);
  /** Curves of the runs opened or compared, read from their stored metrics. */
  curves = $state.raw<ReadonlyMap<string, Series>>(new Map());
  curvesError = $state<string | null>(null);
  /** The `updated` time of each run when its curves were read, so a run that logged more is read again. */
  private curvesRead = new Map<string, number>();
  resumable = $derived(
    this.runs.filter((r) => RESUMABLE.includes(r.status) && r.checkpoint_step !== null && !r.open_elsewhere && !(this.app.train.active && r.id === this.app.train.runId)),
  );

  constructor(private readonly app: AppState) {}

  setRuns(runs: RunRecord[]): void {
    this.runs = [...runs].sort((a, b) => b.created - a.created);
    const ids = new Set(runs.map((r) => r.id));
    if (this.shownId !== null && !ids.has(this.shownId)) this.shownId = null;
    if (this.compareIds.some((id) => !ids.has(id))) this.compareIds = this.compareIds.filter((id) => ids.has(id));
    void this.readCurves();
  }

  /** Opens a run's curves (null closes them). */
  async showCurves(id: string | null): Promise<void> {
    this.shownId = id;
    await this.readCurves();
  }

  /** Ticks or unticks a run for comparison. */
  async compare(id: string, on: boolean): Promise<void> {
    const rest = this.compareIds.filter((c) => c !== id);
    this.compareIds = on ? [...rest, id] : rest;
    await this.readCurves();
  }

  clearCompare(): void {
    this.compareIds = [];
    void this.readCurves();
  }

  /** The runs whose curves are in view. */
  private curvesWanted(): Set<string> {
    return new Set(this.shownId === null ? this.compareIds : [...this.compareIds, this.shownId]);
  }

  /** Reads the metrics of the runs in view that were not read yet or have logged since; forgets the others. */
  private async readCurves(): Promise<void> {
    const wanted = this.curvesWanted();
    const stale = this.runs.filter((r) => wanted.has(r.id) && this.curvesRead.get(r.id) !== r.updated);
    try {
      const read = await Promise.all(stale.map(async (r) => [r, seriesFromMetrics(await this.app.api.runMetrics(r.id), Infinity)] as const));
      // Another tick may have come while this read: keep what is in view now.
      const now = this.curvesWanted();
      const next = new Map([...this.curves].filter(([id]) => now.has(id)));
      for (const [r, series] of read) {
        if (!now.has(r.id)) continue;
        next.set(r.id, series);
        this.curvesRead.set(r.id, r.updated);
      }
      for (const id of this.curvesRead.keys()) if (!now.has(id)) this.curvesRead.delete(id);
      this.curvesError = null;
      // The runs list is set every few seconds while a run is watched: redraw only for a change.
      if (read.length > 0 || next.size !== this.curves.size) this.curves = next;
    } catch (e) {
      this.curvesError = errorText(e);
    }
  }

  async refresh(): Promise<void> {
    try {
      const [runs, storage] = await Promise.all([this.app.api.listRuns(), this.app.api.storageEstimate()]);
      this.setRuns(runs);
      this.storage = storage;
      this.error = null;
    } catch (e) {
      this.error = errorText(e);
    }
    await this.refreshResumeNotes();
  }

  private async refreshResumeNotes(): Promise<void> {
    const notes = new Map<string, string>();
    const loaded = this.app.model.model?.name;
    for (const run of this.resumable) {
      if (run.model === loaded) continue;
      const note = await resumeNeedsModel(run, this.app.model.hubUrl);
      if (note) notes.set(run.id, note);
    }
    this.resumeNotes = notes;
  }

  async rename(id: string, name: string): Promise<string | null> {
    try {
      await this.app.api.renameRun(id, name);
      await this.refresh();
      return null;
    } catch (e) {
      return errorText(e);
    }
  }

  async deleteRun(id: string): Promise<void> {
    try {
      await this.app.api.deleteRun(id);
      if (this.app.train.runId === id && !this.app.train.active) this.app.train.runId = null;
    } catch (e) {
      this.error = errorText(e);
    }
    await this.refresh();
  }

  async exportRun(kind: 'adapter' | 'merged' | 'recipe', run: RunRecord | null): Promise<string | null> {
    try {
      const bytes = await this.app.api.exportZip(kind, run?.id);
      const suffix = kind === 'recipe' ? 'recipe-metrics' : kind;
      saveBytes(bytes, `${fileSafe(run?.name ?? this.app.model.model?.name ?? 'studio')}-${suffix}.zip`);
      return null;
    } catch (e) {
      return errorText(e);
    }
  }

  /** A GGUF for llama.cpp, Ollama or LM Studio: the merged model in `outtype`, or the LoRA adapter alone. */
  async exportGguf(kind: 'model' | 'lora', outtype: GgufOuttype, run: RunRecord | null): Promise<string | null> {
    try {
      const blob = await this.app.api.exportGguf(kind, outtype, run?.id);
      const name = fileSafe(run?.name ?? this.app.model.model?.name ?? 'studio');
      saveBlob(blob, kind === 'lora' ? `${name}-lora.gguf` : `${name}-${outtype}.gguf`);
      return null;
    } catch (e) {
      return errorText(e);
    }
  }

  /** This tab's run holds an adapter (or trained weights) chat can use, or no longer does. */
  setRunAdapter(available: boolean): void {
    this.adapter = { ...this.adapter, available: available || this.adapter.label !== null };
  }

  /** A run starting frees the dropped-in adapter in the Worker (the run may continue from it). */
  clearAdapter(): void {
    this.adapter = { available: false, label: null, error: null, continueFrom: false };
  }

  /** A PEFT adapter zip downloaded earlier, for chat or to continue training. */
  async loadAdapterZip(file: File): Promise<void> {
    // A new attempt replaces the last one's message, red or green: never both at once.
    this.adapter = { ...this.adapter, error: null };
    if (!this.app.model.model) {
      this.adapter = { ...this.adapter, error: 'Load the base model the adapter was trained on first (Model view).' };
      return;
    }
    if (!/\.zip$/i.test(file.name)) {
      this.adapter = { ...this.adapter, error: `${file.name} is not a .zip file; drop the adapter zip the studio downloaded (it holds adapter_config.json and adapter_model.safetensors).` };
      return;
    }
    try {
      const files = unzipFolder(new Uint8Array(await file.arrayBuffer()));
      if (Object.keys(files).length === 0) throw new Error(`${file.name} is an empty zip`);
      const config = readJson(files['adapter_config.json']);
      await this.app.api.loadAdapter(transfer(files, buffersOf(files)));
      this.adapter = { available: true, label: file.name, error: null, continueFrom: false };
      if (config) this.app.recipe.applyAdapterConfig(config);
      this.app.chat.clear();
    } catch (e) {
      const shown = describeError(e);
      const message =
        /invalid zip|unexpected EOF|zip/i.test(shown.message) && !shown.user
          ? `${file.name} is not a zip file that the studio wrote (an adapter zip holds adapter_config.json and adapter_model.safetensors).`
          : shown.message;
      // The Worker keeps the previous adapter when a new one fails to load; the view shows the error alone.
      this.adapter = { ...this.adapter, error: message };
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
