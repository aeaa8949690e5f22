// The seam's online path (what GRPO plugs into): a method whose rollout generates the step's
// batches. The Trainer hands it the step's examples in micro-batch groups (prompts per micro-batch
// as the method says), once per optimizer step, with its own RNG, so a run resumed from a
// checkpoint samples the same completions and ends on the identical adapter.
import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { nodeFolder } from '../../src/cli/fs_files.ts';
import { memoryFiles } from '../../src/engine/io/files.ts';
import { adapterFiles } from '../../src/engine/io/peft.ts';
import { parseSafetensors } from '../../src/engine/io/safetensors.ts';
import { generate } from '../../src/engine/model/generate.ts';
import { LoraAdapter } from '../../src/engine/model/lora.ts';
import { parseRecipe } from '../../src/engine/recipe.ts';
import { Rng } from '../../src/engine/rng.ts';
import { loadModel } from '../../src/engine/run.ts';
import { collate, type HostBatch } from '../../src/engine/train/batch.ts';
import type { Method } from '../../src/engine/train/method.ts';
import { sftLossSum } from '../../src/engine/train/methods/sft.ts';
import { Trainer } from '../../src/engine/train/trainer.ts';
import { STORIES_DIR } from './helpers/tiny_model.ts';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

const PROMPTS = ['Once upon a time', 'Tom had a', 'Lily saw a', 'The sun was', 'One day, a cat'];
const GENERATIONS = 2;

/** Self-training on its own samples: 2 completions per prompt, 4 tokens each, trained on like SFT. */
function sampleAndImitate(calls: { step: number; groups: number[] }[]): Method<number[], HostBatch> {
  return {
    name: 'toy-online',
    metrics: [],
    examplesPerMicroBatch: (rows) => rows / GENERATIONS,
    collate: () => {
      throw new Error('an online method is never collated directly');
    },
    countItems: (b) => b.targets.length,
    countTokens: (b) => b.num_tokens,
    loss: (b, ctx) => ({ loss: sftLossSum(ctx.model, b, ctx), metrics: {} }),
    async rollout(groups, ctx) {
      calls.push({ step: ctx.step, groups: groups.map((g) => g.length) });
      const out: HostBatch[] = [];
      for (const prompts of groups) {
        const completions = await generate(ctx.model, prompts, { adapter: ctx.adapter, num_return_sequences: GENERATIONS, do_sample: true, temperature: 1, top_k: 0, max_new_tokens: 4, rng: ctx.rng, eos_token_id: [] });
        const rows = completions.map((c, i) => {
          const prompt = prompts[Math.floor(i / GENERATIONS)];
          return { input_ids: [...prompt, ...c], labels: [...prompt.map(() => -100), ...c] };
        });
        out.push(collate(rows, 0));
      }
      return out;
    },
  };
}

async function setup() {
  const loaded = await loadModel(nodeFolder(STORIES_DIR));
  const recipe = parseRecipe({ model: STORIES_DIR, train_file: 'prompts.jsonl', per_device_train_batch_size: 4, gradient_accumulation_steps: 2, max_steps: 3, save_steps: 1, logging_steps: 1, learning_rate: 1e-2, peft: { r: 4, lora_dropout: 0 } }, 'recipe.json');
  const adapter = LoraAdapter.init(loaded.model.config, { r: 4, lora_alpha: 8, lora_dropout: 0, target_modules: ['q_proj', 'v_proj'], use_rslora: false, layers_to_transform: null }, new Rng(1));
  const prompts = PROMPTS.map((p) => loaded.tokenizer.encode(p));
  return { loaded, recipe, adapter, prompts };
}

describe('an online method on the Method seam', () => {
  it('generates each step from its prompts, per micro-batch, and resumes to the identical adapter', async () => {
    const calls: { step: number; groups: number[] }[] = [];
    const checkpoints = new Map<number, Record<string, Uint8Array>>();
    const a = await setup();
    const trainer = new Trainer({
      recipe: a.recipe,
      model: a.loaded.model,
      adapter: a.adapter,
      params: a.adapter.variables(),
      method: sampleAndImitate(calls),
      train: a.prompts,
      eval: null,
      saveModel: () => adapterFiles(a.adapter, 'stories260K'),
      callbacks: { onCheckpoint: (step, files) => void checkpoints.set(step, files) },
    });
    await trainer.train();
    // 4 rows a micro-batch at 2 generations = 2 prompts; 2 micro-batches a step; 5 prompts make
    // 3 micro-batches an epoch (2, 2, 1), so step 2 ends the epoch with one group.
    expect(calls).toEqual([
      { step: 1, groups: [2, 2] },
      { step: 2, groups: [1] },
      { step: 3, groups: [2, 2] },
    ]);
    expect(trainer.stepsPerEpoch).toBe(2);
    const expected = (await adapterFiles(a.adapter, 'stories260K'))['adapter_model.safetensors'];
    trainer.dispose();
    a.adapter.dispose();

    // From the checkpoint of step 1: the same samples, the same adapter.
    const b = await setup();
    const resumedCalls: { step: number; groups: number[] }[] = [];
    const from = memoryFiles('checkpoint-1', checkpoints.get(1)!);
    const adapter = LoraAdapter.fromSafetensors(b.loaded.model.config, a.adapter.config, parseSafetensors(checkpoints.get(1)!['adapter_model.safetensors'], 'adapter_model.safetensors'));
    const resumed = new Trainer({
      recipe: b.recipe,
      model: b.loaded.model,
      adapter,
      params: adapter.variables(),
      method: sampleAndImitate(resumedCalls),
      train: b.prompts,
      eval: null,
      saveModel: () => adapterFiles(adapter, 'stories260K'),
    });
    await resumed.restore(from);
    await resumed.train();
    expect(resumedCalls).toEqual(calls.slice(1));
    expect(Buffer.from((await adapterFiles(adapter, 'stories260K'))['adapter_model.safetensors']).equals(Buffer.from(expected))).toBe(true);
    resumed.dispose();
    adapter.dispose();
  });
});
