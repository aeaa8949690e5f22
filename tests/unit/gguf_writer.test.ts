// The GGUF writer and the GGUF exports, read back by @huggingface/gguf's parser (an independent
// reader): every value type, tensor infos, offsets and alignment; Q8_0 against blocks worked out
// by hand; Llama's q/k permutation against a direct transcription of convert_hf_to_gguf.py's
// `permute`; the metadata, tensor names and types convert writes for stories260K, Qwen2, Qwen3
// and a LoRA adapter; and the refusals. That llama.cpp computes with these files is
// gguf_llama_cpp.test.ts's part.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { gguf, type GGUFParseOutput, type GGUFTypedMetadata } from '@huggingface/gguf';
import { nodeFolder } from '../../src/cli/fs_files.ts';
import { UserError } from '../../src/engine/errors.ts';
import { mergedWeight } from '../../src/engine/export.ts';
import { ggufLoraAlpha, ggufLoraFile, ggufModelFile, ggufTensorName, llamaPermute, type GGUFOutType } from '../../src/engine/export_gguf.ts';
import { memoryFiles } from '../../src/engine/io/files.ts';
import { GGUFMetadata, canEncode, encodeTensor, streamGGUF, type GGUFTensor } from '../../src/engine/io/gguf.ts';
import { bpePre } from '../../src/engine/io/gguf_tokenizer.ts';
import { bf16BitsToFloat32, f16BitsToFloat32, writeSafetensors } from '../../src/engine/io/safetensors.ts';
import { LINEAR_MODULES, parseModelConfig } from '../../src/engine/model/config.ts';
import { expectedWeights, type CausalLM } from '../../src/engine/model/llama.ts';
import { LoraAdapter } from '../../src/engine/model/lora.ts';
import { Rng } from '../../src/engine/rng.ts';
import { loadModel, type LoadedModel } from '../../src/engine/run.ts';
import { buildTinyModelFolder, STORIES_DIR, type TinyModelOptions } from './helpers/tiny_model.ts';

type Parsed = GGUFParseOutput<{ strict: false }> & { typedMetadata: GGUFTypedMetadata; bytes: Uint8Array };

let dir: string;
let fileNo = 0;
let stories: LoadedModel;

beforeAll(async () => {
  await tf.setBackend('cpu');
  dir = await mkdtemp(join(tmpdir(), 'gguf-writer-'));
  stories = await loadModel(nodeFolder(STORIES_DIR));
});
afterAll(async () => {
  stories.model.dispose();
  await rm(dir, { recursive: true, force: true });
});

/** The file through @huggingface/gguf's parser, which reads local files only by path. */
/** A file of tensors already encoded, as the writer streams it. */
function encoded(md: GGUFMetadata, tensors: GGUFTensor[]): AsyncIterable<Uint8Array> {
  return streamGGUF(md, tensors, (i) => tensors[i].data);
}

async function parse(parts: AsyncIterable<Uint8Array>): Promise<Parsed> {
  const chunks: Uint8Array[] = [];
  for await (const part of parts) chunks.push(part);
  const bytes = new Uint8Array(Buffer.concat(chunks));
  const path = join(dir, `${fileNo++}.gguf`);
  await writeFile(path, bytes);
  const out = await gguf(path, { allowLocalFile: true, typedMetadata: true });
  return { ...(out as unknown as Parsed), bytes };
}

function meta(p: Parsed, key: string): unknown {
  return (p.metadata as Record<string, unknown>)[key];
}

function tensorInfo(p: Parsed, name: string) {
  const info = p.tensorInfos.find((t) => t.name === name);
  if (!info) throw new Error(`no tensor ${name}`);
  return info;
}

/** A tensor's bytes, found where its info says they are. */
function tensorBytes(p: Parsed, name: string, length: number): Uint8Array {
  const at = Number(p.tensorDataOffset + tensorInfo(p, name).offset);
  return p.bytes.subarray(at, at + length);
}

function f32Values(bytes: Uint8Array): Float32Array {
  return new Float32Array(bytes.slice().buffer);
}

/** A tiny random model; `configEdit` changes its config.json, and the weights are made for the edited config. */
async function tiny(opts: TinyModelOptions, configEdit?: (c: Record<string, unknown>) => void): Promise<LoadedModel> {
  const files = buildTinyModelFolder(opts);
  if (configEdit) {
    const config = JSON.parse(files['config.json'] as string);
    configEdit(config);
    files['config.json'] = JSON.stringify(config);
    const rng = new Rng(opts.seed ?? 1);
    const weights = expectedWeights(parseModelConfig(config)).map(([name, shape]) => {
      const n = shape.reduce((a, d) => a * d, 1);
      return { name, dtype: 'F32' as const, shape, data: name.endsWith('norm.weight') ? rng.uniform(n, 0.8, 1.2) : rng.uniform(n, -0.2, 0.2) };
    });
    files['model.safetensors'] = writeSafetensors(weights, { format: 'pt' });
  }
  return loadModel(memoryFiles(`tiny-${opts.architecture}`, files));
}

async function hfWeight(model: CausalLM, name: string): Promise<Float32Array> {
  return mergedWeight(model, null, name);
}

describe('GGUF writer', () => {
  it.each([32, 64])('writes every value type and tensor infos that @huggingface/gguf reads back, data aligned to %i', async (alignment) => {
    const md = new GGUFMetadata();
    md.string('general.architecture', 'llama');
    if (alignment !== 32) md.uint32('general.alignment', alignment);
    md.set('t.u8', { type: 'UINT8', value: 200 });
    md.set('t.i8', { type: 'INT8', value: -100 });
    md.set('t.u16', { type: 'UINT16', value: 60000 });
    md.set('t.i16', { type: 'INT16', value: -30000 });
    md.uint32('t.u32', 4000000000);
    md.set('t.i32', { type: 'INT32', value: -2000000000 });
    md.float32('t.f32', 0.15625);
    md.bool('t.bool', true);
    md.string('t.str', 'héllo ▁world 😀');
    md.set('t.u64', { type: 'UINT64', value: 2n ** 40n + 3n });
    md.set('t.i64', { type: 'INT64', value: -(2n ** 40n) });
    md.set('t.f64', { type: 'FLOAT64', value: Math.PI });
    md.array('t.strs', 'STRING', ['a', 'ü', '<0x0A>']);
    md.array('t.ints', 'INT32', [1, -2, 3]);
    md.array('t.floats', 'FLOAT32', [0.5, -1.25, -1000]);
    md.string('t.empty', '');
    md.array('t.none', 'INT32', []);

    const values = Float32Array.from({ length: 64 }, (_, i) => (i - 20) / 8);
    const tensors: GGUFTensor[] = [
      { name: 'a.f32', ne: [3, 2], type: 'F32', data: encodeTensor(values.subarray(0, 6), 3, 'F32') },
      { name: 'b.f16', ne: [5], type: 'F16', data: encodeTensor(values.subarray(0, 5), 5, 'F16') },
      { name: 'c.bf16', ne: [2, 2], type: 'BF16', data: encodeTensor(values.subarray(10, 14), 2, 'BF16') },
      { name: 'd.q8_0', ne: [32, 2], type: 'Q8_0', data: encodeTensor(values, 32, 'Q8_0') },
    ];
    const p = await parse(encoded(md, tensors));
    const typed = p.typedMetadata as Record<string, { value: unknown; type: number; subType?: number }>;

    expect(meta(p, 'version')).toBe(3);
    expect(meta(p, 'tensor_count')).toBe(4n);
    expect(meta(p, 'kv_count')).toBe(alignment === 32 ? 16n : 17n);
    expect(typed['t.u8']).toEqual({ value: 200, type: 0 });
    expect(typed['t.i8']).toEqual({ value: -100, type: 1 });
    expect(typed['t.u16']).toEqual({ value: 60000, type: 2 });
    expect(typed['t.i16']).toEqual({ value: -30000, type: 3 });
    expect(typed['t.u32']).toEqual({ value: 4000000000, type: 4 });
    expect(typed['t.i32']).toEqual({ value: -2000000000, type: 5 });
    expect(typed['t.f32']).toEqual({ value: 0.15625, type: 6 });
    expect(typed['t.bool']).toEqual({ value: true, type: 7 });
    expect(typed['t.str']).toEqual({ value: 'héllo ▁world 😀', type: 8 });
    expect(typed['t.u64']).toEqual({ value: 2n ** 40n + 3n, type: 10 });
    expect(typed['t.i64']).toEqual({ value: -(2n ** 40n), type: 11 });
    expect(typed['t.f64']).toEqual({ value: Math.PI, type: 12 });
    expect(typed['t.strs']).toEqual({ value: ['a', 'ü', '<0x0A>'], type: 9, subType: 8 });
    expect(typed['t.ints']).toEqual({ value: [1, -2, 3], type: 9, subType: 5 });
    expect(typed['t.floats']).toEqual({ value: [0.5, -1.25, -1000], type: 9, subType: 6 });
    // As GGUFWriter.add_string / add_array: empty values are not written.
    expect(typed['t.empty']).toBeUndefined();
    expect(typed['t.none']).toBeUndefined();

    expect(p.tensorInfos.map(({ name, n_dims, shape, dtype }) => ({ name, n_dims, shape, dtype }))).toEqual([
      { name: 'a.f32', n_dims: 2, shape: [3n, 2n], dtype: 0 },
      { name: 'b.f16', n_dims: 1, shape: [5n], dtype: 1 },
      { name: 'c.bf16', n_dims: 2, shape: [2n, 2n], dtype: 30 },
      { name: 'd.q8_0', n_dims: 2, shape: [32n, 2n], dtype: 8 },
    ]);
    // Each tensor starts on the alignment, right after the previous one's padded bytes.
    expect(p.tensorInfos.map((t) => Number(t.offset))).toEqual([0, alignment, 2 * alignment, 3 * alignment]);
    expect(Number(p.tensorDataOffset) % alignment).toBe(0);
    expect(p.bytes.length).toBe(Number(p.tensorDataOffset) + 3 * alignment + (alignment === 32 ? 96 : 128));
    for (const t of tensors) expect(tensorBytes(p, t.name, t.data.length)).toEqual(t.data);

    // The 16-bit encodings round to nearest even, and these values are exact in both.
    const f16 = new DataView(tensors[1].data.buffer);
    expect(Array.from({ length: 5 }, (_, i) => f16BitsToFloat32(f16.getUint16(i * 2, true)))).toEqual(Array.from(values.subarray(0, 5)));
    const bf16 = new DataView(tensors[2].data.buffer);
    expect(Array.from({ length: 4 }, (_, i) => bf16BitsToFloat32(bf16.getUint16(i * 2, true)))).toEqual(Array.from(values.subarray(10, 14)));
    expect(f32Values(tensorBytes(p, 'a.f32', 24))).toEqual(values.subarray(0, 6));
  });

  it('refuses tensor data that disagrees with its type and shape, and a tensor name given twice', async () => {
    const md = new GGUFMetadata().string('general.architecture', 'llama');
    const data = encodeTensor(new Float32Array(4), 4, 'F32');
    await expect(parse(encoded(md, [{ name: 'x', ne: [4, 2], type: 'F32', data }]))).rejects.toThrow(/16 bytes of data for F32 \[4,2\], which takes 32/);
    await expect(parse(encoded(md, [{ name: 'x', ne: [4], type: 'F32', data }, { name: 'x', ne: [4], type: 'F32', data }]))).rejects.toThrow(/written twice/);
  });
});

describe('Q8_0', () => {
  it('matches blocks worked out by hand from quantize_row_q8_0_ref (d = amax/127 as f16, q = roundf(x/d), halves away from zero)', () => {
    const x = new Float32Array(96);
    // Block 0: amax 127, so d = 1: q is x rounded, 2.5 to 3 and -2.5 to -3 (round-half-even would give ±2).
    x.set([-127, 2.5, -2.5, 0.5, 1.49, 126.6, 0.49], 0);
    // Block 1: all zero, so d = 0 and every q 0.
    // Block 2: amax 63.5, so d = 0.5 and 1/d = 2: 0.25 → 0.5 → 1, -0.75 → -1.5 → -2, 0.125 → 0.25 → 0.
    x.set([63.5, 0.25, -0.75, 0.125], 64);
    const block = (dBits: number, q: number[]) => {
      const b = new Uint8Array(34);
      b[0] = dBits & 0xff;
      b[1] = dBits >> 8;
      q.forEach((v, j) => (b[2 + j] = v & 0xff));
      return [...b];
    };
    const expected = [
      ...block(0x3c00, [-127, 3, -3, 1, 1, 127, 0]), // f16 1.0
      ...block(0x0000, []),
      ...block(0x3800, [127, 1, -2, 0]), // f16 0.5
    ];
    expect([...encodeTensor(x, 32, 'Q8_0')]).toEqual(expected);
  });

  it('needs rows that are whole blocks of 32', () => {
    expect(canEncode('Q8_0', 64)).toBe(true);
    expect(canEncode('Q8_0', 172)).toBe(false);
    expect(() => encodeTensor(new Float32Array(32), 16, 'Q8_0')).toThrow(/rows of 16 values cannot be stored as Q8_0/);
  });
});

/**
 * convert_hf_to_gguf.py's LlamaModel.permute as numpy does it:
 * w.reshape(n_head, 2, rows // n_head // 2, *rest).swapaxes(1, 2).reshape(w.shape), on a list of rows.
 */
function numpyPermute(rows: number[][], nHead: number, nHeadKv: number | null): number[][] {
  if (nHeadKv !== null && nHead !== nHeadKv) nHead = nHeadKv;
  const half = rows.length / nHead / 2;
  // reshaped[h][p][i] = rows[(h * 2 + p) * half + i]; after swapaxes(1, 2) the C-order walk is h, i, p.
  const out: number[][] = [];
  for (let h = 0; h < nHead; h++) for (let i = 0; i < half; i++) for (let p = 0; p < 2; p++) out.push(rows[(h * 2 + p) * half + i]);
  return out;
}

describe("Llama's q/k permutation", () => {
  const rng = new Rng(11);
  const matrix = (rows: number, cols: number) => Array.from({ length: rows }, () => Array.from(rng.uniform(cols, -1, 1)));
  const flat = (rows: number[][]) => Float32Array.from(rows.flat());

  it.each([
    ['q_proj: 4 heads of 4', 16, 3, 4, 4],
    ['k_proj: 4 heads over 2 kv heads of 4', 8, 3, 4, 2],
    ['a q bias: 8 heads of 8', 64, 1, 8, 8],
  ] as const)('equals convert\'s permute for %s', (_, rows, cols, nHead, nHeadKv) => {
    const w = matrix(rows, cols);
    expect(llamaPermute(flat(w), rows, nHead, nHeadKv)).toEqual(flat(numpyPermute(w, nHead, nHeadKv)));
  });

  it("is applied to stories260K's attn_q and attn_k (not to attn_v) and not to Qwen's", async () => {
    const c = stories.model.config;
    const p = await parse(await ggufModelFile(stories.folder, stories.model, null, 'f32'));
    const read = (name: string, n: number) => f32Values(tensorBytes(p, name, n * 4));
    const q = await hfWeight(stories.model, 'model.layers.1.self_attn.q_proj.weight');
    const k = await hfWeight(stories.model, 'model.layers.1.self_attn.k_proj.weight');
    const v = await hfWeight(stories.model, 'model.layers.1.self_attn.v_proj.weight');
    expect(read('blk.1.attn_q.weight', q.length)).toEqual(llamaPermute(q, 64, c.num_attention_heads, c.num_attention_heads));
    expect(read('blk.1.attn_k.weight', k.length)).toEqual(llamaPermute(k, 32, c.num_attention_heads, c.num_key_value_heads));
    expect(read('blk.1.attn_q.weight', q.length)).not.toEqual(q);
    expect(read('blk.1.attn_v.weight', v.length)).toEqual(v);

    const qwen = await tiny({ architecture: 'Qwen3ForCausalLM', tokenizer: 'stories', seed: 2 });
    const pq = await parse(await ggufModelFile(qwen.folder, qwen.model, null, 'f32'));
    const qq = await hfWeight(qwen.model, 'model.layers.0.self_attn.q_proj.weight');
    expect(f32Values(tensorBytes(pq, 'blk.0.attn_q.weight', qq.length * 4))).toEqual(qq);
    qwen.model.dispose();
  });
});

describe('GGUF model file', () => {
  it("has convert_hf_to_gguf.py's metadata, tensor names and shapes for stories260K, with its tokenizer in llama.cpp's SentencePiece form", async () => {
    const p = await parse(await ggufModelFile(stories.folder, stories.model, null, 'f32'));
    expect(meta(p, 'general.architecture')).toBe('llama');
    expect(meta(p, 'general.type')).toBe('model');
    expect(meta(p, 'general.name')).toBe('stories260K');
    expect(meta(p, 'general.file_type')).toBe(0);
    expect(meta(p, 'general.quantization_version')).toBe(2);
    expect({
      block_count: meta(p, 'llama.block_count'),
      context_length: meta(p, 'llama.context_length'),
      embedding_length: meta(p, 'llama.embedding_length'),
      feed_forward_length: meta(p, 'llama.feed_forward_length'),
      head_count: meta(p, 'llama.attention.head_count'),
      head_count_kv: meta(p, 'llama.attention.head_count_kv'),
      key_length: meta(p, 'llama.attention.key_length'),
      value_length: meta(p, 'llama.attention.value_length'),
      freq_base: meta(p, 'llama.rope.freq_base'),
      rope_dims: meta(p, 'llama.rope.dimension_count'),
      vocab_size: meta(p, 'llama.vocab_size'),
    }).toEqual({ block_count: 5, context_length: 512, embedding_length: 64, feed_forward_length: 172, head_count: 8, head_count_kv: 4, key_length: 8, value_length: 8, freq_base: 10000, rope_dims: 8, vocab_size: 512 });
    expect(meta(p, 'llama.attention.layer_norm_rms_epsilon')).toBe(Math.fround(1e-5));

    // Tied embeddings: no output tensor, as convert (llama.cpp reads token_embd in its place).
    const names = p.tensorInfos.map((t) => t.name);
    expect(names).not.toContain('output.weight');
    expect(names.slice(0, 13)).toEqual([
      'token_embd.weight',
      'blk.0.attn_norm.weight', 'blk.0.attn_q.weight', 'blk.0.attn_k.weight', 'blk.0.attn_v.weight', 'blk.0.attn_output.weight',
      'blk.0.ffn_gate.weight', 'blk.0.ffn_up.weight', 'blk.0.ffn_down.weight', 'blk.0.ffn_norm.weight',
      'blk.1.attn_norm.weight', 'blk.1.attn_q.weight', 'blk.1.attn_k.weight',
    ]);
    expect(names.at(-1)).toBe('output_norm.weight');
    expect(names).toHaveLength(1 + 5 * 9 + 1);
    expect(tensorInfo(p, 'token_embd.weight').shape).toEqual([64n, 512n]);
    expect(tensorInfo(p, 'blk.0.attn_k.weight').shape).toEqual([64n, 32n]);
    expect(tensorInfo(p, 'blk.0.ffn_down.weight').shape).toEqual([172n, 64n]);

    const typed = p.typedMetadata as Record<string, { value: unknown; subType?: number }>;
    expect(meta(p, 'tokenizer.ggml.model')).toBe('llama');
    expect(meta(p, 'tokenizer.ggml.pre')).toBe('default');
    const tokens = meta(p, 'tokenizer.ggml.tokens') as string[];
    const types = meta(p, 'tokenizer.ggml.token_type') as number[];
    const scores = meta(p, 'tokenizer.ggml.scores') as number[];
    expect(tokens).toHaveLength(512);
    expect(typed['tokenizer.ggml.token_type'].subType).toBe(5);
    expect(typed['tokenizer.ggml.scores'].subType).toBe(6);
    expect(tokens.slice(0, 4)).toEqual(['<unk>', '<s>', '</s>', '<0x00>']);
    expect(types.slice(0, 4)).toEqual([3, 3, 3, 6]); // CONTROL ×3 (LlamaHfVocab: special ids), BYTE
    expect([tokens[13], types[13]]).toEqual(['<0x0A>', 6]);
    // The first merges ("▁ t", "h e") make tokens 259 and 260: scores -1 and -2, BPE's order.
    expect([tokens[259], types[259], scores[259]]).toEqual(['▁t', 1, -1]);
    expect([tokens[260], scores[260]]).toEqual(['he', -2]);
    expect(scores[13]).toBe(0);
    expect(meta(p, 'tokenizer.ggml.merges')).toBeUndefined();
    expect({
      bos: meta(p, 'tokenizer.ggml.bos_token_id'),
      eos: meta(p, 'tokenizer.ggml.eos_token_id'),
      unk: meta(p, 'tokenizer.ggml.unknown_token_id'),
      pad: meta(p, 'tokenizer.ggml.padding_token_id'),
      add_bos: meta(p, 'tokenizer.ggml.add_bos_token'),
      add_eos: meta(p, 'tokenizer.ggml.add_eos_token'),
    }).toEqual({ bos: 1, eos: 2, unk: 0, pad: undefined, add_bos: true, add_eos: false });
    expect(meta(p, 'tokenizer.chat_template')).toBe(stories.folder.tokenizerConfig.chat_template);
  });

  it.each([
    ['f32', 0, 'F32', 0],
    ['f16', 1, 'F16', 1],
    ['bf16', 32, 'BF16', 30],
    ['q8_0', 7, 'Q8_0', 8],
  ] as const)('%s: general.file_type %i; matrices %s, norms F32, and a row Q8_0 cannot block (172 values) F16', async (outtype, fileType, _, matrixType) => {
    const p = await parse(await ggufModelFile(stories.folder, stories.model, null, outtype));
    expect(meta(p, 'general.file_type')).toBe(fileType);
    const type = (name: string) => tensorInfo(p, name).dtype;
    expect(type('token_embd.weight')).toBe(matrixType);
    expect(type('blk.2.attn_q.weight')).toBe(matrixType);
    expect(type('blk.2.ffn_up.weight')).toBe(matrixType);
    expect(type('blk.2.ffn_down.weight')).toBe(outtype === 'q8_0' ? 1 : matrixType);
    expect(type('blk.2.attn_norm.weight')).toBe(0);
    expect(type('output_norm.weight')).toBe(0);
  });

  it('writes an adapter merged in: the file holds W + scale·B·A', async () => {
    const adapter = randomAdapter(stories.model, false);
    const p = await parse(await ggufModelFile(stories.folder, stories.model, adapter, 'f32'));
    const name = 'model.layers.3.mlp.down_proj.weight';
    const merged = await mergedWeight(stories.model, adapter, name);
    expect(merged).not.toEqual(await hfWeight(stories.model, name));
    expect(f32Values(tensorBytes(p, 'blk.3.ffn_down.weight', merged.length * 4))).toEqual(merged);
    adapter.dispose();
  });

  it("writes Qwen3's tokenizer as gpt2 BPE with its merges and pre-tokenizer, its special tokens, and qk-norm tensors", async () => {
    const qwen = await tiny({ architecture: 'Qwen3ForCausalLM', tokenizer: 'qwen3', seed: 4 });
    const p = await parse(await ggufModelFile(qwen.folder, qwen.model, null, 'bf16'));
    expect(meta(p, 'general.architecture')).toBe('qwen3');
    expect(meta(p, 'qwen3.attention.key_length')).toBe(8);
    expect(meta(p, 'qwen3.vocab_size')).toBeUndefined();
    expect(meta(p, 'tokenizer.ggml.model')).toBe('gpt2');
    expect(meta(p, 'tokenizer.ggml.pre')).toBe('qwen2');
    const tokens = meta(p, 'tokenizer.ggml.tokens') as string[];
    const types = meta(p, 'tokenizer.ggml.token_type') as number[];
    const merges = meta(p, 'tokenizer.ggml.merges') as string[];
    expect(tokens).toHaveLength(151669);
    expect(merges).toHaveLength(151387);
    expect(merges[0]).toBe('Ġ Ġ');
    expect([tokens[220], types[220]]).toEqual(['Ġ', 1]);
    expect([tokens[151644], types[151644]]).toEqual(['<|im_start|>', 3]); // special
    expect([tokens[151657], types[151657]]).toEqual(['<tool_call>', 4]); // added, not special: USER_DEFINED
    expect([tokens[151659], types[151659]]).toEqual(['<|fim_prefix|>', 3]); // not special, but looks it
    expect({
      bos: meta(p, 'tokenizer.ggml.bos_token_id'), // not in tokenizer_config.json: config.json's
      eos: meta(p, 'tokenizer.ggml.eos_token_id'),
      pad: meta(p, 'tokenizer.ggml.padding_token_id'),
      add_bos: meta(p, 'tokenizer.ggml.add_bos_token'),
    }).toEqual({ bos: 151643, eos: 151645, pad: 151643, add_bos: false });
    expect(meta(p, 'tokenizer.chat_template')).toContain('<|im_start|>');
    expect(tensorInfo(p, 'blk.1.attn_q_norm.weight')).toMatchObject({ shape: [8n], dtype: 0 });
    expect(tensorInfo(p, 'blk.1.attn_k_norm.weight')).toMatchObject({ shape: [8n], dtype: 0 });
    expect(tensorInfo(p, 'blk.1.attn_q.weight')).toMatchObject({ shape: [16n, 32n], dtype: 30 });
    qwen.model.dispose();
  });

  it("writes Qwen2's q/k/v biases as F32 and an untied model's output tensor", async () => {
    const qwen = await tiny({ architecture: 'Qwen2ForCausalLM', tokenizer: 'stories', seed: 5, tie: false });
    const p = await parse(await ggufModelFile(qwen.folder, qwen.model, null, 'f16'));
    expect(meta(p, 'general.architecture')).toBe('qwen2');
    expect(meta(p, 'qwen2.attention.key_length')).toBeUndefined(); // no head_dim in config.json, as convert
    for (const b of ['attn_q', 'attn_k', 'attn_v']) expect(tensorInfo(p, `blk.0.${b}.bias`).dtype).toBe(0);
    expect(p.tensorInfos.map((t) => t.name)).not.toContain('blk.0.attn_output.bias');
    expect(tensorInfo(p, 'output.weight')).toMatchObject({ shape: [16n, 512n], dtype: 1 });
    const bias = await hfWeight(qwen.model, 'model.layers.0.self_attn.k_proj.bias');
    expect(f32Values(tensorBytes(p, 'blk.0.attn_k.bias', bias.length * 4))).toEqual(bias);
    qwen.model.dispose();
  });

  it("writes llama3 rope scaling as convert's rope_freqs tensor and linear scaling as keys", async () => {
    const rope_scaling = { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 16 };
    const llama3 = await tiny({ architecture: 'LlamaForCausalLM', tokenizer: 'stories', hidden_size: 32 }, (c) => (c.rope_scaling = rope_scaling));
    const p = await parse(await ggufModelFile(llama3.folder, llama3.model, null, 'f16'));
    expect(p.tensorInfos[0]).toMatchObject({ name: 'rope_freqs.weight', shape: [4n], dtype: 0 });
    // head_dim 8, theta 10000: wavelengths 2π·[1, 10, 100, 1000]; the first lies between 16/4 and
    // 16/1 and is blended, the rest are longer and divided by the factor.
    const factors = f32Values(tensorBytes(p, 'rope_freqs.weight', 16));
    const smooth = (16 / (2 * Math.PI) - 1) / 3;
    expect(factors[0]).toBeCloseTo(1 / ((1 - smooth) / 8 + smooth), 5);
    expect([...factors.subarray(1)]).toEqual([8, 8, 8]);
    expect(meta(p, 'llama.rope.scaling.type')).toBeUndefined();

    const linear = await tiny({ architecture: 'LlamaForCausalLM', tokenizer: 'stories' }, (c) => (c.rope_scaling = { type: 'linear', factor: 4 }));
    const pl = await parse(await ggufModelFile(linear.folder, linear.model, null, 'f32'));
    expect(meta(pl, 'llama.rope.scaling.type')).toBe('linear');
    expect(meta(pl, 'llama.rope.scaling.factor')).toBe(4);
    expect(pl.tensorInfos.map((t) => t.name)).not.toContain('rope_freqs.weight');
    llama3.model.dispose();
    linear.model.dispose();
  });
});

function randomAdapter(model: CausalLM, rslora: boolean, seed = 3): LoraAdapter {
  const rng = new Rng(seed);
  const adapter = LoraAdapter.init(model.config, { r: 4, lora_alpha: 8, lora_dropout: 0, target_modules: [...LINEAR_MODULES], use_rslora: rslora, layers_to_transform: null }, rng);
  for (const { B } of adapter.modules.values()) B.assign(tf.tensor(rng.uniform(B.size, -0.05, 0.05), B.shape));
  return adapter;
}

describe('GGUF LoRA file', () => {
  it("has convert_lora_to_gguf.py's keys and lora_a/lora_b tensors, lora_b of q/k permuted as the base", async () => {
    const adapter = randomAdapter(stories.model, false);
    const p = await parse(await ggufLoraFile(stories.folder, stories.model, adapter));
    expect(meta(p, 'general.architecture')).toBe('llama');
    expect(meta(p, 'general.type')).toBe('adapter');
    expect(meta(p, 'adapter.type')).toBe('lora');
    expect((p.typedMetadata as Record<string, { type: number }>)['adapter.lora.alpha']).toEqual({ value: 8, type: 6 });
    expect(p.tensorInfos).toHaveLength(5 * 7 * 2);
    expect(p.tensorInfos.slice(0, 4).map(({ name, shape, dtype }) => ({ name, shape, dtype }))).toEqual([
      { name: 'blk.0.attn_q.weight.lora_a', shape: [64n, 4n], dtype: 0 },
      { name: 'blk.0.attn_q.weight.lora_b', shape: [4n, 64n], dtype: 0 },
      { name: 'blk.0.attn_k.weight.lora_a', shape: [64n, 4n], dtype: 0 },
      { name: 'blk.0.attn_k.weight.lora_b', shape: [4n, 32n], dtype: 0 },
    ]);
    expect(tensorInfo(p, 'blk.4.ffn_down.weight.lora_a').shape).toEqual([172n, 4n]);
    const c = stories.model.config;
    const { A, B } = adapter.modules.get('model.layers.2.self_attn.k_proj')!;
    const a = (await A.data()) as Float32Array;
    const b = (await B.data()) as Float32Array;
    expect(f32Values(tensorBytes(p, 'blk.2.attn_k.weight.lora_a', a.length * 4))).toEqual(a);
    expect(f32Values(tensorBytes(p, 'blk.2.attn_k.weight.lora_b', b.length * 4))).toEqual(llamaPermute(b, 32, c.num_attention_heads, c.num_key_value_heads));
    const bv = (await adapter.modules.get('model.layers.2.self_attn.v_proj')!.B.data()) as Float32Array;
    expect(f32Values(tensorBytes(p, 'blk.2.attn_v.weight.lora_b', bv.length * 4))).toEqual(bv);
    adapter.dispose();
  });

  it("writes rsLoRA's alpha as lora_alpha·√r, since llama.cpp scales by alpha / r", async () => {
    const adapter = randomAdapter(stories.model, true);
    expect(adapter.scale).toBeCloseTo(8 / 2, 12);
    expect(ggufLoraAlpha(adapter)).toBe(16);
    const p = await parse(await ggufLoraFile(stories.folder, stories.model, adapter));
    expect((meta(p, 'adapter.lora.alpha') as number) / 4).toBe(adapter.scale);
    adapter.dispose();
  });
});

describe('refusals', () => {
  it('refuses an outtype convert does not write here', async () => {
    const err = await ggufModelFile(stories.folder, stories.model, null, 'q4_k' as GGUFOutType).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UserError);
    expect((err as UserError).message).toBe('GGUF outtype "q4_k" is not supported; choose one of f32, f16, bf16, q8_0.');
  });

  it("refuses a Qwen2 whose attention width is not hidden_size, which llama.cpp's qwen2 cannot build", async () => {
    const odd = await tiny({ architecture: 'Qwen2ForCausalLM', tokenizer: 'stories' }, (c) => (c.head_dim = 8));
    const err = await ggufModelFile(odd.folder, odd.model, null, 'f32').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UserError);
    expect((err as UserError).message).toMatch(/^tiny-Qwen2ForCausalLM\/config\.json: num_attention_heads × head_dim \(4 × 8\) differs from hidden_size \(16\), which llama\.cpp's qwen2 architecture does not support/);
    odd.model.dispose();
  });

  it('refuses a tokenizer whose pre-tokenizer llama.cpp does not implement, and one that is not BPE', async () => {
    const qwen = await tiny({ architecture: 'Qwen3ForCausalLM', tokenizer: 'qwen3' });
    const gpt2Style = { ...qwen.folder, tokenizerJson: { ...qwen.folder.tokenizerJson, pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true } } };
    const err = await ggufModelFile(gpt2Style, qwen.model, null, 'f32').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UserError);
    expect((err as UserError).message).toMatch(/^tiny-Qwen3ForCausalLM\/tokenizer\.json: its pre-tokenizer is not one llama\.cpp is known here to implement/);

    const unigram = { ...qwen.folder, tokenizerJson: { ...qwen.folder.tokenizerJson, model: { type: 'Unigram', vocab: [] } } };
    const err2 = await ggufModelFile(unigram, qwen.model, null, 'f32').catch((e: unknown) => e);
    expect((err2 as UserError).message).toBe('tiny-Qwen3ForCausalLM/tokenizer.json: the tokenizer is Unigram, but a GGUF export writes BPE tokenizers only (llama.cpp\'s "llama" and "gpt2" tokenizers).');
    qwen.model.dispose();
  });
});

describe('tokenizer.ggml.pre', () => {
  const split = (regex: string) => ({ type: 'Split', pattern: { Regex: regex }, behavior: 'Isolated', invert: false });
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false };

  it("names Llama 3's, Qwen2's and SmolLM's pre-tokenizers as llama.cpp does", () => {
    const llama3 = String.raw`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`;
    expect(bpePre({ pre_tokenizer: { type: 'Sequence', pretokenizers: [split(llama3), byteLevel] } }, 'tokenizer.json')).toBe('llama-bpe');
    expect(bpePre({ pre_tokenizer: { type: 'Sequence', pretokenizers: [split(llama3.replace('{1,3}', '')), byteLevel] } }, 'tokenizer.json')).toBe('qwen2');
    const smollm = { type: 'Sequence', pretokenizers: [{ type: 'Digits', individual_digits: true }, { ...byteLevel, use_regex: true }] };
    expect(bpePre({ pre_tokenizer: smollm }, 'tokenizer.json')).toBe('smollm');
    expect(() => bpePre({ pre_tokenizer: split(llama3.replace('{1,3}', '{1,2}')) }, 'tokenizer.json')).toThrow(UserError);
  });

  it('maps every Hugging Face tensor name to llama.cpp\'s', () => {
    expect(ggufTensorName('model.embed_tokens.weight')).toBe('token_embd.weight');
    expect(ggufTensorName('lm_head.weight')).toBe('output.weight');
    expect(ggufTensorName('model.norm.weight')).toBe('output_norm.weight');
    expect(ggufTensorName('model.layers.12.self_attn.o_proj.weight')).toBe('blk.12.attn_output.weight');
    expect(ggufTensorName('model.layers.0.self_attn.q_proj.bias')).toBe('blk.0.attn_q.bias');
    expect(ggufTensorName('model.layers.0.self_attn.k_norm.weight')).toBe('blk.0.attn_k_norm.weight');
    expect(ggufTensorName('model.layers.3.post_attention_layernorm.weight')).toBe('blk.3.ffn_norm.weight');
    expect(ggufTensorName('model.layers.3.mlp.gate_proj.weight')).toBe('blk.3.ffn_gate.weight');
  });
});
