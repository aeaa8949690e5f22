// The StudioWorker on WebGPU (Dawn in Node, SwiftShader without a GPU): a device lost mid-run and an
// out-of-memory error caught by the step's error scope each fail the run with a sentence that
// says what to do, keep the last checkpoint, and a lost device is replaced when the run resumes.
// Its own file because tfjs keeps one engine per process and vitest's forks pool gives each file one.
import 'fake-indexeddb/auto';
import { IDBFactory } from 'fake-indexeddb';
import { beforeAll, describe, expect, it } from 'vitest';
import { installNodeWebGPU } from '../../src/engine/backend/node_webgpu.ts';
import type { RecipeInput } from '../../src/engine/recipe.ts';
import { activeDevice } from '../../src/worker/device_guard.ts';
import type { FolderBytes, RunEvent } from '../../src/worker/protocol.ts';
import { StudioWorker } from '../../src/worker/studio_worker.ts';
import { buildTinyModelFolder } from './helpers/tiny_model.ts';

const hasWebGPU = await installNodeWebGPU();
if (!hasWebGPU) console.warn("the StudioWorker on WebGPU (skipped: Dawn found no adapter; install Debian's chromium for SwiftShader, or set VK_ICD_FILENAMES)");

// SwiftShader takes seconds per dispatch-heavy step: a one-layer random model keeps this short.
const MODEL = 'tiny-llama';
const TRAIN = {
  file: 'stories.jsonl',
  data: ['Tom had a red ball.', 'Lily saw a big dog.', 'A cat found a box.', 'Ben went to the beach.'].map((text) => JSON.stringify({ text })).join('\n'),
};
const RECIPE: RecipeInput = {
  model: MODEL,
  train_file: TRAIN.file,
  peft: { type: 'lora', r: 4, lora_alpha: 8, lora_dropout: 0 },
  per_device_train_batch_size: 2,
  max_steps: 2,
  save_steps: 1,
  logging_steps: 1,
};

function run(onEvent?: (e: RunEvent) => void) {
  const events: RunEvent[] = [];
  let resolve!: (e: RunEvent) => void;
  const ended = new Promise<RunEvent>((r) => (resolve = r));
  return {
    events,
    ended,
    onEvent: (e: RunEvent) => {
      events.push(e);
      onEvent?.(e);
      if (e.type === 'status' && e.status !== 'running') resolve(e);
    },
  };
}

let studio: StudioWorker;

beforeAll(async () => {
  if (!hasWebGPU) return;
  studio = new StudioWorker({ idbFactory: new IDBFactory() });
  expect((await studio.init('webgpu')).name).toBe('webgpu');
  const folder = buildTinyModelFolder({ architecture: 'LlamaForCausalLM', tokenizer: 'stories', layers: 1 });
  const files: FolderBytes = Object.fromEntries(Object.entries(folder).map(([n, c]) => [n, typeof c === 'string' ? new TextEncoder().encode(c) : c]));
  await studio.loadModel(MODEL, files);
});

describe.skipIf(!hasWebGPU)('the StudioWorker on WebGPU', () => {
  it('a device lost mid-run keeps the last checkpoint and offers resume, which continues on a new device', async () => {
    const lost = run((e) => {
      if (e.type === 'checkpoint' && e.step === 1) activeDevice()!.destroy();
    });
    const id = await studio.startTraining(RECIPE, TRAIN, lost.onEvent);
    expect((await lost.ended).status).toBe('failed');
    const message = lost.events.find((e) => e.type === 'error')?.message;
    expect(message).toMatch(/^The GPU device was lost during step 2 \(.+\); the checkpoint from step 1 is kept, so resume the run to continue from there\.$/);
    expect((await studio.listRuns()).find((r) => r.id === id)).toMatchObject({ status: 'failed', checkpoint_step: 1 });

    const resumed = run();
    await studio.startTraining(RECIPE, TRAIN, resumed.onEvent, id);
    expect((await resumed.ended).status).toBe('finished');
    expect(resumed.events.filter((e) => e.type === 'log').map((e) => e.step)).toEqual([2]);
    expect(activeDevice()).not.toBeNull();
    expect((await studio.chat([{ role: 'user', content: 'Once' }], { adapter: true, temperature: 0, max_new_tokens: 2 }, () => undefined)).tokens).toBe(2);
  });

  it('an out-of-memory error in a step fails the run with the change that shrinks it', async () => {
    // Dawn on SwiftShader has memory to spare: the error scope of step 1 is made to report a failure.
    const device = activeDevice()!;
    const pop = device.popErrorScope.bind(device);
    let pops = 0;
    device.popErrorScope = async () => {
      const error = await pop();
      return ++pops === 1 ? ({ message: 'Not enough memory left.' } as GPUError) : error;
    };
    const oom = run();
    try {
      await studio.startTraining({ ...RECIPE, max_steps: 1 }, TRAIN, oom.onEvent);
      expect((await oom.ended).status).toBe('failed');
    } finally {
      device.popErrorScope = pop;
    }
    const message = oom.events.find((e) => e.type === 'error')?.message;
    expect(message).toBe(
      'Training ran out of memory at step 1 (no checkpoint had been saved yet); to make it fit, halve per_device_train_batch_size to 1 and double gradient_accumulation_steps to 2, which keeps the effective batch.',
    );
  });
});
