/**
 * The frozen linear's WebGPU programs (tfjs WebGPUProgram classes run through runWebGPUProgram);
 * see linear.ts for the kernels' contract.
 */
import * as tf from '@tensorflow/tfjs';
import type { WebGPUBackend, WebGPUProgram } from '@tensorflow/tfjs-backend-webgpu';
import type { LinearAttrs, LinearInputs, QuantInputs, QuantizedDType, Weight16DType, WeightDType } from './linear.ts';
import { FOUR_BIT_LEVELS, INT8_INV_127, NESTED_BLOCK, isQuantized } from './linear.cpu.ts';

// ---------------------------------------------------------------------------------------------
// WebGPU: a tiled program for both products from 9 rows up, and a skinny one for 1–8 rows
// (decoding, a batch of completions; see FtLinearSkinnyProgram), so a few rows never pay for a
// 32-row tile.
//
// C[N, cols] = A[N, K] · op(B) where op(B) is Bᵀ for B [cols, K] ('nt', the forward product) or B
// for B [K, cols] ('nn', the input gradient). A workgroup is 8×8 threads; each thread computes a
// block of RM rows × 4 columns, so a workgroup covers a (8·RM)×32 tile of C, stepping K through
// two tiles in workgroup memory. RM is 4 (a 32-row tile) from 17 rows up and 2 for 9–16 rows; the
// RM row updates are unrolled (SwiftShader keeps a dynamically indexed accumulator in memory: 2×
// slower at 128 rows). Loads are vec4 (vec2<u32> for 16-bit: four halves) along a row's contiguous
// axis when its length is a multiple of 4, scalar otherwise; out-of-range elements load as 0. The
// LoRA term runs the same loop over its own operands (K = r) into a second accumulator.
//
// A quantised W (nf4 / fp4 / int8) is dequantised as its tile is loaded: the tile steps K by 32,
// and a thread loads one unit of W along `in` (W's contiguous axis, K in 'nt' and the columns in
// 'nn'): a vec4<u32> (32 4-bit or 16 int8 values) when `in` is a multiple of 32 (4-bit) or 16
// (int8), one u32 word when it is a multiple of 8 / 4, else single values. A unit lies within one
// absmax block (64 values, 4-bit) or row (int8), so it costs one scale: absmax[block], or with
// double quantisation map[code] · nestedAbsmax + offset from the codes. The 4-bit codebook sits in
// workgroup memory. Only the two tiles ever hold dequantised values.

const TILE_N = 32;
const THREADS = 64;

type Layout = 'nt' | 'nn';

/** How the shader reads one operand at an element index `e` (an i32 expression). */
interface OperandCode {
  /** Whether `load` reads four elements from `e` (a multiple of 4) as a vec4<f32>; else one f32. */
  vec: boolean;
  load: (e: string) => string;
}

function f32Operand(name: string, vec: boolean): OperandCode {
  return { vec, load: (e) => (vec ? `${name}[(${e}) >> 2]` : `${name}[${e}]`) };
}

/** W is array<f32>, array<vec4<f32>>, or, packed, array<i32> or array<vec2<i32>> (four halves each). */
function weightOperand(dtype: WeightDType, vec: boolean): OperandCode {
  if (dtype === 'float32') return f32Operand('W', vec);
  return {
    vec,
    load: (e) => (vec ? `halves4(bitcast<vec2<u32>>(W[(${e}) >> 2]))` : `half16(bitcast<u32>(W[(${e}) >> 1]), ((${e}) & 1) == 1)`),
  };
}

function halfHelpers(dtype: WeightDType): string {
  if (dtype !== 'bfloat16' && dtype !== 'float16') return '';
  const f16 = dtype === 'float16';
  return `
    fn half16(w : u32, high : bool) -> f32 {
      ${f16 ? 'let v = unpack2x16float(w); return select(v.x, v.y, high);' : 'return bitcast<f32>(select(w << 16u, w & 0xffff0000u, high));'}
    }
    fn halves4(w : vec2<u32>) -> vec4<f32> {
      ${
        f16
          ? 'return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y));'
          : 'return bitcast<vec4<f32>>(vec4<u32>(w.x << 16u, w.x & 0xffff0000u, w.y << 16u, w.y & 0xffff0000u));'
      }
    }`;
}

/** A WGSL f32 literal that parses back to exactly `v` (−0 included). */
function f32Literal(v: number): string {
  if (Object.is(v, -0)) return '-0.0f';
  const s = String(Math.fround(v));
  return /[.e]/.test(s) ? `${s}f` : `${s}.0f`;
}

/**
 * WGSL helpers of a quantised weight: `blockScale(b)` (4-bit: the absmax of block b, plain or
 * nested), `nib(word, v)` (4-bit: the code of value v of a word as its level; `level` says how
 * the codebook is read), `sbyte(word, v)` (int8: value v of a word).
 */
function quantHelpers(dtype: QuantizedDType, nested: boolean, level: 'lut' | 'const'): string {
  if (dtype === 'int8') {
    return `
    fn sbyte(w : i32, v : u32) -> f32 { return f32((w << (24u - 8u * v)) >> 24u); }
    fn sbyte4(w : i32) -> vec4<f32> { return vec4<f32>(vec4<i32>(w << 24u, w << 16u, w << 8u, w) >> vec4<u32>(24u)); }
    const INV127 = ${f32Literal(INT8_INV_127)};`;
  }
  const levels = Array.from(FOUR_BIT_LEVELS[dtype], f32Literal).join(', ');
  return `
    const LEVELS = array<f32, 16>(${levels});
    ${level === 'lut' ? 'var<workgroup> lut : array<f32, 16>;' : ''}
    fn blockScale(b : i32) -> f32 {
      ${
        nested
          ? `let code = (bitcast<u32>(QCodes[b >> 2]) >> (8u * u32(b & 3))) & 255u;
      let p = QMap[code] * QAbs[b / ${NESTED_BLOCK}];
      return p + uniforms.qoffset;`
          : 'return Absmax[b];'
      }
    }
    fn nib(w : u32, v : u32) -> f32 {
      let code = (w >> (8u * (v >> 1u) + select(4u, 0u, (v & 1u) == 1u))) & 15u;
      return ${level === 'lut' ? 'lut[code]' : 'LEVELS[code]'};
    }
    // Values 4h .. 4h + 3 of a word: bytes 2h and 2h + 1, each high nibble first.
    fn nib4(w : u32, h : u32) -> vec4<f32> {
      let b = w >> (16u * h);
      return vec4<f32>(${['(b >> 4u)', 'b', '(b >> 12u)', '(b >> 8u)'].map((x) => `${level === 'lut' ? 'lut' : 'LEVELS'}[${x} & 15u]`).join(', ')});
    }`;
}

/** The variable names a quantised weight's state binds as, in input order. */
function quantVariables(dtype: WeightDType, nested: boolean): string[] {
  if (!isQuantized(dtype)) return [];
  return nested ? ['QCodes', 'QAbs', 'QMap'] : ['Absmax'];
}

/** `for` over `total` items split across the workgroup's threads; `body` sees `idx`. */
function spread(total: number, body: string): string {
  const steps = Math.ceil(total / THREADS);
  const guard = total % THREADS !== 0;
  return `for (var s = 0; s < ${steps}; s++) {
        let idx = t + s * ${THREADS};
        ${guard ? `if (idx < ${total}) {` : ''}
        ${body}
        ${guard ? '}' : ''}
      }`;
}

interface TileShape {
  /** Rows of the C tile (8 · rows per thread). */
  tm: number;
  /** K per step. */
  tk: number;
}

/** WGSL filling tileA (rows of A[N, K] from rowBase, k from k0): `tm × tk` values. */
function loadATile(a: OperandCode, K: string, { tm, tk }: TileShape): string {
  return a.vec
    ? spread(
        (tm * tk) / 4,
        `let row = idx / ${tk / 4};
        let kk = (idx % ${tk / 4}) * 4;
        let gr = rowBase + row;
        let gk = k0 + kk;
        var v = vec4<f32>(0.0);
        if (gr < uniforms.dimN && gk < ${K}) { v = ${a.load(`gr * ${K} + gk`)}; }
        tileA[row][kk] = v.x; tileA[row][kk + 1] = v.y; tileA[row][kk + 2] = v.z; tileA[row][kk + 3] = v.w;`,
      )
    : spread(
        tm * tk,
        `let row = idx / ${tk};
        let kk = idx % ${tk};
        let gr = rowBase + row;
        let gk = k0 + kk;
        var v = 0.0;
        if (gr < uniforms.dimN && gk < ${K}) { v = ${a.load(`gr * ${K} + gk`)}; }
        tileA[row][kk] = v;`,
      );
}

/** WGSL filling tileB with op(B) as [k][col] at k0 from an f32 or 16-bit operand. */
function loadBTile(b: OperandCode, layout: Layout, K: string, tk: number): string {
  if (layout === 'nt') {
    // B [cols, K]: contiguous along k.
    return b.vec
      ? spread(
          (TILE_N * tk) / 4,
          `let col = idx / ${tk / 4};
          let kk = (idx % ${tk / 4}) * 4;
          let gc = colBase + col;
          let gk = k0 + kk;
          var v = vec4<f32>(0.0);
          if (gc < uniforms.dimC && gk < ${K}) { v = ${b.load(`gc * ${K} + gk`)}; }
          tileB[kk][col >> 2][col & 3] = v.x;
          tileB[kk + 1][col >> 2][col & 3] = v.y;
          tileB[kk + 2][col >> 2][col & 3] = v.z;
          tileB[kk + 3][col >> 2][col & 3] = v.w;`,
        )
      : spread(
          TILE_N * tk,
          `let col = idx / ${tk};
          let kk = idx % ${tk};
          let gc = colBase + col;
          let gk = k0 + kk;
          var v = 0.0;
          if (gc < uniforms.dimC && gk < ${K}) { v = ${b.load(`gc * ${K} + gk`)}; }
          tileB[kk][col >> 2][col & 3] = v;`,
        );
  }
  // B [K, cols]: contiguous along cols.
  return b.vec
    ? spread(
        (TILE_N * tk) / 4,
        `let kk = idx / ${TILE_N / 4};
        let cq = idx % ${TILE_N / 4};
        let gc = colBase + cq * 4;
        let gk = k0 + kk;
        var v = vec4<f32>(0.0);
        if (gc < uniforms.dimC && gk < ${K}) { v = ${b.load(`gk * uniforms.dimC + gc`)}; }
        tileB[kk][cq] = v;`,
      )
    : spread(
        TILE_N * tk,
        `let kk = idx / ${TILE_N};
        let col = idx % ${TILE_N};
        let gc = colBase + col;
        let gk = k0 + kk;
        var v = 0.0;
        if (gc < uniforms.dimC && gk < ${K}) { v = ${b.load(`gk * uniforms.dimC + gc`)}; }
        tileB[kk][col >> 2][col & 3] = v;`,
      );
}

/** Values per load unit of a quantised W along `in`: 32/16 (vec4<u32>), 8/4 (u32) or 1. */
function quantUnit(dtype: QuantizedDType, inDim: number): number {
  const perWord = dtype === 'int8' ? 4 : 8;
  if (inDim % (4 * perWord) === 0) return 4 * perWord;
  if (inDim % perWord === 0) return perWord;
  return 1;
}

/**
 * WGSL reading one load unit of a quantised W (value e, a multiple of `unit`, in row o): `prelude`
 * loads its words (a vec4<u32> for 32 4-bit or 16 int8 values, else one word) and its scale;
 * `group(j)` is values e + 4j .. e + 4j + 3 as a vec4<f32>, each one float32 product (4-bit:
 * level · absmax) or two (int8: (q · absmax) · INV127), so every reader gets the same bits.
 */
function quantUnitGroups(dtype: QuantizedDType, unit: number): { prelude: string; count: number; group: (j: number) => string } {
  if (dtype === 'int8') {
    const wide = unit === 16;
    return { prelude: `let q = W[e >> ${wide ? 4 : 2}];\n          let a = Absmax[o];`, count: unit / 4, group: (j) => `(sbyte4(${wide ? `q[${j}]` : 'q'}) * a) * INV127` };
  }
  const wide = unit === 32;
  return {
    prelude: `let q = bitcast<${wide ? 'vec4<u32>' : 'u32'}>(W[e >> ${wide ? 5 : 3}]);\n          let sc = blockScale(e >> 6);`,
    count: unit / 4,
    group: (j) => `nib4(${wide ? `q[${j >> 1}]` : 'q'}, ${j & 1}u) * sc`,
  };
}

/** WGSL of value e (in row o) of a quantised W as f32, read on its own. */
function quantValue(dtype: QuantizedDType): string {
  return dtype === 'int8' ? '(sbyte(W[e >> 2], u32(e & 3)) * Absmax[o]) * INV127' : 'nib(bitcast<u32>(W[e >> 3]), u32(e & 7)) * blockScale(e >> 6)';
}

/**
 * WGSL filling tileB (op(W) as [k][col], TILE_K_Q × TILE_N) from a quantised W [out, in],
 * dequantising as it goes: one unit of `unit` values along `in` per item.
 */
function loadQuantTile(dtype: QuantizedDType, layout: Layout, unit: number, tk: number): string {
  // The tile spans `in` over [iBase, iBase + 32) and `out` over [oBase, oBase + 32).
  const nt = layout === 'nt';
  const dimIn = nt ? 'uniforms.dimK' : 'uniforms.dimC';
  const dimOut = nt ? 'uniforms.dimC' : 'uniforms.dimK';
  const span = nt ? tk : TILE_N; // along in
  const perRow = span / unit;
  const put = (i: string, v: string) => (nt ? `tileB[${i}][oo >> 2][oo & 3] = ${v};` : `tileB[oo][(${i}) >> 2][(${i}) & 3] = ${v};`);
  const base = `iu * ${unit}`;
  let values: string;
  if (unit === 1) {
    values = put(base, quantValue(dtype));
  } else {
    const { prelude, count, group } = quantUnitGroups(dtype, unit);
    const groups = Array.from({ length: count }, (_, j) => `{
            let g = ${group(j)};
            ${[0, 1, 2, 3].map((c) => put(`${base} + ${4 * j + c}`, `g[${c}]`)).join(' ')}
          }`);
    values = `${prelude}
          ${groups.join('\n          ')}`;
  }
  return spread(
    TILE_N * perRow,
    `let oo = idx / ${perRow};
        let iu = idx % ${perRow};
        let o = ${nt ? 'colBase' : 'k0'} + oo;
        let i = ${nt ? 'k0' : 'colBase'} + iu * ${unit};
        if (o < ${dimOut} && i < ${dimIn}) {
          let e = o * ${dimIn} + i;
          ${values}
        } else {
          for (var z = 0; z < ${unit}; z++) { ${put(`${base} + z`, '0.0')} }
        }`,
  );
}

interface LinearProgramOptions {
  layout: Layout;
  wDtype: WeightDType;
  /** In features: W's row length, the axis its vec loads run along. */
  inDim: number;
  K: number;
  cols: number;
  rank: number;
  bias: boolean;
  /** A double-quantised 4-bit W: its scales come from nested codes. */
  nested: boolean;
}

/** Rows per thread of the tiled program for N rows: a tile of 16 or 32 rows (1–8 rows run skinny). */
function rowsPerThread(N: number): number {
  return N <= 16 ? 2 : 4;
}

/** Up to this many rows run as FtLinearSkinnyProgram. */
const SKINNY_ROWS = 8;
/**
 * Lanes splitting K in FtLinearSkinnyProgram. Measured on SwiftShader (SmolLM2's gate projection,
 * NF4, 1 and 8 rows): 2 or 4 lanes beat 8 (by 1.5–2×) and 16; 4 keeps more of K in flight per
 * column on a real GPU.
 */
const SKINNY_LANES = 4;

/**
 * WGSL of `one(e, o)`, value e (in row o) of W as f32, and, where W is read four at a time,
 * `four(e, o)`, values e .. e + 3 (e a multiple of 4) as a vec4<f32>. `mode` says how W binds:
 * 'one' (array<f32> or array<i32>), 'four' (array<vec4<f32>>, array<vec2<i32>> for 16-bit,
 * array<i32> for quantised: a word holds four int8 or two groups of four 4-bit values).
 */
function weightAccess(dtype: WeightDType, mode: 'one' | 'four'): string {
  if (mode === 'one') {
    const value =
      dtype === 'float32'
        ? 'W[e]'
        : isQuantized(dtype)
          ? quantValue(dtype)
          : 'half16(bitcast<u32>(W[e >> 1]), (e & 1) == 1)';
    return `fn one(e : i32, o : i32) -> f32 { return ${value}; }`;
  }
  const value =
    dtype === 'float32'
      ? 'W[e >> 2]'
      : dtype === 'int8'
        ? '(sbyte4(W[e >> 2]) * Absmax[o]) * INV127'
        : isQuantized(dtype)
          ? 'nib4(bitcast<u32>(W[e >> 3]), u32((e >> 2) & 1)) * blockScale(e >> 6)'
          : 'halves4(bitcast<vec2<u32>>(W[e >> 2]))';
  return `fn four(e : i32, o : i32) -> vec4<f32> { return ${value}; }`;
}

/**
 * 1–8 rows (decoding; a batch of completions): no row tile at all. Each thread keeps the N rows'
 * sums of its columns while SKINNY_LANES (4) lanes of the workgroup split K between them, then
 * the lanes' sums are added through workgroup memory once, at the end: no barrier per K step, and
 * W streams through each lane in wide loads, dequantised in registers. Loops over the N rows and
 * over a chunk's groups of four are unrolled.
 * - 'nt' (forward, W [cols, K], contiguous along K): a workgroup is 16 columns × 4 lanes; a lane
 *   reads a chunk of `chunk` values of its column's row per step, with the matching x as vec4s: a
 *   vec4<u32> unit (32 4-bit or 16 int8 values) where the row length is a multiple of 4 units,
 *   else one word (8 4-bit values), four values (vec4<f32>, vec2<u32> of halves, a word of int8,
 *   half a word of 4-bit), or one. Partial sums are kept per vec4 component (fma), added up at the
 *   end.
 * - 'nn' (input gradient, W [K, cols], contiguous along cols): a workgroup is 16 groups of 4
 *   columns × 4 lanes; a lane reads four consecutive values of a row of W per step (one value at
 *   a time when the row length is not a multiple of 4).
 * The LoRA term's K = r is split across the lanes the same way.
 */
class FtLinearSkinnyProgram implements WebGPUProgram {
  outputShape: number[];
  shaderKey: string;
  dispatchLayout = { x: [1], y: [0] };
  dispatch: [number, number, number];
  variableNames: string[];
  variableComponents: number[];
  workgroupSize: [number, number, number];
  uniforms = 'dimN : i32, dimK : i32, dimC : i32, dimR : i32, scale : f32, qoffset : f32,';
  private readonly o: LinearProgramOptions;
  private readonly N: number;
  /** Lanes splitting K; 64 / lanes columns (nt) or groups of 4 columns (nn) per workgroup. */
  private readonly lanes: number;
  /** nt: values per lane step along K (32 / 16: a vec4<u32> unit; 8: a word of 4-bit; 4; 1); nn: 4 or 1. */
  private readonly chunk: number;

  constructor(N: number, o: LinearProgramOptions) {
    this.o = o;
    this.N = N;
    this.outputShape = [N, o.cols];
    const quantized = isQuantized(o.wDtype);
    this.lanes = SKINNY_LANES;
    // A vec4<u32> unit when every lane gets as many of them (a row of 576 is 18 units of 32, which
    // 4 lanes would split 5:4); else one word of 4-bit values (8) or four values.
    const perWord = o.wDtype === 'int8' ? 4 : 8;
    const unit = 4 * perWord;
    this.chunk =
      o.layout === 'nt' && quantized && o.inDim % (this.lanes * unit) === 0
        ? unit
        : o.layout === 'nt' && quantized && o.inDim % perWord === 0
          ? perWord
          : o.inDim % 4 === 0
            ? 4
            : 1;
    const across = 64 / this.lanes;
    this.workgroupSize = o.layout === 'nt' ? [this.lanes, across, 1] : [across, this.lanes, 1];
    this.dispatch = [Math.ceil(o.cols / (o.layout === 'nt' ? across : 4 * across)), 1, 1];
    const wComponents = this.chunk > 8 ? 4 : this.chunk === 1 || quantized ? 1 : o.wDtype === 'float32' ? 4 : 2;
    this.variableNames = ['X', 'W'];
    this.variableComponents = [o.layout === 'nt' && this.chunk > 1 ? 4 : 1, wComponents];
    if (o.bias) {
      this.variableNames.push('Bias');
      this.variableComponents.push(1);
    }
    if (o.rank > 0) {
      this.variableNames.push('LA', 'LB');
      this.variableComponents.push(1, 1);
    }
    for (const name of quantVariables(o.wDtype, o.nested)) {
      this.variableNames.push(name);
      this.variableComponents.push(1);
    }
    this.shaderKey = `ftlinear_skinny_${o.layout}_${o.wDtype}${o.nested ? 'n' : ''}_${this.chunk}_${N}_${this.lanes}_${+o.bias}_${+(o.rank > 0)}`;
  }

  getUserCode(): string {
    const { o, N, chunk, lanes } = this;
    const across = 64 / lanes;
    const lora = o.rank > 0;
    const quantized = isQuantized(o.wDtype);
    const fourBit = o.wDtype === 'nf4' || o.wDtype === 'fp4';
    const helpers = `
      ${halfHelpers(o.wDtype)}
      ${quantized ? quantHelpers(o.wDtype as QuantizedDType, o.nested, 'lut') : ''}
      ${chunk === 4 || chunk === 1 ? weightAccess(o.wDtype, chunk === 4 ? 'four' : 'one') : ''}`;
    const lut = fourBit ? 'if (localIndex < 16u) { lut[localIndex] = LEVELS[localIndex]; }\n        workgroupBarrier();' : '';
    if (o.layout === 'nt') {
      // x [N, K] and W [cols, K]: a lane's step covers K values [u, u + chunk) of row o. Loops
      // over rows and groups are unrolled here (SwiftShader keeps a dynamically indexed
      // accumulator array in memory).
      const rows = (f: (n: number) => string) => Array.from({ length: N }, (_, n) => f(n)).join('\n            ');
      // Four partial sums per row (fma on vec4), added up once at the end.
      const dot = (j: number, g: string) => rows((n) => `acc[${n}] = fma(X[((${n} * K + u) >> 2) + ${j}], ${g}, acc[${n}]);`);
      const groups = (count: number, g: (j: number) => string) =>
        Array.from({ length: count }, (_, j) => `{
            let g = ${g(j)};
            ${dot(j, 'g')}
          }`).join('\n          ');
      let step: string;
      if (chunk > 4) {
        const unit = quantUnitGroups(o.wDtype as QuantizedDType, chunk);
        step = `${unit.prelude}
          ${groups(unit.count, unit.group)}`;
      } else if (chunk === 4) {
        step = groups(1, () => 'four(e, o)');
      } else {
        step = `let w = one(e, o);
            ${rows((n) => `acc[${n}].x = fma(X[${n} * K + u], w, acc[${n}].x);`)}`;
      }
      return `
      ${helpers}
      var<workgroup> red : array<f32, ${64 * N}>;
      fn main() {
        ${lut}
        let lane = i32(localId.x);
        let c = i32(localId.y);
        let o = i32(workgroupId.x) * ${across} + c;
        let K = uniforms.dimK;
        var acc : array<vec4<f32>, ${N}>;
        if (o < uniforms.dimC) {
          for (var u = lane * ${chunk}; u < K; u += ${lanes * chunk}) {
            let e = o * K + u;
            ${step}
          }
          ${
            lora
              ? `var accL : array<f32, ${N}>;
          for (var r = lane; r < uniforms.dimR; r += ${lanes}) {
            let b = LB[o * uniforms.dimR + r];
            for (var n = 0; n < ${N}; n++) { accL[n] = fma(LA[n * uniforms.dimR + r], b, accL[n]); }
          }
          for (var n = 0; n < ${N}; n++) { acc[n].x = fma(uniforms.scale, accL[n], acc[n].x); }`
              : ''
          }
        }
        ${rows((n) => `red[(c * ${lanes} + lane) * ${N} + ${n}] = (acc[${n}].x + acc[${n}].y) + (acc[${n}].z + acc[${n}].w);`)}
        workgroupBarrier();
        if (o < uniforms.dimC) {
          for (var n = lane; n < ${N}; n += ${lanes}) {
            var sum = 0.0;
            for (var l = 0; l < ${lanes}; l++) { sum += red[(c * ${lanes} + l) * ${N} + n]; }
            result[n * uniforms.dimC + o] = sum${o.bias ? ' + Bias[o]' : ''};
          }
        }
      }`;
    }
    // dy [N, K] and W [K, cols]: a lane's step is row o of W, columns [i, i + 4).
    const rows = (f: (n: number) => string) => Array.from({ length: N }, (_, n) => f(n)).join('\n            ');
    const load =
      chunk === 4
        ? 'let g = four(o * C + i, o);'
        : `var g = vec4<f32>(0.0);
            for (var j = 0; j < 4; j++) { if (i + j < C) { g[j] = one(o * C + i + j, o); } }`;
    return `
      ${helpers}
      var<workgroup> red : array<vec4<f32>, ${64 * N}>;
      fn main() {
        ${lut}
        let cg = i32(localId.x);
        let lane = i32(localId.y);
        let i = (i32(workgroupId.x) * ${across} + cg) * 4;
        let C = uniforms.dimC;
        var acc : array<vec4<f32>, ${N}>;
        if (i < C) {
          for (var o = lane; o < uniforms.dimK; o += ${lanes}) {
            ${load}
            ${rows((n) => `acc[${n}] = fma(vec4<f32>(X[${n} * uniforms.dimK + o]), g, acc[${n}]);`)}
          }
          ${
            lora
              ? `var accL : array<vec4<f32>, ${N}>;
          for (var r = lane; r < uniforms.dimR; r += ${lanes}) {
            var a = vec4<f32>(0.0);
            for (var j = 0; j < 4; j++) { if (i + j < C) { a[j] = LB[r * C + i + j]; } }
            for (var n = 0; n < ${N}; n++) { accL[n] = fma(vec4<f32>(LA[n * uniforms.dimR + r]), a, accL[n]); }
          }
          for (var n = 0; n < ${N}; n++) { acc[n] = fma(vec4<f32>(uniforms.scale), accL[n], acc[n]); }`
              : ''
          }
        }
        ${rows((n) => `red[(lane * ${across} + cg) * ${N} + ${n}] = acc[${n}];`)}
        workgroupBarrier();
        if (i < C) {
          for (var n = lane; n < ${N}; n += ${lanes}) {
            var sum = vec4<f32>(0.0);
            for (var l = 0; l < ${lanes}; l++) { sum += red[(l * ${across} + cg) * ${N} + n]; }
            for (var j = 0; j < 4; j++) {
              if (i + j < C) { result[n * C + i + j] = sum[j]; }
            }
          }
        }
      }`;
  }
}

class FtLinearProgram implements WebGPUProgram {
  outputShape: number[];
  shaderKey: string;
  dispatchLayout = { x: [1], y: [0] };
  dispatch: [number, number, number];
  variableNames: string[];
  variableComponents: number[];
  workgroupSize: [number, number, number] = [TILE_N / 4, 8, 1];
  uniforms = 'dimN : i32, dimK : i32, dimC : i32, dimR : i32, scale : f32, qoffset : f32,';
  private readonly o: LinearProgramOptions;
  private readonly vec: { a: boolean; w: boolean; la: boolean; lb: boolean };
  private readonly rm: number;
  private readonly tile: TileShape;
  private readonly unit: number;

  constructor(N: number, o: LinearProgramOptions) {
    this.o = o;
    this.rm = rowsPerThread(N);
    const quantized = isQuantized(o.wDtype);
    this.tile = { tm: 8 * this.rm, tk: quantized ? 32 : 16 };
    this.unit = quantized ? quantUnit(o.wDtype as QuantizedDType, o.inDim) : 0;
    this.outputShape = [N, o.cols];
    this.dispatch = [Math.ceil(o.cols / TILE_N), Math.ceil(N / this.tile.tm), 1];
    const lora = o.rank > 0;
    this.vec = {
      a: o.K % 4 === 0,
      // A quantised W reads vec4<u32> units when its unit is four words.
      w: quantized ? this.unit === 4 * (o.wDtype === 'int8' ? 4 : 8) : o.inDim % 4 === 0,
      la: lora && o.rank % 4 === 0,
      lb: lora && (o.layout === 'nt' ? o.rank : o.cols) % 4 === 0,
    };
    this.variableNames = ['X', 'W'];
    const wComponents = !this.vec.w ? 1 : o.wDtype === 'float32' || quantized ? 4 : 2;
    this.variableComponents = [this.vec.a ? 4 : 1, wComponents];
    if (o.bias) {
      this.variableNames.push('Bias');
      this.variableComponents.push(1);
    }
    if (lora) {
      this.variableNames.push('LA', 'LB');
      this.variableComponents.push(this.vec.la ? 4 : 1, this.vec.lb ? 4 : 1);
    }
    for (const name of quantVariables(o.wDtype, o.nested)) {
      this.variableNames.push(name);
      this.variableComponents.push(1);
    }
    const v = this.vec;
    this.shaderKey = `ftlinear_${o.layout}_${o.wDtype}${o.nested ? 'n' : ''}_${this.unit}_${this.rm}_${+v.a}${+v.w}${+v.la}${+v.lb}_${+o.bias}_${+lora}`;
  }

  getUserCode(): string {
    const { o, vec, rm, tile, unit } = this;
    const lora = o.rank > 0;
    const quantized = isQuantized(o.wDtype);
    const fourBit = o.wDtype === 'nf4' || o.wDtype === 'fp4';
    const loader = (name: string, body: string) => `
    fn ${name}(k0 : i32, t : i32, rowBase : i32, colBase : i32) {
      ${body}
    }`;
    const wTile = quantized ? loadQuantTile(o.wDtype as QuantizedDType, o.layout, unit, tile.tk) : loadBTile(weightOperand(o.wDtype, vec.w), o.layout, 'uniforms.dimK', tile.tk);
    const main = loader('loadMain', `${loadATile(f32Operand('X', vec.a), 'uniforms.dimK', tile)}\n      ${wTile}`);
    const side = lora
      ? loader('loadLora', `${loadATile(f32Operand('LA', vec.la), 'uniforms.dimR', tile)}\n      ${loadBTile(f32Operand('LB', vec.lb), o.layout, 'uniforms.dimR', tile.tk)}`)
      : '';
    const loop = (load: string, K: string, acc: string) => `
      for (var k0 = 0; k0 < ${K}; k0 += ${tile.tk}) {
        ${load}(k0, t, rowBase, colBase);
        workgroupBarrier();
        for (var k = 0; k < ${tile.tk}; k++) {
          let b = tileB[k][cq];
          ${Array.from({ length: rm }, (_, i) => `${acc}[${i}] = fma(vec4<f32>(tileA[r0 + ${i}][k]), b, ${acc}[${i}]);`).join('\n          ')}
        }
        workgroupBarrier();
      }`;
    return `
      var<workgroup> tileA : array<array<f32, ${tile.tk}>, ${tile.tm}>;
      var<workgroup> tileB : array<array<vec4<f32>, ${TILE_N / 4}>, ${tile.tk}>;
      ${halfHelpers(o.wDtype)}
      ${quantized ? quantHelpers(o.wDtype as QuantizedDType, o.nested, 'lut') : ''}
      ${main}
      ${side}
      fn main() {
        let t = i32(localIndex);
        let rowBase = i32(workgroupId.y) * ${tile.tm};
        let colBase = i32(workgroupId.x) * ${TILE_N};
        let r0 = i32(localId.y) * ${rm};
        let cq = i32(localId.x);
        ${fourBit ? 'if (t < 16) { lut[t] = LEVELS[t]; }\n        workgroupBarrier();' : ''}
        var acc : array<vec4<f32>, ${rm}>;
        ${loop('loadMain', 'uniforms.dimK', 'acc')}
        ${
          lora
            ? `var accL : array<vec4<f32>, ${rm}>;
        ${loop('loadLora', 'uniforms.dimR', 'accL')}
        for (var i = 0; i < ${rm}; i++) { acc[i] = fma(vec4<f32>(uniforms.scale), accL[i], acc[i]); }`
            : ''
        }
        for (var i = 0; i < ${rm}; i++) {
          let row = rowBase + r0 + i;
          if (row >= uniforms.dimN) { break; }
          for (var j = 0; j < 4; j++) {
            let col = colBase + cq * 4 + j;
            if (col < uniforms.dimC) {
              result[row * uniforms.dimC + col] = acc[i][j]${o.bias ? ' + Bias[col]' : ''};
            }
          }
        }
      }`;
  }
}

class FtUnpack16Program implements WebGPUProgram {
  outputShape: number[];
  shaderKey: string;
  dispatchLayout: { x: number[] };
  dispatch: [number, number, number];
  variableNames: string[];
  uniforms = 'cols : i32,';
  workgroupSize: [number, number, number] = [64, 1, 1];
  size = true;
  private readonly dtype: Weight16DType;
  private readonly gather: boolean;

  /** The whole matrix, or with `gather` the rows listed by a second input (an embedding lookup). */
  constructor(shape: [number, number], dtype: Weight16DType, gather: boolean) {
    this.outputShape = shape;
    this.dtype = dtype;
    this.gather = gather;
    this.variableNames = gather ? ['W', 'Rows'] : ['W'];
    this.dispatchLayout = { x: [0, 1] };
    const groups = Math.ceil((shape[0] * shape[1]) / this.workgroupSize[0]);
    this.dispatch = [groups, 1, 1];
    this.shaderKey = `ftunpack16_${dtype}_${gather}`;
  }

  getUserCode(): string {
    // Gathering reads whole 32-bit words by index: tfjs's own gather of an int32 tensor goes
    // through float32 on WebGPU, which rounds packed words above 2²⁴.
    const source = this.gather ? 'Rows[index / uniforms.cols] * uniforms.cols + index % uniforms.cols' : 'index';
    return `
      ${halfHelpers(this.dtype)}
      fn main(index : i32) {
        if (index < uniforms.size) {
          let e = ${source};
          result[index] = half16(bitcast<u32>(W[e >> 1]), (e & 1) == 1);
        }
      }`;
  }
}

/** A quantised weight dequantised to float32, whole or the rows listed by `Rows`. */
class FtUnpackQuantizedProgram implements WebGPUProgram {
  outputShape: number[];
  shaderKey: string;
  dispatchLayout: { x: number[] };
  dispatch: [number, number, number];
  variableNames: string[];
  uniforms = 'cols : i32, qoffset : f32,';
  workgroupSize: [number, number, number] = [64, 1, 1];
  size = true;
  private readonly dtype: QuantizedDType;
  private readonly gather: boolean;
  private readonly nested: boolean;

  constructor(shape: [number, number], dtype: QuantizedDType, gather: boolean, nested: boolean) {
    this.outputShape = shape;
    this.dtype = dtype;
    this.gather = gather;
    this.nested = nested;
    this.variableNames = [...(gather ? ['W', 'Rows'] : ['W']), ...quantVariables(dtype, nested)];
    this.dispatchLayout = { x: [0, 1] };
    this.dispatch = [Math.ceil((shape[0] * shape[1]) / this.workgroupSize[0]), 1, 1];
    this.shaderKey = `ftunpackq_${dtype}_${gather}_${nested}`;
  }

  getUserCode(): string {
    const source = this.gather ? 'Rows[index / uniforms.cols] * uniforms.cols + index % uniforms.cols' : 'index';
    const value =
      this.dtype === 'int8'
        ? '(sbyte(W[e >> 2], u32(e & 3)) * Absmax[e / uniforms.cols]) * INV127'
        : 'nib(bitcast<u32>(W[e >> 3]), u32(e & 7)) * blockScale(e >> 6)';
    return `
      ${quantHelpers(this.dtype, this.nested, 'const')}
      fn main(index : i32) {
        if (index < uniforms.size) {
          let e = ${source};
          result[index] = ${value};
        }
      }`;
  }
}

/** The storage buffers one dispatch may bind, tests may lower it to exercise the split path. */
let storageBufferLimit: number | null = null;

/** Overrides the device's maxStorageBuffersPerShaderStage for the linear programs (tests); null restores it. */
export function setLinearStorageBufferLimit(limit: number | null): void {
  storageBufferLimit = limit;
}

function quantTensors(q: QuantInputs): tf.TensorInfo[] {
  if (q.qcodes && q.qabsmax && q.qmap) return [q.qcodes, q.qabsmax, q.qmap];
  return q.absmax ? [q.absmax] : [];
}

export function linearWebGPUKernels() {
  const linear = (layout: Layout) =>
    ({ inputs, backend, attrs }: { inputs: tf.NamedTensorInfoMap; backend: unknown; attrs?: tf.NamedAttrMap }) => {
      const gpu = backend as WebGPUBackend;
      const a = attrs as unknown as LinearAttrs;
      const { x, w, bias, la, lb } = inputs as unknown as LinearInputs;
      const [out, inDim] = a.wShape;
      const N = x.shape[0];
      const K = layout === 'nt' ? inDim : out;
      const cols = layout === 'nt' ? out : inDim;
      const rank = la && lb ? la.shape[1] : 0;
      const quant = quantTensors(inputs as QuantInputs);
      const nested = quant.length === 3;
      // The output and every input are storage buffers; a device allowing fewer than a
      // nested-quantised forward with bias and LoRA binds (9) adds the bias as its own op.
      const limit = storageBufferLimit ?? gpu.device.limits.maxStorageBuffersPerShaderStage;
      const fuseBias = bias != null && 2 + 1 + (rank > 0 ? 2 : 0) + quant.length + 1 <= limit;
      const options: LinearProgramOptions = { layout, wDtype: a.wDtype, inDim, K, cols, rank, bias: fuseBias, nested };
      const program = N <= SKINNY_ROWS ? new FtLinearSkinnyProgram(N, options) : new FtLinearProgram(N, options);
      const tensors = [x, w];
      if (fuseBias) tensors.push(bias!);
      if (la && lb) tensors.push(la, lb);
      tensors.push(...quant);
      const uniforms = [
        { type: 'int32', data: [N] },
        { type: 'int32', data: [K] },
        { type: 'int32', data: [cols] },
        { type: 'int32', data: [rank] },
        { type: 'float32', data: [a.scale] },
        { type: 'float32', data: [a.nestedOffset ?? 0] },
      ];
      const y = gpu.runWebGPUProgram(program, tensors, 'float32', uniforms);
      if (bias == null || fuseBias) return y;
      const add = tf.getKernel(tf.Add, 'webgpu')!;
      const sum = add.kernelFunc({ inputs: { a: y, b: bias }, backend: gpu, attrs: {} }) as tf.TensorInfo;
      gpu.disposeData(y.dataId);
      return sum;
    };
  const unpack16 = ({ inputs, backend, attrs }: { inputs: tf.NamedTensorInfoMap; backend: unknown; attrs?: tf.NamedAttrMap }) => {
    const a = attrs as unknown as LinearAttrs;
    const { w, rows } = inputs as unknown as { w: tf.TensorInfo; rows?: tf.TensorInfo };
    const shape: [number, number] = rows ? [rows.shape[0], a.wShape[1]] : a.wShape;
    const program = new FtUnpack16Program(shape, a.wDtype as Weight16DType, rows != null);
    return (backend as WebGPUBackend).runWebGPUProgram(program, rows ? [w, rows] : [w], 'float32', [{ type: 'int32', data: [a.wShape[1]] }]);
  };
  const unpackQuantized = ({ inputs, backend, attrs }: { inputs: tf.NamedTensorInfoMap; backend: unknown; attrs?: tf.NamedAttrMap }) => {
    const a = attrs as unknown as LinearAttrs;
    const { w, rows } = inputs as unknown as { w: tf.TensorInfo; rows?: tf.TensorInfo };
    const quant = quantTensors(inputs as QuantInputs);
    const shape: [number, number] = rows ? [rows.shape[0], a.wShape[1]] : a.wShape;
    const program = new FtUnpackQuantizedProgram(shape, a.wDtype as QuantizedDType, rows != null, quant.length === 3);
    const uniforms = [
      { type: 'int32', data: [a.wShape[1]] },
      { type: 'float32', data: [a.nestedOffset ?? 0] },
    ];
    return (backend as WebGPUBackend).runWebGPUProgram(program, [w, ...(rows ? [rows] : []), ...quant], 'float32', uniforms);
  };
  return { forward: linear('nt'), inputGrad: linear('nn'), unpack16, unpackQuantized };
}
