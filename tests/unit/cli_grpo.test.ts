// GRPO from the command line: `finetune data --method grpo --dump`, `finetune train` with built-in
// and JavaScript rewards (run in a child process), the rollout log, and the sentences that stop a
// run before anything is written (a reward file missing, not parsing, exporting no function; no reward).
import { beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { finetune, STORIES } from './helpers/cli.ts';

const PROMPTS = ['Once upon a time', 'Tom had a', 'Lily saw a', 'The sun was'];

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'finetune-grpo-'));
  writeFileSync(join(dir, 'prompts.jsonl'), PROMPTS.map((p, i) => JSON.stringify({ prompt: p, answer: i, topic: ['cat', 'dog'][i % 2] })).join('\n') + '\n');
  writeFileSync(join(dir, 'chat.jsonl'), JSON.stringify({ prompt: [{ role: 'user', content: 'Hi' }] }) + '\n');
  mkdirSync(join(dir, 'rewards'));
  // A reward in TRL's shape: one number per completion, from the completions and a dataset column.
  writeFileSync(join(dir, 'rewards/mentions.js'), `export default function mentions_topic(prompts, completions, columns) {
  return completions.map((c, i) => (c.includes(columns.topic[i]) ? 1 : 0) + (columns.completion_ids[i].length > 0 ? 0 : -1));
}
`);
  writeFileSync(join(dir, 'rewards/throws.js'), 'export default () => { throw new Error("no luck"); };\n');
  writeFileSync(join(dir, 'rewards/broken.js'), 'export default function (prompts, completions {\n');
  writeFileSync(join(dir, 'rewards/nothing.js'), 'export const x = 1;\n');
});

function recipe(name: string, extra: Record<string, unknown>): string {
  const path = join(dir, `${name}.json`);
  writeFileSync(path, JSON.stringify({
    model: STORIES, train_file: 'prompts.jsonl', output_dir: `out-${name}`, method: 'grpo',
    num_generations: 2, per_device_train_batch_size: 4, max_completion_length: 6, max_steps: 2, save_steps: 1,
    learning_rate: 1e-3, peft: { r: 4, lora_dropout: 0 }, ...extra,
  }));
  return `${name}.json`;
}

describe('finetune data --method grpo', () => {
  it('shows the prompts and their columns, and dumps prompt_ids with every other column', () => {
    const r = finetune(['data', 'prompts.jsonl', '--method', 'grpo', '--model', STORIES, '--dump', 'prompts_dump.jsonl'], dir);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('prompts.jsonl: prompts without completions for GRPO, 4 rows');
    expect(r.stdout).toContain('prompts 4, dropped 0, truncated 0');
    expect(r.stdout).toContain('columns for the reward functions: answer, topic');
    const rows = readFileSync(join(dir, 'prompts_dump.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(rows).toHaveLength(4);
    expect(Object.keys(rows[0])).toEqual(['prompt_ids', 'answer', 'topic']);
    expect(rows[0].prompt_ids[0]).toBe(1);
    expect(rows.map((row) => row.topic)).toEqual(['cat', 'dog', 'cat', 'dog']);
  });
});

describe('finetune train with method grpo', () => {
  it('trains with a JavaScript and a built-in reward, logs TRL\'s metrics and every completion', () => {
    const r = finetune(['train', recipe('mixed', { reward_funcs: ['rewards/mentions.js', { name: 'length', target: 20 }], reward_weights: [1, 0.5] })], dir);
    expect(r.stderr).not.toContain('warning');
    expect(r.code).toBe(0);
    const out = join(dir, 'out-mixed');
    const metrics = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(metrics).toHaveLength(2);
    expect(metrics[0]).toHaveProperty(['rewards/mentions_topic/mean']);
    expect(metrics[0]).toHaveProperty(['rewards/length/std']);
    const records = readFileSync(join(out, 'completions.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(records).toHaveLength(8);
    expect(Object.keys(records[0])).toEqual(['step', 'prompt', 'completion', 'prompt_ids', 'completion_ids', 'rewards', 'reward', 'advantage', 'truncated']);
    for (const rec of records) {
      expect(Object.keys(rec.rewards)).toEqual(['mentions_topic', 'length']);
      expect(rec.reward).toBeCloseTo(rec.rewards.mentions_topic + 0.5 * rec.rewards.length, 6);
      expect(PROMPTS).toContain(rec.prompt);
    }
    expect(existsSync(join(out, 'adapter_model.safetensors'))).toBe(true);
    expect(existsSync(join(out, 'checkpoint-1', 'trainer_state.json'))).toBe(true);
  });

  it('turns a reward function that throws into no reward and one warning, and trains on', () => {
    const r = finetune(['train', recipe('throws', { reward_funcs: ['rewards/throws.js', { name: 'length', target: 20 }] })], dir);
    expect(r.code).toBe(0);
    expect(r.stderr.match(/warning: Reward function "throws" \(rewards\/throws\.js\) threw Error: no luck, so it gives no reward to this batch\./g)).toHaveLength(1);
    const records = readFileSync(join(dir, 'out-throws', 'completions.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(records.every((rec) => rec.rewards.throws === null && typeof rec.rewards.length === 'number')).toBe(true);
  });

  it.each([
    ['a reward file that does not exist', { reward_funcs: ['rewards/missing.js'] }, 'rewards/missing.js: no such file (the reward function in reward_funcs).'],
    ['a reward file that does not parse', { reward_funcs: ['rewards/broken.js'] }, 'rewards/broken.js'],
    ['a reward file that exports no function', { reward_funcs: ['rewards/nothing.js'] }, 'rewards/nothing.js'],
    ['no reward function', { reward_funcs: [] }, '"reward_funcs" must be a list of reward functions'],
    ['a batch that is not whole groups', { reward_funcs: [{ name: 'json' }], per_device_train_batch_size: 3 }, 'must be a multiple of 2 (got 3)'],
  ])('refuses %s in one sentence before anything is written', (name, extra, words) => {
    const file = recipe(`bad-${name.replace(/\W+/g, '-')}`, extra);
    const r = finetune(['train', file], dir);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(words);
    expect(r.stderr.trim().split('\n').filter((l) => l.trim() !== '')).toHaveLength(1);
    expect(existsSync(join(dir, `out-${file.replace('.json', '')}`))).toBe(false);
  });

  it('refuses eval for GRPO with the way to sample instead', () => {
    const r = finetune(['eval', '--method', 'grpo', '--data', 'prompts.jsonl', '--model', STORIES], dir);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('GRPO has no loss to evaluate on a file');
  });
});
