/**
 * A rough peak-memory estimate for one training step, before anything is allocated, and the one
 * change that shrinks a run that does not fit. The figures are upper bounds in bytes of f32
 * tensors; WebGPU tells nothing about total GPU memory, so only the largest single buffer can be
 * held against a known limit (the device's maxBufferSize / maxStorageBufferBindingSize).
 */
import type { DeviceLimits } from './backend/index.ts';
import { expectedWeights, frozenWeightBytes, type CausalLM } from './model/llama.ts';
import { isQuantizedProjection, quantizedBytes, storageQuantization } from './model/quantized.ts';
import { linearShape } from './model/config.ts';
import { resolveTargetModules } from './model/lora.ts';
import type { Recipe } from './recipe.ts';
import { trainableNames } from './run.ts';

export interface MemoryEstimate {
  /** Estimated peak bytes for weights, adapter + optimizer, activations and logits; total is their sum. */
  weights: number;
  trainable: number;
  activations: number;
  logits: number;
  total: number;
  /** The largest single tensor of a step (embedding, attention scores, MLP activations or a logits chunk). */
  largest_buffer: number;
  /** The smaller of the device's maxBufferSize and maxStorageBufferBindingSize (WebGPU only), else null. */
  limit: number | null;
  /** largest_buffer ≤ limit; WebGPU does not tell total GPU memory, so the total cannot be checked. */
  fits: boolean;
  /** When it does not fit: the one concrete change to make, as a sentence. */
  suggestion: string | null;
  /** With a quantised base: what the frozen weights would take without it (the memory QLoRA saves); else null. */
  weights_unquantized: number | null;
}

const F32 = 4;
/** selectedLogProbs' chunk: the LM head runs on at most this many logits at once. */
const LOGIT_CHUNK_ELEMENTS = 1 << 22;

/**
 * Floats per token one decoder layer keeps for its backward pass, plus the transient gradients
 * of its own backward pass: the residual stream and the normed inputs, q, k, v, the attention
 * output, gate, up and their product, and with LoRA dropout a masked copy of each adapter input.
 * Calibrated on physical peaks (the backend's live buffers, `meterBackendMemory`) of LoRA steps
 * on a SmolLM2-135M-shaped layer (hidden 576, intermediate 1536): 20.3 hidden-widths per layer
 * without dropout and 23.1 with 0.05, where this gives 20.7 and 27.3.
 */
function layerFloats(c: CausalLM['config'], dropout: number): number {
  const kv = 2 * c.num_key_value_heads * c.head_dim;
  return 12 * c.hidden_size + kv + 3 * c.intermediate_size + (dropout > 0 ? 4 * c.hidden_size + c.intermediate_size : 0);
}

/**
 * With gradient checkpointing a layer keeps only its input (measured: 5.3–5.6 hidden-widths per
 * layer once the transient of the backward pass is counted), and one layer at a time is
 * recomputed with everything above.
 */
const CHECKPOINTED_LAYER_HIDDEN = 6;

/**
 * Sequences one micro-batch runs through its forward and backward pass, each of up to max_length
 * tokens: DPO, ORPO and SimPO run every pair's chosen and rejected rows through one pass (TRL's
 * concatenated forward), SFT and KTO one sequence a row. The passes without a gradient (DPO's and
 * KTO's reference, KTO's KL sequences) run before it on no more sequences each, keep no
 * activations and free each layer's buffers before the next layer, so they stay below its peak
 * and add nothing: on stories260K with 2 pairs of 64 tokens, DPO's reference pass peaks at
 * 1.9 MB and the step after it at 9.3 MB.
 */
function trainedSequences(recipe: Recipe): number {
  const B = recipe.per_device_train_batch_size;
  return recipe.method === 'dpo' || recipe.method === 'orpo' || recipe.method === 'simpo' ? 2 * B : B;
}

export function countParameters(model: CausalLM): number {
  return expectedWeights(model.config).reduce((n, [, shape]) => n + shape.reduce((a, b) => a * b, 1), 0);
}

function trainableParameters(model: CausalLM, recipe: Recipe): number {
  const c = model.config;
  const peft = recipe.peft;
  if (peft.type === 'lora') {
    const perLayer = resolveTargetModules(peft.target_modules).reduce((n, m) => {
      const [out, inp] = linearShape(c, m);
      return n + peft.r * (out + inp);
    }, 0);
    return perLayer * c.num_hidden_layers;
  }
  const names = new Set(trainableNames(model, peft.type, peft.layers_to_train));
  return expectedWeights(c).reduce((n, [name, shape]) => (names.has(name) ? n + shape.reduce((a, b) => a * b, 1) : n), 0);
}

/**
 * Tokens of the longest sequence a step trains on. GRPO's is a prompt and its completion: the
 * estimate cannot see the data, so a prompt counts as max_prompt_length, or 256 tokens when that is
 * unset (TRL 0.x's default was 512; the prompts people train reasoning on are mostly shorter).
 */
function sequenceLength(recipe: Recipe, maxPositions: number): number {
  if (recipe.method === 'grpo') return Math.min(maxPositions, (recipe.max_prompt_length ?? 256) + recipe.max_completion_length);
  return recipe.max_length ?? maxPositions;
}

/**
 * The frozen weights' bytes once loaded for this recipe (and, when it quantises, what they are now): what the model holds now, with each
 * decoder projection at its quantised size where the recipe quantises the base (the studio
 * estimates from the unquantised model it has loaded; a run loads its own, quantised copy).
 */
function frozenBytes(model: CausalLM, recipe: Recipe): { bytes: number; unquantized: number | null } {
  const q = storageQuantization(recipe.quantization);
  const { bytes } = model.frozenStorage();
  // A pre-quantised checkpoint is loaded as it will train.
  if (!q || model.quantization()) return { bytes, unquantized: null };
  let delta = 0;
  for (const [name, shape] of expectedWeights(model.config)) {
    if (!isQuantizedProjection(name)) continue;
    const packed = model.packed.get(name);
    const now = packed ? frozenWeightBytes(packed) : (model.params.get(name)?.size ?? 0) * F32;
    delta += quantizedBytes(shape as [number, number], q) - now;
  }
  return { bytes: bytes + delta, unquantized: bytes };
}

export function estimateMemory(model: CausalLM, recipe: Recipe, limits: DeviceLimits | undefined): MemoryEstimate {
  const c = model.config;
  const sequences = trainedSequences(recipe);
  const T = sequenceLength(recipe, c.max_position_embeddings);
  const tokens = sequences * T;
  const moments = recipe.optim === 'sgd' ? 0 : 2;
  // LoRA's A and B are tensors of their own; freeze and full turn base weights into variables in
  // place, so only their gradients and moments come on top of the weights.
  const copies = (recipe.peft.type === 'lora' ? 1 : 0) + 1 + moments;

  // Frozen weights as the backend holds them (16-bit matrices at two bytes a value), with the
  // projections as the recipe's quantization will store them.
  const { bytes: weights, unquantized: weights_unquantized } = frozenBytes(model, recipe);
  const trainable = trainableParameters(model, recipe) * copies * F32;
  const dropout = recipe.peft.type === 'lora' ? recipe.peft.lora_dropout : 0;
  const perLayer = layerFloats(c, dropout);
  // Either way one layer's working set comes on top (twice its kept floats: its activations and
  // their gradients); checkpointing keeps one hidden state per other layer instead of everything.
  const kept = recipe.gradient_checkpointing ? c.num_hidden_layers * CHECKPOINTED_LAYER_HIDDEN * c.hidden_size + perLayer : c.num_hidden_layers * perLayer;
  // WASM and the CPU attend through tfjs ops, which hold one layer's scores and probabilities
  // ([B, heads, T, T] each) for a moment; WebGPU's fused kernel never makes them.
  const scores = limits ? 0 : 2 * sequences * c.num_attention_heads * T * T * F32;
  const activations = tokens * (kept + 2 * perLayer) * F32 + scores;
  // The LM head runs a chunk of rows at a time, forward and backward (it recomputes rather than
  // keeps its logits): one chunk's logits, softmax and one-hot targets exist at once.
  const chunkRows = Math.max(1, Math.floor(LOGIT_CHUNK_ELEMENTS / c.vocab_size));
  const logits = Math.min(tokens, chunkRows) * c.vocab_size * 3 * F32;

  const buffers = {
    embedding: c.vocab_size * c.hidden_size * F32,
    mlp: tokens * c.intermediate_size * F32,
    logits: Math.min(tokens, chunkRows) * c.vocab_size * F32,
  };
  const [largestKind, largest] = (Object.entries(buffers) as [keyof typeof buffers, number][]).reduce((a, b) => (b[1] > a[1] ? b : a));
  const limit = limits ? Math.min(limits.maxBufferSize, limits.maxStorageBufferBindingSize) : null;
  const fits = limit === null || largest <= limit;

  let suggestion: string | null = null;
  if (!fits) {
    suggestion = largestKind === 'embedding'
      ? `The embedding matrix alone needs ${mib(largest)} in one buffer and this GPU allows ${mib(limit!)}; choose a smaller model.`
      : `One ${largestKind === 'mlp' ? 'MLP activation' : 'logits'} buffer needs ${mib(largest)} and this GPU allows ${mib(limit!)}; ${shrinkActivations(recipe, T)}.`;
  }
  return { weights, trainable, activations, logits, total: weights + trainable + activations + logits, largest_buffer: largest, limit, fits, suggestion, weights_unquantized };
}

/**
 * The one change most likely to let a run that ran out of memory fit, from the term that
 * dominates its estimate; a clause to finish a sentence.
 */
export function shrinkAdvice(estimate: MemoryEstimate, recipe: Recipe, model: CausalLM): string {
  const perStep = estimate.activations + estimate.logits;
  if (recipe.peft.type !== 'lora' && estimate.trainable >= perStep) {
    return `use peft.type "lora" instead of "${recipe.peft.type}", which trains a small adapter instead of the weights`;
  }
  if (perStep >= estimate.weights) {
    if (!recipe.gradient_checkpointing) return 'set gradient_checkpointing to true, which keeps one hidden state per layer instead of all its activations';
    return shrinkActivations(recipe, sequenceLength(recipe, model.config.max_position_embeddings));
  }
  return 'choose a smaller model, since its weights alone take most of the memory';
}

/**
 * Halving the micro-batch keeps the effective batch (and so the training) the same; a shorter
 * max_length does not. KTO needs two rows a micro-batch for its KL term; GRPO whole groups of
 * num_generations, and its length is the completions'.
 */
function shrinkActivations(recipe: Recipe, T: number): string {
  const B = recipe.per_device_train_batch_size;
  if (recipe.method === 'grpo') {
    const G = recipe.num_generations;
    const groups = B / G;
    if (groups >= 2) return `halve per_device_train_batch_size to ${Math.floor(groups / 2) * G} and double gradient_accumulation_steps to ${recipe.gradient_accumulation_steps * 2}, which keeps the effective batch`;
    const C = recipe.max_completion_length;
    return C > 1 ? `lower max_completion_length to ${Math.floor(C / 2)} or num_generations (with per_device_train_batch_size)` : 'choose a smaller model';
  }
  if (Math.floor(B / 2) >= (recipe.method === 'kto' ? 2 : 1)) {
    return `halve per_device_train_batch_size to ${Math.floor(B / 2)} and double gradient_accumulation_steps to ${recipe.gradient_accumulation_steps * 2}, which keeps the effective batch`;
  }
  return T > 1 ? `lower max_length to ${Math.max(1, Math.floor(T / 2))}` : 'choose a smaller model';
}

function mib(bytes: number): string {
  return `${Math.ceil(bytes / 2 ** 20)} MiB`;
}
