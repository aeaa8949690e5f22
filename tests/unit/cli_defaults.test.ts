// What `finetune` does when nothing is said: the backend it picks and says it picked, the counts
// and logging of a short run, the data report's numbers; and data files it must refuse (empty,
// not UTF-8) with one line. Real processes, real files, the real stories260K model.
import { beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { STORIES_DIR } from './helpers/tiny_model.ts';

const BIN = fileURLToPath(new URL('../../bin/finetune.js', import.meta.url));

let dir: string;
function finetune(args: string[]) {
  const r = spawnSync(process.execPath, [BIN, ...args], { cwd: dir, encoding: 'utf8', env: { ...process.env, FORCE_COLOR: '0' } });
  return { code: r.status, stdout: r.stdout.trim(), stderr: r.stderr.trim() };
}

function expectOneLine(r: { code: number | null; stdout: string; stderr: string }, message: RegExp): void {
  expect(r.stderr).toMatch(message);
  expect(r.stderr.split('\n')).toHaveLength(1);
  expect(r.stdout).toBe('');
  expect(r.code).toBe(2);
}

const WORDS = 'once upon a time there was a little girl named lily she loved to play in the park with her dog'.split(' ');
/** Twenty story rows of 4 to 60 words. */
const ROWS = Array.from({ length: 20 }, (_, i) => ({ text: Array.from({ length: 4 + ((i * 37) % 57) }, (_, k) => WORDS[(i + k * 7) % WORDS.length]).join(' ') }));
const RECIPE = { model: STORIES_DIR, train_file: 'train.jsonl', output_dir: 'out', max_steps: 5, per_device_train_batch_size: 2, learning_rate: 0.01, peft: { r: 4, lora_dropout: 0 } };
const LATIN1 = Buffer.concat([Buffer.from('{"text": "Lily had a red hat."}\n{"text": "Tom ate a cr'), Buffer.from([0xea]), Buffer.from('pe."}\n')]);

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'finetune-defaults-'));
  writeFileSync(join(dir, 'train.jsonl'), ROWS.map((r) => JSON.stringify(r)).join('\n') + '\n');
  writeFileSync(join(dir, 'empty.jsonl'), '');
  writeFileSync(join(dir, 'blank.jsonl'), '\n   \n\t\r\n');
  writeFileSync(join(dir, 'empty.json'), '[]');
  writeFileSync(join(dir, 'latin1.jsonl'), LATIN1);
  writeFileSync(join(dir, 'recipe.json'), JSON.stringify(RECIPE));
  writeFileSync(join(dir, 'split.json'), JSON.stringify({ ...RECIPE, eval_split: 0.2 }));
  writeFileSync(join(dir, 'logged.json'), JSON.stringify({ ...RECIPE, logging_steps: 10 }));
});

describe('the default backend', () => {
  it('is the fastest available, said on the first line, with how to choose another', () => {
    const r = finetune(['train', 'recipe.json', '--output_dir', 'default']);
    expect(r.code).toBe(0);
    const first = r.stderr.split('\n')[0];
    expect(first).toMatch(/^Backend: (wasm|webgpu on .+) \(the fastest available here(; .+)?; choose with --backend cpu\|wasm\|webgpu\)\.$/);
    // A software adapter (chromium's SwiftShader, where installed) never wins over wasm.
    if (/swiftshader/i.test(first)) expect(first).toMatch(/^Backend: wasm \(the fastest available here; webgpu: the only WebGPU adapter is SwiftShader.*, a software renderer slower than WASM; /);
  });

  it('gives way to --backend, which the first line names', () => {
    const r = finetune(['eval', '--model', STORIES_DIR, '--data', 'train.jsonl', '--json', '--backend', 'cpu']);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('Backend: cpu (chosen with --backend).');
    expect(JSON.parse(r.stdout).num_examples).toBe(20);
  });

  it('is said by generate and merge too, on stderr, leaving stdout to the output', () => {
    const g = finetune(['generate', '--model', STORIES_DIR, '--prompt', 'Once upon a time', '--temperature', '0', '--max_new_tokens', '12']);
    expect(g.code).toBe(0);
    expect(g.stderr).toMatch(/^Backend: \S+.* \(the fastest available here/);
    expect(g.stdout).toMatch(/^, there was a little girl named Lily/);
    const m = finetune(['merge', '--model', STORIES_DIR, '--adapter', 'default', '--out', 'merged']);
    expect(m.code).toBe(0);
    expect(m.stderr).toMatch(/^Backend: /);
    expect(m.stdout).toBe('merged model written to merged');
  });
});

describe('a short training run', () => {
  it('counts the examples it trains on apart from those eval_split holds out', () => {
    const r = finetune(['train', 'split.json', '--output_dir', 'split', '--backend', 'cpu']);
    expect(r.code).toBe(0);
    expect(r.stderr.split('\n').slice(0, 2)).toEqual([
      'Backend: cpu (chosen with --backend).',
      'Training lora on 16 examples, evaluating on 4, 5 steps, logging every step (logging_steps is unset and the run is shorter than 50 steps).',
    ]);
  });

  it('logs every step when logging_steps is unset, and records that in recipe.json', () => {
    const metrics = readFileSync(join(dir, 'split/metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(metrics.filter((m) => m.loss !== undefined).map((m) => m.step)).toEqual([1, 2, 3, 4, 5]);
    expect(JSON.parse(readFileSync(join(dir, 'split/recipe.json'), 'utf8')).logging_steps).toBe(1);
  });

  it('keeps logging_steps set in the recipe or on the command line', () => {
    for (const [args, out] of [[['logged.json'], 'logged'], [['recipe.json', '--logging_steps', '10'], 'flagged']] as const) {
      const r = finetune(['train', ...args, '--output_dir', out, '--backend', 'cpu']);
      expect(r.code).toBe(0);
      expect(r.stderr).toContain('Training lora on 20 examples, 5 steps, logging every 10 steps.\n');
      const metrics = readFileSync(join(dir, out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
      expect(metrics.map((m) => m.step)).toEqual([1, 5]);
    }
  });
});

describe('finetune data', () => {
  it('prints lengths in whole tokens, and the real lengths with the cut', () => {
    const r = finetune(['data', 'train.jsonl', '--model', STORIES_DIR, '--max_length', '40']);
    expect(r.code).toBe(0);
    const lines = r.stdout.split('\n');
    expect(lines[1]).toMatch(/^examples 20, dropped 0 \(no trainable token\), truncated \d+ \(cut: max_length 40\)$/);
    const asTrained = /^tokens \d+ \(trained \d+\); length as trained: min \d+, mean \d+(\.\d)?, median \d+, p95 \d+, max 40$/;
    expect(lines[2]).toMatch(asTrained);
    expect(lines[3]).toMatch(/^length before truncation: min \d+, mean \d+(\.\d)?, median \d+, p95 \d+, max \d+$/);
    expect(Number(/max (\d+)$/.exec(lines[3])?.[1])).toBeGreaterThan(40);
    expect(lines[4]).toBe('tokens per row before truncation, cut at 40:');
    const bars = lines.slice(5).filter((l) => /^\s+\d+(–\d+)?\s+#*\s+\d+$/.test(l));
    expect(bars.map((l) => Number(/(\d+)$/.exec(l)?.[1])).reduce((a, b) => a + b, 0)).toBe(20);
    // The bin right below the rule starts at 41: only rows that are cut lie below it.
    const rule = lines.findIndex((l) => /^\s+-+ {2}cut at 40: the rows below lose their end$/.test(l));
    expect(rule).toBeGreaterThan(4);
    expect(lines[rule + 1]).toMatch(/^\s+41–\d+ /);
  });

  it.each([['empty.jsonl'], ['blank.jsonl'], ['empty.json']])('refuses %s, which has no rows, and writes nothing', (file) => {
    const r = finetune(['data', file, '--model', STORIES_DIR, '--dump', `${file}.dump`]);
    expectOneLine(r, new RegExp(`^${file.replace('.', '\\.')} has no rows: it is empty or holds only blank lines; accepted rows are `));
    expect(existsSync(join(dir, `${file}.dump`))).toBe(false);
  });

  it('refuses a file that is not UTF-8, naming the line, wherever it is read', () => {
    const line2 = /^latin1\.jsonl line 2 is not valid UTF-8 \(byte 0xEA at column 23, as in a file saved as Latin-1 or Windows-1252\); save the file as UTF-8\.$/;
    expectOneLine(finetune(['data', 'latin1.jsonl', '--model', STORIES_DIR, '--dump', 'latin1.dump']), line2);
    expect(existsSync(join(dir, 'latin1.dump'))).toBe(false);
    expectOneLine(finetune(['eval', '--model', STORIES_DIR, '--data', 'latin1.jsonl']), line2);
    expectOneLine(finetune(['train', 'recipe.json', '--train_file', 'latin1.jsonl', '--output_dir', 'never1']), line2);
    expectOneLine(finetune(['train', 'recipe.json', '--eval_file', 'latin1.jsonl', '--output_dir', 'never2']), line2);
    expect(existsSync(join(dir, 'never1')) || existsSync(join(dir, 'never2'))).toBe(false);
  });
});
