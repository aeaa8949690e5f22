import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../../src/engine/backend/index.ts';
import { Rng } from '../../src/engine/rng.ts';

// This file never installs Dawn, so navigator.gpu is absent and WebGPU must be skipped with a reason.
describe('initBackend', () => {
  it('initialises the CPU backend', async () => {
    const info = await initBackend('cpu');
    expect(info).toEqual({ name: 'cpu' });
    expect(tf.getBackend()).toBe('cpu');
  });

  it('initialises WASM in Node without being told where the binaries are, and agrees with the CPU', async () => {
    const rng = new Rng(1);
    const aData = rng.uniform(5 * 7, -1, 1);
    const bData = rng.uniform(7 * 3, -1, 1);
    const product = async () => {
      const out = tf.tidy(() => tf.matMul(tf.tensor2d(aData, [5, 7]), tf.tensor2d(bData, [7, 3])));
      const values = await out.data();
      out.dispose();
      return values;
    };

    await initBackend('cpu');
    const onCpu = await product();

    const info = await initBackend('wasm');
    expect(info).toEqual({ name: 'wasm' });
    expect(tf.getBackend()).toBe('wasm');
    const onWasm = await product();

    for (let i = 0; i < onCpu.length; i++) expect(onWasm[i]).toBeCloseTo(onCpu[i], 5);
  });

  it("'auto' without navigator.gpu falls back to WASM and says why", async () => {
    const info = await initBackend('auto');
    expect(info.name).toBe('wasm');
    expect(info.fallbackReason).toMatch(/^webgpu: navigator\.gpu is not available/);
    expect(tf.getBackend()).toBe('wasm');
  });

  it("an explicit 'webgpu' falls back along the same chain", async () => {
    const info = await initBackend('webgpu');
    expect(info.name).toBe('wasm');
    expect(info.fallbackReason).toContain('webgpu:');
  });

  it('rejects an unknown name', async () => {
    await expect(initBackend('webgl' as never)).rejects.toThrow(/Unknown backend 'webgl'/);
  });
});
