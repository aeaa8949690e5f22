/**
 * The frozen linear layer's two products, y = x·Wᵀ (+ b) and dx = dy·W, reading W as it is stored:
 * float32, or 16-bit (bfloat16 / float16) packed two values per 32-bit word.
 */
import * as tf from '@tensorflow/tfjs';

export type WeightDType = 'float32' | 'bfloat16' | 'float16';

/**
 * A frozen weight [out, in] as it lives on the backend. For 16-bit storage `data` is an int32
 * tensor of ⌈out·in / 2⌉ words, element 2j in the low 16 bits of word j and element 2j+1 in the
 * high 16 bits (WGSL's unpack2x16float order), row-major over [out, in].
 */
export interface FrozenWeight {
  readonly data: tf.Tensor;
  readonly dtype: WeightDType;
  readonly shape: [number, number];
}

export function frozenWeightF32(t: tf.Tensor2D): FrozenWeight {
  return { data: t, dtype: 'float32', shape: [t.shape[0], t.shape[1]] };
}

/** The weight as a float32 [out, in] tensor (the caller disposes it unless it is `w.data` itself). */
export function unpackWeight(w: FrozenWeight): tf.Tensor2D {
  if (w.dtype === 'float32') return w.data as tf.Tensor2D;
  throw new Error(`unpackWeight: ${w.dtype} storage is not supported yet`);
}

/** y = x·Wᵀ (+ bias): x [N, in], W [out, in] → [N, out]. */
export function linearForward(x: tf.Tensor2D, w: FrozenWeight, bias?: tf.Tensor1D): tf.Tensor2D {
  return tf.tidy(() => {
    const W = unpackWeight(w);
    const y = tf.matMul(x, W, false, true);
    return (bias ? tf.add(y, bias) : y) as tf.Tensor2D;
  });
}

/** dx = dy·W: dy [N, out], W [out, in] → [N, in]. */
export function linearInputGrad(dy: tf.Tensor2D, w: FrozenWeight): tf.Tensor2D {
  return tf.tidy(() => tf.matMul(dy, unpackWeight(w)) as tf.Tensor2D);
}
