// The `finetune` command as a person runs it: a real process, real files, the real stories260K model.
import { describe, expect, it, beforeAll } from 'vitest';
import { finetune, STORIES } from './helpers/cli.ts';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseSafetensors, tensorToFloat32, writeSafetensors } from '../../src/engine/io/safetensors.ts';



const STORY_ROWS = [
  'Once upon a time, there was a little dog named Max. Max liked to run in the park with his ball.',
  'Lily had a red hat. She wore it every day when she went to school with her friend Tom.',
  'One day, a big bird flew over the house. The bird was very happy and sang a song.',
  'Tim and his mom went to the store. They bought apples and milk for dinner.',
];

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'finetune-cli-'));
  writeFileSync(join(dir, 'train.jsonl'), STORY_ROWS.map((text) => JSON.stringify({ text })).join('\n') + '\n');
  writeFileSync(join(dir, 'bad.jsonl'), [JSON.stringify({ text: 'A fine row.' }), JSON.stringify({ text: 'Another.' }), '{"text": "broken', JSON.stringify({ text: 'Fine.' })].join('\n') + '\n');
  writeFileSync(join(dir, 'noanswer.jsonl'), [JSON.stringify({ prompt: 'Q?', completion: 'A.' }), JSON.stringify({ prompt: 'Where is the answer?' })].join('\n') + '\n');
  const recipe = { model: STORIES, train_file: 'train.jsonl', output_dir: 'out', max_steps: 4, per_device_train_batch_size: 2, learning_rate: 0.01, logging_steps: 1, save_steps: 2, peft: { r: 8, lora_dropout: 0 } };
  writeFileSync(join(dir, 'recipe.json'), JSON.stringify(recipe, null, 2));
});

describe('finetune train', () => {
  it('writes the PEFT adapter, trainer_state.json and metrics.jsonl, with flags overriding the recipe', () => {
    const r = finetune(['train', 'recipe.json', '--peft.r', '4', '--output_dir', 'out'], dir);
    expect(r.stderr).toContain('Saved to out');
    expect(r.code).toBe(0);
    // Not a TTY: one plain line per logged step.
    expect(r.stderr).toMatch(/step 4 .*loss \d+\.\d+/);
    const out = join(dir, 'out');
    expect(readdirSync(out).sort()).toEqual(['adapter_config.json', 'adapter_model.safetensors', 'checkpoint-2', 'checkpoint-4', 'metrics.jsonl', 'recipe.json', 'trainer_state.json']);
    const config = JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8'));
    expect(config).toMatchObject({ peft_type: 'LORA', task_type: 'CAUSAL_LM', r: 4, lora_alpha: 32, bias: 'none' });
    const st = parseSafetensors(new Uint8Array(readFileSync(join(out, 'adapter_model.safetensors'))), 'adapter_model.safetensors');
    expect(st.tensors.get('base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight')?.shape).toEqual([4, 64]);
    expect(st.metadata).toEqual({ format: 'pt' });
    const metrics = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(metrics.map((m) => m.step)).toEqual([1, 2, 3, 4]);
    expect(metrics[3].loss).toBeLessThan(metrics[0].loss);
    const state = JSON.parse(readFileSync(join(out, 'trainer_state.json'), 'utf8'));
    expect(state.global_step).toBe(4);
  });

  it('resumes from a checkpoint to the same adapter as an uninterrupted run', () => {
    const first = finetune(['train', 'recipe.json', '--output_dir', 'straight'], dir);
    expect(first.code).toBe(0);
    const resumed = finetune(['train', 'recipe.json', '--output_dir', 'resumed', '--resume_from_checkpoint', 'straight/checkpoint-2'], dir);
    expect(resumed.code).toBe(0);
    expect(readFileSync(join(dir, 'resumed/adapter_model.safetensors'))).toEqual(readFileSync(join(dir, 'straight/adapter_model.safetensors')));
  });

  it.each([
    [['train', 'recipe.json', '--learning_rte', '1e-4'], /--learning_rte is not a recipe field \(did you mean --learning_rate\?\)/],
    [['train', 'missing.json'], /missing\.json: no such file/],
    [['train', 'recipe.json', '--train_file', 'bad.jsonl'], /bad\.jsonl, line 3: .*JSON/],
    [['train', 'recipe.json', '--train_file', 'noanswer.jsonl'], /noanswer\.jsonl, line 2: .*completion/],
    [['train', 'recipe.json', '--peft.r', '0'], /--peft\.r must be an integer of at least 1/],
    [['train', 'recipe.json', '--model', 'nowhere'], /nowhere: no such folder/],
    [['frobnicate'], /unknown command "frobnicate"/],
    [['eval', '--model', STORIES, '--data', 'train.jsonl', '--colour', 'red'], /unknown flag --colour/],
  ])('%j fails with one clear line and writes nothing', (args, message) => {
    const out = `never-${Math.random().toString(36).slice(2)}`;
    const r = finetune([...args, ...(args[0] === 'train' ? ['--output_dir', out] : [])], dir);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(message);
    expect(r.stderr.split('\n')).toHaveLength(1);
    expect(r.stderr).not.toMatch(/^\s+at /m);
    expect(existsSync(join(dir, out))).toBe(false);
  });
});

describe('finetune eval, data, generate, merge', () => {
  it('eval --json prints one JSON object; the merged model gives the adapter\'s loss', () => {
    const base = finetune(['eval', '--model', STORIES, '--data', 'train.jsonl', '--json'], dir);
    expect(base.code).toBe(0);
    const b = JSON.parse(base.stdout);
    expect(Object.keys(b).sort()).toEqual(['loss', 'metrics', 'num_examples', 'num_tokens']);
    expect(b.num_examples).toBe(4);
    // A base story model on story text: near its published validation loss of 1.30 nats/token.
    expect(b.loss).toBeGreaterThan(0.8);
    expect(b.loss).toBeLessThan(2.6);

    const adapterDir = join(dir, 'out');
    const withAdapter = JSON.parse(finetune(['eval', '--model', STORIES, '--adapter', adapterDir, '--data', 'train.jsonl', '--json'], dir).stdout);
    expect(withAdapter.loss).toBeLessThan(b.loss);
    const m = finetune(['merge', '--model', STORIES, '--adapter', adapterDir, '--out', 'merged'], dir);
    expect(m.code).toBe(0);
    expect(readdirSync(join(dir, 'merged')).sort()).toEqual(['config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);
    const merged = JSON.parse(finetune(['eval', '--model', 'merged', '--data', 'train.jsonl', '--json'], dir).stdout);
    expect(Math.abs(merged.loss - withAdapter.loss)).toBeLessThan(1e-5);
  });

  it('data reports the format and every bad row, and dumps exactly what is trained on', () => {
    const good = finetune(['data', 'train.jsonl', '--model', STORIES, '--dump', 'dump.jsonl'], dir);
    expect(good.code).toBe(0);
    expect(good.stdout).toContain('text format, 4 rows');
    const dumped = readFileSync(join(dir, 'dump.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(dumped).toHaveLength(4);
    expect(Object.keys(dumped[0])).toEqual(['input_ids', 'labels']);
    expect(dumped[0].input_ids[0]).toBe(1); // <s>
    const bad = finetune(['data', 'bad.jsonl', '--model', STORIES], dir);
    expect(bad.code).toBe(1);
    expect(bad.stdout).toMatch(/bad row: bad\.jsonl, line 3:/);
  });

  it('generate decodes greedily from the pretrained model', () => {
    const r = finetune(['generate', '--model', STORIES, '--prompt', 'Once upon a time', '--temperature', '0', '--max_new_tokens', '40'], dir);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^, there was a little girl named Lily\. She loved to play outside in the park\./);
  });
});

describe('finetune train --resume_from_checkpoint', () => {
  // A run of its own (r 8, checkpoints 2 and 4), and broken copies of its checkpoint-2.
  beforeAll(() => {
    expect(finetune(['train', 'recipe.json', '--output_dir', 'base'], dir).code).toBe(0);
    mkdirSync(join(dir, 'empty-run'), { recursive: true });
    writeFileSync(join(dir, 'empty-run/metrics.jsonl'), '');
    const broken = (name: string, edit: (ckpt: string) => void) => {
      cpSync(join(dir, 'base/checkpoint-2'), join(dir, name, 'checkpoint-2'), { recursive: true });
      edit(join(dir, name, 'checkpoint-2'));
    };
    broken('noopt', (c) => rmSync(join(c, 'optimizer.safetensors')));
    broken('badstate', (c) => {
      const state = JSON.parse(readFileSync(join(c, 'trainer_state.json'), 'utf8'));
      state.resume.global_step = '2';
      writeFileSync(join(c, 'trainer_state.json'), JSON.stringify(state));
    });
    broken('nanopt', (c) => {
      const st = parseSafetensors(new Uint8Array(readFileSync(join(c, 'optimizer.safetensors'))), 'optimizer.safetensors');
      const tensors = [...st.tensors].map(([name, info]) => {
        const data = Float32Array.from(tensorToFloat32(st, name));
        if (name.endsWith('.exp_avg_sq')) data[0] = NaN;
        return { name, dtype: 'F32' as const, shape: info.shape, data };
      });
      writeFileSync(join(c, 'optimizer.safetensors'), writeSafetensors(tensors, st.metadata));
    });
  });

  it('takes an output folder (its newest checkpoint) or true (output_dir), as transformers does', () => {
    cpSync(join(dir, 'base'), join(dir, 'again'), { recursive: true });
    const viaTrue = finetune(['train', 'recipe.json', '--output_dir', 'again', '--resume_from_checkpoint', 'true', '--max_steps', '6'], dir);
    expect(viaTrue.stderr).toContain('Saved to again');
    expect(viaTrue.code).toBe(0);
    expect(JSON.parse(readFileSync(join(dir, 'again/trainer_state.json'), 'utf8')).global_step).toBe(6);
    expect(existsSync(join(dir, 'again/checkpoint-6'))).toBe(true);
    const viaFolder = finetune(['train', 'recipe.json', '--output_dir', 'from-folder', '--resume_from_checkpoint', 'base', '--max_steps', '6'], dir);
    expect(viaFolder.code).toBe(0);
    // Both continued from base/checkpoint-4: the same two steps to the same adapter.
    expect(readFileSync(join(dir, 'from-folder/adapter_model.safetensors'))).toEqual(readFileSync(join(dir, 'again/adapter_model.safetensors')));
    expect(readdirSync(join(dir, 'from-folder')).filter((n) => n.startsWith('checkpoint-')).sort()).toEqual(['checkpoint-6']);
  });

  it.each([
    [['--resume_from_checkpoint', 'empty-run'], /^empty-run holds no complete checkpoint-<step> folder to resume from; /],
    [['--resume_from_checkpoint', 'true'], /^never-\w+: no such folder \(the output_dir, where resume_from_checkpoint true looks for checkpoints\)\.$/],
    [['--resume_from_checkpoint', 'noopt'], /^noopt holds no complete checkpoint-<step> folder to resume from \(checkpoint-2 is incomplete\); /],
    [['--resume_from_checkpoint', 'noopt/checkpoint-2'], /^noopt\/checkpoint-2\/optimizer\.safetensors is missing; /],
    [['--resume_from_checkpoint', 'badstate/checkpoint-2'], /^badstate\/checkpoint-2\/trainer_state\.json: resume\.global_step must be an integer step from 0 to 4 .*\(got "2"\)/],
    [['--resume_from_checkpoint', 'nanopt/checkpoint-2'], /^nanopt\/checkpoint-2\/optimizer\.safetensors: exp_avg_sq of base_model\.model\.\S+ holds NaN; this checkpoint cannot be resumed\.$/],
    [['--init_adapter', 'base', '--peft.r', '4'], /^base\/adapter_config\.json: r is 8 but the recipe's peft\.r is 4; /],
  ])('%j fails with one clear line and leaves the files as they were', (flags, message) => {
    const out = `never-${Math.random().toString(36).slice(2)}`;
    const before = readdirSync(join(dir, 'base')).sort();
    const r = finetune(['train', 'recipe.json', ...flags, '--output_dir', out], dir);
    expect(r.stderr).toMatch(message);
    expect(r.code).toBe(2);
    expect(r.stderr.split('\n')).toHaveLength(1);
    expect(r.stderr).not.toMatch(/^\s+at /m);
    expect(existsSync(join(dir, out))).toBe(false);
    expect(readdirSync(join(dir, 'base')).sort()).toEqual(before);
  });
});
