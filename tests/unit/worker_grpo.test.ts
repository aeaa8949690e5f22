// GRPO in the studio's Worker, in Node: the JavaScript rewards run in a child process standing in
// for the page's sandboxed iframe (the same RewardScriptHost interface); fake-indexeddb stands in
// for IndexedDB. A run streams its rollouts, stores them with the run (completions.jsonl in the
// recipe download), keeps its reward scripts for a resume after a reload, and "Try it" scores
// sample completions without training.
import 'fake-indexeddb/auto';
import { IDBFactory } from 'fake-indexeddb';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { unzipSync } from 'fflate';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nodeRewardHost } from '../../src/cli/reward_process.ts';
import type { RecipeInput } from '../../src/engine/recipe.ts';
import type { RewardScriptHost } from '../../src/engine/train/script_reward.ts';
import type { FolderBytes, RunEvent } from '../../src/worker/protocol.ts';
import { memoryLockManager } from '../../src/worker/run_lock.ts';
import { StudioWorker } from '../../src/worker/studio_worker.ts';
import { STORIES_DIR } from './helpers/tiny_model.ts';

const MODEL = 'stories260K';
const TRAIN = { file: 'prompts.jsonl', data: ['Once upon a time', 'Tom had a', 'Lily saw a', 'The sun was'].map((p, i) => JSON.stringify({ prompt: p, topic: i % 2 ? 'dog' : 'cat' })).join('\n') + '\n' };
const SCRIPTS = { 'rewards/topic.js': 'export default async function mentions_topic(prompts, completions, columns) {\n  return completions.map((c, i) => (c.includes(columns.topic[i]) ? 1 : 0));\n}\n' };
const RECIPE: RecipeInput = {
  model: MODEL,
  train_file: TRAIN.file,
  method: 'grpo',
  reward_funcs: ['rewards/topic.js', { name: 'length', target: 30 }],
  num_generations: 2,
  per_device_train_batch_size: 4,
  max_completion_length: 6,
  max_steps: 3,
  save_steps: 1,
  logging_steps: 1,
  learning_rate: 1e-2,
  peft: { type: 'lora', r: 4, lora_alpha: 8, lora_dropout: 0 },
};

function readFolder(dir: string): FolderBytes {
  return Object.fromEntries(readdirSync(dir).map((name) => [name, new Uint8Array(readFileSync(join(dir, name)))]));
}

function recorder() {
  const events: RunEvent[] = [];
  let wake: (() => void) | null = null;
  const onEvent = (e: RunEvent) => {
    events.push(e);
    if (e.type === 'status' && e.status !== 'running') wake?.();
  };
  const ended = () => new Promise<void>((resolve) => (wake = resolve));
  return { events, onEvent, ended };
}

let host: RewardScriptHost;
let factory: IDBFactory;
let modelFiles: FolderBytes;
const locks = memoryLockManager();

async function studioWorker(): Promise<StudioWorker> {
  const studio = new StudioWorker({ idbFactory: factory, rewardHost: host, locks });
  await studio.init('cpu');
  await studio.loadModel(MODEL, modelFiles);
  return studio;
}

beforeAll(() => {
  host = nodeRewardHost();
  factory = new IDBFactory();
  modelFiles = readFolder(STORIES_DIR);
});
afterAll(async () => {
  await host.dispose();
});

describe('GRPO in the studio Worker', () => {
  it('tries the reward functions on sample completions of the first prompts', async () => {
    const studio = await studioWorker();
    const trial = await studio.tryRewards(RECIPE, TRAIN, SCRIPTS);
    expect(trial.reward_names).toEqual(['mentions_topic', 'length']);
    expect(trial.num_generations).toBe(2);
    expect(trial.records).toHaveLength(4);
    expect(trial.records.map((r) => r.prompt)).toEqual(['Once upon a time', 'Once upon a time', 'Tom had a', 'Tom had a']);
    for (const r of trial.records) expect(Object.keys(r.rewards)).toEqual(['mentions_topic', 'length']);
    await expect(studio.tryRewards(RECIPE, TRAIN, {})).rejects.toThrow('"rewards/topic.js" names a JavaScript reward whose code the studio does not have');
  });

  it('streams and stores each rollout, and resumes after a reload with the stored reward scripts', async () => {
    const studio = await studioWorker();
    const first = recorder();
    const ended = first.ended();
    let paused = false;
    const id = await studio.startTraining(RECIPE, TRAIN, (e) => {
      first.onEvent(e);
      if (e.type === 'checkpoint' && !paused) {
        paused = true;
        void studio.pause();
      }
    }, undefined, 'grpo run', SCRIPTS);
    await ended;
    const rollouts = first.events.filter((e) => e.type === 'completions');
    expect(rollouts.length).toBeGreaterThanOrEqual(1);
    expect(rollouts[0].records).toHaveLength(4);
    expect(rollouts[0].records![0].step).toBe(1);
    const log = first.events.find((e) => e.type === 'log')!.log!;
    expect(log).toHaveProperty(['rewards/mentions_topic/mean']);
    expect((await studio.runCompletions(id)).map((r) => r.step)).toEqual(Array(4).fill(rollouts.at(-1)!.step));

    // A reload: a new Worker on the same database resumes the run; the page sends no scripts.
    await studio.stop();
    const again = await studioWorker();
    const second = recorder();
    const done = second.ended();
    await again.startTraining(RECIPE, { file: '', data: '' }, second.onEvent, id);
    await done;
    expect(second.events.find((e) => e.type === 'status' && e.status !== 'running')?.status).toBe('finished');
    const lastBefore = rollouts.at(-1)!.records![0].step;
    expect(second.events.filter((e) => e.type === 'completions').map((e) => e.records![0].step)).toEqual([2, 3].filter((s) => s > lastBefore));
    const files = unzipSync(await again.exportZip('recipe', id));
    const lines = new TextDecoder().decode(files['completions.jsonl']).trim().split('\n').map((l) => JSON.parse(l));
    expect(lines.map((r) => r.step)).toEqual([1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3]);
  });
});
