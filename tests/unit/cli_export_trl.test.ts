// `finetune export-trl RECIPE.json --out DIR` in process: the recipe read as `finetune train` reads
// it (flags override keys, paths from the current folder), its data, reward files and init_adapter
// copied into a job folder written whole, and bad input refused with one sentence naming the file
// or field before anything is written.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { exportTrlCommand } from '../../src/cli/export_trl.ts';
import { UserError } from '../../src/engine/errors.ts';

const INIT_ADAPTER = fileURLToPath(new URL('../fixtures/dpo_cli/init_adapter', import.meta.url));

let dir: string;
let stderr: string;
let stdout: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'export-trl-'));
  await writeFile(join(dir, 'train.jsonl'), '{"prompt": "2+2=", "answer": "4"}\n{"prompt": "3+3=", "answer": "6"}\n');
  await writeFile(join(dir, 'pairs.jsonl'), '{"prompt": "The sky is", "chosen": " blue.", "rejected": " green."}\n');
  await mkdir(join(dir, 'rewards'));
  await writeFile(join(dir, 'rewards', 'digits.js'), 'export default function digits(prompts, completions) {\n  return completions.map((c) => (/\\d/.test(c) ? 1 : 0));\n}\n');
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

beforeEach(() => {
  stderr = '';
  stdout = '';
  vi.spyOn(console, 'log').mockImplementation((...args: unknown[]) => {
    stdout += `${args.join(' ')}\n`;
  });
  vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
    stderr += String(chunk);
    return true;
  });
});

afterEach(() => {
  vi.restoreAllMocks();
});

async function recipeFile(name: string, json: Record<string, unknown>): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, JSON.stringify(json));
  return path;
}

/** The UserError the command throws, or null. */
async function refused(argv: string[]): Promise<UserError | null> {
  try {
    await exportTrlCommand(argv);
  } catch (e) {
    expect(e).toBeInstanceOf(UserError);
    return e as UserError;
  }
  return null;
}

describe('finetune export-trl', () => {
  it('writes a GRPO job with the data and reward files copied, flags overriding the recipe', async () => {
    const recipe = await recipeFile('grpo.json', {
      model: 'HuggingFaceTB/SmolLM2-135M-Instruct',
      method: 'grpo',
      train_file: join(dir, 'train.jsonl'),
      reward_funcs: [{ name: 'accuracy' }, join(dir, 'rewards', 'digits.js')],
      num_generations: 2,
      per_device_train_batch_size: 4,
    });
    const out = join(dir, 'grpo-job');
    await exportTrlCommand([recipe, '--out', out, '--learning_rate', '1e-4']);
    expect(stdout).toContain(`TRL job written to ${out}`);
    expect((await readdir(out)).sort()).toEqual(['README.md', 'accelerate', 'data', 'requirements.txt', 'reward_bridge.mjs', 'reward_scripts', 'rewards.py', 'rows.py', 'train.py']);
    expect(await readFile(join(out, 'data', 'train.jsonl'), 'utf8')).toBe(await readFile(join(dir, 'train.jsonl'), 'utf8'));
    expect(await readFile(join(out, 'reward_scripts', 'digits.js'), 'utf8')).toBe(await readFile(join(dir, 'rewards', 'digits.js'), 'utf8'));
    const train = await readFile(join(out, 'train.py'), 'utf8');
    expect(train).toContain('"learning_rate": 0.0001,');
    expect(train).toContain('"script": "reward_scripts/digits.js"');
    execFileSync('python3', ['-m', 'py_compile', 'train.py', 'rows.py', 'rewards.py'], { cwd: out });
    // The job's rewards, as train.py lists them, score with the copied file through node (train.py
    // itself needs TRL; its REWARD_FUNCS literal is read as Python reads it).
    const score = execFileSync('python3', ['-c', [
      'import ast, json, rewards',
      'tree = ast.parse(open("train.py").read())',
      'specs = next(ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "REWARD_FUNCS")',
      'funcs = rewards.reward_funcs(specs, ".")',
      'print(json.dumps([f(prompts=["2+2="] * 2, completions=["4", "four"], completion_ids=[[1], [2]], answer=["4", "4"]) for f in funcs]))',
    ].join('\n')], { cwd: out, encoding: 'utf8' }).trim();
    expect(JSON.parse(score)).toEqual([[1, 0], [1, 0]]);
  });

  it('copies init_adapter into the job and replaces an earlier export whole', async () => {
    const recipe = await recipeFile('dpo.json', { model: 'm', method: 'dpo', train_file: join(dir, 'pairs.jsonl'), init_adapter: INIT_ADAPTER, peft: { r: 4, lora_alpha: 8 } });
    const out = join(dir, 'dpo-job');
    await exportTrlCommand([recipe, '--out', out]);
    for (const name of ['adapter_config.json', 'adapter_model.safetensors']) {
      expect(await readFile(join(out, 'init_adapter', name))).toEqual(await readFile(join(INIT_ADAPTER, name)));
    }
    await writeFile(join(out, 'stale.txt'), 'from before');
    await exportTrlCommand([recipe, '--out', out, '--beta', '0.3']);
    expect(existsSync(join(out, 'stale.txt'))).toBe(false);
    expect(await readFile(join(out, 'train.py'), 'utf8')).toContain('"beta": 0.3,');
  });

  it('refuses bad input with one sentence naming the file or field, and writes nothing', async () => {
    const good = await recipeFile('sft.json', { model: 'm', train_file: join(dir, 'train.jsonl') });
    const out = join(dir, 'never');
    expect((await refused([good]))?.message).toBe('finetune export-trl: --out is required.');
    expect((await refused(['--out', out]))?.message).toContain('give the recipe file');
    expect((await refused([join(dir, 'missing.json'), '--out', out]))?.message).toBe(`${join(dir, 'missing.json')}: no such file (the recipe).`);
    const noData = await recipeFile('nodata.json', { model: 'm', train_file: join(dir, 'absent.jsonl') });
    expect((await refused([noData, '--out', out]))?.message).toBe(`${join(dir, 'absent.jsonl')}: no such file (the train_file).`);
    expect((await refused([good, '--out', out, '--learning_rte', '1']))?.field).toBe('learning_rte');
    const badField = await recipeFile('bad.json', { model: 'm', train_file: join(dir, 'train.jsonl'), peft: { r: 0 } });
    expect((await refused([badField, '--out', out]))?.field).toBe('peft.r');
    const noScript = await recipeFile('noscript.json', { model: 'm', method: 'grpo', train_file: join(dir, 'train.jsonl'), reward_funcs: [join(dir, 'nope.js')] });
    expect((await refused([noScript, '--out', out]))?.message).toBe(`${join(dir, 'nope.js')}: no such file (the reward function in reward_funcs).`);
    const noAdapter = await recipeFile('noadapter.json', { model: 'm', train_file: join(dir, 'train.jsonl'), init_adapter: join(dir, 'no-adapter') });
    expect((await refused([noAdapter, '--out', out]))?.field).toBe('init_adapter');
    expect(existsSync(out)).toBe(false);

    // A folder of other files would be deleted with the job, and a file is no folder.
    const project = join(dir, 'project');
    await mkdir(project);
    await writeFile(join(project, 'notes.txt'), 'mine');
    expect((await refused([good, '--out', project]))?.message).toContain('is a folder with other files in it');
    expect(await readFile(join(project, 'notes.txt'), 'utf8')).toBe('mine');
    expect((await refused([good, '--out', join(dir, 'train.jsonl')]))?.field).toBe('--out');
    expect(stderr).toBe('');
  });
});

describe('finetune export-trl as a command', () => {
  it('is routed by the finetune binary: a job folder and exit 0, a missing --out exit 2 with one sentence', async () => {
    const { finetune, STORIES } = await import('./helpers/cli.ts');
    await writeFile(join(dir, 'sft.json'), JSON.stringify({ model: STORIES, train_file: 'train.jsonl', max_steps: 2 }));
    const ok = finetune(['export-trl', 'sft.json', '--out', 'spawned_job'], dir);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toContain('TRL job written to spawned_job');
    expect(existsSync(join(dir, 'spawned_job', 'train.py'))).toBe(true);
    const bad = finetune(['export-trl', 'sft.json'], dir);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toBe('finetune export-trl: --out is required.');
  });
});
