/**
 * The splits of a Hub dataset repo, found from its file listing as the `datasets` library lays
 * them out: `push_to_hub`'s shards (`data/train-00000-of-00002.parquet`, `<config>/train-*.parquet`),
 * the Hub's Parquet conversion (`<config>/train/0000.parquet`), and files named after their split
 * (`train.jsonl`, `data/test.json`). A split's shards are read in order as one.
 */
import type { RemoteFile } from '../model/hub.ts';

export type SplitFormat = 'parquet' | 'jsonl' | 'json';

export interface DatasetSplit {
  /** The config (subset) the files sit under, or null for the dataset's own files. */
  config: string | null;
  split: string;
  format: SplitFormat;
  /** The split's files in reading order (shards by number). */
  files: RemoteFile[];
}

/** Words that name a split where a file or folder is called by one (the `datasets` library's keywords). */
const SPLIT_WORDS = ['train', 'training', 'validation', 'valid', 'val', 'dev', 'test', 'testing', 'eval', 'evaluation'];
/** Parquet before JSON Lines before JSON, where one split has several. */
const FORMATS: SplitFormat[] = ['parquet', 'jsonl', 'json'];
/** `train-00000-of-00002.parquet`, `train_sft-00001-of-00003-5f2a.parquet`: the split is the name before the shard number. */
const SHARD = /^(\w+?)-\d{5}-of-\d{5}(?:[-.][^/]*)?\.(?:parquet|jsonl|json)$/i;
const EXTENSION = /\.(parquet|jsonl|json)$/i;
/** JSON files that describe a dataset rather than hold its rows (`datasets`' save_to_disk and info files). */
const METADATA = new Set(['dataset_info.json', 'dataset_infos.json', 'dataset_dict.json', 'state.json']);

function hasSplitWord(name: string): boolean {
  return name.toLowerCase().split(/[-_.]/).some((w) => SPLIT_WORDS.includes(w));
}

/** A file's split and the folders that make its config, or null where its name names no split. */
function placeOf(path: string): { split: string; folders: string[] } | null {
  const parts = path.split('/');
  const name = parts.pop() as string;
  const stem = name.replace(EXTENSION, '');
  const shard = SHARD.exec(name);
  if (shard) return { split: shard[1], folders: parts };
  if (hasSplitWord(stem)) return { split: stem, folders: parts };
  const parent = parts.at(-1);
  if (parent !== undefined && SPLIT_WORDS.includes(parent.toLowerCase())) return { split: parent, folders: parts.slice(0, -1) };
  return null;
}

function configOf(folders: string[]): string | null {
  // `data/` is where push_to_hub puts the default config's files; it names no config.
  const named = folders.filter((f) => f !== 'data');
  return named.length > 0 ? named.join('/') : null;
}

/** The dataset's own files, then a "default" config, then the others by name; within one, train, validation, test, then the rest. */
function rank(split: DatasetSplit): [number, string, number, string] {
  const config = split.config === null ? 0 : split.config === 'default' ? 1 : 2;
  const word = SPLIT_WORDS.indexOf(split.split.toLowerCase());
  return [config, split.config ?? '', word === -1 ? SPLIT_WORDS.length : word, split.split];
}

function compareRanks(a: DatasetSplit, b: DatasetSplit): number {
  const ra = rank(a);
  const rb = rank(b);
  for (let i = 0; i < ra.length; i++) {
    const x = ra[i];
    const y = rb[i];
    if (x !== y) return typeof x === 'number' ? x - (y as number) : String(x).localeCompare(String(y));
  }
  return 0;
}

/**
 * The splits in a repo's file listing (all files, recursively), the default config's train split
 * first. Files whose names name no split make a "train" split when no file names one, as the
 * `datasets` library reads a repo of plain data files; hidden files are skipped.
 */
export function discoverSplits(files: readonly RemoteFile[]): DatasetSplit[] {
  const data = files.filter((f) => EXTENSION.test(f.path) && !METADATA.has(f.path.split('/').pop() as string) && !f.path.split('/').some((p) => p.startsWith('.')));
  const placed = data.map((f) => ({ file: f, place: placeOf(f.path) }));
  const anyNamed = placed.some((p) => p.place !== null);
  const groups = new Map<string, DatasetSplit>();
  for (const { file, place } of placed) {
    const where = place ?? (anyNamed ? null : { split: 'train', folders: file.path.split('/').slice(0, -1) });
    if (where === null) continue;
    const config = configOf(where.folders);
    const format = (EXTENSION.exec(file.path) as RegExpExecArray)[1].toLowerCase() as SplitFormat;
    const key = JSON.stringify([config, where.split]);
    const group = groups.get(key);
    if (!group || FORMATS.indexOf(format) < FORMATS.indexOf(group.format)) groups.set(key, { config, split: where.split, format, files: [file] });
    else if (format === group.format) group.files.push(file);
  }
  const splits = [...groups.values()];
  for (const s of splits) s.files.sort((a, b) => a.path.localeCompare(b.path, 'en', { numeric: true }));
  return splits.sort(compareRanks);
}

/** A split's name as the page shows it: "train", or "en › train" for a config's. */
export function splitLabel(split: Pick<DatasetSplit, 'config' | 'split'>): string {
  return split.config === null ? split.split : `${split.config} › ${split.split}`;
}

/** The sentence for a repo with no split the studio reads, naming the kinds of files it has instead. */
export function noSplitsMessage(repo: string, files: readonly RemoteFile[]): string {
  const kinds = [...new Set(files.map((f) => /\.([\w.]+)$/.exec(f.path.split('/').pop() as string)?.[1].toLowerCase()).filter((e): e is string => e !== undefined && !['md', 'gitattributes', 'txt'].includes(e)))];
  const has = kinds.length > 0 ? ` (its files are ${kinds.map((k) => `.${k}`).join(', ')})` : '';
  return `${repo} has no split the studio can read${has}: it reads Parquet, JSON Lines and JSON files laid out as data/train-00000-of-00001.parquet, <config>/train-*.parquet, train.jsonl or data/train.jsonl.`;
}
