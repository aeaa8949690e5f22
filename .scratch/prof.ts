import * as tf from '@tensorflow/tfjs';
import { nodeFolder } from '../src/cli/fs_files.ts';
import { loadModel } from '../src/engine/run.ts';
import { LoraAdapter } from '../src/engine/model/lora.ts';
import { Rng } from '../src/engine/rng.ts';
import { collate } from '../src/engine/train/batch.ts';
import { sftLossSum } from '../src/engine/train/sft.ts';
await tf.setBackend('cpu');
const dir = '/work/shared/models/stories260K';
const { model, tokenizer } = await loadModel(nodeFolder(dir));
const adapter = LoraAdapter.init(model.config, { r: 8, lora_alpha: 16, lora_dropout: 0, target_modules: ['q_proj','k_proj','v_proj','o_proj','gate_proj','up_proj','down_proj'], use_rslora: false, layers_to_transform: null }, new Rng(1));
const ids = tokenizer.encode('Once upon a time, there was a little boy named Tim. Tim liked to play with his red ball in the park. One day, he saw a big dog.');
const ex = [0,1,2,3].map(() => ({ input_ids: ids, labels: ids }));
const batch = collate(ex, 2);
const vars = [...adapter.variables().values()];
for (let k = 0; k < 2; k++) {
  const t0 = performance.now();
  const prof = await tf.profile(() => { const { value, grads } = tf.variableGrads(() => sftLossSum(model, batch, { adapter }), vars); value.dataSync(); tf.dispose([value, ...Object.values(grads)]); });
  const t1 = performance.now();
  const agg = new Map<string, [number, number]>();
  for (const k of prof.kernels) { const a = agg.get(k.name) ?? [0, 0]; a[0] += (k.kernelTimeMs as number); a[1]++; agg.set(k.name, a); }
  console.log('total', t1 - t0, 'kernels', prof.kernels.length);
  console.log([...agg].sort((a, b) => b[1][0] - a[1][0]).slice(0, 12).map(([n, [t, c]]) => `${n} ${t.toFixed(0)}ms x${c}`).join('\n'));
}
const t0 = performance.now();
for (let k = 0; k < 3; k++) { const { value, grads } = tf.variableGrads(() => sftLossSum(model, batch, { adapter }), vars); value.dataSync(); tf.dispose([value, ...Object.values(grads)]); }
console.log('no-profile step ms', (performance.now() - t0) / 3);
