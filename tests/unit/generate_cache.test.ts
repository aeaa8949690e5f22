// The static KV cache generate() decodes with (allocated once at its final length, written in
// place), on the CPU backend with the real stories260K: the same tokens as decoding without a
// cache, the same tensor shapes at every decode step, and a batch that stops once every row has
// its EOS. generate_wasm.test.ts and generate_webgpu.test.ts hold the other backends to the same.
import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { fileURLToPath } from 'node:url';
import { nodeFolder } from '../../src/cli/fs_files.ts';
import { loadModel, type LoadedModel } from '../../src/engine/run.ts';
import { generate } from '../../src/engine/model/generate.ts';
import { allocateKVCache, disposeKVCache } from '../../src/engine/model/llama.ts';
import { writeKVCache } from '../../src/engine/backend/kernels/kv_cache.ts';
import { expectKVCacheWritesInPlace, greedyNoCache } from './helpers/generate.ts';
import { attentionForward, composedAttentionForward } from '../../src/engine/backend/kernels/attention.ts';
import { Rng } from '../../src/engine/rng.ts';

const STORIES = fileURLToPath(new URL('../../../shared/models/stories260K', import.meta.url));
let m: LoadedModel;

beforeAll(async () => {
  await tf.setBackend('cpu');
  m = await loadModel(nodeFolder(STORIES));
});
afterAll(() => m.model.dispose());

/**
 * Runs `f` with every CPU kernel wrapped to note its name and its input and output shapes; `mark`
 * closes the current group of notes (one per decode step when called from onTokens).
 */
async function recordShapes<T>(f: (mark: () => void) => Promise<T>): Promise<{ result: T; groups: Set<string>[] }> {
  const groups: Set<string>[] = [];
  let current = new Set<string>();
  const originals = new Map<tf.KernelConfig, tf.KernelFunc>();
  for (const k of tf.getKernelsForBackend('cpu')) {
    const original = k.kernelFunc;
    originals.set(k, original);
    (k as { kernelFunc: tf.KernelFunc }).kernelFunc = (args) => {
      const out = original(args);
      const outs = Array.isArray(out) ? out : [out];
      current.add(`${k.kernelName} ${Object.values(args.inputs).map((t) => `[${(t as tf.TensorInfo).shape}]`).join('')} → ${outs.map((t) => `[${t.shape}]`).join('')}`);
      return out;
    };
  }
  try {
    const result = await f(() => {
      groups.push(current);
      current = new Set();
    });
    return { result, groups };
  } finally {
    for (const [k, original] of originals) (k as { kernelFunc: tf.KernelFunc }).kernelFunc = original;
  }
}

describe('writeKVCache', () => {
  it('writes in place what the tfjs composition writes, for one position and for several', async () => {
    await expectKVCacheWritesInPlace([[1, 0], [1, 6], [3, 2], [7, 0]], 4);
  });

  it('refuses a write past the last slot', () => {
    const cache = tf.zeros([1, 1, 4, 2]) as tf.Tensor4D;
    const update = tf.zeros([1, 1, 2, 2]) as tf.Tensor4D;
    expect(() => writeKVCache(cache, update, 3)).toThrow(/does not fit/);
    tf.dispose([cache, update]);
  });
});

describe('attention over a static cache', () => {
  it('ignores the slots not written yet, in the kernel and in the composition', async () => {
    const rng = new Rng(5);
    const [B, H, KV, T, D, past, spare] = [2, 4, 2, 2, 8, 3, 4];
    const S = past + T;
    const q = tf.tensor4d(rng.uniform(B * H * T * D, -1, 1), [B, H, T, D]);
    const k = tf.tensor4d(rng.uniform(B * KV * S * D, -1, 1), [B, KV, S, D]);
    const v = tf.tensor4d(rng.uniform(B * KV * S * D, -1, 1), [B, KV, S, D]);
    // Left padding of one slot in row 1; every query row still sees a key.
    const mask = [[1, 1, 1, 1, 1], [0, 1, 1, 1, 1]];
    // The same keys in a longer cache whose spare slots hold values no query may see.
    const widen = (t: tf.Tensor4D) => tf.concat([t, tf.fill([B, KV, spare, D], 7)], 2) as tf.Tensor4D;
    const opts = { scale: 1 / Math.sqrt(D), past, keyMask: tf.tensor2d(mask, undefined, 'int32') };
    const wideOpts = { ...opts, keyMask: tf.tensor2d(mask.map((r) => [...r, ...Array(spare).fill(0)]), undefined, 'int32') };
    for (const f of [attentionForward, composedAttentionForward]) {
      const exact = f(q, k, v, opts);
      const wide = f(q, widen(k), widen(v), wideOpts);
      expect(Array.from(await wide.out.data())).toEqual(Array.from(await exact.out.data()));
      expect(Array.from(await wide.lse.data())).toEqual(Array.from(await exact.lse.data()));
    }
  });
});

describe('generate with the static KV cache', () => {
  const texts = ['Once upon a time', 'The cat', 'Tom and Sue went to the park to play'];

  it('gives the greedy tokens of decoding without a cache, for left-padded prompts of different lengths with two completions each', async () => {
    const prompts = texts.map((t) => m.tokenizer.encode(t));
    const batched = await generate(m.model, prompts, { do_sample: false, max_new_tokens: 12, num_return_sequences: 2, pad_token_id: m.tokenizer.padTokenId });
    expect(batched).toEqual(prompts.flatMap((p) => {
      const alone = greedyNoCache(m.model, p, 12);
      return [alone, alone];
    }));
  });

  it('gives each step the logits of a forward pass over the whole left-padded sequence', async () => {
    const prompts = texts.map((t) => m.tokenizer.encode(t));
    const P = Math.max(...prompts.map((p) => p.length));
    const steps = 4;
    const pad = m.tokenizer.padTokenId;
    // Feed fixed continuations (token 5, 6, …) so both sides see the same sequence.
    const ids = prompts.map((p, b) => [...Array(P - p.length).fill(pad), ...p, ...Array.from({ length: steps }, (_, i) => 5 + i + b)]);
    const real = prompts.map((p) => [...Array(P - p.length).fill(0), ...Array(p.length + steps).fill(1)]);
    const positions = real.map((r) => {
      let n = 0;
      return r.map((x) => (x ? n++ : 0));
    });
    const L = P + steps;
    const full = tf.tidy(() => m.model.logits(m.model.forward(tf.tensor2d(ids, undefined, 'int32'), {
      attentionMask: tf.tensor2d(real, undefined, 'int32'),
      positionIds: tf.tensor2d(positions, undefined, 'int32'),
    })));
    const expected = (await full.data()) as Float32Array;
    full.dispose();

    const V = m.model.config.vocab_size;
    const S = L + 3; // slots never written stay out of sight
    const cache = allocateKVCache(m.model.config, prompts.length, S);
    try {
      let worst = 0;
      for (let start = P - 1, first = true; start < L; start++, first = false) {
        // The prefill feeds 0 .. P-1 at once; then one position a step.
        const from = first ? 0 : start;
        const cols = (rows: number[][]) => rows.map((r) => r.slice(from, start + 1));
        const mask = real.map((r) => [...r.slice(0, start + 1), ...Array(S - start - 1).fill(0)]);
        const logits = tf.tidy(() => m.model.logits(m.model.forward(tf.tensor2d(cols(ids), undefined, 'int32'), {
          attentionMask: tf.tensor2d(mask, undefined, 'int32'),
          positionIds: tf.tensor2d(cols(positions), undefined, 'int32'),
          cache,
        })));
        expect(cache.length).toBe(start + 1);
        expect(cache.keys[0].shape).toEqual([prompts.length, m.model.config.num_key_value_heads, S, m.model.config.head_dim]);
        const got = (await logits.data()) as Float32Array;
        const T = start + 1 - from;
        for (let b = 0; b < prompts.length; b++) {
          // Padding positions' logits are meaningless on both sides; compare the real ones.
          for (let t = 0; t < T; t++) {
            if (!real[b][from + t]) continue;
            for (let v = 0; v < V; v++) worst = Math.max(worst, Math.abs(got[(b * T + t) * V + v] - expected[(b * L + from + t) * V + v]));
          }
        }
        logits.dispose();
      }
      expect(worst).toBeLessThan(1e-4);
    } finally {
      disposeKVCache(cache);
    }
  });

  it('runs every decode step on the same tensor shapes, writing the cache in place', async () => {
    const prompts = texts.map((t) => m.tokenizer.encode(t));
    const { result, groups } = await recordShapes((mark) =>
      generate(m.model, prompts, { do_sample: true, seed: 4, max_new_tokens: 10, num_return_sequences: 2, pad_token_id: m.tokenizer.padTokenId, onTokens: mark }),
    );
    expect(result.every((r) => r.length === 10)).toBe(true);
    // groups[0]: the prefill; groups[1..8]: one decode step each (the last token is never fed back).
    expect(groups).toHaveLength(10);
    const decode = groups.slice(1, 9);
    const first = [...decode[0]].sort();
    for (const g of decode.slice(1)) expect([...g].sort()).toEqual(first);
    const cacheShape = `[6,${m.model.config.num_key_value_heads},${prompts.reduce((a, p) => Math.max(a, p.length), 0) + 10},${m.model.config.head_dim}]`;
    expect(first.filter((s) => s.startsWith('FtKVCacheWrite'))).toEqual([`FtKVCacheWrite ${cacheShape}[6,${m.model.config.num_key_value_heads},1,${m.model.config.head_dim}] → ${cacheShape}`]);
    expect(first.some((s) => s.startsWith('Concat'))).toBe(false);
  });

  it('stops a batch as soon as every row has its EOS, and leaks no tensor', async () => {
    const prompts = texts.map((t) => m.tokenizer.encode(t));
    const dot = m.tokenizer.encode('.').at(-1)!;
    const before = tf.memory().numTensors;
    const steps: number[][] = [];
    const out = await generate(m.model, prompts, {
      do_sample: true, seed: 11, temperature: 0.8, max_new_tokens: 200, num_return_sequences: 2, eos_token_id: [dot],
      pad_token_id: m.tokenizer.padTokenId, onTokens: (t) => void steps.push(t),
    });
    expect(tf.memory().numTensors).toBe(before);
    expect(out).toHaveLength(6);
    for (const row of out) {
      expect(row.at(-1)).toBe(dot);
      expect(row.indexOf(dot)).toBe(row.length - 1);
    }
    // One step per token of the longest row, and not one more; a finished row reads -1.
    const longest = Math.max(...out.map((r) => r.length));
    expect(longest).toBeLessThan(200);
    expect(steps).toHaveLength(longest);
    out.forEach((row, b) => {
      expect(steps.map((s) => s[b])).toEqual([...row, ...Array(longest - row.length).fill(-1)]);
    });
  });
});
