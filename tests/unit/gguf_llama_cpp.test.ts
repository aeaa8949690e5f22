// llama.cpp itself (node-llama-cpp's prebuilt CPU binary) is the judge of the GGUF exports: it
// loads what they write and computes what the engine computes. stories260K generates the same
// greedy text; tiny random Llama, Qwen2 and Qwen3 models give the same logits; a LoRA adapter
// exported alone and applied by llama.cpp to the base GGUF gives what the engine's merged model
// gives; and llama.cpp tokenises text as tokenizer.json does.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { getLlama, type Llama, type LlamaContext, type LlamaModel, type Token } from 'node-llama-cpp';
import { nodeFolder } from '../../src/cli/fs_files.ts';
import { ggufLoraFile, ggufModelFile, type GGUFOutType } from '../../src/engine/export_gguf.ts';
import { memoryFiles } from '../../src/engine/io/files.ts';
import { LINEAR_MODULES } from '../../src/engine/model/config.ts';
import { generate } from '../../src/engine/model/generate.ts';
import type { CausalLM } from '../../src/engine/model/llama.ts';
import { LoraAdapter } from '../../src/engine/model/lora.ts';
import { Rng } from '../../src/engine/rng.ts';
import { loadModel, prepareRun, type LoadedModel } from '../../src/engine/run.ts';
import { parseRecipe } from '../../src/engine/recipe.ts';
import { buildTinyModelFolder, STORIES_DIR, type TinyModelOptions } from './helpers/tiny_model.ts';

let llama: Llama;
let dir: string;
let fileNo = 0;
let stories: LoadedModel;

beforeAll(async () => {
  await tf.setBackend('cpu');
  dir = await mkdtemp(join(tmpdir(), 'gguf-llama-cpp-'));
  llama = await getLlama({ gpu: false, build: 'never' });
  stories = await loadModel(nodeFolder(STORIES_DIR));
});
afterAll(async () => {
  stories.model.dispose();
  await llama.dispose();
  await rm(dir, { recursive: true, force: true });
});

/** The file's parts as a file llama.cpp loads (it reads GGUF from a path). */
async function gguFile(parts: AsyncIterable<Uint8Array>): Promise<string> {
  const path = join(dir, `${fileNo++}.gguf`);
  const chunks: Uint8Array[] = [];
  for await (const part of parts) chunks.push(part);
  await writeFile(path, Buffer.concat(chunks));
  return path;
}

/**
 * A llama.cpp model and context, with an optional GGUF LoRA applied at scale 1. The context keeps
 * keys and values in F32 without flash attention (llama.cpp's defaults store them in F16, which
 * alone moves logits by about 1e-3), and runs one thread: on a small shared machine ggml's
 * spinning worker threads made forty tokens of stories260K take a hundred seconds.
 */
async function llamaCpp(modelFile: string, loraFile?: string): Promise<{ model: LlamaModel; context: LlamaContext; dispose(): Promise<void> }> {
  const model = await llama.loadModel({ modelPath: modelFile });
  const context = await model.createContext({
    contextSize: 256,
    threads: 1,
    flashAttention: false,
    experimentalKvCacheKeyType: 'F32',
    experimentalKvCacheValueType: 'F32',
    ...(loraFile ? { lora: { adapters: [{ filePath: loraFile }] } } : {}),
  });
  return { model, context, dispose: async () => { await context.dispose(); await model.dispose(); } };
}

/** llama.cpp's greedy continuation (temperature 0) of `prompt`, n tokens. */
async function llamaGreedy(context: LlamaContext, prompt: number[], n: number): Promise<number[]> {
  const out: number[] = [];
  const sequence = context.getSequence();
  for await (const token of sequence.evaluate(prompt as Token[], { temperature: 0 })) {
    out.push(token);
    if (out.length === n) break;
  }
  sequence.dispose();
  return out;
}

/**
 * llama.cpp's next-token log-probabilities after each position of `ids`, [position][token].
 * node-llama-cpp hands out probabilities (a softmax of the raw logits), not logits.
 */
async function llamaLogProbs(context: LlamaContext, ids: number[], vocab: number): Promise<Float64Array[]> {
  const sequence = context.getSequence();
  const results = await sequence.controlledEvaluate(ids.map((t) => [t as Token, { generateNext: { probabilities: true } }]));
  sequence.dispose();
  return results.map((r) => {
    const out = new Float64Array(vocab).fill(Number.NaN);
    for (const [token, p] of r!.next.probabilities!) out[token] = Math.log(p);
    return out;
  });
}

/** Our logits after each position of `ids`, [position][token]. */
function ourLogits(model: CausalLM, ids: number[], adapter: LoraAdapter | null = null): Float32Array[] {
  const all = tf.tidy(() => model.logits(model.forward(tf.tensor2d([ids], undefined, 'int32'), { adapter })).dataSync() as Float32Array);
  const V = model.config.vocab_size;
  return ids.map((_, t) => all.slice(t * V, (t + 1) * V));
}

/**
 * The largest difference between our logits and llama.cpp's, up to the one constant per position
 * a softmax cannot tell apart: llama.cpp's log p is logit − log Σ exp, with the sum taken in
 * float32 over the whole vocabulary, whose rounding (up to 4e-4 over Qwen's 151,669 tokens)
 * moves every log p of the position alike. Every token of the vocabulary is compared.
 */
function maxLogitDiff(ours: Float32Array[], theirs: Float64Array[]): number {
  let worst = 0;
  ours.forEach((o, t) => {
    const th = theirs[t];
    let shift = 0;
    for (let i = 0; i < o.length; i++) shift += o[i] - th[i];
    shift /= o.length;
    for (let i = 0; i < o.length; i++) worst = Math.max(worst, Math.abs(o[i] - th[i] - shift));
  });
  // A token llama.cpp left out (no probability) leaves a NaN, which fails any bound.
  return worst;
}

async function ourGreedy(m: LoadedModel, prompt: number[], n: number, adapter: LoraAdapter | null = null): Promise<number[]> {
  const [out] = await generate(m.model, [prompt], { do_sample: false, max_new_tokens: n, adapter });
  return out;
}

/** A PEFT-initialised adapter with B made non-zero (at init it is zero and changes nothing). */
function randomAdapter(model: CausalLM, seed: number, useRslora: boolean): LoraAdapter {
  const rng = new Rng(seed);
  const adapter = LoraAdapter.init(model.config, { r: 4, lora_alpha: 8, lora_dropout: 0, target_modules: [...LINEAR_MODULES], use_rslora: useRslora, layers_to_transform: null }, rng);
  for (const { B } of adapter.modules.values()) B.assign(tf.tensor(rng.uniform(B.size, -0.04, 0.04), B.shape));
  return adapter;
}

async function tiny(opts: TinyModelOptions, configEdit: (c: Record<string, unknown>) => void = () => {}): Promise<LoadedModel> {
  const files = buildTinyModelFolder(opts);
  const config = JSON.parse(files['config.json'] as string);
  configEdit(config);
  files['config.json'] = JSON.stringify(config);
  return loadModel(memoryFiles(`tiny-${opts.architecture}`, files));
}

const PROMPT = 'Once upon a time';

describe('stories260K in llama.cpp', () => {
  it('f32 generates greedily the same 40 tokens as the engine, from the same prompt tokens', async () => {
    const ids = stories.tokenizer.encode(PROMPT);
    const ours = await ourGreedy(stories, ids, 40);
    const cpp = await llamaCpp(await gguFile(await ggufModelFile(stories.folder, stories.model, null, 'f32')));
    try {
      expect([cpp.model.tokens.bos, ...cpp.model.tokenize(PROMPT)]).toEqual(ids);
      const theirs = await llamaGreedy(cpp.context, ids, 40);
      const text = stories.tokenizer.decode(theirs);
      console.log(`stories260K f32 in llama.cpp: ${JSON.stringify(PROMPT + text)}`);
      expect(text.startsWith(', there was a little girl named Lily. She loved to play outside in the park.')).toBe(true);
      expect(theirs).toEqual(ours);
      const diff = maxLogitDiff(ourLogits(stories.model, [...ids, ...ours]), await llamaLogProbs(cpp.context, [...ids, ...ours], 512));
      console.log(`stories260K f32: max logit difference ${diff.toExponential(2)}`);
      expect(diff).toBeLessThan(1e-3);
    } finally {
      await cpp.dispose();
    }
  });

  it('q8_0 (F16 where a row does not split into blocks of 32) gives the same first tokens', async () => {
    const ids = stories.tokenizer.encode(PROMPT);
    const ours = await ourGreedy(stories, ids, 12);
    const cpp = await llamaCpp(await gguFile(await ggufModelFile(stories.folder, stories.model, null, 'q8_0')));
    try {
      const theirs = await llamaGreedy(cpp.context, ids, 12);
      console.log(`stories260K q8_0 in llama.cpp: ${JSON.stringify(PROMPT + stories.tokenizer.decode(theirs))}`);
      expect(theirs.slice(0, 8)).toEqual(ours.slice(0, 8));
    } finally {
      await cpp.dispose();
    }
  });

  it("tokenises text as tokenizer.json does, including words convert's flat -1000 scores would split otherwise", async () => {
    const cpp = await llamaCpp(await gguFile(await ggufModelFile(stories.folder, stories.model, null, 'f32')));
    try {
      // With every score -1000 llama.cpp merged "sweetest" and "balloutsideflowerwerecatwanted"
      // left to right, not in BPE's order (826 of 3,000 random word strings came out different).
      const texts = ['sweetest', 'balloutsideflowerwerecatwanted', 'day named sunny flower said sweetest', "Lily's cat ran 12345 miles!\n  Then\tshe said: \"héllo wörld\" 😀 — the end."];
      for (const text of texts) expect(cpp.model.tokenize(text), text).toEqual(stories.tokenizer.encode(text, { add_special_tokens: false }));
    } finally {
      await cpp.dispose();
    }
  });
});

describe('tiny random models in llama.cpp', () => {
  const TEXT = 'Once upon a time, Lily saw 3 big red balls in the park and said: "wow!"';

  it.each([
    ['Llama', { architecture: 'LlamaForCausalLM', tokenizer: 'stories', seed: 21 }],
    ['Qwen2', { architecture: 'Qwen2ForCausalLM', tokenizer: 'qwen3', seed: 22 }],
    ['Qwen3', { architecture: 'Qwen3ForCausalLM', tokenizer: 'qwen3', seed: 23 }],
    // Meta's real Llama 3 tokenizer: llama.cpp's "llama-bpe" pre-tokenizer must split as tokenizer.json's regex does.
    ['Llama 3 tokenizer', { architecture: 'LlamaForCausalLM', tokenizer: 'llama3', seed: 26 }],
  ] as const)('%s f32: logits equal to the engine\'s within 1e-3 at every position, and the same tokens for the text', async (name, opts) => {
    const m = await tiny(opts);
    const cpp = await llamaCpp(await gguFile(await ggufModelFile(m.folder, m.model, null, 'f32')));
    try {
      expect(cpp.model.tokenize(TEXT)).toEqual(m.tokenizer.encode(TEXT, { add_special_tokens: false }));
      // Ten positions: the engine's LM head over Qwen's 151,669 tokens takes 0.2 s a position on the CPU backend.
      const ids = m.tokenizer.encode(TEXT).slice(0, 10);
      const diff = maxLogitDiff(ourLogits(m.model, ids), await llamaLogProbs(cpp.context, ids, m.model.config.vocab_size));
      console.log(`${name} f32: max logit difference ${diff.toExponential(2)} over ${ids.length} positions`);
      expect(diff).toBeLessThan(1e-3);
    } finally {
      await cpp.dispose();
      m.model.dispose();
    }
  });

  it.each([
    ['llama3', { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 16 }],
    ['linear', { type: 'linear', factor: 4 }],
  ] as const)('Llama with %s rope scaling: logits equal within 1e-3 over 40 positions', async (name, rope_scaling) => {
    // head_dim 8: wavelengths 2π·[1, 10, 100, 1000] against an original context of 16, so llama3's
    // factors take every branch but the unscaled one; without the scaling the logits move by 5e-2.
    const m = await tiny({ architecture: 'LlamaForCausalLM', tokenizer: 'stories', hidden_size: 32, seed: 24 }, (c) => (c.rope_scaling = rope_scaling));
    const cpp = await llamaCpp(await gguFile(await ggufModelFile(m.folder, m.model, null, 'f32')));
    try {
      const ids = Array.from({ length: 40 }, (_, i) => 3 + ((i * 37) % 500));
      const diff = maxLogitDiff(ourLogits(m.model, ids), await llamaLogProbs(cpp.context, ids, 512));
      console.log(`Llama with ${name} rope scaling: max logit difference ${diff.toExponential(2)}`);
      expect(diff).toBeLessThan(1e-3);
    } finally {
      await cpp.dispose();
      m.model.dispose();
    }
  });

  // Bounds about 2.5 times the differences seen: the stored weights are rounded, and for Q8_0
  // llama.cpp's CPU product also quantises the activations to Q8_0 (its vec_dot_type).
  it.each([
    ['f16', 1e-2],
    ['bf16', 1e-1],
    ['q8_0', 2.5e-1],
  ] as const)('Llama %s: logits within %f (the rounding of the stored weights)', async (outtype: GGUFOutType, bound) => {
    const m = await tiny({ architecture: 'LlamaForCausalLM', tokenizer: 'stories', hidden_size: 32, seed: 25 });
    const cpp = await llamaCpp(await gguFile(await ggufModelFile(m.folder, m.model, null, outtype)));
    try {
      const ids = m.tokenizer.encode(TEXT);
      const diff = maxLogitDiff(ourLogits(m.model, ids), await llamaLogProbs(cpp.context, ids, 512));
      console.log(`Llama ${outtype}: max logit difference ${diff.toExponential(2)}`);
      expect(diff).toBeLessThan(bound);
    } finally {
      await cpp.dispose();
      m.model.dispose();
    }
  });
});

describe('a GGUF LoRA applied by llama.cpp', () => {
  it('on stories260K (rsLoRA, every linear layer) gives the greedy text and logits of the engine with the adapter, as does the merged GGUF', async () => {
    const adapter = randomAdapter(stories.model, 31, true);
    const ids = stories.tokenizer.encode(PROMPT);
    const base = await ourGreedy(stories, ids, 30);
    const ours = await ourGreedy(stories, ids, 30, adapter);
    expect(ours).not.toEqual(base);
    const baseFile = await gguFile(await ggufModelFile(stories.folder, stories.model, null, 'f32'));
    const cpp = await llamaCpp(baseFile, await gguFile(await ggufLoraFile(stories.folder, stories.model, adapter)));
    const merged = await llamaCpp(await gguFile(await ggufModelFile(stories.folder, stories.model, adapter, 'f32')));
    try {
      const theirs = await llamaGreedy(cpp.context, ids, 30);
      console.log(`stories260K + LoRA in llama.cpp: ${JSON.stringify(PROMPT + stories.tokenizer.decode(theirs))}`);
      expect(theirs).toEqual(ours);
      expect(await llamaGreedy(merged.context, ids, 30)).toEqual(ours);
      const seq = [...ids, ...ours];
      const diff = maxLogitDiff(ourLogits(stories.model, seq, adapter), await llamaLogProbs(cpp.context, seq, 512));
      console.log(`stories260K + LoRA: max logit difference ${diff.toExponential(2)}`);
      expect(diff).toBeLessThan(1e-3);
    } finally {
      await cpp.dispose();
      await merged.dispose();
      adapter.dispose();
    }
  });

  it('a trained adapter (SFT on stories260K) gives, applied by llama.cpp, the greedy text of our merged model', async () => {
    // Ten SFT steps teach stories260K that the little one is a dog named Max.
    const text = Array.from({ length: 4 }, () => JSON.stringify({ text: 'Once upon a time, there was a little dog named Max. Max liked to run in the park.' })).join('\n');
    const recipe = parseRecipe({ model: 'stories260K', train_file: 'max.jsonl', max_steps: 10, learning_rate: 1e-2, per_device_train_batch_size: 4, peft: { r: 8, lora_dropout: 0 }, seed: 5 }, 'recipe.json');
    const run = await prepareRun(recipe, { model: nodeFolder(STORIES_DIR), train: { text, file: 'max.jsonl' } });
    await run.trainer.train();
    const { model, folder, tokenizer } = run.loaded;
    const adapter = run.adapter!;
    const ids = tokenizer.encode(PROMPT);
    const [ours] = await generate(model, [ids], { do_sample: false, max_new_tokens: 20, adapter });
    const oursText = PROMPT + tokenizer.decode(ours);
    expect(oursText).toContain('dog named Max');
    const cpp = await llamaCpp(await gguFile(await ggufModelFile(folder, model, null, 'f32')), await gguFile(await ggufLoraFile(folder, model, adapter)));
    const merged = await llamaCpp(await gguFile(await ggufModelFile(folder, model, adapter, 'f32')));
    try {
      console.log(`trained adapter, engine: ${JSON.stringify(oursText)}`);
      expect(await llamaGreedy(cpp.context, ids, 20)).toEqual(ours);
      expect(await llamaGreedy(merged.context, ids, 20)).toEqual(ours);
    } finally {
      await cpp.dispose();
      await merged.dispose();
      run.dispose();
    }
  });

  it('on a tiny Qwen2 (q/k/v biases, no permutation) gives the logits of the engine with the adapter', async () => {
    const m = await tiny({ architecture: 'Qwen2ForCausalLM', tokenizer: 'stories', seed: 32, tie: false });
    const adapter = randomAdapter(m.model, 33, false);
    const cpp = await llamaCpp(await gguFile(await ggufModelFile(m.folder, m.model, null, 'f32')), await gguFile(await ggufLoraFile(m.folder, m.model, adapter)));
    try {
      const ids = m.tokenizer.encode(PROMPT + ', there was a little girl.');
      const theirs = await llamaLogProbs(cpp.context, ids, 512);
      const diff = maxLogitDiff(ourLogits(m.model, ids, adapter), theirs);
      console.log(`Qwen2 + LoRA: max logit difference ${diff.toExponential(2)}`);
      expect(diff).toBeLessThan(1e-3);
      // The adapter matters: without it the engine is far from llama.cpp's numbers.
      expect(maxLogitDiff(ourLogits(m.model, ids), theirs)).toBeGreaterThan(1e-2);
    } finally {
      await cpp.dispose();
      adapter.dispose();
      m.model.dispose();
    }
  });
});
