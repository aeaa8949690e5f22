// `finetune export-trl`'s job folder (src/engine/trl_job.ts): every recipe field mapped to TRL or
// listed as not in TRL, every emitted key present in TRL 1.9.0's, PEFT 0.19.1's and transformers'
// classes (tests/fixtures/trl/config_fields.json), train.py compiling for every method, the Python
// rewards and row conversions giving what the studio's TypeScript gives, JavaScript rewards called
// through node as the studio calls them, and the job's output (a PEFT adapter as PEFT 0.19.1 saves
// it, written by tests/reference/trl_job_adapter.py) loading back onto stories260K.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtemp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { nodeFolder } from '../../src/cli/fs_files.ts';
import { toSftRows, type DatasetRow, type SftRow } from '../../src/engine/data/dataset.ts';
import { toPairRows, toPromptRows, toUnpairedRows } from '../../src/engine/data/formats.ts';
import { UserError } from '../../src/engine/errors.ts';
import { loadAdapter } from '../../src/engine/io/peft.ts';
import { METHODS, RECIPE_FIELDS, parseRecipe, recipeField, type Recipe } from '../../src/engine/recipe.ts';
import { recipeToTrlConfig, TRL_CLASSES, trlFieldMapping } from '../../src/engine/recipe/trl.ts';
import { loadModel } from '../../src/engine/run.ts';
import { builtinReward, checkRewardValues } from '../../src/engine/train/rewards.ts';
import { trlFieldTable, trlJobFiles, type TrlJobData } from '../../src/engine/trl_job.ts';

const FIXTURES = fileURLToPath(new URL('../fixtures/trl/', import.meta.url));
const STORIES = fileURLToPath(new URL('../../../shared/models/stories260K', import.meta.url));
const FIELDS = JSON.parse(await readFile(join(FIXTURES, 'config_fields.json'), 'utf8')) as Record<string, string[]>;

const BASE = { model: 'HuggingFaceTB/SmolLM2-135M-Instruct', train_file: 'rows/train.jsonl' };
const LETTERS_JS = 'export default function letters(prompts, completions, columns) {\n  return completions.map((c) => c.length);\n}\n';

/** One recipe of each method and adapter kind, with the optional keys set so that they are emitted. */
const RECIPES: Record<string, Record<string, unknown>> = {
  sft_lora: { ...BASE, eval_file: 'rows/eval.jsonl', eval_steps: 5, resume_from_checkpoint: true, system_prompt: 'Be brief.', peft: { use_rslora: true, target_modules: ['q_proj', 'v_proj'] } },
  sft_freeze: { ...BASE, peft: { type: 'freeze', layers_to_train: 3 }, use_chat_template: false, eval_split: 0.2, shuffle: false },
  dpo_qlora: { ...BASE, method: 'dpo', quantization: { load_in_4bit: true, bnb_4bit_use_double_quant: true }, loss_type: 'ipo', max_prompt_length: 64 },
  kto: { ...BASE, method: 'kto', quantization: { load_in_8bit: true }, desirable_weight: 1.5 },
  orpo: { ...BASE, method: 'orpo', peft: { type: 'full' }, max_completion_length: 32 },
  simpo: { ...BASE, method: 'simpo', init_adapter: 'adapters/start', simpo_gamma: 0.8 },
  grpo: {
    ...BASE,
    method: 'grpo',
    reward_funcs: [{ name: 'accuracy' }, { name: 'format', pattern: '^A\\d+$', flags: 'i' }, { name: 'json' }, { name: 'length', target: 20 }, 'rewards/letters.js'],
    reward_weights: [1, 0.5, 0.5, 0.1, 0.01],
    epsilon_high: 0.28,
    num_generations: 4,
    per_device_train_batch_size: 8,
  },
};

const DATA: TrlJobData = {
  train: { name: 'rows/train.jsonl', text: '{"text": "Once upon a time."}\n' },
  eval: { name: 'rows/eval.jsonl', text: '{"text": "The end."}\n' },
  initAdapter: { 'adapter_config.json': new TextEncoder().encode('{"r": 4}'), 'adapter_model.safetensors': new Uint8Array([1, 2, 3]) },
};

function recipe(name: string): Recipe {
  return parseRecipe(RECIPES[name], `${name}.json`);
}

let work: string;

beforeAll(async () => {
  await tf.setBackend('cpu');
  work = await mkdtemp(join(tmpdir(), 'trl-job-'));
});

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

/** Writes a job folder for a named recipe and returns its path. */
async function writeJob(name: string): Promise<string> {
  const dir = join(work, name);
  const files = trlJobFiles(recipe(name), DATA, { 'rewards/letters.js': LETTERS_JS });
  for (const [path, content] of Object.entries(files)) {
    await mkdir(dirname(join(dir, path)), { recursive: true });
    await writeFile(join(dir, path), content);
  }
  return dir;
}

function python(code: string, cwd: string, input = ''): string {
  return execFileSync('python3', ['-c', code], { cwd, input, encoding: 'utf8' });
}

describe('the field table', () => {
  it('maps every recipe field of every method to TRL, PEFT or bitsandbytes, or says why it is not in TRL', () => {
    const missing: string[] = [];
    for (const path of Object.keys(RECIPE_FIELDS)) {
      for (const method of METHODS) {
        if (recipeField(path, method) === undefined) continue;
        if (trlFieldMapping(path, method) === undefined) missing.push(`${path} (${method})`);
      }
    }
    // A new recipe field needs an entry in src/engine/recipe/trl.ts FIELD_MAP.
    expect(missing).toEqual([]);
  });

  it('names only keys that TRL 1.9.0\'s config classes, LoraConfig and BitsAndBytesConfig have', () => {
    for (const path of Object.keys(RECIPE_FIELDS)) {
      for (const method of METHODS) {
        if (recipeField(path, method) === undefined) continue;
        const m = trlFieldMapping(path, method)!;
        const config = TRL_CLASSES[method].config;
        if ('config' in m) expect([...FIELDS.TrainingArguments, ...FIELDS[config]], `${path} → ${config}.${m.config}`).toContain(m.config);
        if ('lora' in m) expect(FIELDS.LoraConfig).toContain(m.lora);
        if ('bnb' in m) expect(FIELDS.BitsAndBytesConfig).toContain(m.bnb);
      }
    }
  });

  it('says "not in TRL" exactly where TRL 1.x has no such key', () => {
    const none = (method: (typeof METHODS)[number]) =>
      trlFieldTable(parseRecipe({ ...RECIPES[method === 'sft' ? 'sft_lora' : method === 'dpo' ? 'dpo_qlora' : method] }, 'r.json'))
        .filter((row) => 'none' in row.mapping).map((row) => row.field);
    expect(none('sft')).toEqual([]);
    expect(none('dpo')).toEqual(['use_chat_template', 'max_prompt_length', 'max_completion_length']);
    expect(none('kto')).toEqual(['use_chat_template', 'max_prompt_length', 'max_completion_length']);
    expect(none('orpo')).toEqual(['use_chat_template', 'max_prompt_length', 'max_completion_length']);
    expect(none('simpo')).toEqual(['use_chat_template', 'max_prompt_length', 'max_completion_length']);
    expect(none('grpo')).toEqual(['max_length', 'use_chat_template', 'max_prompt_length']);
  });
});

describe('recipeToTrlConfig against TRL 1.9.0', () => {
  it.each(Object.keys(RECIPES))('%s: every key it emits exists in its classes, and every set field mapped to the config is emitted', (name) => {
    const r = recipe(name);
    const trl = recipeToTrlConfig(r);
    const accepted = new Set([...FIELDS.TrainingArguments, ...FIELDS[trl.config_class]]);
    expect(Object.keys(trl.config).filter((k) => !accepted.has(k))).toEqual([]);
    if (trl.lora_config) expect(Object.keys(trl.lora_config).filter((k) => !FIELDS.LoraConfig.includes(k))).toEqual([]);
    if (trl.bnb_config) expect(Object.keys(trl.bnb_config).filter((k) => !FIELDS.BitsAndBytesConfig.includes(k))).toEqual([]);
    for (const row of trlFieldTable(r)) {
      if ('config' in row.mapping && row.value !== null && row.value !== undefined) expect(trl.config, row.field).toHaveProperty(row.mapping.config);
    }
  });

  it('takes the sampler, dropout and loss keys TRL 1.9.0 needs', () => {
    expect(recipeToTrlConfig(recipe('kto')).config).toMatchObject({ train_sampling_strategy: 'sequential', disable_dropout: false });
    expect(recipeToTrlConfig(parseRecipe({ ...RECIPES.kto, shuffle: false }, 'r.json')).config.train_sampling_strategy).toBe('sequential');
    const grpo = recipeToTrlConfig(recipe('grpo')).config;
    expect(grpo).toMatchObject({ shuffle_dataset: true, epsilon_high: 0.28, reward_weights: [1, 0.5, 0.5, 0.1, 0.01] });
    expect(grpo).not.toHaveProperty('train_sampling_strategy');
    expect(grpo).not.toHaveProperty('max_length');
    expect(recipeToTrlConfig(recipe('dpo_qlora')).config).not.toHaveProperty('max_prompt_length');
    expect(recipeToTrlConfig(recipe('orpo')).config).not.toHaveProperty('max_completion_length');
    expect(recipeToTrlConfig(recipe('simpo'))).toMatchObject({ trainer: 'CPOTrainer', config: { loss_type: 'simpo', cpo_alpha: 0, simpo_gamma: 0.8, disable_dropout: false } });
  });
});

describe('the job folder', () => {
  it.each(Object.keys(RECIPES))('%s: train.py, rows.py and rewards.py compile with python3', async (name) => {
    const dir = await writeJob(name);
    const py = ['train.py', 'rows.py', ...(name === 'grpo' ? ['rewards.py'] : [])];
    execFileSync('python3', ['-m', 'py_compile', ...py], { cwd: dir });
    const train = await readFile(join(dir, 'train.py'), 'utf8');
    const { trainer, config, module } = TRL_CLASSES[recipe(name).method];
    expect(train).toContain(`from ${module} import ${config}, ${trainer}`);
    expect(train).toContain(`trainer = ${trainer}(`);
  });

  it('compiles whatever the recipe\'s strings hold: backslashes, quotes, line breaks', async () => {
    const odd = parseRecipe({ ...BASE, model: 'C:\\new\\x"""\\N', system_prompt: 'Say """hi"""\n\\u', output_dir: 'out\\"q' }, 'odd.json');
    const dir = join(work, 'odd');
    const files = trlJobFiles(odd, { train: { name: 'a\nb.jsonl', text: '' } });
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'train.py'), files['train.py']);
    execFileSync('python3', ['-m', 'py_compile', 'train.py'], { cwd: dir });
    const values = python('import ast\ntree = ast.parse(open("train.py").read())\nprint(repr([ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id in ("MODEL", "SYSTEM_PROMPT")]))', dir);
    expect(values.trim()).toBe(String.raw`['C:\\new\\x"""\\N', 'Say """hi"""\n\\u']`);
  });

  it('copies the data, reward and adapter files and lays out the folder', async () => {
    const sft = trlJobFiles(recipe('sft_lora'), DATA);
    expect(Object.keys(sft).sort()).toEqual([
      'README.md', 'accelerate/deepspeed_zero3.yaml', 'accelerate/fsdp.yaml', 'accelerate/multi_gpu.yaml', 'accelerate/single_gpu.yaml',
      'data/eval.jsonl', 'data/train.jsonl', 'requirements.txt', 'rows.py', 'train.py',
    ]);
    expect(sft['data/train.jsonl']).toBe(DATA.train.text);
    expect(sft['data/eval.jsonl']).toBe(DATA.eval!.text);
    const grpo = trlJobFiles(recipe('grpo'), DATA, { 'rewards/letters.js': LETTERS_JS });
    expect(grpo['reward_scripts/letters.js']).toBe(LETTERS_JS);
    expect(grpo['reward_scripts/package.json']).toBe('{ "type": "module" }\n');
    expect(Object.keys(grpo)).toEqual(expect.arrayContaining(['rewards.py', 'reward_bridge.mjs']));
    const simpo = trlJobFiles(recipe('simpo'), DATA);
    expect(simpo['init_adapter/adapter_model.safetensors']).toEqual(new Uint8Array([1, 2, 3]));
    expect(simpo['train.py']).toContain('INIT_ADAPTER = "init_adapter"');
    // A JSON array stays .json; two reward files of one name both come along.
    const twin = parseRecipe({ ...RECIPES.grpo, reward_funcs: ['a/score.js', 'b/score.js'], reward_weights: null }, 'r.json');
    const files = trlJobFiles(twin, { train: { name: 'rows.json', text: '[]' } }, { 'a/score.js': 'a', 'b/score.js': 'b' });
    expect([files['reward_scripts/score.js'], files['reward_scripts/2_score.js'], files['data/train.json']]).toEqual(['a', 'b', '[]']);
  });

  it('refuses, naming the field, a file the recipe needs that was not given', () => {
    const refused = (fn: () => unknown) => {
      try {
        fn();
      } catch (e) {
        expect(e).toBeInstanceOf(UserError);
        return (e as UserError).field;
      }
      return null;
    };
    expect(refused(() => trlJobFiles(recipe('sft_lora'), { train: DATA.train }))).toBe('eval_file');
    expect(refused(() => trlJobFiles(recipe('simpo'), { train: DATA.train }))).toBe('init_adapter');
    expect(refused(() => trlJobFiles(recipe('grpo'), DATA, {}))).toBe('reward_funcs');
  });

  it('writes the README with the launch lines, the output, every field, and what is not in TRL', () => {
    const readme = trlJobFiles(recipe('dpo_qlora'), DATA)['README.md'] as string;
    for (const file of ['single_gpu', 'multi_gpu', 'fsdp', 'deepspeed_zero3']) expect(readme).toMatch(new RegExp(`accelerate launch --config_file accelerate/${file}\\.yaml.* train\\.py`));
    expect(readme).toContain('PEFT adapter (adapter_config.json, adapter_model.safetensors) that the studio loads back');
    expect(readme).toContain('- `max_prompt_length` = `64`: TRL 1.x removed the prompt cut');
    expect(readme).toContain('- `max_completion_length` = `null`:');
    for (const row of trlFieldTable(recipe('dpo_qlora'))) expect(readme).toContain(`| \`${row.field}\` |`);
    expect(readme).toContain('bnb_4bit_quant_storage');
    const requirements = trlJobFiles(recipe('dpo_qlora'), DATA)['requirements.txt'] as string;
    expect(requirements).toMatch(/^trl==1\.9\.0$/m);
    expect(requirements).toMatch(/^bitsandbytes==0\.49\.2$/m);
    expect(trlJobFiles(recipe('orpo'), DATA)['requirements.txt']).not.toContain('bitsandbytes');
    expect(trlJobFiles(recipe('orpo'), DATA)['README.md']).toContain('the whole model in the Hugging Face layout');
  });
});

describe('rows.py', () => {
  const rows = (values: Record<string, unknown>[]): DatasetRow[] => values.map((value, i) => ({ line: i + 1, value }));
  /** rows.py's function over each row, in python3. */
  function pythonRows(fn: string, values: unknown[], args: string): unknown[] {
    const code = `import json, sys, rows\nprint(json.dumps([rows.${fn}(r, ${args}) for r in json.load(sys.stdin)]))`;
    return JSON.parse(python(code, work + '/sft_lora', JSON.stringify(values)));
  }
  const trlShape = (r: SftRow) =>
    r.kind === 'text' ? { text: r.text } : r.kind === 'messages' ? { messages: r.messages } : { prompt: r.prompt, completion: r.completion };

  it('turns SFT rows into what SFTTrainer reads, as the studio converts them', async () => {
    await writeJob('sft_lora');
    const system = 'Be brief.';
    const samples: [string, Record<string, unknown>[]][] = [
      ['messages', [{ messages: [{ role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Hello' }] }, { messages: [{ role: 'system', content: 'Own.' }, { role: 'user', content: 'Q' }] }]],
      ['sharegpt', [{ conversations: [{ from: 'human', value: 'Hi' }, { from: 'gpt', value: 'Yo' }, { from: 'Model', value: 'Again' }] }]],
      ['alpaca', [{ instruction: 'Add', input: '2 and 2', output: '4' }, { instruction: 'Greet', output: 'Hello' }]],
      ['prompt_completion', [{ prompt: 'Q: ', completion: 'A' }, { prompt: [{ role: 'user', content: 'Q' }], completion: [{ role: 'assistant', content: 'A' }] }]],
      ['text', [{ text: 'Once upon a time.' }]],
    ];
    for (const [format, values] of samples) {
      const studio = toSftRows(rows(values), format as never, 'f.jsonl', { system_prompt: system }).rows.map(trlShape);
      expect(pythonRows('sft_row', values, `"${system}", True`), format).toEqual(studio);
    }
    // use_chat_template false: contents joined by newlines, prompt and completion kept apart (sft.ts).
    expect(pythonRows('sft_row', [samples[0][1][0], samples[2][1][0]], 'None, False')).toEqual([
      { text: 'Hi\nHello' },
      { prompt: 'Add\n\n2 and 2\n', completion: '4' },
    ]);
  });

  it('extracts and unpairs preference rows and keeps GRPO\'s columns as the studio does', async () => {
    const system = 'Sys.';
    const pairs = [
      { prompt: 'The sky is', chosen: ' blue.', rejected: ' green.' },
      { chosen: 'The sky is blue.', rejected: 'The sky is green.' },
      { chosen: [{ role: 'user', content: 'Sky?' }, { role: 'assistant', content: 'Blue' }], rejected: [{ role: 'user', content: 'Sky?' }, { role: 'assistant', content: 'Green' }] },
      { prompt: 'Sky?', chosen: [{ role: 'user', content: 'Sky?' }, { role: 'assistant', content: 'Blue' }], rejected: [{ role: 'user', content: 'Sky?' }, { role: 'assistant', content: 'Red' }] },
    ];
    const studioPairs = toPairRows(rows(pairs), 'p.jsonl', { system_prompt: system }).rows.map(({ prompt, chosen, rejected }) => ({ prompt, chosen, rejected }));
    expect(pythonRows('pair_row', pairs, `"${system}"`)).toEqual(studioPairs);

    const kto = [...pairs.slice(0, 2), { prompt: [{ role: 'user', content: 'Hi' }], completion: [{ role: 'assistant', content: 'Yo' }], label: false }];
    const studioKto = toUnpairedRows(rows(kto), 'k.jsonl', { system_prompt: system }).rows.map(({ prompt, completion, label }) => ({ prompt, completion, label }));
    expect(pythonRows('kto_rows', kto, `"${system}"`).flat()).toEqual(studioKto);

    const prompts = [{ prompt: [{ role: 'user', content: '2+2?' }], answer: '4' }, { prompt: 'Text prompt', answer: 5 }];
    const studioPrompts = toPromptRows(rows(prompts), 'g.jsonl', { system_prompt: system }).rows.map(({ prompt, columns }) => ({ prompt, ...columns }));
    expect(pythonRows('prompt_row', prompts, `"${system}"`)).toEqual(studioPrompts);
  });
});

describe('rewards.py', () => {
  /** Each built-in in python3 (rewards.py, standard library only) over the same completions and columns. */
  function pythonRewards(cases: { spec: Record<string, unknown>; completions: string[]; columns: Record<string, unknown>[] }[], dir: string): unknown[] {
    const code = [
      'import json, sys, rewards',
      'out = []',
      'for case in json.load(sys.stdin):',
      '    options = {k: v for k, v in case["spec"].items() if k != "name"}',
      '    out.append(rewards.BUILTINS[case["spec"]["name"]](**options)(case["completions"], case["columns"]))',
      'print(json.dumps(out))',
    ].join('\n');
    return JSON.parse(python(code, dir, JSON.stringify(cases)));
  }

  it('gives the studio\'s values for the built-in accuracy, format, json and length rewards', async () => {
    const dir = await writeJob('grpo');
    const answers = [
      'The answer is \\boxed{72}.', '<think>3 * 24</think><answer>72</answer>', 'So 70 + 2.\n#### 72', 'Answer: 72 apples', 'It is 71.',
      'Total: 1,000', 'It costs $1000.00', '\\boxed{\\frac{63}{400}}', '0.1575', 'answer:  Paris.', 'The capital is Paris', '', 'x = -3.5', '1e-7',
    ];
    const golds: Record<string, unknown>[] = [
      { answer: '72' }, { answer: 72 }, { solution: 'We get #### 72' }, { answer: 72.0 }, { answer: '72' },
      { answer: '1000' }, { answer: '$1,000' }, { answer: '63/400' }, { solution: '\\boxed{\\frac{63}{400}}' }, { answer: 'paris' }, { answer: 'Paris' }, {}, { answer: -3.5 }, { answer: 1e-7 },
    ];
    const texts = ['<think>a</think><answer>b</answer>', '<think>a</think>\n<answer>b</answer>\n', '<think>a</think><think>b</think><answer>c</answer>', '<answer>b</answer>', 'a2', 'A12', 'A12\n', 'xA1', 'a12 ', '{"a": 1}', '```json\n{"a": 1}\n```', 'Sure:\n```\n[1, 2]\n```', 'NaN', '{"a": 1', '  7  ', 'naïve café', '😀😀'];
    const cases = [
      { spec: { name: 'accuracy' }, completions: answers, columns: golds },
      { spec: { name: 'accuracy', column: 'solution' }, completions: answers, columns: golds },
      { spec: { name: 'format' }, completions: texts, columns: texts.map(() => ({})) },
      { spec: { name: 'format', pattern: '^A\\d+$', flags: 'i' }, completions: texts, columns: texts.map(() => ({})) },
      { spec: { name: 'format', pattern: '[\\s\\S]*?</think>\\s*<answer>', flags: 's' }, completions: texts, columns: texts.map(() => ({})) },
      { spec: { name: 'format', pattern: '\\d\\s$' }, completions: texts, columns: texts.map(() => ({})) },
      { spec: { name: 'json' }, completions: texts, columns: texts.map(() => ({})) },
      { spec: { name: 'length', target: 5 }, completions: texts, columns: texts.map(() => ({})) },
    ];
    const studio = cases.map((c) => builtinReward(c.spec as never)(c.completions.map(() => ''), c.completions, c.columns));
    expect(pythonRewards(cases, dir)).toEqual(studio);
    // Not all equal: the cases tell right from wrong.
    expect(new Set(studio[0])).toEqual(new Set([0, 1, null]));
  });

  it('calls a JavaScript reward through node as the studio does: export name, columns, completion_ids, and the same warnings', async () => {
    const dir = await writeJob('grpo');
    await writeFile(join(dir, 'reward_scripts/odd.js'), [
      'export default (prompts, completions, columns) =>',
      '  completions.map((c, i) => (i === 0 ? c.length + columns.completion_ids[i].length + columns.answer[i].length : i === 1 ? NaN : i === 2 ? "x" : null));',
      '',
    ].join('\n'));
    const code = [
      'import json, rewards',
      'funcs = rewards.reward_funcs([{"script": "reward_scripts/letters.js", "source": "rewards/letters.js"}, {"script": "reward_scripts/odd.js", "source": "rules/odd.js"}, {"name": "length", "target": 2}], ".")',
      'prompts = [[{"role": "user", "content": "Hi"}]] * 4',
      'completions = [[{"role": "assistant", "content": t}] for t in ["ab", "abc", "", "abcd"]]',
      'kwargs = {"answer": ["1", "2", "3", "4"], "trainer_state": object(), "log_metric": print}',
      'print(json.dumps([[f.__name__ for f in funcs]] + [f(prompts=prompts, completions=completions, completion_ids=[[5, 6], [7], [], [8]], **kwargs) for f in funcs]))',
    ].join('\n');
    const run = spawnSync('python3', ['-c', code], { cwd: dir, encoding: 'utf8' });
    expect(run.status, run.stderr).toBe(0);
    const [names, letters, odd, length] = JSON.parse(run.stdout) as [string[], ...unknown[][]];
    // letters by its function's name, the arrow function by its file's name (rewardFunctionName).
    expect(names).toEqual(['letters', 'odd', 'length']);
    expect(letters).toEqual([2, 3, 0, 4]);
    expect(odd).toEqual([2 + 2 + 1, null, null, null]);
    expect(length).toEqual(builtinReward({ name: 'length', target: 2 })([], ['ab', 'abc', '', 'abcd'], []));
    expect(run.stderr).toBe(`warning: ${checkRewardValues('odd', [5, Number.NaN, 'x', null], 4).warnings[0]}\n`);
  });

  it('warns in the studio\'s words about values it cannot use', async () => {
    const dir = await writeJob('grpo');
    const code = [
      'import json, rewards',
      'cases = [[1, {"$": "number", "v": "NaN"}, "x", None], {"$": "undefined"}, [1], {"$": "list", "v": [True, 2, {"$": "object"}]}]',
      'print(json.dumps([rewards.check_reward_values("f", c, 3 if i > 0 else 4) for i, c in enumerate(cases)]))',
    ].join('\n');
    const python_ = JSON.parse(python(code, dir)) as [unknown[], string[]][];
    const studio = [
      checkRewardValues('f', [1, Number.NaN, 'x', null], 4),
      checkRewardValues('f', undefined, 3),
      checkRewardValues('f', [1], 3),
      checkRewardValues('f', [true, 2, {}], 3),
    ];
    expect(python_.map(([values, warnings]) => ({ values, warnings }))).toEqual(studio);
  });
});

describe('the job\'s output', () => {
  it('is a PEFT 0.19.1 adapter that loads back onto stories260K with the reference logits', async () => {
    const expected = JSON.parse(await readFile(join(FIXTURES, 'job_adapter_expected.json'), 'utf8')) as { ids: number[]; logits: number[][] };
    const { model } = await loadModel(nodeFolder(STORIES));
    const adapter = await loadAdapter(model, nodeFolder(join(FIXTURES, 'job_adapter')));
    expect(adapter.config).toMatchObject({ r: 8, lora_alpha: 16, use_rslora: true, lora_dropout: 0.05 });
    const run = async (withAdapter: boolean) => {
      const t = tf.tidy(() => model.logits(model.forward(tf.tensor2d([expected.ids], undefined, 'int32'), { adapter: withAdapter ? adapter : null })));
      const data = Array.from((await t.data()) as Float32Array);
      t.dispose();
      return data;
    };
    const want = expected.logits.flat();
    const diff = (a: number[]) => Math.max(...a.map((v, i) => Math.abs(v - want[i])));
    expect(diff(await run(true))).toBeLessThan(1e-4);
    // Without the adapter the logits are far off, so the comparison above measures the adapter.
    expect(diff(await run(false))).toBeGreaterThan(1);
    adapter.dispose();
    model.dispose();
  });
});
