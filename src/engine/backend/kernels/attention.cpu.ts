/**
 * Plain JavaScript reference kernels for causal grouped-query attention on tfjs's CPU backend,
 * the same math as the WGSL kernels: an online softmax (running max and sum) per query row for
 * the log-sum-exp, the output and the gradients from probabilities recomputed from it. Nothing
 * larger than one row of scores exists besides the inputs and outputs.
 *
 * Masked scores are −1e30 (as float32), as in the composition: a query row that sees no key has
 * equal scores on all S keys, lse rounds to −1e30, and each of its probabilities is exactly 1.
 */
import type * as tf from '@tensorflow/tfjs';
import type { MathBackendCPU } from '@tensorflow/tfjs-backend-cpu';

const MASKED = Math.fround(-1e30);

interface Attrs {
  scale: number;
  past: number;
}

type Values = Float32Array | Int32Array | Uint8Array;

function values(backend: MathBackendCPU, t: tf.TensorInfo): Values {
  return backend.data.get(t.dataId).values as Values;
}

/** Shapes, the key visibility test and each query row's key range, shared by both kernels. */
function layout(backend: MathBackendCPU, q: tf.TensorInfo, k: tf.TensorInfo, keyMask: tf.TensorInfo | undefined, past: number) {
  const [B, H, T, D] = q.shape;
  const [, KV, S] = k.shape;
  const mask = keyMask != null ? values(backend, keyMask) : undefined;
  const visible = (b: number, s: number) => mask == null || mask[b * S + s] !== 0;
  // A row at position past + t before its batch row's first visible key sees nothing.
  const firstKey = new Int32Array(B);
  for (let b = 0; b < B; b++) {
    let s = 0;
    while (s < S && !visible(b, s)) s++;
    firstKey[b] = s;
  }
  const keyEnd = (b: number, t: number) => (past + t < firstKey[b] ? S : past + t + 1);
  return { B, H, T, D, KV, S, G: H / KV, visible, keyEnd };
}

/** scale · q[qi..]·k[ki..] over D, or MASKED. */
function score(q: Values, qi: number, k: Values, ki: number, D: number, scale: number): number {
  let dot = 0;
  for (let d = 0; d < D; d++) dot += q[qi + d] * k[ki + d];
  return Math.fround(dot * scale);
}

export const attentionCpuKernels: tf.KernelConfig[] = [
  {
    // Outputs [out, lse].
    kernelName: 'FtAttention',
    backendName: 'cpu',
    kernelFunc: ({ inputs, backend, attrs }) => {
      const { q, k, v, keyMask } = inputs as Record<string, tf.TensorInfo>;
      const { scale, past } = attrs as unknown as Attrs;
      const cpu = backend as MathBackendCPU;
      const { B, H, T, D, KV, S, G, visible, keyEnd } = layout(cpu, q, k, keyMask, past);
      const qv = values(cpu, q);
      const kv = values(cpu, k);
      const vv = values(cpu, v);
      const out = new Float32Array(B * H * T * D);
      const lse = new Float32Array(B * H * T);
      const scores = new Float32Array(S);
      for (let b = 0; b < B; b++) {
        for (let h = 0; h < H; h++) {
          const bh = b * H + h;
          const kBase = (b * KV + Math.floor(h / G)) * S * D;
          for (let t = 0; t < T; t++) {
            const row = (bh * T + t) * D;
            const end = keyEnd(b, t);
            let m = MASKED;
            let l = 0;
            for (let s = 0; s < end; s++) {
              const sc = s <= past + t && visible(b, s) ? score(qv, row, kv, kBase + s * D, D, scale) : MASKED;
              scores[s] = sc;
              if (sc > m) {
                l = l * Math.exp(m - sc) + 1;
                m = sc;
              } else {
                l += Math.exp(sc - m);
              }
            }
            lse[bh * T + t] = m + Math.log(l);
            const rowLse = lse[bh * T + t];
            for (let s = 0; s < end; s++) {
              const p = Math.exp(scores[s] - rowLse);
              if (p === 0) continue;
              for (let d = 0; d < D; d++) out[row + d] += p * vv[kBase + s * D + d];
            }
          }
        }
      }
      return [cpu.makeTensorInfo(q.shape, 'float32', out), cpu.makeTensorInfo([B, H, T], 'float32', lse)];
    },
  },
  {
    // Outputs [dq, dk, dv].
    kernelName: 'FtAttentionGrad',
    backendName: 'cpu',
    kernelFunc: ({ inputs, backend, attrs }) => {
      const { dout, q, k, v, out, lse, keyMask } = inputs as Record<string, tf.TensorInfo>;
      const { scale, past } = attrs as unknown as Attrs;
      const cpu = backend as MathBackendCPU;
      const { B, H, T, D, KV, S, G, visible, keyEnd } = layout(cpu, q, k, keyMask, past);
      const qv = values(cpu, q);
      const kv = values(cpu, k);
      const vv = values(cpu, v);
      const dov = values(cpu, dout);
      const ov = values(cpu, out);
      const lv = values(cpu, lse);
      const dq = new Float32Array(B * H * T * D);
      const dk = new Float32Array(B * KV * S * D);
      const dv = new Float32Array(B * KV * S * D);
      for (let b = 0; b < B; b++) {
        for (let h = 0; h < H; h++) {
          const bh = b * H + h;
          const kBase = (b * KV + Math.floor(h / G)) * S * D;
          for (let t = 0; t < T; t++) {
            const row = (bh * T + t) * D;
            const rowLse = lv[bh * T + t];
            let delta = 0;
            for (let d = 0; d < D; d++) delta += dov[row + d] * ov[row + d];
            const end = keyEnd(b, t);
            for (let s = 0; s < end; s++) {
              const key = kBase + s * D;
              const sc = s <= past + t && visible(b, s) ? score(qv, row, kv, key, D, scale) : MASKED;
              const p = Math.exp(sc - rowLse);
              if (p === 0) continue;
              let dp = 0;
              for (let d = 0; d < D; d++) dp += dov[row + d] * vv[key + d];
              const ds = p * (dp - delta) * scale;
              for (let d = 0; d < D; d++) {
                dq[row + d] += ds * kv[key + d];
                dk[key + d] += ds * qv[row + d];
                dv[key + d] += p * dov[row + d];
              }
            }
          }
        }
      }
      return [
        cpu.makeTensorInfo(q.shape, 'float32', dq),
        cpu.makeTensorInfo(k.shape, 'float32', dk),
        cpu.makeTensorInfo(k.shape, 'float32', dv),
      ];
    },
  },
];
