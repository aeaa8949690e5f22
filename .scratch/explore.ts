import * as tf from '@tensorflow/tfjs';
import { nodeFolder } from '../src/cli/fs_files.ts';
import { loadModel, prepareRun } from '../src/engine/run.ts';
import { generate } from '../src/engine/model/generate.ts';
import { parseRecipe } from '../src/engine/recipe.ts';
await tf.setBackend('cpu');
const dir = '/work/shared/models/stories260K';
const { model, tokenizer } = await loadModel(nodeFolder(dir));
const ids = tokenizer.encode('Once upon a time');
console.log(ids);
let t0 = performance.now();
const out = await generate(model, [ids], { do_sample: false, max_new_tokens: 40, eos_token_id: tokenizer.eosTokenIds });
console.log(JSON.stringify(tokenizer.decode([...ids, ...out[0]], { skip_special_tokens: true })), performance.now() - t0);
const rows = [
  'Once upon a time, there was a little boy named Tim. Tim liked to play with his red ball in the park. One day, he saw a big dog.',
  'Lily and her mom went to the store. They wanted to buy some apples. Lily saw a big, shiny apple and smiled.',
  'One day, a little cat named Kitty found a toy. She was very happy. She played with the toy all day long.',
  'Tom had a small boat. He liked to sail it on the lake. One day, the wind was very strong and the boat went far away.',
];
const text = rows.map((t) => JSON.stringify({ text: t })).join('\n');
for (const peft of [{ type: 'lora', r: 8, lora_alpha: 16, lora_dropout: 0 }]) {
  const recipe = parseRecipe({ model: dir, train_file: 'train.jsonl', peft, learning_rate: 1e-2, max_steps: 10, per_device_train_batch_size: 4, logging_steps: 1, lr_scheduler_type: 'constant', shuffle: false }, 'recipe.json');
  const run = await prepareRun(recipe, { model: nodeFolder(dir), train: { text, file: 'train.jsonl' } }, { onLog: (e) => console.log(JSON.stringify(e), tf.memory().numTensors) });
  console.log(run.train.examples.map((e) => e.input_ids.length));
  const ex = run.train.examples;
  console.log('eval before', await run.trainer.evaluate(ex));
  t0 = performance.now();
  await run.trainer.train();
  console.log('train ms', performance.now() - t0);
  console.log('eval after', await run.trainer.evaluate(ex));
  run.dispose();
}
