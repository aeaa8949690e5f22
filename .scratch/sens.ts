import * as tf from '@tensorflow/tfjs';
import { nodeFolder } from '../src/cli/fs_files.ts';
import { loadModel } from '../src/engine/run.ts';
import { Rng } from '../src/engine/rng.ts';
await tf.setBackend('cpu');
const { model, tokenizer } = await loadModel(nodeFolder('/work/shared/models/stories260K'));
const ids = tokenizer.encode('Once upon a time, there was a little boy named Tim.</s>');
const h0 = (await tf.tidy(() => model.forward(tf.tensor2d([ids], undefined, 'int32'))).data()) as Float32Array;
const rng = new Rng(3);
for (const [name, t] of [...model.params]) {
  const d = (await t.data()) as Float32Array;
  const noisy = d.map((x) => x * (1 + (rng.random() - 0.5) * 2e-6));
  model.params.set(name, tf.tensor(noisy, t.shape));
}
const h1 = (await tf.tidy(() => model.forward(tf.tensor2d([ids], undefined, 'int32'))).data()) as Float32Array;
let w = 0, s = 0; for (let i = 0; i < h0.length; i++) { w = Math.max(w, Math.abs(h0[i] - h1[i])); s = Math.max(s, Math.abs(h0[i])); }
console.log('1e-6 relative weight noise -> hidden maxabs', w, 'scale', s);
