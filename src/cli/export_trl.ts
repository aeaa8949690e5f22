/**
 * `finetune export-trl RECIPE.json --out DIR [--key value …]`: the recipe as a folder that runs the
 * same training with TRL and accelerate on one GPU or many (`engine/trl_job.ts`). Flags other than
 * --out override recipe keys, as for `finetune train`. Paths in the recipe are read as `train`
 * reads them, from the current folder. Everything is read and checked before the folder is written,
 * and it is written whole (a temporary sibling renamed into place).
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { UserError, decodeUtf8Text } from '../engine/errors.ts';
import { applyOverrides, parseRecipe, parseRecipeJson } from '../engine/recipe.ts';
import { trlJobFiles, type JobTextFile, type TrlJobData } from '../engine/trl_job.ts';
import { parseArgs, required } from './args.ts';
import { writeFolderAtomic } from './fs_files.ts';
import { checkOutputDir } from './output_dir.ts';

const COMMAND = 'export-trl';

/** The files of an init_adapter folder that the job copies (what loadAdapter reads). */
const ADAPTER_FILES = ['adapter_config.json', 'adapter_model.safetensors'];

/** The files every export writes; a folder holding them is an earlier export, which --out may replace. */
const JOB_MARKERS = ['train.py', 'rows.py', 'requirements.txt'];

async function textFile(path: string, what: string): Promise<JobTextFile> {
  if (!existsSync(path) || !statSync(path).isFile()) throw new UserError(`${path}: no such file (the ${what}).`, { file: path });
  return { name: path, text: decodeUtf8Text(await readFile(path), path) };
}

async function adapterFolder(dir: string): Promise<Record<string, Uint8Array>> {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new UserError(`${dir}: no such folder (the init_adapter).`, { file: dir, field: 'init_adapter' });
  const files: Record<string, Uint8Array> = {};
  for (const name of ADAPTER_FILES) {
    const path = join(dir, name);
    if (!existsSync(path)) throw new UserError(`${path} is missing: an adapter folder needs adapter_config.json and adapter_model.safetensors.`, { file: path, field: 'init_adapter' });
    files[name] = new Uint8Array(await readFile(path));
  }
  return files;
}

/**
 * The job replaces --out whole, so a folder there must be empty or an earlier export: anything
 * else (the project folder, the current folder) would be deleted with it.
 */
function checkReplaceable(out: string): void {
  if (!existsSync(out) || !statSync(out).isDirectory()) return;
  const names = readdirSync(out);
  if (names.length === 0 || JOB_MARKERS.every((n) => names.includes(n))) return;
  throw new UserError(`finetune ${COMMAND}: --out ${out} is a folder with other files in it, and the job replaces the folder whole; give a new folder (or an earlier export to replace).`, { field: 'out' });
}

export async function exportTrlCommand(argv: string[]): Promise<void> {
  const args = parseArgs(argv, COMMAND);
  const [recipePath, ...extra] = args.positionals;
  if (!recipePath) throw new UserError(`finetune ${COMMAND}: give the recipe file and the job folder, e.g. finetune ${COMMAND} recipe.json --out trl-job.`);
  if (extra.length) throw new UserError(`finetune ${COMMAND}: unexpected argument "${extra[0]}".`);
  const out = required(args, COMMAND, 'out');
  const overrides = Object.fromEntries([...args.flags].filter(([k]) => k !== 'out'));
  const { text } = await textFile(recipePath, 'recipe');
  const recipe = parseRecipe(applyOverrides(parseRecipeJson(text, recipePath), overrides), recipePath);
  checkReplaceable(out);
  await checkOutputDir(out, '--out', { replacedWhole: true });

  const data: TrlJobData = {
    train: await textFile(recipe.train_file, 'train_file'),
    ...(recipe.eval_file !== undefined ? { eval: await textFile(recipe.eval_file, 'eval_file') } : {}),
    ...(recipe.init_adapter !== undefined ? { initAdapter: await adapterFolder(recipe.init_adapter) } : {}),
  };
  const scripts: Record<string, string> = {};
  if (recipe.method === 'grpo') {
    for (const spec of recipe.reward_funcs) {
      if (typeof spec === 'string') scripts[spec] = (await textFile(spec, 'reward function in reward_funcs')).text;
    }
  }
  await writeFolderAtomic(out, trlJobFiles(recipe, data, scripts));
  console.log(`TRL job written to ${out}; run it there with: accelerate launch --config_file accelerate/single_gpu.yaml train.py (${out}/README.md has the rest).`);
}
