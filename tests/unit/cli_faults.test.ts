// The `finetune` command when the world misbehaves: folders it cannot write, a full disk, a link
// loop, files in the wrong encoding, a damaged model, leftovers of a crashed run, running out of
// memory. Each case is a real process: exit status 2, exactly one line on stderr, no stack trace,
// and the files as they were. Faults that root (which runs the tests) cannot provoke for real — a
// full disk, a refused write — are injected by a preload module that wraps node:fs/promises.
import { describe, expect, it, beforeAll } from 'vitest';
import { spawnSync } from 'node:child_process';
import { cpSync, rmSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, symlinkSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describeFailure } from '../../src/cli/failure.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const STORIES = fileURLToPath(new URL('../../../shared/models/stories260K', import.meta.url));
const BIN = join(ROOT, 'bin/finetune.js');

/**
 * FT_FAULT = {"code": "ENOSPC", "match": "regexp on the path", "op": "open" | "write" | "append" | "throw"}:
 * `open` fails the opening of a matching path; `write` opens it, then fails the write (a full disk);
 * `append` fails appendFile; `throw` makes appendFile throw a RangeError (an allocation failure).
 */
const FAULT_PRELOAD = `
import { createRequire, syncBuiltinESMExports } from 'node:module';
const require = createRequire(import.meta.url);
const fsp = require('node:fs/promises');
const spec = JSON.parse(process.env.FT_FAULT);
const match = new RegExp(spec.match);
const fail = (path, syscall) => {
  const e = new Error(spec.code + ': injected, ' + syscall + " '" + path + "'");
  e.code = spec.code; e.errno = -1; e.syscall = syscall; e.path = String(path);
  return e;
};
const realOpen = fsp.open;
fsp.open = async (path, ...rest) => {
  if (match.test(String(path))) {
    if (spec.op === 'open') throw fail(path, 'open');
    if (spec.op === 'write') {
      const fh = await realOpen(path, ...rest);
      fh.writeFile = async () => { throw fail(path, 'write'); };
      return fh;
    }
  }
  return realOpen(path, ...rest);
};
const realAppend = fsp.appendFile;
fsp.appendFile = async (path, ...rest) => {
  if (match.test(String(path))) {
    if (spec.op === 'append') throw fail(path, 'write');
    if (spec.op === 'throw') throw new RangeError('Array buffer allocation failed');
  }
  return realAppend(path, ...rest);
};
syncBuiltinESMExports();
`;

let dir: string;
let preload: string;

function finetune(args: string[], fault?: { code?: string; match: string; op: 'open' | 'write' | 'append' | 'throw' }) {
  const node = fault ? ['--import', preload] : [];
  const env = { ...process.env, FORCE_COLOR: '0', ...(fault ? { FT_FAULT: JSON.stringify(fault) } : {}) };
  const r = spawnSync(process.execPath, [...node, BIN, ...args], { cwd: dir, encoding: 'utf8', env });
  return { code: r.status, stdout: r.stdout.trim(), stderr: r.stderr.trim() };
}

/** Exit 2, one line on stderr, no stack, no "internal error". */
function expectOneSentence(r: { code: number | null; stderr: string }, message: RegExp): void {
  expect(r.stderr).toMatch(message);
  expect(r.stderr).not.toMatch(/internal error|^\s+at /m);
  expect(r.stderr.split('\n')).toHaveLength(1);
  expect(r.code).toBe(2);
}

/**
 * A failure after training started: the progress lines before it are normal output; the failure
 * itself is the last line and the only one that is not progress.
 */
function expectSentenceAfterProgress(r: { code: number | null; stderr: string }, message: RegExp): void {
  const lines = r.stderr.split('\n');
  const progress = /^(Backend: |Training \w+ on \d+ examples|step \d+ {2}epoch )/;
  expect(lines.slice(0, -1).filter((l) => !progress.test(l))).toEqual([]);
  expectOneSentence({ code: r.code, stderr: lines[lines.length - 1] }, message);
}

/** Every file under `root`, relative, with its bytes: "as it was" is this snapshot unchanged. */
function snapshot(root: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string, prefix: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      if (e.isDirectory()) walk(join(d, e.name), `${prefix}${e.name}/`);
      else out[`${prefix}${e.name}`] = readFileSync(join(d, e.name)).toString('base64');
    }
  };
  walk(root, '');
  return out;
}

const ROWS = [
  'Once upon a time, there was a little dog named Max. Max liked to run in the park with his ball.',
  'Lily had a red hat. She wore it every day when she went to school with her friend Tom.',
  'One day, a big bird flew over the house. The bird was very happy and sang a song.',
  'Tim and his mom went to the store. They bought apples and milk for dinner.',
];
const RECIPE = { model: STORIES, train_file: 'train.jsonl', output_dir: 'out', max_steps: 4, per_device_train_batch_size: 2, learning_rate: 0.01, logging_steps: 1, save_steps: 2, peft: { r: 4, lora_dropout: 0 } };

/** A copy of stories260K whose tensor `name` holds a NaN in its first element. */
function nanModel(target: string, name: string): void {
  cpSync(STORIES, target, { recursive: true });
  const file = join(target, 'model.safetensors');
  chmodSync(target, 0o755);
  for (const f of readdirSync(target)) chmodSync(join(target, f), 0o644);
  const bytes = readFileSync(file);
  const n = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8'));
  const begin = 8 + n + header[name].data_offsets[0];
  bytes.writeFloatLE(NaN, begin);
  writeFileSync(file, bytes);
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'finetune-faults-'));
  preload = join(dir, 'fault.mjs');
  writeFileSync(preload, FAULT_PRELOAD);
  writeFileSync(join(dir, 'train.jsonl'), ROWS.map((text) => JSON.stringify({ text })).join('\n') + '\n');
  writeFileSync(join(dir, 'recipe.json'), JSON.stringify(RECIPE, null, 2));
  writeFileSync(join(dir, 'a-file'), 'not a folder\n');
});

describe('an output_dir that cannot be written is refused before training', () => {
  it('when output_dir is a file', () => {
    const r = finetune(['train', 'recipe.json', '--output_dir', 'a-file']);
    expectOneSentence(r, /output_dir a-file is a file, not a folder/);
    expect(readFileSync(join(dir, 'a-file'), 'utf8')).toBe('not a folder\n');
  });

  it('when output_dir lies below a file', () => {
    const r = finetune(['train', 'recipe.json', '--output_dir', 'a-file/run/out']);
    expectOneSentence(r, /output_dir a-file\/run\/out cannot be created: .*a-file is a file, not a folder/);
    expect(readFileSync(join(dir, 'a-file'), 'utf8')).toBe('not a folder\n');
  });

  it.each([
    ['EACCES', /permission denied/],
    ['EROFS', /the file system is read-only/],
    ['EPERM', /the operation is not permitted/],
  ])('when the folder refuses a new file (%s), before the model is loaded', (code, reason) => {
    mkdirSync(join(dir, `locked-${code}`));
    const r = finetune(['train', 'recipe.json', '--output_dir', `locked-${code}/out`], { code, match: '\\.finetune-probe-', op: 'open' });
    expectOneSentence(r, new RegExp(`output_dir locked-${code}/out is not writable: ${reason.source}`));
    expect(readdirSync(join(dir, `locked-${code}`))).toEqual([]);
  });

  it('when output_dir holds a checkpoint-1 that is not a checkpoint, a folder or a file', () => {
    mkdirSync(join(dir, 'mine/checkpoint-1'), { recursive: true });
    writeFileSync(join(dir, 'mine/checkpoint-1/notes.txt'), 'my notes\n');
    const before = snapshot(join(dir, 'mine'));
    const r = finetune(['train', 'recipe.json', '--output_dir', 'mine', '--save_steps', '1']);
    expectOneSentence(r, /mine\/checkpoint-1 is a folder without trainer_state\.json, not a checkpoint/);
    expect(snapshot(join(dir, 'mine'))).toEqual(before);

    mkdirSync(join(dir, 'mine2'));
    writeFileSync(join(dir, 'mine2/checkpoint-2'), 'a file\n');
    const r2 = finetune(['train', 'recipe.json', '--output_dir', 'mine2']);
    expectOneSentence(r2, /mine2\/checkpoint-2 is a file, not a checkpoint/);
    expect(readFileSync(join(dir, 'mine2/checkpoint-2'), 'utf8')).toBe('a file\n');
  });
});

describe('a write that fails during training', () => {
  it('on a full disk at checkpoint 4 names the folder and keeps checkpoint 2 intact', () => {
    const r = finetune(['train', 'recipe.json', '--output_dir', 'full', '--save_total_limit', '1'], { code: 'ENOSPC', match: '\\.checkpoint-4\\.new-', op: 'write' });
    expectSentenceAfterProgress(r, /Cannot write .*full\/\.checkpoint-4\.new-\w+\/.*: no space is left on the device \(the checkpoint from step 2 is kept in full\/checkpoint-2\)\./);
    const left = readdirSync(join(dir, 'full')).sort();
    expect(left).toEqual(['checkpoint-2', 'metrics.jsonl']);
    const state = JSON.parse(readFileSync(join(dir, 'full/checkpoint-2/trainer_state.json'), 'utf8'));
    expect(state.global_step).toBe(2);
    // What was kept resumes.
    const resumed = finetune(['train', 'recipe.json', '--output_dir', 'full', '--resume_from_checkpoint', 'full/checkpoint-2']);
    expect(resumed.code).toBe(0);
  });

  it('over an existing checkpoint leaves the previous one byte for byte', () => {
    expect(finetune(['train', 'recipe.json', '--output_dir', 'again']).code).toBe(0);
    const before = snapshot(join(dir, 'again/checkpoint-4'));
    const r = finetune(['train', 'recipe.json', '--output_dir', 'again'], { code: 'ENOSPC', match: '\\.checkpoint-4\\.new-', op: 'write' });
    expectSentenceAfterProgress(r, /no space is left on the device/);
    expect(snapshot(join(dir, 'again/checkpoint-4'))).toEqual(before);
    expect(readdirSync(join(dir, 'again')).filter((n) => n.startsWith('.'))).toEqual([]);
  });

  it('appending to metrics.jsonl on a full disk', () => {
    const r = finetune(['train', 'recipe.json', '--output_dir', 'fullmetrics'], { code: 'ENOSPC', match: 'metrics\\.jsonl$', op: 'append' });
    expectSentenceAfterProgress(r, /^Cannot write fullmetrics\/metrics\.jsonl: no space is left on the device\.$/);
  });

  it('an allocation failure mid-training is "ran out of memory" with what to lower', () => {
    // On the CPU backend, whose memory is the machine's (the default, WASM, names its own).
    const r = finetune(['train', 'recipe.json', '--output_dir', 'oom', '--max_length', '64', '--backend', 'cpu'], { match: 'metrics\\.jsonl$', op: 'throw' });
    expectSentenceAfterProgress(r, /^finetune train ran out of memory; try a shorter max_length \(now 64\) or a smaller per_device_train_batch_size \(now 2\)\.$/);
    // With gradient checkpointing off, turning it on is the first thing to try.
    const off = finetune(['train', 'recipe.json', '--output_dir', 'oom2', '--gradient_checkpointing', 'false', '--backend', 'cpu'], { match: 'metrics\\.jsonl$', op: 'throw' });
    expectSentenceAfterProgress(off, /ran out of memory; try a shorter max_length \(now 1024\), a smaller per_device_train_batch_size \(now 2\) or gradient_checkpointing: true\.$/);
  });
});

describe('inputs that used to print a stack trace or mislead', () => {
  it('a symbolic-link loop inside the model folder names the link', () => {
    const model = join(dir, 'loopy');
    cpSync(STORIES, model, { recursive: true });
    symlinkSync('self', join(model, 'self'));
    const r = finetune(['generate', '--model', 'loopy', '--prompt', 'Once']);
    expectOneSentence(r, /loopy\/self: it is a symbolic link that loops back on itself/);
  });

  it.each([
    ['utf16le', Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(JSON.stringify(RECIPE), 'utf16le')]), 'UTF-16'],
    ['utf16le-nobom', Buffer.from(JSON.stringify(RECIPE), 'utf16le'), 'UTF-16'],
    ['utf16be', Buffer.concat([Buffer.from([0xfe, 0xff]), Buffer.from(JSON.stringify(RECIPE), 'utf16le').swap16()]), 'UTF-16'],
    ['utf32le', Buffer.concat([Buffer.from([0xff, 0xfe, 0, 0]), Buffer.from([...JSON.stringify(RECIPE)].flatMap((c) => [c.charCodeAt(0), 0, 0, 0]))]), 'UTF-32'],
  ])('a recipe saved as %s is named as such', (name, bytes, encoding) => {
    writeFileSync(join(dir, `recipe-${name}.json`), bytes);
    const r = finetune(['train', `recipe-${name}.json`, '--output_dir', `never-${name}`]);
    expectOneSentence(r, new RegExp(`^recipe-${name}\\.json is ${encoding}; save it as UTF-8\\.$`));
    expect(existsSync(join(dir, `never-${name}`))).toBe(false);
  });

  it('a dataset saved as UTF-16 is named as such, in train and in data', () => {
    const text = ROWS.map((t) => JSON.stringify({ text: t })).join('\r\n') + '\r\n';
    writeFileSync(join(dir, 'train16.jsonl'), Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(text, 'utf16le')]));
    const r = finetune(['train', 'recipe.json', '--train_file', 'train16.jsonl', '--output_dir', 'never16']);
    expectOneSentence(r, /^train16\.jsonl is UTF-16; save it as UTF-8\.$/);
    const d = finetune(['data', 'train16.jsonl', '--model', STORIES]);
    expectOneSentence(d, /^train16\.jsonl is UTF-16; save it as UTF-8\.$/);
  });

  it('a number too large for a double in the recipe is "out of range", not "null"', () => {
    writeFileSync(join(dir, 'huge.json'), JSON.stringify(RECIPE).replace('"learning_rate":0.01', '"learning_rate":1e400'));
    const r = finetune(['train', 'huge.json', '--output_dir', 'never-huge']);
    expectOneSentence(r, /^huge\.json: "learning_rate" is out of range/);
    expect(r.stderr).not.toContain('null');
    const flag = finetune(['train', 'recipe.json', '--learning_rate', '1e400', '--output_dir', 'never-huge']);
    expectOneSentence(flag, /--learning_rate 1e400 is out of range/);
  });
});

describe('a model whose weights hold NaN', () => {
  let nan: string;
  beforeAll(() => {
    nan = join(dir, 'nan-model');
    nanModel(nan, 'model.layers.1.mlp.down_proj.weight');
  });

  it('eval refuses it, naming a tensor, instead of printing loss NaN', () => {
    const r = finetune(['eval', '--model', 'nan-model', '--data', 'train.jsonl']);
    expectOneSentence(r, /^nan-model: the model's weights contain non-finite values \(NaN or infinity\), for example model\.layers\.1\.mlp\.down_proj\.weight;/);
    expect(r.stdout).toBe('');
  });

  it('generate refuses it instead of printing nothing', () => {
    const r = finetune(['generate', '--model', 'nan-model', '--prompt', 'Once']);
    expectOneSentence(r, /non-finite values .*model\.layers\.1\.mlp\.down_proj\.weight/);
  });

  it('train says so, not "lower learning_rate", and writes nothing', () => {
    const r = finetune(['train', 'recipe.json', '--model', 'nan-model', '--output_dir', 'never-nan']);
    expectOneSentence(r, /non-finite values/);
    expect(r.stderr).not.toContain('learning_rate');
    expect(existsSync(join(dir, 'never-nan'))).toBe(false);
  });
});

describe('what a crashed run leaves behind', () => {
  it('is cleared by the next run, and a resumed metrics.jsonl has each step once', () => {
    expect(finetune(['train', 'recipe.json', '--output_dir', 'crashed']).code).toBe(0);
    const out = join(dir, 'crashed');
    // What a kill -9 in the middle of the atomic writes leaves.
    mkdirSync(join(out, '.checkpoint-6.new-Ab12Cd'));
    writeFileSync(join(out, '.checkpoint-6.new-Ab12Cd/adapter_model.safetensors'), 'half');
    writeFileSync(join(out, '.trainer_state.json.0b7c3a52-8d9e-4f10-a1b2-c3d4e5f60718.tmp'), '{"glob');
    writeFileSync(join(out, '.adapter_model.safetensors.11111111-2222-4333-8444-555555555555.tmp'), 'half');
    // A crash between writeFolderAtomic's two renames: the only copy of checkpoint-4 is the .old one.
    cpSync(join(out, 'checkpoint-4'), join(out, '.checkpoint-4.old-0b7c3a52-8d9e-4f10-a1b2-c3d4e5f60718'), { recursive: true });
    const only = snapshot(join(out, 'checkpoint-4'));
    rmSync(join(out, 'checkpoint-4'), { recursive: true });
    const r = finetune(['train', 'recipe.json', '--output_dir', 'crashed', '--resume_from_checkpoint', 'crashed/checkpoint-2', '--max_steps', '3', '--save_steps', '3']);
    expect(r.code).toBe(0);
    expect(readdirSync(out).filter((n) => n.startsWith('.'))).toEqual([]);
    expect(snapshot(join(out, 'checkpoint-4'))).toEqual(only);
    const steps = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).step);
    expect(steps).toEqual([1, 2, 3]);
  });
});

describe('merge --out', () => {
  it('that is a file is refused before the model is loaded, and the file is left alone', () => {
    const r = finetune(['merge', '--model', STORIES, '--adapter', STORIES, '--out', 'a-file']);
    expectOneSentence(r, /^--out a-file is a file, not a folder; choose another --out\.$/);
    expect(readFileSync(join(dir, 'a-file'), 'utf8')).toBe('not a folder\n');
  });
});

describe('the sentence for each kind of failure', () => {
  const fsError = (code: string, syscall: string, path: string) => Object.assign(new Error(`${code}: x, ${syscall} '${path}'`), { code, syscall, path });

  it('names what ran out and what to lower, per command and backend', () => {
    const wasm = new WebAssembly.RuntimeError('Aborted(OOM). Build with -sASSERTIONS for more info.');
    expect(describeFailure(wasm, { command: 'eval', backend: 'wasm', flags: new Map([['batch_size', '32']]) })).toEqual({
      code: 2,
      message: 'finetune eval ran out of the WASM backend’s memory; try a shorter --max_length or a smaller --batch_size (now 32).',
    });
    const enlarge = new Error('Cannot enlarge memory arrays to size 4294967296 bytes');
    expect(describeFailure(enlarge, { command: 'generate', backend: 'wasm' }).message).toBe(
      'finetune generate ran out of the WASM backend’s memory; try a shorter --prompt, a smaller --max_new_tokens (now 128) or a smaller --num_return_sequences.',
    );
    const range = new RangeError('Array buffer allocation failed');
    const train = describeFailure(range, { command: 'train', backend: 'cpu', recipe: { max_length: 512, per_device_train_batch_size: 8, gradient_checkpointing: false }, kept: () => 'the checkpoint from step 10 is kept in out/checkpoint-10' });
    expect(train.message).toBe('finetune train ran out of memory (the checkpoint from step 10 is kept in out/checkpoint-10); try a shorter max_length (now 512), a smaller per_device_train_batch_size (now 8) or gradient_checkpointing: true.');
  });

  it('turns each file-system error into one sentence naming the path; anything else stays an internal error', () => {
    const ctx = { command: 'train', backend: 'cpu' };
    expect(describeFailure(fsError('EISDIR', 'read', 'data.jsonl'), ctx)).toEqual({ code: 2, message: 'Cannot read data.jsonl: it is a folder, not a file.' });
    expect(describeFailure(fsError('EEXIST', 'mkdir', 'out'), ctx).message).toBe('Cannot write out: something else already exists there.');
    expect(describeFailure(fsError('ENOTDIR', 'open', 'f/x'), ctx).message).toBe('Cannot open f/x: a part of the path is a file, not a folder.');
    expect(describeFailure(Object.assign(fsError('EXDEV', 'rename', 'a'), { dest: 'b' }), ctx).code).toBe(1);
    const bug = describeFailure(new TypeError('x is undefined'), ctx);
    expect(bug.code).toBe(1);
    expect(bug.message).toMatch(/^finetune: internal error: TypeError: x is undefined/);
  });
});
