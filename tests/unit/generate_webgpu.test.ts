// generate()'s static KV cache on WebGPU in Node (Dawn; SwiftShader where there is no GPU): the
// in-place cache write, the tokens the CPU backend gives, and no pipeline compiled after the
// second decode step. Its own file because tfjs keeps one engine per process and vitest's forks
// pool gives each file its own process.
import { beforeAll, afterAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import { fileURLToPath } from 'node:url';
import { nodeFolder } from '../../src/cli/fs_files.ts';
import { initBackend } from '../../src/engine/backend/index.ts';
import { installNodeWebGPU } from '../../src/engine/backend/node_webgpu.ts';
import { expectKVCacheWritesInPlace } from './helpers/generate.ts';
import { generate } from '../../src/engine/model/generate.ts';
import { loadModel, type LoadedModel } from '../../src/engine/run.ts';

const STORIES = fileURLToPath(new URL('../../../shared/models/stories260K', import.meta.url));
const hasWebGPU = await installNodeWebGPU();
const title = hasWebGPU
  ? 'generate on the webgpu backend in Node'
  : "generate on the webgpu backend in Node (skipped: Dawn found no adapter; install Debian's chromium for SwiftShader, or set VK_ICD_FILENAMES)";
if (!hasWebGPU) console.warn(title);

describe.skipIf(!hasWebGPU)(title, () => {
  let m: LoadedModel;
  const prompts = () => ['Once upon a time', 'The cat', 'Tom and Sue went to the park to play'].map((t) => m.tokenizer.encode(t));
  const options = () => ({ do_sample: false, max_new_tokens: 8, num_return_sequences: 2, pad_token_id: m.tokenizer.padTokenId });

  beforeAll(async () => {
    expect((await initBackend('cpu')).name).toBe('cpu');
    m = await loadModel(nodeFolder(STORIES));
    expect((await initBackend('webgpu')).name).toBe('webgpu');
    // Small tensors not uploaded yet would otherwise run on tfjs's CPU kernels.
    tf.env().set('WEBGPU_CPU_FORWARD', false);
  });
  afterAll(() => m.model.dispose());

  it('writes the cache in place as the tfjs composition does', async () => {
    await expectKVCacheWritesInPlace([[1, 5], [4, 1]], 8);
  });

  it('gives the CPU backend’s greedy tokens for left-padded prompts, leaking no tensor', async () => {
    // The model's weights were made on the CPU backend and move to the GPU as they are used.
    await initBackend('cpu');
    const cpu = await generate(m.model, prompts(), options());
    await initBackend('webgpu');
    const before = tf.memory().numTensors;
    expect(await generate(m.model, prompts(), options())).toEqual(cpu);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('compiles no pipeline and allocates no GPU buffer after the second decode step', async () => {
    const backend = tf.backend() as WebGPUBackend;
    // tfjs-webgpu keys pipelines by program and input ranks, so even a growing cache compiled few;
    // but it pools buffers by exact size, so a growing cache allocated new ones at every step.
    const pipelines = () => Object.keys((backend as unknown as { pipelineCache: object }).pipelineCache).length;
    const seen: { pipelines: number; bytes: number }[] = [];
    // A prompt length not met before, so the prefill and the decode steps start cold.
    const longer = prompts().map((p) => [...p, ...p.slice(0, 3)]);
    await generate(m.model, longer, {
      ...options(),
      max_new_tokens: 10,
      onTokens: () => void seen.push({ pipelines: pipelines(), bytes: backend.bufferManager.numBytesAllocated }),
    });
    // seen[k]: after the prefill and k decode steps.
    expect(seen).toHaveLength(10);
    for (const s of seen.slice(3)) expect(s).toEqual(seen[2]);
  });
});
