// generate()'s static KV cache on the WASM backend: the in-place cache write (into the
// WebAssembly heap) and the greedy tokens of decoding without a cache. Its own file: tfjs keeps
// one engine per process, and vitest gives each file its own.
import { beforeAll, afterAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { fileURLToPath } from 'node:url';
import { nodeFolder } from '../../src/cli/fs_files.ts';
import { initBackend } from '../../src/engine/backend/index.ts';
import { expectKVCacheWritesInPlace } from './helpers/generate.ts';
import { generate } from '../../src/engine/model/generate.ts';
import { loadModel, type LoadedModel } from '../../src/engine/run.ts';

const STORIES = fileURLToPath(new URL('../../../shared/models/stories260K', import.meta.url));
let m: LoadedModel;

beforeAll(async () => {
  expect((await initBackend('wasm')).name).toBe('wasm');
  m = await loadModel(nodeFolder(STORIES));
});
afterAll(() => m.model.dispose());

describe('generate on the wasm backend', () => {
  it('writes the cache in place as the tfjs composition does', async () => {
    await expectKVCacheWritesInPlace([[1, 5], [4, 1]], 8);
  });

  it('gives the greedy tokens of decoding without a cache, for left-padded prompts', async () => {
    const prompts = ['Once upon a time', 'The cat', 'Tom and Sue went to the park to play'].map((t) => m.tokenizer.encode(t));
    const n = 10;
    const expected = prompts.map((ids) => {
      const out: number[] = [];
      for (let i = 0; i < n; i++) {
        out.push(tf.tidy(() => {
          const h = m.model.forward(tf.tensor2d([[...ids, ...out]], undefined, 'int32'));
          return tf.argMax(m.model.logits(tf.slice(h, [0, ids.length + out.length - 1, 0], [1, 1, -1])), -1).dataSync()[0];
        }));
      }
      return out;
    });
    const before = tf.memory().numTensors;
    expect(await generate(m.model, prompts, { do_sample: false, max_new_tokens: n, pad_token_id: m.tokenizer.padTokenId })).toEqual(expected);
    expect(tf.memory().numTensors).toBe(before);
  });
});
