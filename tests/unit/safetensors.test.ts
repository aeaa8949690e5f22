import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { userErrorFrom } from './helpers/errors.ts';
import { UserError } from '../../src/engine/errors.ts';
import {
  bf16BitsToFloat32,
  f16BitsToFloat32,
  float32ToBf16Bits,
  float32ToF16Bits,
  MAX_HEADER_BYTES,
  parseSafetensors,
  parseSafetensorsHeader,
  readSafetensorsHeader,
  tensorToFloat32,
  tensorValues,
  valuesToFloat32,
  writeSafetensors,
} from '../../src/engine/io/safetensors.ts';
import { memoryFiles, type FileSource } from '../../src/engine/io/files.ts';

const FILE = 'bad.safetensors';
const STORIES = fileURLToPath(new URL('../../../shared/models/stories260K/model.safetensors', import.meta.url));

/** A safetensors file from a hand-written header, with `dataLength` bytes of data (counting 0, 1, 2, …). */
function raw(header: unknown, dataLength: number): Uint8Array {
  const json = new TextEncoder().encode(typeof header === 'string' ? header : JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + dataLength);
  new DataView(out.buffer).setUint32(0, json.length, true);
  out.set(json, 8);
  for (let i = 0; i < dataLength; i++) out[8 + json.length + i] = i & 0xff;
  return out;
}

function userError(fn: () => unknown): UserError {
  const err = userErrorFrom(fn);
  expect(err.message).toContain(FILE);
  expect(err.message).not.toContain('\n');
  expect(err.message.endsWith('.')).toBe(true);
  return err;
}

/** The 16-bit words of a written tensor's data, read straight from the file bytes. */
function words(bytes: Uint8Array, name: string): number[] {
  const st = parseSafetensors(bytes, 'x');
  const t = st.tensors.get(name)!;
  const out: number[] = [];
  for (let o = t.begin; o < t.end; o += 2) out.push(bytes[o] | (bytes[o + 1] << 8));
  return out;
}

describe('float conversions', () => {
  // Expected bits from numpy's astype(float16) and torch's bfloat16 rounding (round to nearest even).
  const f16Cases: [number, number][] = [
    [1.0, 0x3c00],
    [-2.5, 0xc100],
    [65504, 0x7bff],
    [65519, 0x7bff],
    [65520, 0x7c00],
    [1e5, 0x7c00],
    [1e-8, 0x0000],
    [6e-8, 0x0001],
    [1e-7, 0x0002],
    [2 ** -25, 0x0000],
    [2 ** -14, 0x0400],
    [1 + 2 ** -11, 0x3c00],
    [1 + 3 * 2 ** -11, 0x3c02],
    [0.1, 0x2e66],
    [-0, 0x8000],
    [Infinity, 0x7c00],
    [-Infinity, 0xfc00],
    [NaN, 0x7e00],
  ];
  it.each(f16Cases)('f16 of %s is %i', (x, bits) => {
    expect(float32ToF16Bits(x)).toBe(bits);
  });

  const bf16Cases: [number, number][] = [
    [1.0, 0x3f80],
    [-2.5, 0xc020],
    [65504, 0x4780],
    [1e-8, 0x322c],
    [1 + 2 ** -8, 0x3f80],
    [1 + 3 * 2 ** -8, 0x3f82],
    [3.4028234663852886e38, 0x7f80],
    [-0, 0x8000],
    [Infinity, 0x7f80],
    [NaN, 0x7fc0],
  ];
  it.each(bf16Cases)('bf16 of %s is %i', (x, bits) => {
    expect(float32ToBf16Bits(x)).toBe(bits);
  });

  it('decodes f16 subnormals, infinities and NaN', () => {
    expect(f16BitsToFloat32(0x0001)).toBe(2 ** -24);
    expect(f16BitsToFloat32(0x03ff)).toBe(1023 * 2 ** -24);
    expect(f16BitsToFloat32(0x7bff)).toBe(65504);
    expect(f16BitsToFloat32(0xfc00)).toBe(-Infinity);
    expect(f16BitsToFloat32(0x7e00)).toBeNaN();
    expect(Object.is(f16BitsToFloat32(0x8000), -0)).toBe(true);
  });

  it('decodes bf16 as the upper half of an f32', () => {
    expect(bf16BitsToFloat32(0x3f80)).toBe(1);
    expect(bf16BitsToFloat32(0xc020)).toBe(-2.5);
    expect(bf16BitsToFloat32(0x0001)).toBe(2 ** -133);
    expect(bf16BitsToFloat32(0x7fc0)).toBeNaN();
  });

  it('every f16 pattern survives decode then encode', () => {
    const wrong: number[] = [];
    for (let h = 0; h < 0x10000; h++) {
      const isNaN = (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;
      if (!isNaN && float32ToF16Bits(f16BitsToFloat32(h)) !== h) wrong.push(h);
    }
    expect(wrong).toEqual([]);
  });
});

describe('writeSafetensors and parseSafetensors round trip', () => {
  const values = new Float32Array([1.0, -2.5, 65504, 1e-8, 1 + 2 ** -11, 1 + 3 * 2 ** -8]);

  it('keeps F32 exactly', () => {
    const data = new Float32Array([1, -2.5, 3.4028234663852886e38, 1e-45, -0, Infinity, NaN]);
    const st = parseSafetensors(writeSafetensors([{ name: 'w', dtype: 'F32', shape: [7], data }]), 'x');
    expect(st.tensors.get('w')).toMatchObject({ dtype: 'F32', shape: [7] });
    expect([...tensorToFloat32(st, 'w')]).toEqual([...data]);
  });

  it('rounds F16 to nearest even and reads it back', () => {
    const bytes = writeSafetensors([{ name: 'h', dtype: 'F16', shape: [2, 3], data: values }]);
    expect(words(bytes, 'h')).toEqual([0x3c00, 0xc100, 0x7bff, 0x0000, 0x3c00, 0x3c0c]);
    const back = tensorToFloat32(parseSafetensors(bytes, 'x'), 'h');
    expect([...back]).toEqual([1, -2.5, 65504, 0, 1, 1.01171875]);
  });

  it('rounds BF16 to nearest even and reads it back', () => {
    const bytes = writeSafetensors([{ name: 'b', dtype: 'BF16', shape: [6], data: values }]);
    expect(words(bytes, 'b')).toEqual([0x3f80, 0xc020, 0x4780, 0x322c, 0x3f80, 0x3f82]);
    const back = tensorToFloat32(parseSafetensors(bytes, 'x'), 'b');
    expect([...back]).toEqual([1, -2.5, 65536, bf16BitsToFloat32(0x322c), 1, 1.015625]);
  });

  it('keeps metadata, key order and contiguous data', () => {
    const bytes = writeSafetensors(
      [
        { name: 'z', dtype: 'F32', shape: [2], data: new Float32Array([1, 2]) },
        { name: 'a', dtype: 'BF16', shape: [1, 3], data: new Float32Array([3, 4, 5]) },
        { name: 'm', dtype: 'F16', shape: [], data: new Float32Array([6]) },
      ],
      { format: 'pt', note: 'hello' },
    );
    const st = parseSafetensors(bytes, 'x');
    expect(st.metadata).toEqual({ format: 'pt', note: 'hello' });
    expect([...st.tensors.keys()]).toEqual(['z', 'a', 'm']);
    const [z, a, m] = [...st.tensors.values()];
    expect(a.begin).toBe(z.end);
    expect(m.begin).toBe(a.end);
    expect(m.end).toBe(bytes.length);
    expect([...tensorToFloat32(st, 'm')]).toEqual([6]);
    expect(m.shape).toEqual([]);
  });

  it('pads the header with spaces to a multiple of 8', () => {
    for (let len = 1; len <= 9; len++) {
      const bytes = writeSafetensors([{ name: 'n'.repeat(len), dtype: 'F32', shape: [1], data: new Float32Array([7]) }]);
      const n = new DataView(bytes.buffer).getUint32(0, true);
      expect(n % 8).toBe(0);
      const header = new TextDecoder().decode(bytes.subarray(8, 8 + n));
      expect(header).toMatch(/^\{.*\} *$/);
      expect(header.trimEnd().length).toBeGreaterThan(n - 8);
      expect(bytes.length).toBe(8 + n + 4);
    }
  });

  it('reads tensors at unaligned offsets and from an unaligned view', () => {
    const file = raw(
      {
        pad: { dtype: 'U8', shape: [1], data_offsets: [0, 1] },
        f: { dtype: 'F32', shape: [1], data_offsets: [1, 5] },
        h: { dtype: 'F16', shape: [1], data_offsets: [5, 7] },
        b: { dtype: 'BF16', shape: [1], data_offsets: [7, 9] },
      },
      9,
    );
    const start = file.length - 9;
    const data = new DataView(file.buffer);
    data.setFloat32(start + 1, -2.5, true);
    data.setUint16(start + 5, 0x3c00, true);
    data.setUint16(start + 7, 0xc020, true);
    const shifted = new Uint8Array(file.length + 3);
    shifted.set(file, 3);
    const st = parseSafetensors(shifted.subarray(3), 'x');
    expect(tensorToFloat32(st, 'f')[0]).toBe(-2.5);
    expect(tensorToFloat32(st, 'h')[0]).toBe(1);
    expect(tensorToFloat32(st, 'b')[0]).toBe(-2.5);
  });

  it('accepts an empty file with only a header, and zero-sized tensors', () => {
    expect(parseSafetensors(raw({}, 0), 'x').tensors.size).toBe(0);
    const st = parseSafetensors(
      raw(
        {
          e: { dtype: 'F32', shape: [0, 4], data_offsets: [0, 0] },
          w: { dtype: 'F32', shape: [1], data_offsets: [0, 4] },
        },
        4,
      ),
      'x',
    );
    expect(tensorToFloat32(st, 'e').length).toBe(0);
  });
});

describe('parseSafetensors refuses bad files with one sentence naming the file', () => {
  const f32 = (begin: number, end: number, shape = [(end - begin) / 4]) => ({
    dtype: 'F32',
    shape,
    data_offsets: [begin, end],
  });

  it('a file shorter than 8 bytes', () => {
    expect(userError(() => parseSafetensors(new Uint8Array(5), FILE)).message).toMatch(/5 bytes long/);
  });

  it('a header longer than the file', () => {
    const bytes = raw({ a: f32(0, 4) }, 4);
    new DataView(bytes.buffer).setUint32(0, 10_000, true);
    expect(userError(() => parseSafetensors(bytes, FILE)).message).toMatch(/header length says 10000 bytes/);
    new DataView(bytes.buffer).setUint32(4, 1, true);
    expect(userError(() => parseSafetensors(bytes, FILE)).message).toMatch(/truncated or not safetensors/);
  });

  it('a header that is not JSON', () => {
    expect(userError(() => parseSafetensors(raw('{"a": nope', 0), FILE)).message).toMatch(/not valid UTF-8 JSON/);
  });

  it('a header that is not a JSON object', () => {
    expect(userError(() => parseSafetensors(raw('[1, 2]', 0), FILE)).message).toMatch(/not a JSON object/);
  });

  it('an unknown dtype, a bad shape and bad offsets', () => {
    const e1 = userError(() => parseSafetensors(raw({ a: { dtype: 'F33', shape: [1], data_offsets: [0, 4] } }, 4), FILE));
    expect(e1.message).toMatch(/tensor "a" has unknown dtype "F33"/);
    const e2 = userError(() => parseSafetensors(raw({ a: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, 4), FILE));
    expect(e2.message).toMatch(/tensor "a" has shape \[-1\]/);
    const e3 = userError(() => parseSafetensors(raw({ a: { dtype: 'F32', shape: [1], data_offsets: [4, 0] } }, 4), FILE));
    expect(e3.message).toMatch(/tensor "a" has data_offsets \[4,0\]/);
  });

  it('offsets past the end of the file', () => {
    const err = userError(() => parseSafetensors(raw({ a: f32(0, 8), b: f32(8, 16) }, 12), FILE));
    expect(err.message).toBe(
      `${FILE}: tensor "b" has data_offsets [8, 16) past the end of the data (12 bytes); the file is truncated.`,
    );
    expect(err.field).toBe('b');
  });

  it('overlapping tensors', () => {
    const err = userError(() => parseSafetensors(raw({ a: f32(0, 8), b: f32(4, 12) }, 12), FILE));
    expect(err.message).toBe(`${FILE}: tensors "a" [0, 8) and "b" [4, 12) overlap.`);
  });

  it('a hole between tensors, at the start and at the end', () => {
    const middle = userError(() => parseSafetensors(raw({ a: f32(0, 4), b: f32(8, 12) }, 12), FILE));
    expect(middle.message).toBe(`${FILE}: data bytes [4, 8) after tensor "a" belong to no tensor (a hole before "b").`);
    const start = userError(() => parseSafetensors(raw({ a: f32(4, 8) }, 8), FILE));
    expect(start.message).toMatch(/\[0, 4\) at the start of the data/);
    const end = userError(() => parseSafetensors(raw({ a: f32(0, 4) }, 8), FILE));
    expect(end.message).toBe(`${FILE}: data bytes [4, 8) at the end of the file belong to no tensor.`);
  });

  it('data_offsets that disagree with dtype × shape', () => {
    const err = userError(() => parseSafetensors(raw({ x: f32(0, 100, [5, 6]) }, 100), FILE));
    expect(err.message).toBe(`${FILE}: tensor "x" has data_offsets [0, 100) but F32 × [5, 6] needs 120 bytes.`);
  });

  it('metadata that is not string to string', () => {
    const err = userError(() => parseSafetensors(raw({ __metadata__: { step: 3 } }, 0), FILE));
    expect(err.message).toMatch(/"__metadata__" entry "step" is not a string/);
    expect(userError(() => parseSafetensors(raw({ __metadata__: [1] }, 0), FILE)).message).toMatch(/__metadata__/);
  });

  it('converting a dtype other than F32, F16 and BF16', () => {
    const st = parseSafetensors(raw({ ids: { dtype: 'I64', shape: [2], data_offsets: [0, 16] } }, 16), FILE);
    const err = userError(() => tensorToFloat32(st, 'ids'));
    expect(err.message).toBe(
      `${FILE}: tensor "ids" is stored as I64; only F32, F16 and BF16 tensors are supported.`,
    );
  });
});

describe('a real checkpoint', () => {
  it('reads stories260K', () => {
    expect(existsSync(STORIES)).toBe(true);
    const bytes = new Uint8Array(readFileSync(STORIES));
    const st = parseSafetensors(bytes, 'stories260K/model.safetensors');
    expect(st.tensors.size).toBe(47);
    expect([...st.tensors.values()].every((t) => t.dtype === 'F32')).toBe(true);
    expect(st.tensors.get('model.embed_tokens.weight')?.shape).toEqual([512, 64]);
    expect(st.metadata).toEqual({ format: 'pt' });
    const emb = tensorToFloat32(st, 'model.embed_tokens.weight');
    expect(emb.length).toBe(512 * 64);
    expect(emb.every(Number.isFinite)).toBe(true);
  });
});

/** A one-file source that records every range read from it. */
function rangeLogged(bytes: Uint8Array | Blob): { source: FileSource; ranges: [number, number][] } {
  const inner = memoryFiles('', { [FILE]: bytes });
  const ranges: [number, number][] = [];
  const source: FileSource = {
    ...inner,
    read: async () => {
      throw new Error('the header reader must read ranges, not whole files');
    },
    readRange: async (name, begin, end) => {
      ranges.push([begin, end]);
      return inner.readRange(name, begin, end);
    },
  };
  return { source, ranges };
}

async function headerError(bytes: Uint8Array): Promise<UserError> {
  const { source, ranges } = rangeLogged(bytes);
  let err: unknown = null;
  try {
    await readSafetensorsHeader(source, FILE, FILE);
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(UserError);
  const message = (err as UserError).message;
  expect(message).toContain(FILE);
  expect(message).not.toContain('\n');
  expect(message.endsWith('.')).toBe(true);
  // Nothing past the header was read.
  const headerEnd = bytes.length >= 8 ? 8 + new DataView(bytes.buffer, bytes.byteOffset).getUint32(0, true) : 0;
  for (const [, end] of ranges) expect(end).toBeLessThanOrEqual(Math.min(headerEnd, bytes.length));
  return err as UserError;
}

describe('reading only the header', () => {
  const f32 = (begin: number, end: number, shape = [(end - begin) / 4]) => ({ dtype: 'F32', shape, data_offsets: [begin, end] });

  it('gives the same tensors as parseSafetensors, reading the first 8 bytes and then the header only', async () => {
    const bytes = writeSafetensors(
      [
        { name: 'a', dtype: 'F32', shape: [2, 3], data: new Float32Array(6).fill(1) },
        { name: 'b', dtype: 'BF16', shape: [5], data: new Float32Array(5).fill(2) },
      ],
      { format: 'pt' },
    );
    const { source, ranges } = rangeLogged(new Blob([bytes as Uint8Array<ArrayBuffer>]));
    const header = await readSafetensorsHeader(source, FILE, FILE);
    const whole = parseSafetensors(bytes, FILE);
    expect(header.tensors).toEqual(whole.tensors);
    expect(header.metadata).toEqual({ format: 'pt' });
    expect(header.size).toBe(bytes.length);
    expect(header.dataStart).toBe(whole.tensors.get('a')!.begin);
    expect(ranges).toEqual([
      [0, 8],
      [8, header.dataStart],
    ]);
    expect(parseSafetensorsHeader(bytes.subarray(0, header.dataStart), bytes.length, FILE).tensors).toEqual(whole.tensors);
  });

  it('refuses every bad header with parseSafetensors\' sentence, before reading any data', async () => {
    const cases: Uint8Array[] = [
      new Uint8Array(5),
      raw('{"a": nope', 0),
      raw('[1, 2]', 0),
      raw({ a: { dtype: 'F33', shape: [1], data_offsets: [0, 4] } }, 4),
      raw({ a: f32(0, 8), b: f32(8, 16) }, 12),
      raw({ a: f32(0, 8), b: f32(4, 12) }, 12),
      raw({ a: f32(0, 4), b: f32(8, 12) }, 12),
      raw({ a: f32(0, 4) }, 8),
      raw({ x: f32(0, 100, [5, 6]) }, 100),
      raw({ __metadata__: { step: 3 } }, 0),
    ];
    const long = raw({ a: f32(0, 4) }, 4);
    new DataView(long.buffer).setUint32(0, 10_000, true);
    cases.push(long);
    for (const bytes of cases) {
      const err = await headerError(bytes);
      expect(err.message).toBe(userError(() => parseSafetensors(bytes, FILE)).message);
    }
  });

  it('refuses a header over the 100 MB safetensors allows without reading it', () => {
    const first8 = new Uint8Array(8);
    new DataView(first8.buffer).setUint32(0, MAX_HEADER_BYTES + 1, true);
    const err = userError(() => parseSafetensorsHeader(first8, 2 * MAX_HEADER_BYTES, FILE));
    expect(err.message).toMatch(/more than the 100000000 bytes a safetensors header may have/);
  });
});

describe('tensorValues', () => {
  const values = [1, -2.5, 0.1, 3.14159, -1e-3, 65504, 0];
  const bytes = writeSafetensors([
    { name: 'f', dtype: 'F32', shape: [7], data: new Float32Array(values) },
    { name: 'h', dtype: 'F16', shape: [7], data: new Float32Array(values) },
    { name: 'b', dtype: 'BF16', shape: [7], data: new Float32Array(values) },
  ]);
  const st = parseSafetensors(bytes, FILE);
  const stored = (name: string) => {
    const t = st.tensors.get(name)!;
    return bytes.subarray(t.begin, t.end);
  };

  it('gives F32 values and the raw F16/BF16 bit patterns, which widen to tensorToFloat32', () => {
    const f = tensorValues('F32', stored('f'), FILE, 'f');
    expect(f).toBeInstanceOf(Float32Array);
    expect([...f]).toEqual([...tensorToFloat32(st, 'f')]);
    for (const name of ['h', 'b'] as const) {
      const dtype = name === 'h' ? 'F16' : 'BF16';
      const v = tensorValues(dtype, stored(name), FILE, name);
      expect(v).toBeInstanceOf(Uint16Array);
      expect([...v]).toEqual(words(bytes, name));
      expect([...valuesToFloat32(dtype, v)]).toEqual([...tensorToFloat32(st, name)]);
    }
  });

  it('copies by default, from an unaligned view too, and adopts a buffer handed over', () => {
    const shifted = new Uint8Array(stored('h').length + 1);
    shifted.set(stored('h'), 1);
    const view = shifted.subarray(1);
    const copy = tensorValues('F16', view, FILE, 'h');
    expect([...copy]).toEqual(words(bytes, 'h'));
    view[0] ^= 0xff;
    expect([...copy]).toEqual(words(bytes, 'h'));

    const own = stored('f').slice();
    const adopted = tensorValues('F32', own, FILE, 'f', true);
    expect(adopted.buffer).toBe(own.buffer);
    expect([...adopted]).toEqual([...tensorToFloat32(st, 'f')]);
    // A view into a larger buffer is never adopted: the values must not keep the rest alive.
    expect(tensorValues('F32', stored('f'), FILE, 'f', true).buffer).not.toBe(bytes.buffer);
  });

  it('refuses other dtypes with one sentence naming the file and tensor', () => {
    const err = userError(() => tensorValues('I64', new Uint8Array(16), FILE, 'ids'));
    expect(err.message).toBe(`${FILE}: tensor "ids" is stored as I64; only F32, F16 and BF16 tensors are supported.`);
    expect(err.field).toBe('ids');
  });
});
