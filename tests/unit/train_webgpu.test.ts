// The whole SFT path on WebGPU (Dawn in Node; SwiftShader where there is no GPU) against the CPU
// backend, on the real stories260K: the loss, one LoRA step through the Trainer, and the loss
// after it. Its own file because tfjs keeps one engine per process and vitest's forks pool gives
// each file its own process. Every value is read with `await data()`: dataSync throws on WebGPU
// in Node. Two short rows only, since SwiftShader is slow.
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import { nodeFolder } from '../../src/cli/fs_files.ts';
import { initBackend } from '../../src/engine/backend/index.ts';
import { installNodeWebGPU } from '../../src/engine/backend/node_webgpu.ts';
import { parseRecipe } from '../../src/engine/recipe.ts';
import { prepareRun } from '../../src/engine/run.ts';
import type { LogEntry } from '../../src/engine/train/trainer.ts';
import { STORIES_DIR } from './helpers/tiny_model.ts';
import { maxAbsDiff } from './helpers/golden.ts';

const hasWebGPU = await installNodeWebGPU();
const title = hasWebGPU
  ? 'stories260K on the webgpu backend'
  : "stories260K on the webgpu backend (skipped: Dawn found no WebGPU adapter; install Debian's chromium for SwiftShader, or set VK_ICD_FILENAMES)";
// The default reporter shows a skipped suite's count, not its title.
if (!hasWebGPU) console.warn(title);

const TRAIN = {
  text: ['Once upon a time, there was a little boy named Tim.', 'Lily and her mom went to the park.'].map((text) => JSON.stringify({ text })).join('\n'),
  file: 'stories.jsonl',
};

const RECIPE = parseRecipe(
  {
    model: STORIES_DIR,
    train_file: TRAIN.file,
    peft: { type: 'lora', r: 8, lora_alpha: 16, lora_dropout: 0, target_modules: 'all-linear' },
    learning_rate: 1e-2,
    lr_scheduler_type: 'constant',
    max_steps: 1,
    per_device_train_batch_size: 2,
    logging_steps: 1,
    shuffle: false,
  },
  'recipe.json',
);

interface Result {
  lossBefore: number;
  step: LogEntry;
  lossAfter: number;
  adapter: Map<string, Float32Array>;
}

/** Eval loss, one optimizer step through the Trainer, eval loss again, and the trained adapter. */
async function sftOn(name: 'cpu' | 'webgpu'): Promise<Result> {
  const info = await initBackend(name);
  expect(info.name).toBe(name);
  const logs: LogEntry[] = [];
  const run = await prepareRun(RECIPE, { model: nodeFolder(STORIES_DIR), train: TRAIN }, { onLog: (e) => void logs.push(e) });
  try {
    const examples = run.train.examples;
    const lossBefore = (await run.trainer.evaluate(examples)).loss;
    await run.trainer.train();
    const lossAfter = (await run.trainer.evaluate(examples)).loss;
    const adapter = new Map<string, Float32Array>();
    for (const [key, v] of run.adapter!.variables()) adapter.set(key, Float32Array.from((await v.data()) as Float32Array));
    return { lossBefore, step: logs[0], lossAfter, adapter };
  } finally {
    run.dispose();
  }
}

describe.skipIf(!hasWebGPU)(title, () => {
  it('gives the CPU backend’s SFT loss, and its loss after one LoRA step, within 1e-4', async () => {
    // Otherwise ops on small tensors not yet uploaded run on tfjs's CPU kernels, and the
    // comparison would be the CPU against itself.
    tf.env().set('WEBGPU_CPU_FORWARD', false);
    const cpu = await sftOn('cpu');
    const gpu = await sftOn('webgpu');
    expect(tf.backend()).toBeInstanceOf(WebGPUBackend);

    const diffs = {
      loss: Math.abs(gpu.lossBefore - cpu.lossBefore),
      step_loss: Math.abs(gpu.step.loss! - cpu.step.loss!),
      grad_norm: Math.abs(gpu.step.grad_norm! - cpu.step.grad_norm!),
      loss_after_step: Math.abs(gpu.lossAfter - cpu.lossAfter),
      adapter: Math.max(...[...cpu.adapter].map(([k, v]) => maxAbsDiff(gpu.adapter.get(k)!, v))),
    };
    console.log(`cpu loss ${cpu.lossBefore} → ${cpu.lossAfter}; webgpu ${gpu.lossBefore} → ${gpu.lossAfter}; |differences| ${JSON.stringify(diffs)}`);
    // A step really moved the loss, so "after" compares the two backends' updates, not a no-op.
    expect(cpu.lossBefore - cpu.lossAfter).toBeGreaterThan(0.05);
    expect(diffs.loss).toBeLessThanOrEqual(1e-4);
    expect(diffs.step_loss).toBeLessThanOrEqual(1e-4);
    expect(diffs.grad_norm).toBeLessThanOrEqual(1e-4);
    expect(diffs.loss_after_step).toBeLessThanOrEqual(1e-4);
  });
});
