// The SFT path on tfjs's WASM backend (the browser's fallback when there is no WebGPU) against
// the CPU backend, on the real stories260K: the loss, one LoRA step through the Trainer, and the
// loss after it. Its own file: tfjs keeps one engine per process.
import { expect, it } from 'vitest';
import { nodeFolder } from '../../src/cli/fs_files.ts';
import { initBackend } from '../../src/engine/backend/index.ts';
import { parseRecipe } from '../../src/engine/recipe.ts';
import { prepareRun } from '../../src/engine/run.ts';
import type { LogEntry } from '../../src/engine/train/trainer.ts';
import { STORIES_DIR } from './helpers/tiny_model.ts';

const TRAIN = {
  text: ['Once upon a time, there was a little boy named Tim.', 'Lily and her mom went to the park.', 'The dog ran fast.'].map((text) => JSON.stringify({ text })).join('\n'),
  file: 'stories.jsonl',
};
const RECIPE = parseRecipe(
  { model: STORIES_DIR, train_file: TRAIN.file, peft: { r: 8, lora_alpha: 16, lora_dropout: 0 }, learning_rate: 1e-2, max_steps: 2, per_device_train_batch_size: 2, logging_steps: 1 },
  'recipe.json',
);

async function sftOn(name: 'cpu' | 'wasm') {
  expect((await initBackend(name)).name).toBe(name);
  const logs: LogEntry[] = [];
  const run = await prepareRun(RECIPE, { model: nodeFolder(STORIES_DIR), train: TRAIN }, { onLog: (e) => void logs.push(e) });
  try {
    const before = (await run.trainer.evaluate(run.train.examples)).loss;
    await run.trainer.train();
    const after = (await run.trainer.evaluate(run.train.examples)).loss;
    return { before, after, logs };
  } finally {
    run.dispose();
  }
}

it('WASM gives the CPU backend’s SFT loss, step losses and loss after two LoRA steps within 1e-4', async () => {
  const cpu = await sftOn('cpu');
  const wasm = await sftOn('wasm');
  expect(Math.abs(wasm.before - cpu.before)).toBeLessThan(1e-4);
  expect(wasm.logs.map((l) => l.step)).toEqual([1, 2]);
  wasm.logs.forEach((l, i) => {
    expect(Math.abs(l.loss! - cpu.logs[i].loss!)).toBeLessThan(1e-4);
    expect(Math.abs(l.grad_norm! - cpu.logs[i].grad_norm!)).toBeLessThan(1e-3);
  });
  expect(Math.abs(wasm.after - cpu.after)).toBeLessThan(1e-4);
  expect(cpu.after).toBeLessThan(cpu.before);
});
