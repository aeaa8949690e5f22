import * as tf from '@tensorflow/tfjs';

/**
 * Rows of a matrix, x[indices], with a scatter as its gradient. tfjs differentiates gather
 * through UnsortedSegmentSum, which its CPU backend computes with one pass per segment
 * (vocabulary- or token-count passes over the whole gradient); scatterND sums the incoming
 * rows into place in one pass and exists on every backend.
 */
export function gatherRows(x: tf.Tensor2D, indices: tf.Tensor1D): tf.Tensor2D {
  // The indices go in as an input and are saved, so the tape keeps them alive until backprop.
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [x, idx, save] = args as [tf.Tensor2D, tf.Tensor1D, tf.GradSaveFunc];
    save([idx]);
    return {
      value: tf.gather(x, idx) as tf.Tensor2D,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => [tf.scatterND(tf.expandDims(saved[0], 1), dy, x.shape), tf.zerosLike(saved[0])],
    };
  });
  return f(x, indices) as tf.Tensor2D;
}

/**
 * x Wᵀ for a frozen W, whose gradient needs nothing from the forward pass: dx = dy W. tfjs's own
 * matMul saves both inputs for its backward pass by cloning them, and on the WASM backend a clone
 * is a copy, so every step would duplicate every weight matrix of the model. W is closed over
 * rather than passed in, so the tape neither keeps it nor asks for its gradient.
 */
export function frozenLinear(x: tf.Tensor2D, W: tf.Tensor2D): tf.Tensor2D {
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const x = args[0] as tf.Tensor2D;
    return { value: tf.matMul(x, W, false, true), gradFunc: (dy: tf.Tensor) => tf.matMul(dy as tf.Tensor2D, W) };
  });
  return f(x) as tf.Tensor2D;
}
