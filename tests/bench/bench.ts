/**
 * `npm run bench`: training and generation speed of the engine on the real stories260K model,
 * on each backend this machine has (CPU always; WebGPU in Node through Dawn when an adapter is
 * found — SwiftShader here, a real GPU on a GPU machine). Prints one table; nothing is asserted.
 * Usage: npm run bench [-- --backends cpu,wasm,webgpu --steps 5 --batch 4 --seq 64]
 */
import '../../src/cli/quiet_tfjs.ts';
import * as tf from '@tensorflow/tfjs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { initBackend, type BackendName } from '../../src/engine/backend/index.ts';
import { installNodeWebGPU } from '../../src/engine/backend/node_webgpu.ts';
import { nodeFolder } from '../../src/cli/fs_files.ts';
import { loadModel } from '../../src/engine/run.ts';
import { LoraAdapter, resolveTargetModules } from '../../src/engine/model/lora.ts';
import { AdamW } from '../../src/engine/train/optim.ts';
import { collate } from '../../src/engine/train/batch.ts';
import { sftLossSum } from '../../src/engine/train/sft.ts';
import { trainStep } from '../../src/engine/train/step.ts';
import { generate } from '../../src/engine/model/generate.ts';
import { Rng } from '../../src/engine/rng.ts';

const { values } = parseArgs({
  options: {
    backends: { type: 'string', default: 'cpu,wasm,webgpu' },
    steps: { type: 'string', default: '5' },
    batch: { type: 'string', default: '4' },
    seq: { type: 'string', default: '64' },
    model: { type: 'string', default: fileURLToPath(new URL('../../../shared/models/stories260K', import.meta.url)) },
  },
});
const steps = Number(values.steps);
const batch = Number(values.batch);
const seq = Number(values.seq);

interface Row { backend: string; adapter: string; train_tok_s: number; step_ms: number; gen_tok_s: number; peak_mb: number }
const rows: Row[] = [];
const hasWebGPU = values.backends.includes('webgpu') ? await installNodeWebGPU() : false;

for (const name of values.backends.split(',') as BackendName[]) {
  if (name === 'webgpu' && !hasWebGPU) {
    console.error('webgpu: no adapter in Node here; skipped');
    continue;
  }
  const info = await initBackend(name);
  if (info.name !== name) {
    console.error(`${name}: not available (${info.fallbackReason}); skipped`);
    continue;
  }
  if (name === 'webgpu') tf.env().set('WEBGPU_CPU_FORWARD', false);
  const { model, tokenizer } = await loadModel(nodeFolder(values.model));
  const rng = new Rng(0);
  const adapter = LoraAdapter.init(model.config, { r: 8, lora_alpha: 16, lora_dropout: 0, target_modules: resolveTargetModules('all-linear'), use_rslora: false, layers_to_transform: null }, rng);
  const params = adapter.variables();
  const optimizer = new AdamW(params, { weight_decay: 0 });
  const examples = Array.from({ length: batch }, () => {
    const ids = Array.from({ length: seq }, () => 3 + rng.int(model.config.vocab_size - 3));
    return { input_ids: ids, labels: ids };
  });
  const micro = [collate(examples, tokenizer.padTokenId)];
  const step = () => trainStep(params, micro, (b) => sftLossSum(model, b, { adapter }), optimizer, 1e-4, 1.0);
  await step(); // warm-up: shader compilation and buffer pools
  let peak = 0;
  const t0 = performance.now();
  for (let i = 0; i < steps; i++) {
    await step();
    peak = Math.max(peak, tf.memory().numBytes);
  }
  const stepMs = (performance.now() - t0) / steps;
  const prompt = tokenizer.encode('Once upon a time');
  await generate(model, [prompt], { do_sample: false, max_new_tokens: 4, adapter });
  const g0 = performance.now();
  const out = await generate(model, [prompt], { do_sample: false, max_new_tokens: 32, adapter, eos_token_id: [] });
  const genS = (performance.now() - g0) / 1000;
  rows.push({
    backend: name,
    adapter: info.adapter ? `${info.adapter.vendor} ${info.adapter.description || info.adapter.device}`.trim() : name === 'wasm' ? 'host CPU (XNNPACK, WebAssembly)' : 'host CPU (JavaScript kernels)',
    train_tok_s: Math.round((batch * seq) / (stepMs / 1000)),
    step_ms: Math.round(stepMs),
    gen_tok_s: Math.round((out[0].length / genS) * 10) / 10,
    peak_mb: Math.round(peak / 2 ** 20),
  });
  optimizer.dispose();
  adapter.dispose();
  model.dispose();
}

console.log(`stories260K, LoRA r=8 all-linear, batch ${batch} × ${seq} tokens, ${steps} timed steps after one warm-up`);
console.table(rows);
