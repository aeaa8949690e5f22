/**
 * GGUF v3 files as ggml's gguf.c reads them and gguf-py's GGUFWriter (llama.cpp's
 * gguf-py/gguf/gguf_writer.py) writes them, little-endian throughout:
 *
 *   "GGUF", u32 version 3, u64 tensor count, u64 key-value count,
 *   each key-value: string key, u32 value type, value (an array: u32 item type, u64 length, items),
 *   each tensor info: string name, u32 n_dims, u64 ne[n_dims] (innermost dimension first, as ggml
 *   orders them), u32 ggml type, u64 offset into the data section,
 *   zero padding to `general.alignment` (32 unless the metadata says otherwise),
 *   the data section: each tensor at its offset, padded to the alignment.
 *
 * A string is a u64 byte length and UTF-8 bytes. The tensor encoders are ggml's: F32, F16 and
 * BF16 round to nearest even, and Q8_0 is `quantize_row_q8_0_ref` of ggml-quants.c.
 *
 * @huggingface/gguf reads all of this (the tests read every file written here back with its
 * parser), but of writing it offers only the metadata header (`serializeGgufMetadata`,
 * `buildGgufHeader`, for editing the keys of a file that exists): no tensor infos, no tensor data.
 * Hence this writer. It imports nothing from Node, so the studio's Worker runs it too.
 */
import { float32ToBf16Bits, float32ToF16Bits } from './safetensors.ts';

/** gguf-py's GGUFValueType. */
export const GGUF_VALUE_TYPE = {
  UINT8: 0,
  INT8: 1,
  UINT16: 2,
  INT16: 3,
  UINT32: 4,
  INT32: 5,
  FLOAT32: 6,
  BOOL: 7,
  STRING: 8,
  ARRAY: 9,
  UINT64: 10,
  INT64: 11,
  FLOAT64: 12,
} as const;

export type GGUFScalarType = Exclude<keyof typeof GGUF_VALUE_TYPE, 'ARRAY'>;
type Scalar = number | bigint | boolean | string;

export type GGUFValue =
  | { type: GGUFScalarType; value: Scalar }
  | { type: 'ARRAY'; itemType: GGUFScalarType; value: readonly Scalar[] };

const GGUF_DEFAULT_ALIGNMENT = 32;
/** GGML_QUANT_VERSION of ggml.h, which convert_hf_to_gguf.py writes as general.quantization_version. */
export const GGML_QUANT_VERSION = 2;

/**
 * The key-values of a file, in the order they are added. As in GGUFWriter, adding a key again
 * replaces its value, and an empty string or array is not written at all.
 */
export class GGUFMetadata {
  readonly entries = new Map<string, GGUFValue>();

  set(key: string, value: GGUFValue): this {
    this.entries.set(key, value);
    return this;
  }

  uint32(key: string, value: number): this {
    return this.set(key, { type: 'UINT32', value });
  }

  float32(key: string, value: number): this {
    return this.set(key, { type: 'FLOAT32', value });
  }

  bool(key: string, value: boolean): this {
    return this.set(key, { type: 'BOOL', value });
  }

  string(key: string, value: string): this {
    return value === '' ? this : this.set(key, { type: 'STRING', value });
  }

  array(key: string, itemType: GGUFScalarType, value: readonly Scalar[]): this {
    return value.length === 0 ? this : this.set(key, { type: 'ARRAY', itemType, value });
  }
}

/** The ggml tensor types written here (ggml.h's enum ggml_type). */
export const GGML_TYPE = { F32: 0, F16: 1, Q8_0: 8, BF16: 30 } as const;
export type GGMLTypeName = keyof typeof GGML_TYPE;

/** Values in one Q8_0 block (QK8_0 in ggml-common.h). */
const QK8_0 = 32;

/** Values per block and bytes per block of each type (gguf-py's GGML_QUANT_SIZES). */
const BLOCK: Record<GGMLTypeName, [values: number, bytes: number]> = {
  F32: [1, 4],
  F16: [1, 2],
  BF16: [1, 2],
  // An f16 scale, then 32 int8 values.
  Q8_0: [QK8_0, 2 + QK8_0],
};

/** A tensor's entry in a GGUF header: its name, shape and type. */
export interface GGUFTensorInfo {
  name: string;
  /** ggml's ne: the row (innermost) dimension first, so a [out, in] matrix is [in, out]. */
  ne: number[];
  type: GGMLTypeName;
}

export interface GGUFTensor extends GGUFTensorInfo {
  /** The encoded values (see `encodeTensor`). */
  data: Uint8Array;
}

/** Whether a row of this many values can be stored as `type` (Q8_0 packs whole blocks of 32 along a row). */
export function canEncode(type: GGMLTypeName, rowLength: number): boolean {
  return rowLength % BLOCK[type][0] === 0;
}

/** float32 values, rows of `rowLength` one after another, as ggml stores them in `type`. */
export function encodeTensor(values: Float32Array, rowLength: number, type: GGMLTypeName): Uint8Array {
  if (!canEncode(type, rowLength)) throw new Error(`rows of ${rowLength} values cannot be stored as ${type}`);
  const n = values.length;
  switch (type) {
    case 'F32': {
      const out = new Uint8Array(n * 4);
      const view = new DataView(out.buffer);
      for (let i = 0; i < n; i++) view.setFloat32(i * 4, values[i], true);
      return out;
    }
    case 'F16':
    case 'BF16': {
      const bits = type === 'F16' ? float32ToF16Bits : float32ToBf16Bits;
      const out = new Uint8Array(n * 2);
      const view = new DataView(out.buffer);
      for (let i = 0; i < n; i++) view.setUint16(i * 2, bits(values[i]), true);
      return out;
    }
    case 'Q8_0':
      return quantizeQ8_0(values);
  }
}

/**
 * ggml's `quantize_row_q8_0_ref`: per block of 32 values, d = amax / 127 (stored as f16) and
 * q = roundf(x · (1/d)) as int8, all arithmetic in float32 as the C code does it (double
 * arithmetic rounded to float32 gives the same results for one division or product). roundf
 * rounds halves away from zero.
 */
function quantizeQ8_0(x: Float32Array): Uint8Array {
  const [qk, blockBytes] = BLOCK.Q8_0;
  const blocks = x.length / qk;
  const out = new Uint8Array(blocks * blockBytes);
  const view = new DataView(out.buffer);
  const f = Math.fround;
  for (let b = 0; b < blocks; b++) {
    let amax = 0;
    for (let j = 0; j < qk; j++) amax = Math.max(amax, Math.abs(x[b * qk + j]));
    const d = f(amax / 127);
    const id = d !== 0 ? f(1 / d) : 0;
    view.setUint16(b * blockBytes, float32ToF16Bits(d), true);
    for (let j = 0; j < qk; j++) {
      const x0 = f(x[b * qk + j] * id);
      const q = Math.sign(x0) * Math.floor(Math.abs(x0) + 0.5);
      view.setInt8(b * blockBytes + 2 + j, q);
    }
  }
  return out;
}

/** Bytes a tensor of shape `ne` takes in `type`. */
function tensorBytes(ne: readonly number[], type: GGMLTypeName): number {
  const [values, bytes] = BLOCK[type];
  return (ne.reduce((a, d) => a * d, 1) / values) * bytes;
}

/**
 * The header of a GGUF file (magic, version, key-values, tensor infos) padded to the alignment,
 * and the padding that follows each tensor's data. Offsets follow from shapes and types alone,
 * so the header is written before any tensor's data exists.
 */
function ggufHeader(metadata: GGUFMetadata, tensors: readonly GGUFTensorInfo[]): { header: Uint8Array; padding: (bytes: number) => Uint8Array } {
  const alignmentEntry = metadata.entries.get('general.alignment');
  const alignment = alignmentEntry ? Number(alignmentEntry.value) : GGUF_DEFAULT_ALIGNMENT;
  if (!Number.isInteger(alignment) || alignment <= 0 || alignment % 8 !== 0) throw new Error(`general.alignment must be a positive multiple of 8 (got ${alignment})`);
  const pad = (n: number) => Math.ceil(n / alignment) * alignment;

  const head = new ByteWriter();
  head.u32(0x46554747); // "GGUF" read as a little-endian u32
  head.u32(3);
  head.u64(tensors.length);
  head.u64(metadata.entries.size);
  for (const [key, value] of metadata.entries) {
    head.string(key);
    head.u32(GGUF_VALUE_TYPE[value.type]);
    if (value.type === 'ARRAY') {
      head.u32(GGUF_VALUE_TYPE[value.itemType]);
      head.u64(value.value.length);
      for (const item of value.value) head.scalar(value.itemType, item);
    } else {
      head.scalar(value.type, value.value);
    }
  }
  let offset = 0;
  const names = new Set<string>();
  for (const t of tensors) {
    if (names.has(t.name)) throw new Error(`tensor ${t.name} is written twice`);
    names.add(t.name);
    head.string(t.name);
    head.u32(t.ne.length);
    for (const d of t.ne) head.u64(d);
    head.u32(GGML_TYPE[t.type]);
    head.u64(offset);
    offset += pad(tensorBytes(t.ne, t.type));
  }
  const bytes = head.bytes();
  const header = new Uint8Array(pad(bytes.length));
  header.set(bytes);
  return { header, padding: (n) => new Uint8Array(pad(n) - n) };
}

/**
 * A GGUF file as its parts in order, made as they are asked for: the header, then each tensor's
 * data from `data(i)` and its padding. Only the tensor being written need exist: the CLI writes
 * each part as it comes and the studio turns each into a Blob, so a multi-gigabyte export never
 * holds the whole file.
 */
export async function* streamGGUF(metadata: GGUFMetadata, tensors: readonly GGUFTensorInfo[], data: (i: number) => Uint8Array | Promise<Uint8Array>): AsyncGenerator<Uint8Array> {
  const { header, padding } = ggufHeader(metadata, tensors);
  yield header;
  for (let i = 0; i < tensors.length; i++) {
    const bytes = await data(i);
    const t = tensors[i];
    if (bytes.length !== tensorBytes(t.ne, t.type)) throw new Error(`tensor ${t.name}: ${bytes.length} bytes of data for ${t.type} [${t.ne}], which takes ${tensorBytes(t.ne, t.type)}`);
    yield bytes;
    const pad = padding(bytes.length);
    if (pad.length > 0) yield pad;
  }
}

/** A growing little-endian byte buffer for the header, whose size is known only once written. */
class ByteWriter {
  private buf = new Uint8Array(1 << 16);
  length = 0;
  private readonly enc = new TextEncoder();

  /**
   * A view of the next `n` bytes, the buffer grown first where they do not fit (so a view is
   * always taken after growing, never of a buffer about to be replaced).
   */
  private next(n: number): DataView {
    if (this.length + n > this.buf.length) {
      const bigger = new Uint8Array(Math.max(this.buf.length * 2, this.length + n));
      bigger.set(this.buf.subarray(0, this.length));
      this.buf = bigger;
    }
    const view = new DataView(this.buf.buffer, this.length, n);
    this.length += n;
    return view;
  }

  u32(v: number): void {
    this.next(4).setUint32(0, v, true);
  }

  u64(v: number | bigint): void {
    this.next(8).setBigUint64(0, BigInt(v), true);
  }

  string(s: string): void {
    const bytes = this.enc.encode(s);
    this.u64(bytes.length);
    const view = this.next(bytes.length);
    this.buf.set(bytes, view.byteOffset);
  }

  scalar(type: GGUFScalarType, v: Scalar): void {
    const expect = (kind: string) => {
      if (typeof v !== kind) throw new Error(`a GGUF ${type} value must be a ${kind} (got ${typeof v})`);
    };
    switch (type) {
      case 'STRING': expect('string'); return this.string(v as string);
      case 'BOOL': expect('boolean'); return this.next(1).setUint8(0, v ? 1 : 0);
      case 'UINT64': return this.next(8).setBigUint64(0, BigInt(v as number | bigint), true);
      case 'INT64': return this.next(8).setBigInt64(0, BigInt(v as number | bigint), true);
    }
    expect('number');
    const n = v as number;
    switch (type) {
      case 'UINT8': return this.next(1).setUint8(0, n);
      case 'INT8': return this.next(1).setInt8(0, n);
      case 'UINT16': return this.next(2).setUint16(0, n, true);
      case 'INT16': return this.next(2).setInt16(0, n, true);
      case 'UINT32': return this.next(4).setUint32(0, n, true);
      case 'INT32': return this.next(4).setInt32(0, n, true);
      case 'FLOAT32': return this.next(4).setFloat32(0, n, true);
      case 'FLOAT64': return this.next(8).setFloat64(0, n, true);
    }
  }

  bytes(): Uint8Array {
    return this.buf.subarray(0, this.length);
  }
}
