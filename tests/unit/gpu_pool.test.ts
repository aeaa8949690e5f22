// tfjs-webgpu pools released buffers by exact size and never frees them; with the pool bounded
// (gpu_pool.ts) a run whose sequence lengths keep changing holds at most twice what it ever had in
// use, and a finished run can hand every pooled buffer back. WebGPU in Node (SwiftShader here).
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { nodeFolder } from '../../src/cli/fs_files.ts';
import { initBackend } from '../../src/engine/backend/index.ts';
import { installNodeWebGPU } from '../../src/engine/backend/node_webgpu.ts';
import { releaseFreeGpuBuffers } from '../../src/engine/backend/gpu_pool.ts';
import { loadModel } from '../../src/engine/run.ts';
import { LoraAdapter, resolveTargetModules } from '../../src/engine/model/lora.ts';
import { collate } from '../../src/engine/train/batch.ts';
import { sftLossSum } from '../../src/engine/train/methods/sft.ts';
import { Rng } from '../../src/engine/rng.ts';
import { STORIES_DIR } from './helpers/tiny_model.ts';

const hasWebGPU = await installNodeWebGPU();
if (!hasWebGPU) console.warn('gpu_pool: skipped, Dawn found no WebGPU adapter');

interface Pool { numBytesAllocated: number; numBytesUsed: number }

describe.skipIf(!hasWebGPU)('the WebGPU buffer pool', () => {
  it('stays within twice the peak in use over unbucketed lengths, and empties when released', async () => {
    expect((await initBackend('webgpu')).name).toBe('webgpu');
    tf.env().set('WEBGPU_CPU_FORWARD', false);
    const pool = (tf.backend() as unknown as { bufferManager: Pool }).bufferManager;
    const { model } = await loadModel(nodeFolder(STORIES_DIR));
    const rng = new Rng(0);
    const adapter = LoraAdapter.init(model.config, { r: 4, lora_alpha: 8, lora_dropout: 0, target_modules: resolveTargetModules('all-linear'), use_rslora: false, layers_to_transform: null }, rng);
    let peakUsed = 0;
    let allocatedAfterFirst = 0;
    // Lengths with nothing in common, each making its own buffer sizes, then the first again.
    for (const [i, length] of [9, 23, 14, 9].entries()) {
      const ids = Array.from({ length }, () => 3 + rng.int(500));
      const batch = collate([{ input_ids: ids, labels: ids }], 0, false);
      const { value, grads } = tf.variableGrads(() => sftLossSum(model, batch, { adapter, gradientCheckpointing: true }), [...adapter.variables().values()]);
      await value.data();
      tf.dispose([value, ...Object.values(grads)]);
      peakUsed = Math.max(peakUsed, pool.numBytesUsed);
      if (i === 0) allocatedAfterFirst = pool.numBytesAllocated;
      expect(pool.numBytesAllocated).toBeLessThanOrEqual(2 * peakUsed + 2 ** 20);
    }
    expect(pool.numBytesAllocated).toBeGreaterThanOrEqual(allocatedAfterFirst / 2);
    releaseFreeGpuBuffers();
    expect(pool.numBytesAllocated).toBe(pool.numBytesUsed);
    adapter.dispose();
    model.dispose();
    releaseFreeGpuBuffers();
    expect(pool.numBytesUsed).toBeLessThan(2 ** 20);
  });
});
