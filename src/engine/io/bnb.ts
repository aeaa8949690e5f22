/**
 * transformers' serialised bitsandbytes 4-bit weights: the layout of pre-quantised checkpoints
 * such as unsloth/Qwen2.5-0.5B-Instruct-bnb-4bit, read here and written by `finetune quantize`.
 *
 * A Linear4bit's `P.weight` is saved as its packed codes (U8 [⌈n/2⌉, 1], two codes a byte, first
 * value in the high nibble) plus what functional.py `QuantState.as_dict(packed=True)` gives:
 * - `P.weight.absmax`: F32 [blocks], or with double quantisation U8 [blocks] (8-bit codes);
 * - `P.weight.quant_map`: F32 [16], the NF4 or FP4 levels;
 * - with double quantisation `P.weight.nested_absmax` F32 [⌈blocks / 256⌉] and
 *   `P.weight.nested_quant_map` F32 [256] (the signed dynamic map);
 * - `P.weight.quant_state.bitsandbytes__nf4` (or `__fp4`): U8, the UTF-8 bytes of a JSON object
 *   with quant_type, blocksize, dtype, shape and, when nested, nested_blocksize, nested_dtype and
 *   nested_offset (utils.py pack_dict_to_tensor).
 * config.json carries BitsAndBytesConfig.to_dict() as `quantization_config`.
 */
import { UserError } from '../errors.ts';
import { quantStateJson, type FourBitType, type QuantStateInfo } from '../model/quant.ts';

export const QUANT_STATE_KEY = '.quant_state.bitsandbytes__';
/** The companions of a quantised `P.weight`, saved as `P.weight.<name>`. */
export const COMPANIONS = ['absmax', 'quant_map', 'nested_absmax', 'nested_quant_map'] as const;
export type Companion = (typeof COMPANIONS)[number];

/** One 4-bit weight as transformers saved it, read into host arrays. */
export interface Bnb4bitWeight {
  quant_type: FourBitType;
  /** The weight's dtype before quantisation, as torch names it: "bfloat16", "float16", "float32". */
  dtype: string;
  /** The weight's logical shape [out, in]. */
  shape: [number, number];
  blocksize: number;
  /** ⌈n/2⌉ bytes of codes. */
  packed: Uint8Array;
  /** The 16 levels the codes index. */
  quant_map: Float32Array;
  /** float32 per block; null with double quantisation, where `nested` holds them. */
  absmax: Float32Array | null;
  nested: { codes: Uint8Array; absmax: Float32Array; map: Float32Array; offset: number; blocksize: number } | null;
}

/**
 * The quantised weights among a checkpoint's tensor names: each `P.weight` with a
 * `P.weight.quant_state.bitsandbytes__<type>` tensor, mapped to that tensor's name.
 */
export function quantizedWeights(names: Iterable<string>): Map<string, string> {
  const out = new Map<string, string>();
  for (const name of names) {
    const i = name.indexOf(QUANT_STATE_KEY);
    if (i > 0 && name.slice(0, i).endsWith('.weight')) out.set(name.slice(0, i), name);
  }
  return out;
}

/** Every tensor name that belongs to a quantised weight without being its codes. */
export function companionNames(weight: string, stateName: string): string[] {
  return [...COMPANIONS.map((c) => `${weight}.${c}`), stateName];
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * The quant_state JSON of one weight, checked: a 4-bit type, a positive blocksize, a 2-D shape,
 * and the nested fields together or not at all. `file` and `name` place the message.
 */
export function parseQuantState(bytes: Uint8Array, file: string, name: string): QuantStateInfo {
  const bad = (why: string): UserError => new UserError(`${file}: tensor "${name}" ${why}`, { file, field: name });
  let v: unknown;
  try {
    v = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch {
    throw bad('is not the UTF-8 JSON of a bitsandbytes quant_state.');
  }
  if (!isRecord(v)) throw bad('is not a JSON object.');
  const { quant_type, blocksize, dtype, shape } = v;
  if (quant_type !== 'nf4' && quant_type !== 'fp4') throw bad(`has quant_type ${JSON.stringify(quant_type)}; a 4-bit weight is "nf4" or "fp4".`);
  if (!Number.isSafeInteger(blocksize) || (blocksize as number) <= 0) throw bad(`has blocksize ${JSON.stringify(blocksize)}; expected a positive integer.`);
  if (typeof dtype !== 'string') throw bad(`has no "dtype" string.`);
  if (!Array.isArray(shape) || shape.length !== 2 || !shape.every((d) => Number.isSafeInteger(d) && d > 0)) {
    throw bad(`has shape ${JSON.stringify(shape)}; a quantised projection is a 2-D matrix.`);
  }
  const info: QuantStateInfo = { quant_type, blocksize: blocksize as number, dtype, shape: shape as number[] };
  const hasNested = 'nested_blocksize' in v || 'nested_offset' in v;
  if (hasNested) {
    const { nested_blocksize: nb, nested_offset: offset, nested_dtype } = v;
    if (!Number.isSafeInteger(nb) || (nb as number) <= 0) throw bad(`has nested_blocksize ${JSON.stringify(nb)}; expected a positive integer.`);
    if (typeof offset !== 'number' || !Number.isFinite(offset)) throw bad(`has nested_offset ${JSON.stringify(offset)}; expected a finite number.`);
    if (nested_dtype !== undefined && nested_dtype !== 'float32') throw bad(`has nested_dtype ${JSON.stringify(nested_dtype)}; bitsandbytes keeps nested absmax values in float32.`);
    info.nested = { blocksize: nb as number, offset: Math.fround(offset) };
  }
  return info;
}

/** A tensor as `writeSafetensors` takes raw bytes. */
export interface RawTensor {
  name: string;
  dtype: 'U8' | 'F32';
  shape: number[];
  bytes: Uint8Array;
}

function f32Bytes(values: Float32Array): Uint8Array {
  const out = new Uint8Array(values.length * 4);
  const view = new DataView(out.buffer);
  for (let i = 0; i < values.length; i++) view.setFloat32(4 * i, values[i], true);
  return out;
}

/** The tensors transformers saves for one 4-bit weight, under its names, codes first. */
export function bnb4bitTensors(name: string, w: Bnb4bitWeight): RawTensor[] {
  const stateJson = quantStateJson({
    quant_type: w.quant_type,
    blocksize: w.blocksize,
    dtype: w.dtype,
    shape: w.shape,
    ...(w.nested ? { nested: { blocksize: w.nested.blocksize, offset: w.nested.offset } } : {}),
  });
  const out: RawTensor[] = [
    { name, dtype: 'U8', shape: [w.packed.length, 1], bytes: w.packed },
    { name: `${name}.quant_map`, dtype: 'F32', shape: [16], bytes: f32Bytes(w.quant_map) },
  ];
  if (w.nested) {
    out.push(
      { name: `${name}.absmax`, dtype: 'U8', shape: [w.nested.codes.length], bytes: w.nested.codes },
      { name: `${name}.nested_absmax`, dtype: 'F32', shape: [w.nested.absmax.length], bytes: f32Bytes(w.nested.absmax) },
      { name: `${name}.nested_quant_map`, dtype: 'F32', shape: [w.nested.map.length], bytes: f32Bytes(w.nested.map) },
    );
  } else {
    out.push({ name: `${name}.absmax`, dtype: 'F32', shape: [w.absmax!.length], bytes: f32Bytes(w.absmax!) });
  }
  const json = new TextEncoder().encode(stateJson);
  out.push({ name: `${name}${QUANT_STATE_KEY}${w.quant_type}`, dtype: 'U8', shape: [json.length], bytes: json });
  return out;
}

/** The 4-bit storage a checkpoint's config.json declares. */
export interface PrequantizedConfig {
  quant_type: FourBitType;
  double_quant: boolean;
}

/**
 * config.json's `quantization_config`, checked: null when there is none; a bitsandbytes 4-bit
 * config as its type and double quantisation; anything else refused with one sentence (other
 * methods such as GPTQ or AWQ, and bitsandbytes' 8-bit checkpoints, are not read).
 */
export function prequantizedConfig(config: Record<string, unknown>, file: string): PrequantizedConfig | null {
  const q = config.quantization_config;
  if (q === undefined || q === null) return null;
  const field = 'quantization_config';
  if (!isRecord(q)) throw new UserError(`${file}: "quantization_config" must be an object.`, { file, field });
  if (q.quant_method !== 'bitsandbytes') {
    throw new UserError(
      `${file}: the model is quantised with ${JSON.stringify(q.quant_method)}; only bitsandbytes 4-bit checkpoints (quant_method "bitsandbytes", load_in_4bit) load here, or the unquantised model with a recipe's quantization block.`,
      { file, field: `${field}.quant_method` },
    );
  }
  if (q.load_in_8bit === true || q._load_in_8bit === true) {
    throw new UserError(
      `${file}: bitsandbytes 8-bit checkpoints do not load here; load the unquantised model with quantization.load_in_8bit (or --load_in_8bit), which quantises it the same way as it streams in.`,
      { file, field: `${field}.load_in_8bit` },
    );
  }
  if (q.load_in_4bit !== true && q._load_in_4bit !== true) {
    throw new UserError(`${file}: "quantization_config" has neither load_in_4bit nor load_in_8bit set to true.`, { file, field: `${field}.load_in_4bit` });
  }
  const type = q.bnb_4bit_quant_type ?? 'fp4';
  if (type !== 'nf4' && type !== 'fp4') throw new UserError(`${file}: "quantization_config.bnb_4bit_quant_type" is ${JSON.stringify(type)}; it is "nf4" or "fp4".`, { file, field: `${field}.bnb_4bit_quant_type` });
  const storage = q.bnb_4bit_quant_storage ?? 'uint8';
  if (storage !== 'uint8') {
    throw new UserError(`${file}: "quantization_config.bnb_4bit_quant_storage" is ${JSON.stringify(storage)}; only "uint8" (the default) packs codes the way this loader reads them.`, { file, field: `${field}.bnb_4bit_quant_storage` });
  }
  return { quant_type: type, double_quant: q.bnb_4bit_use_double_quant === true };
}

/**
 * BitsAndBytesConfig(load_in_4bit=True, …).to_dict() as transformers writes it into config.json,
 * keys sorted as it sorts them; `computeDtype` is bnb_4bit_compute_dtype ("bfloat16", …).
 */
export function quantizationConfigJson(q: PrequantizedConfig, computeDtype: string): Record<string, unknown> {
  return {
    _load_in_4bit: true,
    _load_in_8bit: false,
    bnb_4bit_compute_dtype: computeDtype,
    bnb_4bit_quant_storage: 'uint8',
    bnb_4bit_quant_type: q.quant_type,
    bnb_4bit_use_double_quant: q.double_quant,
    llm_int8_enable_fp32_cpu_offload: false,
    llm_int8_has_fp16_weight: false,
    llm_int8_skip_modules: null,
    llm_int8_threshold: 6.0,
    load_in_4bit: true,
    load_in_8bit: false,
    quant_method: 'bitsandbytes',
  };
}
