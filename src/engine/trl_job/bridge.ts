/**
 * reward_bridge.mjs of an exported TRL job (see trl_job.ts): rewards.py runs it with node to call
 * a JavaScript reward file's default export as the studio does, `fn(prompts, completions, columns)`,
 * through the studio's own sandbox kit, so what the function returns reads back (and is refused)
 * exactly as in the studio.
 */
import { SANDBOX_KIT_SOURCE } from '../train/script_reward.ts';

export const REWARD_BRIDGE_MJS = String.raw`// Written by finetune export-trl. rewards.py runs it once per call:
//   node reward_bridge.mjs FILE name  prints {"name": the default export's function name, or null}
//   node reward_bridge.mjs FILE call  reads the batch {prompts, completions, columns} on stdin and
//                                     prints the outcome as the studio's sandbox writes it
// FILE's default export is called as the studio calls it, through the same kit
// (src/engine/train/script_reward.ts, SANDBOX_KIT_SOURCE). Unlike the studio this is not a
// sandbox: the file is your own code, run by plain node.
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const kit = ${SANDBOX_KIT_SOURCE};

const [file, mode] = process.argv.slice(2);

/** A file that cannot be called: one sentence on stderr, exit status 2. */
function refuse(sentence) {
  process.stderr.write(sentence + '\n');
  process.exit(2);
}

let namespace;
try {
  namespace = await import(pathToFileURL(resolve(file)).href);
} catch (e) {
  refuse('threw ' + kit.describe(e) + ' while loading');
}
if (!('default' in namespace)) refuse('has no default export; a reward file exports its function as default, (prompts, completions, columns) => rewards');
const fn = namespace.default;
if (typeof fn !== 'function') refuse('its default export is ' + kit.kindOf(fn) + ', not a function (prompts, completions, columns) => rewards');

if (mode === 'name') {
  process.stdout.write(JSON.stringify({ name: kit.nameOf(fn) }));
} else {
  let input = '';
  process.stdin.setEncoding('utf8');
  for await (const chunk of process.stdin) input += chunk;
  kit.start(fn, input, (outcome) => process.stdout.write(outcome));
}
`;
