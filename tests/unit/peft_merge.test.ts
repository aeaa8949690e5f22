// PEFT adapters out and back in, and merged-model export, on tiny random models built in memory:
// the exact file layout PEFT reads, identical logits after a round trip, rsLoRA's scale, and a
// merged folder that loads as a plain model computing what base + adapter computed.
import { rm } from 'node:fs/promises';
import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { nodeFolder } from '../../src/cli/fs_files.ts';
import { UserError } from '../../src/engine/errors.ts';
import { memoryFiles } from '../../src/engine/io/files.ts';
import { bf16BitsToFloat32, float32ToBf16Bits, parseSafetensors, tensorToFloat32 } from '../../src/engine/io/safetensors.ts';
import { LINEAR_MODULES, linearPath, linearShape } from '../../src/engine/model/config.ts';
import type { CausalLM } from '../../src/engine/model/llama.ts';
import { LoraAdapter, type LoraConfig } from '../../src/engine/model/lora.ts';
import { Rng } from '../../src/engine/rng.ts';
import { loadModel, type LoadedModel } from '../../src/engine/run.ts';
import { adapterFiles, loadAdapter } from '../../src/engine/io/peft.ts';
import { modelFiles, savedDType } from '../../src/engine/export.ts';
import { buildTinyModelFolder, writeTinyModel, type TinyModelOptions } from './helpers/tiny_model.ts';
import { maxAbsDiff } from './helpers/golden.ts';
import { readAllWeights } from './helpers/weights.ts';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

const QWEN2: TinyModelOptions = { architecture: 'Qwen2ForCausalLM', tokenizer: 'stories', seed: 7 };
const LLAMA_UNTIED: TinyModelOptions = { architecture: 'LlamaForCausalLM', tokenizer: 'stories', seed: 8, tie: false };
const IDS = [1, 403, 407, 261, 378, 29, 16, 300, 42];

function loraConfig(overrides: Partial<LoraConfig> = {}): LoraConfig {
  return { r: 4, lora_alpha: 8, lora_dropout: 0.05, target_modules: [...LINEAR_MODULES], use_rslora: false, layers_to_transform: null, ...overrides };
}

/** A fresh adapter with B random too (PEFT starts B at zero, which would make every check pass trivially). */
function randomAdapter(model: CausalLM, config: LoraConfig, seed = 3): LoraAdapter {
  const rng = new Rng(seed);
  const adapter = LoraAdapter.init(model.config, config, rng);
  for (const { B } of adapter.modules.values()) B.assign(tf.tensor(rng.uniform(B.size, -0.3, 0.3), B.shape));
  return adapter;
}

async function logits(model: CausalLM, adapter: LoraAdapter | null = null, ids = IDS): Promise<Float32Array> {
  const t = tf.tidy(() => model.logits(model.forward(tf.tensor2d([ids], undefined, 'int32'), { adapter })));
  const out = (await t.data()) as Float32Array;
  t.dispose();
  return out;
}

async function load(files: Record<string, Uint8Array | string>, location = 'tiny'): Promise<LoadedModel> {
  return loadModel(memoryFiles(location, files));
}

describe('PEFT adapter files', () => {
  it('have exactly the keys, shapes, dtype and metadata PEFT saves, and the adapter_config.json fields it reads', async () => {
    const { model } = await load(buildTinyModelFolder(QWEN2));
    const adapter = randomAdapter(model, loraConfig());
    const files = await adapterFiles(adapter, 'org/tiny-qwen2');
    expect(Object.keys(files).sort()).toEqual(['adapter_config.json', 'adapter_model.safetensors']);

    const st = parseSafetensors(files['adapter_model.safetensors'], 'adapter_model.safetensors');
    expect(st.metadata).toEqual({ format: 'pt' });
    const expected = new Map<string, number[]>();
    for (let i = 0; i < model.config.num_hidden_layers; i++) {
      for (const m of LINEAR_MODULES) {
        const [out, inp] = linearShape(model.config, m);
        expected.set(`base_model.model.${linearPath(i, m)}.lora_A.weight`, [4, inp]);
        expected.set(`base_model.model.${linearPath(i, m)}.lora_B.weight`, [out, 4]);
      }
    }
    expect([...st.tensors.keys()].sort()).toEqual([...expected.keys()].sort());
    for (const [name, info] of st.tensors) {
      expect(info.dtype, name).toBe('F32');
      expect(info.shape, name).toEqual(expected.get(name));
    }
    // Spelled out once, so a renamed key cannot slip through a shared helper.
    expect(st.tensors.get('base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight')!.shape).toEqual([4, 16]);
    expect(st.tensors.get('base_model.model.model.layers.1.mlp.down_proj.lora_B.weight')!.shape).toEqual([16, 4]);

    const config = JSON.parse(new TextDecoder().decode(files['adapter_config.json']));
    expect(config).toMatchObject({
      peft_type: 'LORA',
      task_type: 'CAUSAL_LM',
      r: 4,
      lora_alpha: 8,
      lora_dropout: 0.05,
      use_rslora: false,
      bias: 'none',
      base_model_name_or_path: 'org/tiny-qwen2',
      inference_mode: true,
    });
    expect([...config.target_modules].sort()).toEqual([...LINEAR_MODULES].sort());
    adapter.dispose();
    model.dispose();
  });

  it('load back with the same tensors and bit-identical logits', async () => {
    const { model } = await load(buildTinyModelFolder(QWEN2));
    const adapter = randomAdapter(model, loraConfig({ target_modules: ['q_proj', 'v_proj', 'down_proj'] }));
    const loaded = await loadAdapter(model, memoryFiles('out/adapter', await adapterFiles(adapter, 'tiny')));
    expect(loaded.config).toEqual(adapter.config);
    expect(loaded.scale).toBe(2);
    expect([...loaded.modules.keys()]).toEqual([...adapter.modules.keys()]);
    const base = await logits(model);
    const original = await logits(model, adapter);
    expect(maxAbsDiff(original, base)).toBeGreaterThan(1e-3);
    expect(await logits(model, loaded)).toEqual(original);
    loaded.dispose();
    adapter.dispose();
    model.dispose();
  });

  it('use_rslora scales by lora_alpha/√r instead of lora_alpha/r, and survives the round trip', async () => {
    const { model } = await load(buildTinyModelFolder(QWEN2));
    const rs = randomAdapter(model, loraConfig({ r: 4, lora_alpha: 8, use_rslora: true }));
    expect(rs.scale).toBe(8 / Math.sqrt(4));
    // Same A and B with alpha·√r and plain scaling: alpha·√r / r = alpha / √r.
    const plain = randomAdapter(model, loraConfig({ r: 4, lora_alpha: 16, use_rslora: false }));
    expect(plain.scale).toBe(rs.scale);
    expect(await logits(model, rs)).toEqual(await logits(model, plain));

    const files = await adapterFiles(rs, 'tiny');
    expect(JSON.parse(new TextDecoder().decode(files['adapter_config.json'])).use_rslora).toBe(true);
    const loaded = await loadAdapter(model, memoryFiles('rs', files));
    expect(loaded.scale).toBe(4);
    expect(await logits(model, loaded)).toEqual(await logits(model, rs));
    for (const a of [rs, plain, loaded]) a.dispose();
    model.dispose();
  });

  it('that do not fit the model are refused with a UserError naming the tensor', async () => {
    const { model } = await load(buildTinyModelFolder(QWEN2));
    const wider = await load(buildTinyModelFolder({ ...QWEN2, hidden_size: 32 }));
    const adapter = randomAdapter(wider.model, loraConfig({ target_modules: ['q_proj'] }));
    const files = await adapterFiles(adapter, 'wider');
    const err = await loadAdapter(model, memoryFiles('wider-adapter', files)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UserError);
    expect((err as UserError).message).toBe(
      'wider-adapter/adapter_model.safetensors: tensor base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight has shape [4,32] but this model needs [4,16] (r=4); was the adapter trained on another base model?',
    );
    expect((err as UserError).field).toBe('base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight');

    // adapter_config.json claiming another rank than the tensors have.
    const config = JSON.parse(new TextDecoder().decode(files['adapter_config.json']));
    const lying = { ...files, 'adapter_config.json': JSON.stringify({ ...config, r: 8 }) };
    const err2 = await loadAdapter(wider.model, memoryFiles('lying', lying)).catch((e: unknown) => e);
    expect(err2).toBeInstanceOf(UserError);
    expect((err2 as UserError).message).toMatch(/^lying\/adapter_model\.safetensors: tensor base_model\.model\.model\.layers\.0\.self_attn\.q_proj\.lora_A\.weight has shape \[4,32\] but this model needs \[8,32\] \(r=8\)/);
    adapter.dispose();
    wider.model.dispose();
    model.dispose();
  });
});

describe('merged export', () => {
  it.each([
    ['Qwen2', QWEN2],
    ['Llama with an untied lm_head', LLAMA_UNTIED],
  ])('of %s loads as a plain model whose logits equal base + adapter within 1e-5 (F32)', async (_, options) => {
    const { folder, model } = await load(buildTinyModelFolder(options));
    const adapter = randomAdapter(model, loraConfig());
    const files = await modelFiles(folder, model, 'F32', adapter);
    expect(Object.keys(files).sort()).toEqual(['config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);
    expect(JSON.parse(new TextDecoder().decode(files['config.json'])).torch_dtype).toBe('float32');
    const merged = await load(files, 'merged');
    const withAdapter = await logits(model, adapter);
    const mergedLogits = await logits(merged.model);
    expect(maxAbsDiff(mergedLogits, withAdapter)).toBeLessThanOrEqual(1e-5);
    expect(maxAbsDiff(mergedLogits, await logits(model))).toBeGreaterThan(1e-3);
    // Only the targeted linear weights changed; norms, biases and embeddings are copied bit for bit.
    const st = parseSafetensors(files['model.safetensors'], 'model.safetensors');
    expect(st.metadata).toEqual({ format: 'pt' });
    const untouched = ['model.embed_tokens.weight', 'model.layers.0.self_attn.q_proj.bias', 'model.layers.1.input_layernorm.weight', 'model.norm.weight', 'lm_head.weight'];
    for (const name of untouched.filter((n) => model.params.has(n))) {
      expect(tensorToFloat32(st, name), name).toEqual(Float32Array.from((await model.weight(name).data()) as Float32Array));
    }
    adapter.dispose();
    merged.model.dispose();
    model.dispose();
  });

  it('keeps a BF16 base model in bfloat16 (config torch_dtype, every tensor BF16, values rounded from the F32 merge)', async () => {
    const { folder, model } = await load(buildTinyModelFolder({ ...QWEN2, dtype: 'BF16' }));
    expect(folder.weightsDType).toBe('BF16');
    expect(savedDType(folder)).toBe('BF16');
    const adapter = randomAdapter(model, loraConfig({ target_modules: ['q_proj', 'up_proj'] }));
    const f32 = parseSafetensors((await modelFiles(folder, model, 'F32', adapter))['model.safetensors'], 'f32');
    const files = await modelFiles(folder, model, savedDType(folder), adapter);
    expect(JSON.parse(new TextDecoder().decode(files['config.json'])).torch_dtype).toBe('bfloat16');

    const reread = await readAllWeights(memoryFiles('merged-bf16', files));
    expect(reread.folder.weightsDType).toBe('BF16');
    expect(reread.weights.size).toBe(f32.tensors.size);
    for (const [name, w] of reread.weights) {
      expect(w.dtype, name).toBe('BF16');
      const rounded = tensorToFloat32(f32, name).map((x) => bf16BitsToFloat32(float32ToBf16Bits(x)));
      expect(w.data, name).toEqual(rounded);
    }
    // Read back from disk, as the CLI's export is.
    const dir = await writeTinyModel(undefined, files);
    const merged = await loadModel(nodeFolder(dir)).finally(() => rm(dir, { recursive: true, force: true }));
    expect(merged.folder.weightsDType).toBe('BF16');
    // bf16 keeps 8 significant bits, so the merged model is close to, not equal to, base + adapter.
    expect(maxAbsDiff(await logits(merged.model), await logits(model, adapter))).toBeLessThan(0.1);
    adapter.dispose();
    merged.model.dispose();
    model.dispose();
  });

  it('works for Qwen3 (q_norm/k_norm, head_dim ≠ hidden/heads) with its 151,669-token tokenizer', async () => {
    const { folder, model, tokenizer } = await load(buildTinyModelFolder({ architecture: 'Qwen3ForCausalLM', tokenizer: 'qwen3', seed: 11 }));
    expect(model.config.vocab_size).toBe(151669);
    expect(model.config.head_dim).toBe(8);
    const ids = tokenizer.encode('Hello, world! 你好');
    expect(tokenizer.decode(ids)).toBe('Hello, world! 你好');
    const adapter = randomAdapter(model, loraConfig({ target_modules: ['q_proj', 'o_proj', 'gate_proj'] }));
    const merged = await load(await modelFiles(folder, model, 'F32', adapter), 'merged-qwen3');
    expect(merged.model.config.qk_norm).toBe(true);
    expect(maxAbsDiff(await logits(merged.model, null, ids), await logits(model, adapter, ids))).toBeLessThanOrEqual(1e-5);
    adapter.dispose();
    merged.model.dispose();
    model.dispose();
  });
});
