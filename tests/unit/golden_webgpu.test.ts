// The PyTorch golden comparisons (see golden.test.ts) on WebGPU: Dawn in Node, on SwiftShader where
// there is no GPU, so our WGSL kernels (16-bit matrices, fused attention, RMSNorm, RoPE, SiLU·mul)
// run against PyTorch's numbers. Two cases, since SwiftShader takes about a minute for each: a
// Llama in BF16 kept 16-bit (tied embeddings, llama3 RoPE, GQA) and a Qwen3 in F32 (q/k norms).
import { describe, it } from 'vitest';
import { installNodeWebGPU } from '../../src/engine/backend/node_webgpu.ts';
import { goldenSuite } from './helpers/golden_suite.ts';

if (await installNodeWebGPU()) goldenSuite('webgpu', [['llama_bf16', 'auto'], ['qwen3_f32', 'auto']]);
else {
  const why = "PyTorch golden comparisons on webgpu (skipped: Dawn found no WebGPU adapter; install Debian's chromium for SwiftShader, or set VK_ICD_FILENAMES)";
  console.warn(why);
  describe.skip(why, () => it('runs', () => undefined));
}
