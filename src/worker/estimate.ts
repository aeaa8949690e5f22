/**
 * A rough peak-memory estimate for one training step, before anything is allocated, and the one
 * change that shrinks a run that does not fit. The figures are upper bounds in bytes of f32
 * tensors; WebGPU tells nothing about total GPU memory, so only the largest single buffer can be
 * held against a known limit (the device's maxBufferSize / maxStorageBufferBindingSize).
 */
import type { DeviceLimits } from '../engine/backend/index.ts';
import { expectedWeights, type CausalLM } from '../engine/model/llama.ts';
import { linearShape } from '../engine/model/config.ts';
import { resolveTargetModules } from '../engine/model/lora.ts';
import type { Recipe } from '../engine/recipe.ts';
import { trainableNames } from '../engine/run.ts';
import type { MemoryEstimate } from './protocol.ts';

const F32 = 4;
/** selectedLogProbs' chunk: the LM head runs on at most this many logits at once. */
const LOGIT_CHUNK_ELEMENTS = 1 << 22;
/**
 * Activation floats per token, layer and hidden unit, from tf.profile's peak of one LoRA step
 * (r 16 on every linear layer, dropout 0.05): 257–262 on a SmolLM2-135M-shaped layer, about 310
 * on stories260K (hidden 64, where r and the attention heads weigh more). It counts what tfjs
 * keeps unfused for the backward pass, including the clones the tape saves (shared on CPU and
 * WebGPU, real copies on WASM), so it is an upper bound there.
 */
const ACTIVATION_FLOATS = 320;

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

export function estimateMemory(model: CausalLM, recipe: Recipe, limits: DeviceLimits | undefined): MemoryEstimate {
  const c = model.config;
  const B = recipe.per_device_train_batch_size;
  const T = recipe.max_length ?? c.max_position_embeddings;
  const tokens = B * T;
  const moments = recipe.optim === 'sgd' ? 0 : 2;
  // LoRA's A and B are tensors of their own; freeze and full turn base weights into variables in
  // place, so only their gradients and moments come on top of the weights.
  const copies = (recipe.peft.type === 'lora' ? 1 : 0) + 1 + moments;

  const weights = countParameters(model) * F32;
  const trainable = trainableParameters(model, recipe) * copies * F32;
  // Attention scores and their softmax ([B, heads, T, T] each) are kept for the backward pass too.
  const activations = tokens * c.num_hidden_layers * (ACTIVATION_FLOATS * c.hidden_size + 2 * c.num_attention_heads * T) * F32;
  // The LM head runs a chunk of rows at a time, forward and backward (it recomputes rather than
  // keeps its logits): one chunk's logits, softmax and one-hot targets exist at once.
  const chunkRows = Math.max(1, Math.floor(LOGIT_CHUNK_ELEMENTS / c.vocab_size));
  const logits = Math.min(tokens, chunkRows) * c.vocab_size * 3 * F32;

  const buffers = {
    embedding: c.vocab_size * c.hidden_size * F32,
    attention: B * c.num_attention_heads * T * T * F32,
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
      : `One ${largestKind === 'attention' ? 'attention-score' : largestKind === 'mlp' ? 'MLP activation' : 'logits'} buffer needs ${mib(largest)} and this GPU allows ${mib(limit!)}; ${shrinkActivations(recipe, T, largestKind === 'attention')}.`;
  }
  return { weights, trainable, activations, logits, total: weights + trainable + activations + logits, largest_buffer: largest, limit, fits, suggestion };
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
    return shrinkActivations(recipe, recipe.max_length ?? model.config.max_position_embeddings, false);
  }
  return 'choose a smaller model, since its weights alone take most of the memory';
}

/** Halving the micro-batch keeps the effective batch (and so the training) the same; a shorter max_length does not. */
function shrinkActivations(recipe: Recipe, T: number, quadratic: boolean): string {
  const B = recipe.per_device_train_batch_size;
  const shorter = `lower max_length to ${Math.max(1, Math.floor(T / 2))}`;
  if (B > 1 && !quadratic) {
    return `halve per_device_train_batch_size to ${Math.floor(B / 2)} and double gradient_accumulation_steps to ${recipe.gradient_accumulation_steps * 2}, which keeps the effective batch`;
  }
  return T > 1 ? (quadratic ? `${shorter} (attention memory grows with its square)` : shorter) : 'choose a smaller model';
}

function mib(bytes: number): string {
  return `${Math.ceil(bytes / 2 ** 20)} MiB`;
}
