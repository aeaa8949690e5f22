/**
 * Sampling with a KV cache, as transformers' generate(): prompts are left-padded so every row's
 * next token sits in the last column, positions count real tokens only, and each step feeds one
 * token per row. Logits are processed like transformers' warpers (temperature, top-k, top-p).
 */
import * as tf from '@tensorflow/tfjs';
import { Rng } from '../rng.ts';
import type { CausalLM, KVCache } from './llama.ts';
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
  const rows = prompts.flatMap((p) => Array.from({ length: g.num_return_sequences }, () => p));
  const B = rows.length;
  const P = Math.max(...rows.map((r) => r.length));
  const maxLen = Math.min(P + g.max_new_tokens, model.config.max_position_embeddings);
  const eos = new Set(g.eos_token_id);

  const mask: number[][] = rows.map((r) => [...Array(P - r.length).fill(0), ...r.map(() => 1)]);
  const ids = rows.map((r) => [...Array(P - r.length).fill(g.pad_token_id), ...r]);
  const nextPos = rows.map((r) => r.length);
  const out: number[][] = rows.map(() => []);
  const done = rows.map(() => false);
  const cache: KVCache = { keys: [], values: [] };

  let input = ids;
  let positions = mask.map((m) => {
    let n = 0;
    return m.map((x) => (x ? n++ : 0));
  });
  try {
    for (let len = P; len < maxLen && !done.every(Boolean); len++) {
      // The forward pass replaces each layer's cache entry by a concatenation; the old entries
      // are referenced nowhere else once it returns.
      const old = [...cache.keys, ...cache.values];
      const last = tf.tidy(() => {
        const hidden = model.forward(tf.tensor2d(input, undefined, 'int32'), {
          attentionMask: tf.tensor2d(mask, undefined, 'int32'),
          positionIds: tf.tensor2d(positions, undefined, 'int32'),
          cache,
          adapter: options.adapter ?? null,
        });
        cache.keys.forEach((k) => tf.keep(k));
        cache.values.forEach((v) => tf.keep(v));
        const T = hidden.shape[1];
        return model.logits(tf.reshape(tf.slice(hidden, [0, T - 1, 0], [B, 1, -1]), [B, -1]));
      });
      old.forEach((t) => t.dispose());
      const scores = (await last.data()) as Float32Array;
      last.dispose();
      const V = model.config.vocab_size;
      const step: number[] = [];
      for (let b = 0; b < B; b++) {
        if (done[b]) {
          step.push(-1);
          continue;
        }
        const token = pickToken(scores.subarray(b * V, (b + 1) * V), g, rng);
        out[b].push(token);
        step.push(token);
        if (eos.has(token)) done[b] = true;
      }
      if (options.onTokens && (await options.onTokens(step)) === false) break;
      input = step.map((t) => [t < 0 ? g.pad_token_id : t]);
      positions = nextPos.map((p, b) => [p + out[b].length - 1]);
      mask.forEach((m) => m.push(1));
    }
  } finally {
    cache.keys.forEach((k) => k.dispose());
    cache.values.forEach((v) => v.dispose());
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
