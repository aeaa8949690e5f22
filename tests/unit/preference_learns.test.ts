// The preference methods learn, not just run: on the real pretrained stories260K, pairs that prefer
// one ending ("… was very happy.") over another ("… was very sad.") teach the model to prefer it on
// held-out prompts it never saw (other names, other places). Fixed seeds; the numbers asserted are
// the methods' own metrics on the held-out pairs, the base model's first.
import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { nodeFolder } from '../../src/cli/fs_files.ts';
import { parseRecipe, type MethodName } from '../../src/engine/recipe.ts';
import { prepareRun } from '../../src/engine/run.ts';
import { prepareMethodData } from '../../src/engine/train/methods/index.ts';
import { STORIES_DIR } from './helpers/tiny_model.ts';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

const TRAIN_NAMES = ['Lily', 'Tom', 'Ben', 'Sue', 'Mia', 'Tim', 'Anna', 'Max'];
const TRAIN_PLACES = ['the park', 'the beach', 'the garden', 'the store'];
const HELD_OUT_NAMES = ['Sam', 'Lucy', 'Jack', 'Zoe'];
const HELD_OUT_PLACES = ['the forest', 'school'];

function pairs(names: string[], places: string[]): string {
  const rows = names.flatMap((n) => places.map((p) => ({ prompt: `Once upon a time, ${n} went to ${p}.`, chosen: ` ${n} was very happy.`, rejected: ` ${n} was very sad.` })));
  return rows.map((r) => JSON.stringify(r)).join('\n') + '\n';
}

const TRAIN = { file: 'pairs.jsonl', text: pairs(TRAIN_NAMES, TRAIN_PLACES) };
const HELD_OUT = { file: 'held_out.jsonl', text: pairs(HELD_OUT_NAMES, HELD_OUT_PLACES) };

function recipe(method: MethodName) {
  return parseRecipe(
    {
      model: STORIES_DIR,
      train_file: TRAIN.file,
      method,
      peft: { type: 'lora', r: 8, lora_alpha: 16, lora_dropout: 0 },
      learning_rate: 5e-3,
      max_steps: 12,
      per_device_train_batch_size: 4,
      logging_steps: 1,
      seed: 7,
    },
    'recipe.json',
  );
}

describe('preference methods on stories260K', () => {
  it('DPO raises rewards/accuracies on held-out pairs from 0 to at least 0.9', async () => {
    const r = recipe('dpo');
    const run = await prepareRun(r, { model: nodeFolder(STORIES_DIR), train: TRAIN });
    try {
      const heldOut = prepareMethodData(HELD_OUT.text, HELD_OUT.file, run.loaded.tokenizer, r).examples;
      expect(heldOut).toHaveLength(8);
      // A fresh adapter (B = 0) is the reference itself: every reward is 0, so no pair is won yet.
      const before = await run.trainer.evaluate(heldOut);
      expect(before.metrics['rewards/accuracies']).toBe(0);
      expect(before.loss).toBeCloseTo(Math.log(2), 5);
      await run.trainer.train();
      const after = await run.trainer.evaluate(heldOut);
      expect(after.metrics['rewards/accuracies']).toBeGreaterThanOrEqual(0.9);
      expect(after.metrics['rewards/margins']).toBeGreaterThan(0);
      expect(after.loss).toBeLessThan(before.loss);
    } finally {
      run.dispose();
    }
  });

  it('SimPO, with no reference, lifts the chosen ending above the rejected one on held-out pairs', async () => {
    const r = recipe('simpo');
    const run = await prepareRun(r, { model: nodeFolder(STORIES_DIR), train: TRAIN });
    try {
      const heldOut = prepareMethodData(HELD_OUT.text, HELD_OUT.file, run.loaded.tokenizer, r).examples;
      const before = await run.trainer.evaluate(heldOut);
      await run.trainer.train();
      const after = await run.trainer.evaluate(heldOut);
      expect(after.metrics['rewards/margins']).toBeGreaterThan(before.metrics['rewards/margins']);
      expect(after.metrics['rewards/accuracies']).toBeGreaterThanOrEqual(0.9);
    } finally {
      run.dispose();
    }
  });
});
