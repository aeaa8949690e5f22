// Checkpoints and resume work for the preference methods exactly as for SFT: a DPO run (with
// precomputed reference log-probs) and a KTO run stopped at a checkpoint and resumed end on the
// bit-identical adapter of the uninterrupted run.
import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { nodeFolder } from '../../src/cli/fs_files.ts';
import { memoryFiles } from '../../src/engine/io/files.ts';
import { parseRecipe, type RecipeInput } from '../../src/engine/recipe.ts';
import { prepareRun } from '../../src/engine/run.ts';
import { STORIES_DIR } from './helpers/tiny_model.ts';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

const NAMES = ['Lily', 'Tom', 'Ben', 'Sue', 'Mia', 'Tim'];
const PAIRS = { file: 'pairs.jsonl', text: NAMES.map((n) => JSON.stringify({ prompt: `${n} went to the park.`, chosen: ` ${n} was happy.`, rejected: ` ${n} was sad.` })).join('\n') + '\n' };

async function adapterOf(run: Awaited<ReturnType<typeof prepareRun>>): Promise<Uint8Array> {
  return (await run.outputFiles())['adapter_model.safetensors'];
}

describe.each([
  ['dpo', { precompute_ref_log_probs: true }],
  ['kto', {}],
] as const)('%s', (method, extra) => {
  it('resumes from a checkpoint to the same adapter as an uninterrupted run', async () => {
    const recipe = parseRecipe(
      { model: STORIES_DIR, train_file: PAIRS.file, method, ...extra, max_steps: 4, per_device_train_batch_size: 2, learning_rate: 5e-3, save_steps: 2, logging_steps: 1, peft: { r: 4, lora_dropout: 0.1 } } as RecipeInput,
      'recipe.json',
    );
    const straight = await prepareRun(recipe, { model: nodeFolder(STORIES_DIR), train: PAIRS });
    await straight.trainer.train();
    const expected = await adapterOf(straight);
    const losses = straight.trainer.logHistory.map((e) => e.loss);
    straight.dispose();

    let checkpoint: Record<string, Uint8Array> | null = null;
    const first = await prepareRun(recipe, { model: nodeFolder(STORIES_DIR), train: PAIRS }, {
      onCheckpoint: (step, files) => {
        if (step === 2) checkpoint = files;
      },
      shouldStop: () => checkpoint !== null,
    });
    await first.trainer.train();
    expect(first.trainer.state.global_step).toBe(2);
    first.dispose();

    const resumed = await prepareRun(recipe, { model: nodeFolder(STORIES_DIR), train: PAIRS, resumeFrom: memoryFiles('checkpoint-2', checkpoint!) });
    await resumed.trainer.train();
    expect(resumed.trainer.state.global_step).toBe(4);
    expect(Buffer.from(await adapterOf(resumed)).equals(Buffer.from(expected))).toBe(true);
    expect(resumed.trainer.logHistory.map((e) => e.loss)).toEqual(losses);
    resumed.dispose();
  });
});
