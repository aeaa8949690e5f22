// The chunked LM head + log-softmax with a recomputing gradient, against tfjs's own autodiff of
// the plain composition, with several chunks, for a frozen head and for a trained one, with the
// probabilities kept from the forward pass and recomputed.
import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { chunkedLogProbs } from '../../src/engine/model/logprobs.ts';
import { frozenWeightF32 } from '../../src/engine/backend/kernels/linear.ts';
import { Rng } from '../../src/engine/rng.ts';
import { maxAbsDiff } from './helpers/golden.ts';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

const N = 13;
const H = 8;
const V = 37;
const rng = new Rng(3);
const xData = rng.uniform(N * H, -1, 1);
const wData = rng.uniform(V * H, -1, 1);
const targets = Array.from({ length: N }, () => rng.int(V));
const weights = rng.uniform(N, 0.5, 1.5); // a non-uniform upstream gradient

function plain(x: tf.Tensor2D, w: tf.Tensor2D, tgt: tf.Tensor1D): tf.Tensor1D {
  const logits = tf.matMul(x, w, false, true);
  return tf.sum(tf.mul(tf.logSoftmax(logits), tf.oneHot(tgt, V)), 1) as tf.Tensor1D;
}

describe('chunkedLogProbs', () => {
  it.each([[1 << 22, 1 << 24], [V * 4, 1 << 24], [V * 5, 0], [V, 0], [1 << 22, 0]])('equals the plain composition and its gradients with chunks of %i logits (keeping up to %i)', (chunkElements, keepElements) => {
    const x = tf.variable(tf.tensor2d(xData, [N, H]));
    const wFrozen = tf.tensor2d(wData, [V, H]);
    const wTrained = tf.variable(tf.tensor2d(wData, [V, H]));
    const tgt = tf.tensor1d(targets, 'int32');
    const scale = tf.tensor1d(weights);
    const objective = (f: () => tf.Tensor1D) => () => tf.sum(tf.mul(f(), scale)) as tf.Scalar;

    const ref = tf.variableGrads(objective(() => plain(x, wTrained, tgt)), [x, wTrained]);
    const frozen = tf.variableGrads(objective(() => chunkedLogProbs(x, frozenWeightF32(wFrozen), tgt, chunkElements, keepElements)), [x]);
    const trained = tf.variableGrads(objective(() => chunkedLogProbs(x, wTrained, tgt, chunkElements, keepElements)), [x, wTrained]);

    expect(Math.abs(frozen.value.dataSync()[0] - ref.value.dataSync()[0])).toBeLessThan(1e-4);
    expect(maxAbsDiff(frozen.grads[x.name].dataSync(), ref.grads[x.name].dataSync())).toBeLessThan(1e-5);
    expect(Math.abs(trained.value.dataSync()[0] - ref.value.dataSync()[0])).toBeLessThan(1e-4);
    expect(maxAbsDiff(trained.grads[x.name].dataSync(), ref.grads[x.name].dataSync())).toBeLessThan(1e-5);
    expect(maxAbsDiff(trained.grads[wTrained.name].dataSync(), ref.grads[wTrained.name].dataSync())).toBeLessThan(1e-5);
    tf.dispose([x, wFrozen, wTrained, tgt, scale, ref.value, frozen.value, trained.value, ...Object.values(ref.grads), ...Object.values(frozen.grads), ...Object.values(trained.grads)]);
  });

  it('leaves no tensor behind', () => {
    const before = tf.memory().numTensors;
    const x = tf.tidy(() => tf.variable(tf.tensor2d(xData, [N, H])));
    const w = tf.tensor2d(wData, [V, H]);
    const tgt = tf.tensor1d(targets, 'int32');
    const { value, grads } = tf.variableGrads(() => tf.sum(chunkedLogProbs(x, frozenWeightF32(w), tgt, V * 3)) as tf.Scalar, [x]);
    tf.dispose([value, ...Object.values(grads), x, w, tgt]);
    expect(tf.memory().numTensors).toBe(before);
  });
});
