/**
 * The transformer's building blocks as single differentiable ops. Each is a `tf.customGrad`
 * whose forward and backward run our kernels (`../backend/kernels/`) and whose tape node keeps
 * only what its backward pass needs: tfjs's own composition of the same math would keep every
 * intermediate (squares, means, sigmoids, attention scores and probabilities), 170–220 floats
 * per token, layer and hidden unit, where these keep about 15 (20–31 measured on a SmolLM2
 * layer, with the backward pass's own transients).
 */
import * as tf from '@tensorflow/tfjs';
import { installEagerGradients } from '../backend/gradients.ts';
import { matMul } from '../backend/kernels/matmul.ts';
import { applyRope } from '../backend/kernels/rope.ts';
import { attentionBackward, attentionForward, type AttentionOptions } from '../backend/kernels/attention.ts';
import { frozenWeightF32, linearForward, linearInputGrad, type FrozenWeight } from '../backend/kernels/linear.ts';
import { rmsNormBackward, rmsNormForward } from '../backend/kernels/norm.ts';
import { siluMulBackward, siluMulForward } from '../backend/kernels/silu.ts';

type Args = (tf.Tensor | tf.GradSaveFunc)[];

// The model's memory depends on gradients being freed once used; see gradients.ts.
installEagerGradients();

/**
 * Rows of a matrix, x[indices], with a scatter as its gradient. tfjs differentiates gather
 * through UnsortedSegmentSum, which its CPU backend computes with one pass per segment
 * (vocabulary- or token-count passes over the whole gradient); scatterND sums the incoming
 * rows into place in one pass and exists on every backend.
 */
export function gatherRows(x: tf.Tensor2D, indices: tf.Tensor1D): tf.Tensor2D {
  // The indices go in as an input and are saved, so the tape keeps them alive until backprop.
  const f = tf.customGrad((...args: Args) => {
    const [x, idx, save] = args as [tf.Tensor2D, tf.Tensor1D, tf.GradSaveFunc];
    save([idx]);
    return {
      value: tf.gather(x, idx) as tf.Tensor2D,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => [tf.scatterND(tf.expandDims(saved[0], 1), dy, x.shape), tf.zerosLike(saved[0])],
    };
  });
  return f(x, indices) as tf.Tensor2D;
}

/** tf.reshape whose tape node keeps only the input's shape (tfjs's keeps the input itself). */
export function reshape<T extends tf.Tensor>(x: tf.Tensor, shape: number[]): T {
  const from = x.shape;
  const f = tf.customGrad((...args: Args) => ({
    value: tf.reshape(args[0] as tf.Tensor, shape),
    gradFunc: (dy: tf.Tensor) => tf.reshape(dy, from),
  }));
  return f(x) as T;
}

/** a + b of equal shapes; the tape keeps neither (tfjs's Add saves both inputs for their shapes). */
export function residualAdd<T extends tf.Tensor>(a: T, b: T): T {
  const f = tf.customGrad((...args: Args) => {
    const [a, b] = args as [T, T];
    return { value: tf.add(a, b) as T, gradFunc: (dy: tf.Tensor) => [dy, tf.clone(dy)] };
  });
  return f(a, b) as T;
}

/** LlamaRMSNorm over the last axis; the weight gets a gradient only when it is a variable. */
export function rmsNorm<T extends tf.Tensor>(x: T, w: tf.Tensor1D, eps: number): T {
  const trained = w instanceof tf.Variable;
  const f = tf.customGrad((...args: Args) => {
    const save = args[args.length - 1] as tf.GradSaveFunc;
    const x = args[0] as T;
    const { y, rstd } = rmsNormForward(x, w, eps);
    save([x, rstd]);
    rstd.dispose();
    return {
      value: y,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const { dx, dw } = rmsNormBackward(dy as T, saved[0] as T, w, saved[1], trained);
        return trained ? [dx, dw as tf.Tensor] : [dx];
      },
    };
  });
  return (trained ? f(x, w) : f(x)) as T;
}

/** Rotary embedding of x [B, heads, T, D] at positions whose cos and sin are [B, T, D/2]. */
export function rope(x: tf.Tensor4D, cos: tf.Tensor3D, sin: tf.Tensor3D): tf.Tensor4D {
  const f = tf.customGrad((...args: Args) => {
    const save = args[1] as tf.GradSaveFunc;
    // The tables are made inside the forward pass's scope, so the tape must keep them.
    save([cos, sin]);
    return {
      value: applyRope(args[0] as tf.Tensor4D, cos, sin, false),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => applyRope(dy as tf.Tensor4D, saved[0] as tf.Tensor3D, saved[1] as tf.Tensor3D, true),
    };
  });
  return f(x) as tf.Tensor4D;
}

/**
 * Causal grouped-query attention. The tape keeps q, k, v, the output and one log-sum-exp per
 * query row; the backward pass recomputes the probabilities from them, so no [heads × T × S]
 * tensor outlives the op.
 */
export function attention(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, opts: AttentionOptions): tf.Tensor4D {
  const f = tf.customGrad((...args: Args) => {
    const [q, k, v, save] = args as [tf.Tensor4D, tf.Tensor4D, tf.Tensor4D, tf.GradSaveFunc];
    const { out, lse } = attentionForward(q, k, v, opts);
    // The key mask is made inside the forward pass's scope, so the tape must keep it.
    save(opts.keyMask ? [q, k, v, out, lse, opts.keyMask] : [q, k, v, out, lse]);
    lse.dispose();
    return {
      value: out,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [q, k, v, out, lse, keyMask] = saved as [tf.Tensor4D, tf.Tensor4D, tf.Tensor4D, tf.Tensor4D, tf.Tensor3D, tf.Tensor2D | undefined];
        const { dq, dk, dv } = attentionBackward(dy as tf.Tensor4D, q, k, v, out, lse, { ...opts, keyMask });
        return [dq, dk, dv];
      },
    };
  });
  return f(q, k, v) as tf.Tensor4D;
}

/** silu(gate) · up, keeping gate and up for the backward pass and nothing else. */
export function siluMul<T extends tf.Tensor>(gate: T, up: T): T {
  const f = tf.customGrad((...args: Args) => {
    const [gate, up, save] = args as [T, T, tf.GradSaveFunc];
    save([gate, up]);
    return {
      value: siluMulForward(gate, up),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const { dgate, dup } = siluMulBackward(dy as T, saved[0] as T, saved[1] as T);
        return [dgate, dup];
      },
    };
  });
  return f(gate, up) as T;
}

/** A LoRA branch on a linear layer: scale · dropout(x)·Aᵀ·Bᵀ. */
export interface LoraBranch {
  /** [r, in] */
  A: tf.Variable;
  /** [out, r] */
  B: tf.Variable;
  scale: number;
  /** lora_dropout; with `seed`, the mask tf.dropout draws for that seed. */
  dropout: number;
  seed?: number;
}

/**
 * nn.Linear with a frozen weight, y = x·Wᵀ (+ b), plus the LoRA branch when there is one, as one
 * op. Its gradient needs nothing from the forward pass but dropout(x) and dropout(x)·Aᵀ, and only
 * when LoRA trains; the weight is closed over, so the tape neither keeps nor differentiates it.
 * A trained bias (full fine-tuning only) goes through `trainedLinear`.
 */
export function frozenLinear(x: tf.Tensor2D, W: FrozenWeight, bias: tf.Tensor1D | undefined, lora: LoraBranch | null): tf.Tensor2D {
  if (!lora) {
    const f = tf.customGrad((...args: Args) => ({
      value: linearForward(args[0] as tf.Tensor2D, W, bias),
      gradFunc: (dy: tf.Tensor) => linearInputGrad(dy as tf.Tensor2D, W),
    }));
    return f(x) as tf.Tensor2D;
  }
  const { scale, dropout, seed } = lora;
  // tf.dropout's mask depends only on the shape and the seed, so the backward pass redraws it.
  const mask = dropout > 0 && seed !== undefined ? () => tf.dropout(tf.onesLike(x), dropout, undefined, seed) : null;
  const f = tf.customGrad((...args: Args) => {
    const [x, A, B, save] = args as [tf.Tensor2D, tf.Tensor2D, tf.Tensor2D, tf.GradSaveFunc];
    const xd = mask ? tf.mul(x, mask()) as tf.Tensor2D : x;
    // x·Aᵀ through the linear kernel, not a transposed BatchMatMul: on WebGPU tfjs's takes ~40 ms
    // for a decode step's [8 × 64]·[16 × 64]ᵀ against 0.5 ms here (its gradient is spelled out below).
    const xa = linearForward(xd, frozenWeightF32(A));
    save([xd, xa]);
    return {
      value: linearForward(x, W, bias, { xa, B, scale }),
      // A tape node's gradient runs outside any tidy of tfjs's, so intermediates are freed here.
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.tidy(() => {
        const [xd, xa] = saved as [tf.Tensor2D, tf.Tensor2D];
        const g = matMul(dy, B) as tf.Tensor2D; // [N, r]
        const dA = tf.mul(matMul(g, xd, true, false), scale);
        const dB = tf.mul(matMul(dy, xa, true, false), scale);
        // Without dropout the LoRA term of dx joins the frozen product in one kernel.
        const dx = mask
          ? tf.add(linearInputGrad(dy as tf.Tensor2D, W), tf.mul(tf.mul(matMul(g, A), scale), mask()))
          : linearInputGrad(dy as tf.Tensor2D, W, { g, A, scale });
        return [dx, dA, dB];
      }),
    };
  });
  return f(x, lora.A, lora.B) as tf.Tensor2D;
}

/** nn.Linear whose weight (and bias) are being trained: tfjs's own differentiable ops. */
export function trainedLinear(x: tf.Tensor2D, W: tf.Variable, bias: tf.Tensor1D | undefined, lora: LoraBranch | null): tf.Tensor2D {
  let y = matMul(x, W, false, true) as tf.Tensor2D;
  if (bias) y = tf.add(y, bias);
  if (lora) {
    const xd = lora.dropout > 0 && lora.seed !== undefined ? tf.dropout(x, lora.dropout, undefined, lora.seed) : x;
    y = tf.add(y, tf.mul(matMul(matMul(xd, lora.A, false, true), lora.B, false, true), lora.scale));
  }
  return y;
}

/**
 * f(x) recomputed in the backward pass instead of kept (gradient checkpointing): the tape keeps
 * x and `context` (tensors f reads that die with the forward pass's scope, handed back to f)
 * alone, and the gradient runs f again under a tape of its own to get dx and the gradients of
 * `vars`, the variables f reads. f must be deterministic (dropout replays its seeds).
 */
export function checkpoint<T extends tf.Tensor>(f: (x: T, context: tf.Tensor[]) => T, x: T, context: tf.Tensor[], vars: tf.Variable[]): T {
  const g = tf.customGrad((...args: Args) => {
    const save = args[args.length - 1] as tf.GradSaveFunc;
    const input = args[0] as T;
    save([input, ...context]);
    return {
      value: f(input, context),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.tidy(() => {
        const xs = [saved[0], ...vars];
        const engine = tf.engine() as unknown as { state: { activeTape: unknown } };
        // A nested gradient computation ends by clearing the engine's active tape, which the outer
        // backward pass still needs to release what it saved; it is put back afterwards.
        const outerTape = engine.state.activeTape;
        try {
          const { value, grads } = tf.engine().gradients(() => f(saved[0] as T, saved.slice(1)), xs, dy, true);
          value.dispose();
          return grads.map((gr, i) => gr ?? tf.zerosLike(xs[i]));
        } finally {
          engine.state.activeTape = outerTape;
        }
      }),
    };
  });
  return g(x, ...vars) as T;
}
