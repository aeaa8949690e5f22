// `finetune export-gguf`, called in-process (src/cli/main.ts routes the command to it): the files
// it writes, read back by @huggingface/gguf's parser, its default outtype, and each refusal as the
// one sentence the CLI prints.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { gguf } from '@huggingface/gguf';
import { exportGgufCommand } from '../../src/cli/export_gguf.ts';
import { nodeFolder } from '../../src/cli/fs_files.ts';
import { UserError } from '../../src/engine/errors.ts';
import { mergedWeight } from '../../src/engine/export.ts';
import { openModelFolder } from '../../src/engine/io/model_folder.ts';
import { adapterFiles } from '../../src/engine/io/peft.ts';
import { LINEAR_MODULES } from '../../src/engine/model/config.ts';
import { LoraAdapter } from '../../src/engine/model/lora.ts';
import { quantizedFolderFiles } from '../../src/engine/quantize.ts';
import { Rng } from '../../src/engine/rng.ts';
import { loadModel } from '../../src/engine/run.ts';
import { buildTinyModelFolder, STORIES_DIR, writeTinyModel } from './helpers/tiny_model.ts';

let dir: string;
let adapterDir: string;

beforeAll(async () => {
  await tf.setBackend('cpu');
  dir = await mkdtemp(join(tmpdir(), 'finetune-gguf-'));
  // A PEFT adapter folder for stories260K, B non-zero so that merging changes the weights.
  const { model } = await loadModel(nodeFolder(STORIES_DIR));
  const rng = new Rng(4);
  const adapter = LoraAdapter.init(model.config, { r: 4, lora_alpha: 8, lora_dropout: 0, target_modules: [...LINEAR_MODULES], use_rslora: false, layers_to_transform: null }, rng);
  for (const { B } of adapter.modules.values()) B.assign(tf.tensor(rng.uniform(B.size, -0.05, 0.05), B.shape));
  adapterDir = await writeTinyModel(join(dir, 'adapter'), await adapterFiles(adapter, 'stories260K'));
  adapter.dispose();
  model.dispose();
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});
afterEach(() => {
  vi.restoreAllMocks();
});

async function readBack(path: string) {
  return (await gguf(path, { allowLocalFile: true })) as unknown as { metadata: Record<string, unknown>; tensorInfos: { name: string; dtype: number; offset: bigint }[]; tensorDataOffset: bigint };
}

/** Runs the command, returning what it printed. */
async function run(args: string[]): Promise<string> {
  const lines: string[] = [];
  vi.spyOn(console, 'log').mockImplementation((...a: unknown[]) => void lines.push(a.join(' ')));
  await exportGgufCommand(args);
  return lines.join('\n');
}

/** The UserError the command refuses with. */
async function refusal(args: string[]): Promise<string> {
  const err = await exportGgufCommand(args).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(UserError);
  return (err as UserError).message;
}

describe('finetune export-gguf', () => {
  it('writes the model with the adapter merged, in the model\'s own dtype by default (f32 for stories260K)', async () => {
    const out = join(dir, 'new/sub/merged.gguf');
    const said = await run(['--model', STORIES_DIR, '--adapter', adapterDir, '--out', out]);
    expect(said).toMatch(new RegExp(`^GGUF model written to ${out} \\(f32, adapter merged, \\d+\\.\\d MiB\\)\\.$`));
    const p = await readBack(out);
    expect(p.metadata['general.architecture']).toBe('llama');
    expect(p.metadata['general.type']).toBe('model');
    expect(p.metadata['general.file_type']).toBe(0);
    expect(p.tensorInfos.find((t) => t.name === 'blk.0.attn_q.weight')?.dtype).toBe(0);
  });

  it('writes --outtype q8_0, and bf16 for a bf16 model without --outtype', async () => {
    const out = join(dir, 'q8.gguf');
    await run(['--model', STORIES_DIR, '--out', out, '--outtype', 'q8_0']);
    expect((await readBack(out)).metadata['general.file_type']).toBe(7);

    const bf16Dir = await writeTinyModel(join(dir, 'tiny-bf16'), buildTinyModelFolder({ architecture: 'Qwen3ForCausalLM', tokenizer: 'stories', dtype: 'BF16' }));
    const out2 = join(dir, 'bf16.gguf');
    expect(await run(['--model', bf16Dir, '--out', out2])).toMatch(/\(bf16, /);
    const p = await readBack(out2);
    expect(p.metadata['general.architecture']).toBe('qwen3');
    expect(p.metadata['general.file_type']).toBe(32);
  });

  it('writes the adapter alone as a GGUF LoRA with --lora', async () => {
    const out = join(dir, 'lora.gguf');
    expect(await run(['--model', STORIES_DIR, '--adapter', adapterDir, '--out', out, '--lora'])).toMatch(/^GGUF LoRA adapter written to .*lora\.gguf \(f32, /);
    const p = await readBack(out);
    expect(p.metadata['general.type']).toBe('adapter');
    expect(p.metadata['adapter.type']).toBe('lora');
    expect(p.metadata['adapter.lora.alpha']).toBe(8);
    expect(p.tensorInfos[0].name).toBe('blk.0.attn_q.weight.lora_a');
  });

  it('writes a pre-quantised 4-bit base dequantised, and its adapter as a GGUF LoRA too', async () => {
    const stories = await openModelFolder(nodeFolder(STORIES_DIR));
    const nf4Dir = await writeTinyModel(join(dir, 'stories-nf4'), await quantizedFolderFiles(stories, { quant_type: 'nf4', double_quant: true }));
    const out = join(dir, 'nf4.gguf');
    expect(await run(['--model', nf4Dir, '--out', out])).toMatch(/\(f32, .*\n.*the base was quantised \(nf4\): the GGUF holds its dequantised weights\.$/);
    const p = await readBack(out);
    const info = p.tensorInfos.find((t) => t.name === 'blk.0.ffn_up.weight')!;
    const bytes = await readFile(out);
    const at = Number(p.tensorDataOffset + info.offset);
    const values = new Float32Array(bytes.buffer.slice(bytes.byteOffset + at, bytes.byteOffset + at + 172 * 64 * 4));
    const { model } = await loadModel(nodeFolder(nf4Dir));
    const dequantised = await mergedWeight(model, null, 'model.layers.0.mlp.up_proj.weight');
    model.dispose();
    expect(values).toEqual(dequantised);
    const original = new Float32Array(172 * 64);
    await stories.readWeights((w) => {
      if (w.name === 'model.layers.0.mlp.up_proj.weight') original.set(w.data as Float32Array);
    });
    expect(values).not.toEqual(original);

    const lora = join(dir, 'nf4-lora.gguf');
    await run(['--model', nf4Dir, '--adapter', adapterDir, '--out', lora, '--lora']);
    expect((await readBack(lora)).metadata['general.type']).toBe('adapter');
  });

  it('refuses bad flags, each with one sentence, before writing anything', async () => {
    const out = join(dir, 'never.gguf');
    expect(await refusal(['--model', STORIES_DIR])).toBe('finetune export-gguf: --out is required.');
    expect(await refusal(['--out', out])).toBe('finetune export-gguf: --model is required.');
    expect(await refusal(['--model', STORIES_DIR, '--out', out, '--outtype', 'q4_k'])).toBe('finetune export-gguf: --outtype must be f32, f16, bf16, q8_0 (got "q4_k").');
    expect(await refusal(['--model', STORIES_DIR, '--out', out, '--lora'])).toBe('finetune export-gguf: --lora writes the adapter alone, so it needs --adapter DIR.');
    expect(await refusal(['--model', STORIES_DIR, '--adapter', adapterDir, '--out', out, '--lora', '--outtype', 'f16'])).toMatch(/^finetune export-gguf: a GGUF LoRA is written in f32 .*; --outtype f16 applies to a merged model, without --lora\.$/);
    expect(await refusal(['--model', STORIES_DIR, '--out', out, '--backend', 'cpu'])).toMatch(/^finetune export-gguf: unknown flag --backend \(it takes --model, --adapter, --out, --outtype, --lora\)\.$/);
    expect(await refusal(['--model', join(dir, 'nope'), '--out', out])).toBe(`${join(dir, 'nope')}: no such folder (the model).`);
    expect(await refusal(['--model', STORIES_DIR, '--out', dir])).toMatch(/^finetune export-gguf: --out .* is a folder; give the GGUF file to write/);
    expect(existsSync(out)).toBe(false);
  });

  it('refuses a model whose architecture has no GGUF export, naming its config.json', async () => {
    const files = buildTinyModelFolder({ architecture: 'LlamaForCausalLM', tokenizer: 'stories' });
    const config = JSON.parse(files['config.json'] as string);
    files['config.json'] = JSON.stringify({ ...config, architectures: ['MistralForCausalLM'] });
    const mistral = await writeTinyModel(join(dir, 'mistral'), files);
    const message = await refusal(['--model', mistral, '--out', join(dir, 'm.gguf')]);
    expect(message).toBe(`${mistral}/config.json: architecture MistralForCausalLM is not supported; supported architectures are LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM.`);
    expect(existsSync(join(dir, 'm.gguf'))).toBe(false);
  });
});

describe('finetune export-gguf as a command', () => {
  it('is routed by the finetune binary: a GGUF file and exit 0, a bad outtype exit 2 with one sentence', async () => {
    const { finetune } = await import('./helpers/cli.ts');
    const ok = finetune(['export-gguf', '--model', STORIES_DIR, '--out', 'spawned.gguf', '--outtype', 'q8_0'], dir);
    expect(ok.code).toBe(0);
    const { metadata } = (await gguf(join(dir, 'spawned.gguf'), { allowLocalFile: true })) as unknown as { metadata: Record<string, unknown> };
    expect(metadata['general.architecture']).toBe('llama');
    const bad = finetune(['export-gguf', '--model', STORIES_DIR, '--out', 'bad.gguf', '--outtype', 'q4_k'], dir);
    expect(bad.code).toBe(2);
    expect(bad.stderr.split('\n')).toHaveLength(1);
    expect(existsSync(join(dir, 'bad.gguf'))).toBe(false);
  });
});
