// The memory estimate against a device's buffer limit, and the change it suggests for a run that
// does not fit or ran out of memory.
import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { nodeFolder } from '../../src/cli/fs_files.ts';
import type { DeviceLimits } from '../../src/engine/backend/index.ts';
import type { CausalLM } from '../../src/engine/model/llama.ts';
import { parseRecipe, type RecipeInput } from '../../src/engine/recipe.ts';
import { loadModel } from '../../src/engine/run.ts';
import { estimateMemory, shrinkAdvice } from '../../src/engine/estimate.ts';
import { isAllocationError } from '../../src/engine/errors.ts';
import { STORIES_DIR } from './helpers/tiny_model.ts';
import { LoraAdapter, resolveTargetModules } from '../../src/engine/model/lora.ts';
import { collate } from '../../src/engine/train/batch.ts';
import { sftLossSum } from '../../src/engine/train/methods/sft.ts';
import { dpoMethod } from '../../src/engine/train/methods/dpo.ts';
import { Rng } from '../../src/engine/rng.ts';
import { meterBackendMemory } from '../../src/engine/backend/memory.ts';

let model: CausalLM;
beforeAll(async () => {
  await tf.setBackend('cpu');
  model = (await loadModel(nodeFolder(STORIES_DIR))).model;
});

const recipe = (r: Partial<RecipeInput> = {}) => parseRecipe({ model: 'stories260K', train_file: 't.jsonl', ...r }, 'recipe');
const limits = (bytes: number) => ({ maxBufferSize: bytes, maxStorageBufferBindingSize: bytes }) as DeviceLimits;

describe('estimateMemory', () => {
  it('fits when the largest buffer is within the limit, and names the change when it is not', () => {
    // Batch 8 × 1024 tokens: a chunk of 2²² logits (8192 rows × 512 words) is the largest buffer;
    // the fused attention never makes a [heads × T × T] one.
    const r = recipe({ per_device_train_batch_size: 8, max_length: 1024 });
    const roomy = estimateMemory(model, r, limits(2 ** 30));
    expect(roomy.largest_buffer).toBe(8192 * 512 * 4);
    expect(roomy).toMatchObject({ fits: true, suggestion: null, limit: 2 ** 30 });

    const tight = estimateMemory(model, r, limits(8 * 2 ** 20));
    expect(tight.fits).toBe(false);
    expect(tight.suggestion).toBe(
      'One logits buffer needs 16 MiB and this GPU allows 8 MiB; halve per_device_train_batch_size to 4 and double gradient_accumulation_steps to 2, which keeps the effective batch.',
    );

    // One row of 32768 tokens: its MLP activation (32768 × 172 floats) outgrows the logits chunk.
    const long = estimateMemory(model, recipe({ per_device_train_batch_size: 1, max_length: 32768 }), limits(16 * 2 ** 20));
    expect(long.suggestion).toBe('One MLP activation buffer needs 22 MiB and this GPU allows 16 MiB; lower max_length to 16384.');

    // 256 × 16 tokens: a chunk of at most 2²² logits, here all 4096 rows × 512 words.
    const logits = estimateMemory(model, recipe({ per_device_train_batch_size: 256, max_length: 16, gradient_accumulation_steps: 2 }), limits(2 ** 20));
    expect(logits.suggestion).toBe(
      'One logits buffer needs 8 MiB and this GPU allows 1 MiB; halve per_device_train_batch_size to 128 and double gradient_accumulation_steps to 4, which keeps the effective batch.',
    );

    const embedding = estimateMemory(model, recipe({ per_device_train_batch_size: 1, max_length: 4 }), limits(64 * 1024));
    expect(embedding.suggestion).toBe('The embedding matrix alone needs 1 MiB in one buffer and this GPU allows 1 MiB; choose a smaller model.');
  });

  it.each([true, false])('bounds the physical peak of a real LoRA step from above, within a factor of three (gradient_checkpointing %s)', async (gradient_checkpointing) => {
    const r = recipe({ per_device_train_batch_size: 2, max_length: 64, gradient_checkpointing, peft: { r: 16, lora_dropout: 0.05 } });
    const estimate = estimateMemory(model, r, undefined);
    const rng = new Rng(0);
    const adapter = LoraAdapter.init(model.config, { r: 16, lora_alpha: 32, lora_dropout: 0.05, target_modules: resolveTargetModules('all-linear'), use_rslora: false, layers_to_transform: null }, rng);
    const rows = [0, 1].map(() => {
      const ids = Array.from({ length: 64 }, () => 3 + rng.int(500));
      return { input_ids: ids, labels: ids };
    });
    const batch = collate(rows, 0);
    const meter = meterBackendMemory();
    const resident = meter.read().bytes;
    const { value, grads } = tf.variableGrads(() => sftLossSum(model, batch, { adapter, dropoutSeed: () => rng.nextU32(), gradientCheckpointing: gradient_checkpointing }), [...adapter.variables().values()]);
    tf.dispose([value, ...Object.values(grads)]);
    const measured = meter.read().peak - resident;
    meter.dispose();
    adapter.dispose();
    const predicted = estimate.activations + estimate.logits;
    expect(predicted).toBeGreaterThanOrEqual(measured);
    expect(predicted).toBeLessThan(3 * measured);
  });

  it('counts both rows of a preference pair, for DPO above SFT at the same recipe', () => {
    const sft = estimateMemory(model, recipe({ per_device_train_batch_size: 2, max_length: 64 }), undefined);
    const dpo = estimateMemory(model, recipe({ method: 'dpo', per_device_train_batch_size: 2, max_length: 64 }), undefined);
    expect(dpo.activations).toBeGreaterThan(sft.activations);
    expect(dpo.total).toBeGreaterThan(sft.total);
    // Chosen and rejected rows run through one pass: a pair costs what two SFT rows do.
    expect(dpo).toEqual(estimateMemory(model, recipe({ per_device_train_batch_size: 4, max_length: 64 }), undefined));

    // KTO's KL term needs two rows a micro-batch, so its batch of two is not halved.
    const kto = estimateMemory(model, recipe({ method: 'kto', per_device_train_batch_size: 2, max_length: 512 }), limits(2 ** 20));
    expect(kto.suggestion).toBe('One logits buffer needs 2 MiB and this GPU allows 1 MiB; lower max_length to 256.');
  });

  it.each([true, false])('bounds the physical peak of a real DPO step, reference pass included, within a factor of three (gradient_checkpointing %s)', async (gradient_checkpointing) => {
    const r = recipe({ method: 'dpo', per_device_train_batch_size: 2, max_length: 64, gradient_checkpointing, peft: { r: 16, lora_dropout: 0.05 } });
    const estimate = estimateMemory(model, r, undefined);
    const rng = new Rng(0);
    const adapter = LoraAdapter.init(model.config, { r: 16, lora_alpha: 32, lora_dropout: 0.05, target_modules: resolveTargetModules('all-linear'), use_rslora: false, layers_to_transform: null }, rng);
    const tokens = (n: number) => Array.from({ length: n }, () => 3 + rng.int(500));
    // Prompt + completion fill max_length, for the chosen and the rejected row alike.
    const pairs = [1, 2].map((line) => ({ line, prompt_ids: tokens(32), chosen_ids: tokens(32), rejected_ids: tokens(32) }));
    const dpo = dpoMethod({ beta: 0.1, loss_type: 'sigmoid', padTokenId: 0 });
    const batch = dpo.collate(pairs);
    const ctx = { model, adapter, dropoutSeed: () => rng.nextU32(), gradientCheckpointing: gradient_checkpointing };
    const meter = meterBackendMemory();
    const resident = meter.read().bytes;
    await dpo.prepareBatch!(batch, ctx);
    const { value, grads } = tf.variableGrads(() => {
      const { loss, metrics } = dpo.loss(batch, ctx);
      tf.dispose(Object.values(metrics));
      return loss as tf.Scalar;
    }, [...adapter.variables().values()]);
    tf.dispose([value, ...Object.values(grads)]);
    const measured = meter.read().peak - resident;
    meter.dispose();
    adapter.dispose();
    const predicted = estimate.activations + estimate.logits;
    expect(predicted).toBeGreaterThanOrEqual(measured);
    expect(predicted).toBeLessThan(3 * measured);
  });

  it('counts GRPO\'s sequences as a prompt and its completion, and keeps its groups whole when shrinking', () => {
    const grpo = (r: Partial<RecipeInput>) => recipe({ method: 'grpo', reward_funcs: [{ name: 'json' }], num_generations: 4, max_prompt_length: 32, max_completion_length: 32, ...r } as Partial<RecipeInput>);
    // 4 completions of 32 + 32 tokens cost what 4 SFT rows of 64 do.
    expect(estimateMemory(model, grpo({ per_device_train_batch_size: 4 }), undefined)).toEqual(estimateMemory(model, recipe({ per_device_train_batch_size: 4, max_length: 64 }), undefined));
    const eight = grpo({ per_device_train_batch_size: 8, max_completion_length: 480 });
    expect(estimateMemory(model, eight, limits(2 ** 20)).suggestion).toBe('One logits buffer needs 8 MiB and this GPU allows 1 MiB; halve per_device_train_batch_size to 4 and double gradient_accumulation_steps to 2, which keeps the effective batch.');
    const one = grpo({ per_device_train_batch_size: 4, max_completion_length: 480 });
    expect(estimateMemory(model, one, limits(2 ** 20)).suggestion).toContain('lower max_completion_length to 240');
  });

  it('counts a quantised base\'s projections at their packed size, and says what that saves', () => {
    const base = estimateMemory(model, recipe({ max_length: 64 }), undefined);
    expect(base.weights_unquantized).toBeNull();
    const nf4 = estimateMemory(model, recipe({ max_length: 64, quantization: { load_in_4bit: true } } as Partial<RecipeInput>), undefined);
    const dq = estimateMemory(model, recipe({ max_length: 64, quantization: { load_in_4bit: true, bnb_4bit_use_double_quant: true } } as Partial<RecipeInput>), undefined);
    const int8 = estimateMemory(model, recipe({ max_length: 64, quantization: { load_in_8bit: true } } as Partial<RecipeInput>), undefined);
    expect(nf4.weights_unquantized).toBe(base.weights);
    expect(dq.weights).toBeLessThan(nf4.weights);
    expect(nf4.weights).toBeLessThan(int8.weights);
    expect(int8.weights).toBeLessThan(base.weights);
    expect(nf4.activations).toBe(base.activations);
  });

  it('counts full fine-tuning as gradients and moments on top of the weights', () => {
    const small = recipe({ peft: { type: 'full' }, max_length: 2, per_device_train_batch_size: 1 });
    const full = estimateMemory(model, small, undefined);
    expect(full.trainable).toBe(3 * full.weights);
    expect(full.limit).toBeNull();
    expect(shrinkAdvice(full, small, model)).toBe(
      'use peft.type "lora" instead of "full", which trains a small adapter instead of the weights',
    );
  });

  it('recognises allocation failures of the CPU and WASM backends', () => {
    expect(isAllocationError(new RangeError('Array buffer allocation failed'))).toBe(true);
    expect(isAllocationError(new Error('Aborted(OOM)'))).toBe(true);
    expect(isAllocationError(new Error('Cannot enlarge memory arrays to size 4294967296 bytes'))).toBe(true);
    expect(isAllocationError(new Error('Shapes do not match'))).toBe(false);
  });
});
