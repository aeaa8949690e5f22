// Pre-quantised bitsandbytes 4-bit checkpoints (transformers' save_pretrained after load_in_4bit,
// as unsloth's "-bnb-4bit" repos hold them): folders written by the PyTorch reference
// (tests/reference/bnb_folder_golden.py) load to the very weights and loss that quantising the
// original on the fly gives; `finetune quantize`'s writer produces the reference's tensors byte
// for byte; bad folders are refused with one sentence; a merge writes plain floats.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../../src/engine/backend/index.ts';
import { unpackWeight } from '../../src/engine/backend/kernels/linear.ts';
import { UserError } from '../../src/engine/errors.ts';
import { memoryFiles, type MemoryFileContent } from '../../src/engine/io/files.ts';
import { openModelFolder } from '../../src/engine/io/model_folder.ts';
import { parseSafetensors, writeSafetensors, type TensorToWrite } from '../../src/engine/io/safetensors.ts';
import { bnb4bitTensors, type PrequantizedConfig } from '../../src/engine/io/bnb.ts';
import { modelFiles, savedDType } from '../../src/engine/export.ts';
import { CausalLM } from '../../src/engine/model/llama.ts';
import { bnb4bitWeight } from '../../src/engine/model/quantized.ts';
import { quantizedFolderFiles } from '../../src/engine/quantize.ts';
import { parseRecipe } from '../../src/engine/recipe.ts';
import { prepareRun } from '../../src/engine/run.ts';
import { collate } from '../../src/engine/train/batch.ts';
import { sftLossSum } from '../../src/engine/train/methods/sft.ts';
import { Rng } from '../../src/engine/rng.ts';
import { goldenDir } from './helpers/golden.ts';
import { STORIES_DIR } from './helpers/tiny_model.ts';

const FIXTURES = fileURLToPath(new URL('../fixtures/quant/', import.meta.url));
const CASES: { name: string; source: string; q: PrequantizedConfig; dtype: string }[] = [
  { name: 'stories260K-nf4-dq', source: STORIES_DIR, q: { quant_type: 'nf4', double_quant: true }, dtype: 'float32' },
  { name: 'llama_bf16-nf4-dq', source: goldenDir('llama_bf16'), q: { quant_type: 'nf4', double_quant: true }, dtype: 'bfloat16' },
  { name: 'qwen2_bf16-fp4', source: goldenDir('qwen2_bf16'), q: { quant_type: 'fp4', double_quant: false }, dtype: 'bfloat16' },
];
// openModelFolder needs tokenizer files; the weights tests do not read them, so stories260K's serve.
const TOKENIZER = Object.fromEntries(['tokenizer.json', 'tokenizer_config.json'].map((f) => [f, readFileSync(join(STORIES_DIR, f))]));

function folderFiles(dir: string): Record<string, MemoryFileContent> {
  return { ...TOKENIZER, 'config.json': readFileSync(join(dir, 'config.json')), 'model.safetensors': new Uint8Array(readFileSync(join(dir, 'model.safetensors'))) };
}

/** The SFT loss of fixed token rows (seeded, within the vocabulary) on a model. */
async function lossOf(model: CausalLM): Promise<number> {
  const rng = new Rng(7);
  const ids = [0, 1].map(() => Array.from({ length: 12 }, () => 3 + rng.int(model.config.vocab_size - 3)));
  const batch = collate(ids.map((input_ids) => ({ input_ids, labels: input_ids })), 0);
  const loss = tf.tidy(() => sftLossSum(model, batch, {}));
  const v = (await loss.data())[0];
  loss.dispose();
  return v;
}

async function bits(t: tf.Tensor): Promise<Uint32Array> {
  const v = (await t.data()) as Float32Array;
  t.dispose();
  return new Uint32Array(Float32Array.from(v).buffer);
}

beforeAll(async () => {
  await initBackend('cpu');
});
afterAll(async () => {
  await initBackend('cpu');
});

describe.each(CASES)('the reference folder $name', ({ name, source, q, dtype }) => {
  it('is what quantizedFolderFiles writes, tensor for tensor and in config.json', async () => {
    const files = await quantizedFolderFiles(await openModelFolder(memoryFiles(source, folderFiles(source))), q);
    const ours = parseSafetensors(files['model.safetensors'], 'ours');
    const ref = parseSafetensors(new Uint8Array(readFileSync(join(FIXTURES, name, 'model.safetensors'))), name);
    expect([...ours.tensors.keys()].sort()).toEqual([...ref.tensors.keys()].sort());
    for (const [tensor, info] of ref.tensors) {
      const mine = ours.tensors.get(tensor)!;
      expect({ tensor, dtype: mine.dtype, shape: mine.shape }).toEqual({ tensor, dtype: info.dtype, shape: info.shape });
      expect(Buffer.from(ours.bytes.subarray(mine.begin, mine.end)).equals(Buffer.from(ref.bytes.subarray(info.begin, info.end))), tensor).toBe(true);
    }
    const refConfig = JSON.parse(readFileSync(join(FIXTURES, name, 'config.json'), 'utf8'));
    expect(JSON.parse(new TextDecoder().decode(files['config.json']))).toEqual(refConfig);
    expect(refConfig.quantization_config.bnb_4bit_compute_dtype).toBe(dtype);
    // The tokenizer files travel with it.
    expect(Object.keys(files).sort()).toEqual(['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);
  });

  it('loads to the weights and the loss of quantising the original as it streams in', async () => {
    const folder = await openModelFolder(memoryFiles(name, folderFiles(join(FIXTURES, name))));
    expect(folder.prequantized).toEqual(q);
    expect(folder.weightsDType).toBe(dtype === 'float32' ? 'F32' : 'BF16');
    const pre = await CausalLM.fromFolder(folder);
    const fly = await CausalLM.fromFolder(await openModelFolder(memoryFiles(source, folderFiles(source))), { quantization: { kind: q.quant_type, double_quant: q.double_quant } });
    expect(pre.quantization()).toEqual({ kind: q.quant_type, double_quant: q.double_quant });
    expect([...pre.packed.keys()].sort()).toEqual([...fly.packed.keys()].sort());
    for (const [w, packed] of pre.packed) {
      expect(await bits(unpackWeight(packed)), w).toEqual(await bits(unpackWeight(fly.packed.get(w)!)));
    }
    expect(pre.frozenStorage()).toEqual(fly.frozenStorage());
    expect(await lossOf(pre)).toBe(await lossOf(fly));
    pre.dispose();
    fly.dispose();
  });
});

describe('loading a pre-quantised folder', () => {
  const stories = () => folderFiles(join(FIXTURES, 'stories260K-nf4-dq'));

  it('keeps the quantisation it was saved with, whatever the load asks for, as transformers does', async () => {
    const model = await CausalLM.fromFolder(await openModelFolder(memoryFiles('pre', stories())), { quantization: { kind: 'int8' } });
    expect(model.quantization()).toEqual({ kind: 'nf4', double_quant: true });
    model.dispose();
  });

  it('reads a weight whose parts lie in another shard of an index', async () => {
    const st = parseSafetensors(stories()['model.safetensors'] as Uint8Array, 'm');
    const raw = (n: string): TensorToWrite => {
      const t = st.tensors.get(n)!;
      return { name: n, dtype: t.dtype as 'U8', shape: t.shape, bytes: st.bytes.slice(t.begin, t.end) };
    };
    const names = [...st.tensors.keys()];
    // Every quant_map and absmax in the second shard, the rest in the first.
    const second = names.filter((n) => /\.(quant_map|absmax)$/.test(n));
    const first = names.filter((n) => !second.includes(n));
    const weight_map = Object.fromEntries([...first.map((n) => [n, 'a.safetensors']), ...second.map((n) => [n, 'b.safetensors'])]);
    const files = {
      ...TOKENIZER,
      'config.json': stories()['config.json'],
      'model.safetensors.index.json': JSON.stringify({ weight_map }),
      'a.safetensors': writeSafetensors(first.map(raw)),
      'b.safetensors': writeSafetensors(second.map(raw)),
    };
    const sharded = await CausalLM.fromFolder(await openModelFolder(memoryFiles('sharded', files)));
    const single = await CausalLM.fromFolder(await openModelFolder(memoryFiles('single', stories())));
    expect(await lossOf(sharded)).toBe(await lossOf(single));
    sharded.dispose();
    single.dispose();
  });

  it('merges an adapter into plain floats in the dtype it was quantised from, without quantization_config', async () => {
    const folder = await openModelFolder(memoryFiles('pre', folderFiles(join(FIXTURES, 'llama_bf16-nf4-dq'))));
    const model = await CausalLM.fromFolder(folder);
    expect(savedDType(folder)).toBe('BF16');
    const files = await modelFiles(folder, model, savedDType(folder));
    const config = JSON.parse(new TextDecoder().decode(files['config.json']));
    expect(config.quantization_config).toBeUndefined();
    expect(config.torch_dtype).toBe('bfloat16');
    const st = parseSafetensors(files['model.safetensors'], 'merged');
    expect(new Set([...st.tensors.values()].map((t) => t.dtype))).toEqual(new Set(['BF16']));
    expect(st.tensors.get('model.layers.0.self_attn.q_proj.weight')!.shape).toEqual([32, 32]);
    model.dispose();
  });

  it('trains only LoRA on it, and the saved recipe records its quantisation', async () => {
    const files = { ...stories(), 'train.jsonl': '{"text": "Once upon a time"}\n' };
    const recipe = (peft: Record<string, unknown>) => parseRecipe({ model: 'pre', train_file: 'train.jsonl', max_steps: 1, peft }, 'recipe.json');
    const sources = { model: memoryFiles('pre', files), train: { text: '{"text": "Once upon a time"}\n', file: 'train.jsonl' } };
    const err = await prepareRun(recipe({ type: 'full' }), sources).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UserError);
    expect((err as Error).message).toBe('pre/config.json: the model is a 4-bit checkpoint (bitsandbytes nf4), so it stays frozen and only a LoRA adapter can train on it; use peft.type "lora" (got "full").');
    const run = await prepareRun(recipe({ type: 'lora', r: 2 }), sources);
    expect(run.recipe.quantization).toEqual({ load_in_4bit: true, bnb_4bit_quant_type: 'nf4', bnb_4bit_use_double_quant: true, load_in_8bit: false });
    run.dispose();
  });
});

describe('a bad pre-quantised folder is refused with one sentence', () => {
  const dir = join(FIXTURES, 'stories260K-nf4-dq');
  const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));

  /** The stories folder with its tensors edited (name → tensor, or undefined to drop it) and config replaced. */
  function edited(edit: (t: Map<string, TensorToWrite>) => void, cfg: Record<string, unknown> = config): Record<string, MemoryFileContent> {
    const st = parseSafetensors(new Uint8Array(readFileSync(join(dir, 'model.safetensors'))), 'm');
    const tensors = new Map<string, TensorToWrite>();
    for (const [n, t] of st.tensors) tensors.set(n, { name: n, dtype: t.dtype as 'U8', shape: t.shape, bytes: st.bytes.slice(t.begin, t.end) });
    edit(tensors);
    return { ...TOKENIZER, 'config.json': JSON.stringify(cfg), 'model.safetensors': writeSafetensors([...tensors.values()]) };
  }
  async function refusal(files: Record<string, MemoryFileContent>): Promise<string> {
    const e = await (async () => CausalLM.fromFolder(await openModelFolder(memoryFiles('m', files))))().then(
      (m) => {
        m.dispose();
        return null;
      },
      (err: unknown) => err,
    );
    expect(e).toBeInstanceOf(UserError);
    return (e as Error).message;
  }
  const Q = 'model.layers.0.self_attn.q_proj.weight';

  it('names the quantisation method or mode it does not read', async () => {
    const gptq = { ...config, quantization_config: { quant_method: 'gptq', bits: 4 } };
    expect(await refusal(edited(() => {}, gptq))).toBe('m/config.json: the model is quantised with "gptq"; only bitsandbytes 4-bit checkpoints (quant_method "bitsandbytes", load_in_4bit) load here, or the unquantised model with a recipe\'s quantization block.');
    const eight = { ...config, quantization_config: { ...config.quantization_config, load_in_4bit: false, _load_in_4bit: false, load_in_8bit: true } };
    expect(await refusal(edited(() => {}, eight))).toContain('bitsandbytes 8-bit checkpoints do not load here; load the unquantised model with quantization.load_in_8bit');
    const storage = { ...config, quantization_config: { ...config.quantization_config, bnb_4bit_quant_storage: 'bfloat16' } };
    expect(await refusal(edited(() => {}, storage))).toContain('"quantization_config.bnb_4bit_quant_storage" is "bfloat16"');
    const { quantization_config: _, ...none } = config;
    expect(await refusal(edited(() => {}, none))).toBe(`m/config.json has no bitsandbytes "quantization_config", but the weights hold 4-bit tensors such as model.layers.0.mlp.down_proj.weight; the folder is incomplete.`);
  });

  it('names a missing or mis-sized part of a weight', async () => {
    expect(await refusal(edited((t) => t.delete(`${Q}.nested_absmax`)))).toBe(`m/model.safetensors: the 4-bit weight ${Q} has no "${Q}.nested_absmax" tensor; a bitsandbytes checkpoint saves it beside the weight.`);
    expect(
      await refusal(
        edited((t) => {
          const a = t.get(`${Q}.absmax`)!;
          t.set(`${Q}.absmax`, { ...a, shape: [a.shape[0] - 1], bytes: (a as { bytes: Uint8Array }).bytes.slice(1) });
        }),
      ),
    ).toBe(`m/model.safetensors: tensor "${Q}.absmax" is U8 [63] but its quant_state (shape [64, 64], blocksize 64) needs U8 with 64 values.`);
  });

  it('names a quant_state or quant_map the kernels cannot read', async () => {
    const state = `${Q}.quant_state.bitsandbytes__nf4`;
    const withState = (json: string) =>
      edited((t) => {
        const bytes = new TextEncoder().encode(json);
        t.set(state, { name: state, dtype: 'U8', shape: [bytes.length], bytes });
      });
    expect(await refusal(withState('{"quant_type": "nf4"'))).toBe(`m/model.safetensors: tensor "${state}" is not the UTF-8 JSON of a bitsandbytes quant_state.`);
    expect(await refusal(withState('{"quant_type": "int4", "blocksize": 64, "dtype": "float32", "shape": [64, 64]}'))).toBe(`m/model.safetensors: tensor "${state}" has quant_type "int4"; a 4-bit weight is "nf4" or "fp4".`);
    expect(
      await refusal(
        edited((t) => {
          const map = new Float32Array(16).map((_, i) => (i - 7.5) / 7.5);
          t.set(`${Q}.quant_map`, { name: `${Q}.quant_map`, dtype: 'F32', shape: [16], bytes: new Uint8Array(map.buffer) });
        }),
      ),
    ).toBe(`m/model.safetensors: the 4-bit weight ${Q} has a quant_map that is not bitsandbytes' NF4 levels.`);
  });

  it('refuses a 4-bit weight outside the decoder projections, and quantising twice', async () => {
    const files = edited((t) => {
      t.delete('model.embed_tokens.weight');
      for (const x of bnb4bitTensors('model.embed_tokens.weight', bnb4bitWeight(new Float32Array(512 * 64).fill(0.5), [512, 64], 'nf4', false))) t.set(x.name, x);
    });
    expect(await refusal(files)).toBe("m/model.safetensors: weight model.embed_tokens.weight is stored 4-bit; only the decoder's projections may be (transformers keeps embeddings, norms and the LM head unquantised).");
    const again = await quantizedFolderFiles(await openModelFolder(memoryFiles('m', stories260KPre())), { quant_type: 'nf4', double_quant: false }).catch((e: unknown) => e);
    expect((again as Error).message).toBe('m is already quantised to 4 bits (config.json has a bitsandbytes quantization_config); quantise the original model instead.');
  });

  function stories260KPre(): Record<string, MemoryFileContent> {
    return folderFiles(dir);
  }
});
