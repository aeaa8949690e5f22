// QLoRA from the command line: `train` with the recipe's quantization block, `eval`, `generate`
// and `merge` with bitsandbytes' bare flags; a merge of a quantised base says what it wrote.
import { beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { finetune, STORIES } from './helpers/cli.ts';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'finetune-qlora-'));
  const rows = ['Once upon a time, there was a little boy named Tim.', 'Lily and her mom went to the park.'];
  writeFileSync(join(dir, 'train.jsonl'), rows.map((text) => JSON.stringify({ text })).join('\n') + '\n');
  writeFileSync(join(dir, 'recipe.json'), JSON.stringify({
    model: STORIES, train_file: 'train.jsonl', output_dir: 'out', max_steps: 2, learning_rate: 1e-2,
    per_device_train_batch_size: 2, peft: { r: 4, lora_dropout: 0 }, quantization: { load_in_4bit: true, bnb_4bit_use_double_quant: true },
  }));
});

describe('QLoRA in the finetune command', () => {
  it('trains on a 4-bit base, then evaluates, generates and merges with the same flags', () => {
    const t = finetune(['train', 'recipe.json', '--backend', 'cpu'], dir);
    expect(t.code).toBe(0);
    const saved = JSON.parse(readFileSync(join(dir, 'out', 'recipe.json'), 'utf8'));
    expect(saved.quantization).toEqual({ load_in_4bit: true, bnb_4bit_quant_type: 'nf4', bnb_4bit_use_double_quant: true, load_in_8bit: false });

    const flags = ['--load_in_4bit', '--bnb_4bit_use_double_quant'];
    const quantised = JSON.parse(finetune(['eval', '--model', STORIES, '--adapter', 'out', '--data', 'train.jsonl', '--json', ...flags], dir).stdout);
    const plain = JSON.parse(finetune(['eval', '--model', STORIES, '--adapter', 'out', '--data', 'train.jsonl', '--json'], dir).stdout);
    // The adapter learnt on the 4-bit base: it does best there, and nearly as well on the original weights.
    expect(quantised.loss).toBeLessThan(plain.loss + 0.2);
    expect(Math.abs(quantised.loss - plain.loss)).toBeGreaterThan(0);

    const g = finetune(['generate', '--model', STORIES, '--adapter', 'out', '--prompt', 'Once upon a time', '--temperature', '0', '--max_new_tokens', '8', '--load_in_8bit'], dir);
    expect(g.code).toBe(0);
    expect(g.stdout.length).toBeGreaterThan(0);

    const m = finetune(['merge', '--model', STORIES, '--adapter', 'out', '--out', 'merged', ...flags], dir);
    expect(m.code).toBe(0);
    expect(m.stdout).toContain('the base was quantised (nf4 with double quantisation): its projections are the dequantised weights plus the LoRA delta, in F32');
    expect(existsSync(join(dir, 'merged', 'model.safetensors'))).toBe(true);
    // The merged folder holds the 4-bit model's weights: it scores as the quantised base with the adapter does.
    const merged = JSON.parse(finetune(['eval', '--model', 'merged', '--data', 'train.jsonl', '--json'], dir).stdout);
    expect(Math.abs(merged.loss - quantised.loss)).toBeLessThan(1e-4);
  });

  it('quantize writes a pre-quantised folder that evaluates and trains as the on-the-fly 4-bit base', () => {
    const q = finetune(['quantize', '--model', STORIES, '--out', 'q', '--bnb_4bit_use_double_quant'], dir);
    expect(q.code).toBe(0);
    expect(q.stdout).toMatch(/^quantised model written to q \(nf4 with double quantisation; model\.safetensors 0\.\d MiB\)$/m);
    const config = JSON.parse(readFileSync(join(dir, 'q', 'config.json'), 'utf8'));
    expect(config.quantization_config).toMatchObject({ quant_method: 'bitsandbytes', load_in_4bit: true, bnb_4bit_quant_type: 'nf4', bnb_4bit_use_double_quant: true });
    for (const f of ['tokenizer.json', 'tokenizer_config.json', 'generation_config.json']) expect(existsSync(join(dir, 'q', f))).toBe(true);
    const pre = JSON.parse(finetune(['eval', '--model', 'q', '--data', 'train.jsonl', '--json'], dir).stdout);
    const fly = JSON.parse(finetune(['eval', '--model', STORIES, '--data', 'train.jsonl', '--json', '--load_in_4bit', '--bnb_4bit_use_double_quant'], dir).stdout);
    expect(pre.loss).toBe(fly.loss);

    writeFileSync(join(dir, 'pre.json'), JSON.stringify({ model: 'q', train_file: 'train.jsonl', output_dir: 'pre_out', max_steps: 1, peft: { r: 2 } }));
    expect(finetune(['train', 'pre.json', '--backend', 'cpu'], dir).code).toBe(0);
    expect(JSON.parse(readFileSync(join(dir, 'pre_out', 'recipe.json'), 'utf8')).quantization).toEqual({ load_in_4bit: true, bnb_4bit_quant_type: 'nf4', bnb_4bit_use_double_quant: true, load_in_8bit: false });

    const again = finetune(['quantize', '--model', 'q', '--out', 'q2'], dir);
    expect(again.code).toBe(2);
    expect(again.stderr).toBe('q is already quantised to 4 bits (config.json has a bitsandbytes quantization_config); quantise the original model instead.');
    expect(existsSync(join(dir, 'q2'))).toBe(false);
    const eight = finetune(['quantize', '--model', STORIES, '--out', 'q3', '--load_in_8bit'], dir);
    expect(eight.code).toBe(2);
    expect(eight.stderr).toBe('finetune quantize writes bitsandbytes 4-bit checkpoints only; 8-bit quantisation happens as a model loads (--load_in_8bit on eval, generate and merge, or quantization.load_in_8bit in a recipe).');
  });

  it('refuses flags that do not go together, in one sentence', () => {
    const both = finetune(['eval', '--model', STORIES, '--data', 'train.jsonl', '--load_in_4bit', '--load_in_8bit'], dir);
    expect(both.code).toBe(2);
    expect(both.stderr).toContain('"quantization" asks for both load_in_4bit and load_in_8bit; choose one.');
    const alone = finetune(['eval', '--model', STORIES, '--data', 'train.jsonl', '--bnb_4bit_quant_type', 'fp4'], dir);
    expect(alone.code).toBe(2);
    expect(alone.stderr).toBe('finetune eval: --bnb_4bit_quant_type and --bnb_4bit_use_double_quant go with --load_in_4bit.');
    const bad = finetune(['eval', '--model', STORIES, '--data', 'train.jsonl', '--load_in_4bit', '--bnb_4bit_quant_type', 'int4'], dir);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--quantization.bnb_4bit_quant_type must be one of "nf4", "fp4" (got "int4")');
  });
});
