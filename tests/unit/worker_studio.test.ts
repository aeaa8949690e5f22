// The Worker's StudioWorker in Node: the real pretrained stories260K, the CPU backend and
// fake-indexeddb stand in for the browser's model folder, WebGPU and IndexedDB.
import 'fake-indexeddb/auto';
import { IDBFactory } from 'fake-indexeddb';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as Comlink from 'comlink';
import { unzipSync } from 'fflate';
import { beforeAll, describe, expect, it } from 'vitest';
import { parseSafetensors, tensorToFloat32, writeSafetensors } from '../../src/engine/io/safetensors.ts';
import type { RecipeInput } from '../../src/engine/recipe.ts';
import { RUN_OPEN_ELSEWHERE, type ChatProgress, type FolderBytes, type RunEvent, type StudioApi } from '../../src/worker/protocol.ts';
import { memoryLockManager } from '../../src/worker/run_lock.ts';
import { StudioWorker } from '../../src/worker/studio_worker.ts';
import { AUTO_MAX_TOKENS, AUTO_MIN_TOKENS } from '../../src/worker/chat.ts';
import { STORIES_DIR } from './helpers/tiny_model.ts';

const MODEL = 'stories260K';

function readFolder(dir: string): FolderBytes {
  return Object.fromEntries(readdirSync(dir).map((name) => [name, new Uint8Array(readFileSync(join(dir, name)))]));
}

const STORY_ROWS = [
  'Tom had a red ball. He liked to play with it in the park every day.',
  'Lily saw a big dog. The dog was happy and wagged its tail.',
  'One day, a little cat found a box. She jumped in and played all day.',
  'Ben and Sue went to the beach. They made a big sand castle.',
];
const TRAIN = { file: 'stories.jsonl', data: STORY_ROWS.map((text) => JSON.stringify({ text })).join('\n') + '\n' };

// Shuffling and dropout make an exact resume depend on the restored data order and RNG.
const RECIPE: RecipeInput = {
  model: MODEL,
  train_file: TRAIN.file,
  peft: { type: 'lora', r: 8, lora_alpha: 16, lora_dropout: 0.1 },
  learning_rate: 1e-2,
  per_device_train_batch_size: 2,
  max_steps: 4,
  save_steps: 2,
  logging_steps: 1,
  shuffle: true,
};

/** Events of one run; `end(n)` waits for its n-th end (a status other than 'running'). */
function recorder(onLog?: (e: RunEvent) => void) {
  const events: RunEvent[] = [];
  const ends: RunEvent[] = [];
  const waiters: (() => void)[] = [];
  const onEvent = (e: RunEvent) => {
    events.push(e);
    if (e.type === 'log') onLog?.(e);
    if (e.type === 'status' && e.status !== 'running') {
      ends.push(e);
      waiters.splice(0).forEach((wake) => wake());
    }
  };
  const end = async (n = 1): Promise<RunEvent> => {
    while (ends.length < n) await new Promise<void>((wake) => waiters.push(wake));
    return ends[n - 1];
  };
  return { events, end, onEvent };
}

function unzipped(zip: Uint8Array): Record<string, Uint8Array> {
  return unzipSync(zip);
}

let factory: IDBFactory;
let studio: StudioWorker;
let modelFiles: FolderBytes;

beforeAll(async () => {
  factory = new IDBFactory();
  studio = new StudioWorker({ idbFactory: factory });
  const info = await studio.init('cpu');
  expect(info.name).toBe('cpu');
  modelFiles = readFolder(STORIES_DIR);
});

describe('StudioWorker on stories260K', () => {
  it('loads the model and summarises it', async () => {
    const summary = await studio.loadModel(MODEL, modelFiles);
    // 512×64 embedding (tied) + 5 layers × (2 norms + q, k, v, o, gate, up, down) + the final norm.
    expect(summary).toEqual({
      name: MODEL,
      architecture: 'LlamaForCausalLM',
      num_parameters: 512 * 64 + 5 * (2 * 64 + 64 * 64 * 2 + 32 * 64 * 2 + 3 * 172 * 64) + 64,
      hidden_size: 64,
      num_hidden_layers: 5,
      vocab_size: 512,
      dtype: 'F32',
      // Its tokenizer_config.json has a template that joins the contents with newlines.
      has_chat_template: true,
      quantization: null,
    });
  });

  it('reports a malformed line with its number and still reports the valid rows', async () => {
    const lines = TRAIN.data.trim().split('\n');
    lines.splice(2, 0, '{"text": "The sun was hot."');
    const report = await studio.inspectData('bad.jsonl', lines.join('\n') + '\n', RECIPE);
    expect(report.errors).toHaveLength(1);
    expect(report.errors[0].line).toBe(3);
    expect(report.errors[0].message).toMatch(/^bad\.jsonl, line 3: not valid JSON \(.+\)\.$/);
    expect(report.format).toBe('text');
    expect(report.num_rows).toBe(5);
    expect(report.stats?.num_examples).toBe(4);
    expect(report.preview.map((p) => p.line)).toEqual([1, 2, 4, 5]);
    expect(report.preview[0].messages).toEqual([{ role: 'text', content: STORY_ROWS[0] }]);
  });

  it('refuses a dropped file with invalid UTF-8, naming its line, as the CLI does', async () => {
    const good = new TextEncoder().encode(`${JSON.stringify({ text: STORY_ROWS[0] })}\n`);
    // "café" saved as Latin-1: 0xE9 alone is not UTF-8.
    const latin1 = Uint8Array.from([...'{"text": "caf'].map((c) => c.charCodeAt(0)).concat([0xe9, 0x22, 0x7d, 0x0a]));
    const file = new Blob([good, latin1]);
    await expect(studio.inspectData('latin1.jsonl', file, RECIPE)).rejects.toThrow(/^latin1\.jsonl line 2 is not valid UTF-8 .*; save the file as UTF-8\.$/);
    await expect(studio.startTraining(RECIPE, { file: 'latin1.jsonl', data: file }, () => undefined)).rejects.toThrow(/^latin1\.jsonl line 2 is not valid UTF-8/);
  });

  it('reports format, length histogram and the loss mask of prompt/completion rows', async () => {
    const rows = [
      { prompt: 'Tom had a red ball.', completion: ' He liked to play with it.' },
      { prompt: 'Lily saw a big dog.', completion: ' The dog was happy.' },
      { prompt: 'One day, a cat found a box.', completion: ' She jumped in and played all day long.' },
    ];
    const text = rows.map((r) => JSON.stringify(r)).join('\n');
    const report = await studio.inspectData('pc.jsonl', text, { ...RECIPE, max_length: 24 });
    expect(report.format).toBe('prompt_completion');
    expect(report.errors).toEqual([]);
    expect(report.preview[1].messages).toEqual([{ role: 'user', content: rows[1].prompt }, { role: 'assistant', content: rows[1].completion }]);
    const stats = report.stats!;
    expect(stats.num_examples).toBe(3);
    expect(stats.histogram.counts.reduce((a, b) => a + b, 0)).toBe(3);
    expect(stats.histogram.bin_edges).toHaveLength(stats.histogram.counts.length + 1);
    // Row 3 has 34 tokens, cut to max_length.
    expect(stats.length.max).toBe(24);
    expect(stats.num_truncated).toBe(1);
    expect(report.truncated_share).toBeCloseTo(1 / 3);

    const mask = report.mask_view!;
    expect(mask.line).toBe(1);
    const trained = mask.tokens.map((t) => t.trained);
    const firstTrained = trained.indexOf(true);
    // The prompt (BOS included) is masked, everything from the completion on is trained, ending with </s>.
    expect(firstTrained).toBeGreaterThan(1);
    expect(trained.slice(firstTrained).every(Boolean)).toBe(true);
    expect(mask.tokens[0]).toEqual({ text: '<s>', trained: false });
    expect(mask.tokens.at(-1)).toEqual({ text: '</s>', trained: true });
    expect(mask.tokens.slice(1, firstTrained).map((t) => t.text).join('')).toBe(' Tom had a red ball.');
    expect(mask.tokens.slice(firstTrained).map((t) => t.text).join('')).toBe(' He liked to play with it.</s>');
  });

  it('estimates memory from the model and the recipe', async () => {
    const e = await studio.estimateMemory(RECIPE);
    expect(e.weights).toBe(260_032 * 4);
    // LoRA r=8 on every projection: (q 128 + k 96 + v 96 + o 128 + gate/up/down 3·236) · 8 per layer, ×4 copies of f32.
    expect(e.trainable).toBe(5 * 8 * (128 + 96 + 96 + 128 + 3 * 236) * 4 * 4);
    expect(e.total).toBe(e.weights + e.trainable + e.activations + e.logits);
    expect(e.limit).toBeNull();
    expect(e.fits).toBe(true);
    expect(e.suggestion).toBeNull();
  });

  let straightAdapter: Uint8Array;
  let straightId: string;

  it('trains: logs every step with memory, checkpoints every save_steps, finishes, and stores it all', async () => {
    const run = recorder();
    straightId = await studio.startTraining(RECIPE, TRAIN, run.onEvent);
    // While it trains: no chat or swap, and downloads come from its stored checkpoint (none yet).
    await expect(studio.chat([{ role: 'user', content: 'Hi' }], { adapter: false }, () => undefined)).rejects.toThrow(
      'Chat is available while a run is paused and after it ends; pause the run first.',
    );
    await expect(studio.loadModel(MODEL, modelFiles)).rejects.toThrow('A run is training; pause or stop it first.');
    await expect(studio.exportZip('adapter')).rejects.toThrow(`Run "${TRAIN.file}" has no checkpoint yet; the first is saved at step 2.`);
    expect((await run.end()).status).toBe('finished');

    const logs = run.events.filter((e) => e.type === 'log');
    expect(logs.map((e) => e.step)).toEqual([1, 2, 3, 4]);
    expect(logs.every((e) => e.total_steps === 4 && (e.memory_bytes ?? 0) > 0 && Number.isFinite(e.log?.loss))).toBe(true);
    expect(run.events.filter((e) => e.type === 'checkpoint').map((e) => e.step)).toEqual([2, 4]);
    expect(run.events.filter((e) => e.type === 'status').map((e) => e.status)).toEqual(['running', 'finished']);

    const [record] = (await studio.listRuns()).filter((r) => r.id === straightId);
    expect(record).toMatchObject({ name: TRAIN.file, model: MODEL, method: 'sft', status: 'finished', global_step: 4, total_steps: 4, checkpoint_step: 4 });
    expect(record.final_loss).toBe(logs[3].log!.loss);
    expect(record.size_bytes).toBeGreaterThan(0);

    const zip = unzipped(await studio.exportZip('adapter'));
    expect(Object.keys(zip).sort()).toEqual(['adapter_config.json', 'adapter_model.safetensors']);
    straightAdapter = zip['adapter_model.safetensors'];
    // The stored checkpoint holds the same final adapter.
    expect(unzipped(await studio.exportZip('adapter', straightId))['adapter_model.safetensors']).toEqual(straightAdapter);
  });

  it('downloads the adapter as the two PEFT files with PEFT keys', async () => {
    const zip = unzipped(await studio.exportZip('adapter', straightId));
    const config = JSON.parse(new TextDecoder().decode(zip['adapter_config.json']));
    expect(config).toMatchObject({ peft_type: 'LORA', task_type: 'CAUSAL_LM', r: 8, lora_alpha: 16, base_model_name_or_path: MODEL });
    const st = parseSafetensors(zip['adapter_model.safetensors'], 'adapter_model.safetensors');
    expect(st.tensors.size).toBe(5 * 7 * 2);
    expect(st.tensors.get('base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight')?.shape).toEqual([8, 64]);
    expect(st.tensors.get('base_model.model.model.layers.4.mlp.down_proj.lora_B.weight')?.shape).toEqual([64, 8]);
    expect(st.metadata).toEqual({ format: 'pt' });
  });

  it('downloads the merged model folder and the recipe with metrics.jsonl', async () => {
    const merged = unzipped(await studio.exportZip('merged'));
    expect(Object.keys(merged).sort()).toEqual(['config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);
    const weights = parseSafetensors(merged['model.safetensors'], 'model.safetensors');
    expect(weights.tensors.get('model.layers.0.self_attn.q_proj.weight')?.shape).toEqual([64, 64]);

    const recipe = unzipped(await studio.exportZip('recipe', straightId));
    expect(JSON.parse(new TextDecoder().decode(recipe['recipe.json']))).toMatchObject({ model: MODEL, train_file: TRAIN.file, max_steps: 4, learning_rate: 1e-2 });
    const metrics = new TextDecoder().decode(recipe['metrics.jsonl']).trim().split('\n').map((l) => JSON.parse(l));
    expect(metrics.map((m) => m.step)).toEqual([1, 2, 3, 4]);
    expect(await studio.runMetrics(straightId)).toEqual(metrics);
  });

  it('downloads GGUF files of the run: the merged model and the LoRA adapter, live and stored', async () => {
    const { gguf } = await import('@huggingface/gguf');
    const read = async (blob: Blob) => {
      const path = join(await mkdtemp(join(tmpdir(), 'studio-gguf-')), 'x.gguf');
      await writeFile(path, new Uint8Array(await blob.arrayBuffer()));
      return (await gguf(path, { allowLocalFile: true })) as unknown as { metadata: Record<string, unknown>; tensorInfos: { name: string }[] };
    };
    const model = await read(await studio.exportGguf('model', 'q8_0'));
    expect(model.metadata['general.architecture']).toBe('llama');
    expect(model.tensorInfos.map((t) => t.name)).toContain('blk.0.attn_q.weight');
    const lora = await read(await studio.exportGguf('lora', 'f32', straightId));
    expect(lora.metadata['general.type']).toBe('adapter');
    expect(lora.metadata['adapter.lora.alpha']).toBe(16);
    expect(lora.tensorInfos.map((t) => t.name)).toContain('blk.4.ffn_down.weight.lora_b');
  });

  it('chats with the base model greedily, streaming the growing reply', async () => {
    const texts: string[] = [];
    const reply = await studio.chat([{ role: 'user', content: 'Once upon a time' }], { adapter: false, temperature: 0, max_new_tokens: 20 }, (p) => texts.push(p.text));
    expect(reply.text.startsWith(', there was a little girl named Lily.')).toBe(true);
    expect(reply).toMatchObject({ tokens: 20, max_new_tokens: 20, stopped: false });
    expect(texts.at(-1)).toBe(reply.text);
    texts.slice(1).forEach((t, i) => expect(t.startsWith(texts[i])).toBe(true));
    const tuned = await studio.chat([{ role: 'user', content: 'Tom had' }], { adapter: true, temperature: 0, max_new_tokens: 12 }, () => undefined);
    expect(tuned.text.length).toBeGreaterThan(0);
  });

  it('writes base and adapter replies at once, each as it would alone, and stopChat ends both keeping what was written', async () => {
    const messages = [{ role: 'user', content: 'Once upon a time' }];
    const alone = await studio.chat(messages, { adapter: false, temperature: 0, max_new_tokens: 10 }, () => undefined);
    const order: string[] = [];
    const [base, tuned] = await Promise.all([
      studio.chat(messages, { adapter: false, temperature: 0, max_new_tokens: 10 }, () => order.push('base')),
      studio.chat(messages, { adapter: true, temperature: 0, max_new_tokens: 10 }, () => order.push('adapter')),
    ]);
    expect(base.text).toBe(alone.text);
    expect(tuned.tokens).toBeGreaterThan(0);
    // Interleaved: the adapter's first token comes before the base's last.
    expect(order.indexOf('adapter')).toBeLessThan(order.lastIndexOf('base'));

    let stopping: Promise<void> | null = null;
    const seen: number[] = [];
    const stopped = await Promise.all(
      (['base', 'adapter'] as const).map((side) =>
        studio.chat(messages, { adapter: side === 'adapter', temperature: 0, max_new_tokens: 40 }, (p) => {
          seen.push(p.tokens);
          if (p.tokens === 3) stopping ??= studio.stopChat();
        }),
      ),
    );
    await stopping;
    for (const r of stopped) {
      expect(r.stopped).toBe(true);
      expect(r.tokens).toBeLessThan(10);
      expect(r.text.length).toBeGreaterThan(0);
    }
    expect(stopped[0].text).toBe(alone.text.slice(0, stopped[0].text.length));
    // A stop ends only the replies under way: the next one runs to its length.
    expect((await studio.chat(messages, { adapter: false, temperature: 0, max_new_tokens: 5 }, () => undefined)).tokens).toBe(5);
  });

  it('renames a stored run and gives back the training file it reads', async () => {
    await studio.renameRun(straightId, '  stories LoRA, first try ');
    expect((await studio.listRuns()).find((r) => r.id === straightId)?.name).toBe('stories LoRA, first try');
    await expect(studio.renameRun(straightId, '   ')).rejects.toThrow('A run needs a name');
    await expect(studio.renameRun('nope', 'x')).rejects.toThrow('There is no saved run nope');
    expect(await studio.runTrainFile(straightId)).toEqual({ file: TRAIN.file, text: TRAIN.data });
  });

  it('without max_new_tokens the reply length is chosen from the measured speed', async () => {
    const limits: (number | null)[] = [];
    const r = await studio.chat([{ role: 'user', content: 'Once upon a time' }], { adapter: false, temperature: 0 }, (p) => limits.push(p.max_new_tokens));
    // Unknown until the first timed tokens, then one figure, within the automatic bounds.
    expect(limits[0]).toBeNull();
    const chosen = limits.filter((l) => l !== null);
    expect(new Set(chosen).size).toBe(1);
    expect(chosen[0]).toBeGreaterThanOrEqual(AUTO_MIN_TOKENS);
    expect(chosen[0]).toBeLessThanOrEqual(AUTO_MAX_TOKENS);
    expect(r.tokens).toBeLessThanOrEqual(chosen[0]!);
  });

  it('pauses after step 2 (chat still works), then resumes to step 4 with the same adapter as the uninterrupted run', async () => {
    let pausing: Promise<void> | null = null;
    const run = recorder((e) => {
      if (e.step === 2) pausing = studio.pause();
    });
    const id = await studio.startTraining(RECIPE, TRAIN, run.onEvent, undefined, 'stories260K SFT LoRA 2026-11-29 10:00');
    expect((await run.end()).status).toBe('paused');
    await pausing;
    expect((await studio.listRuns()).find((r) => r.id === id)).toMatchObject({ status: 'paused', global_step: 2, checkpoint_step: 2, name: 'stories260K SFT LoRA 2026-11-29 10:00' });

    const reply = await studio.chat([{ role: 'user', content: 'Lily saw' }], { adapter: true, temperature: 0, max_new_tokens: 8 }, () => undefined);
    expect(reply.text.length).toBeGreaterThan(0);

    await studio.resume();
    expect((await run.end(2)).status).toBe('finished');
    const logs = run.events.filter((e) => e.type === 'log').map((e) => e.step);
    expect(logs).toEqual([1, 2, 3, 4]);
    expect(unzipped(await studio.exportZip('adapter'))['adapter_model.safetensors']).toEqual(straightAdapter);
  });

  it('after a reload, resumes a run stopped mid-way from its stored checkpoint with the same result', async () => {
    let stopping: Promise<void> | null = null;
    const first = recorder((e) => {
      if (e.step === 1) stopping = studio.stop();
    });
    const id = await studio.startTraining(RECIPE, TRAIN, first.onEvent);
    expect((await first.end()).status).toBe('stopped');
    await stopping;
    // Stopped between save steps: the stop itself wrote checkpoint 1.
    expect(first.events.filter((e) => e.type === 'checkpoint').map((e) => e.step)).toEqual([1]);

    // A new Worker over the same IndexedDB: only the model has to be given again.
    const reloaded = new StudioWorker({ idbFactory: factory });
    await reloaded.init('cpu');
    await expect(reloaded.startTraining(RECIPE, TRAIN, () => undefined, id)).rejects.toThrow('Load a model first.');
    await reloaded.loadModel(MODEL, modelFiles);
    expect((await reloaded.listRuns()).find((r) => r.id === id)).toMatchObject({ status: 'stopped', checkpoint_step: 1 });
    const second = recorder();
    expect(await reloaded.startTraining({ model: 'ignored', train_file: 'ignored.jsonl' }, { file: 'ignored.jsonl', data: '' }, second.onEvent, id)).toBe(id);
    expect((await second.end()).status).toBe('finished');
    expect(second.events.filter((e) => e.type === 'log').map((e) => e.step)).toEqual([2, 3, 4]);
    expect(unzipped(await reloaded.exportZip('adapter'))['adapter_model.safetensors']).toEqual(straightAdapter);
    expect(unzipped(await reloaded.exportZip('recipe', id))['metrics.jsonl']).toBeTruthy();
    await expect(reloaded.startTraining(RECIPE, TRAIN, () => undefined, id)).rejects.toThrow(/has finished all 4 steps/);
  });

  it('refuses a dropped-in adapter holding NaN, naming a tensor, and keeps nothing of it', async () => {
    const files = unzipped(await studio.exportZip('adapter', straightId));
    const st = parseSafetensors(files['adapter_model.safetensors'], 'adapter_model.safetensors');
    const tensors = [...st.tensors.keys()].map((name, i) => {
      const data = tensorToFloat32(st, name).slice();
      if (i === 3) data[0] = Number.NaN;
      return { name, dtype: 'F32' as const, shape: st.tensors.get(name)!.shape, data };
    });
    const poisoned = { ...files, 'adapter_model.safetensors': writeSafetensors(tensors, { format: 'pt' }) };
    await expect(studio.loadAdapter(poisoned)).rejects.toThrow(/^adapter_model\.safetensors: the adapter's weights contain non-finite values \(NaN or infinity\), for example \S+\.lora_[AB]; it cannot be used\.$/);
    await expect(studio.chat([{ role: 'user', content: 'Hi' }], { adapter: true, max_new_tokens: 2 }, () => undefined)).resolves.toBeDefined();
  });

  it('a dropped-in adapter is chatted with, and continues training with init_adapter', async () => {
    await studio.loadAdapter(unzipped(await studio.exportZip('adapter', straightId)));
    const a = await studio.chat([{ role: 'user', content: 'Tom had' }], { adapter: true, temperature: 0, max_new_tokens: 10 }, () => undefined);
    expect(a.text.length).toBeGreaterThan(0);
    expect(unzipped(await studio.exportZip('adapter'))['adapter_model.safetensors']).toEqual(straightAdapter);
    const run = recorder();
    await studio.startTraining({ ...RECIPE, max_steps: 1, init_adapter: 'adapter' }, TRAIN, run.onEvent);
    expect((await run.end()).status).toBe('finished');
    await expect(studio.loadAdapter({ 'adapter_config.json': new TextEncoder().encode('{}') })).rejects.toThrow(
      'adapter/adapter_model.safetensors is missing: an adapter folder needs adapter_config.json and adapter_model.safetensors.',
    );
  });

  it('a diverging run fails with the engine\'s sentence and keeps its last checkpoint', async () => {
    const run = recorder();
    const id = await studio.startTraining({ ...RECIPE, learning_rate: 1e30, max_grad_norm: 0, save_steps: 1, lr_scheduler_type: 'constant' }, TRAIN, run.onEvent);
    expect((await run.end()).status).toBe('failed');
    const message = run.events.find((e) => e.type === 'error')?.message ?? '';
    const failedAt = Number(/^Training stopped at step (\d+): the loss became .+; lower learning_rate or check the data\.$/.exec(message)?.[1]);
    expect(failedAt, message).toBeGreaterThan(0);
    const record = (await studio.listRuns()).find((r) => r.id === id)!;
    expect(record.status).toBe('failed');
    expect(record.checkpoint_step).toBe(failedAt > 1 ? failedAt - 1 : null);
  });

  it('refuses a model whose weights hold NaN with one sentence naming a tensor, and keeps working', async () => {
    const st = modelFiles['model.safetensors'] as Uint8Array;
    const n = Number(new DataView(st.buffer, st.byteOffset).getBigUint64(0, true));
    const header = JSON.parse(new TextDecoder().decode(st.subarray(8, 8 + n))) as Record<string, { data_offsets: [number, number] }>;
    const broken = new Uint8Array(st);
    new DataView(broken.buffer).setFloat32(8 + n + header['model.layers.1.mlp.down_proj.weight'].data_offsets[0], NaN, true);
    await expect(studio.loadModel('nan-model', { ...modelFiles, 'model.safetensors': broken })).rejects.toThrow(
      /^nan-model: the model's weights contain non-finite values \(NaN or infinity\), for example model\.layers\.1\.mlp\.down_proj\.weight;/,
    );
    expect((await studio.loadModel(MODEL, modelFiles)).name).toBe(MODEL);
  });

  it('chats with a model that has no chat template by joining the messages', async () => {
    const config = JSON.parse(new TextDecoder().decode(modelFiles['tokenizer_config.json']));
    delete config.chat_template;
    const plain = { ...modelFiles, 'tokenizer_config.json': new TextEncoder().encode(JSON.stringify(config)) };
    expect((await studio.loadModel('plain', plain)).has_chat_template).toBe(false);
    const reply = await studio.chat([{ role: 'user', content: 'Once upon a time' }], { adapter: false, temperature: 0, max_new_tokens: 12 }, () => undefined);
    expect(reply.text.startsWith(', there was a little girl')).toBe(true);
    await expect(studio.chat([{ role: 'user', content: 'Hi' }], { adapter: true }, () => undefined)).rejects.toThrow(
      'There is no trained adapter to chat with yet: train a run or drop in an adapter.',
    );
    await studio.loadModel(MODEL, modelFiles);
  });

  it('deletes a run with everything it stored', async () => {
    await studio.deleteRun(straightId);
    expect((await studio.listRuns()).some((r) => r.id === straightId)).toBe(false);
    await expect(studio.exportZip('adapter', straightId)).rejects.toThrow(`There is no saved run ${straightId}; it may have been deleted.`);
  });
});

describe('two tabs on one run (one IndexedDB, one lock manager)', () => {
  async function tabs(): Promise<[StudioWorker, StudioWorker]> {
    const idbFactory = new IDBFactory();
    const locks = memoryLockManager();
    const pair: [StudioWorker, StudioWorker] = [new StudioWorker({ idbFactory, locks }), new StudioWorker({ idbFactory, locks })];
    for (const tab of pair) {
      await tab.init('cpu');
      await tab.loadModel(MODEL, modelFiles);
    }
    return pair;
  }

  it('the second tab cannot resume, stop or delete the run the first trains or holds paused; it watches it read-only, and the finished run stays intact', async () => {
    const [a, b] = await tabs();
    let tried: Promise<unknown> | null = null;
    let pausing: Promise<void> | null = null;
    const run = recorder((e) => {
      // While A trains: B's resume is refused (the record says 'running', as a closed tab's run would).
      if (e.step === 1) tried = b.startTraining(RECIPE, TRAIN, () => undefined, id).catch((err: Error) => err);
      if (e.step === 2) pausing = a.pause();
    });
    const id = await a.startTraining(RECIPE, TRAIN, run.onEvent);
    expect((await run.end()).status).toBe('paused');
    await pausing;
    expect(((await (tried as Promise<unknown> | null)) as Error).message).toBe(RUN_OPEN_ELSEWHERE);

    // Paused, A still holds it: B sees it as open elsewhere, with its status, step and curves as stored.
    expect((await b.listRuns()).find((r) => r.id === id)).toMatchObject({ status: 'paused', global_step: 2, checkpoint_step: 2, open_elsewhere: true });
    expect((await a.listRuns()).find((r) => r.id === id)?.open_elsewhere).toBeUndefined();
    expect((await b.runMetrics(id)).map((m) => m.step)).toEqual([1, 2]);
    await expect(b.startTraining(RECIPE, TRAIN, () => undefined, id)).rejects.toThrow(RUN_OPEN_ELSEWHERE);
    await expect(b.deleteRun(id)).rejects.toThrow(RUN_OPEN_ELSEWHERE);

    await a.resume();
    expect((await run.end(2)).status).toBe('finished');
    const finished = (await b.listRuns()).find((r) => r.id === id);
    expect(finished).toMatchObject({ status: 'finished', global_step: 4, checkpoint_step: 4 });
    expect(finished?.open_elsewhere).toBeUndefined();
    await expect(b.startTraining(RECIPE, TRAIN, () => undefined, id)).rejects.toThrow(/has finished all 4 steps/);
    const stored = unzipped(await b.exportZip('adapter', id));
    expect(stored['adapter_model.safetensors']).toEqual(unzipped(await a.exportZip('adapter'))['adapter_model.safetensors']);
  });

  it('a run that is stopped lets go of its lock: the other tab resumes and finishes it', async () => {
    const [a, b] = await tabs();
    let stopping: Promise<void> | null = null;
    const first = recorder((e) => {
      if (e.step === 1) stopping = a.stop();
    });
    const id = await a.startTraining(RECIPE, TRAIN, first.onEvent);
    expect((await first.end()).status).toBe('stopped');
    await stopping;
    expect((await b.listRuns()).find((r) => r.id === id)).toMatchObject({ status: 'stopped', checkpoint_step: 1 });
    const second = recorder();
    await b.startTraining(RECIPE, TRAIN, second.onEvent, id);
    // Now B holds it, and A is the one refused.
    await expect(a.startTraining(RECIPE, TRAIN, () => undefined, id)).rejects.toThrow(RUN_OPEN_ELSEWHERE);
    expect((await second.end()).status).toBe('finished');
    expect((await a.listRuns()).find((r) => r.id === id)).toMatchObject({ status: 'finished', checkpoint_step: 4 });
  });
});

describe('StudioWorker through comlink', () => {
  it('delivers the engine\'s one-sentence errors intact and results whole', async () => {
    const { port1, port2 } = new MessageChannel();
    Comlink.expose(studio, port1);
    const api = Comlink.wrap<StudioApi>(port2);
    try {
      const err = await api.inspectData('x.jsonl', '', RECIPE).catch((e: Error) => e);
      expect(err).toBeInstanceOf(Error);
      expect((err as Error).message).toMatch(/^x\.jsonl has no rows: it is empty or holds only blank lines; accepted rows are .*\.$/);
      const texts: string[] = [];
      const reply = await api.chat([{ role: 'user', content: 'Once upon a time' }], { adapter: false, temperature: 0, max_new_tokens: 6 }, Comlink.proxy((p: ChatProgress) => void texts.push(p.text)));
      expect(reply.text.startsWith(', there was')).toBe(true);
      const broken = { 'config.json': new TextEncoder().encode('{"architectures": ["GPT2LMHeadModel"]}') };
      await expect(api.loadModel('gpt2', broken)).rejects.toThrow(
        'gpt2/tokenizer.json is missing: a model folder needs config.json, tokenizer.json, tokenizer_config.json and model.safetensors (or model.safetensors.index.json with its shards).',
      );
    } finally {
      port2.close();
      port1.close();
    }
  });
});
