// Activation memory, measured physically (each backend buffer once, `meterBackendMemory`) on a
// small Llama-shaped model: what a LoRA step keeps per token, layer and hidden unit, what
// gradient checkpointing saves, and that steps leave no tensor behind.
import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../../src/engine/backend/index.ts';
import { meterBackendMemory } from '../../src/engine/backend/memory.ts';
import { CausalLM, expectedWeights } from '../../src/engine/model/llama.ts';
import { parseModelConfig } from '../../src/engine/model/config.ts';
import { LoraAdapter, resolveTargetModules } from '../../src/engine/model/lora.ts';
import { collate } from '../../src/engine/train/batch.ts';
import { sftLossSum, sftMethod } from '../../src/engine/train/methods/sft.ts';
import { trainStep } from '../../src/engine/train/step.ts';
import { AdamW } from '../../src/engine/train/optim.ts';
import { Rng } from '../../src/engine/rng.ts';

const H = 128;
const I = 344;
const L = 6;
const T = 64;
const RAW = {
  architectures: ['LlamaForCausalLM'], hidden_size: H, intermediate_size: I, num_hidden_layers: L, num_attention_heads: 4,
  num_key_value_heads: 2, vocab_size: 512, max_position_embeddings: 512, tie_word_embeddings: true, rms_norm_eps: 1e-5, rope_theta: 10000,
};

let model: CausalLM;
beforeAll(async () => {
  await initBackend('cpu');
  const rng = new Rng(0);
  const list = expectedWeights(parseModelConfig(RAW));
  const tensors = new Map(list.map(([name, shape]) => [name, { dtype: 'F32' as const, shape }]));
  model = await CausalLM.load(RAW, {
    tensors,
    readWeights: async (onWeight) => {
      for (const [name, shape] of list) {
        const n = shape.reduce((a, b) => a * b, 1);
        await onWeight({ name, dtype: 'F32', shape, data: name.endsWith('norm.weight') ? rng.uniform(n, 0.9, 1.1) : rng.uniform(n, -0.1, 0.1) });
      }
    },
  }, 'small-llama');
});

function lora(rng: Rng, dropout = 0): LoraAdapter {
  return LoraAdapter.init(model.config, { r: 16, lora_alpha: 32, lora_dropout: dropout, target_modules: resolveTargetModules('all-linear'), use_rslora: false, layers_to_transform: null }, rng);
}

/** Physical peak above what was resident, for one forward and backward pass. */
function peakOfStep(adapter: LoraAdapter, gradientCheckpointing: boolean, rng: Rng): number {
  const ids = Array.from({ length: T }, () => 3 + rng.int(500));
  const batch = collate([{ input_ids: ids, labels: ids }], 0);
  const meter = meterBackendMemory();
  const resident = meter.read().bytes;
  const { value, grads } = tf.variableGrads(() => sftLossSum(model, batch, { adapter, gradientCheckpointing }), [...adapter.variables().values()]);
  tf.dispose([value, ...Object.values(grads)]);
  const peak = meter.read().peak - resident;
  meter.dispose();
  return peak;
}

describe('activation memory of a LoRA step', () => {
  it('keeps at most 40 floats per token, layer and hidden unit without checkpointing', () => {
    const rng = new Rng(1);
    const adapter = lora(rng);
    const floats = peakOfStep(adapter, false, rng) / 4 / (T * L * H);
    adapter.dispose();
    expect(floats).toBeLessThanOrEqual(40);
  });

  it('with checkpointing peaks lower by at least what the other layers no longer keep', () => {
    const rng = new Rng(2);
    const adapter = lora(rng);
    const off = peakOfStep(adapter, false, rng);
    const on = peakOfStep(adapter, true, rng);
    adapter.dispose();
    // Every layer but the one being recomputed stops keeping at least its MLP's gate, up and
    // product (3 × intermediate floats a token) and its queries (hidden floats a token).
    expect(off - on).toBeGreaterThanOrEqual((L - 1) * T * (3 * I + H) * 4);
  });

  it.each([false, true])('leaves the tensor count flat over training steps (gradient_checkpointing %s)', async (gradientCheckpointing) => {
    const rng = new Rng(3);
    const adapter = lora(rng, 0.05);
    const params = adapter.variables();
    const optimizer = new AdamW(params, { weight_decay: 0 });
    const micro = [0, 1].map(() => {
      const ids = Array.from({ length: 20 }, () => 3 + rng.int(500));
      return collate([{ input_ids: ids, labels: ids }], 0);
    });
    const counts: number[] = [];
    for (let s = 0; s < 3; s++) {
      await trainStep(params, micro, sftMethod({ padTokenId: 0 }), { model, adapter, gradientCheckpointing, dropoutSeed: () => rng.nextU32() }, optimizer, 1e-3, 1);
      counts.push(tf.memory().numTensors);
    }
    optimizer.dispose();
    adapter.dispose();
    expect(counts[2]).toBe(counts[1]);
    expect(counts[1]).toBe(counts[0]);
  });
});
