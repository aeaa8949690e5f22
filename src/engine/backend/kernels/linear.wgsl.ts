/**
 * The frozen linear's WebGPU programs (tfjs WebGPUProgram classes run through runWebGPUProgram);
 * see linear.ts for the kernels' contract.
 */
import type * as tf from '@tensorflow/tfjs';
import type { WebGPUBackend, WebGPUProgram } from '@tensorflow/tfjs-backend-webgpu';
import type { LinearAttrs, LinearInputs, Weight16DType, WeightDType } from './linear.ts';

// ---------------------------------------------------------------------------------------------
// WebGPU: one tiled program for both products.
//
// C[N, cols] = A[N, K] · op(B) where op(B) is Bᵀ for B [cols, K] ('nt', the forward product) or B
// for B [K, cols] ('nn', the input gradient). Each workgroup (8×8 threads) computes a 32×32 tile of
// C, each thread a 4×4 block, stepping K by 16 through two tiles in workgroup memory. Loads are
// vec4 (vec2<u32> for 16-bit: four halves) along a row's contiguous axis when its length is a
// multiple of 4, scalar otherwise; out-of-range elements load as 0. The LoRA term runs the same
// loop over its own operands (K = r) into a second accumulator.

const TILE_M = 32;
const TILE_N = 32;
const TILE_K = 16;

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
  if (dtype === 'float32') return '';
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

/** WGSL of a function filling tileA (rows of A[N, K]) and tileB (op(B) as [k][col]) at k0. */
function tileLoader(fnName: string, a: OperandCode, b: OperandCode, layout: Layout, K: string): string {
  const threads = 64;
  const loadA = a.vec
    ? `for (var s = 0; s < ${(TILE_M * TILE_K) / 4 / threads}; s++) {
        let idx = t + s * ${threads};
        let row = idx / ${TILE_K / 4};
        let kk = (idx % ${TILE_K / 4}) * 4;
        let gr = rowBase + row;
        let gk = k0 + kk;
        var v = vec4<f32>(0.0);
        if (gr < uniforms.dimN && gk < ${K}) { v = ${a.load(`gr * ${K} + gk`)}; }
        tileA[row][kk] = v.x; tileA[row][kk + 1] = v.y; tileA[row][kk + 2] = v.z; tileA[row][kk + 3] = v.w;
      }`
    : `for (var s = 0; s < ${(TILE_M * TILE_K) / threads}; s++) {
        let idx = t + s * ${threads};
        let row = idx / ${TILE_K};
        let kk = idx % ${TILE_K};
        let gr = rowBase + row;
        let gk = k0 + kk;
        var v = 0.0;
        if (gr < uniforms.dimN && gk < ${K}) { v = ${a.load(`gr * ${K} + gk`)}; }
        tileA[row][kk] = v;
      }`;
  let loadB: string;
  if (layout === 'nt') {
    // B [cols, K]: contiguous along k.
    loadB = b.vec
      ? `for (var s = 0; s < ${(TILE_N * TILE_K) / 4 / threads}; s++) {
          let idx = t + s * ${threads};
          let col = idx / ${TILE_K / 4};
          let kk = (idx % ${TILE_K / 4}) * 4;
          let gc = colBase + col;
          let gk = k0 + kk;
          var v = vec4<f32>(0.0);
          if (gc < uniforms.dimC && gk < ${K}) { v = ${b.load(`gc * ${K} + gk`)}; }
          tileB[kk][col >> 2][col & 3] = v.x;
          tileB[kk + 1][col >> 2][col & 3] = v.y;
          tileB[kk + 2][col >> 2][col & 3] = v.z;
          tileB[kk + 3][col >> 2][col & 3] = v.w;
        }`
      : `for (var s = 0; s < ${(TILE_N * TILE_K) / threads}; s++) {
          let idx = t + s * ${threads};
          let col = idx / ${TILE_K};
          let kk = idx % ${TILE_K};
          let gc = colBase + col;
          let gk = k0 + kk;
          var v = 0.0;
          if (gc < uniforms.dimC && gk < ${K}) { v = ${b.load(`gc * ${K} + gk`)}; }
          tileB[kk][col >> 2][col & 3] = v;
        }`;
  } else {
    // B [K, cols]: contiguous along cols.
    loadB = b.vec
      ? `for (var s = 0; s < ${(TILE_N * TILE_K) / 4 / threads}; s++) {
          let idx = t + s * ${threads};
          let kk = idx / ${TILE_N / 4};
          let cq = idx % ${TILE_N / 4};
          let gc = colBase + cq * 4;
          let gk = k0 + kk;
          var v = vec4<f32>(0.0);
          if (gc < uniforms.dimC && gk < ${K}) { v = ${b.load(`gk * uniforms.dimC + gc`)}; }
          tileB[kk][cq] = v;
        }`
      : `for (var s = 0; s < ${(TILE_N * TILE_K) / threads}; s++) {
          let idx = t + s * ${threads};
          let kk = idx / ${TILE_N};
          let col = idx % ${TILE_N};
          let gc = colBase + col;
          let gk = k0 + kk;
          var v = 0.0;
          if (gc < uniforms.dimC && gk < ${K}) { v = ${b.load(`gk * uniforms.dimC + gc`)}; }
          tileB[kk][col >> 2][col & 3] = v;
        }`;
  }
  return `
    fn ${fnName}(k0 : i32, t : i32, rowBase : i32, colBase : i32) {
      ${loadA}
      ${loadB}
    }`;
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
}

class FtLinearProgram implements WebGPUProgram {
  outputShape: number[];
  shaderKey: string;
  dispatchLayout = { x: [1], y: [0] };
  dispatch: [number, number, number];
  variableNames: string[];
  variableComponents: number[];
  workgroupSize: [number, number, number] = [TILE_N / 4, TILE_M / 4, 1];
  uniforms = 'dimN : i32, dimK : i32, dimC : i32, dimR : i32, scale : f32,';
  private readonly o: LinearProgramOptions;
  private readonly vec: { a: boolean; w: boolean; la: boolean; lb: boolean };

  constructor(N: number, o: LinearProgramOptions) {
    this.o = o;
    this.outputShape = [N, o.cols];
    this.dispatch = [Math.ceil(o.cols / TILE_N), Math.ceil(N / TILE_M), 1];
    const lora = o.rank > 0;
    this.vec = {
      a: o.K % 4 === 0,
      w: o.inDim % 4 === 0,
      la: lora && o.rank % 4 === 0,
      lb: lora && (o.layout === 'nt' ? o.rank : o.cols) % 4 === 0,
    };
    this.variableNames = ['X', 'W'];
    this.variableComponents = [this.vec.a ? 4 : 1, this.vec.w ? (o.wDtype === 'float32' ? 4 : 2) : 1];
    if (o.bias) {
      this.variableNames.push('Bias');
      this.variableComponents.push(1);
    }
    if (lora) {
      this.variableNames.push('LA', 'LB');
      this.variableComponents.push(this.vec.la ? 4 : 1, this.vec.lb ? 4 : 1);
    }
    const v = this.vec;
    this.shaderKey = `ftlinear_${o.layout}_${o.wDtype}_${+v.a}${+v.w}${+v.la}${+v.lb}_${+o.bias}_${+lora}`;
  }

  getUserCode(): string {
    const { o, vec } = this;
    const lora = o.rank > 0;
    const main = tileLoader('loadMain', f32Operand('X', vec.a), weightOperand(o.wDtype, vec.w), o.layout, 'uniforms.dimK');
    const side = lora ? tileLoader('loadLora', f32Operand('LA', vec.la), f32Operand('LB', vec.lb), o.layout, 'uniforms.dimR') : '';
    const loop = (load: string, K: string, acc: string) => `
      for (var k0 = 0; k0 < ${K}; k0 += ${TILE_K}) {
        ${load}(k0, t, rowBase, colBase);
        workgroupBarrier();
        for (var k = 0; k < ${TILE_K}; k++) {
          let b = tileB[k][cq];
          for (var i = 0; i < 4; i++) { ${acc}[i] = fma(vec4<f32>(tileA[r0 + i][k]), b, ${acc}[i]); }
        }
        workgroupBarrier();
      }`;
    return `
      var<workgroup> tileA : array<array<f32, ${TILE_K}>, ${TILE_M}>;
      var<workgroup> tileB : array<array<vec4<f32>, ${TILE_N / 4}>, ${TILE_K}>;
      ${halfHelpers(o.wDtype)}
      ${main}
      ${side}
      fn main() {
        let t = i32(localIndex);
        let rowBase = i32(workgroupId.y) * ${TILE_M};
        let colBase = i32(workgroupId.x) * ${TILE_N};
        let r0 = i32(localId.y) * 4;
        let cq = i32(localId.x);
        var acc : array<vec4<f32>, 4>;
        ${loop('loadMain', 'uniforms.dimK', 'acc')}
        ${
          lora
            ? `var accL : array<vec4<f32>, 4>;
        ${loop('loadLora', 'uniforms.dimR', 'accL')}
        for (var i = 0; i < 4; i++) { acc[i] = fma(vec4<f32>(uniforms.scale), accL[i], acc[i]); }`
            : ''
        }
        for (var i = 0; i < 4; i++) {
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
      const program = new FtLinearProgram(N, { layout, wDtype: a.wDtype, inDim, K, cols, rank, bias: bias != null });
      const tensors = [x, w];
      if (bias) tensors.push(bias);
      if (la && lb) tensors.push(la, lb);
      const uniforms = [
        { type: 'int32', data: [N] },
        { type: 'int32', data: [K] },
        { type: 'int32', data: [cols] },
        { type: 'int32', data: [rank] },
        { type: 'float32', data: [a.scale] },
      ];
      return gpu.runWebGPUProgram(program, tensors, 'float32', uniforms);
    };
  const unpack16 = ({ inputs, backend, attrs }: { inputs: tf.NamedTensorInfoMap; backend: unknown; attrs?: tf.NamedAttrMap }) => {
    const a = attrs as unknown as LinearAttrs;
    const { w, rows } = inputs as unknown as { w: tf.TensorInfo; rows?: tf.TensorInfo };
    const shape: [number, number] = rows ? [rows.shape[0], a.wShape[1]] : a.wShape;
    const program = new FtUnpack16Program(shape, a.wDtype as Weight16DType, rows != null);
    return (backend as WebGPUBackend).runWebGPUProgram(program, rows ? [w, rows] : [w], 'float32', [{ type: 'int32', data: [a.wShape[1]] }]);
  };
  return { forward: linear('nt'), inputGrad: linear('nn'), unpack16 };
}
