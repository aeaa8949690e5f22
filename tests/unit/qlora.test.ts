// QLoRA on the real stories260K: a base quantised as it streams in (NF4, NF4 with double
// quantisation, FP4, int8) gives the same loss and LoRA gradients as a float32 model holding the
// dequantised weights, within 1e-5, on the CPU, WASM and WebGPU backends;
// it takes the bytes bitsandbytes' layout promises; and training on it lowers the loss as the
// float32 run does. Every method's step runs on it (SFT, DPO, GRPO).
import { afterAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { nodeFolder } from '../../src/cli/fs_files.ts';
import { initBackend } from '../../src/engine/backend/index.ts';
import { installNodeWebGPU } from '../../src/engine/backend/node_webgpu.ts';
import { unpackWeight } from '../../src/engine/backend/kernels/linear.ts';
import { CausalLM, frozenWeightBytes } from '../../src/engine/model/llama.ts';
import { dequantize4bit, dequantizeInt8Rows, doubleDequantize, doubleQuantize, quantize4bit, quantizeInt8Rows } from '../../src/engine/model/quant.ts';
import { LoraAdapter } from '../../src/engine/model/lora.ts';
import { isQuantizedProjection, quantizedBytes, storageQuantization, type StorageQuantization } from '../../src/engine/model/quantized.ts';
import { parseRecipe, type RecipeInput } from '../../src/engine/recipe.ts';
import { Rng } from '../../src/engine/rng.ts';
import { loadModel, prepareRun } from '../../src/engine/run.ts';
import { collate } from '../../src/engine/train/batch.ts';
import { sftLossSum } from '../../src/engine/train/methods/sft.ts';
import { STORIES_DIR } from './helpers/tiny_model.ts';

const STORAGES: [string, StorageQuantization][] = [
  ['nf4', { kind: 'nf4', double_quant: false }],
  ['nf4 with double quantisation', { kind: 'nf4', double_quant: true }],
  ['fp4', { kind: 'fp4', double_quant: false }],
  ['int8', { kind: 'int8' }],
];
const ROWS = ['Once upon a time, there was a little boy named Tim.', 'Lily and her mom went to the park. They saw a big tree.'];

afterAll(async () => {
  await initBackend('cpu');
});

/** The same model with every projection replaced by its dequantised float32 values. */
function dequantisedCopy(q: CausalLM): CausalLM {
  const params = new Map<string, tf.Tensor>();
  for (const [name, t] of q.params) params.set(name, tf.clone(t));
  for (const [name, w] of q.packed) params.set(name, tf.tidy(() => unpackWeight(w)));
  return new CausalLM(q.config, params);
}

async function lossAndGrads(model: CausalLM, adapter: LoraAdapter, ids: number[][]) {
  const batch = collate(ids.map((input_ids) => ({ input_ids, labels: input_ids })), 0);
  const vars = [...adapter.variables().values()];
  const { value, grads } = tf.variableGrads(() => sftLossSum(model, batch, { adapter }), vars);
  const loss = (await value.data())[0];
  const flat = tf.concat(vars.map((v) => tf.reshape(grads[v.name], [-1])));
  const g = Float32Array.from((await flat.data()) as Float32Array);
  tf.dispose([value, flat, ...Object.values(grads)]);
  return { loss, g };
}

/** bitsandbytes' quantise-then-dequantise of a [rows, cols] weight (model/quant.ts, checked against the PyTorch reference). */
function bitsandbytesRoundTrip(values: Float32Array, q: StorageQuantization, rows: number, cols: number): Float32Array {
  if (q.kind === 'int8') {
    const { codes, absmax } = quantizeInt8Rows(values, rows, cols);
    return dequantizeInt8Rows(codes, absmax, rows, cols);
  }
  const { packed, absmax } = quantize4bit(values, q.kind);
  const scales = q.double_quant ? doubleDequantize(doubleQuantize(absmax)) : absmax;
  return dequantize4bit(packed, scales, q.kind, values.length);
}

function sameValues(a: Float32Array, b: Float32Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function relativeError(a: Float32Array, b: Float32Array): number {
  let d = 0;
  let n = 0;
  for (let i = 0; i < a.length; i++) {
    d += (a[i] - b[i]) ** 2;
    n += b[i] ** 2;
  }
  return Math.sqrt(d / n);
}

// WebGPU in Node (Dawn on SwiftShader here), where Dawn finds an adapter.
const hasWebGPU = await installNodeWebGPU();
const BACKENDS = hasWebGPU ? (['cpu', 'wasm', 'webgpu'] as const) : (['cpu', 'wasm'] as const);

describe.each(BACKENDS)('a quantised base on %s', (backend) => {
  it.each(STORAGES)('%s: loss and LoRA gradients equal a float32 model of the dequantised weights within 1e-5', async (_name, q) => {
    await initBackend(backend);
    const quantised = await loadModel(nodeFolder(STORIES_DIR), { quantization: q });
    const plain = dequantisedCopy(quantised.model);
    const expectedDType = q.kind;
    for (const [name, w] of quantised.model.packed) {
      expect(isQuantizedProjection(name), name).toBe(true);
      expect(w.dtype).toBe(expectedDType);
    }
    expect(quantised.model.packed.size).toBe(5 * 7);
    // What the kernels read is bitsandbytes' dequantisation of the checkpoint's own values.
    const name = 'model.layers.2.mlp.down_proj.weight';
    const original = await loadModel(nodeFolder(STORIES_DIR));
    const values = Float32Array.from((await original.model.weight(name).data()) as Float32Array);
    original.model.dispose();
    const wide = unpackWeight(quantised.model.packed.get(name)!);
    const read = Float32Array.from((await wide.data()) as Float32Array);
    wide.dispose();
    expect(sameValues(read, bitsandbytesRoundTrip(values, q, 64, 172))).toBe(true);
    // B non-zero, so the gradient of A is not trivially zero.
    const adapter = LoraAdapter.init(quantised.model.config, { r: 4, lora_alpha: 8, lora_dropout: 0, target_modules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'], use_rslora: false, layers_to_transform: null }, new Rng(3));
    for (const { B } of adapter.modules.values()) B.assign(tf.randomNormal(B.shape, 0, 0.05, 'float32', 5));
    const ids = ROWS.map((r) => quantised.tokenizer.encode(r));
    const a = await lossAndGrads(quantised.model, adapter, ids);
    const b = await lossAndGrads(plain, adapter, ids);
    expect(Math.abs(a.loss - b.loss) / Math.abs(b.loss)).toBeLessThan(1e-5);
    expect(relativeError(a.g, b.g)).toBeLessThan(1e-5);
    adapter.dispose();
    plain.dispose();
    quantised.model.dispose();
  });
});

describe('QLoRA on stories260K', () => {
  it.each(STORAGES)('%s: stores the projections in the bytes its layout promises', async (_name, q) => {
    await initBackend('cpu');
    const m = await loadModel(nodeFolder(STORIES_DIR), { quantization: q });
    let bytes = 0;
    let expected = 0;
    for (const [, w] of m.model.packed) {
      bytes += frozenWeightBytes(w);
      expected += quantizedBytes(w.shape, q);
    }
    expect(bytes).toBe(expected);
    m.model.dispose();
    // The targets per frozen parameter, on SmolLM2-135M's and Llama-3.2-1B's projections.
    const target = q.kind === 'int8' ? 1.02 : q.double_quant ? 0.52 : 0.57;
    for (const shape of [[576, 576], [192, 576], [1536, 576], [576, 1536], [2048, 2048], [512, 2048], [8192, 2048], [2048, 8192]] as [number, number][]) {
      expect(quantizedBytes(shape, q) / (shape[0] * shape[1]), `${shape}`).toBeLessThanOrEqual(target);
    }
  });

  it('lowers the loss as the float32 run does (NF4 with double quantisation, 4 steps)', async () => {
    await initBackend('cpu');
    const text = ROWS.map((t) => JSON.stringify({ text: t })).join('\n') + '\n';
    const losses: Record<string, number[]> = {};
    for (const quantization of [{}, { load_in_4bit: true, bnb_4bit_use_double_quant: true }]) {
      const recipe = parseRecipe({ model: STORIES_DIR, train_file: 's.jsonl', quantization, max_steps: 4, learning_rate: 1e-2, per_device_train_batch_size: 2, shuffle: false, peft: { r: 8, lora_alpha: 16, lora_dropout: 0 } } as RecipeInput, 'recipe.json');
      const run = await prepareRun(recipe, { model: nodeFolder(STORIES_DIR), train: { text, file: 's.jsonl' } });
      const before = (await run.trainer.evaluate(run.train.examples)).loss;
      await run.trainer.train();
      const after = (await run.trainer.evaluate(run.train.examples)).loss;
      losses[storageQuantization(recipe.quantization)?.kind ?? 'f32'] = [before, after];
      run.dispose();
    }
    const [f32Before, f32After] = losses.f32;
    const [qBefore, qAfter] = losses.nf4;
    // Measured on the CPU backend: f32 1.927 → 0.383, NF4 with double quantisation 1.900 → 0.376.
    expect(Math.abs(qBefore - f32Before)).toBeLessThan(0.1 * f32Before);
    expect(qAfter).toBeLessThan(0.7 * qBefore);
    expect(Math.abs(qAfter - f32After)).toBeLessThan(0.25 * f32After + 0.05);
  });

  it.each([
    ['dpo', { method: 'dpo' }, (p: string) => JSON.stringify({ prompt: p, chosen: ' was happy.', rejected: ' was sad.' })],
    ['grpo', { method: 'grpo', reward_funcs: [{ name: 'length', target: 20 }], num_generations: 2, per_device_train_batch_size: 2, max_completion_length: 4 }, (p: string) => JSON.stringify({ prompt: p })],
  ] as const)('a %s step runs on a 4-bit base', async (_name, method, row) => {
    await initBackend('cpu');
    const text = ['Tom', 'Lily', 'Ben', 'Sue'].map(row).join('\n') + '\n';
    const recipe = parseRecipe({ model: STORIES_DIR, train_file: 'p.jsonl', quantization: { load_in_4bit: true }, max_steps: 1, per_device_train_batch_size: 2, peft: { r: 4, lora_dropout: 0 }, ...method } as RecipeInput, 'recipe.json');
    const run = await prepareRun(recipe, { model: nodeFolder(STORIES_DIR), train: { text, file: 'p.jsonl' } }, {}, {}, { online: {} });
    expect([...run.loaded.model.packed.values()].every((w) => w.dtype === 'nf4')).toBe(true);
    await run.trainer.train();
    expect(Number.isFinite(run.trainer.logHistory[0].loss)).toBe(true);
    run.dispose();
  });
});
