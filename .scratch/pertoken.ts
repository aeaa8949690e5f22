import * as tf from '@tensorflow/tfjs';
import { nodeFolder } from '../src/cli/fs_files.ts';
import { loadModel } from '../src/engine/run.ts';
await tf.setBackend('cpu');
const { model, tokenizer } = await loadModel(nodeFolder('/work/shared/models/stories260K'));
const rows = process.argv.slice(2);
let tot = 0, n = 0, totNoEos = 0;
for (const r of rows) {
  const ids = tokenizer.encode(r + '</s>');
  const logits = tf.tidy(() => model.logits(model.forward(tf.tensor2d([ids], undefined, 'int32'))));
  const lp = tf.tidy(() => tf.logSoftmax(logits));
  const d = await lp.data(); const V = 512;
  const parts: string[] = [];
  for (let t = 0; t + 1 < ids.length; t++) { const nll = -d[t * V + ids[t + 1]]; tot += nll; n++; if (t + 2 < ids.length) totNoEos += nll; parts.push(`${tokenizer.decode([ids[t+1]])}:${nll.toFixed(1)}`); }
  console.log(ids.length, parts.join(' '));
}
console.log('mean', tot / n, 'mean without eos', totNoEos / (n - rows.length));
