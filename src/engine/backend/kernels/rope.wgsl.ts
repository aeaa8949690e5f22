/**
 * WGSL kernel for the rotary position embedding: one dispatch, one thread per group of rotated
 * pairs (x₁[i], x₂[i]) of a head vector, vec4 groups when the half head dimension allows.
 */
import type * as tf from '@tensorflow/tfjs';
import type { WebGPUBackend, WebGPUProgram } from '@tensorflow/tfjs-backend-webgpu';

class RopeProgram implements WebGPUProgram {
  variableNames = ['x', 'cosT', 'sinT'];
  outputShape: number[];
  shaderKey: string;
  dispatchLayout = { x: [0] };
  dispatch: [number, number, number];
  workgroupSize: [number, number, number] = [64, 1, 1];
  outputComponent: number;
  uniforms = 'heads : i32, seq : i32, halfWords : i32, threads : i32, sign : f32,';

  /** `threads` = B · heads · T · halfWords, one per group of `outputComponent` pairs. */
  constructor(size: number, components: number, threads: number) {
    this.outputShape = [size];
    this.outputComponent = components;
    this.dispatch = [Math.ceil(threads / this.workgroupSize[0]), 1, 1];
    this.shaderKey = `ft_rope_${components}`;
  }

  getUserCode(): string {
    return `
      fn main(i : i32) {
        if (i >= uniforms.threads) { return; }
        let hw = uniforms.halfWords;
        let row = i / hw;                 // (b, head, t) flattened
        let p = i - row * hw;
        let t = row % uniforms.seq;
        let b = row / (uniforms.seq * uniforms.heads);
        let cs = (b * uniforms.seq + t) * hw + p;
        let c = cosT[cs];
        let s = uniforms.sign * sinT[cs];
        let lo = row * 2 * hw + p;
        let x1 = x[lo];
        let x2 = x[lo + hw];
        result[lo] = x1 * c - x2 * s;
        result[lo + hw] = x2 * c + x1 * s;
      }`;
  }
}

export const ropeWebGPUKernels: tf.KernelConfig[] = [
  {
    kernelName: 'FtRope',
    backendName: 'webgpu',
    kernelFunc: ({ inputs, backend, attrs }) => {
      const { x, cos, sin } = inputs as { x: tf.TensorInfo; cos: tf.TensorInfo; sin: tf.TensorInfo };
      const [B, heads, T, D] = x.shape;
      const half = D / 2;
      const components = half % 4 === 0 ? 4 : half % 2 === 0 ? 2 : 1;
      const halfWords = half / components;
      const threads = B * heads * T * halfWords;
      const size = B * heads * T * D;
      const flat = (t: tf.TensorInfo) => ({ ...t, shape: [t.shape.reduce((a, b) => a * b, 1)] });
      const out = (backend as WebGPUBackend).runWebGPUProgram(
        new RopeProgram(size, components, threads),
        [flat(x), flat(cos), flat(sin)],
        'float32',
        [
          { type: 'int32', data: [heads] },
          { type: 'int32', data: [T] },
          { type: 'int32', data: [halfWords] },
          { type: 'int32', data: [threads] },
          { type: 'float32', data: [attrs!.inverse ? -1 : 1] },
        ],
      );
      return { ...out, shape: x.shape };
    },
  },
];
