// The Trainer's bookkeeping on the real stories260K: when it evaluates and logs, how epochs,
// micro-batches and gradient accumulation divide the data, and what it reports.
import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { nodeFolder } from '../../src/cli/fs_files.ts';
import { parseRecipe, type RecipeInput } from '../../src/engine/recipe.ts';
import { prepareRun } from '../../src/engine/run.ts';
import type { LogEntry } from '../../src/engine/train/trainer.ts';
import { STORIES_DIR } from './helpers/tiny_model.ts';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

const ROWS = ['The cat sat.', 'A dog ran.', 'Tom had a ball.', 'Sue saw a bird.', 'The sun was hot.', 'Ben ate a pie.', 'Mia sang a song.'];
const TRAIN = { text: ROWS.map((text) => JSON.stringify({ text })).join('\n'), file: 'train.jsonl' };

async function run(overrides: Partial<RecipeInput>) {
  const recipe = parseRecipe({ model: STORIES_DIR, train_file: TRAIN.file, peft: { r: 4, lora_dropout: 0 }, learning_rate: 1e-3, logging_steps: 1, ...overrides }, 'recipe.json');
  const logs: LogEntry[] = [];
  const prepared = await prepareRun(recipe, { model: nodeFolder(STORIES_DIR), train: TRAIN }, { onLog: (e) => void logs.push(e) });
  try {
    await prepared.trainer.train();
    return { logs, trainer: prepared.trainer, evalCount: prepared.evalExamples.length };
  } finally {
    prepared.dispose();
  }
}

describe('the training loop', () => {
  it('evaluates at the end of each epoch when eval_steps is null', async () => {
    // 7 rows, eval_split 2/7 → 5 train rows; batch 2 → 3 micro-batches; accumulation 2 → 2 steps an epoch.
    const { logs, trainer, evalCount } = await run({ eval_split: 0.3, per_device_train_batch_size: 2, gradient_accumulation_steps: 2, num_train_epochs: 2 });
    expect(evalCount).toBe(2);
    expect(trainer.stepsPerEpoch).toBe(2);
    expect(trainer.totalSteps).toBe(4);
    const evals = logs.filter((l) => l.eval_loss !== undefined);
    expect(evals.map((e) => [e.step, e.epoch])).toEqual([[2, 1], [4, 2]]);
    expect(evals.every((e) => e.eval_num_tokens! > 0 && Number.isFinite(e.eval_loss))).toBe(true);
    const train = logs.filter((l) => l.loss !== undefined);
    expect(train.map((l) => l.step)).toEqual([1, 2, 3, 4]);
    // Step 2 ends the epoch with the last, single micro-batch: half the rows of step 1.
    expect(train.map((l) => l.epoch)).toEqual([0.6667, 1, 1.6667, 2]);
    for (const l of train) {
      expect(l.learning_rate).toBeGreaterThan(0);
      expect(l.grad_norm).toBeGreaterThan(0);
      expect(l.tokens_per_second).toBeGreaterThan(0);
    }
  });

  it('evaluates every eval_steps and at the last step, and logs every logging_steps and at the last step', async () => {
    const { logs } = await run({ eval_split: 0.3, per_device_train_batch_size: 1, max_steps: 5, eval_steps: 2, logging_steps: 2 });
    expect(logs.filter((l) => l.eval_loss !== undefined).map((e) => e.step)).toEqual([2, 4, 5]);
    expect(logs.filter((l) => l.loss !== undefined).map((e) => e.step)).toEqual([1, 2, 4, 5]);
  });

  it('follows the linear schedule with warmup, one rate per optimizer step', async () => {
    const { logs } = await run({ per_device_train_batch_size: 4, max_steps: 4, warmup_steps: 2, lr_scheduler_type: 'linear', learning_rate: 1e-3 });
    expect(logs.map((l) => l.learning_rate)).toEqual([0, 5e-4, 1e-3, 5e-4]);
  });
});
