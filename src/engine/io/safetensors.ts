/**
 * Our own safetensors reader and writer.
 *
 * Layout: an 8-byte little-endian u64 header length N, N bytes of UTF-8 JSON
 * `{name: {dtype, shape, data_offsets: [begin, end)}, "__metadata__": {str: str}}`, then the data.
 * Offsets in the header are relative to the end of the header.
 *
 * The reader checks the whole header against the file size before anything is allocated for the
 * data, so a truncated or hostile file is refused with one sentence instead of a huge allocation
 * or a RangeError deep inside a conversion.
 */
import { UserError } from '../errors.ts';
import type { FileSource } from './files.ts';

/** The dtype names safetensors defines (the Rust crate's `Dtype`). Only F32, F16 and BF16 convert to f32. */
export type SafetensorsDType =
  | 'BOOL'
  | 'U8'
  | 'I8'
  | 'I16'
  | 'U16'
  | 'F16'
  | 'BF16'
  | 'I32'
  | 'U32'
  | 'F32'
  | 'F64'
  | 'I64'
  | 'U64'
  | 'C64'
  | 'F8_E4M3'
  | 'F8_E5M2'
  | 'F8_E8M0'
  | 'F6_E2M3'
  | 'F6_E3M2'
  | 'F4';

/** Bits per element; the sub-byte float formats are why this is in bits rather than bytes. */
const DTYPE_BITS: Record<SafetensorsDType, number> = {
  BOOL: 8,
  U8: 8,
  I8: 8,
  F8_E4M3: 8,
  F8_E5M2: 8,
  F8_E8M0: 8,
  F6_E2M3: 6,
  F6_E3M2: 6,
  F4: 4,
  I16: 16,
  U16: 16,
  F16: 16,
  BF16: 16,
  I32: 32,
  U32: 32,
  F32: 32,
  F64: 64,
  I64: 64,
  U64: 64,
  C64: 64,
};

export interface TensorInfo {
  dtype: string;
  shape: number[];
  /** Absolute byte offset of the first byte within the file's bytes. */
  begin: number;
  /** Absolute byte offset one past the last byte within the file's bytes. */
  end: number;
}

export interface SafetensorsFile {
  /** The name used in messages. */
  file: string;
  bytes: Uint8Array;
  tensors: Map<string, TensorInfo>;
  metadata: Record<string, string>;
}

const METADATA_KEY = '__metadata__';

function isDType(s: unknown): s is SafetensorsDType {
  return typeof s === 'string' && Object.hasOwn(DTYPE_BITS, s);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

function describeShape(shape: number[]): string {
  return `[${shape.join(', ')}]`;
}

/** Byte size of dtype × shape, or null when it is not a whole number of bytes or not a safe integer. */
function byteSize(dtype: SafetensorsDType, shape: number[]): number | null {
  let bits = DTYPE_BITS[dtype];
  for (const d of shape) {
    bits *= d;
    if (!Number.isSafeInteger(bits)) return null;
  }
  return bits % 8 === 0 ? bits / 8 : null;
}

/**
 * What a safetensors header says, checked against the file's size: every tensor's absolute byte
 * range lies inside the data, matches dtype × shape, and the ranges tile the data exactly.
 */
export interface SafetensorsHeader {
  /** The name used in messages. */
  file: string;
  /** The whole file's length in bytes. */
  size: number;
  /** Absolute offset of the first data byte (8 + header length). */
  dataStart: number;
  tensors: Map<string, TensorInfo>;
  metadata: Record<string, string>;
}

/** The safetensors crate refuses headers over 100 MB; so do we, before reading one. */
export const MAX_HEADER_BYTES = 100_000_000;

/**
 * The header length from a file's first 8 bytes, checked against the file's size, so that reading
 * the header cannot run past the end of the file.
 */
export function safetensorsHeaderLength(first8: Uint8Array, fileSize: number, file: string): number {
  if (fileSize < 8 || first8.length < 8) {
    throw new UserError(
      `${file}: the file is ${fileSize} bytes long, too short for a safetensors header (at least 8 bytes).`,
      { file },
    );
  }
  const view = new DataView(first8.buffer, first8.byteOffset, 8);
  const headerLen = view.getUint32(4, true) * 2 ** 32 + view.getUint32(0, true);
  if (headerLen > fileSize - 8) {
    throw new UserError(
      `${file}: the header length says ${headerLen} bytes but the file has only ${fileSize - 8} bytes after it; the file is truncated or not safetensors.`,
      { file },
    );
  }
  if (headerLen > MAX_HEADER_BYTES) {
    throw new UserError(
      `${file}: the header length says ${headerLen} bytes, more than the ${MAX_HEADER_BYTES} bytes a safetensors header may have; the file is not safetensors.`,
      { file },
    );
  }
  return headerLen;
}

/**
 * Parse and check a header. `prefix` holds at least the file's first 8 + header-length bytes (the
 * whole file will do); `fileSize` is the whole file's length, which every offset is checked against.
 */
export function parseSafetensorsHeader(prefix: Uint8Array, fileSize: number, file: string): SafetensorsHeader {
  const headerLen = safetensorsHeaderLength(prefix, fileSize, file);
  const dataStart = 8 + headerLen;
  if (prefix.length < dataStart) {
    throw new Error(`${file}: parseSafetensorsHeader needs the first ${dataStart} bytes, got ${prefix.length}`);
  }
  const dataLength = fileSize - dataStart;

  let header: unknown;
  try {
    const text = new TextDecoder('utf-8', { fatal: true }).decode(prefix.subarray(8, dataStart));
    header = JSON.parse(text);
  } catch (e) {
    const why = e instanceof Error ? ` (${e.message})` : '';
    throw new UserError(`${file}: the safetensors header is not valid UTF-8 JSON${why}.`, { file });
  }
  if (!isRecord(header)) {
    throw new UserError(`${file}: the safetensors header is not a JSON object.`, { file });
  }

  const metadata: Record<string, string> = {};
  const rawMeta = header[METADATA_KEY];
  if (rawMeta !== undefined && rawMeta !== null) {
    if (!isRecord(rawMeta)) {
      throw new UserError(`${file}: "__metadata__" must be an object of string values.`, { file, field: METADATA_KEY });
    }
    for (const [k, v] of Object.entries(rawMeta)) {
      if (typeof v !== 'string') {
        throw new UserError(`${file}: "__metadata__" entry "${k}" is not a string; metadata values must be strings.`, {
          file,
          field: METADATA_KEY,
        });
      }
      metadata[k] = v;
    }
  }

  const tensors = new Map<string, TensorInfo>();
  for (const [name, entry] of Object.entries(header)) {
    if (name === METADATA_KEY) continue;
    const where = { file, field: name };
    if (!isRecord(entry)) {
      throw new UserError(`${file}: tensor "${name}" is not an object with dtype, shape and data_offsets.`, where);
    }
    const { dtype, shape, data_offsets: offsets } = entry;
    if (!isDType(dtype)) {
      throw new UserError(`${file}: tensor "${name}" has unknown dtype ${JSON.stringify(dtype)}.`, where);
    }
    if (!Array.isArray(shape) || !shape.every(isCount)) {
      throw new UserError(
        `${file}: tensor "${name}" has shape ${JSON.stringify(shape)}; a shape is a list of non-negative integers.`,
        where,
      );
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount) || offsets[0] > offsets[1]) {
      throw new UserError(
        `${file}: tensor "${name}" has data_offsets ${JSON.stringify(offsets)}; expected [begin, end] with 0 <= begin <= end.`,
        where,
      );
    }
    const [begin, end] = offsets as [number, number];
    const needed = byteSize(dtype, shape);
    if (needed === null || needed !== end - begin) {
      const need = needed === null ? 'a size that is not a whole number of bytes' : `${needed} bytes`;
      throw new UserError(
        `${file}: tensor "${name}" has data_offsets [${begin}, ${end}) but ${dtype} × ${describeShape(shape)} needs ${need}.`,
        where,
      );
    }
    if (end > dataLength) {
      throw new UserError(
        `${file}: tensor "${name}" has data_offsets [${begin}, ${end}) past the end of the data (${dataLength} bytes); the file is truncated.`,
        where,
      );
    }
    tensors.set(name, { dtype, shape: [...shape], begin: dataStart + begin, end: dataStart + end });
  }

  checkCoverage(tensors, dataStart, dataLength, file);
  return { file, size: fileSize, dataStart, tensors, metadata };
}

/**
 * Read and check only the header of a safetensors file: its first 8 bytes, then the header, all
 * checked against the file's size before any tensor data is read.
 */
export async function readSafetensorsHeader(source: FileSource, name: string, file: string): Promise<SafetensorsHeader> {
  const size = await source.size(name);
  const first8 = size >= 8 ? await source.readRange(name, 0, 8) : new Uint8Array(0);
  const headerLen = safetensorsHeaderLength(first8, size, file);
  const prefix = new Uint8Array(8 + headerLen);
  prefix.set(first8, 0);
  prefix.set(await source.readRange(name, 8, 8 + headerLen), 8);
  return parseSafetensorsHeader(prefix, size, file);
}

export function parseSafetensors(bytes: Uint8Array, file: string): SafetensorsFile {
  const { tensors, metadata } = parseSafetensorsHeader(bytes, bytes.length, file);
  return { file, bytes, tensors, metadata };
}

/** The data region must be covered exactly once: no overlaps (aliasing) and no holes (hidden bytes). */
function checkCoverage(tensors: Map<string, TensorInfo>, dataStart: number, dataLength: number, file: string): void {
  const ordered = [...tensors.entries()].sort(([, a], [, b]) => a.begin - b.begin || a.end - b.end);
  let covered = 0;
  let prevName: string | null = null;
  for (const [name, t] of ordered) {
    const begin = t.begin - dataStart;
    const end = t.end - dataStart;
    if (begin < covered) {
      const prev = tensors.get(prevName as string) as TensorInfo;
      throw new UserError(
        `${file}: tensors "${prevName}" [${prev.begin - dataStart}, ${covered}) and "${name}" [${begin}, ${end}) overlap.`,
        { file, field: name },
      );
    }
    if (begin > covered) {
      const after = prevName === null ? 'at the start of the data' : `after tensor "${prevName}"`;
      throw new UserError(
        `${file}: data bytes [${covered}, ${begin}) ${after} belong to no tensor (a hole before "${name}").`,
        { file, field: name },
      );
    }
    covered = end;
    prevName = name;
  }
  if (covered < dataLength) {
    throw new UserError(
      `${file}: data bytes [${covered}, ${dataLength}) at the end of the file belong to no tensor.`,
      { file },
    );
  }
}

// One scratch word for reinterpreting a single float's bits; bulk paths use typed-array views instead.
const scratch = new DataView(new ArrayBuffer(4));

function f32Bits(x: number): number {
  scratch.setFloat32(0, x);
  return scratch.getUint32(0);
}

/** bf16 from f32 bits, rounding to nearest even; every NaN becomes 0x7FC0, as torch's `.bfloat16()`. */
function bf16FromF32Bits(bits: number): number {
  if ((bits & 0x7fffffff) > 0x7f800000) return 0x7fc0;
  return (bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16;
}

/**
 * f16 from f32 bits, rounding to nearest even (as torch's `.half()` and numpy's `astype(float16)`):
 * overflow goes to ±inf, underflow to ±0 through the subnormals, NaN to the canonical 0x7E00 with its sign.
 */
function f16FromF32Bits(bits: number): number {
  const sign = (bits >>> 16) & 0x8000;
  const abs = bits & 0x7fffffff;
  if (abs > 0x7f800000) return sign | 0x7e00;
  // 65520 is halfway between 65504 (odd mantissa) and 65536, so it and everything above rounds to inf.
  if (abs >= 0x477ff000) return sign | 0x7c00;
  if (abs >= 0x38800000) {
    // Normal in f16: rebias the exponent (127 → 15) and round away 13 mantissa bits; a carry into
    // the exponent is still the right encoding.
    const h = (abs - 0x38000000) >>> 13;
    const rest = abs & 0x1fff;
    return sign | (rest > 0x1000 || (rest === 0x1000 && (h & 1) === 1) ? h + 1 : h);
  }
  const exp = abs >>> 23;
  // Below 2^-25 (half the smallest subnormal) everything rounds to zero.
  if (exp < 102) return sign;
  // Subnormal in f16: value = m × 2^-24 with m = significand >> (126 − exp).
  const significand = (abs & 0x7fffff) | 0x800000;
  const shift = 126 - exp;
  const m = significand >>> shift;
  const rest = significand & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  return sign | (rest > half || (rest === half && (m & 1) === 1) ? m + 1 : m);
}

/** The bf16 bit pattern of `x` (first rounded to f32), rounding to nearest even as torch does. */
export function float32ToBf16Bits(x: number): number {
  return bf16FromF32Bits(f32Bits(x));
}

export function bf16BitsToFloat32(bits: number): number {
  scratch.setUint32(0, (bits & 0xffff) << 16);
  return scratch.getFloat32(0);
}

/** The IEEE half-precision bit pattern of `x` (first rounded to f32), rounding to nearest even. */
export function float32ToF16Bits(x: number): number {
  return f16FromF32Bits(f32Bits(x));
}

/** f32 bits from f16 bits; exact, since every f16 value (NaN payloads too) is an f32 value. */
function f32BitsFromF16(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exp = (h >>> 10) & 0x1f;
  let mant = h & 0x3ff;
  if (exp === 0x1f) return sign | 0x7f800000 | (mant << 13);
  if (exp !== 0) return sign | ((exp + 112) << 23) | (mant << 13);
  if (mant === 0) return sign;
  // An f16 subnormal is a normal f32: shift the leading one up to the implicit bit.
  let e = 113;
  while ((mant & 0x400) === 0) {
    mant <<= 1;
    e--;
  }
  return sign | (e << 23) | ((mant & 0x3ff) << 13);
}

export function f16BitsToFloat32(bits: number): number {
  scratch.setUint32(0, f32BitsFromF16(bits & 0xffff));
  return scratch.getFloat32(0);
}

/**
 * A tensor's values as f32. Bytes are assembled explicitly little-endian, so the result does not
 * depend on the host's byte order or on the tensor's offset being aligned.
 */
export function tensorToFloat32(st: SafetensorsFile, name: string): Float32Array {
  const info = st.tensors.get(name);
  if (!info) {
    throw new UserError(`${st.file}: there is no tensor "${name}".`, { file: st.file, field: name });
  }
  const b = st.bytes;
  const n = info.shape.reduce((a, d) => a * d, 1);
  const out = new Float32Array(n);
  // Writing bit patterns through a u32 view keeps NaN payloads and needs no per-element float maths.
  const outBits = new Uint32Array(out.buffer);
  let o = info.begin;
  switch (info.dtype) {
    case 'F32':
      for (let i = 0; i < n; i++, o += 4) outBits[i] = b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24);
      return out;
    case 'BF16':
      for (let i = 0; i < n; i++, o += 2) outBits[i] = (b[o] << 16) | (b[o + 1] << 24);
      return out;
    case 'F16':
      for (let i = 0; i < n; i++, o += 2) outBits[i] = f32BitsFromF16(b[o] | (b[o + 1] << 8));
      return out;
    default:
      throw new UserError(
        `${st.file}: tensor "${name}" is stored as ${info.dtype}; only F32, F16 and BF16 tensors are supported.`,
        { file: st.file, field: name },
      );
  }
}

/** The dtypes the engine loads: f32 values, or 16-bit floats kept as their bit patterns. */
export type FloatDType = 'F32' | 'F16' | 'BF16';

export function isFloatDType(dtype: string): dtype is FloatDType {
  return dtype === 'F32' || dtype === 'F16' || dtype === 'BF16';
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * One tensor's stored bytes as values: F32 as a Float32Array, F16 and BF16 as their raw 16-bit
 * patterns in a Uint16Array (the caller decides whether and where to widen them). The bytes are
 * read little-endian whatever the host. The result is a copy unless `adopt` says the caller hands
 * over `bytes` (a buffer of its own, as `FileSource.readRange` returns), in which case a
 * little-endian host reinterprets that buffer in place instead of copying it.
 * Any other dtype is refused with one sentence naming the file and the tensor.
 */
export function tensorValues(
  dtype: string,
  bytes: Uint8Array,
  file: string,
  name: string,
  adopt = false,
): Float32Array | Uint16Array {
  if (!isFloatDType(dtype)) {
    throw new UserError(
      `${file}: tensor "${name}" is stored as ${dtype}; only F32, F16 and BF16 tensors are supported.`,
      { file, field: name },
    );
  }
  const width = dtype === 'F32' ? 4 : 2;
  if (bytes.length % width !== 0) {
    throw new Error(`${file}: tensor "${name}" has ${bytes.length} bytes, not a whole number of ${dtype} values`);
  }
  const n = bytes.length / width;
  if (LITTLE_ENDIAN) {
    const own =
      adopt && bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength && bytes.buffer instanceof ArrayBuffer;
    const buffer = own ? (bytes.buffer as ArrayBuffer) : bytes.slice().buffer;
    return width === 4 ? new Float32Array(buffer, 0, n) : new Uint16Array(buffer, 0, n);
  }
  if (width === 4) {
    const out = new Float32Array(n);
    const bits = new Uint32Array(out.buffer);
    for (let i = 0, o = 0; i < n; i++, o += 4) {
      bits[i] = (bytes[o] | (bytes[o + 1] << 8) | (bytes[o + 2] << 16) | (bytes[o + 3] << 24)) >>> 0;
    }
    return out;
  }
  const out = new Uint16Array(n);
  for (let i = 0, o = 0; i < n; i++, o += 2) out[i] = bytes[o] | (bytes[o + 1] << 8);
  return out;
}

/** f32 values from `tensorValues`' output: F32 as is, F16/BF16 bit patterns widened exactly. */
export function valuesToFloat32(dtype: FloatDType, values: Float32Array | Uint16Array): Float32Array {
  if (dtype === 'F32') return values as Float32Array;
  const n = values.length;
  const out = new Float32Array(n);
  const bits = new Uint32Array(out.buffer);
  if (dtype === 'BF16') for (let i = 0; i < n; i++) bits[i] = values[i] << 16;
  else for (let i = 0; i < n; i++) bits[i] = f32BitsFromF16(values[i]);
  return out;
}

/**
 * A tensor to write: float32 values converted to F32, F16 or BF16, or bytes already in their
 * stored form (`bytes`, little-endian, e.g. U8 codes or a 16-bit tensor copied as it was read).
 */
export type TensorToWrite = FloatTensorToWrite | { name: string; dtype: SafetensorsDType; shape: number[]; bytes: Uint8Array };
export interface FloatTensorToWrite {
  name: string;
  dtype: FloatDType;
  shape: number[];
  data: Float32Array;
}

const WRITE_BYTES: Record<FloatDType, number> = { F32: 4, F16: 2, BF16: 2 };

/**
 * A safetensors file with the tensors in the given order, data contiguous, and the header padded
 * with spaces to a multiple of 8 bytes (as the Rust crate writes it, so the data starts aligned).
 * Bad input here is a bug in the caller, not the person's doing, hence plain Errors.
 */
export function writeSafetensors(tensors: TensorToWrite[], metadata?: Record<string, string>): Uint8Array {
  const header: Record<string, unknown> = {};
  if (metadata) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') throw new Error(`safetensors metadata "${k}" must be a string`);
    }
    header[METADATA_KEY] = metadata;
  }
  let dataLength = 0;
  for (const t of tensors) {
    if (t.name === METADATA_KEY || Object.hasOwn(header, t.name)) {
      throw new Error(`cannot write tensor name "${t.name}" twice or as "${METADATA_KEY}"`);
    }
    if (!t.shape.every(isCount)) throw new Error(`tensor "${t.name}" has an invalid shape ${describeShape(t.shape)}`);
    let size: number;
    if ('bytes' in t) {
      if (!isDType(t.dtype)) throw new Error(`cannot write tensor "${t.name}" as ${t.dtype}`);
      const needed = byteSize(t.dtype, t.shape);
      if (needed !== t.bytes.length) throw new Error(`tensor "${t.name}" has ${t.bytes.length} bytes but ${t.dtype} × ${describeShape(t.shape)} needs ${needed}`);
      size = needed;
    } else {
      if (!Object.hasOwn(WRITE_BYTES, t.dtype)) throw new Error(`cannot write tensor "${t.name}" as ${t.dtype}`);
      const n = t.shape.reduce((a, d) => a * d, 1);
      if (n !== t.data.length) {
        throw new Error(`tensor "${t.name}" has ${t.data.length} values but shape ${describeShape(t.shape)} needs ${n}`);
      }
      size = n * WRITE_BYTES[t.dtype];
    }
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [dataLength, dataLength + size] };
    dataLength += size;
  }

  const json = new TextEncoder().encode(JSON.stringify(header));
  const headerLen = Math.ceil(json.length / 8) * 8;
  const out = new Uint8Array(8 + headerLen + dataLength);
  const view = new DataView(out.buffer);
  view.setUint32(0, headerLen % 2 ** 32, true);
  view.setUint32(4, Math.floor(headerLen / 2 ** 32), true);
  out.set(json, 8);
  out.fill(0x20, 8 + json.length, 8 + headerLen);

  let o = 8 + headerLen;
  for (const t of tensors) {
    if ('bytes' in t) {
      out.set(t.bytes, o);
      o += t.bytes.length;
      continue;
    }
    const bits = new Uint32Array(t.data.buffer, t.data.byteOffset, t.data.length);
    const n = bits.length;
    if (t.dtype === 'F32') {
      for (let i = 0; i < n; i++, o += 4) {
        const w = bits[i];
        out[o] = w & 0xff;
        out[o + 1] = (w >>> 8) & 0xff;
        out[o + 2] = (w >>> 16) & 0xff;
        out[o + 3] = w >>> 24;
      }
    } else {
      const convert = t.dtype === 'F16' ? f16FromF32Bits : bf16FromF32Bits;
      for (let i = 0; i < n; i++, o += 2) {
        const h = convert(bits[i]);
        out[o] = h & 0xff;
        out[o + 1] = h >>> 8;
      }
    }
  }
  return out;
}
