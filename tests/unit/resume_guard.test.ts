// Checkpoints and resumed runs that never write or accept garbage: NaN or huge optimizer moments
// and weights, a `resume` block the loop would misread, missing or misshapen files, an output
// folder given instead of a checkpoint, and an init_adapter that is not the recipe's adapter.
// All on the real stories260K, with checkpoints kept in memory.
import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { nodeFolder } from '../../src/cli/fs_files.ts';
import { UserError } from '../../src/engine/errors.ts';
import { memoryFiles } from '../../src/engine/io/files.ts';
import { parseSafetensors, tensorToFloat32, writeSafetensors } from '../../src/engine/io/safetensors.ts';
import { applyOverrides, parseRecipe, type RecipeInput } from '../../src/engine/recipe.ts';
import { prepareRun, type RunSources } from '../../src/engine/run.ts';
import type { TrainerCallbacks } from '../../src/engine/train/trainer.ts';
import { STORIES_DIR } from './helpers/tiny_model.ts';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

const ROWS = ['The cat sat on the mat.', 'A dog ran to the park.', 'Tom had a red ball.', 'Sue saw a big bird.'];
const TRAIN = { text: ROWS.map((text) => JSON.stringify({ text })).join('\n'), file: 'train.jsonl' };
const Q_A = 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight';

function recipe(overrides: Partial<RecipeInput> = {}) {
  return parseRecipe({
    model: STORIES_DIR,
    train_file: TRAIN.file,
    peft: { r: 4, lora_alpha: 8, lora_dropout: 0 },
    learning_rate: 1e-3,
    lr_scheduler_type: 'constant',
    per_device_train_batch_size: 2,
    max_steps: 4,
    save_steps: 2,
    shuffle: true,
    ...overrides,
  }, 'recipe.json');
}

type Files = Record<string, Uint8Array>;
let checkpoints: Map<number, Files>;

beforeAll(async () => {
  checkpoints = new Map();
  const run = await prepareRun(recipe(), { model: nodeFolder(STORIES_DIR), train: TRAIN }, { onCheckpoint: (step, files) => void checkpoints.set(step, files) });
  try {
    await run.trainer.train();
  } finally {
    run.dispose();
  }
}, 60_000);

/** Prepares a run resuming from `files` (checkpoint-2 by default), training it when asked; returns what was saved. */
async function resume(files: Files | ReturnType<typeof memoryFiles>, overrides: Partial<RecipeInput> = {}, train = false) {
  const saved: number[] = [];
  const callbacks: TrainerCallbacks = { onCheckpoint: (step) => void saved.push(step) };
  const source = 'location' in files ? files : memoryFiles('out/checkpoint-2', files as Files);
  const sources: RunSources = { model: nodeFolder(STORIES_DIR), train: TRAIN, resumeFrom: source as ReturnType<typeof memoryFiles> };
  const run = await prepareRun(recipe(overrides), sources, callbacks);
  try {
    if (train) await run.trainer.train();
    return { step: run.trainer.state.global_step, resumedFrom: run.resumedFrom?.location, saved };
  } catch (e) {
    (e as { saved?: number[] }).saved = saved;
    throw e;
  } finally {
    run.dispose();
  }
}

/** Checkpoint-2 with one tensor of a safetensors file changed. */
function withTensor(file: string, name: string, edit: (data: Float32Array, shape: number[]) => { data: Float32Array; shape: number[] }): Files {
  const files = { ...checkpoints.get(2)! };
  const st = parseSafetensors(files[file], file);
  const tensors = [...st.tensors].map(([n, info]) => {
    const t = { data: tensorToFloat32(st, n), shape: [...info.shape] };
    return { name: n, dtype: 'F32' as const, ...(n === name ? edit(Float32Array.from(t.data), t.shape) : t) };
  });
  files[file] = writeSafetensors(tensors, st.metadata);
  return files;
}

function withState(edit: (state: { resume: Record<string, unknown>; log_history: unknown }) => void): Files {
  const files = { ...checkpoints.get(2)! };
  const state = JSON.parse(new TextDecoder().decode(files['trainer_state.json']));
  edit(state);
  files['trainer_state.json'] = new TextEncoder().encode(JSON.stringify(state));
  return files;
}

async function refusal(p: Promise<unknown>): Promise<UserError & { saved?: number[] }> {
  const e = await p.then(() => null, (err: unknown) => err);
  expect(e, 'expected a refusal').toBeInstanceOf(UserError);
  return e as UserError & { saved?: number[] };
}

describe('resuming checks what it loads', () => {
  it('resumes an untouched checkpoint (the control)', async () => {
    const r = await resume(checkpoints.get(2)!, {}, true);
    expect(r.saved).toEqual([4]);
  });

  it('refuses NaN optimizer moments, naming the file, the moment and the tensor, before any step', async () => {
    const files = withTensor('optimizer.safetensors', `${Q_A}.exp_avg_sq`, (data, shape) => (data.fill(NaN, 3, 4), { data, shape }));
    const e = await refusal(resume(files, { save_steps: 1 }, true));
    expect(e.message).toBe(`out/checkpoint-2/optimizer.safetensors: exp_avg_sq of ${Q_A} holds NaN; this checkpoint cannot be resumed.`);
    expect(e.saved ?? []).toEqual([]);
  });

  it('refuses a negative exp_avg_sq (a flipped sign bit), which would put NaN into the next step', async () => {
    const files = withTensor('optimizer.safetensors', `${Q_A}.exp_avg_sq`, (data, shape) => ((data[0] = -0.5), { data, shape }));
    expect((await refusal(resume(files))).message).toMatch(/exp_avg_sq of .*q_proj\.lora_A\.weight holds -0\.5;/);
  });

  it('never saves the weights that huge (flipped-byte) moments produce: the step stops before its checkpoint', async () => {
    const files = withTensor('optimizer.safetensors', `${Q_A}.exp_avg`, (data, shape) => (data.fill(1e30), { data, shape }));
    const e = await refusal(resume(files, { save_steps: 1 }, true));
    expect(e.message).toMatch(new RegExp(`^Training stopped at step 3: the loss became [\\d.]+ but the update left ${Q_A.replace(/\./g, '\\.')} holding (-?\\d\\.\\d\\de\\+\\d+|-?Infinity|NaN), so nothing was saved for this step; lower learning_rate or check the data\\.$`));
    expect(e.saved).toEqual([]);
  });

  it('refuses NaN in the checkpoint\'s adapter weights', async () => {
    const files = withTensor('adapter_model.safetensors', Q_A, (data, shape) => ((data[5] = NaN), { data, shape }));
    expect((await refusal(resume(files))).message).toBe(`out/checkpoint-2/adapter_model.safetensors: ${Q_A} holds NaN; this checkpoint cannot be resumed.`);
  });

  it('names a missing optimizer.safetensors and a misshapen optimizer tensor', async () => {
    const files = { ...checkpoints.get(2)! };
    delete files['optimizer.safetensors'];
    expect((await refusal(resume(files))).message).toMatch(/^out\/checkpoint-2\/optimizer\.safetensors is missing; /);
    const misshapen = withTensor('optimizer.safetensors', `${Q_A}.exp_avg`, (data) => ({ data: data.slice(0, 64), shape: [1, 64] }));
    expect((await refusal(resume(misshapen))).message).toBe(`out/checkpoint-2/optimizer.safetensors: tensor ${Q_A}.exp_avg has shape [1,64] but the parameter has [4,64]; this checkpoint cannot be resumed.`);
  });

  it('refuses an optimizer state written with another optim', async () => {
    expect((await refusal(resume(checkpoints.get(2)!, { optim: 'sgd' }))).message).toMatch(/optimizer\.safetensors: tensor .* belongs to no parameter of this run/);
  });
});

describe('the resume block of trainer_state.json is validated', () => {
  it.each([
    ['global_step as a string', (s: { resume: Record<string, unknown> }) => (s.resume.global_step = '2'), /resume\.global_step must be an integer step from 0 to 4 \(the recipe's total steps\) \(got "2"\)/],
    ['global_step past the end', (s: { resume: Record<string, unknown> }) => (s.resume.global_step = 999), /resume\.global_step must be an integer step from 0 to 4 .*\(got 999\)/],
    ['a short RNG state', (s: { resume: Record<string, unknown> }) => (s.resume.rng = [1, 2]), /resume\.rng must be a list of four unsigned 32-bit integers \(got \[1,2\]\)/],
    ['an RNG word out of range', (s: { resume: Record<string, unknown> }) => ((s.resume.rng as number[])[2] = -5), /resume\.rng\[2\] must be an unsigned 32-bit integer \(got -5\)/],
    ['an order index out of range', (s: { resume: Record<string, unknown> }) => ((s.resume.order as number[])[1] = 99), /resume\.order\[1\] must be an example index from 0 to 3 \(got 99\)/],
    ['an order of the wrong length', (s: { resume: Record<string, unknown> }) => (s.resume.order = [0, 1, 2]), /resume\.order must be a list of the 4 example indices 0 to 3/],
    ['an order with a repeated index', (s: { resume: Record<string, unknown> }) => (s.resume.order = [0, 1, 1, 2]), /resume\.order\[2\] must be an index not already in the list/],
    ['a batch index past the epoch', (s: { resume: Record<string, unknown> }) => (s.resume.batch_index = 7), /resume\.batch_index must be an integer from 0 to 2/],
    ['another data file', (s: { resume: Record<string, unknown> }) => (s.resume.num_train_examples = 5), /trained on 5 examples but train\.jsonl now gives 4/],
    ['no resume block', (s: { resume?: Record<string, unknown> }) => delete s.resume, /has no "resume" block/],
    ['a log_history that is not a list', (s: { log_history: unknown }) => (s.log_history = 'lots'), /log_history must be a list/],
  ])('refuses %s, naming the file and the field', async (_, edit, message) => {
    const e = await refusal(resume(withState(edit as (s: { resume: Record<string, unknown>; log_history: unknown }) => void)));
    expect(e.message).toMatch(/^out\/checkpoint-2\/trainer_state\.json/);
    expect(e.message).toMatch(message);
  });
});

describe('resume_from_checkpoint may name an output folder', () => {
  function outputFolder(extra: Files = {}) {
    const files: Files = { 'trainer_state.json': checkpoints.get(4)!['trainer_state.json'], 'metrics.jsonl': new Uint8Array(), ...extra };
    for (const [step, ckpt] of checkpoints) for (const [name, content] of Object.entries(ckpt)) files[`checkpoint-${step}/${name}`] = content;
    return memoryFiles('out', files);
  }

  it('resumes its newest complete checkpoint, skipping an incomplete one', async () => {
    const r = await resume(outputFolder({ 'checkpoint-6/trainer_state.json': new Uint8Array() }), { max_steps: 6 });
    expect(r.resumedFrom).toBe('out/checkpoint-4');
    expect(r.step).toBe(4);
  });

  it('refuses a folder without a checkpoint in one sentence', async () => {
    const e = await refusal(resume(memoryFiles('out', { 'metrics.jsonl': '', 'checkpoint-2/trainer_state.json': '{}' })));
    expect(e.message).toBe('out holds no complete checkpoint-<step> folder to resume from (checkpoint-2 is incomplete); set resume_from_checkpoint to a checkpoint folder, or leave it out to start afresh.');
  });

  it('the recipe takes true (transformers\' resume_from_checkpoint=True), also as "true" from a command line', () => {
    expect(recipe({ resume_from_checkpoint: true }).resume_from_checkpoint).toBe(true);
    const json = applyOverrides({ model: STORIES_DIR, train_file: TRAIN.file }, { resume_from_checkpoint: 'true' });
    expect(parseRecipe(json, 'recipe.json').resume_from_checkpoint).toBe(true);
    expect(recipe({ resume_from_checkpoint: 'out/checkpoint-2' }).resume_from_checkpoint).toBe('out/checkpoint-2');
  });
});

describe('updated weights are checked before anything is saved', () => {
  it('a diverging step stops before its checkpoint is written', async () => {
    const saved: number[] = [];
    const run = await prepareRun(recipe({ learning_rate: 1e30, max_grad_norm: 0, save_steps: 1 }), { model: nodeFolder(STORIES_DIR), train: TRAIN }, { onCheckpoint: (step) => void saved.push(step) });
    try {
      const e = await refusal(run.trainer.train());
      expect(e.message).toMatch(/^Training stopped at step 1: the loss became [\d.]+ but the update left base_model\.model\.\S+ holding \S+, so nothing was saved for this step; lower learning_rate or check the data\.$/);
      expect(saved).toEqual([]);
      // A checkpoint asked for afterwards (the CLI does on stop) is refused as well.
      await refusal(run.trainer.checkpointFiles());
    } finally {
      run.dispose();
    }
  });
});

describe('init_adapter must be the recipe\'s adapter', () => {
  const adapter = () => memoryFiles('init', { 'adapter_config.json': checkpoints.get(2)!['adapter_config.json'], 'adapter_model.safetensors': checkpoints.get(2)!['adapter_model.safetensors'] });
  const start = (overrides: Partial<RecipeInput>) => prepareRun(recipe(overrides), { model: nodeFolder(STORIES_DIR), train: TRAIN, initAdapter: adapter() }).then((r) => r.dispose());

  it('continues the adapter when r, lora_alpha and target_modules match', async () => {
    await start({});
  });

  it.each([
    [{ peft: { r: 8, lora_alpha: 8, lora_dropout: 0 } }, 'init/adapter_config.json: r is 4 but the recipe\'s peft.r is 8; set peft.r to 4 to train this adapter'],
    [{ peft: { r: 4, lora_alpha: 16, lora_dropout: 0 } }, 'init/adapter_config.json: lora_alpha is 8 but the recipe\'s peft.lora_alpha is 16;'],
    [{ peft: { r: 4, lora_alpha: 8, lora_dropout: 0, target_modules: ['q_proj', 'v_proj'] } }, 'init/adapter_config.json: target_modules is "all-linear" but the recipe\'s peft.target_modules is ["q_proj","v_proj"];'],
  ] as [Partial<RecipeInput>, string][])('refuses %j, naming both values', async (overrides, message) => {
    const e = await refusal(start(overrides));
    expect(e.message.startsWith(message), e.message).toBe(true);
  });

  it('refuses NaN in an init_adapter\'s weights', async () => {
    const files = withTensor('adapter_model.safetensors', Q_A, (data, shape) => ((data[0] = Infinity), { data, shape }));
    const init = memoryFiles('init', { 'adapter_config.json': files['adapter_config.json'], 'adapter_model.safetensors': files['adapter_model.safetensors'] });
    const e = await refusal(prepareRun(recipe(), { model: nodeFolder(STORIES_DIR), train: TRAIN, initAdapter: init }));
    expect(e.message).toBe(`init/adapter_model.safetensors: ${Q_A} holds Infinity; this adapter cannot be trained from.`);
  });
});
