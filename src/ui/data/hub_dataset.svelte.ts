/**
 * The Data view's Hub datasets, part of its store: a dataset id typed in, its splits found from
 * the repo's file listing, the chosen split's files downloaded into Cache Storage (so a reload reads
 * them with no network), read by the Worker (Parquet a row group at a time) with the columns mapped
 * onto the recipe method's fields, and handed to the data flow as a JSON Lines Blob.
 */
import type { AppState } from '../app.svelte.ts';
import { proxy } from '../connect.ts';
import { errorText } from '../lib/errors.ts';
import { HubError, checkRepoId, downloadDatasetFiles, listDatasetFiles, type DownloadProgress, type RemoteFile } from '../model/hub.ts';
import { discoverSplits, noSplitsMessage, splitLabel, type DatasetSplit, type SplitFormat } from './splits.ts';
import { mappingProblem, reassign, type ColumnMapping } from '../../engine/data/columns.ts';
import type { TrainingMethod } from '../../engine/data/formats.ts';
import type { DatasetFile, DatasetProgress } from '../../worker/protocol.ts';

/** What is remembered of a Hub dataset for the next visit: the split (with its files) and the mapping. */
export interface HubChoice {
  repo: string;
  split: DatasetSplit;
  mapping: ColumnMapping;
}

/** The split in use: its columns, first rows and mapping (the mapping table), and what reading it gave. */
export interface HubCurrent extends HubChoice {
  /** The method the mapping was made for. */
  method: TrainingMethod;
  columns: string[];
  sample: Record<string, unknown>[];
  /** Why the mapping gives the method no rows; null when it does. */
  problem: string | null;
  num_rows: number | null;
}

/** Hands the mapped rows (null while the mapping gives none) to the Data view's store. */
type UseRows = (dataset: { file: string; data: Blob } | null, choice: HubChoice, remember: boolean) => Promise<void>;

const FORMATS: readonly SplitFormat[] = ['parquet', 'jsonl', 'json'];

function isRemoteFile(v: unknown): v is RemoteFile {
  const f = v as RemoteFile | null;
  return typeof f?.path === 'string' && typeof f.size === 'number';
}

/** A stored choice as an older or newer page may have written it, or null. */
export function parseHubChoice(v: unknown): HubChoice | null {
  const c = v as { repo?: unknown; split?: Partial<DatasetSplit>; mapping?: unknown } | null;
  const s = c?.split;
  if (typeof c?.repo !== 'string' || !s || typeof s.split !== 'string' || !(s.config === null || typeof s.config === 'string')) return null;
  if (!FORMATS.includes(s.format as SplitFormat) || !Array.isArray(s.files) || !s.files.every(isRemoteFile)) return null;
  const mapping = c.mapping;
  if (typeof mapping !== 'object' || mapping === null || !Object.values(mapping).every((t) => t === null || typeof t === 'string')) return null;
  return { repo: c.repo, split: { config: s.config, split: s.split, format: s.format as SplitFormat, files: s.files }, mapping: mapping as ColumnMapping };
}

/** The name the mapped rows go by (recipe.train_file, the run's file): a JSON Lines name, so they are read as lines. */
export function hubFileName(repo: string, split: Pick<DatasetSplit, 'config' | 'split'>): string {
  return `${repo}/${split.config === null ? '' : `${split.config}/`}${split.split}.jsonl`;
}

export class HubDatasetStore {
  /** The dataset id as typed. */
  repo = $state('');
  /** The splits of the repo last listed (`listed`), the one chosen by index. */
  splits = $state.raw<DatasetSplit[] | null>(null);
  listed = $state<string | null>(null);
  chosen = $state(0);
  busy = $state<string | null>(null);
  download = $state.raw<DownloadProgress | null>(null);
  reading = $state.raw<DatasetProgress | null>(null);
  error = $state<string | null>(null);
  current = $state.raw<HubCurrent | null>(null);
  /** The current split's files (Blobs from Cache Storage), kept to read again with another mapping. */
  private files: DatasetFile[] = [];
  private seq = 0;
  /** Stops the download in progress; what is already cached stays, so fetching again continues. */
  private abortDownload: AbortController | null = null;

  constructor(
    private readonly app: AppState,
    private readonly useRows: UseRows,
  ) {}

  /** Lists the typed dataset's files and offers the splits found in them. */
  async list(): Promise<void> {
    this.error = null;
    this.splits = null;
    this.listed = null;
    let repo: string;
    try {
      repo = checkRepoId(this.repo, 'dataset');
    } catch (e) {
      this.error = errorText(e);
      return;
    }
    const seq = ++this.seq;
    this.busy = `Listing the files of ${repo}…`;
    try {
      const files = await listDatasetFiles({ repo, hubUrl: this.app.model.hubUrl, accessToken: this.app.model.token || undefined });
      const splits = discoverSplits(files);
      if (splits.length === 0) throw new HubError(noSplitsMessage(repo, files));
      if (seq !== this.seq) return;
      this.splits = splits;
      this.listed = repo;
      this.chosen = 0;
    } catch (e) {
      if (seq === this.seq) this.error = errorText(e);
    } finally {
      if (seq === this.seq) this.busy = null;
    }
  }

  /** Downloads (or takes from the cache) the chosen split and reads it with a proposed mapping. */
  async load(): Promise<void> {
    const split = this.splits?.[this.chosen];
    if (split && this.listed) await this.open(this.listed, split, null, true);
  }

  /** On page load: the last visit's split, read from Cache Storage with its mapping. */
  async restore(choice: HubChoice): Promise<void> {
    this.repo = choice.repo;
    await this.open(choice.repo, choice.split, choice.mapping, false);
  }

  /** The current split read again with `column` mapped to `target` (null: left out); a column on that target before is left out. */
  async setMapping(column: string, target: string | null): Promise<void> {
    const current = this.current;
    if (current) await this.guarded(() => this.read(current.repo, current.split, reassign(current.mapping, column, target), true));
  }

  /**
   * The recipe's method is now `method`: a mapping made for another method is kept where it gives
   * this one rows too, and proposed anew where it does not. Returns whether the rows are read again
   * (they then reach the data flow anew).
   */
  async followMethod(method: TrainingMethod): Promise<boolean> {
    const current = this.current;
    if (!current || current.method === method || this.busy) return false;
    const fits = mappingProblem(current.mapping, current.sample, method, current.repo) === null;
    if (fits && current.problem === null) {
      this.current = { ...current, method };
      return false;
    }
    await this.guarded(() => this.read(current.repo, current.split, fits ? current.mapping : null, true));
    return true;
  }

  cancelDownload(): void {
    this.abortDownload?.abort();
  }

  /** Another dataset (a file, a sample, a run's) is in use. */
  clear(): void {
    this.seq++;
    this.current = null;
    this.files = [];
    this.busy = null;
  }

  private open(repo: string, split: DatasetSplit, mapping: ColumnMapping | null, remember: boolean): Promise<void> {
    return this.guarded(async (seq) => {
      this.busy = `Fetching ${repo} (${splitLabel(split)})…`;
      const abort = new AbortController();
      this.abortDownload = abort;
      const blobs = await downloadDatasetFiles({
        repo,
        files: split.files,
        hubUrl: this.app.model.hubUrl,
        accessToken: this.app.model.token || undefined,
        signal: abort.signal,
        onProgress: (p) => {
          if (seq === this.seq) this.download = p;
        },
      }).finally(() => {
        if (this.abortDownload === abort) this.abortDownload = null;
      });
      this.download = null;
      if (seq !== this.seq) return;
      this.files = split.files.map((f) => ({ path: f.path, data: blobs[f.path] }));
      await this.read(repo, split, mapping, remember);
    });
  }

  /** Runs one step; only the latest step's outcome (or error) is shown. */
  private async guarded(work: (seq: number) => Promise<void>): Promise<void> {
    const seq = ++this.seq;
    this.error = null;
    try {
      await work(seq);
    } catch (e) {
      if (seq === this.seq) this.error = errorText(e);
    } finally {
      if (seq === this.seq) {
        this.busy = null;
        this.download = null;
        this.reading = null;
      }
    }
  }

  private async read(repo: string, split: DatasetSplit, mapping: ColumnMapping | null, remember: boolean): Promise<void> {
    const seq = this.seq;
    const method = this.app.recipe.forWorker().method;
    const name = `${repo} (${splitLabel(split)})`;
    this.busy = `Reading ${name}…`;
    // Progress messages may arrive after the read's own answer; those are dropped.
    let reading = true;
    const onProgress = proxy((p: DatasetProgress) => {
      if (reading && seq === this.seq) this.reading = p;
    });
    const result = await this.app.api.readDataset(name, this.files, method, mapping, onProgress).finally(() => (reading = false));
    if (seq !== this.seq) return;
    const { columns, sample, problem, num_rows, data } = result;
    this.current = { repo, split, mapping: result.mapping, method, columns, sample, problem, num_rows };
    // Done here; tokenising is the data view's to show (and may find the method changed meanwhile).
    this.busy = null;
    this.reading = null;
    await this.useRows(data ? { file: hubFileName(repo, split), data } : null, { repo, split, mapping: result.mapping }, remember);
  }
}
