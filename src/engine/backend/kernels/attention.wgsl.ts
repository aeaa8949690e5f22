/**
 * WGSL kernels for causal grouped-query attention in the FlashAttention-2 manner: no [T × S]
 * tensor ever reaches global memory. Every program has workgroups of ROWS threads, one thread
 * per row it owns (a query row, or a key row for dk and dv), and streams tiles of TILE rows of
 * the other side through workgroup memory, skipping tiles wholly above the causal diagonal.
 *
 * runWebGPUProgram binds one output per program, so the forward pass is two dispatches (the
 * log-sum-exp by an online softmax, then the output normalised by that same lse, which keeps the
 * forward output and the backward's recomputed probabilities exactly consistent) and the
 * backward pass three (dq, dk, dv; each recomputes the probabilities from lse and computes
 * Δ = rowsum(dout ⊙ out) inline, so no preprocessing dispatch). dk and dv loop over the G query
 * heads of their kv head inside the workgroup, so nothing needs atomics.
 *
 * Masked scores are −1e30, not −∞, exactly as in the composition: a query row whose every key is
 * masked (left padding) then has equal scores over all S keys — not only the causal ones — and
 * lse = −1e30 + log S rounds to −1e30, so each of its S probabilities is exp(0) = 1. Such rows
 * are found from the first visible key of the batch row and widen the key range to S.
 */
import type * as tf from '@tensorflow/tfjs';
import type { WebGPUBackend, WebGPUProgram } from '@tensorflow/tfjs-backend-webgpu';

/** Rows owned per workgroup, one per thread. */
const ROWS = 32;
/** Most rows of a streamed tile; fewer when two [TILE × D] float tiles would not fit. */
const MAX_TILE = 32;

type Part = 'lse' | 'out' | 'dq' | 'dk' | 'dv';

/**
 * Rows per streamed tile: the largest power of two up to MAX_TILE whose workgroup arrays (two
 * [TILE × D] tiles, at most two floats a row, two words) fit the device's workgroup storage.
 */
export function tileRows(headDim: number, workgroupStorage: number): number {
  let tile = MAX_TILE;
  while (tile > 1 && (2 * tile * headDim + 2 * tile + 2) * 4 > workgroupStorage) tile /= 2;
  return tile;
}

const INPUTS: Record<Part, string[]> = {
  lse: ['q', 'k'],
  out: ['q', 'k', 'v', 'lse'],
  dq: ['q', 'k', 'v', 'lse', 'dout', 'o'],
  dk: ['q', 'k', 'v', 'lse', 'dout', 'o'],
  dv: ['q', 'k', 'lse', 'dout'],
};

class AttentionProgram implements WebGPUProgram {
  variableNames: string[];
  outputShape: number[];
  shaderKey: string;
  // Not flat, so tfjs calls main() without an index; the rank differs from the output's, so it
  // generates no getOutputCoords either. Every index is computed from workgroupId below.
  dispatchLayout = { x: [0], y: [1] };
  dispatch: [number, number, number];
  workgroupSize: [number, number, number] = [ROWS, 1, 1];
  uniforms = 'scale : f32, past : i32,';

  constructor(
    private readonly part: Part,
    private readonly masked: boolean,
    private readonly D: number,
    private readonly tile: number,
    outputShape: number[],
    rows: number,
    groups: number,
  ) {
    this.variableNames = masked ? [...INPUTS[part], 'keyMask'] : INPUTS[part];
    this.outputShape = outputShape;
    this.dispatch = [Math.ceil(rows / ROWS), groups, 1];
    this.shaderKey = `ft_attention_${part}_${masked ? 'mask' : 'nomask'}_${D}_${tile}`;
  }

  getUserCode(): string {
    return this.part === 'dk' || this.part === 'dv' ? this.keyRowsCode() : this.queryRowsCode();
  }

  /**
   * Shared declarations: [TILE × D] workgroup tiles, [TILE] per-row ones, and the first-visible-key
   * search (a workgroup-wide min over keyMask[b]).
   */
  private common(tileVars: string[], rowVars: string[]): string {
    const { D, tile } = this;
    return `
      const MASKED : f32 = -1e30;
      const D : i32 = ${D};
      const ROWS : i32 = ${ROWS};
      const TILE : i32 = ${tile};
      ${tileVars.map((n) => `var<workgroup> ${n} : array<f32, ${tile * D}>;`).join('\n')}
      ${rowVars.map((n) => `var<workgroup> ${n} : array<f32, ${tile}>;`).join('\n')}
      // Zero-initialised: S − (first visible key) as a max, so 0 means none visible.
      var<workgroup> firstKeyFromEnd : atomic<i32>;
      // A loop bound thread 0 computes, read back through workgroupUniformLoad: the loops hold
      // barriers, so WGSL's uniformity analysis must see a uniform bound, which a value from an
      // atomic load is not.
      var<workgroup> loopBound : i32;

      fn keyVisible(b : i32, s : i32, S : i32) -> bool {
        ${this.masked ? 'return f32(keyMask[b * S + s]) != 0.0;' : 'return true;'}
      }

      // Query rows t with past + t < firstVisibleKey see no key at all.
      fn firstVisibleKey(b : i32, S : i32, li : i32) -> i32 {
        ${this.masked ? `
        for (var s = li; s < S; s += ROWS) {
          if (keyVisible(b, s, S)) {
            atomicMax(&firstKeyFromEnd, S - s);
            break;
          }
        }
        workgroupBarrier();
        return S - atomicLoad(&firstKeyFromEnd);` : 'return 0;'}
      }`;
  }

  /** lse, out, dq: each thread owns one query row of one (b, h) and streams key tiles. */
  private queryRowsCode(): string {
    const part = this.part;
    const tiles = part === 'lse' ? ['kT'] : ['kT', 'vT'];
    const perKey = {
      lse: `
              if (sc > m) {
                l = l * exp(m - sc) + 1.0;
                m = sc;
              } else {
                l += exp(sc - m);
              }`,
      out: `
              let p = exp(sc - rowLse);
              for (var d = 0; d < D; d++) { acc[d] += p * vT[jj * D + d]; }`,
      dq: `
              let p = exp(sc - rowLse);
              var dp = 0.0;
              for (var d = 0; d < D; d++) { dp += dr[d] * vT[jj * D + d]; }
              let ds = p * (dp - delta) * uniforms.scale;
              for (var d = 0; d < D; d++) { acc[d] += ds * kT[jj * D + d]; }`,
    }[part as 'lse' | 'out' | 'dq'];
    return `
      ${this.common(tiles, ['visT'])}
      fn main() {
        let li = i32(localIndex);
        let H = uniforms.qShape.y;
        let T = uniforms.qShape.z;
        let KV = uniforms.kShape.y;
        let S = uniforms.kShape.z;
        let past = uniforms.past;
        let bh = i32(workgroupId.y);
        let b = bh / H;
        let kvh = (bh % H) / (H / KV);
        let t0 = i32(workgroupId.x) * ROWS;
        let t = t0 + li;
        let valid = t < T;
        let row = (bh * T + min(t, T - 1)) * D;
        let kBase = (b * KV + kvh) * S * D;

        // Keys 0 .. past + (last row of the tile), or all S when a row of the tile sees none.
        let firstKey = firstVisibleKey(b, S, li);
        if (li == 0) {
          loopBound = select(min(S, past + min(T, t0 + ROWS)), S, past + t0 < firstKey);
        }
        let kEnd = workgroupUniformLoad(&loopBound);

        var qr : array<f32, ${this.D}>;
        for (var d = 0; d < D; d++) { qr[d] = q[row + d]; }
        ${part === 'lse' ? `
        var m = MASKED;
        var l = 0.0;` : `
        let rowLse = lse[bh * T + min(t, T - 1)];
        var acc : array<f32, ${this.D}>;`}
        ${part === 'dq' ? `
        var dr : array<f32, ${this.D}>;
        var delta = 0.0;
        for (var d = 0; d < D; d++) {
          dr[d] = dout[row + d];
          delta += dr[d] * o[row + d];
        }` : ''}

        for (var j0 = 0; j0 < kEnd; j0 += TILE) {
          for (var i = li; i < TILE * D; i += ROWS) {
            let s = j0 + i / D;
            if (s < S) {
              kT[i] = k[kBase + s * D + i % D];
              ${part === 'lse' ? '' : 'vT[i] = v[kBase + s * D + i % D];'}
            }
          }
          for (var jj = li; jj < TILE; jj += ROWS) {
            visT[jj] = select(0.0, 1.0, j0 + jj < S && keyVisible(b, j0 + jj, S));
          }
          workgroupBarrier();
          if (valid) {
            for (var jj = 0; jj < min(TILE, kEnd - j0); jj++) {
              let s = j0 + jj;
              var sc = MASKED;
              if (s <= past + t && visT[jj] != 0.0) {
                var qk = 0.0;
                for (var d = 0; d < D; d++) { qk += qr[d] * kT[jj * D + d]; }
                sc = qk * uniforms.scale;
              }
              ${perKey}
            }
          }
          workgroupBarrier();
        }

        if (valid) {
          ${part === 'lse' ? 'result[bh * T + t] = m + log(l);' : 'for (var d = 0; d < D; d++) { result[row + d] = acc[d]; }'}
        }
      }`;
  }

  /** dk, dv: each thread owns one key row of one (b, kv head) and streams query tiles of its G heads. */
  private keyRowsCode(): string {
    const dk = this.part === 'dk';
    return `
      ${this.common(['qT', 'doT'], dk ? ['lseT', 'deltaT'] : ['lseT'])}
      fn main() {
        let li = i32(localIndex);
        let H = uniforms.qShape.y;
        let T = uniforms.qShape.z;
        let KV = uniforms.kShape.y;
        let S = uniforms.kShape.z;
        let G = H / KV;
        let past = uniforms.past;
        let bkv = i32(workgroupId.y);
        let b = bkv / KV;
        let kvh = bkv % KV;
        let s0 = i32(workgroupId.x) * ROWS;
        let s = s0 + li;
        let valid = s < S;
        let krow = (bkv * S + min(s, S - 1)) * D;

        // Query rows from the first whose position reaches s0, or from 0 when some rows see no key
        // (those have probability 1 on every key).
        let firstKey = firstVisibleKey(b, S, li);
        if (li == 0) {
          loopBound = select(max(0, s0 - past), 0, past < firstKey);
        }
        let qStart = workgroupUniformLoad(&loopBound);

        let visible = valid && keyVisible(b, min(s, S - 1), S);
        var kr : array<f32, ${this.D}>;
        ${dk ? `var vr : array<f32, ${this.D}>;` : ''}
        var acc : array<f32, ${this.D}>;
        for (var d = 0; d < D; d++) {
          kr[d] = k[krow + d];
          ${dk ? 'vr[d] = v[krow + d];' : ''}
        }

        for (var g = 0; g < G; g++) {
          let bh = b * H + kvh * G + g;
          for (var i0 = qStart; i0 < T; i0 += TILE) {
            for (var i = li; i < TILE * D; i += ROWS) {
              let t = i0 + i / D;
              if (t < T) {
                let at = (bh * T + t) * D + i % D;
                qT[i] = q[at];
                doT[i] = dout[at];
              }
            }
            for (var ii = li; ii < TILE; ii += ROWS) {
              if (i0 + ii < T) { lseT[ii] = lse[bh * T + i0 + ii]; }
            }
            workgroupBarrier();
            ${dk ? `
            // Δ = rowsum(dout ⊙ out) for the tile's rows, from the dout rows just loaded.
            for (var ii = li; ii < TILE; ii += ROWS) {
              if (i0 + ii < T) {
                let at = (bh * T + i0 + ii) * D;
                var delta = 0.0;
                for (var d = 0; d < D; d++) { delta += doT[ii * D + d] * o[at + d]; }
                deltaT[ii] = delta;
              }
            }
            workgroupBarrier();` : ''}
            if (valid) {
              for (var ii = 0; ii < min(TILE, T - i0); ii++) {
                var sc = MASKED;
                if (visible && s <= past + i0 + ii) {
                  var qk = 0.0;
                  for (var d = 0; d < D; d++) { qk += qT[ii * D + d] * kr[d]; }
                  sc = qk * uniforms.scale;
                }
                let p = exp(sc - lseT[ii]);
                ${dk ? `
                var dp = 0.0;
                for (var d = 0; d < D; d++) { dp += doT[ii * D + d] * vr[d]; }
                let ds = p * (dp - deltaT[ii]) * uniforms.scale;
                for (var d = 0; d < D; d++) { acc[d] += ds * qT[ii * D + d]; }` : `
                for (var d = 0; d < D; d++) { acc[d] += p * doT[ii * D + d]; }`}
              }
            }
            workgroupBarrier();
          }
        }

        if (valid) {
          for (var d = 0; d < D; d++) { result[krow + d] = acc[d]; }
        }
      }`;
  }
}

interface Attrs {
  scale: number;
  past: number;
}

function runPart(
  backend: WebGPUBackend, part: Part, inputs: tf.TensorInfo[], keyMask: tf.TensorInfo | undefined, attrs: Attrs,
): tf.TensorInfo {
  const [B, H, T, D] = inputs[0].shape;
  const [, KV, S] = inputs[1].shape;
  const tile = tileRows(D, backend.device.limits.maxComputeWorkgroupStorageSize);
  const program = part === 'dk' || part === 'dv'
    ? new AttentionProgram(part, keyMask != null, D, tile, [B, KV, S, D], S, B * KV)
    : new AttentionProgram(part, keyMask != null, D, tile, part === 'lse' ? [B, H, T] : [B, H, T, D], T, B * H);
  const uniforms = [
    { type: 'float32', data: [attrs.scale] },
    { type: 'int32', data: [attrs.past] },
  ];
  return backend.runWebGPUProgram(program, keyMask != null ? [...inputs, keyMask] : inputs, 'float32', uniforms);
}

export const attentionWebGPUKernels: tf.KernelConfig[] = [
  {
    // Outputs [out, lse].
    kernelName: 'FtAttention',
    backendName: 'webgpu',
    kernelFunc: ({ inputs, backend, attrs }) => {
      const { q, k, v, keyMask } = inputs as Record<string, tf.TensorInfo>;
      const b = backend as WebGPUBackend;
      const a = attrs as unknown as Attrs;
      const lse = runPart(b, 'lse', [q, k], keyMask, a);
      const out = runPart(b, 'out', [q, k, v, lse], keyMask, a);
      return [out, lse];
    },
  },
  {
    // Outputs [dq, dk, dv].
    kernelName: 'FtAttentionGrad',
    backendName: 'webgpu',
    kernelFunc: ({ inputs, backend, attrs }) => {
      const { dout, q, k, v, out, lse, keyMask } = inputs as Record<string, tf.TensorInfo>;
      const b = backend as WebGPUBackend;
      const a = attrs as unknown as Attrs;
      return [
        runPart(b, 'dq', [q, k, v, lse, dout, out], keyMask, a),
        runPart(b, 'dk', [q, k, v, lse, dout, out], keyMask, a),
        runPart(b, 'dv', [q, k, lse, dout], keyMask, a),
      ];
    },
  },
];
