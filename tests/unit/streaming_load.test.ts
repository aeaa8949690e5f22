// Streaming a model folder in, tensor by tensor: openModelFolder reads the JSON files and only the
// safetensors headers, and readWeights hands out one tensor's bytes at a time. An instrumenting
// FileSource counts the bytes handed out and not yet released, so these tests hold the loader to
// "peak host memory near one tensor", and check that a lying header is refused before any data.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { nodeFolder } from '../../src/cli/fs_files.ts';
import { UserError } from '../../src/engine/errors.ts';
import { memoryFiles, type FileSource, type MemoryFileContent } from '../../src/engine/io/files.ts';
import { openModelFolder, type LoadProgress, type RawWeight } from '../../src/engine/io/model_folder.ts';
import {
  float32ToBf16Bits,
  float32ToF16Bits,
  valuesToFloat32,
  writeSafetensors,
  type FloatDType,
  type FloatTensorToWrite as TensorToWrite,
} from '../../src/engine/io/safetensors.ts';
import { readEagerly } from './helpers/weights.ts';

// The same folder as STORIES_DIR in helpers/tiny_model.ts, named here so this test does not load the model code.
const STORIES_DIR = fileURLToPath(new URL('../../../shared/models/stories260K/', import.meta.url));

const JSONS = {
  'config.json': JSON.stringify({ model_type: 'llama', hidden_size: 8 }),
  'tokenizer.json': JSON.stringify({ model: { type: 'BPE' } }),
  'tokenizer_config.json': JSON.stringify({ eos_token: '</s>' }),
  'generation_config.json': JSON.stringify({ eos_token_id: 2 }),
};

const WIDTH = { F32: 4, F16: 2, BF16: 2 } as const;
type FloatRaw = Extract<RawWeight, { dtype: FloatDType }>;

function tensor(name: string, dtype: TensorToWrite['dtype'], shape: number[], seed: number): TensorToWrite {
  const n = shape.reduce((a, d) => a * d, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = Math.sin(seed * 1000 + i * 0.37) * (1 + (i % 7));
  return { name, dtype, shape, data };
}

/** Three shards mixing F32, BF16 and F16, of uneven sizes, and the index that lists them. */
const SHARDS: Record<string, TensorToWrite[]> = {
  'model-00001-of-00003.safetensors': [
    tensor('model.embed_tokens.weight', 'BF16', [128, 32], 1),
    tensor('model.norm.weight', 'F32', [32], 2),
  ],
  'model-00002-of-00003.safetensors': [
    tensor('layers.0.q.weight', 'F16', [64, 32], 3),
    tensor('layers.0.k.weight', 'BF16', [64, 32], 4),
    tensor('layers.0.mlp.up.weight', 'F32', [64, 32], 5),
    tensor('layers.0.empty', 'F32', [0, 32], 6),
    tensor('layers.0.mlp.down.weight', 'F32', [32, 64], 9),
  ],
  'model-00003-of-00003.safetensors': [tensor('lm_head.weight', 'BF16', [128, 32], 7), tensor('layers.1.v.weight', 'F16', [3, 5], 8)],
};

const ALL = Object.values(SHARDS).flat();

function shardedFolder(): Record<string, MemoryFileContent> {
  const files: Record<string, MemoryFileContent> = { ...JSONS };
  const weightMap: Record<string, string> = {};
  for (const [shard, tensors] of Object.entries(SHARDS)) {
    files[shard] = writeSafetensors(tensors, { format: 'pt' });
    for (const t of tensors) weightMap[t.name] = shard;
  }
  files['model.safetensors.index.json'] = JSON.stringify({ metadata: {}, weight_map: weightMap });
  return files;
}

/** The same folder with its safetensors as Blobs, as the studio's Worker receives them. */
function asBlobs(files: Record<string, MemoryFileContent>): Record<string, MemoryFileContent> {
  return Object.fromEntries(
    Object.entries(files).map(([n, c]) => [n, n.endsWith('.safetensors') && c instanceof Uint8Array ? new Blob([c as Uint8Array<ArrayBuffer>]) : c]),
  );
}

function headerEnd(bytes: Uint8Array): number {
  if (bytes.length < 8) return 0;
  const v = new DataView(bytes.buffer, bytes.byteOffset, 8);
  return Math.min(bytes.length, 8 + v.getUint32(0, true) + v.getUint32(4, true) * 2 ** 32);
}

interface Handout {
  name: string;
  begin: number;
  end: number;
  whole: boolean;
  released: boolean;
}

/**
 * A FileSource that logs every read and counts the bytes it has handed out and not yet released.
 * A handout counts as released once the next `onWeight` (wrapped with `weigh`) returns: by then
 * the loader has had its chance to drop it.
 */
class Instrumented {
  handouts: Handout[] = [];
  held = 0;
  peak = 0;
  inWeight = false;
  readDuringWeight = false;
  readonly source: FileSource;

  constructor(inner: FileSource) {
    const hand = (name: string, begin: number, end: number, whole: boolean) => {
      if (this.inWeight) this.readDuringWeight = true;
      this.handouts.push({ name, begin, end, whole, released: false });
      this.held += end - begin;
      this.peak = Math.max(this.peak, this.held);
    };
    this.source = {
      location: inner.location,
      list: () => inner.list(),
      has: (name) => inner.has(name),
      size: (name) => inner.size(name),
      read: async (name) => {
        const bytes = await inner.read(name);
        hand(name, 0, bytes.length, true);
        return bytes;
      },
      readRange: async (name, begin, end) => {
        const bytes = await inner.readRange(name, begin, end);
        expect(bytes.length).toBe(end - begin);
        hand(name, begin, end, false);
        return bytes;
      },
    };
  }

  /** Wraps the test's onWeight: everything handed out before it was called is released when it returns. */
  weigh(onWeight: (w: RawWeight) => void | Promise<void>): (w: RawWeight) => Promise<void> {
    return async (w) => {
      const before = this.handouts.filter((h) => !h.released);
      this.inWeight = true;
      await onWeight(w);
      this.inWeight = false;
      for (const h of before) {
        h.released = true;
        this.held -= h.end - h.begin;
      }
    };
  }

  /** Bytes read from safetensors files, as ranges. */
  weightReads(): Handout[] {
    return this.handouts.filter((h) => h.name.endsWith('.safetensors'));
  }
}

/** Every weight from readWeights, widened to f32 for comparison, plus the progress reports. */
async function streamAll(source: FileSource, slowly = false) {
  const inst = new Instrumented(source);
  const folder = await openModelFolder(inst.source);
  // Everything open read: the JSON files whole, and the safetensors headers.
  const headerBytes = inst.held;
  const safetensorsHeaderBytes = inst.weightReads().reduce((a, h) => a + h.end - h.begin, 0);
  const weights = new Map<string, FloatRaw>();
  const progress: LoadProgress[] = [];
  await folder.readWeights(
    inst.weigh(async (w) => {
      expect(weights.has(w.name)).toBe(false);
      // Widened copies are kept; the loader's own buffers are not.
      weights.set(w.name, { ...(w as FloatRaw), data: (w as FloatRaw).data.slice() });
      if (slowly) await new Promise((r) => setTimeout(r, 2));
    }),
    (p) => progress.push(p),
  );
  return { inst, folder, headerBytes, safetensorsHeaderBytes, weights, progress };
}

function expectSameBits(a: Float32Array, b: Float32Array): void {
  expect(a.length).toBe(b.length);
  expect(Buffer.from(new Uint8Array(a.buffer, a.byteOffset, a.byteLength)).equals(Buffer.from(new Uint8Array(b.buffer, b.byteOffset, b.byteLength)))).toBe(true);
}

/**
 * Streams the folder and checks it against an independent eager read (each safetensors file
 * parsed whole and converted with tensorToFloat32): configs, dtype, tensor order, and every value.
 */
async function expectLikeEagerRead(make: () => FileSource): Promise<Awaited<ReturnType<typeof streamAll>>> {
  const loaded = await readEagerly(make());
  const streamed = await streamAll(make());
  const { folder, weights } = streamed;
  expect(folder.config).toEqual(loaded.config);
  expect(folder.tokenizerJson).toEqual(loaded.tokenizerJson);
  expect(folder.tokenizerConfig).toEqual(loaded.tokenizerConfig);
  expect(folder.generationConfig).toEqual(loaded.generationConfig);
  expect(folder.weightsDType).toBe(loaded.weightsDType);
  expect([...folder.tensors.keys()]).toEqual([...loaded.weights.keys()]);
  expect(new Set(weights.keys())).toEqual(new Set(loaded.weights.keys()));
  for (const [name, w] of loaded.weights) {
    const raw = weights.get(name)!;
    expect(raw.dtype).toBe(w.dtype);
    expect(raw.shape).toEqual(w.shape);
    expect(folder.tensors.get(name)).toEqual({ dtype: w.dtype, shape: w.shape });
    expect(raw.data).toBeInstanceOf(raw.dtype === 'F32' ? Float32Array : Uint16Array);
    expectSameBits(valuesToFloat32(raw.dtype, raw.data), w.data);
  }
  return streamed;
}

/** The most a loader may hold: one tensor plus the headers it read to open the folder. */
function expectOneTensorAtATime(streamed: Awaited<ReturnType<typeof streamAll>>): void {
  const { inst, headerBytes, safetensorsHeaderBytes, folder, progress } = streamed;
  const largest = Math.max(...[...folder.tensors.values()].map((t) => t.shape.reduce((a, d) => a * d, 1) * WIDTH[t.dtype as FloatDType]));
  expect(inst.peak).toBeLessThanOrEqual(headerBytes + largest);
  expect(inst.readDuringWeight).toBe(false);
  // No safetensors file was read whole, and each tensor's bytes were read exactly once.
  const reads = inst.weightReads();
  expect(reads.every((h) => !h.whole)).toBe(true);
  const total = progress.at(-1)!.totalBytes;
  expect(reads.reduce((a, h) => a + h.end - h.begin, 0)).toBe(safetensorsHeaderBytes + total);
}

describe('openModelFolder and readWeights on a sharded folder in memory', () => {
  const expectedTotal = ALL.reduce((a, t) => a + t.data.length * WIDTH[t.dtype], 0);

  it('streams the same values as an eager read, holding one tensor plus the headers at a time', async () => {
    const streamed = await expectLikeEagerRead(() => memoryFiles('models/m', shardedFolder()));
    expect(streamed.folder.weightsDType).toBe('BF16');
    expectOneTensorAtATime(streamed);
    // Well under one shard plus one tensor, which is what reading a shard whole would need.
    const shardSizes = Object.values(shardedFolder())
      .filter((c): c is Uint8Array => c instanceof Uint8Array)
      .map((c) => c.length);
    const largestTensor = Math.max(...ALL.map((t) => t.data.length * WIDTH[t.dtype]));
    expect(streamed.inst.peak).toBeLessThanOrEqual(Math.max(...shardSizes) + largestTensor);
    expect(streamed.inst.peak).toBeLessThan(Math.max(...shardSizes));
  });

  it('streams from Blobs, as the studio Worker receives a dropped or downloaded model', async () => {
    const streamed = await expectLikeEagerRead(() => memoryFiles('models/m', asBlobs(shardedFolder())));
    expectOneTensorAtATime(streamed);
  });

  it('hands over F32 values and the raw F16/BF16 bit patterns', async () => {
    const { weights } = await streamAll(memoryFiles('models/m', shardedFolder()));
    for (const t of ALL) {
      const w = weights.get(t.name)!;
      if (t.dtype === 'F32') expect([...w.data]).toEqual([...t.data]);
      else {
        const bits = t.dtype === 'BF16' ? float32ToBf16Bits : float32ToF16Bits;
        expect([...w.data]).toEqual([...t.data].map(bits));
      }
    }
  });

  it('awaits onWeight before reading the next tensor', async () => {
    const { inst, weights } = await streamAll(memoryFiles('models/m', shardedFolder()), true);
    expect(inst.readDuringWeight).toBe(false);
    expect(weights.size).toBe(ALL.length);
  });

  it('reports progress up to count of count, with totalBytes the sum of the tensor sizes', async () => {
    const { progress, folder } = await streamAll(memoryFiles('models/m', shardedFolder()));
    expect(progress.length).toBe(ALL.length);
    progress.forEach((p, i) => {
      expect(p.index).toBe(i + 1);
      expect(p.count).toBe(ALL.length);
      expect(p.totalBytes).toBe(expectedTotal);
      expect(folder.tensors.has(p.name)).toBe(true);
      if (i > 0) expect(p.bytes).toBeGreaterThanOrEqual(progress[i - 1].bytes);
    });
    expect(progress.at(-1)).toMatchObject({ index: ALL.length, count: ALL.length, bytes: expectedTotal, totalBytes: expectedTotal });
    expect(new Set(progress.map((p) => p.name))).toEqual(new Set(ALL.map((t) => t.name)));
  });

  it('takes only the tensors the index lists, as an eager read does', async () => {
    const files = shardedFolder();
    files['model-00003-of-00003.safetensors'] = writeSafetensors([
      ...SHARDS['model-00003-of-00003.safetensors'],
      { name: 'unlisted', dtype: 'F32', shape: [2], data: new Float32Array([1, 2]) },
    ]);
    const streamed = await expectLikeEagerRead(() => memoryFiles('models/m', files));
    expect(streamed.weights.has('unlisted')).toBe(false);
  });

  it('reads a single model.safetensors in file order', async () => {
    const files = { ...JSONS, 'model.safetensors': writeSafetensors([ALL[2], ALL[0], ALL[4]]) };
    const streamed = await expectLikeEagerRead(() => memoryFiles('models/m', files));
    expectOneTensorAtATime(streamed);
    const begins = streamed.inst.weightReads().map((h) => h.begin);
    expect(begins).toEqual([...begins].sort((a, b) => a - b));
  });
});

/** A shard whose header is written by hand, so it can lie; the data is `dataLength` counting bytes. */
function rawShard(header: Record<string, unknown>, dataLength: number): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + dataLength);
  new DataView(out.buffer).setUint32(0, json.length, true);
  out.set(json, 8);
  for (let i = 0; i < dataLength; i++) out[8 + json.length + i] = i & 0xff;
  return out;
}

describe('a safetensors header that lies is refused before any tensor data is read', () => {
  const BAD = 'model-00002-of-00003.safetensors';
  const FILE = `models/m/${BAD}`;
  const t = (dtype: string, shape: number[], begin: number, end: number) => ({ dtype, shape, data_offsets: [begin, end] });
  const names = SHARDS[BAD].map((x) => x.name);
  const longHeader = () => {
    const bytes = rawShard({ [names[0]]: t('F32', [2], 0, 8) }, 8);
    new DataView(bytes.buffer).setUint32(0, 1_000_000, true);
    return bytes;
  };

  // Each refusal is one exact sentence after the file's name.
  const cases: [string, () => Uint8Array, string][] = [
    ['offsets past the end of the file', () => rawShard({ [names[0]]: t('F32', [2], 0, 8), [names[1]]: t('F32', [4], 8, 24) }, 16),
      'tensor "layers.0.k.weight" has data_offsets [8, 24) past the end of the data (16 bytes); the file is truncated.'],
    ['overlapping tensors', () => rawShard({ [names[0]]: t('F32', [4], 0, 16), [names[1]]: t('F32', [4], 8, 24) }, 24),
      'tensors "layers.0.q.weight" [0, 16) and "layers.0.k.weight" [8, 24) overlap.'],
    ['a hole between tensors', () => rawShard({ [names[0]]: t('F32', [2], 0, 8), [names[1]]: t('F32', [2], 16, 24) }, 24),
      'data bytes [8, 16) after tensor "layers.0.q.weight" belong to no tensor (a hole before "layers.0.k.weight").'],
    ['bytes at the end that belong to no tensor', () => rawShard({ [names[0]]: t('F32', [2], 0, 8) }, 12),
      'data bytes [8, 12) at the end of the file belong to no tensor.'],
    ['data_offsets that disagree with dtype × shape', () => rawShard({ [names[0]]: t('BF16', [3, 4], 0, 16) }, 16),
      'tensor "layers.0.q.weight" has data_offsets [0, 16) but BF16 × [3, 4] needs 24 bytes.'],
    ['a header longer than the file', longHeader,
      'the header length says 1000000 bytes but the file has only 78 bytes after it; the file is truncated or not safetensors.'],
    ['a file too short for a header', () => new Uint8Array(5), 'the file is 5 bytes long, too short for a safetensors header (at least 8 bytes).'],
    ['a listed tensor stored as an integer type', () => rawShard(Object.fromEntries(names.map((n, i) => [n, i === 0 ? t('I64', [2], 0, 16) : t('F32', [0], 16, 16)])), 16),
      'tensor "layers.0.q.weight" is stored as I64; only F32, F16 and BF16 tensors are supported.'],
  ];

  it.each(cases)('%s', async (_, bad, message) => {
    const lying = bad();
    for (const wrap of [(f: Record<string, MemoryFileContent>) => f, asBlobs]) {
      const files = shardedFolder();
      files[BAD] = lying;
      const inst = new Instrumented(memoryFiles('models/m', wrap(files)));
      let err: unknown = null;
      try {
        await openModelFolder(inst.source);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(UserError);
      const { message: text, file } = err as UserError;
      expect(text).toBe(`${FILE}: ${message}`);
      expect(text).not.toContain('\n');
      expect(file).toBe(FILE);
      // Only headers were read: from every shard, nothing past its first 8 + header-length bytes.
      for (const h of inst.weightReads()) {
        const bytes = files[h.name] as Uint8Array;
        expect(h.whole).toBe(false);
        expect(h.end).toBeLessThanOrEqual(headerEnd(bytes));
      }
      // An eager read (each shard parsed whole) refuses the same folder with the same sentence.
      let eagerErr: unknown = null;
      try {
        await readEagerly(memoryFiles('models/m', files));
      } catch (e) {
        eagerErr = e;
      }
      expect(eagerErr).toBeInstanceOf(UserError);
      expect((eagerErr as UserError).message).toBe(text);
      expect((eagerErr as UserError).file).toBe(FILE);
    }
  });
});

describe('ranges from memoryFiles', () => {
  it('reads ranges of bytes, text and Blobs, each in a buffer of its own', async () => {
    const source = memoryFiles('m', { a: new Uint8Array([1, 2, 3, 4]), b: 'héllo', c: new Blob([new Uint8Array([5, 6, 7])]) });
    expect(await source.size('a')).toBe(4);
    expect(await source.size('b')).toBe(6);
    expect(await source.size('c')).toBe(3);
    const a = await source.readRange('a', 1, 3);
    expect([...a]).toEqual([2, 3]);
    expect(a.buffer.byteLength).toBe(2);
    expect(new TextDecoder().decode(await source.readRange('b', 0, 3))).toBe('hé');
    expect([...(await source.readRange('c', 1, 3))]).toEqual([6, 7]);
    expect([...(await source.read('c'))]).toEqual([5, 6, 7]);
    await expect(source.readRange('c', 2, 4)).rejects.toThrow(/outside the file \(3 bytes\)/);
    await expect(source.readRange('a', -1, 2)).rejects.toThrow(/outside the file/);
    await expect(source.size('nope')).rejects.toThrow(/no file nope/);
  });
});

describe('nodeFolder', () => {
  const dirs: string[] = [];
  afterAll(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it('streams a sharded folder from disk like an eager read', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'streaming-'));
    dirs.push(dir);
    for (const [name, content] of Object.entries(shardedFolder())) writeFileSync(join(dir, name), content as Uint8Array | string);
    const streamed = await expectLikeEagerRead(() => nodeFolder(dir));
    expectOneTensorAtATime(streamed);
    expect(streamed.progress.at(-1)!.index).toBe(ALL.length);
  });

  it('streams stories260K like an eager read', async () => {
    const streamed = await expectLikeEagerRead(() => nodeFolder(STORIES_DIR));
    expectOneTensorAtATime(streamed);
    expect(streamed.folder.tensors.size).toBe(47);
    expect(streamed.folder.weightsDType).toBe('F32');
    expect(streamed.folder.tensors.get('model.embed_tokens.weight')).toEqual({ dtype: 'F32', shape: [512, 64] });
    const last = streamed.progress.at(-1)!;
    expect(last).toMatchObject({ index: 47, count: 47 });
    expect(last.bytes).toBe(last.totalBytes);
  });
});
