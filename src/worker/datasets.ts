/**
 * Hub datasets in the Worker: a split's files (Parquet, JSON Lines or JSON) read as rows in order,
 * Parquet a row group at a time through hyparquet (hyparquet-compressors for gzip, zstd, brotli and
 * lz4 pages), their columns mapped onto the method's fields (engine/data/columns.ts), and written
 * out as one JSON Lines Blob that the data report and training then read as they read a dropped file.
 * Nothing here touches the DOM, so Node tests run it as the Worker does.
 */
import { parquetMetadataAsync, parquetRead, parquetSchema, type AsyncBuffer, type FileMetaData } from 'hyparquet';
import { compressors } from 'hyparquet-compressors';
import { decodeUtf8Text, UserError } from '../engine/errors.ts';
import { mapRow, mappingProblem, proposeMapping, type ColumnMapping } from '../engine/data/columns.ts';
import type { TrainingMethod } from '../engine/data/formats.ts';

/** One file of a split, as the page hands it over: its path in the repo and its bytes (from Cache Storage). */
export interface DatasetFile {
  path: string;
  data: Blob;
}

export interface DatasetProgress {
  /** The file being read. */
  file: string;
  /** Rows read so far, over all files. */
  rows: number;
  /** All the split's rows, where its files say (Parquet footers); null for JSON files. */
  total_rows: number | null;
}

export interface DatasetRead {
  /** The split's columns: the first Parquet file's, or the keys of the first JSON rows in order. */
  columns: string[];
  /** The first rows as read (before mapping, as JSON values), for the mapping table and its checks. */
  sample: Record<string, unknown>[];
  /** The mapping applied: the one asked for (fitted to the columns), else the one proposed. */
  mapping: ColumnMapping;
  /** Why the mapping gives no rows to train on (one sentence naming the column or field); null when it does. */
  problem: string | null;
  /** Rows read (all of them; when `problem` stopped the read, the total the files give, or null). */
  num_rows: number | null;
  /** The mapped rows as JSON Lines, one line per row (a JSON row that is not an object kept as it was, for the report to name); null with a problem. */
  data: Blob | null;
}

/** Rows shown in the mapping table and checked against it. */
export const SAMPLE_ROWS = 20;

/** A Blob as hyparquet's AsyncBuffer: each slice read on demand, so only the ranges asked for are in memory. */
export function blobBuffer(blob: Blob): AsyncBuffer {
  return { byteLength: blob.size, slice: (start, end) => blob.slice(start, end).arrayBuffer() };
}

function reason(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).replace(/\.$/, '');
}

/** A Parquet file's footer (schema, row groups), refused in a sentence when the file is not Parquet. */
export async function parquetFooter(file: AsyncBuffer, path: string): Promise<FileMetaData> {
  try {
    return await parquetMetadataAsync(file);
  } catch (e) {
    throw new UserError(`${path} is not a readable Parquet file (${reason(e)}).`, { file: path });
  }
}

/** The top-level column names of a Parquet file. */
export function parquetColumns(metadata: FileMetaData): string[] {
  return parquetSchema(metadata).children.map((c) => c.element.name);
}

/**
 * A Parquet file's rows, one row group at a time and in order: hyparquet reads only that group's
 * column chunks, so a file is never decoded whole.
 */
export async function* parquetRowGroups(file: AsyncBuffer, path: string, metadata?: FileMetaData): AsyncGenerator<Record<string, unknown>[]> {
  const footer = metadata ?? (await parquetFooter(file, path));
  const groups = footer.row_groups;
  let rowStart = 0;
  for (let i = 0; i < groups.length; i++) {
    const rowEnd = rowStart + Number(groups[i].num_rows);
    let rows: Record<string, unknown>[] = [];
    try {
      await parquetRead({ file, metadata: footer, compressors, rowStart, rowEnd, rowFormat: 'object', onComplete: (r) => (rows = r) });
    } catch (e) {
      throw new UserError(`${path}: row group ${i + 1} of ${groups.length} could not be read (${reason(e)}).`, { file: path });
    }
    yield rows;
    rowStart = rowEnd;
  }
}

/**
 * A JSON Lines or JSON file's rows in one batch: objects as rows, and each line that is not a JSON
 * object kept as its text (blank lines too), so the data report names it by its line. A `.json`
 * file holds an array of rows, or JSON Lines, as the `datasets` library reads either.
 */
async function jsonRows(file: DatasetFile): Promise<(Record<string, unknown> | string)[]> {
  const text = decodeUtf8Text(new Uint8Array(await file.data.arrayBuffer()), file.path);
  if (/\.json$/i.test(file.path) && text.trimStart().startsWith('[')) {
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (e) {
      throw new UserError(`${file.path} is not valid JSON (${reason(e)}).`, { file: file.path });
    }
    if (!Array.isArray(value)) throw new UserError(`${file.path} holds a JSON value that is not an array of rows.`, { file: file.path });
    return value.map((v) => (isRow(v) ? v : JSON.stringify(v)));
  }
  const lines = text.split('\n');
  if (lines.at(-1) === '') lines.pop();
  return lines.map((line) => {
    const source = line.endsWith('\r') ? line.slice(0, -1) : line;
    try {
      const value: unknown = JSON.parse(source);
      return isRow(value) ? value : source;
    } catch {
      return source;
    }
  });
}

function isRow(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Parquet's 64-bit integers arrive as bigint and binary values as bytes, which JSON has no words for. */
function jsonValue(_key: string, value: unknown): unknown {
  if (typeof value === 'bigint') return Number.isSafeInteger(Number(value)) ? Number(value) : String(value);
  if (ArrayBuffer.isView(value)) return Array.from(value as Uint8Array);
  return value;
}

/** The keys of the first rows, in the order they first appear. */
function keysOf(rows: readonly (Record<string, unknown> | string)[]): string[] {
  const keys = new Set<string>();
  for (const row of rows.slice(0, 100)) if (typeof row !== 'string') for (const k of Object.keys(row)) keys.add(k);
  return [...keys];
}

/** A mapping asked for, made to cover exactly these columns: a new column is left out, a gone one dropped. */
function fitMapping(mapping: ColumnMapping, columns: readonly string[]): ColumnMapping {
  return Object.fromEntries(columns.map((c) => [c, mapping[c] ?? null]));
}

/**
 * A split's files (in order) as one JSON Lines Blob of rows mapped for `method`. `mapping` null
 * proposes one from the column names and the first rows. Parquet files are read a row group at a
 * time, with progress after each; a file that cannot be read is refused naming it. Where the
 * mapping gives the method no rows, the read stops after the first rows with `problem` saying why,
 * so the page can show the mapping to change.
 */
export async function readDataset(
  name: string,
  files: readonly DatasetFile[],
  opts: { method: TrainingMethod; mapping: ColumnMapping | null; onProgress?: (p: DatasetProgress) => void },
): Promise<DatasetRead> {
  if (files.length === 0) throw new UserError(`${name} has no files to read.`);
  const parquet = files.every((f) => /\.parquet$/i.test(f.path));
  // The footers say how many rows there are, so progress has a total from the start.
  const footers = parquet ? await Promise.all(files.map((f) => parquetFooter(blobBuffer(f.data), f.path))) : null;
  const total = footers ? footers.reduce((a, m) => a + Number(m.num_rows), 0) : null;
  let first: Omit<DatasetRead, 'problem' | 'num_rows' | 'data'> | null = null;
  let rows = 0;
  const parts: string[] = [];
  for (const [i, file] of files.entries()) {
    const batches = footers ? parquetRowGroups(blobBuffer(file.data), file.path, footers[i]) : [await jsonRows(file)];
    for await (const batch of batches) {
      if (first === null && batch.some((r) => typeof r !== 'string')) {
        const columns = footers ? parquetColumns(footers[0]) : keysOf(batch);
        const sample = batch.filter(isRow).slice(0, SAMPLE_ROWS).map((r) => JSON.parse(JSON.stringify(r, jsonValue)) as Record<string, unknown>);
        const mapping = opts.mapping ? fitMapping(opts.mapping, columns) : proposeMapping(columns, sample, opts.method);
        first = { columns, sample, mapping };
        const problem = mappingProblem(mapping, sample, opts.method, name);
        if (problem !== null) return { ...first, problem, num_rows: total, data: null };
      }
      const mapping = first?.mapping ?? {};
      parts.push(batch.map((r) => `${typeof r === 'string' ? r : JSON.stringify(mapRow(r, mapping), jsonValue)}\n`).join(''));
      rows += batch.filter(isRow).length;
      opts.onProgress?.({ file: file.path, rows, total_rows: total });
    }
  }
  if (first === null) throw new UserError(`${name} has no rows: its files are empty or hold no JSON objects.`);
  return { ...first, problem: null, num_rows: rows, data: new Blob(parts, { type: 'application/jsonl' }) };
}
