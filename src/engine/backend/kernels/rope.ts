/**
 * Rotary position embedding as transformers applies it (rotate_half over the two halves of the
 * head dimension): out₁ = x₁·cos − x₂·sin, out₂ = x₂·cos + x₁·sin. Its gradient is the inverse
 * rotation (sin negated), so one op serves both directions. It runs as our own kernel (`FtRope`)
 * where one is registered for the active backend (WebGPU, CPU), else as the tfjs composition
 * below, which is also the reference tests hold the kernel to; `FtRope` has a registered
 * gradient, so the tape differentiates it like the composition.
 */
import * as tf from '@tensorflow/tfjs';
import { hasKernel, registerKernels } from './registry.ts';
import { ropeCpuKernels } from './rope.cpu.ts';
import { ropeWebGPUKernels } from './rope.wgsl.ts';

registerKernels([...ropeWebGPUKernels, ...ropeCpuKernels]);
if (tf.getGradient('FtRope') == null) {
  tf.registerGradient({
    kernelName: 'FtRope',
    inputsToSave: ['cos', 'sin'],
    // Only x: cos and sin come from positions, never from anything trained, and the tape asks
    // for an input's gradient only when that input leads back to what is differentiated.
    gradFunc: (dy, [cos, sin], attrs) => ({
      x: () => applyRope(dy as tf.Tensor4D, cos as tf.Tensor3D, sin as tf.Tensor3D, !attrs.inverse),
    }),
  });
}

/** x [B, heads, T, D]; cos and sin [B, T, D/2] for each token's position; `inverse` rotates back. */
export function applyRope(x: tf.Tensor4D, cos: tf.Tensor3D, sin: tf.Tensor3D, inverse: boolean): tf.Tensor4D {
  const [B, , T, D] = x.shape;
  const own =
    hasKernel('FtRope', [x, cos, sin]) &&
    D % 2 === 0 &&
    tf.util.arraysEqual(cos.shape, [B, T, D / 2]) &&
    tf.util.arraysEqual(sin.shape, cos.shape);
  if (own) return tf.engine().runKernel('FtRope', { x, cos, sin }, { inverse }) as tf.Tensor4D;
  return tf.tidy(() => {
    const half = D / 2;
    const c = tf.reshape(cos, [B, 1, T, half]);
    const s = inverse ? tf.neg(tf.reshape(sin, [B, 1, T, half])) : tf.reshape(sin, [B, 1, T, half]);
    const [x1, x2] = tf.split(x, [half, half], 3);
    return tf.concat([tf.sub(tf.mul(x1, c), tf.mul(x2, s)), tf.add(tf.mul(x2, c), tf.mul(x1, s))], 3) as tf.Tensor4D;
  });
}
