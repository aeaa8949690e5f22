// GRPO through the whole run (recipe → prompts → rollout → rewards → loss → optimizer) on the real
// stories260K, on CPU: what a step logs, what the rollout log holds, and that it learns.
import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { nodeFolder } from '../../src/cli/fs_files.ts';
import { memoryFiles } from '../../src/engine/io/files.ts';
import { generate } from '../../src/engine/model/generate.ts';
import { parseRecipe } from '../../src/engine/recipe.ts';
import { prepareRun } from '../../src/engine/run.ts';
import type { LogEntry } from '../../src/engine/train/trainer.ts';
import type { CompletionRecord } from '../../src/engine/train/methods/grpo.ts';
import { STORIES_DIR } from './helpers/tiny_model.ts';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

const PROMPTS = ['Once upon a time', 'Tom had a', 'Lily saw a', 'The sun was', 'One day, a cat', 'The dog ran'];

function trainText(prompts = PROMPTS): string {
  return prompts.map((p, i) => JSON.stringify({ prompt: p, answer: String(i) })).join('\n') + '\n';
}

async function run(recipe: Record<string, unknown>, prompts = PROMPTS, extra: { resumeFrom?: Record<string, Uint8Array>; stopAt?: number } = {}) {
  const r = parseRecipe({ model: STORIES_DIR, train_file: 'prompts.jsonl', method: 'grpo', logging_steps: 1, save_steps: 1000, peft: { r: 4, lora_dropout: 0 }, ...recipe }, 'recipe.json');
  const logs: LogEntry[] = [];
  const records: CompletionRecord[] = [];
  const warnings: string[] = [];
  const checkpoints = new Map<number, Record<string, Uint8Array>>();
  const resumeFrom = extra.resumeFrom ? memoryFiles('checkpoint', extra.resumeFrom) : null;
  const prepared = await prepareRun(r, { model: nodeFolder(STORIES_DIR), train: { text: trainText(prompts), file: 'prompts.jsonl' }, resumeFrom }, {
    onLog: (e) => void logs.push(e),
    onCheckpoint: (step, files) => void checkpoints.set(step, files),
    shouldStop: () => extra.stopAt !== undefined && checkpoints.has(extra.stopAt),
  }, {}, {
    online: { onCompletions: (rs) => void records.push(...rs), onWarning: (w) => void warnings.push(w) },
  });
  const adapter = async () => (await prepared.outputFiles())['adapter_model.safetensors'];
  return { prepared, logs, records, warnings, checkpoints, adapter };
}

describe('GRPO', () => {
  it('logs TRL\'s metrics and writes every completion it trains on, with its rewards and advantage', async () => {
    const { prepared, logs, records } = await run({
      reward_funcs: [{ name: 'length', target: 40 }, { name: 'format', pattern: 'Lily' }],
      num_generations: 4,
      per_device_train_batch_size: 8,
      gradient_accumulation_steps: 1,
      max_completion_length: 8,
      max_steps: 2,
      learning_rate: 1e-3,
    });
    await prepared.trainer.train();
    prepared.dispose();
    expect(logs).toHaveLength(2);
    for (const key of ['loss', 'reward', 'reward_std', 'frac_reward_zero_std', 'rewards/length/mean', 'rewards/length/std', 'rewards/format/mean', 'completions/mean_length', 'completions/clipped_ratio', 'entropy', 'clip_ratio/region_mean']) {
      expect(logs[0], key).toHaveProperty([key]);
    }
    expect(logs[0]).not.toHaveProperty(['kl']);
    // 2 prompts × 4 completions a step.
    expect(records).toHaveLength(16);
    expect(records.map((r) => r.step)).toEqual([...Array(8).fill(1), ...Array(8).fill(2)]);
    for (const r of records) {
      expect(Object.keys(r.rewards)).toEqual(['length', 'format']);
      expect(r.completion_ids.length).toBeGreaterThan(0);
      expect(r.completion_ids.length).toBeLessThanOrEqual(8);
      expect(r.prompt_ids.length).toBeGreaterThan(0);
    }
    // Advantages of a group sum to zero (its mean is the baseline).
    for (let g = 0; g < 4; g++) {
      const group = records.slice(g * 4, g * 4 + 4);
      expect(Math.abs(group.reduce((a, r) => a + r.advantage, 0))).toBeLessThan(1e-6);
    }
    expect(logs[0].reward).toBeCloseTo(records.slice(0, 8).reduce((a, r) => a + (r.reward ?? 0), 0) / 8, 5);
  });

  it.each([
    ['on-policy', { num_iterations: 1 }, 2],
    // Step 3 trains again on step 2's rollout: the checkpoint holds it (rollout.json).
    ['num_iterations 2, stopped inside a rollout', { num_iterations: 2, beta: 0.05, loss_type: 'grpo' }, 3],
  ] as const)('%s: resumes from a checkpoint to the identical adapter, sampling the same completions', async (_name, settings, stopAt) => {
    const recipe = {
      reward_funcs: [{ name: 'format', pattern: 'the' }],
      num_generations: 2,
      per_device_train_batch_size: 4,
      max_completion_length: 6,
      max_steps: 4,
      save_steps: 1,
      learning_rate: 1e-2,
      peft: { r: 4, lora_dropout: 0.1 },
      ...settings,
    };
    const straight = await run(recipe);
    await straight.prepared.trainer.train();
    const expected = await straight.adapter();
    straight.prepared.dispose();
    expect(straight.checkpoints.has(stopAt)).toBe(true);
    if (settings.num_iterations === 2) {
      expect(Object.keys(straight.checkpoints.get(3)!)).toContain('rollout.json');
      expect(Object.keys(straight.checkpoints.get(2)!)).not.toContain('rollout.json');
      // One rollout every two steps: steps 1 and 3 generated.
      expect([...new Set(straight.records.map((r) => r.step))]).toEqual([1, 3]);
      expect(straight.logs.every((e) => typeof e.kl === 'number')).toBe(true);
    }

    const resumed = await run(recipe, PROMPTS, { resumeFrom: straight.checkpoints.get(stopAt)! });
    await resumed.prepared.trainer.train();
    expect(Buffer.from(await resumed.adapter()).equals(Buffer.from(expected))).toBe(true);
    const after = (r: CompletionRecord) => r.step > stopAt;
    expect(resumed.records).toEqual(straight.records.filter(after));
    resumed.prepared.dispose();
  });

  it('learns: a reward for mentioning a word raises its mean on held-out prompts (stories260K, fixed seed)', async () => {
    const HELD_OUT = ['There was a', 'Anna liked to', 'The big tree', 'A boy named', 'In the park', 'Mom said', 'The fish', 'Ben found a'];
    const TRAIN = ['Once upon a time', 'Tom had a', 'Lily saw a', 'The sun was', 'One day, a cat', 'The dog ran', 'Sam and Mia', 'The little bird'];
    const { prepared, logs } = await run({
      reward_funcs: [{ name: 'format', pattern: 'girl' }],
      num_generations: 8,
      per_device_train_batch_size: 16,
      max_completion_length: 12,
      max_steps: 8,
      learning_rate: 2e-2,
      peft: { r: 8, lora_alpha: 16, lora_dropout: 0 },
    }, TRAIN);
    const tok = prepared.loaded.tokenizer;
    const heldOutReward = async () => {
      const out = await generate(prepared.loaded.model, HELD_OUT.map((p) => tok.encode(p)), { adapter: prepared.adapter, num_return_sequences: 16, max_new_tokens: 12, temperature: 1, top_k: 0, seed: 123, eos_token_id: tok.eosTokenIds });
      return out.filter((c) => tok.decode(c, { skip_special_tokens: true }).includes('girl')).length / out.length;
    };
    const before = await heldOutReward();
    await prepared.trainer.train();
    const after = await heldOutReward();
    prepared.dispose();
    expect(before).toBeLessThan(0.1);
    expect(after).toBeGreaterThan(0.4);
    expect(Number(logs.at(-1)!.reward)).toBeGreaterThan(Number(logs[0].reward));
  }, 120_000);
});
