/**
 * GGUF files for llama.cpp, as its convert_hf_to_gguf.py (a model) and convert_lora_to_gguf.py (a
 * LoRA adapter) write them for the llama, qwen2 and qwen3 architectures: a model with an adapter
 * merged in, or the adapter alone, which llama.cpp applies to the base model's GGUF at run time.
 * Names follow convert's (LlamaModel, Qwen2Model, TextModel.set_gguf_parameters, prepare_tensors)
 * so the two can be read side by side.
 */
import { UserError } from './errors.ts';
import { mergedWeight } from './export.ts';
import { pathIn, readText } from './io/files.ts';
import { GGML_QUANT_VERSION, GGUFMetadata, canEncode, encodeTensor, streamGGUF, type GGMLTypeName, type GGUFTensor, type GGUFTensorInfo } from './io/gguf.ts';
import { addTokenizerMetadata } from './io/gguf_tokenizer.ts';
import type { OpenModelFolder } from './io/model_folder.ts';
import type { Architecture, ModelConfig } from './model/config.ts';
import { expectedWeights, type CausalLM } from './model/llama.ts';
import type { LoraAdapter } from './model/lora.ts';

/** convert_hf_to_gguf.py's --outtype values written here. */
export const GGUF_OUTTYPES = ['f32', 'f16', 'bf16', 'q8_0'] as const;
export type GGUFOutType = (typeof GGUF_OUTTYPES)[number];

/** The tensor type of each outtype and its gguf-py LlamaFileType (general.file_type). */
const OUTTYPE: Record<GGUFOutType, { type: GGMLTypeName; fileType: number }> = {
  f32: { type: 'F32', fileType: 0 }, // ALL_F32
  f16: { type: 'F16', fileType: 1 }, // MOSTLY_F16
  bf16: { type: 'BF16', fileType: 32 }, // MOSTLY_BF16
  q8_0: { type: 'Q8_0', fileType: 7 }, // MOSTLY_Q8_0
};

/** llama.cpp's name of each architecture (gguf-py's MODEL_ARCH_NAMES). */
const GGUF_ARCHITECTURES: Record<Architecture, string> = {
  LlamaForCausalLM: 'llama',
  Qwen2ForCausalLM: 'qwen2',
  Qwen3ForCausalLM: 'qwen3',
};

/** Hugging Face module names inside a decoder layer → llama.cpp's (gguf-py's tensor_mapping.py). */
const LAYER_TENSORS: Record<string, string> = {
  input_layernorm: 'attn_norm',
  'self_attn.q_proj': 'attn_q',
  'self_attn.k_proj': 'attn_k',
  'self_attn.v_proj': 'attn_v',
  'self_attn.o_proj': 'attn_output',
  'self_attn.q_norm': 'attn_q_norm',
  'self_attn.k_norm': 'attn_k_norm',
  post_attention_layernorm: 'ffn_norm',
  'mlp.gate_proj': 'ffn_gate',
  'mlp.up_proj': 'ffn_up',
  'mlp.down_proj': 'ffn_down',
};

const TOP_TENSORS: Record<string, string> = {
  'model.embed_tokens.weight': 'token_embd.weight',
  'model.norm.weight': 'output_norm.weight',
  'lm_head.weight': 'output.weight',
};

/** llama.cpp's name of a Hugging Face tensor, e.g. model.layers.3.self_attn.q_proj.weight → blk.3.attn_q.weight. */
export function ggufTensorName(hfName: string): string {
  const top = TOP_TENSORS[hfName];
  if (top) return top;
  const m = /^model\.layers\.(\d+)\.(.+)\.(weight|bias)$/.exec(hfName);
  const module = m ? LAYER_TENSORS[m[2]] : undefined;
  if (!m || !module) throw new Error(`no GGUF name for tensor ${hfName}`);
  return `blk.${m[1]}.${module}.${m[3]}`;
}

/**
 * convert_hf_to_gguf.py's `LlamaModel.permute(weights, n_head, n_head_kv)`: within each head, the
 * rows of the first and second rotary halves are interleaved (row i of the first half, then row i
 * of the second), since llama.cpp's "normal" RoPE rotates adjacent pairs where transformers'
 * rotates the halves. `rows` is the first dimension of `w` (a matrix's out_features or a bias's
 * length). As in convert, a differing n_head_kv replaces n_head (that is how k_proj is permuted).
 */
export function llamaPermute(w: Float32Array, rows: number, nHead: number, nHeadKv: number | null): Float32Array {
  const heads = nHeadKv !== null && nHeadKv !== nHead ? nHeadKv : nHead;
  const cols = w.length / rows;
  const half = rows / heads / 2;
  const out = new Float32Array(w.length);
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < half; i++) {
      for (let p = 0; p < 2; p++) {
        const from = (h * 2 * half + p * half + i) * cols;
        out.set(w.subarray(from, from + cols), (h * 2 * half + 2 * i + p) * cols);
      }
    }
  }
  return out;
}

/** The q/k rows of a Llama tensor permuted as convert does (qwen2 and qwen3 use llama.cpp's NeoX RoPE, as transformers does, and are not). */
function permuteForRope(c: ModelConfig, hfName: string, w: Float32Array, rows: number): Float32Array {
  if (c.architecture !== 'LlamaForCausalLM') return w;
  if (/\.q_proj\.(weight|bias)$/.test(hfName)) return llamaPermute(w, rows, c.num_attention_heads, c.num_attention_heads);
  if (/\.k_proj\.(weight|bias)$/.test(hfName)) return llamaPermute(w, rows, c.num_attention_heads, c.num_key_value_heads);
  return w;
}

/**
 * llama.cpp's architecture name for this model, refusing what its loader cannot build: its qwen2
 * graph takes the attention width to be hidden_size (q_proj and o_proj square), so a Qwen2 config
 * with a head_dim that makes them otherwise has no GGUF form.
 */
function ggufArchitecture(folder: OpenModelFolder, c: ModelConfig): string {
  if (c.architecture === 'Qwen2ForCausalLM' && c.num_attention_heads * c.head_dim !== c.hidden_size) {
    const file = pathIn(folder.source, 'config.json');
    throw new UserError(
      `${file}: num_attention_heads × head_dim (${c.num_attention_heads} × ${c.head_dim}) differs from hidden_size (${c.hidden_size}), which llama.cpp's qwen2 architecture does not support, so this model has no GGUF form.`,
      { file, field: 'head_dim' },
    );
  }
  return GGUF_ARCHITECTURES[c.architecture];
}

function checkOuttype(outtype: string): asserts outtype is GGUFOutType {
  if (!(GGUF_OUTTYPES as readonly string[]).includes(outtype)) {
    throw new UserError(`GGUF outtype ${JSON.stringify(outtype)} is not supported; choose one of ${GGUF_OUTTYPES.join(', ')}.`, { field: 'outtype' });
  }
}

/**
 * The tensor type convert's prepare_tensors picks: F32 for 1-D tensors, norms and anything not a
 * `.weight` (biases), else the outtype's; Q8_0 packs rows in blocks of 32, and a row of another
 * length falls back to F16, as convert does when gguf-py refuses to quantise it.
 */
function tensorType(ggufName: string, ne: readonly number[], outtype: GGUFOutType): GGMLTypeName {
  if (ne.length <= 1 || ggufName.endsWith('_norm.weight') || !ggufName.endsWith('.weight')) return 'F32';
  const type = OUTTYPE[outtype].type;
  return canEncode(type, ne[0]) ? type : 'F16';
}

/**
 * LlamaModel.generate_extra_tensors for rope_type "llama3": llama.cpp divides each rotary
 * frequency by its factor in `rope_freqs.weight`, so this tensor carries the llama3 scaling
 * (1 for high frequencies, `factor` for low ones, a smooth blend between). Computed in float32,
 * as torch does there.
 */
function llama3RopeFactors(c: ModelConfig): Float32Array {
  const s = c.rope_scaling;
  if (s?.rope_type !== 'llama3') throw new Error('rope_freqs is written for llama3 rope scaling only');
  const f = Math.fround;
  const dim = c.head_dim;
  const lowWavelen = s.original_max_position_embeddings / s.low_freq_factor;
  const highWavelen = s.original_max_position_embeddings / s.high_freq_factor;
  const out = new Float32Array(dim / 2);
  for (let i = 0; i < dim / 2; i++) {
    const freq = f(1 / f(Math.pow(c.rope_theta, f((2 * i) / dim))));
    const wavelen = f(f(2 * Math.PI) / freq);
    if (wavelen < highWavelen) out[i] = 1;
    else if (wavelen > lowWavelen) out[i] = s.factor;
    else {
      const smooth = f(f(f(s.original_max_position_embeddings / wavelen) - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor));
      out[i] = f(1 / f(f(f(1 - smooth) / s.factor) + smooth));
    }
  }
  return out;
}

/** ggml's ne of a Hugging Face shape: the same dimensions, innermost first. */
function ggmlShape(shape: readonly number[]): number[] {
  return [...shape].reverse();
}

function modelName(folder: OpenModelFolder): string {
  return folder.source.location.replace(/\/+$/, '').split('/').pop() ?? '';
}

/**
 * The model as a GGUF file in `outtype`, with the adapter (if any) merged into its weights first
 * (W' = W + scale·B·A, exactly as the merged safetensors export). A quantised base is written
 * dequantised, as its merge is. What convert_hf_to_gguf.py writes: the hyperparameters under
 * `<arch>.*`, llama.cpp's tensor names (no `output` tensor when the embeddings are tied), Llama's
 * q/k rows permuted for llama.cpp's RoPE, llama3 rope scaling as a `rope_freqs` tensor, and the
 * tokenizer with its special tokens and chat template.
 */
export async function ggufModelFile(folder: OpenModelFolder, model: CausalLM, adapter: LoraAdapter | null, outtype: GGUFOutType): Promise<AsyncIterable<Uint8Array>> {
  checkOuttype(outtype);
  const c = model.config;
  const arch = ggufArchitecture(folder, c);
  const md = new GGUFMetadata();
  md.string('general.architecture', arch);
  md.string('general.type', 'model');
  md.string('general.name', modelName(folder));
  // TextModel.set_gguf_parameters (LlamaModel's additions after it).
  md.uint32(`${arch}.block_count`, c.num_hidden_layers);
  md.uint32(`${arch}.context_length`, c.max_position_embeddings);
  md.uint32(`${arch}.embedding_length`, c.hidden_size);
  md.uint32(`${arch}.feed_forward_length`, c.intermediate_size);
  md.uint32(`${arch}.attention.head_count`, c.num_attention_heads);
  md.uint32(`${arch}.attention.head_count_kv`, c.num_key_value_heads);
  if (c.rope_scaling?.rope_type === 'linear') {
    md.string(`${arch}.rope.scaling.type`, 'linear');
    md.float32(`${arch}.rope.scaling.factor`, c.rope_scaling.factor);
  }
  md.float32(`${arch}.rope.freq_base`, c.rope_theta);
  md.float32(`${arch}.attention.layer_norm_rms_epsilon`, c.rms_norm_eps);
  if (typeof c.raw.head_dim === 'number') {
    md.uint32(`${arch}.attention.key_length`, c.head_dim);
    md.uint32(`${arch}.attention.value_length`, c.head_dim);
  }
  md.uint32('general.file_type', OUTTYPE[outtype].fileType);
  if (arch === 'llama') {
    md.uint32('llama.vocab_size', c.vocab_size);
    md.uint32('llama.rope.dimension_count', c.head_dim);
  }
  md.uint32('general.quantization_version', GGML_QUANT_VERSION);

  const tokenizerConfig = { ...folder.tokenizerConfig };
  if (tokenizerConfig.chat_template === undefined && folder.source.has('chat_template.jinja')) {
    tokenizerConfig.chat_template = await readText(folder.source, 'chat_template.jinja');
  }
  addTokenizerMetadata(md, { tokenizerJson: folder.tokenizerJson, tokenizerConfig, config: folder.config, location: folder.source.location }, arch, c.vocab_size);

  // Each tensor is merged, permuted and encoded only when the file reaches it.
  const tensors: (GGUFTensorInfo & { data: () => Promise<Uint8Array> })[] = [];
  if (c.rope_scaling?.rope_type === 'llama3') {
    const factors = llama3RopeFactors(c);
    tensors.push({ name: 'rope_freqs.weight', ne: [factors.length], type: 'F32', data: async () => encodeTensor(factors, factors.length, 'F32') });
  }
  for (const [hfName, shape] of expectedWeights(c)) {
    const name = ggufTensorName(hfName);
    const ne = ggmlShape(shape);
    const type = tensorType(name, ne, outtype);
    tensors.push({ name, ne, type, data: async () => encodeTensor(permuteForRope(c, hfName, await mergedWeight(model, adapter, hfName), shape[0]), ne[0], type) });
  }
  return streamGGUF(md, tensors, (i) => tensors[i].data());
}

/**
 * The alpha that makes llama.cpp's LoRA scale, which is always alpha / r, equal to the adapter's:
 * lora_alpha itself, or with rsLoRA (scale lora_alpha / √r) lora_alpha · √r. (convert_lora_to_gguf.py
 * writes lora_alpha whatever use_rslora says, which would scale an rsLoRA adapter by 1/√r too little.)
 */
export function ggufLoraAlpha(adapter: LoraAdapter): number {
  const { lora_alpha, r, use_rslora } = adapter.config;
  return use_rslora ? lora_alpha * Math.sqrt(r) : lora_alpha;
}

/**
 * The adapter as convert_lora_to_gguf.py writes a PEFT LoRA for the base model's GGUF:
 * general.type "adapter", adapter.type "lora", adapter.lora.alpha, and per target layer
 * `<base tensor>.lora_a` (A, [r, in], ne [in, r]) and `.lora_b` (B, [out, r], ne [r, out]) in
 * F32, that script's default outtype. Llama's q/k lora_b rows are permuted as the base weights
 * are, so that B·A lands on the permuted rows. A quantised base needs nothing special: llama.cpp
 * applies the adapter beside the base GGUF's weights, whatever their type.
 */
export async function ggufLoraFile(folder: OpenModelFolder, model: CausalLM, adapter: LoraAdapter): Promise<AsyncIterable<Uint8Array>> {
  const c = model.config;
  const arch = ggufArchitecture(folder, c);
  const md = new GGUFMetadata();
  md.string('general.architecture', arch);
  md.string('general.type', 'adapter');
  md.string('adapter.type', 'lora');
  md.string('general.name', modelName(folder));
  md.float32('adapter.lora.alpha', ggufLoraAlpha(adapter));
  md.uint32('general.quantization_version', GGML_QUANT_VERSION);

  const tensors: GGUFTensor[] = [];
  for (const [path, { A, B }] of adapter.modules) {
    const hfName = `${path}.weight`;
    const name = ggufTensorName(hfName);
    const [r, inFeatures] = A.shape;
    const outFeatures = B.shape[0];
    const a = (await A.data()) as Float32Array;
    const b = permuteForRope(c, hfName, (await B.data()) as Float32Array, outFeatures);
    tensors.push({ name: `${name}.lora_a`, ne: [inFeatures, r], type: 'F32', data: encodeTensor(a, inFeatures, 'F32') });
    tensors.push({ name: `${name}.lora_b`, ne: [r, outFeatures], type: 'F32', data: encodeTensor(b, r, 'F32') });
  }
  // An adapter is small: its tensors are encoded up front and handed out as parts.
  return streamGGUF(md, tensors, (i) => tensors[i].data);
}
