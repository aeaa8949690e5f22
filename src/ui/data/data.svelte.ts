/**
 * The Data view's state: the chosen dataset, its report from the Worker, and the rows browser's
 * page and chosen row (tokenised by the Worker a page at a time). The choice is remembered per
 * origin: a sample by name, a dropped file by its bytes in the page's IndexedDB
 * (up to STORED_FILE_BYTES; a bigger one by name, asking for it again), a resumed run's training
 * file by the run it belongs to, a Hub dataset by its split and column mapping (its files are in
 * Cache Storage; hub_dataset.svelte.ts).
 */
import type { AppState } from '../app.svelte.ts';
import { SAMPLES } from './samples.ts';
import { errorText } from '../lib/errors.ts';
import { deletePageValue, getPageValue, putPageValue } from '../lib/page_db.ts';
import { SETTINGS, readJsonSetting, writeJsonSetting } from '../lib/settings.ts';
import type { DataReport, PreviewPage, PreviewRow } from '../../worker/protocol.ts';
import { HubDatasetStore, parseHubChoice, type HubChoice } from './hub_dataset.svelte.ts';

export type DatasetSource = 'sample' | 'file' | 'run' | 'hub';

export interface Dataset {
  file: string;
  data: Blob;
  size: number;
  source: DatasetSource;
}

type StoredChoice =
  | { source: 'sample'; file: string }
  | { source: 'file'; file: string }
  | { source: 'run'; file: string; runId: string }
  | { source: 'hub'; hub: HubChoice };

/** Dropped files up to this size are kept for the next visit; bigger ones are asked for again. */
export const STORED_FILE_BYTES = 64 * 2 ** 20;
const FILE_KEY = 'dataset-file';

/** Rows per page of the rows browser. */
const PAGE_ROWS = 10;

/** The first row of the page that holds row `index` (0-based): pages start at multiples of PAGE_ROWS. */
function firstOfPage(index: number): number {
  return Math.max(0, Math.floor(index / PAGE_ROWS) * PAGE_ROWS);
}

/** Rows `start` to `start + count` (PAGE_ROWS by default) from the Worker, tokenised as the recipe says. */
type FetchRows = (start: number, count?: number) => Promise<PreviewPage>;

/** What a browsing step shows: a page, where it starts, and the row picked. */
interface Browsed {
  start: number;
  page: PreviewPage;
  selected: PreviewRow | null;
}

/** The row shown until one is picked: the first that trains, else the first with tokens at all. */
function firstGood(page: PreviewPage): PreviewRow | null {
  return page.rows.find((r) => r.tokens !== null && r.problem === null) ?? page.rows.find((r) => r.tokens !== null) ?? null;
}

function parseChoice(v: unknown): StoredChoice | null {
  if (!v || typeof v !== 'object') return null;
  const c = v as Record<string, unknown>;
  if (c.source === 'hub') {
    const hub = parseHubChoice(c.hub);
    return hub ? { source: 'hub', hub } : null;
  }
  if (typeof c.file !== 'string') return null;
  if (c.source === 'sample' || c.source === 'file') return { source: c.source, file: c.file };
  if (c.source === 'run' && typeof c.runId === 'string') return { source: 'run', file: c.file, runId: c.runId };
  return null;
}

export class DataStore {
  dataset = $state.raw<Dataset | null>(null);
  report = $state.raw<DataReport | null>(null);
  busy = $state(false);
  error = $state<string | null>(null);
  /** A file chosen on an earlier visit that was too big to keep: its name, to ask for it again. */
  missing = $state<string | null>(null);
  /** The rows browser's page: rows `pageStart` to `pageStart + PAGE_ROWS` of `page.total`. */
  page = $state.raw<PreviewPage | null>(null);
  pageStart = $state(0);
  /** The row the "What is trained on" view shows; it may be on another page than the one shown. */
  selected = $state.raw<PreviewRow | null>(null);
  pageBusy = $state(false);
  pageError = $state<string | null>(null);
  /** Datasets typed in by their Hub id. */
  readonly hub: HubDatasetStore;
  private inspectSeq = 0;
  private pageSeq = 0;

  constructor(private readonly app: AppState) {
    this.hub = new HubDatasetStore(app, (dataset, choice, remember) => this.useHubRows(dataset, choice, remember));
  }

  /** On page load: the dataset of the last visit, when it can be had again without asking. */
  async restore(): Promise<void> {
    const choice = parseChoice(readJsonSetting(SETTINGS.dataset));
    if (!choice || this.dataset) return;
    // A Hub dataset that cannot be read now (its cache cleared, offline) says why in its card and is tried again next visit.
    if (choice.source === 'hub') return await this.hub.restore(choice.hub);
    try {
      if (choice.source === 'sample') return await this.loadSample(choice.file);
      if (choice.source === 'run') {
        const data = await this.app.api.runTrainFile(choice.runId);
        return await this.setDataset({ file: data.file, data: new Blob([data.text]), size: data.text.length, source: 'run' }, false);
      }
      const blob = await getPageValue<Blob>(FILE_KEY);
      if (blob instanceof Blob) await this.setDataset({ file: choice.file, data: blob, size: blob.size, source: 'file' }, false);
      else this.missing = choice.file;
    } catch {
      // A sample or run that no longer exists is simply not restored.
      writeJsonSetting(SETTINGS.dataset, null);
    }
  }

  async pickDataset(file: File): Promise<void> {
    this.error = null;
    if (!/\.(jsonl|json)$/i.test(file.name)) {
      this.error = `${file.name} is not a .jsonl or .json file; a dataset has one JSON object per line (.jsonl) or a JSON array of objects (.json).`;
      return;
    }
    try {
      // The File goes to the Worker as a handle (structured clone shares a Blob's bytes), so the
      // page never holds the text and the Worker reads it once.
      await this.setDataset({ file: file.name, data: file, size: file.size, source: 'file' });
    } catch (e) {
      this.error = errorText(e);
    }
  }

  async loadSample(file: string): Promise<void> {
    this.error = null;
    // A sample made for another kind of method (pairs for DPO) sets the recipe's method to it.
    const sample = SAMPLES.find((s) => s.file === file);
    const method = this.app.recipe.form.method;
    if (sample && (sample.method === 'sft') !== (method === 'sft')) this.app.recipe.form.method = sample.method;
    try {
      const res = await fetch(`${import.meta.env.BASE_URL}samples/${file}`);
      if (!res.ok) throw new Error(`the sample ${file} could not be fetched (${res.status})`);
      const data = await res.blob();
      await this.setDataset({ file, data, size: data.size, source: 'sample' });
    } catch (e) {
      this.error = errorText(e);
    }
  }

  /** A resumed run trains on the file it was started with; the view shows that one. */
  async showRunData(runId: string): Promise<void> {
    try {
      const data = await this.app.api.runTrainFile(runId);
      await this.setDataset({ file: data.file, data: new Blob([data.text]), size: data.text.length, source: 'run' }, true, runId);
    } catch {
      // The run's data is the Worker's to read; the view keeps what it had.
    }
  }

  private async setDataset(dataset: Dataset, remember = true, runId?: string): Promise<void> {
    if (dataset.source !== 'hub') this.hub.clear();
    this.show(dataset);
    if (remember) await this.remember(dataset, runId);
    await this.inspect();
  }

  /** A Hub split's rows as the Worker mapped them; null while the mapping gives none (its card says why). */
  private async useHubRows(rows: { file: string; data: Blob } | null, choice: HubChoice, remember: boolean): Promise<void> {
    if (remember) {
      await deletePageValue(FILE_KEY);
      writeJsonSetting(SETTINGS.dataset, { source: 'hub', hub: choice } satisfies StoredChoice);
    }
    if (rows) return await this.setDataset({ ...rows, size: rows.data.size, source: 'hub' }, false);
    this.show(null);
    // Nothing to tokenise, but the recipe's method may have changed during the read, and the mapping follows it.
    await this.inspect();
  }

  private show(dataset: Dataset | null): void {
    this.dataset = dataset;
    this.missing = null;
    this.report = null;
    this.page = null;
    this.pageStart = 0;
    this.selected = null;
    this.pageError = null;
    this.error = null;
    this.pageSeq++;
    this.inspectSeq++;
    this.busy = false;
  }

  private async remember(dataset: Dataset, runId: string | undefined): Promise<void> {
    if (dataset.source === 'file') {
      // Kept whole so the next visit needs nothing from the person; a huge file is asked for again.
      if (dataset.size > STORED_FILE_BYTES || !(await putPageValue(FILE_KEY, dataset.data))) await deletePageValue(FILE_KEY);
    } else {
      await deletePageValue(FILE_KEY);
    }
    const choice: StoredChoice =
      dataset.source === 'run' && runId ? { source: 'run', file: dataset.file, runId } : { source: dataset.source === 'sample' ? 'sample' : 'file', file: dataset.file };
    writeJsonSetting(SETTINGS.dataset, choice);
  }

  /** Reads and tokenises the dataset anew (another model or recipe), then the page and row shown. */
  async inspect(): Promise<void> {
    // A Hub dataset's mapping follows the recipe's method; when its rows are read again, that inspects them.
    if (await this.hub.followMethod(this.app.recipe.forWorker().method)) return;
    const model = this.app.model.model;
    if (!this.dataset || !model) return;
    const seq = ++this.inspectSeq;
    const { file, data } = this.dataset;
    this.busy = true;
    this.error = null;
    let report: DataReport | null = null;
    try {
      report = await this.app.api.inspectData(file, data, this.app.recipe.forWorker());
    } catch (e) {
      if (seq === this.inspectSeq) {
        this.report = null;
        this.error = errorText(e);
      }
    } finally {
      if (seq === this.inspectSeq) this.busy = false;
    }
    if (seq !== this.inspectSeq || report === null) return;
    this.report = report;
    await this.refreshPage();
  }

  /** Shows the page that holds row `index` (0-based among all rows, bad ones included). */
  async showPage(index: number): Promise<void> {
    await this.browse(async (fetchRows) => {
      const start = firstOfPage(index);
      const page = await fetchRows(start);
      return { start, page, selected: this.selected ?? firstGood(page) };
    });
  }

  nextPage(): Promise<void> {
    return this.showPage(this.pageStart + PAGE_ROWS);
  }

  previousPage(): Promise<void> {
    return this.showPage(this.pageStart - PAGE_ROWS);
  }

  /** The row for the "What is trained on" view. */
  select(row: PreviewRow): void {
    this.selected = row;
  }

  /**
   * Shows the page that holds line `line` of the file and selects its row (the next row where the
   * line is blank, the last row past the end). A row's index is its line - 1 unless blank lines
   * come before it, which only move it back, so the search starts there and steps back if it must.
   */
  async goToLine(line: number): Promise<void> {
    const total = this.page?.total ?? this.report?.num_rows ?? 0;
    if (!Number.isInteger(line) || line < 1 || total === 0) return;
    await this.browse(async (fetchRows) => {
      let start = firstOfPage(Math.min(line, total) - 1);
      let page = await fetchRows(start);
      for (let first = page.rows[0]; first && first.line > line && start > 0; first = page.rows[0]) {
        // At most first.line - line rows lie between the line and the page's first row.
        start = firstOfPage(first.index - (first.line - line));
        page = await fetchRows(start);
      }
      while ((page.rows.at(-1)?.line ?? line) < line && start + PAGE_ROWS < page.total) {
        start += PAGE_ROWS;
        page = await fetchRows(start);
      }
      return { start, page, selected: page.rows.find((r) => r.line >= line) ?? page.rows.at(-1) ?? this.selected };
    });
  }

  /** After the report is redone: the same page and row, tokenised as the recipe now says. */
  private async refreshPage(): Promise<void> {
    const chosen = this.selected?.index ?? null;
    await this.browse(async (fetchRows) => {
      const start = this.pageStart;
      const page = await fetchRows(start);
      let selected = firstGood(page);
      if (chosen !== null) selected = page.rows.find((r) => r.index === chosen) ?? (await fetchRows(chosen, 1)).rows[0] ?? selected;
      return { start, page, selected };
    });
  }

  /** Runs one browsing step against the Worker; only the latest step's answer is shown. */
  private async browse(step: (fetchRows: FetchRows) => Promise<Browsed>): Promise<void> {
    const dataset = this.dataset;
    if (!dataset || !this.app.model.model) return;
    const seq = ++this.pageSeq;
    const recipe = this.app.recipe.forWorker();
    this.pageBusy = true;
    this.pageError = null;
    try {
      const shown = await step((start, count = PAGE_ROWS) => this.app.api.previewRows(dataset.file, dataset.data, recipe, start, count));
      if (seq !== this.pageSeq) return;
      this.page = shown.page;
      this.pageStart = shown.start;
      this.selected = shown.selected;
    } catch (e) {
      if (seq === this.pageSeq) this.pageError = errorText(e);
    } finally {
      if (seq === this.pageSeq) this.pageBusy = false;
    }
  }
}
