// matMul's WASM shaping (operands transposed first, batches split into matrix products, so every
// product takes XNNPACK's path) gives tf.matMul's values on the CPU backend.
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../../src/engine/backend/index.ts';
import { matMul } from '../../src/engine/backend/kernels/matmul.ts';
import { Rng } from '../../src/engine/rng.ts';
import { maxAbsDiff } from './helpers/golden.ts';

const CASES: [number[], number[], boolean, boolean][] = [
  [[5, 7], [7, 3], false, false],
  [[7, 5], [7, 3], true, false],
  [[5, 7], [3, 7], false, true],
  [[2, 3, 6, 4], [2, 3, 4, 5], false, false],
  [[2, 3, 4, 6], [2, 3, 5, 4], true, true],
  [[2, 3, 6, 4], [4, 5], false, false],
];

describe('matMul on WASM', () => {
  it.each(CASES)('%j · %j (transposeA %s, transposeB %s) equals tf.matMul on the CPU', async (sa, sb, ta, tb) => {
    const rng = new Rng(5);
    const a = rng.uniform(sa.reduce((x, y) => x * y, 1), -1, 1);
    const b = rng.uniform(sb.reduce((x, y) => x * y, 1), -1, 1);
    await initBackend('cpu');
    const want = tf.tidy(() => tf.matMul(tf.tensor(a, sa), tf.tensor(b, sb), ta, tb));
    const wantValues = await want.data();
    const wantShape = want.shape;
    want.dispose();
    expect((await initBackend('wasm')).name).toBe('wasm');
    const before = tf.memory().numTensors;
    const [A, B] = [tf.tensor(a, sa), tf.tensor(b, sb)];
    const got = matMul(A, B, ta, tb);
    expect(got.shape).toEqual(wantShape);
    expect(maxAbsDiff(await got.data(), wantValues)).toBeLessThan(1e-5);
    tf.dispose([A, B, got]);
    expect(tf.memory().numTensors).toBe(before);
  });
});
