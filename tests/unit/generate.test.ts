import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { fileURLToPath } from 'node:url';
import { nodeFolder } from '../../src/cli/fs_files.ts';
import { greedyNoCache } from './helpers/generate.ts';
import { loadModel, type LoadedModel } from '../../src/engine/run.ts';
import { generate, pickToken } from '../../src/engine/model/generate.ts';
import { Rng } from '../../src/engine/rng.ts';

const STORIES = fileURLToPath(new URL('../../../shared/models/stories260K', import.meta.url));
let m: LoadedModel;

beforeAll(async () => {
  await tf.setBackend('cpu');
  m = await loadModel(nodeFolder(STORIES));
});
afterAll(() => m.model.dispose());

describe('generate', () => {
  it('with the KV cache equals decoding without it', async () => {
    const ids = m.tokenizer.encode('Lily had a red');
    const [cached] = await generate(m.model, [ids], { do_sample: false, max_new_tokens: 12 });
    expect(cached).toEqual(greedyNoCache(m.model, ids, 12));
  });

  it('batches prompts of different lengths (left padding, positions from the mask) exactly as one at a time', async () => {
    const prompts = ['Once upon a time', 'The cat', 'Tom and Sue went to the park to play'].map((t) => m.tokenizer.encode(t));
    const alone = [];
    for (const p of prompts) alone.push((await generate(m.model, [p], { do_sample: false, max_new_tokens: 10 }))[0]);
    const batched = await generate(m.model, prompts, { do_sample: false, max_new_tokens: 10, pad_token_id: m.tokenizer.padTokenId });
    expect(batched).toEqual(alone);
  });

  it('stops a row at its first EOS id and leaks no tensor', async () => {
    const before = tf.memory().numTensors;
    const ids = m.tokenizer.encode('Once upon a time');
    const [full] = await generate(m.model, [ids], { do_sample: false, max_new_tokens: 16 });
    const stopAt = full[5];
    const [stopped] = await generate(m.model, [ids], { do_sample: false, max_new_tokens: 16, eos_token_id: [stopAt] });
    expect(stopped).toEqual(full.slice(0, full.indexOf(stopAt) + 1));
    expect(tf.memory().numTensors).toBe(before);
  });

  it('samples reproducibly from a seed, several completions per prompt', async () => {
    const ids = m.tokenizer.encode('Once upon a time');
    const opts = { do_sample: true, temperature: 1.5, top_k: 50, top_p: 0.95, max_new_tokens: 16, num_return_sequences: 3 };
    const a = await generate(m.model, [ids], { ...opts, seed: 7 });
    const b = await generate(m.model, [ids], { ...opts, seed: 7 });
    const c = await generate(m.model, [ids], { ...opts, seed: 8 });
    expect(a).toHaveLength(3);
    expect(a).toEqual(b);
    expect(c).not.toEqual(a);
    expect(new Set(a.map((x) => x.join())).size).toBeGreaterThan(1);
  });
});

describe('pickToken', () => {
  const logits = Float32Array.from([0.1, 2.0, 1.9, -1, 0.5]);
  it('greedy takes the argmax; top_k 1 and a tiny top_p do too', () => {
    const rng = new Rng(1);
    expect(pickToken(logits, { do_sample: false, temperature: 1, top_k: 0, top_p: 1 }, rng)).toBe(1);
    for (let i = 0; i < 20; i++) {
      expect(pickToken(logits, { do_sample: true, temperature: 1, top_k: 1, top_p: 1 }, rng)).toBe(1);
      expect(pickToken(logits, { do_sample: true, temperature: 1, top_k: 0, top_p: 0.01 }, rng)).toBe(1);
    }
  });
  it('top_k 2 only ever draws the two best tokens, in proportion to their probabilities', () => {
    const rng = new Rng(2);
    const counts = [0, 0, 0, 0, 0];
    for (let i = 0; i < 4000; i++) counts[pickToken(logits, { do_sample: true, temperature: 1, top_k: 2, top_p: 1 }, rng)]++;
    expect(counts[0] + counts[3] + counts[4]).toBe(0);
    const p1 = Math.exp(2.0) / (Math.exp(2.0) + Math.exp(1.9));
    expect(Math.abs(counts[1] / 4000 - p1)).toBeLessThan(0.03);
  });
});
