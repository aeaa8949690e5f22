import { readFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { startHubServer, type HubServer } from '../e2e/hub_server.ts';
import { downloadDatasetFiles, listDatasetFiles, resolveUrl, treeUrl, type DownloadProgress, type RemoteFile } from '../../src/ui/model/hub.ts';
import { discoverSplits, noSplitsMessage, splitLabel } from '../../src/ui/data/splits.ts';
import { hubFileName, parseHubChoice } from '../../src/ui/data/hub_dataset.svelte.ts';
import { blobBuffer, parquetColumns, parquetFooter, parquetRowGroups, readDataset, type DatasetFile, type DatasetProgress } from '../../src/worker/datasets.ts';
import { StudioWorker } from '../../src/worker/studio_worker.ts';
import { parseDatasetText } from '../../src/engine/data/dataset.ts';
import { detectFormatFor } from '../../src/engine/data/formats.ts';

const FIXTURES = new URL('../fixtures/datasets/', import.meta.url).pathname;
/** Written by tests/reference/parquet_fixtures.py with the rows it wrote. */
const EXPECTED = JSON.parse(readFileSync(`${FIXTURES}expected.json`, 'utf8')) as Record<string, { row_groups: number[]; rows: Record<string, unknown>[] }>;
const REPO = 'test-org/stories-qa';
const TRAIN = ['data/train-00000-of-00002.parquet', 'data/train-00001-of-00002.parquet'];

function fixture(path: string): DatasetFile {
  return { path, data: new Blob([readFileSync(`${FIXTURES}${path}`)]) };
}

function trainFiles(): DatasetFile[] {
  return TRAIN.map((p) => ({ path: p, data: fixture(`stories-qa/${p}`).data }));
}

/** Parquet's INT64 comes back as bigint; the expected rows were written as JSON numbers. */
function plain(rows: Record<string, unknown>[]): Record<string, unknown>[] {
  return JSON.parse(JSON.stringify(rows, (_k, v: unknown) => (typeof v === 'bigint' ? Number(v) : v))) as Record<string, unknown>[];
}

async function lines(blob: Blob | null): Promise<string[]> {
  return (await blob!.text()).split('\n').slice(0, -1);
}

describe('discoverSplits', () => {
  const f = (path: string, size = 10): RemoteFile => ({ path, size });
  const shape = (files: RemoteFile[]) => discoverSplits(files).map((s) => ({ label: splitLabel(s), format: s.format, files: s.files.map((x) => x.path) }));

  it("reads push_to_hub's shards, in order, train first", () => {
    expect(
      shape([f('README.md'), f('.gitattributes'), f('data/test-00000-of-00001.parquet'), f('data/train-00001-of-00002.parquet'), f('data/train-00000-of-00002.parquet'), f('data/validation-00000-of-00001-5f2a9c.parquet')]),
    ).toEqual([
      { label: 'train', format: 'parquet', files: ['data/train-00000-of-00002.parquet', 'data/train-00001-of-00002.parquet'] },
      { label: 'validation', format: 'parquet', files: ['data/validation-00000-of-00001-5f2a9c.parquet'] },
      { label: 'test', format: 'parquet', files: ['data/test-00000-of-00001.parquet'] },
    ]);
    // Any split name goes before the shard number.
    expect(shape([f('data/train_sft-00000-of-00001.parquet'), f('data/test_sft-00000-of-00001.parquet')]).map((s) => s.label)).toEqual(['test_sft', 'train_sft']);
  });

  it('reads configs, and the Hub\'s Parquet conversion with its shards by number', () => {
    expect(shape([f('fr/train-00000-of-00001.parquet'), f('en/train-00000-of-00001.parquet'), f('en/test-00000-of-00001.parquet')]).map((s) => s.label)).toEqual(['en › train', 'en › test', 'fr › train']);
    expect(shape([f('default/train/0010.parquet'), f('default/train/0002.parquet'), f('default/validation/0000.parquet')])).toEqual([
      { label: 'default › train', format: 'parquet', files: ['default/train/0002.parquet', 'default/train/0010.parquet'] },
      { label: 'default › validation', format: 'parquet', files: ['default/validation/0000.parquet'] },
    ]);
  });

  it('reads JSON Lines and JSON files named after their split, preferring Parquet for the same split', () => {
    expect(shape([f('train.jsonl'), f('data/test.jsonl'), f('dev.json')])).toEqual([
      { label: 'train', format: 'jsonl', files: ['train.jsonl'] },
      { label: 'dev', format: 'json', files: ['dev.json'] },
      { label: 'test', format: 'jsonl', files: ['data/test.jsonl'] },
    ]);
    expect(shape([f('train.jsonl'), f('data/train-00000-of-00001.parquet')])).toEqual([{ label: 'train', format: 'parquet', files: ['data/train-00000-of-00001.parquet'] }]);
  });

  it('makes files that name no split the train split, unless others name one; metadata files are not data', () => {
    expect(shape([f('alpaca_data.json'), f('dataset_info.json')])).toEqual([{ label: 'train', format: 'json', files: ['alpaca_data.json'] }]);
    expect(shape([f('train.jsonl'), f('extra/notes.json')]).map((s) => s.label)).toEqual(['train']);
  });

  it('says what a repo without a readable split has instead', () => {
    const files = [f('README.md'), f('train.csv'), f('test.csv')];
    expect(discoverSplits(files)).toEqual([]);
    expect(noSplitsMessage('org/csv', files)).toBe(
      'org/csv has no split the studio can read (its files are .csv): it reads Parquet, JSON Lines and JSON files laid out as data/train-00000-of-00001.parquet, <config>/train-*.parquet, train.jsonl or data/train.jsonl.',
    );
  });
});

describe('Parquet by row groups', () => {
  it('reads each row group in order, nested lists of structs included', async () => {
    const { data } = fixture('conversations.parquet');
    const expected = EXPECTED['conversations.parquet'];
    const footer = await parquetFooter(blobBuffer(data), 'conversations.parquet');
    expect(parquetColumns(footer)).toEqual(['id', 'conversation', 'label']);
    const groups: Record<string, unknown>[][] = [];
    for await (const rows of parquetRowGroups(blobBuffer(data), 'conversations.parquet')) groups.push(rows);
    expect(groups.map((g) => g.length)).toEqual(expected.row_groups);
    expect(plain(groups.flat())).toEqual(expected.rows);
  });

  it('reads only the byte ranges of one row group at a time, never the whole file at once', async () => {
    const { data } = fixture('stories-qa/data/train-00000-of-00002.parquet');
    const buffer = blobBuffer(data);
    const footer = await parquetFooter(buffer, 'train.parquet');
    const reads: [number, number][] = [];
    const counted = { byteLength: buffer.byteLength, slice: (start: number, end = data.size) => (reads.push([start, end]), buffer.slice(start, end)) };
    let group = 0;
    for await (const rows of parquetRowGroups(counted, 'train.parquet', footer)) {
      // Every read so far lies within this row group's column chunks.
      const chunks = footer.row_groups[group].columns.map((c) => [Number(c.meta_data!.data_page_offset), Number(c.meta_data!.data_page_offset + c.meta_data!.total_compressed_size)]);
      const [from, to] = [Math.min(...chunks.map((c) => c[0])), Math.max(...chunks.map((c) => c[1]))];
      expect(reads.length).toBeGreaterThan(0);
      expect(reads.every(([s, e]) => s >= from && e <= to)).toBe(true);
      expect(rows.length).toBe(4);
      reads.length = 0;
      group++;
    }
    expect(group).toBe(2);
  });

  it('reads a split across shards (uncompressed and Snappy) with progress, mapped for the method', async () => {
    const progress: DatasetProgress[] = [];
    const read = await readDataset(`${REPO} (train)`, trainFiles(), { method: 'sft', mapping: null, onProgress: (p) => progress.push(p) });
    expect(progress).toEqual([
      { file: TRAIN[0], rows: 4, total_rows: 12 },
      { file: TRAIN[0], rows: 8, total_rows: 12 },
      { file: TRAIN[1], rows: 12, total_rows: 12 },
    ]);
    expect(read.columns).toEqual(['id', 'title', 'question', 'answer']);
    expect(read.mapping).toEqual({ id: null, title: null, question: 'prompt', answer: 'completion' });
    expect(read.problem).toBeNull();
    expect(read.num_rows).toBe(12);
    expect(read.sample[0]).toEqual({ id: 1, title: 'Lily in the park', question: 'Once upon a time, there was a little', answer: ' girl named Lily. She loved to play outside in the park.' });
    const rows = [...EXPECTED[`stories-qa/${TRAIN[0]}`].rows, ...EXPECTED[`stories-qa/${TRAIN[1]}`].rows];
    expect((await lines(read.data)).map((l) => JSON.parse(l))).toEqual(rows.map((r) => ({ prompt: r.question, completion: r.answer })));
    // The Blob is what a dropped file is to the data flow.
    const parsed = parseDatasetText(await read.data!.text(), hubFileName(REPO, { config: null, split: 'train' }));
    expect(parsed.errors).toEqual([]);
    expect(detectFormatFor('sft', parsed.rows, 'x.jsonl')).toBe('prompt_completion');
  });

  it('applies a mapping the person changed, and for GRPO keeps the other columns', async () => {
    const titled = await readDataset('d', trainFiles(), { method: 'sft', mapping: { id: null, title: 'prompt', question: null, answer: 'completion' } });
    expect(JSON.parse((await lines(titled.data))[0])).toEqual({ prompt: 'Lily in the park', completion: ' girl named Lily. She loved to play outside in the park.' });
    const grpo = await readDataset('d', trainFiles(), { method: 'grpo', mapping: null });
    expect(JSON.parse((await lines(grpo.data))[11])).toEqual({ id: 12, title: 'Flowers', prompt: 'Anna liked to draw', answer: ' pictures of flowers. Her mom put them on the wall.' });
  });

  it('stops at the first rows with the reason when the mapping gives the method no rows', async () => {
    const progress: DatasetProgress[] = [];
    const read = await readDataset('org/ds (train)', trainFiles(), { method: 'dpo', mapping: null, onProgress: (p) => progress.push(p) });
    expect(read.problem).toBe('org/ds (train): no column is mapped to "chosen" and "rejected"; DPO takes "chosen" and "rejected" (and "prompt").');
    expect(read.data).toBeNull();
    expect(read.num_rows).toBe(12);
    expect(progress).toEqual([]);
    expect(read.mapping).toEqual({ id: null, title: null, question: 'prompt', answer: null });
  });

  it('reads GZIP pages, and conversations (Snappy) as messages', async () => {
    const test = await readDataset('d', [fixture('stories-qa/data/test-00000-of-00001.parquet')], { method: 'sft', mapping: null });
    expect(test.num_rows).toBe(3);
    const chats = await readDataset('d', [fixture('conversations.parquet')], { method: 'sft', mapping: null });
    expect(chats.mapping).toEqual({ id: null, conversation: 'messages', label: null });
    const rows = (await lines(chats.data)).map((l) => JSON.parse(l));
    expect(rows).toEqual(EXPECTED['conversations.parquet'].rows.map((r) => ({ messages: r.conversation })));
  });

  it('refuses a file that is not Parquet, or a damaged row group, naming the file', async () => {
    const test = 'data/test-00000-of-00001.parquet';
    const bytes = readFileSync(`${FIXTURES}stories-qa/${test}`);
    const cut = { path: test, data: new Blob([bytes.subarray(0, bytes.length - 10)]) };
    await expect(readDataset('d', [cut], { method: 'sft', mapping: null })).rejects.toThrow(/^data\/test-00000-of-00001\.parquet is not a readable Parquet file \(.+\)\.$/);
    // The first column chunk's gzip stream starts right after the magic and its page header; its checksum fails.
    const damaged = Buffer.from(bytes);
    for (let i = 20; i < 60; i++) damaged[i] = 0xff;
    await expect(readDataset('d', [{ path: test, data: new Blob([damaged]) }], { method: 'sft', mapping: null })).rejects.toThrow(/^data\/test-00000-of-00001\.parquet: row group 1 of 1 could not be read \(.+\)\.$/);
  });
});

describe('JSON Lines and JSON files', () => {
  it('maps each line, keeping blank and bad lines where they were so the report names them', async () => {
    const text = ['{"question": "a", "answer": "b"}', '', '{"question": "c", "answer":', '[1]', '{"question": "e", "answer": "f"}'].join('\n') + '\n';
    const progress: DatasetProgress[] = [];
    const read = await readDataset('d', [{ path: 'train.jsonl', data: new Blob([text]) }], { method: 'sft', mapping: null, onProgress: (p) => progress.push(p) });
    expect(read.mapping).toEqual({ question: 'prompt', answer: 'completion' });
    expect(await lines(read.data)).toEqual(['{"prompt":"a","completion":"b"}', '', '{"question": "c", "answer":', '[1]', '{"prompt":"e","completion":"f"}']);
    expect(progress).toEqual([{ file: 'train.jsonl', rows: 2, total_rows: null }]);
    const parsed = parseDatasetText(await read.data!.text(), 'train.jsonl');
    expect(parsed.errors.map((e) => e.line)).toEqual([3, 4]);
  });

  it('reads a .json file as an array of rows, or as JSON Lines', async () => {
    const array = await readDataset('d', [{ path: 'dev.json', data: new Blob(['[{"text": "one"}, {"text": "two"}]']) }], { method: 'sft', mapping: null });
    expect(await lines(array.data)).toEqual(['{"text":"one"}', '{"text":"two"}']);
    const jsonl = await readDataset('d', [{ path: 'dev.json', data: new Blob(['{"text": "one"}\n{"text": "two"}\n']) }], { method: 'sft', mapping: null });
    expect(await lines(jsonl.data)).toEqual(['{"text":"one"}', '{"text":"two"}']);
    await expect(readDataset('d', [{ path: 'dev.json', data: new Blob(['[{"text": "one"']) }], { method: 'sft', mapping: null })).rejects.toThrow(/^dev\.json is not valid JSON \(/);
  });
});

describe('the Worker API', () => {
  it('readDataset reads a split in the Worker with progress', async () => {
    const worker = new StudioWorker();
    const progress: DatasetProgress[] = [];
    const read = await worker.readDataset(`${REPO} (train)`, trainFiles(), 'sft', null, (p) => progress.push(p));
    expect(read.num_rows).toBe(12);
    await expect.poll(() => progress.length).toBe(3);
  });
});

/** Cache Storage as the browser has it, in memory: enough of the API for the downloader. */
class MemoryCacheStorage {
  caches = new Map<string, Map<string, Uint8Array>>();
  async open(name: string) {
    if (!this.caches.has(name)) this.caches.set(name, new Map());
    const store = this.caches.get(name)!;
    return {
      match: async (key: string) => (store.has(key) ? new Response(store.get(key)!.slice()) : undefined),
      put: async (key: string, res: Response) => void store.set(key, new Uint8Array(await res.arrayBuffer())),
      delete: async (key: string) => store.delete(key),
    };
  }
}

describe('dataset downloads from a server in the Hub layout', () => {
  let hub: HubServer | null = null;
  afterEach(async () => {
    await hub?.close();
    hub = null;
  });

  it('builds the dataset URLs', () => {
    expect(resolveUrl('http://h', 'a/b', 'main', 'data/x.parquet', 'dataset')).toBe('http://h/datasets/a/b/resolve/main/data/x.parquet');
    expect(treeUrl('http://h', 'a/b', 'main', 'dataset')).toBe('http://h/api/datasets/a/b/tree/main');
  });

  it('lists the splits, downloads a split into the cache, and reads it again offline', async () => {
    hub = await startHubServer({}, { [REPO]: `${FIXTURES}stories-qa` });
    const cache = new MemoryCacheStorage() as unknown as CacheStorage;
    const files = await listDatasetFiles({ repo: REPO, hubUrl: hub.url, cacheStorage: cache });
    const splits = discoverSplits(files);
    expect(splits.map(splitLabel)).toEqual(['train', 'test']);
    expect(hub.requests).toContain(`GET /api/datasets/${REPO}/tree/main`);

    const progress: DownloadProgress[] = [];
    const blobs = await downloadDatasetFiles({ repo: REPO, files: splits[0].files, hubUrl: hub.url, cacheStorage: cache, onProgress: (p) => progress.push(p) });
    for (const path of TRAIN) expect(Buffer.from(await blobs[path].arrayBuffer()).equals(readFileSync(`${FIXTURES}stories-qa/${path}`))).toBe(true);
    expect(progress.at(-1)).toMatchObject({ loaded: progress.at(-1)!.total, fromCache: false });
    expect(hub.requests).toContain(`GET /datasets/${REPO}/resolve/main/${TRAIN[0]}`);

    const url = hub.url;
    await hub.close();
    hub = null;
    // Offline: the listing kept last time offers the same splits.
    expect(await listDatasetFiles({ repo: REPO, hubUrl: url, cacheStorage: cache })).toEqual(files);
    await expect(listDatasetFiles({ repo: 'other/data', hubUrl: url, cacheStorage: cache })).rejects.toThrow();
    const again: DownloadProgress[] = [];
    const offline = await downloadDatasetFiles({ repo: REPO, files: splits[0].files, hubUrl: url, cacheStorage: cache, onProgress: (p) => again.push(p) });
    expect(again.every((p) => p.fromCache)).toBe(true);
    const read = await readDataset('d', TRAIN.map((path) => ({ path, data: offline[path] })), { method: 'sft', mapping: null });
    expect(read.num_rows).toBe(12);
  });

  it('stops when cancelled, with one sentence, and fetches the split when asked again', async () => {
    hub = await startHubServer({}, { [REPO]: `${FIXTURES}stories-qa` });
    const splits = discoverSplits(await listDatasetFiles({ repo: REPO, hubUrl: hub.url }));
    const cache = new MemoryCacheStorage() as unknown as CacheStorage;
    const abort = new AbortController();
    abort.abort();
    await expect(downloadDatasetFiles({ repo: REPO, files: splits[0].files, hubUrl: hub.url, cacheStorage: cache, signal: abort.signal })).rejects.toThrow(
      'Download cancelled; start it again to continue where it stopped.',
    );
    const blobs = await downloadDatasetFiles({ repo: REPO, files: splits[0].files, hubUrl: hub.url, cacheStorage: cache });
    for (const path of TRAIN) expect(Buffer.from(await blobs[path].arrayBuffer()).equals(readFileSync(`${FIXTURES}stories-qa/${path}`))).toBe(true);
  });

  it('says when the dataset does not exist, or the id is not one', async () => {
    hub = await startHubServer({ [REPO]: `${FIXTURES}stories-qa` });
    // A model of that name is not a dataset.
    await expect(listDatasetFiles({ repo: REPO, hubUrl: hub.url })).rejects.toThrow(`${hub.url} has no dataset ${REPO} (check the spelling, or the Hub address in Model › Settings).`);
    await expect(listDatasetFiles({ repo: 'not an id', hubUrl: hub.url })).rejects.toThrow('"not an id" is not a Hub dataset id; it looks like "trl-lib/Capybara".');
  });
});

describe('the remembered choice', () => {
  it('reads back what the page stored and refuses what it did not', () => {
    const choice = { repo: REPO, split: { config: null, split: 'train', format: 'parquet', files: [{ path: TRAIN[0], size: 9 }] }, mapping: { question: 'prompt', id: null } };
    expect(parseHubChoice(JSON.parse(JSON.stringify(choice)))).toEqual(choice);
    expect(parseHubChoice({ ...choice, split: { ...choice.split, format: 'csv' } })).toBeNull();
    expect(parseHubChoice({ ...choice, mapping: { question: 3 } })).toBeNull();
    expect(hubFileName(REPO, { config: 'en', split: 'train' })).toBe(`${REPO}/en/train.jsonl`);
  });
});
