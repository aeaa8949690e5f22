/**
 * The Model view's state: the Hub address and token, the catalog's cache marks, the download and
 * load in progress, and the loaded model. The model choice is remembered per origin, so a reload
 * offers (and, from the browser cache, loads) the same model again.
 */
import type { AppState } from '../app.svelte.ts';
import { errorText } from '../lib/errors.ts';
import { readFolder, type PickedFile } from '../lib/files.ts';
import { SpeedMeter, formatBytes } from '../lib/format.ts';
import { SETTINGS, readJsonSetting, readSetting, writeJsonSetting, writeSetting } from '../lib/settings.ts';
import { buffersOf, proxy, transfer } from '../connect.ts';
import type { LoadProgress } from '../../engine/io/model_folder.ts';
import type { FolderFiles, ModelSummary } from '../../worker/protocol.ts';
import { CATALOG } from './catalog.ts';
import { chooseHubUrl, downloadModel, isCached, normalizeHubUrl, type DownloadProgress } from './hub.ts';

/** Where the last model came from: a Hub id loads again from the browser cache; a folder must be picked again. */
export type ModelChoice = { source: 'hub'; repo: string } | { source: 'folder'; name: string };

function readChoice(): ModelChoice | null {
  const v = readJsonSetting(SETTINGS.lastModel);
  if (v && typeof v === 'object') {
    const c = v as Record<string, unknown>;
    if (c.source === 'hub' && typeof c.repo === 'string') return { source: 'hub', repo: c.repo };
    if (c.source === 'folder' && typeof c.name === 'string') return { source: 'folder', name: c.name };
  }
  // Pages before this one stored the bare Hub id.
  const bare = readSetting(SETTINGS.lastModel);
  return bare && !bare.startsWith('{') && !bare.startsWith('"') ? { source: 'hub', repo: bare } : null;
}

export class ModelStore {
  hubUrl = $state(chooseHubUrl(typeof location === 'undefined' ? '' : location.search, readSetting(SETTINGS.hub)));
  token = $state(readSetting(SETTINGS.token) ?? '');
  rememberToken = $state(readSetting(SETTINGS.token) !== null);

  model = $state.raw<ModelSummary | null>(null);
  /** Where the loaded (or last loaded) model came from; restored from the last visit. */
  choice = $state.raw<ModelChoice | null>(readChoice());
  busy = $state<string | null>(null);
  error = $state<string | null>(null);
  download = $state.raw<(DownloadProgress & { speed: number; repo: string }) | null>(null);
  cached = $state.raw<ReadonlySet<string>>(new Set());
  private abortDownload: AbortController | null = null;
  /** The load under way, so a resume that needs the model can wait for it instead of failing. */
  private loading: Promise<unknown> | null = null;

  constructor(private readonly app: AppState) {}

  setHubUrl(input: string): void {
    this.hubUrl = normalizeHubUrl(input);
    writeSetting(SETTINGS.hub, this.hubUrl);
    void this.refreshCached();
  }

  setToken(token: string, remember: boolean): void {
    this.token = token.trim();
    this.rememberToken = remember;
    writeSetting(SETTINGS.token, remember && this.token ? this.token : null);
  }

  async refreshCached(): Promise<void> {
    const last = this.choice?.source === 'hub' ? [this.choice.repo] : [];
    const hits = new Set<string>();
    for (const id of new Set([...CATALOG.map((m) => m.id), ...last])) {
      try {
        if (await isCached(id, this.hubUrl)) hits.add(id);
      } catch {
        // Cache Storage may be unavailable; then nothing counts as cached.
      }
    }
    this.cached = hits;
  }

  /** On page load: the last visit's Hub model is loaded again when the browser still has its files. */
  async restore(): Promise<void> {
    const choice = this.choice;
    if (choice?.source !== 'hub' || this.model || this.busy) return;
    let cached = false;
    try {
      cached = await isCached(choice.repo, this.hubUrl);
    } catch {
      cached = false;
    }
    if (cached) await this.loadFromHub(choice.repo);
  }

  /** Resolves once no model load is under way. */
  async settled(): Promise<void> {
    while (this.loading) await this.loading.catch(() => undefined);
  }

  loadFromHub(repo: string): Promise<boolean> {
    if (this.busy) return Promise.resolve(false);
    return this.track(this.fetchAndLoad(repo));
  }

  private track<T>(work: Promise<T>): Promise<T> {
    const p = work.finally(() => {
      if (this.loading === p) this.loading = null;
    });
    this.loading = p;
    return p;
  }

  private async fetchAndLoad(repo: string): Promise<boolean> {
    this.error = null;
    this.busy = `Fetching ${repo}…`;
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
      this.download = null;
      await this.loadFiles(repo, files, { source: 'hub', repo });
      await Promise.all([this.refreshCached(), this.app.runs.refresh()]);
      return true;
    } catch (e) {
      this.error = errorText(e);
      return false;
    } finally {
      this.download = null;
      this.busy = null;
      this.abortDownload = null;
    }
  }

  cancelDownload(): void {
    this.abortDownload?.abort();
  }

  loadLocal(picked: PickedFile[]): Promise<void> {
    if (this.busy) return Promise.resolve();
    return this.track(this.readAndLoad(picked));
  }

  private async readAndLoad(picked: PickedFile[]): Promise<void> {
    this.error = null;
    if (picked.length === 0) {
      this.error = 'No files were picked; choose the model folder (with config.json, tokenizer.json and model.safetensors).';
      return;
    }
    this.busy = 'Reading the model folder…';
    try {
      const { name, files } = await readFolder(picked, 'local model');
      await this.loadFiles(name, files, { source: 'folder', name });
    } catch (e) {
      this.error = errorText(e);
    } finally {
      this.busy = null;
    }
  }

  private async loadFiles(name: string, files: FolderFiles, choice: ModelChoice): Promise<void> {
    const where = this.app.backend?.name ?? 'the backend';
    this.busy = `Loading ${name} onto ${where}…`;
    // Progress messages may arrive after the load's own answer; those are dropped.
    let loading = true;
    const onProgress = proxy((p: LoadProgress) => {
      if (loading) this.busy = `Loading ${name} onto ${where}: ${formatBytes(p.bytes)} of ${formatBytes(p.totalBytes)} (tensor ${p.index} of ${p.count})…`;
    });
    // The bytes move to the Worker rather than being copied, and big files go as Blobs the
    // Worker reads a tensor at a time: a model can be gigabytes.
    try {
      this.model = await this.app.api.loadModel(name, transfer(files, buffersOf(files)), onProgress);
    } finally {
      loading = false;
    }
    this.choice = choice;
    writeJsonSetting(SETTINGS.lastModel, choice);
    this.app.modelChanged();
  }
}
