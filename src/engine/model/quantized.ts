/**
 * A quantised base model (QLoRA): which weights are quantised, how each is quantised on the host
 * as it streams in (bitsandbytes' rules, `quant.ts`), and how it is laid out for the linear
 * kernels (`packQuantizedWeight`). Only the decoder's projections are quantised, as transformers'
 * `load_in_4bit` / `load_in_8bit` do; embeddings, norms and the LM head keep their dtype.
 */
import type * as tf from '@tensorflow/tfjs';
import type { QuantizationConfig } from '../recipe.ts';
import { LINEAR_MODULES } from './config.ts';
import { CODEBOOKS, doubleQuantize, quantize4bit, quantizeInt8Rows, type FourBitType } from './quant.ts';
import { UserError } from '../errors.ts';
import type { Bnb4bitWeight } from '../io/bnb.ts';
import { packQuantizedWeight, type FrozenWeight } from '../backend/kernels/linear.ts';

/** Values per 4-bit block (one absmax each), and blocks per double-quantisation block. */
export const BLOCKSIZE_4BIT = 64;
export const NESTED_BLOCKSIZE = 256;

export type StorageQuantization = { kind: 'nf4' | 'fp4'; double_quant: boolean } | { kind: 'int8' };

/** The storage a recipe's `quantization` block asks for; null for none. */
export function storageQuantization(q: QuantizationConfig | undefined | null): StorageQuantization | null {
  if (!q) return null;
  if (q.load_in_4bit) return { kind: q.bnb_4bit_quant_type, double_quant: q.bnb_4bit_use_double_quant };
  if (q.load_in_8bit) return { kind: 'int8' };
  return null;
}

const PROJECTION = new RegExp(`^model\\.layers\\.\\d+\\.(self_attn|mlp)\\.(${LINEAR_MODULES.join('|')})\\.weight$`);

/** Whether transformers' bitsandbytes loading quantises this weight: a decoder layer's projection. */
export function isQuantizedProjection(name: string): boolean {
  return PROJECTION.test(name);
}

/**
 * Bytes a [out, in] weight takes on the backend in this storage: its words of codes and its
 * scales. Double quantisation's 256-value map is bitsandbytes' fixed signed dynamic map, the same
 * for every weight, so the model holds it once (`sharedNestedMap`) and it is not counted here.
 */
export function quantizedBytes(shape: readonly [number, number], q: StorageQuantization): number {
  const n = shape[0] * shape[1];
  if (q.kind === 'int8') return 4 * Math.ceil(n / 4) + 4 * shape[0];
  const blocks = Math.ceil(n / BLOCKSIZE_4BIT);
  const codes = 4 * Math.ceil(n / 8);
  if (!q.double_quant) return codes + 4 * blocks;
  return codes + 4 * Math.ceil(blocks / 4) + 4 * Math.ceil(blocks / NESTED_BLOCKSIZE);
}

/** Bytes as 32-bit words, zero-padded (little-endian: byte k lands in bits 8·(k & 3) of word k >> 2). */
export function bytesToWords(bytes: Uint8Array | Int8Array): Int32Array {
  const words = new Int32Array(Math.ceil(bytes.length / 4));
  new Uint8Array(words.buffer).set(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length));
  return words;
}

/**
 * What the weights of one model share on the backend: double quantisation's map, uploaded once.
 * Each weight's `disposeFrozenWeight` disposes it too, which is harmless (a second dispose does
 * nothing) because a quantised projection is only ever disposed with its whole model.
 */
export interface SharedQuantState {
  map?: tf.Tensor;
  /** The shared map's values, to tell whether a pre-quantised weight's own map is the same. */
  mapValues?: Float32Array;
}

/** Whether two float32 arrays hold the same bit patterns. */
function sameBits(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}

/** Shares one nested map among a model's weights when the values are the same. */
function shareMap(w: FrozenWeight, values: Float32Array, shared: SharedQuantState): FrozenWeight {
  if (!shared.map) {
    shared.map = w.nested!.map;
    shared.mapValues = values;
    return w;
  }
  if (!sameBits(values, shared.mapValues!)) return w;
  w.nested!.map.dispose();
  return { ...w, nested: { ...w.nested!, map: shared.map } };
}

/**
 * A pre-quantised bitsandbytes weight (as a checkpoint stores it) uploaded as the kernels read it,
 * after checking what the kernels assume: blocks of 64, nested blocks of 256, and bitsandbytes'
 * own NF4 or FP4 levels (the kernels hold those levels as constants). `file` places the message.
 */
export function frozenFromBnb(name: string, w: Bnb4bitWeight, file: string, shared: SharedQuantState = {}): FrozenWeight {
  const bad = (why: string): UserError => new UserError(`${file}: the 4-bit weight ${name} ${why}`, { file, field: name });
  if (w.blocksize !== BLOCKSIZE_4BIT) throw bad(`has blocksize ${w.blocksize}; only bitsandbytes' default of ${BLOCKSIZE_4BIT} is read here.`);
  if (!sameBits(w.quant_map, CODEBOOKS[w.quant_type])) throw bad(`has a quant_map that is not bitsandbytes' ${w.quant_type.toUpperCase()} levels.`);
  const words = bytesToWords(w.packed);
  if (!w.nested) return packQuantizedWeight({ dtype: w.quant_type, shape: w.shape, words, absmax: w.absmax! });
  if (w.nested.blocksize !== NESTED_BLOCKSIZE) throw bad(`has nested_blocksize ${w.nested.blocksize}; only bitsandbytes' default of ${NESTED_BLOCKSIZE} is read here.`);
  const packed = packQuantizedWeight({
    dtype: w.quant_type,
    shape: w.shape,
    words,
    nested: { codes: bytesToWords(w.nested.codes), absmax: w.nested.absmax, map: w.nested.map, offset: w.nested.offset },
  });
  return shareMap(packed, w.nested.map, shared);
}

/**
 * One weight quantised to 4 bits on the host as bitsandbytes does (blocks of 64, double
 * quantisation in blocks of 256), in the form transformers saves; `dtype` is the torch name of the
 * dtype it had ("bfloat16", …), which the saved quant_state records.
 */
export function bnb4bitWeight(values: Float32Array, shape: [number, number], quant_type: FourBitType, double_quant: boolean, dtype = 'float32'): Bnb4bitWeight {
  const { packed, absmax } = quantize4bit(values, quant_type, BLOCKSIZE_4BIT);
  const base = { quant_type, dtype, shape, blocksize: BLOCKSIZE_4BIT, packed, quant_map: CODEBOOKS[quant_type].slice() };
  if (!double_quant) return { ...base, absmax, nested: null };
  const dq = doubleQuantize(absmax, NESTED_BLOCKSIZE);
  return { ...base, absmax: null, nested: { codes: dq.codes, absmax: dq.nested_absmax, map: dq.quant_map, offset: dq.offset, blocksize: NESTED_BLOCKSIZE } };
}

/**
 * One weight quantised on the host and uploaded packed: the float32 values exist only for this
 * weight, while it is read, never for the whole model. `shared` carries the nested map from one
 * weight of a model to the next (it is bitsandbytes' fixed dynamic map, the same for all).
 */
export function quantizeWeight(values: Float32Array, shape: [number, number], q: StorageQuantization, shared: SharedQuantState = {}): FrozenWeight {
  if (q.kind === 'int8') {
    const { codes, absmax } = quantizeInt8Rows(values, shape[0], shape[1]);
    return packQuantizedWeight({ dtype: 'int8', shape, words: bytesToWords(codes), absmax });
  }
  return frozenFromBnb('', bnb4bitWeight(values, shape, q.kind, q.double_quant), '', shared);
}
