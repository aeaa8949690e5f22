// What a run trains on and how often it logs: the counts after eval_split, and logging every step
// of a short run whose recipe leaves logging_steps unset (TRL's default of 10 shows almost nothing).
import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { memoryFiles } from '../../src/engine/io/files.ts';
import { parseRecipe, SHORT_RUN_STEPS, type RecipeInput } from '../../src/engine/recipe.ts';
import { optimizerSteps, prepareRun, type RunOptions } from '../../src/engine/run.ts';
import type { LogEntry } from '../../src/engine/train/trainer.ts';
import { buildTinyModelFolder } from './helpers/tiny_model.ts';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

const MODEL = memoryFiles('tiny', buildTinyModelFolder({ architecture: 'LlamaForCausalLM', tokenizer: 'stories', seed: 5 }));
const ROWS = Array.from({ length: 20 }, (_, i) => JSON.stringify({ text: `Tom had ${i + 1} red balls.` })).join('\n');

async function prepare(fields: Partial<RecipeInput>, options?: RunOptions) {
  const recipe = parseRecipe({ model: 'tiny', train_file: 'train.jsonl', peft: { r: 2, lora_dropout: 0 }, ...fields }, 'recipe.json');
  const logs: LogEntry[] = [];
  const run = await prepareRun(recipe, { model: MODEL, train: { text: ROWS, file: 'train.jsonl' } }, { onLog: (e) => void logs.push(e) }, {}, options);
  return { recipe, run, logs };
}

describe('a prepared run', () => {
  it('counts the examples it trains on apart from those eval_split holds out', async () => {
    const { run } = await prepare({ eval_split: 0.2, max_steps: 1 });
    expect(run.train.examples).toHaveLength(20);
    expect(run.trainExamples).toHaveLength(16);
    expect(run.evalExamples).toHaveLength(4);
    expect(run.trainer.state.num_train_examples).toBe(16);
    run.dispose();
  });

  it('counts optimizer steps as the Trainer does', async () => {
    for (const fields of [{ max_steps: 7 }, { num_train_epochs: 3, per_device_train_batch_size: 3 }, { num_train_epochs: 0.5, gradient_accumulation_steps: 4 }, { eval_split: 0.3, num_train_epochs: 2, per_device_train_batch_size: 4, gradient_accumulation_steps: 3 }]) {
      const { run } = await prepare(fields);
      expect(optimizerSteps(run.recipe, run.trainExamples.length), JSON.stringify(fields)).toBe(run.trainer.totalSteps);
      run.dispose();
    }
  });
});

describe('logging_steps left unset', () => {
  it('logs every step of a run shorter than SHORT_RUN_STEPS', async () => {
    const { recipe, run, logs } = await prepare({ max_steps: 4, per_device_train_batch_size: 4 }, { loggingStepsSet: false });
    expect(recipe.logging_steps).toBe(10);
    expect(run.recipe.logging_steps).toBe(1);
    await run.trainer.train();
    expect(logs.filter((e) => e.loss !== undefined).map((e) => e.step)).toEqual([1, 2, 3, 4]);
    expect(run.trainer.trainerStateJson().logging_steps).toBe(1);
    run.dispose();
  });

  it('keeps the default on a run of SHORT_RUN_STEPS steps or more, and a value that was set', async () => {
    const long = await prepare({ max_steps: SHORT_RUN_STEPS }, { loggingStepsSet: false });
    expect(long.run.recipe.logging_steps).toBe(10);
    long.run.dispose();
    const set = await prepare({ max_steps: 4, logging_steps: 10 }, { loggingStepsSet: true });
    expect(set.run.recipe.logging_steps).toBe(10);
    await set.run.trainer.train();
    expect(set.logs.filter((e) => e.loss !== undefined).map((e) => e.step)).toEqual([1, 4]);
    set.run.dispose();
    // A caller that does not say (the studio sets logging_steps itself) gets the recipe's value.
    const unsaid = await prepare({ max_steps: 4 });
    expect(unsaid.run.recipe.logging_steps).toBe(10);
    unsaid.run.dispose();
  });
});
