// What people get wrong, through the same entry points the CLI and the Worker use (prepareRun,
// loadModel): each mistake must end as one UserError sentence naming the file (and the line or
// field), with no stack trace in it, and must leave no tensor behind.
import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { UserError } from '../../src/engine/errors.ts';
import { memoryFiles } from '../../src/engine/io/files.ts';
import { parseSafetensors, tensorToFloat32, writeSafetensors, type TensorToWrite } from '../../src/engine/io/safetensors.ts';
import { parseRecipe, type RecipeInput } from '../../src/engine/recipe.ts';
import { loadModel, prepareRun } from '../../src/engine/run.ts';
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
      expect(e.message).toMatch(/^train\.jsonl has no rows; accepted rows are \{"text": "\.\.\."\}; /);
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
