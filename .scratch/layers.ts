import * as tf from '@tensorflow/tfjs';
import { nodeFolder } from '../src/cli/fs_files.ts';
import { initBackend } from '../src/engine/backend/index.ts';
import { installNodeWebGPU } from '../src/engine/backend/node_webgpu.ts';
import { loadModel } from '../src/engine/run.ts';
await installNodeWebGPU();
tf.env().set('WEBGPU_CPU_FORWARD', false);
const res: Record<string, Record<string, Float32Array>> = { cpu: {}, webgpu: {} };
for (const b of ['cpu', 'webgpu'] as const) {
  await initBackend(b);
  const { model, tokenizer } = await loadModel(nodeFolder('/work/shared/models/stories260K'));
  const ids = tokenizer.encode('Once upon a time, there was a little boy named Tim.</s>');
  const m = model as any;
  const c = model.config;
  const T = ids.length;
  const rec: Record<string, tf.Tensor> = {};
  tf.tidy(() => {
    const inputIds = tf.tensor2d([ids], undefined, 'int32');
    const positions = tf.tile(tf.expandDims(tf.range(0, T, 1, 'int32'), 0), [1, 1]);
    const [cos, sin] = m.rope(positions, T);
    rec.cos = tf.keep(cos); rec.sin = tf.keep(sin);
    const bias = tf.tidy(() => { const q = tf.reshape(tf.range(0, T, 1, 'int32'), [T, 1]); const k = tf.reshape(tf.range(0, T, 1, 'int32'), [1, T]); const allowed = tf.reshape(tf.lessEqual(k, q), [1, 1, T, T]); return tf.tile(tf.mul(tf.sub(1, tf.cast(allowed, 'float32')), -1e30), [1, 1, 2, 1]); });
    let h = tf.reshape(tf.gather(model.weight('model.embed_tokens.weight'), tf.reshape(inputIds, [-1])), [1, T, c.hidden_size]);
    const rms = (x: tf.Tensor, w: tf.Tensor) => tf.mul(tf.mul(x, tf.rsqrt(tf.add(tf.mean(tf.square(x), -1, true), c.rms_norm_eps))), w);
    for (let i = 0; i < c.num_hidden_layers; i++) {
      const x = rms(h, model.weight(`model.layers.${i}.input_layernorm.weight`));
      rec[`x${i}`] = tf.keep(x);
      const a = m.attention(i, x, cos, sin, bias, {});
      rec[`attn${i}`] = tf.keep(a);
      h = tf.add(h, a);
      const y = rms(h, model.weight(`model.layers.${i}.post_attention_layernorm.weight`));
      const f = m.mlp(i, y, {});
      rec[`mlp${i}`] = tf.keep(f);
      h = tf.add(h, f);
      rec[`h${i}`] = tf.keep(h);
    }
  });
  for (const [k, t] of Object.entries(rec)) res[b][k] = (await t.data()) as Float32Array;
}
for (const k of Object.keys(res.cpu)) {
  const a = res.cpu[k], g = res.webgpu[k]; let w = 0, s = 0;
  for (let i = 0; i < a.length; i++) { w = Math.max(w, Math.abs(a[i] - g[i])); s = Math.max(s, Math.abs(a[i])); }
  console.log(k.padEnd(6), 'maxabs', w.toExponential(2), 'scale', s.toExponential(2), 'rel', (w / s).toExponential(2));
}
