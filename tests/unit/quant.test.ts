// bitsandbytes' quantisation (src/engine/model/quant.ts) against an independent PyTorch
// re-implementation (tests/reference/bnb_golden.py → tests/fixtures/quant/): NF4 / FP4 codes,
// packed bytes and absmax, double quantisation (codes, nested_absmax, offset, quant_map), the 8-bit
// dynamic map and blockwise search, and 8-bit rows, all bit for bit; dequantisation both bit for
// bit and within the error the data types allow.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parseSafetensors, type SafetensorsFile } from '../../src/engine/io/safetensors.ts';
import {
  CODEBOOKS,
  FP4_CODEBOOK,
  NF4_CODEBOOK,
  bytesPerParameter,
  createDynamicMap,
  dequantize4bit,
  dequantizeBlockwise,
  dequantizeInt8Rows,
  doubleDequantize,
  doubleQuantize,
  quantStateJson,
  quantize4bit,
  quantizeBlockwise,
  quantizeInt8Rows,
  type FourBitType,
} from '../../src/engine/model/quant.ts';

const DIR = fileURLToPath(new URL('../fixtures/quant/', import.meta.url));

interface CaseMeta {
  shape: [number, number];
  numel: number;
  nf4: { nested_offset: number; quant_state: string; quant_state_plain: string };
  fp4: { nested_offset: number; quant_state: string; quant_state_plain: string };
}
interface Fixture {
  codebooks: Record<FourBitType, number[]>;
  dynamic_maps: Record<string, number[]>;
  cases: Record<string, CaseMeta>;
  blockwise_ties: { numel: number; blocksize: number };
  quant_state_examples: { offset: number; json: string }[];
}

const fixture = JSON.parse(readFileSync(DIR + 'quant.json', 'utf8')) as Fixture;
const CASES = ['normal_64x128', 'odd_3x101', 'edge_8x64', 'large_96x200'] as const;

function load(name: string): SafetensorsFile {
  return parseSafetensors(new Uint8Array(readFileSync(`${DIR}${name}.safetensors`)), `${name}.safetensors`);
}

function has(st: SafetensorsFile, name: string): boolean {
  return st.tensors.has(name);
}

function bytesOf(st: SafetensorsFile, name: string): Uint8Array {
  const t = st.tensors.get(name);
  if (!t) throw new Error(`${st.file}: no tensor ${name}`);
  return st.bytes.slice(t.begin, t.end);
}

function f32(st: SafetensorsFile, name: string): Float32Array {
  expect(st.tensors.get(name)?.dtype).toBe('F32');
  return new Float32Array(bytesOf(st, name).buffer);
}

function u8(st: SafetensorsFile, name: string): Uint8Array {
  expect(st.tensors.get(name)?.dtype).toBe('U8');
  return bytesOf(st, name);
}

function i8(st: SafetensorsFile, name: string): Int8Array {
  expect(st.tensors.get(name)?.dtype).toBe('I8');
  return new Int8Array(bytesOf(st, name).buffer);
}

/** float32 arrays as their bit patterns, so -0 ≠ 0 and the comparison is bit for bit. */
function bits(a: Float32Array | number[]): Uint32Array {
  return new Uint32Array(Float32Array.from(a).buffer);
}

function expectBitsEqual(actual: Float32Array, expected: Float32Array | number[], what: string): void {
  expect(actual.length, what).toBe(expected.length);
  const a = bits(actual);
  const e = bits(expected);
  const first = a.findIndex((v, i) => v !== e[i]);
  expect(first, `${what}: first differing index (${actual[first]} vs ${expected[first]})`).toBe(-1);
}

function expectBytesEqual(actual: Uint8Array | Int8Array, expected: Uint8Array | Int8Array, what: string): void {
  expect(actual.length, what).toBe(expected.length);
  const first = actual.findIndex((v, i) => v !== expected[i]);
  expect(first, `${what}: first differing index (${actual[first]} vs ${expected[first]})`).toBe(-1);
}

/** Half the widest gap between neighbouring levels: the largest |w − ŵ| / absmax a 4-bit type allows. */
function halfWidestGap(levels: Float32Array): number {
  const sorted = [...levels].sort((a, b) => a - b);
  let gap = 0;
  for (let k = 1; k < sorted.length; k++) gap = Math.max(gap, sorted[k] - sorted[k - 1]);
  return gap / 2;
}

describe('codebooks and the dynamic map', () => {
  it('NF4 and FP4 levels are get_4bit_type\'s, in its order', () => {
    expectBitsEqual(NF4_CODEBOOK, fixture.codebooks.nf4, 'nf4');
    expectBitsEqual(FP4_CODEBOOK, fixture.codebooks.fp4, 'fp4');
    expect(Object.is(FP4_CODEBOOK[8], -0)).toBe(true);
  });

  it('createDynamicMap equals create_dynamic_map for several settings', () => {
    for (const [key, expected] of Object.entries(fixture.dynamic_maps)) {
      const [signed, e, b] = key.split('_');
      expectBitsEqual(createDynamicMap(signed === 'True', Number(e), Number(b)), expected, `dynamic map ${key}`);
    }
    const map = createDynamicMap();
    expect(map[127]).toBe(0);
    expect(map[255]).toBe(1);
    for (let k = 1; k < 256; k++) expect(map[k]).toBeGreaterThan(map[k - 1]);
  });
});

describe.each(CASES)('%s', (name) => {
  const st = load(name);
  const meta = fixture.cases[name];
  const input = f32(st, 'input');
  const n = meta.numel;

  describe.each(['nf4', 'fp4'] as const)('%s', (type) => {
    const { packed, absmax } = quantize4bit(input, type, 64);

    it('packed bytes and absmax equal the reference', () => {
      expect(packed.length).toBe(Math.ceil(n / 2));
      expectBytesEqual(packed, u8(st, `${type}.packed`), 'packed');
      expectBitsEqual(absmax, f32(st, `${type}.absmax`), 'absmax');
    });

    it('double quantisation: codes, nested_absmax, offset and quant_map equal the reference', () => {
      const dq = doubleQuantize(absmax, 256);
      expectBytesEqual(dq.codes, u8(st, `${type}.nested_codes`), 'nested codes');
      expectBitsEqual(dq.nested_absmax, f32(st, `${type}.nested_absmax`), 'nested_absmax');
      expect(dq.offset).toBe(meta[type].nested_offset);
      expectBitsEqual(dq.quant_map, fixture.dynamic_maps.True_7_8, 'quant_map');
      const back = doubleDequantize(dq, 256);
      expectBitsEqual(back, f32(st, `${type}.absmax_dequantized`), 'absmax from double quantisation');
      // Each absmax comes back within half a step of the map (at most 0.00703 of its block's
      // nested absmax) plus the float32 roundings of the product and the offset's addition.
      for (let i = 0; i < absmax.length; i++) {
        const scale = dq.nested_absmax[Math.floor(i / 256)];
        expect(Math.abs(back[i] - absmax[i])).toBeLessThanOrEqual(0.00704 * scale + 2 * 2 ** -23 * Math.abs(absmax[i]) + 1e-30);
      }
    });

    it('dequantisation equals the reference and stays within half the widest level gap', () => {
      const out = dequantize4bit(packed, absmax, type, n, 64);
      if (has(st, `${type}.dequantized`)) expectBitsEqual(out, f32(st, `${type}.dequantized`), 'dequantized');
      if (has(st, `${type}.double_dequantized`)) {
        const dq = doubleQuantize(absmax, 256);
        const viaNested = dequantize4bit(packed, doubleDequantize(dq, 256), type, n, 64);
        expectBitsEqual(viaNested, f32(st, `${type}.double_dequantized`), 'dequantized through double quantisation');
      }
      const bound = halfWidestGap(CODEBOOKS[type]);
      for (let i = 0; i < n; i++) {
        const a = absmax[Math.floor(i / 64)];
        expect(Math.abs(out[i] - input[i])).toBeLessThanOrEqual(bound * a * (1 + 1e-6));
      }
    });

    it('the quant_state JSON is what bitsandbytes packs', () => {
      expect(quantStateJson({ quant_type: type, blocksize: 64, dtype: 'float32', shape: meta.shape, nested: { blocksize: 256, offset: meta[type].nested_offset } })).toBe(meta[type].quant_state);
      expect(quantStateJson({ quant_type: type, blocksize: 64, dtype: 'bfloat16', shape: meta.shape })).toBe(meta[type].quant_state_plain);
    });
  });

  describe('int8 rows', () => {
    const [rows, cols] = meta.shape;
    const { codes, absmax } = quantizeInt8Rows(input, rows, cols);

    it('codes and row absmax equal the reference', () => {
      expectBytesEqual(codes, i8(st, 'int8.codes'), 'int8 codes');
      expectBitsEqual(absmax, f32(st, 'int8.absmax'), 'int8 absmax');
    });

    it('dequantisation equals the reference and is within half a step (absmax / 254)', () => {
      const out = dequantizeInt8Rows(codes, absmax, rows, cols);
      if (has(st, 'int8.dequantized')) expectBitsEqual(out, f32(st, 'int8.dequantized'), 'int8 dequantized');
      for (let i = 0; i < rows * cols; i++) {
        const a = absmax[Math.floor(i / cols)];
        expect(Math.abs(out[i] - input[i])).toBeLessThanOrEqual((a / 254) * (1 + 1e-5));
      }
    });
  });
});

describe('the rules at their edges (edge_8x64)', () => {
  const st = load('edge_8x64');
  const input = f32(st, 'input');
  const codesOf = (type: FourBitType): number[] => {
    const { packed } = quantize4bit(input, type, 64);
    return [...packed].flatMap((b) => [b >> 4, b & 15]);
  };

  it('an all-zero block: absmax 0, every code 0 (the kernel\'s 0 · inf = NaN), values 0', () => {
    const { packed, absmax } = quantize4bit(input, 'nf4', 64);
    expect(absmax[0]).toBe(0);
    expect(codesOf('nf4').slice(0, 64).every((c) => c === 0)).toBe(true);
    expect(codesOf('fp4').slice(0, 64).every((c) => c === 0)).toBe(true);
    expect([...dequantize4bit(packed, absmax, 'nf4', 64)].every((v) => v === 0)).toBe(true);
  });

  it('NF4: a value exactly on a midpoint takes the lower level, its float32 neighbours the nearer one', () => {
    // Row 1: absmax 1, then the 15 midpoints, their successors, their predecessors.
    const codes = codesOf('nf4').slice(64, 128);
    for (let k = 0; k < 15; k++) {
      expect(codes[1 + k], `midpoint ${k}`).toBe(k);
      expect(codes[16 + k], `just above midpoint ${k}`).toBe(k + 1);
      expect(codes[31 + k], `just below midpoint ${k}`).toBe(k);
    }
  });

  it('FP4: the kernel\'s thresholds, ties towards zero, the sign bit kept near zero', () => {
    // Row 2: 1.0, the 7 thresholds, their negations, the 7 float32 midpoints, their negations,
    // the thresholds' successors and their negations, then 1e-3 and -1e-3.
    const codes = codesOf('fp4').slice(128, 192);
    const level = (c: number): number => FP4_CODEBOOK[c];
    for (let k = 0; k < 7; k++) {
      const t = input[128 + 1 + k];
      expect(Math.abs(level(codes[1 + k])), `threshold ${t}`).toBeLessThan(t);
      expect(level(codes[8 + k]), `-threshold ${t}`).toBeGreaterThan(-t);
      expect(Math.abs(level(codes[29 + k])), `above threshold ${t}`).toBeGreaterThan(t);
      expect(level(codes[36 + k]), `below -threshold ${t}`).toBeLessThan(-t);
    }
    expect(codes[43]).toBe(0b0000);
    expect(codes[44]).toBe(0b1000);
  });

  it('int8: exact .5 ties round half to even; a zero row gives zero codes and absmax 0', () => {
    const { codes, absmax } = quantizeInt8Rows(input, 8, 64);
    expect(absmax[0]).toBe(0);
    expect([...codes.slice(0, 64)].every((c) => c === 0)).toBe(true);
    // Row 7 starts 127, 0.5, 1.5, 2.5, 3.5, -0.5, -1.5, -2.5, 126.5, -126.5, 63.5, -64.5.
    expect([...codes.slice(7 * 64, 7 * 64 + 12)]).toEqual([127, 0, 2, 2, 4, 0, -2, -2, 126, -126, 64, -64]);
  });
});

describe('8-bit blockwise search (blockwise_ties)', () => {
  const st = load('blockwise_ties');
  const input = f32(st, 'input');
  const map = createDynamicMap();
  const { codes, absmax } = quantizeBlockwise(input, map, 256);

  it('codes and absmax equal the reference; a value on a float32 midpoint goes to the even index', () => {
    expectBytesEqual(codes, u8(st, 'codes'), 'codes');
    expectBitsEqual(absmax, f32(st, 'absmax'), 'absmax');
    for (let k = 0; k < 255; k++) expect(codes[1 + k], `midpoint ${k}`).toBe(k % 2 === 0 ? k : k + 1);
    expectBitsEqual(dequantizeBlockwise(codes, absmax, map, 256), f32(st, 'dequantized'), 'dequantized');
  });
});

describe('packing', () => {
  it('puts the first value of each pair in the high nibble', () => {
    // absmax 1: 1.0 is NF4 code 15, -1.0 code 0, 0 code 7; an odd count pads with 0's code.
    const { packed } = quantize4bit(Float32Array.from([1, -1, 0, 1, -1]), 'nf4', 64);
    expect([...packed]).toEqual([0xf0, 0x7f, 0x07]);
    const fp4 = quantize4bit(Float32Array.from([-1, 1]), 'fp4', 64);
    expect([...fp4.packed]).toEqual([0xb3]);
  });
});

describe('quantStateJson', () => {
  it('formats the offset as Python\'s json.dumps', () => {
    for (const { offset, json } of fixture.quant_state_examples) {
      expect(quantStateJson({ quant_type: 'nf4', blocksize: 64, dtype: 'bfloat16', shape: [4096, 11008], nested: { blocksize: 256, offset } })).toBe(json);
    }
  });
});

describe('bytesPerParameter', () => {
  it('counts the tensors transformers saves', () => {
    const shape = [4096, 4096];
    const n = 4096 * 4096;
    const blocks = n / 64;
    expect(bytesPerParameter({ kind: 'nf4' }, shape)).toBeCloseTo((n / 2 + 4 * blocks + 64) / n, 12);
    expect(bytesPerParameter({ kind: 'nf4', double_quant: true }, shape)).toBeCloseTo((n / 2 + blocks + 4 * (blocks / 256) + 4 + 1024 + 64) / n, 12);
    expect(bytesPerParameter({ kind: 'int8' }, shape)).toBeCloseTo((n + 4 * 4096) / n, 12);
    expect(bytesPerParameter({ kind: 'nf4' }, shape)).toBeCloseTo(0.5625, 3);
    expect(bytesPerParameter({ kind: 'nf4', double_quant: true }, shape)).toBeCloseTo(0.5159, 3);
  });
});
