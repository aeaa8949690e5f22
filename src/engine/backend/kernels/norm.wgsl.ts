/**
 * WGSL kernels for RMSNorm. Rows are the leading axes flattened, each row a vector of `hidden`
 * values read as `words` vecN words (vec4 when hidden divides by 4).
 *
 * Forward, two dispatches: a shared-memory reduction of Σx² per row gives rstd, then an
 * elementwise pass writes y = x · rstd · w (runWebGPUProgram binds one output per program, so y
 * and rstd cannot come from one dispatch). Backward: one reduction per row writes dx; dw, when
 * asked, is a second dispatch reducing over rows in 16-row slices, 16 words per workgroup.
 */
import type * as tf from '@tensorflow/tfjs';
import type { WebGPUBackend, WebGPUProgram } from '@tensorflow/tfjs-backend-webgpu';

type Uniforms = Parameters<WebGPUBackend['runWebGPUProgram']>[3];

function componentsFor(hidden: number): 1 | 2 | 4 {
  return hidden % 4 === 0 ? 4 : hidden % 2 === 0 ? 2 : 1;
}

function vecType(c: number): string {
  return c === 1 ? 'f32' : `vec${c}<f32>`;
}

/** Linear workgroup index, valid after tfjs spreads a long dispatch over y and z. */
const WORKGROUP_INDEX = `
  fn workgroupIndex() -> i32 {
    return i32(workgroupId.z * numWorkgroups.x * numWorkgroups.y + workgroupId.y * numWorkgroups.x + workgroupId.x);
  }`;

/**
 * A row is reduced by a team of `team` invocations (a power of two, at most the workgroup), so a
 * workgroup holds workgroup / team rows: short rows (a per-head q_norm) do not leave most of a
 * workgroup idle, and wide rows get a whole one.
 */
interface RowLayout {
  workgroup: number;
  team: number;
}

function rowLayout(words: number): RowLayout {
  const workgroup = words >= 1024 ? 256 : 64;
  let team = 1;
  while (team < words && team < workgroup) team *= 2;
  return { workgroup, team };
}

/** Σ over the invocation's team of one f32 each; every member gets its team's total. */
function teamSum({ workgroup, team }: RowLayout): string {
  return `
  var<workgroup> partial : array<f32, ${workgroup}>;
  fn teamSum(v : f32) -> f32 {
    let tid = localIndex;
    let lane = tid % ${team}u;
    partial[tid] = v;
    workgroupBarrier();
    for (var s = ${team >> 1}u; s > 0u; s = s >> 1u) {
      if (lane < s) { partial[tid] = partial[tid] + partial[tid + s]; }
      workgroupBarrier();
    }
    return partial[tid - lane];
  }
  fn teamRow() -> i32 { return workgroupIndex() * ${workgroup / team} + i32(localIndex / ${team}u); }
  fn teamLane() -> i32 { return i32(localIndex % ${team}u); }`;
}

function dotSnippet(c: number): string {
  const t = vecType(c);
  return `fn dotW(a : ${t}, b : ${t}) -> f32 { return ${c === 1 ? 'a * b' : 'dot(a, b)'}; }`;
}

abstract class NormProgram implements WebGPUProgram {
  abstract variableNames: string[];
  outputShape: number[];
  shaderKey: string;
  dispatchLayout = { x: [0] };
  dispatch: [number, number, number];
  workgroupSize: [number, number, number];
  outputComponent: number;
  variableComponents?: number[];
  uniforms?: string;
  size?: boolean;

  constructor(key: string, outputSize: number, workgroups: number, workgroupSize: number, outputComponent: number) {
    this.outputShape = [outputSize];
    this.dispatch = [workgroups, 1, 1];
    this.workgroupSize = [workgroupSize, 1, 1];
    this.outputComponent = outputComponent;
    this.shaderKey = `ft_rmsnorm_${key}`;
  }

  abstract getUserCode(): string;
}

/** rstd[row] = 1 / √(Σx² / hidden + ε), one team per row. */
class RstdProgram extends NormProgram {
  variableNames = ['x'];
  override uniforms = 'rows : i32, words : i32, hidden : f32, eps : f32,';

  constructor(
    rows: number,
    private readonly c: number,
    private readonly l: RowLayout,
  ) {
    super(`rstd_${c}_${l.workgroup}_${l.team}`, rows, Math.ceil((rows * l.team) / l.workgroup), l.workgroup, 1);
    this.variableComponents = [c];
  }

  getUserCode(): string {
    return `
      ${WORKGROUP_INDEX}
      ${teamSum(this.l)}
      ${dotSnippet(this.c)}
      fn main(index : i32) {
        let row = teamRow();
        let lane = teamLane();
        let live = row < uniforms.rows;
        var acc = 0.0;
        if (live) {
          let base = row * uniforms.words;
          for (var j = lane; j < uniforms.words; j = j + ${this.l.team}) {
            let v = x[base + j];
            acc = acc + dotW(v, v);
          }
        }
        let total = teamSum(acc);
        if (live && lane == 0) {
          result[row] = 1.0 / sqrt(total / uniforms.hidden + uniforms.eps);
        }
      }`;
  }
}

/** y = x · rstd[row] · w, elementwise over words. */
class ScaleProgram extends NormProgram {
  variableNames = ['x', 'rstd', 'w'];
  override uniforms = 'words : i32,';
  override size = true;

  constructor(size: number, c: number) {
    super(`scale_${c}`, size, Math.ceil(size / c / 64), 64, c);
    this.variableComponents = [c, 1, c];
  }

  getUserCode(): string {
    return `
      fn main(i : i32) {
        if (i < uniforms.size) {
          let row = i / uniforms.words;
          result[i] = x[i] * rstd[row] * w[i - row * uniforms.words];
        }
      }`;
  }
}

/** dx = rstd · dy · w − x · rstd³ · Σ(dy · w · x) / hidden, one team per row. */
class GradProgram extends NormProgram {
  variableNames = ['dy', 'x', 'w', 'rstd'];
  override uniforms = 'rows : i32, words : i32, hidden : f32,';

  constructor(
    rows: number,
    size: number,
    private readonly c: number,
    private readonly l: RowLayout,
  ) {
    super(`grad_${c}_${l.workgroup}_${l.team}`, size, Math.ceil((rows * l.team) / l.workgroup), l.workgroup, c);
    this.variableComponents = [c, c, c, 1];
  }

  getUserCode(): string {
    return `
      ${WORKGROUP_INDEX}
      ${teamSum(this.l)}
      ${dotSnippet(this.c)}
      fn main(index : i32) {
        let row = teamRow();
        let lane = teamLane();
        let live = row < uniforms.rows;
        let base = row * uniforms.words;
        var acc = 0.0;
        if (live) {
          for (var j = lane; j < uniforms.words; j = j + ${this.l.team}) {
            acc = acc + dotW(dy[base + j] * w[j], x[base + j]);
          }
        }
        let total = teamSum(acc);
        if (live) {
          let r = rstd[row];
          let k = r * r * r * total / uniforms.hidden;
          for (var j = lane; j < uniforms.words; j = j + ${this.l.team}) {
            result[base + j] = r * dy[base + j] * w[j] - k * x[base + j];
          }
        }
      }`;
  }
}

const DW_WORDS = 16;
const DW_SLICES = 16;

/** dw = Σ over rows of dy · x · rstd; a workgroup owns 16 words and splits the rows in 16 slices. */
class WeightGradProgram extends NormProgram {
  variableNames = ['dy', 'x', 'rstd'];
  override uniforms = 'rows : i32, words : i32,';

  constructor(
    hidden: number,
    words: number,
    private readonly c: number,
  ) {
    super(`dw_${c}`, hidden, Math.ceil(words / DW_WORDS), DW_WORDS * DW_SLICES, c);
    this.variableComponents = [c, c, 1];
  }

  getUserCode(): string {
    const t = vecType(this.c);
    return `
      ${WORKGROUP_INDEX}
      var<workgroup> partial : array<${t}, ${DW_WORDS * DW_SLICES}>;
      fn main(index : i32) {
        let tid = i32(localIndex);
        let slice = tid / ${DW_WORDS};
        let word = tid - slice * ${DW_WORDS};
        let col = workgroupIndex() * ${DW_WORDS} + word;
        var acc = ${t}(0.0);
        if (col < uniforms.words) {
          for (var r = slice; r < uniforms.rows; r = r + ${DW_SLICES}) {
            let k = r * uniforms.words + col;
            acc = acc + dy[k] * x[k] * rstd[r];
          }
        }
        partial[tid] = acc;
        workgroupBarrier();
        for (var s = ${DW_SLICES / 2}; s > 0; s = s >> 1u) {
          if (slice < s) { partial[tid] = partial[tid] + partial[tid + s * ${DW_WORDS}]; }
          workgroupBarrier();
        }
        if (slice == 0 && col < uniforms.words) {
          result[col] = partial[word];
        }
      }`;
  }
}

function flat(t: tf.TensorInfo): tf.TensorInfo {
  return { ...t, shape: [t.shape.reduce((a, b) => a * b, 1)] };
}

function layout(x: tf.TensorInfo) {
  const hidden = x.shape[x.shape.length - 1];
  const size = x.shape.reduce((a, b) => a * b, 1);
  const c = componentsFor(hidden);
  const words = hidden / c;
  return { hidden, size, rows: size / hidden, c, words, rl: rowLayout(words) };
}

const i32 = (v: number) => ({ type: 'int32', data: [v] });
const f32 = (v: number) => ({ type: 'float32', data: [v] });

export const normWebGPUKernels: tf.KernelConfig[] = [
  {
    kernelName: 'FtRmsNorm',
    backendName: 'webgpu',
    kernelFunc: ({ inputs, backend, attrs }) => {
      const { x, w } = inputs as { x: tf.TensorInfo; w: tf.TensorInfo };
      const b = backend as WebGPUBackend;
      const { hidden, size, rows, c, words, rl } = layout(x);
      const rstdU: Uniforms = [i32(rows), i32(words), f32(hidden), f32(attrs!.eps as number)];
      const rstd = b.runWebGPUProgram(new RstdProgram(rows, c, rl), [flat(x)], 'float32', rstdU);
      const y = b.runWebGPUProgram(new ScaleProgram(size, c), [flat(x), rstd, w], 'float32', [i32(words)]);
      return [
        { ...y, shape: x.shape },
        { ...rstd, shape: x.shape.slice(0, -1) },
      ];
    },
  },
  {
    kernelName: 'FtRmsNormGrad',
    backendName: 'webgpu',
    kernelFunc: ({ inputs, backend, attrs }) => {
      const { dy, x, w, rstd } = inputs as { dy: tf.TensorInfo; x: tf.TensorInfo; w: tf.TensorInfo; rstd: tf.TensorInfo };
      const b = backend as WebGPUBackend;
      const { hidden, size, rows, c, words, rl } = layout(x);
      const dxU: Uniforms = [i32(rows), i32(words), f32(hidden)];
      const dx = b.runWebGPUProgram(new GradProgram(rows, size, c, rl), [flat(dy), flat(x), w, flat(rstd)], 'float32', dxU);
      const out: tf.TensorInfo[] = [{ ...dx, shape: x.shape }];
      if (attrs!.weightGrad) {
        const dwU: Uniforms = [i32(rows), i32(words)];
        out.push(b.runWebGPUProgram(new WeightGradProgram(hidden, words, c), [flat(dy), flat(x), flat(rstd)], 'float32', dwU));
      }
      return out;
    },
  },
];
