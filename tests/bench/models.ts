import type { StorageQuantization } from '../../src/engine/model/quantized.ts';
/**
 * The model shapes `npm run bench` trains, with random weights (no Hub access is needed), and the
 * FLOP count its throughput figures rest on. Browser-safe: no Node imports.
 */
import { expectedWeights, type WeightSource } from '../../src/engine/model/llama.ts';
import { LINEAR_MODULES, linearShape, parseModelConfig, type ModelConfig } from '../../src/engine/model/config.ts';
import { float32ToBits16 } from '../../src/engine/backend/kernels/linear.ts';
import { Rng } from '../../src/engine/rng.ts';

/** The published config.json fields the forward pass reads (copied from the Hub model cards' configs). */
export const MODELS: Record<string, Record<string, unknown>> = {
  'SmolLM2-135M': {
    architectures: ['LlamaForCausalLM'],
    hidden_size: 576,
    intermediate_size: 1536,
    num_hidden_layers: 30,
    num_attention_heads: 9,
    num_key_value_heads: 3,
    vocab_size: 49152,
    max_position_embeddings: 8192,
    rms_norm_eps: 1e-5,
    rope_theta: 100000,
    tie_word_embeddings: true,
    torch_dtype: 'bfloat16',
  },
  'Qwen2.5-0.5B': {
    architectures: ['Qwen2ForCausalLM'],
    hidden_size: 896,
    intermediate_size: 4864,
    num_hidden_layers: 24,
    num_attention_heads: 14,
    num_key_value_heads: 2,
    vocab_size: 151936,
    max_position_embeddings: 32768,
    rms_norm_eps: 1e-6,
    rope_theta: 1000000,
    tie_word_embeddings: true,
    torch_dtype: 'bfloat16',
  },
  'Llama-3.2-1B': {
    architectures: ['LlamaForCausalLM'],
    hidden_size: 2048,
    intermediate_size: 8192,
    num_hidden_layers: 16,
    num_attention_heads: 32,
    num_key_value_heads: 8,
    head_dim: 64,
    vocab_size: 128256,
    max_position_embeddings: 131072,
    rms_norm_eps: 1e-5,
    rope_theta: 500000,
    rope_scaling: { factor: 32, high_freq_factor: 4, low_freq_factor: 1, original_max_position_embeddings: 8192, rope_type: 'llama3' },
    tie_word_embeddings: true,
    torch_dtype: 'bfloat16',
  },
  // The 3B shape of the QLoRA target (issue: a 3B QLoRA step at 1×512 within 4 GB).
  'Llama-3.2-3B': {
    architectures: ['LlamaForCausalLM'],
    hidden_size: 3072,
    intermediate_size: 8192,
    num_hidden_layers: 28,
    num_attention_heads: 24,
    num_key_value_heads: 8,
    head_dim: 128,
    vocab_size: 128256,
    max_position_embeddings: 131072,
    rms_norm_eps: 1e-5,
    rope_theta: 500000,
    rope_scaling: { factor: 32, high_freq_factor: 4, low_freq_factor: 1, original_max_position_embeddings: 8192, rope_type: 'llama3' },
    tie_word_embeddings: true,
    torch_dtype: 'bfloat16',
  },
  // Karpathy's llama2.c stories260K (../shared/models/stories260K, the tests' real model), here
  // with random weights: a shape small enough that SwiftShader's per-dispatch costs, not its
  // arithmetic, set the decoding speed.
  'stories260K': {
    architectures: ['LlamaForCausalLM'],
    hidden_size: 64,
    intermediate_size: 172,
    num_hidden_layers: 5,
    num_attention_heads: 8,
    num_key_value_heads: 4,
    head_dim: 8,
    vocab_size: 512,
    max_position_embeddings: 512,
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    tie_word_embeddings: true,
    torch_dtype: 'float32',
  },
};

/**
 * A stand-in keeps every layer's shape (hidden, intermediate, heads, kv heads, head_dim, biases,
 * RoPE) and cuts the depth and the vocabulary, so per-layer figures (dispatches per layer, FLOP/s
 * of the layer products) carry over while a software adapter finishes in minutes, not hours.
 */
export const STAND_IN = { layers: 1, vocab: 1024 };

/** Model names accepted by --models: the full shapes, and `<name>/stand-in`. */
export function modelConfig(name: string): Record<string, unknown> {
  const standIn = name.endsWith('/stand-in');
  const raw = MODELS[standIn ? name.slice(0, -'/stand-in'.length) : name];
  if (!raw) throw new Error(`unknown model ${name}; known: ${Object.keys(MODELS).flatMap((m) => [m, `${m}/stand-in`]).join(', ')}`);
  return standIn ? { ...raw, num_hidden_layers: STAND_IN.layers, vocab_size: STAND_IN.vocab } : raw;
}

export type Storage = 'f32' | '16-bit' | 'nf4' | 'nf4+dq' | 'int8';

/** The quantised storages stream BF16 weights in and quantise the projections as they load (QLoRA). */
export function storageQuantization(storage: Storage): StorageQuantization | null {
  switch (storage) {
    case 'nf4':
      return { kind: 'nf4', double_quant: false };
    case 'nf4+dq':
      return { kind: 'nf4', double_quant: true };
    case 'int8':
      return { kind: 'int8' };
    default:
      return null;
  }
}

/**
 * Random weights streamed one tensor at a time as a model folder would: matrices U(±0.04)
 * (about the 0.02 standard deviation these models are initialised with), norms 1, biases small.
 * 16-bit storage hands BF16 bit patterns, which `CausalLM.load` keeps packed.
 */
export function randomWeights(c: ModelConfig, storage: Storage, seed = 0): WeightSource {
  const list = expectedWeights(c);
  const dtype = storage === 'f32' ? ('F32' as const) : ('BF16' as const);
  const tensors = new Map(list.map(([name, shape]) => [name, { dtype: shape.length === 2 ? dtype : ('F32' as const), shape }]));
  return {
    tensors,
    readWeights: async (onWeight) => {
      const rng = new Rng(seed);
      for (const [name, shape] of list) {
        const n = shape.reduce((a, b) => a * b, 1);
        if (name.endsWith('norm.weight')) {
          await onWeight({ name, dtype: 'F32', shape, data: new Float32Array(n).fill(1) });
        } else if (shape.length === 1) {
          await onWeight({ name, dtype: 'F32', shape, data: rng.uniform(n, -0.01, 0.01) });
        } else {
          const values = rng.uniform(n, -0.04, 0.04);
          await onWeight(storage === 'f32' ? { name, dtype: 'F32', shape, data: values } : { name, dtype: 'BF16', shape, data: float32ToBits16(values, 'bfloat16') });
        }
      }
    },
  };
}

export interface FlopCount {
  total: number;
  linear: number;
  lora: number;
  head: number;
  attention: number;
}

/**
 * Model FLOPs of one LoRA SFT step (a multiply-add is 2 FLOPs), for B rows of T tokens, N = B·T,
 * and `headRows` positions with a target (the LM head runs on those alone):
 *   frozen linears   Σ over every layer's q,k,v,o,gate,up,down [out × in]:  2·N·in·out (forward)
 *                    + 2·N·in·out (input gradient); frozen weights get no weight gradient
 *   LoRA, rank r     Σ over the adapted linears: 2·N·r·(in + out) forward, 4·N·r·(in + out)
 *                    backward (dA, dB and the LoRA part of dx)
 *   LM head [V × H]  2·headRows·V·H forward + 2·headRows·V·H input gradient
 *   attention        per layer and row: forward Q·Kᵀ and P·V over the causal half,
 *                    2 · 2·(T²/2)·heads·head_dim, and a backward pass of twice that
 *                    (dQ, dK, dV, dP): 6·(T²/2)·heads·head_dim·2 = 6·T²·heads·head_dim
 * Not counted: norms, RoPE, SiLU, softmax, the embedding gather, the optimizer, and the forward
 * pass that gradient checkpointing or the chunked LM head recompute (the usual MFU convention:
 * recomputation costs time but is not useful work, so it shows as lower FLOP/s).
 */
export function stepFlops(c: ModelConfig, B: number, T: number, headRows: number, loraRank: number): FlopCount {
  const N = B * T;
  let linear = 0;
  let lora = 0;
  for (const m of LINEAR_MODULES) {
    const [out, inp] = linearShape(c, m);
    linear += 4 * N * inp * out;
    lora += 6 * N * loraRank * (inp + out);
  }
  linear *= c.num_hidden_layers;
  lora *= c.num_hidden_layers;
  const head = 4 * headRows * c.vocab_size * c.hidden_size;
  const attention = c.num_hidden_layers * B * 6 * T * T * c.num_attention_heads * c.head_dim;
  return { total: linear + lora + head + attention, linear, lora, head, attention };
}

/** FLOPs of generating one token at a context of `context` tokens (forward only, one row). */
export function tokenFlops(c: ModelConfig, context: number, loraRank: number): number {
  let f = 0;
  for (const m of LINEAR_MODULES) {
    const [out, inp] = linearShape(c, m);
    f += 2 * inp * out + 2 * loraRank * (inp + out);
  }
  return c.num_hidden_layers * (f + 4 * context * c.num_attention_heads * c.head_dim) + 2 * c.vocab_size * c.hidden_size;
}

/** The largest per-layer linear [out, in] (the MLP's), the shape the best-matmul probe uses. */
export function largestLinear(c: ModelConfig): [number, number] {
  let best: [number, number] = [0, 0];
  for (const m of LINEAR_MODULES) {
    const s = linearShape(c, m);
    if (s[0] * s[1] > best[0] * best[1]) best = s;
  }
  return best;
}

export { parseModelConfig };

/** stepFlops in words, for the printed report and bench.json. */
export const FLOPS_FORMULA = [
  'step FLOPs = frozen linears 4·N·Σ(in·out) [forward + input gradient; no weight gradient for frozen weights]',
  '  + LoRA 6·N·r·Σ(in + out) [forward 2·N·r·(in+out), backward dA, dB and the LoRA part of dx]',
  '  + LM head 4·P·V·H [forward + input gradient on the P positions with a target]',
  '  + attention 6·B·T²·heads·head_dim per layer [causal half of Q·Kᵀ and P·V, backward twice the forward]',
  'with N = B·T tokens, Σ over every layer’s q,k,v,o,gate,up,down [out × in], r = 16;',
  'norms, RoPE, SiLU, softmax, embedding, optimizer and recomputation (checkpointing, chunked LM head) not counted.',
  'achieved FLOP/s = step FLOPs / step time; % of mm = that / best matmul FLOP/s on the same adapter, same run.',
].join('\n');
