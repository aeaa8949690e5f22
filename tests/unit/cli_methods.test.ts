// The preference methods from the command line: `finetune data --method`, `finetune eval --method
// --json`, and the one-sentence refusals (a file of the wrong shape, a method the recipe cannot run).
import { beforeAll, describe, expect, it } from 'vitest';
import { finetune, STORIES } from './helpers/cli.ts';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';



const NAMES = ['Lily', 'Tom', 'Ben', 'Sue'];
const PAIRS = NAMES.map((n) => ({ prompt: `Once upon a time, ${n} went to the park.`, chosen: ` ${n} was very happy.`, rejected: ` ${n} was very sad.` }));
const KTO = NAMES.flatMap((n, i) => [{ prompt: `${n} had a ball.`, completion: ` ${n} was happy.`, label: true }, { prompt: `${n} had a cat.`, completion: ` ${n} was sad.`, label: i % 2 === 0 && false }]);

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'finetune-methods-'));
  const jsonl = (rows: unknown[]) => rows.map((r) => JSON.stringify(r)).join('\n') + '\n';
  writeFileSync(join(dir, 'pairs.jsonl'), jsonl(PAIRS));
  writeFileSync(join(dir, 'kto.jsonl'), jsonl(KTO));
  writeFileSync(join(dir, 'text.jsonl'), jsonl([{ text: 'Once upon a time.' }, { text: 'The end.' }]));
  writeFileSync(join(dir, 'half.jsonl'), jsonl([PAIRS[0], { prompt: 'A', chosen: 'B' }]));
});

describe('finetune data --method', () => {
  it('shows pairs for DPO and dumps exactly what is trained, -100 on the prompt', () => {
    const r = finetune(['data', 'pairs.jsonl', '--method', 'dpo', '--model', STORIES, '--dump', 'pairs_dump.jsonl'], dir);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('pairs.jsonl: preference pairs for DPO, 4 rows');
    expect(r.stdout).toMatch(/pairs 4, dropped 0, truncated 0/);
    const rows = readFileSync(join(dir, 'pairs_dump.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(rows).toHaveLength(4);
    for (const row of rows) {
      expect(Object.keys(row).sort()).toEqual(['chosen_input_ids', 'chosen_labels', 'rejected_input_ids', 'rejected_labels']);
      const prompt = row.chosen_labels.findIndex((l: number) => l !== -100);
      // The prompt is shared: the same ids, masked in both; the completions are trained, EOS last.
      expect(row.rejected_input_ids.slice(0, prompt)).toEqual(row.chosen_input_ids.slice(0, prompt));
      expect(row.rejected_labels.slice(0, prompt).every((l: number) => l === -100)).toBe(true);
      expect(row.chosen_labels.slice(prompt)).toEqual(row.chosen_input_ids.slice(prompt));
      expect(row.chosen_input_ids.at(-1)).toBe(2);
    }
  });

  it('shows KTO rows with their labels and dumps input_ids, labels and label', () => {
    const r = finetune(['data', 'kto.jsonl', '--method', 'kto', '--model', STORIES, '--dump', 'kto_dump.jsonl'], dir);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('examples 8 (4 desirable, 4 undesirable)');
    const rows = readFileSync(join(dir, 'kto_dump.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(rows.map((row) => row.label)).toEqual(KTO.map((row) => row.label));
    expect(Object.keys(rows[0]).sort()).toEqual(['input_ids', 'label', 'labels']);
  });

  it('names each bad row for the method and exits non-zero', () => {
    const r = finetune(['data', 'half.jsonl', '--method', 'dpo', '--model', STORIES], dir);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('bad row: half.jsonl, line 2: "rejected" is missing');
  });
});

describe('finetune eval --method', () => {
  it('reports DPO\'s loss and metrics as JSON; the base model is its own reference', () => {
    const r = finetune(['eval', '--method', 'dpo', '--model', STORIES, '--data', 'pairs.jsonl', '--json', '--backend', 'cpu'], dir);
    expect(r.code).toBe(0);
    const result = JSON.parse(r.stdout);
    expect(result).toMatchObject({ num_examples: 4 });
    expect(result.loss).toBeCloseTo(Math.log(2), 6);
    expect(Object.keys(result.metrics).sort()).toEqual(['logps/chosen', 'logps/rejected', 'rewards/accuracies', 'rewards/chosen', 'rewards/margins', 'rewards/rejected']);
    expect(result.metrics['rewards/margins']).toBe(0);
    expect(result.metrics['logps/chosen']).toBeLessThan(0);
  });

  it('takes the method\'s own flags: SimPO with --beta and --simpo_gamma', () => {
    const r = finetune(['eval', '--method', 'simpo', '--beta', '2', '--simpo_gamma', '0.5', '--model', STORIES, '--data', 'pairs.jsonl', '--json', '--backend', 'cpu'], dir);
    expect(r.code).toBe(0);
    const result = JSON.parse(r.stdout);
    // −log σ(β·(lc − lr) − γ), averaged: a number the margins reproduce.
    const m = result.metrics['rewards/margins'];
    expect(result.loss).toBeGreaterThan(0);
    expect(Number.isFinite(m)).toBe(true);
  });

  it('refuses a file of the wrong shape for the method in one sentence, exit 2', () => {
    const r = finetune(['eval', '--method', 'dpo', '--model', STORIES, '--data', 'text.jsonl', '--backend', 'cpu'], dir);
    expect(r.code).toBe(2);
    expect(r.stderr.split('\n').filter((l) => !l.startsWith('Backend'))).toHaveLength(1);
    expect(r.stderr).toMatch(/^text\.jsonl: DPO needs preference pairs/m);
  });

  it('refuses an unknown method and a flag of another method', () => {
    expect(finetune(['eval', '--method', 'ppo', '--model', STORIES, '--data', 'pairs.jsonl'], dir)).toMatchObject({ code: 2, stderr: 'finetune eval: --method must be one of sft, dpo, kto, orpo, simpo, grpo (got "ppo").' });
    const r = finetune(['eval', '--method', 'dpo', '--simpo_gamma', '1', '--model', STORIES, '--data', 'pairs.jsonl'], dir);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('"simpo_gamma" applies to method "simpo" only, not "dpo"');
  });
});

describe('finetune train with a method', () => {
  it('refuses DPO on full weights in one sentence before writing anything', () => {
    writeFileSync(join(dir, 'full.json'), JSON.stringify({ model: STORIES, train_file: 'pairs.jsonl', method: 'dpo', output_dir: 'full_out', peft: { type: 'full' } }));
    const r = finetune(['train', 'full.json', '--backend', 'cpu'], dir);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/DPO compares the model with its reference, the same weights with the LoRA adapter switched off; with peft\.type "full"/);
    expect(existsSync(join(dir, 'full_out'))).toBe(false);
  });

  it('trains KTO and logs its metrics with TRL\'s names', () => {
    writeFileSync(join(dir, 'kto.json'), JSON.stringify({ model: STORIES, train_file: 'kto.jsonl', method: 'kto', output_dir: 'kto_out', max_steps: 2, per_device_train_batch_size: 4, learning_rate: 0.005, peft: { r: 4, lora_dropout: 0 } }));
    const r = finetune(['train', 'kto.json', '--backend', 'cpu'], dir);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/Training lora KTO on 8 examples/);
    const metrics = readFileSync(join(dir, 'kto_out', 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(metrics).toHaveLength(2);
    for (const m of metrics) {
      expect(m.kind).toBe('train');
      for (const k of ['loss', 'kl', 'rewards/chosen', 'rewards/rejected', 'logps/chosen', 'logps/rejected', 'rewards/margins']) expect(Number.isFinite(m[k]), k).toBe(true);
    }
    const recipe = JSON.parse(readFileSync(join(dir, 'kto_out', 'recipe.json'), 'utf8'));
    expect(recipe).toMatchObject({ method: 'kto', desirable_weight: 1, undesirable_weight: 1 });
    expect(recipe).not.toHaveProperty('loss_type');
  });
});
