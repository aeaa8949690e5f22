/**
 * Sampling with a static KV cache, as transformers' generate() with cache_implementation
 * "static": prompts are left-padded so every row's next token sits in the last column, positions
 * count real tokens only, and each step feeds one token per row. The cache is allocated once per
 * call at its final length, so every decode step runs on the same tensor shapes (WebGPU compiles
 * no pipeline and pools no new buffer while decoding). Each prompt is prefilled once, however
 * many completions it has; the completions of all prompts then decode as one batch. Logits are
 * processed like transformers' warpers (temperature, top-k, top-p).
 */
import * as tf from '@tensorflow/tfjs';
import { Rng } from '../rng.ts';
import { allocateKVCache, disposeKVCache, selectKVCacheRows, type CausalLM, type KVCache } from './llama.ts';
import type { LoraAdapter } from './lora.ts';

export interface GenerationConfig {
  max_new_tokens: number;
  /** false: greedy (argmax). */
  do_sample: boolean;
  temperature: number;
  /** 0 disables. */
  top_k: number;
  /** 1 disables. */
  top_p: number;
  /** Generation stops in a row at the first of these. */
  eos_token_id: number[];
  pad_token_id: number;
  /** Completions per prompt (transformers' num_return_sequences). */
  num_return_sequences: number;
  seed: number;
}

export const DEFAULT_GENERATION: GenerationConfig = {
  max_new_tokens: 128,
  do_sample: true,
  temperature: 1.0,
  top_k: 50,
  top_p: 1.0,
  eos_token_id: [],
  pad_token_id: 0,
  num_return_sequences: 1,
  seed: 0,
};

export interface GenerateOptions extends Partial<GenerationConfig> {
  adapter?: LoraAdapter | null;
  /** A generator to draw from instead of a fresh one from `seed` (the trainer's, in GRPO). */
  rng?: Rng;
  /** Called after each step with the tokens just produced, one per row (-1 for a finished row). */
  onTokens?: (tokens: number[]) => void | boolean | Promise<void | boolean>;
}

/**
 * Completions for each prompt (token ids without the prompt), num_return_sequences per prompt in
 * order, each ending with its EOS id when one was produced.
 */
export async function generate(model: CausalLM, prompts: number[][], options: GenerateOptions = {}): Promise<number[][]> {
  const g: GenerationConfig = { ...DEFAULT_GENERATION, ...options };
  const rng = options.rng ?? new Rng(g.seed);
  const G = g.num_return_sequences;
  const rows = prompts.flatMap((p) => Array.from({ length: G }, () => p));
  const B = rows.length;
  const out: number[][] = rows.map(() => []);
  const P = Math.max(...prompts.map((p) => p.length));
  // The cache's slots: the padded prompt and the new tokens (one spare: the last is never fed back).
  const maxLen = Math.min(P + g.max_new_tokens, model.config.max_position_embeddings);
  if (B === 0 || maxLen <= P) return out;
  const V = model.config.vocab_size;
  const eos = new Set(g.eos_token_id);
  const done = rows.map(() => false);
  /** Left padding of each row: its first real token's slot. */
  const padOf = (p: number[]) => P - p.length;

  /**
   * One forward pass writing `ids` [rows, T] at the cache's next slots; the last column's scores,
   * [rows · vocab]. Slots hold a real token from a row's padding to the last one written.
   */
  const step = async (cache: KVCache, ids: number[][], positions: number[][], pads: number[]): Promise<Float32Array> => {
    const S = maxLen;
    const end = cache.length + ids[0].length;
    const mask = new Int32Array(ids.length * S);
    pads.forEach((pad, r) => mask.fill(1, r * S + pad, r * S + end));
    const last = tf.tidy(() => {
      const hidden = model.forward(tf.tensor2d(ids, undefined, 'int32'), {
        attentionMask: tf.tensor2d(mask, [ids.length, S], 'int32'),
        positionIds: tf.tensor2d(positions, undefined, 'int32'),
        cache,
        adapter: options.adapter ?? null,
      });
      const T = hidden.shape[1];
      return model.logits(tf.reshape(tf.slice(hidden, [0, T - 1, 0], [ids.length, 1, -1]), [ids.length, -1]));
    });
    try {
      return (await last.data()) as Float32Array;
    } finally {
      last.dispose();
    }
  };

  // Each prompt once, left-padded to the longest; positions count real tokens only.
  let cache = allocateKVCache(model.config, prompts.length, maxLen);
  try {
    const ids = prompts.map((p) => [...Array(padOf(p)).fill(g.pad_token_id), ...p]);
    const positions = prompts.map((p) => [...Array(padOf(p)).fill(0), ...p.map((_, i) => i)]);
    let scores = await step(cache, ids, positions, prompts.map(padOf));
    if (G > 1) {
      // The completions of a prompt share its prefill: its cache rows and scores are copied G times.
      const promptOf = rows.map((_, b) => Math.floor(b / G));
      const shared = cache;
      cache = selectKVCacheRows(shared, promptOf);
      disposeKVCache(shared);
      const prefill = scores;
      scores = new Float32Array(B * V);
      promptOf.forEach((r, b) => scores.set(prefill.subarray(r * V, (r + 1) * V), b * V));
    }
    const pads = rows.map(padOf);
    // len: the padded sequence's length once this step's tokens are appended.
    for (let len = P + 1; ; len++) {
      const tokens: number[] = [];
      for (let b = 0; b < B; b++) {
        if (done[b]) {
          tokens.push(-1);
          continue;
        }
        const token = pickToken(scores.subarray(b * V, (b + 1) * V), g, rng);
        out[b].push(token);
        tokens.push(token);
        if (eos.has(token)) done[b] = true;
      }
      if (options.onTokens && (await options.onTokens(tokens)) === false) break;
      if (len >= maxLen || done.every(Boolean)) break;
      scores = await step(
        cache,
        tokens.map((t) => [t < 0 ? g.pad_token_id : t]),
        rows.map((r, b) => [r.length + out[b].length - 1]),
        pads,
      );
    }
  } finally {
    disposeKVCache(cache);
  }
  return out;
}

/** One token from a row of logits: argmax, or a sample after temperature, top-k and top-p. */
export function pickToken(logits: Float32Array, g: Pick<GenerationConfig, 'do_sample' | 'temperature' | 'top_k' | 'top_p'>, rng: Rng): number {
  if (!g.do_sample || g.temperature <= 0) {
    let best = 0;
    for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
    return best;
  }
  const idx = Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a]);
  let keep = g.top_k > 0 ? Math.min(g.top_k, idx.length) : idx.length;
  const max = logits[idx[0]];
  const weights = idx.slice(0, keep).map((i) => Math.exp((logits[i] - max) / g.temperature));
  let total = weights.reduce((a, b) => a + b, 0);
  if (g.top_p < 1) {
    // Keep the smallest prefix whose probability reaches top_p (always at least one token).
    let cum = 0;
    for (let j = 0; j < keep; j++) {
      cum += weights[j] / total;
      if (cum >= g.top_p) {
        keep = j + 1;
        break;
      }
    }
    total = weights.slice(0, keep).reduce((a, b) => a + b, 0);
  }
  let u = rng.random() * total;
  for (let j = 0; j < keep; j++) {
    u -= weights[j];
    if (u < 0) return idx[j];
  }
  return idx[keep - 1];
}
