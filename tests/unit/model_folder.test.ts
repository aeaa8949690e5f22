import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { nodeFolder, writeFileAtomic, writeFolderAtomic } from '../../src/cli/fs_files.ts';
import { UserError } from '../../src/engine/errors.ts';
import { memoryFiles } from '../../src/engine/io/files.ts';
import { openModelFolder } from '../../src/engine/io/model_folder.ts';
import { bf16BitsToFloat32, writeSafetensors } from '../../src/engine/io/safetensors.ts';
import { readAllWeights, readEagerly } from './helpers/weights.ts';

const STORIES = fileURLToPath(new URL('../../../shared/models/stories260K/', import.meta.url));

const JSONS = {
  'config.json': JSON.stringify({ model_type: 'llama', hidden_size: 4 }),
  'tokenizer.json': JSON.stringify({ model: { type: 'BPE' } }),
  'tokenizer_config.json': JSON.stringify({ eos_token: '</s>' }),
};

const f32 = (name: string, values: number[]) => ({
  name,
  dtype: 'F32' as const,
  shape: [values.length],
  data: new Float32Array(values),
});

/** Two shards and the index that maps a.weight and b.weight to the first, c.weight to the second. */
function shardedFiles(): Record<string, Uint8Array | string> {
  return {
    ...JSONS,
    'model-00001-of-00002.safetensors': writeSafetensors([f32('a.weight', [1, 2]), f32('b.weight', [3])]),
    'model-00002-of-00002.safetensors': writeSafetensors([f32('c.weight', [4, 5, 6])]),
    'model.safetensors.index.json': JSON.stringify({
      metadata: { total_size: 24 },
      weight_map: {
        'a.weight': 'model-00001-of-00002.safetensors',
        'b.weight': 'model-00001-of-00002.safetensors',
        'c.weight': 'model-00002-of-00002.safetensors',
      },
    }),
  };
}

async function userError(promise: Promise<unknown>): Promise<UserError> {
  try {
    await promise;
  } catch (e) {
    expect(e).toBeInstanceOf(UserError);
    const err = e as UserError;
    expect(err.message).toContain('models/m/');
    expect(err.message).not.toContain('\n');
    expect(err.message.endsWith('.')).toBe(true);
    return err;
  }
  throw new Error('expected a UserError');
}

/** The sentence JSON.parse gives for `text`, as the folder reader quotes it. */
function jsonError(text: string): string {
  try {
    JSON.parse(text);
  } catch (e) {
    return (e as Error).message;
  }
  throw new Error('expected invalid JSON');
}

/** A single-file safetensors whose header stores tensor "w" as `dtype` (same byte width as F32). */
function storedAs(dtype: 'I32' | 'U32'): Uint8Array {
  const bytes = writeSafetensors([f32('w', [1, 2])]);
  const at = Buffer.from(bytes).indexOf('"F32"');
  expect(at).toBeGreaterThan(8);
  bytes.set(new TextEncoder().encode(`"${dtype}"`), at);
  return bytes;
}

describe('openModelFolder + readWeights, every weight as f32', () => {
  it('loads stories260K from disk', async () => {
    expect(existsSync(join(STORIES, 'config.json'))).toBe(true);
    const { folder, weights } = await readAllWeights(nodeFolder(STORIES));
    expect(folder.config.hidden_size).toBe(64);
    expect(folder.tokenizerJson.model).toBeTypeOf('object');
    expect(folder.tokenizerConfig).toBeTypeOf('object');
    expect(folder.generationConfig).not.toBeNull();
    expect(weights.size).toBe(47);
    expect(folder.weightsDType).toBe('F32');
    const emb = weights.get('model.embed_tokens.weight')!;
    expect(emb.shape).toEqual([512, 64]);
    expect(emb.data).toBeInstanceOf(Float32Array);
    expect(emb.data.length).toBe(512 * 64);
  });

  it('loads a sharded folder through its index', async () => {
    const { folder, weights } = await readAllWeights(memoryFiles('models/m', shardedFiles()));
    expect([...weights.keys()].sort()).toEqual(['a.weight', 'b.weight', 'c.weight']);
    expect([...weights.get('c.weight')!.data]).toEqual([4, 5, 6]);
    expect(weights.get('a.weight')!.shape).toEqual([2]);
    expect(folder.generationConfig).toBeNull();
    expect(folder.weightsDType).toBe('F32');
  });

  it('refuses a missing shard', async () => {
    const files = shardedFiles();
    delete files['model-00002-of-00002.safetensors'];
    const err = await userError(readAllWeights(memoryFiles('models/m', files)));
    expect(err.message).toBe(
      'models/m/model-00002-of-00002.safetensors is missing: model.safetensors.index.json lists it as the shard holding "c.weight".',
    );
  });

  it('refuses an index that names a tensor its shard does not hold', async () => {
    const files = shardedFiles();
    files['model-00002-of-00002.safetensors'] = writeSafetensors([f32('d.weight', [4, 5, 6])]);
    const err = await userError(readAllWeights(memoryFiles('models/m', files)));
    expect(err.message).toBe(
      'models/m/model-00002-of-00002.safetensors has no tensor "c.weight", which model.safetensors.index.json says it holds.',
    );
  });

  it('refuses a folder with only PyTorch pickle weights', async () => {
    const files = { ...JSONS, 'pytorch_model.bin': new Uint8Array([0x80, 0x02]) };
    const err = await userError(readAllWeights(memoryFiles('models/m', files)));
    expect(err.message).toBe(
      'models/m/pytorch_model.bin: PyTorch pickle weights are not supported; convert the model to safetensors (model.safetensors or sharded with model.safetensors.index.json).',
    );
  });

  it('refuses a folder without tokenizer.json', async () => {
    const { 'tokenizer.json': _, ...rest } = JSONS;
    const files = { ...rest, 'model.safetensors': writeSafetensors([f32('w', [1])]) };
    const err = await userError(readAllWeights(memoryFiles('models/m', files)));
    expect(err.message).toBe(
      'models/m/tokenizer.json is missing: a model folder needs config.json, tokenizer.json, tokenizer_config.json and model.safetensors (or model.safetensors.index.json with its shards).',
    );
    expect(err.file).toBe('models/m/tokenizer.json');
  });

  it('refuses a folder without weights', async () => {
    const err = await userError(readAllWeights(memoryFiles('models/m', JSONS)));
    expect(err.message).toMatch(/^models\/m\/model\.safetensors is missing: /);
  });

  it('refuses a config.json that is not valid JSON', async () => {
    const files = { ...JSONS, 'config.json': '{"hidden_size": 4,}', 'model.safetensors': writeSafetensors([f32('w', [1])]) };
    const err = await userError(readAllWeights(memoryFiles('models/m', files)));
    expect(err.message).toMatch(/^models\/m\/config\.json is not valid JSON \(.*position.*\)\.$/);
  });

  it('names the file of a corrupt safetensors', async () => {
    const files = { ...JSONS, 'model.safetensors': new Uint8Array(4) };
    const err = await userError(readAllWeights(memoryFiles('models/m', files)));
    expect(err.message).toMatch(/^models\/m\/model\.safetensors: /);
  });

  it('converts BF16 weights to the right f32 values and reports BF16', async () => {
    const values = [1, -2.5, 0.1, 3.14159, -1e-3];
    const files = {
      ...JSONS,
      'generation_config.json': JSON.stringify({ eos_token_id: [2, 3] }),
      'model.safetensors': writeSafetensors([
        { name: 'big', dtype: 'BF16', shape: [5], data: new Float32Array(values) },
        f32('small', [1]),
      ]),
    };
    const { folder, weights } = await readAllWeights(memoryFiles('models/m', files));
    expect(folder.weightsDType).toBe('BF16');
    expect(folder.generationConfig).toEqual({ eos_token_id: [2, 3] });
    const big = weights.get('big')!;
    expect(big.dtype).toBe('BF16');
    // bf16 keeps 8 significant bits: 0.1 → 0x3DCD, π → 0x4049, -1e-3 → 0xBA83.
    expect([...big.data]).toEqual([1, -2.5, bf16BitsToFloat32(0x3dcd), bf16BitsToFloat32(0x4049), bf16BitsToFloat32(0xba83)]);
    expect(big.data[2]).toBeCloseTo(0.1, 3);
    expect(big.data[3]).toBeCloseTo(3.140625, 6);
  });
});

describe('openModelFolder refuses a bad folder with one exact sentence naming the file', () => {
  const SHARD2 = 'models/m/model-00002-of-00002.safetensors';
  const INDEX = 'models/m/model.safetensors.index.json';
  const NEEDS =
    'a model folder needs config.json, tokenizer.json, tokenizer_config.json and model.safetensors (or model.safetensors.index.json with its shards)';
  const cases: [string, () => Record<string, Uint8Array | string>, () => string, string][] = [
    ['a missing shard', () => {
      const files = shardedFiles();
      delete files['model-00002-of-00002.safetensors'];
      return files;
    }, () => `${SHARD2} is missing: model.safetensors.index.json lists it as the shard holding "c.weight".`, SHARD2],
    ['a tensor the index names but its shard lacks', () => ({
      ...shardedFiles(),
      'model-00002-of-00002.safetensors': writeSafetensors([f32('d.weight', [4, 5, 6])]),
    }), () => `${SHARD2} has no tensor "c.weight", which model.safetensors.index.json says it holds.`, SHARD2],
    ['an index without a weight_map', () => ({ ...shardedFiles(), 'model.safetensors.index.json': '{"metadata": {}}' }),
      () => `${INDEX} has no "weight_map" object (tensor name → shard file).`, INDEX],
    ['an index with an empty weight_map', () => ({ ...shardedFiles(), 'model.safetensors.index.json': '{"weight_map": {}}' }),
      () => `${INDEX} lists no tensors in "weight_map".`, INDEX],
    ['an index entry that is not a file name', () => ({ ...shardedFiles(), 'model.safetensors.index.json': '{"weight_map": {"a.weight": 3}}' }),
      () => `${INDEX}: "weight_map" entry "a.weight" is not a shard file name.`, INDEX],
    ['an index that is not JSON', () => ({ ...shardedFiles(), 'model.safetensors.index.json': '{' }),
      () => `${INDEX} is not valid JSON (${jsonError('{')}).`, INDEX],
    ['pickle weights only', () => ({ ...JSONS, 'pytorch_model.bin': new Uint8Array([0x80, 0x02]) }),
      () => 'models/m/pytorch_model.bin: PyTorch pickle weights are not supported; convert the model to safetensors (model.safetensors or sharded with model.safetensors.index.json).',
      'models/m/pytorch_model.bin'],
    ['no tokenizer.json', () => {
      const { 'tokenizer.json': _, ...rest } = JSONS;
      return { ...rest, 'model.safetensors': writeSafetensors([f32('w', [1])]) };
    }, () => `models/m/tokenizer.json is missing: ${NEEDS}.`, 'models/m/tokenizer.json'],
    ['no weights', () => ({ ...JSONS }), () => `models/m/model.safetensors is missing: ${NEEDS}.`, 'models/m/model.safetensors'],
    ['a config.json that is not JSON', () => ({ ...JSONS, 'config.json': '{"hidden_size": 4,}', 'model.safetensors': writeSafetensors([f32('w', [1])]) }),
      () => `models/m/config.json is not valid JSON (${jsonError('{"hidden_size": 4,}')}).`, 'models/m/config.json'],
    ['a corrupt safetensors', () => ({ ...JSONS, 'model.safetensors': new Uint8Array(4) }),
      () => 'models/m/model.safetensors: the file is 4 bytes long, too short for a safetensors header (at least 8 bytes).',
      'models/m/model.safetensors'],
    ['a safetensors with no tensors', () => ({ ...JSONS, 'model.safetensors': writeSafetensors([]) }),
      () => 'models/m/model.safetensors holds no tensors.', 'models/m/model.safetensors'],
    ['data bytes that belong to no tensor (a text round trip widened them)', () => {
      const good = writeSafetensors([f32('w', [1, 2])]);
      // 1.0 is 00 00 80 3F: the 0x80 is not UTF-8, so decoding and re-encoding adds two bytes.
      const text = new TextDecoder().decode(good).replace('"F32"', '"I32"');
      return { ...JSONS, 'model.safetensors': new TextEncoder().encode(text) };
    }, () => 'models/m/model.safetensors: data bytes [8, 10) at the end of the file belong to no tensor.', 'models/m/model.safetensors'],
    ['an integer tensor', () => ({ ...JSONS, 'model.safetensors': storedAs('I32') }),
      () => 'models/m/model.safetensors: tensor "w" is stored as I32; only F32, F16 and BF16 tensors are supported.',
      'models/m/model.safetensors'],
  ];
  it.each(cases)('%s', async (_, build, message, file) => {
    const got = await userError(openModelFolder(memoryFiles('models/m', build())));
    expect(got.message).toBe(message());
    expect(got.file).toBe(file);
  });

  it('refuses an integer tensor in a shard with the sentence an eager parse of that shard gives', async () => {
    const files = { ...shardedFiles(), 'model-00002-of-00002.safetensors': writeSafetensors([f32('c.weight', [4, 5, 6])]) };
    const shard = files['model-00002-of-00002.safetensors'] as Uint8Array;
    shard.set(new TextEncoder().encode('"U32"'), Buffer.from(shard).indexOf('"F32"'));
    const expected = `${SHARD2}: tensor "c.weight" is stored as U32; only F32, F16 and BF16 tensors are supported.`;
    const got = await userError(openModelFolder(memoryFiles('models/m', files)));
    expect(got.message).toBe(expected);
    expect(got.file).toBe(SHARD2);
    await expect(readEagerly(memoryFiles('models/m', files))).rejects.toThrow(expected);
  });

  it('opens a sharded folder with the same configs, tensor order and dtype as an eager read', async () => {
    const eager = await readEagerly(memoryFiles('models/m', shardedFiles()));
    const open = await openModelFolder(memoryFiles('models/m', shardedFiles()));
    expect([...open.tensors.keys()]).toEqual(['a.weight', 'b.weight', 'c.weight']);
    expect([...open.tensors.keys()]).toEqual([...eager.weights.keys()]);
    expect([...open.tensors.values()]).toEqual([...eager.weights.values()].map((w) => ({ dtype: w.dtype, shape: w.shape })));
    expect(open.weightsDType).toBe('F32');
    expect(open.weightsDType).toBe(eager.weightsDType);
    expect(open.config).toEqual(eager.config);
    expect(open.tokenizerJson).toEqual(eager.tokenizerJson);
    expect(open.tokenizerConfig).toEqual(eager.tokenizerConfig);
    expect(open.generationConfig).toBeNull();
    // And the values streamed are those the eager read converts.
    const { weights } = await readAllWeights(memoryFiles('models/m', shardedFiles()));
    expect(weights).toEqual(eager.weights);
  });
});

describe('node filesystem', () => {
  let root: string;
  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), 'fs-files-'));
  });
  afterEach(() => {
    rmSync(root, { recursive: true, force: true });
  });

  it('nodeFolder lists recursively with / and follows file symlinks', async () => {
    mkdirSync(join(root, 'm/sub/deeper'), { recursive: true });
    writeFileSync(join(root, 'm/a.json'), '{}');
    writeFileSync(join(root, 'm/sub/deeper/b.bin'), new Uint8Array([1, 2, 3]));
    writeFileSync(join(root, 'blob'), 'linked');
    symlinkSync(join(root, 'blob'), join(root, 'm/link.txt'));
    const folder = nodeFolder(join(root, 'm'));
    expect(folder.location).toBe(join(root, 'm'));
    expect(folder.list()).toEqual(['a.json', 'link.txt', 'sub/deeper/b.bin']);
    expect(folder.has('sub/deeper/b.bin')).toBe(true);
    expect(folder.has('sub')).toBe(false);
    expect(folder.has('../blob')).toBe(false);
    const bytes = await folder.read('sub/deeper/b.bin');
    expect(Object.getPrototypeOf(bytes)).toBe(Uint8Array.prototype);
    expect([...bytes]).toEqual([1, 2, 3]);
    expect(new TextDecoder().decode(await folder.read('link.txt'))).toBe('linked');
    await expect(folder.read('../blob')).rejects.toThrow(/outside the folder/);
  });

  it('nodeFolder reads sizes and byte ranges, inside the folder only', async () => {
    mkdirSync(join(root, 'm'));
    writeFileSync(join(root, 'm/w.bin'), new Uint8Array([10, 11, 12, 13, 14, 15]));
    writeFileSync(join(root, 'secret'), 'secret');
    symlinkSync(join(root, 'm/w.bin'), join(root, 'm/link.bin'));
    const folder = nodeFolder(join(root, 'm'));
    expect(await folder.size('w.bin')).toBe(6);
    expect(await folder.size('link.bin')).toBe(6);
    const range = await folder.readRange('w.bin', 2, 5);
    expect(Object.getPrototypeOf(range)).toBe(Uint8Array.prototype);
    expect(range.byteOffset).toBe(0);
    expect(range.buffer.byteLength).toBe(3);
    expect([...range]).toEqual([12, 13, 14]);
    expect([...(await folder.readRange('link.bin', 0, 6))]).toEqual([10, 11, 12, 13, 14, 15]);
    expect((await folder.readRange('w.bin', 6, 6)).length).toBe(0);
    await expect(folder.readRange('w.bin', 4, 7)).rejects.toThrow(/outside the file \(6 bytes\)/);
    await expect(folder.readRange('w.bin', 3, 2)).rejects.toThrow(/outside the file/);
    await expect(folder.size('../secret')).rejects.toThrow(/outside the folder/);
    await expect(folder.readRange('../secret', 0, 1)).rejects.toThrow(/outside the folder/);
  });

  it('writeFolderAtomic replaces an existing folder completely', async () => {
    const dir = join(root, 'out');
    mkdirSync(join(dir, 'stale'), { recursive: true });
    writeFileSync(join(dir, 'old.txt'), 'old');
    writeFileSync(join(dir, 'stale/x'), 'x');
    await writeFolderAtomic(dir, { 'new.txt': 'new', 'nested/w.bin': new Uint8Array([9, 8]) });
    expect(nodeFolder(dir).list()).toEqual(['nested/w.bin', 'new.txt']);
    expect(readFileSync(join(dir, 'new.txt'), 'utf8')).toBe('new');
    expect([...readFileSync(join(dir, 'nested/w.bin'))]).toEqual([9, 8]);
    expect(readdirSync(root)).toEqual(['out']);
  });

  it('writeFolderAtomic creates a folder that did not exist', async () => {
    const dir = join(root, 'a/b/out');
    await writeFolderAtomic(dir, { 'f.txt': 'hi' });
    expect(readFileSync(join(dir, 'f.txt'), 'utf8')).toBe('hi');
  });

  it('writeFolderAtomic leaves the old folder intact when a write fails', async () => {
    const dir = join(root, 'out');
    mkdirSync(dir);
    writeFileSync(join(dir, 'old.txt'), 'old');
    await expect(writeFolderAtomic(dir, { 'good.txt': 'fine', 'bad\0name': 'boom' })).rejects.toThrow();
    expect(nodeFolder(dir).list()).toEqual(['old.txt']);
    expect(readFileSync(join(dir, 'old.txt'), 'utf8')).toBe('old');
    expect(readdirSync(root)).toEqual(['out']);
  });

  it('writeFolderAtomic refuses names that leave the folder', async () => {
    await expect(writeFolderAtomic(join(root, 'out'), { '../escape': 'x' })).rejects.toThrow(/leaves the folder/);
    expect(readdirSync(root)).toEqual([]);
  });

  it('writeFileAtomic replaces a file and leaves no temporary behind', async () => {
    const file = join(root, 'state.json');
    writeFileSync(file, 'old');
    await writeFileAtomic(file, '{"step": 2}');
    expect(readFileSync(file, 'utf8')).toBe('{"step": 2}');
    await writeFileAtomic(file, new Uint8Array([0x41]));
    expect(readFileSync(file, 'utf8')).toBe('A');
    expect(readdirSync(root)).toEqual(['state.json']);
  });

  it('writeFileAtomic removes its temporary file when the rename fails', async () => {
    // Renaming a file over a non-empty directory fails after the temporary file is written.
    mkdirSync(join(root, 'state.json'));
    writeFileSync(join(root, 'state.json/keep'), 'kept');
    await expect(writeFileAtomic(join(root, 'state.json'), 'x')).rejects.toThrow();
    expect(readdirSync(root)).toEqual(['state.json']);
    expect(readFileSync(join(root, 'state.json/keep'), 'utf8')).toBe('kept');
  });
});
