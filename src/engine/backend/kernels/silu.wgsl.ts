/**
 * WGSL kernels for silu(gate) · up and its gradient, run through tfjs's WebGPU backend. Each is
 * one elementwise dispatch over vec4 words when the element count allows.
 */
import type * as tf from '@tensorflow/tfjs';
import type { WebGPUBackend, WebGPUProgram } from '@tensorflow/tfjs-backend-webgpu';

type Part = 'forward' | 'dgate' | 'dup';

/** Words per thread: vec4 when the flat length divides by 4 (every input has the same length). */
function componentsFor(n: number): 1 | 4 {
  return n % 4 === 0 ? 4 : 1;
}

/** σ(v) without overflow: exp of a non-positive number only. */
function sigmoidWgsl(type: string): string {
  return `
    fn sigmoidStable(v : ${type}) -> ${type} {
      let e = exp(-abs(v));
      return select(e / (1.0 + e), 1.0 / (1.0 + e), v >= ${type}(0.0));
    }`;
}

class SiluMulProgram implements WebGPUProgram {
  variableNames: string[];
  outputShape: number[];
  shaderKey: string;
  dispatchLayout = { x: [0] };
  dispatch: [number, number, number];
  workgroupSize: [number, number, number] = [64, 1, 1];
  outputComponent: number;
  size = true;

  constructor(
    private readonly part: Part,
    n: number,
  ) {
    this.variableNames = part === 'forward' ? ['gate', 'up'] : part === 'dgate' ? ['dy', 'gate', 'up'] : ['dy', 'gate'];
    this.outputShape = [n];
    this.outputComponent = componentsFor(n);
    this.dispatch = [Math.ceil(n / this.outputComponent / this.workgroupSize[0]), 1, 1];
    this.shaderKey = `ft_silu_mul_${part}_${this.outputComponent}`;
  }

  getUserCode(): string {
    const t = this.outputComponent === 4 ? 'vec4<f32>' : 'f32';
    const value = {
      forward: 'g * sigmoidStable(g) * up[i]',
      dgate: `dy[i] * up[i] * s * (1.0 + g * (1.0 - s))`,
      dup: 'dy[i] * g * s',
    }[this.part];
    return `
      ${sigmoidWgsl(t)}
      fn main(i : i32) {
        if (i < uniforms.size) {
          let g = gate[i];
          let s = sigmoidStable(g);
          result[i] = ${value};
        }
      }`;
  }
}

function run(backend: WebGPUBackend, part: Part, inputs: tf.TensorInfo[], shape: number[]): tf.TensorInfo {
  const n = shape.reduce((a, b) => a * b, 1);
  const flat = inputs.map((t) => ({ ...t, shape: [n] }));
  const out = backend.runWebGPUProgram(new SiluMulProgram(part, n), flat, 'float32');
  return { ...out, shape };
}

export const siluWebGPUKernels: tf.KernelConfig[] = [
  {
    kernelName: 'FtSiluMul',
    backendName: 'webgpu',
    kernelFunc: ({ inputs, backend }) => {
      const { gate, up } = inputs as { gate: tf.TensorInfo; up: tf.TensorInfo };
      return run(backend as WebGPUBackend, 'forward', [gate, up], gate.shape);
    },
  },
  {
    // runWebGPUProgram binds one output, and a slice of a packed [2, …] result would be a copy
    // dispatch of its own, so the two gradients are two elementwise programs.
    kernelName: 'FtSiluMulGrad',
    backendName: 'webgpu',
    kernelFunc: ({ inputs, backend }) => {
      const { dy, gate, up } = inputs as { dy: tf.TensorInfo; gate: tf.TensorInfo; up: tf.TensorInfo };
      const b = backend as WebGPUBackend;
      return [run(b, 'dgate', [dy, gate, up], gate.shape), run(b, 'dup', [dy, gate], gate.shape)];
    },
  },
];
