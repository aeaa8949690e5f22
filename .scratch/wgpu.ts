import * as tf from '@tensorflow/tfjs';
import { nodeFolder } from '../src/cli/fs_files.ts';
import { initBackend } from '../src/engine/backend/index.ts';
import { installNodeWebGPU } from '../src/engine/backend/node_webgpu.ts';
import { loadModel } from '../src/engine/run.ts';
import { LoraAdapter } from '../src/engine/model/lora.ts';
import { Rng } from '../src/engine/rng.ts';
import { collate } from '../src/engine/train/batch.ts';
import { sftLossSum } from '../src/engine/train/sft.ts';
console.log(await installNodeWebGPU());
tf.env().set('WEBGPU_CPU_FORWARD', false);
const res: Record<string, any> = {};
for (const name of ['cpu', 'webgpu'] as const) {
  await initBackend(name);
  const { model, tokenizer } = await loadModel(nodeFolder('/work/shared/models/stories260K'));
  const adapter = LoraAdapter.init(model.config, { r: 8, lora_alpha: 16, lora_dropout: 0, target_modules: ['q_proj','k_proj','v_proj','o_proj','gate_proj','up_proj','down_proj'], use_rslora: false, layers_to_transform: null }, new Rng(1));
  const rng = new Rng(9);
  for (const { B } of adapter.modules.values()) B.assign(tf.tensor(rng.uniform(B.size, -0.1, 0.1), B.shape));
  const rows = ['Once upon a time, there was a little boy named Tim.</s>', 'Lily and her mom went to the park.</s>'].map((t) => tokenizer.encode(t));
  const batch = collate(rows.map((ids) => ({ input_ids: ids, labels: ids })), tokenizer.padTokenId);
  const vars = adapter.variables();
  const { value, grads } = tf.variableGrads(() => sftLossSum(model, batch, { adapter }), [...vars.values()]);
  const hidden = tf.tidy(() => model.forward(tf.tensor2d([rows[0]], undefined, 'int32')));
  const logits = tf.tidy(() => model.logits(hidden));
  const out: Record<string, Float32Array> = { loss: (await value.data()) as Float32Array, hidden: (await hidden.data()) as Float32Array, logits: (await logits.data()) as Float32Array };
  for (const [k, v] of vars) out[k] = (await grads[v.name].data()) as Float32Array;
  res[name] = out;
}
for (const k of Object.keys(res.cpu)) {
  const a = res.cpu[k], b = res.webgpu[k];
  let worst = 0, scale = 0;
  for (let i = 0; i < a.length; i++) { worst = Math.max(worst, Math.abs(a[i] - b[i])); scale = Math.max(scale, Math.abs(a[i])); }
  if (k === 'loss' || k === 'hidden' || k === 'logits' || k.includes('layers.0.') || k.includes('layers.4.')) console.log(k.replace('base_model.model.model.', ''), 'maxabs', worst.toExponential(2), 'scale', scale.toExponential(2), 'rel', (worst / scale).toExponential(2));
}
