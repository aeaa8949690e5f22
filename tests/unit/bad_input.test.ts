// What people get wrong, through the same entry points the CLI and the Worker use (prepareRun,
// loadModel): each mistake must end as one UserError sentence naming the file (and the line or
// field), with no stack trace in it, and must leave no tensor behind.
import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { UserError } from '../../src/engine/errors.ts';
import { memoryFiles } from '../../src/engine/io/files.ts';
import { parseSafetensors, tensorToFloat32, writeSafetensors, type TensorToWrite } from '../../src/engine/io/safetensors.ts';
import { parseRecipe, parseRecipeJson, applyOverrides, type RecipeInput } from '../../src/engine/recipe.ts';
import { loadModel, prepareRun } from '../../src/engine/run.ts';
import { createJsonlParser, parseDatasetText } from '../../src/engine/data/dataset.ts';
import { nonFiniteAdapterWeight, nonFiniteWeight } from '../../src/engine/model/check.ts';
import { float32ToBits16, packWeight16 } from '../../src/engine/backend/kernels/linear.ts';
import { wrongTextEncoding } from '../../src/engine/errors.ts';
import { buildTinyModelFolder } from './helpers/tiny_model.ts';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

const TINY = buildTinyModelFolder({ architecture: 'LlamaForCausalLM', tokenizer: 'stories', seed: 5 });
const GOOD_ROWS = ['{"text": "Tom had a red ball."}', '{"text": "Lily saw a big dog."}'].join('\n');

function recipe(overrides: Partial<RecipeInput> = {}) {
  return parseRecipe({ model: 'tiny', train_file: 'train.jsonl', max_steps: 1, ...overrides }, 'recipe.json');
}

function withConfig(change: (config: Record<string, unknown>) => void): Record<string, Uint8Array | string> {
  const config = JSON.parse(TINY['config.json'] as string);
  change(config);
  return { ...TINY, 'config.json': JSON.stringify(config) };
}

/** The tiny model's weights rewritten by `change`, as a new model.safetensors. */
function withTensors(change: (tensors: TensorToWrite[]) => void): Record<string, Uint8Array | string> {
  const st = parseSafetensors(TINY['model.safetensors'] as Uint8Array, 'model.safetensors');
  const tensors: TensorToWrite[] = [...st.tensors].map(([name, info]) => ({ name, dtype: 'F32', shape: info.shape, data: tensorToFloat32(st, name) }));
  change(tensors);
  return { ...TINY, 'model.safetensors': writeSafetensors(tensors, { format: 'pt' }) };
}

/** A raw safetensors file from a header object and a data length (filled with zeros). */
function rawSafetensors(header: Record<string, unknown>, dataBytes: number): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + dataBytes);
  new DataView(out.buffer).setUint32(0, json.length, true);
  out.set(json, 8);
  return out;
}

/** Runs `attempt`, which must fail with a UserError; checks the message is one clean sentence and nothing leaked. */
async function userError(attempt: () => Promise<unknown>): Promise<UserError> {
  const before = tf.memory().numTensors;
  const error = await attempt().then(
    () => null,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(UserError);
  const message = (error as UserError).message;
  expect(message).not.toMatch(/\n|\bat .*:\d+:\d+|\.ts:\d+|node_modules|Error:/);
  expect(message).toMatch(/\.$/);
  expect(tf.memory().numTensors).toBe(before);
  return error as UserError;
}

function train(files: Record<string, Uint8Array | string>, text = GOOD_ROWS, overrides: Partial<RecipeInput> = {}) {
  return prepareRun(recipe(overrides), { model: memoryFiles('models/tiny', files), train: { text, file: 'train.jsonl' } });
}

describe('a bad model folder', () => {
  it('with an unsupported architecture names config.json and lists the supported ones', async () => {
    const e = await userError(() => train(withConfig((c) => (c.architectures = ['GPT2LMHeadModel']))));
    expect(e.message).toBe(
      'models/tiny/config.json: architecture GPT2LMHeadModel is not supported; supported architectures are LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM.',
    );
    expect(e.file).toBe('models/tiny/config.json');
  });

  it('with only PyTorch .bin weights is refused before anything is read', async () => {
    const { 'model.safetensors': _, ...rest } = TINY;
    const e = await userError(() => loadModel(memoryFiles('models/tiny', { ...rest, 'pytorch_model.bin': new Uint8Array(64) })));
    expect(e.message).toBe(
      'models/tiny/pytorch_model.bin: PyTorch pickle weights are not supported; convert the model to safetensors (model.safetensors or sharded with model.safetensors.index.json).',
    );
  });

  it('with a model.safetensors whose header length runs past the end of the file', async () => {
    const cut = (TINY['model.safetensors'] as Uint8Array).slice(0, 100);
    const e = await userError(() => train({ ...TINY, 'model.safetensors': cut }));
    expect(e.message).toMatch(/^models\/tiny\/model\.safetensors: the header length says \d+ bytes but the file has only 92 bytes after it; the file is truncated or not safetensors\.$/);
    expect(e.file).toBe('models/tiny/model.safetensors');
  });

  it('with a model.safetensors cut short in its data', async () => {
    const bytes = TINY['model.safetensors'] as Uint8Array;
    const e = await userError(() => train({ ...TINY, 'model.safetensors': bytes.slice(0, bytes.length - 10) }));
    expect(e.message).toMatch(/^models\/tiny\/model\.safetensors: tensor "[^"]+" has data_offsets \[\d+, \d+\) past the end of the data \(\d+ bytes\); the file is truncated\.$/);
  });

  it('with tensors whose data offsets overlap', async () => {
    const st = rawSafetensors(
      {
        'model.embed_tokens.weight': { dtype: 'F32', shape: [4], data_offsets: [0, 16] },
        'model.norm.weight': { dtype: 'F32', shape: [4], data_offsets: [8, 24] },
      },
      24,
    );
    const e = await userError(() => train({ ...TINY, 'model.safetensors': st }));
    expect(e.message).toBe('models/tiny/model.safetensors: tensors "model.embed_tokens.weight" [0, 16) and "model.norm.weight" [8, 24) overlap.');
    expect(e.field).toBe('model.norm.weight');
  });

  it('with a config.json missing hidden_size', async () => {
    const e = await userError(() => train(withConfig((c) => delete c.hidden_size)));
    expect(e.message).toBe('models/tiny/config.json: "hidden_size" is missing; LlamaForCausalLM needs it.');
    expect(e.field).toBe('hidden_size');
  });

  it('with a weight whose shape disagrees with config.json', async () => {
    const files = withTensors((tensors) => {
      const q = tensors.find((t) => t.name === 'model.layers.1.self_attn.q_proj.weight')!;
      q.shape = [32, 8];
    });
    const e = await userError(() => train(files));
    expect(e.message).toBe('models/tiny/model.safetensors: weight model.layers.1.self_attn.q_proj.weight has shape [32,8] but config.json implies [16,16].');
    expect(e.field).toBe('model.layers.1.self_attn.q_proj.weight');
  });

  it('with a weight missing', async () => {
    const e = await userError(() => train(withTensors((tensors) => tensors.splice(tensors.findIndex((t) => t.name === 'model.norm.weight'), 1))));
    expect(e.message).toBe('models/tiny/model.safetensors: weight model.norm.weight is missing; a LlamaForCausalLM with this config.json needs it.');
  });
});

describe('a bad dataset', () => {
  it('with a malformed line 3 names the file and the line', async () => {
    const text = `${GOOD_ROWS}\n{"text": "unfinished\n{"text": "fine"}\n`;
    const e = await userError(() => train(TINY, text));
    expect(e.message).toMatch(/^train\.jsonl, line 3: not valid JSON \(.+\)\.$/);
    expect(e.file).toBe('train.jsonl');
    expect(e.line).toBe(3);
  });

  it('with a row missing its completion names the line and the field', async () => {
    const text = ['{"prompt": "Who had a ball?", "completion": " Tom."}', '{"prompt": "Who saw a dog?"}', '{"prompt": "Who?", "completion": " Sue."}'].join('\n');
    const e = await userError(() => train(TINY, text));
    expect(e.message).toBe('train.jsonl, line 2: "completion" is missing; prompt/completion rows need both.');
    expect(e.line).toBe(2);
  });

  it('that is empty', async () => {
    for (const text of ['', '\n\n  \n']) {
      const e = await userError(() => train(TINY, text));
      expect(e.message).toMatch(/^train\.jsonl has no rows: it is empty or holds only blank lines; accepted rows are \{"text": "\.\.\."\}; /);
      expect(e.file).toBe('train.jsonl');
    }
  });

  it('with no token left to train on after truncation to max_length 1', async () => {
    const e = await userError(() => train(TINY, GOOD_ROWS, { max_length: 1 }));
    // Each text row keeps only <s>, whose label the shifted loss never reads.
    expect(e.message).toBe('train.jsonl: no row has a token left to train on (2 dropped, e.g. line 1: its 11 tokens are cut to max_length 1, but training starts at token 2).');
    expect(e.file).toBe('train.jsonl');
  });

  it('where every completion is cut off by max_length', async () => {
    const text = ['{"prompt": "Once upon a time there was a girl", "completion": " named Lily."}'].join('\n');
    const e = await userError(() => train(TINY, text, { max_length: 4 }));
    expect(e.message).toBe('train.jsonl: no row has a token left to train on (1 dropped, e.g. line 1: its 15 tokens are cut to max_length 4, but training starts at token 12).');
  });
});

/** What a UTF-16/UTF-32 file becomes when it is read as UTF-8, as the CLI and the browser read it. */
function misread(text: string, encoding: 'utf16le' | 'utf16be' | 'utf32le', bom = true): string {
  let bytes: Buffer;
  if (encoding === 'utf32le') bytes = Buffer.from([...text].flatMap((c) => [c.charCodeAt(0), 0, 0, 0]));
  else if (encoding === 'utf16be') bytes = Buffer.from(text, 'utf16le').swap16();
  else bytes = Buffer.from(text, 'utf16le');
  const mark = { utf16le: [0xff, 0xfe], utf16be: [0xfe, 0xff], utf32le: [0xff, 0xfe, 0, 0] }[encoding];
  return new TextDecoder('utf-8').decode(Buffer.concat([Buffer.from(bom ? mark : []), bytes]));
}

describe('a file in the wrong encoding', () => {
  it('is named UTF-16 or UTF-32, for datasets (JSONL, streamed JSONL, JSON) and recipes', () => {
    expect(() => parseDatasetText(misread(GOOD_ROWS, 'utf16le'), 'train.jsonl')).toThrow(/^train\.jsonl is UTF-16; save it as UTF-8\.$/);
    expect(() => parseDatasetText(misread(GOOD_ROWS, 'utf16be'), 'train.jsonl')).toThrow(/^train\.jsonl is UTF-16; save it as UTF-8\.$/);
    expect(() => parseDatasetText(misread(GOOD_ROWS, 'utf16le', false), 'train.jsonl')).toThrow(/is UTF-16/);
    expect(() => parseDatasetText(misread(GOOD_ROWS, 'utf32le'), 'train.jsonl')).toThrow(/^train\.jsonl is UTF-32; save it as UTF-8\.$/);
    expect(() => parseDatasetText(misread('[{"text": "a"}]', 'utf16le'), 'train.json')).toThrow(/^train\.json is UTF-16/);
    expect(() => createJsonlParser('big.jsonl').push(misread(GOOD_ROWS, 'utf16le'))).toThrow(/^big\.jsonl is UTF-16/);
    expect(() => parseRecipeJson(misread('{"model": "m"}', 'utf16le'), 'recipe.json')).toThrow(/^recipe\.json is UTF-16; save it as UTF-8\.$/);
  });

  it('is not suspected in UTF-8 text, with or without a byte-order mark, in any script', () => {
    for (const text of [GOOD_ROWS, '\uFEFF' + GOOD_ROWS, '{"text": "Привет, 世界 🙂 \\u0000"}', '']) expect(wrongTextEncoding(text)).toBeNull();
    expect(parseDatasetText('\uFEFF' + GOOD_ROWS, 'train.jsonl').rows).toHaveLength(2);
    expect(parseRecipeJson('\uFEFF{"model": "m"}', 'recipe.json')).toEqual({ model: 'm' });
  });
});

describe('a number out of range', () => {
  it('in recipe JSON (1e400) is called out of range, naming the field, not "got null"', () => {
    expect(() => parseRecipeJson('{"model": "m", "learning_rate": 1e400}', 'recipe.json')).toThrow(/^recipe\.json: "learning_rate" is out of range/);
    expect(() => parseRecipeJson('{"model": "m", "peft": {"lora_alpha": -1e999}}', 'recipe.json')).toThrow(/"peft\.lora_alpha" is out of range/);
  });

  it('given to parseRecipe directly (the UI) or as a flag', () => {
    const e = (() => { try { parseRecipe({ model: 'm', train_file: 't.jsonl', learning_rate: Infinity }, 'recipe.json'); } catch (err) { return err as Error; } return null; })();
    expect(e?.message).toContain('(got a number out of range)');
    expect(() => applyOverrides({}, { learning_rate: '1e400' })).toThrow(/--learning_rate 1e400 is out of range/);
  });
});

describe('weights holding NaN or infinity', () => {
  it('are found in float32 params and in 16-bit packed weights, by name; finite weights pass', async () => {
    const loaded = await loadModel(memoryFiles('models/tiny', TINY));
    const model = loaded.model;
    expect(await nonFiniteWeight(model)).toBeNull();
    const before = tf.memory().numTensors;
    const params = new Map(model.params);
    const name = [...params.keys()][1];
    const bad = tf.tensor([1, NaN, 3]);
    params.set(name, bad);
    expect(await nonFiniteWeight({ params, packed: model.packed })).toBe(name);
    const bf16 = packWeight16(float32ToBits16([1, 2, Infinity, 4], 'bfloat16'), [2, 2], 'bfloat16');
    const f16 = packWeight16(float32ToBits16([1, 2, 3, 1e6], 'float16'), [2, 2], 'float16'); // 1e6 overflows f16 to infinity
    const fine = packWeight16(float32ToBits16([1, 2, 3, 4], 'bfloat16'), [2, 2], 'bfloat16');
    expect(await nonFiniteWeight({ params: new Map(), packed: new Map([['ok', fine], ['w16', bf16]]) })).toBe('w16');
    expect(await nonFiniteWeight({ params: new Map(), packed: new Map([['h', f16]]) })).toBe('h');
    expect(await nonFiniteWeight({ params: new Map(), packed: new Map([['ok', fine]]) })).toBeNull();
    expect(await nonFiniteAdapterWeight({ modules: new Map([['q', { A: tf.zeros([2, 2]), B: tf.tensor([[0, -Infinity]]) }]]) })).toBe('q.lora_B');
    for (const t of [bad, bf16.data, f16.data, fine.data]) t.dispose();
    // The check itself leaves nothing behind (the adapter test's two tensors aside).
    expect(tf.memory().numTensors).toBe(before + 2);
    model.dispose();
  });
});
