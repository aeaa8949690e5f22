/**
 * A quantised base model (QLoRA): which weights are quantised, how each is quantised on the host
 * as it streams in (bitsandbytes' rules, `quant.ts`), and how it is laid out for the linear
 * kernels (`packQuantizedWeight`). Only the decoder's projections are quantised, as transformers'
 * `load_in_4bit` / `load_in_8bit` do; embeddings, norms and the LM head keep their dtype.
 */
import type * as tf from '@tensorflow/tfjs';
import type { QuantizationConfig } from '../recipe.ts';
import { LINEAR_MODULES } from './config.ts';
import { doubleQuantize, quantize4bit, quantizeInt8Rows } from './quant.ts';
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
  const { packed, absmax } = quantize4bit(values, q.kind, BLOCKSIZE_4BIT);
  const words = bytesToWords(packed);
  if (!q.double_quant) return packQuantizedWeight({ dtype: q.kind, shape, words, absmax });
  const nested = doubleQuantize(absmax, NESTED_BLOCKSIZE);
  const w = packQuantizedWeight({
    dtype: q.kind,
    shape,
    words,
    nested: { codes: bytesToWords(nested.codes), absmax: nested.nested_absmax, map: nested.quant_map, offset: nested.offset },
  });
  if (!shared.map) {
    shared.map = w.nested!.map;
    return w;
  }
  w.nested!.map.dispose();
  return { ...w, nested: { ...w.nested!, map: shared.map } };
}
