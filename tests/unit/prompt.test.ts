// The prompt and sampling settings the Worker's chat and `finetune generate` share.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { TextTokenizer } from '../../src/engine/data/tokenizer.ts';
import { promptIds, samplingOptions } from '../../src/engine/model/prompt.ts';

const STORIES = fileURLToPath(new URL('../../../shared/models/stories260K/', import.meta.url));
const readJson = (name: string) => JSON.parse(readFileSync(`${STORIES}${name}`, 'utf8'));
const config = readJson('tokenizer_config.json');
const templated = TextTokenizer.fromFiles(readJson('tokenizer.json'), config, null);
const { chat_template: _, ...withoutTemplate } = config;
const plain = TextTokenizer.fromFiles(readJson('tokenizer.json'), withoutTemplate, null);
const messages = [{ role: 'user', content: 'Once upon a time' }, { role: 'assistant', content: 'there was' }];

describe('promptIds', () => {
  it('renders a conversation with the chat template, which writes its own special tokens', () => {
    const text = templated.applyChatTemplate(messages, { add_generation_prompt: true });
    expect(promptIds(templated, messages)).toEqual(templated.encode(text, { add_special_tokens: false }));
    expect(promptIds(templated, messages, 'template')).toEqual(promptIds(templated, messages));
    expect(promptIds(templated, messages)[0]).not.toBe(templated.bosTokenId);
  });

  it('joins the contents by newlines without a template, and ends with one for a plain-text adapter', () => {
    expect(promptIds(plain, messages)).toEqual(plain.encode('Once upon a time\nthere was', { add_special_tokens: true }));
    expect(promptIds(templated, messages, 'plain')).toEqual(templated.encode('Once upon a time\nthere was\n', { add_special_tokens: true }));
    expect(() => promptIds(plain, messages, 'template')).toThrow('has no chat_template');
  });

  it('encodes a string as it is, with the tokenizer\'s special tokens', () => {
    expect(promptIds(templated, 'Once upon a time')).toEqual(templated.encode('Once upon a time', { add_special_tokens: true }));
  });
});

describe('samplingOptions', () => {
  it('is greedy with transformers\' defaults without a generation config', () => {
    expect(samplingOptions(null)).toEqual({ do_sample: false, temperature: 1, top_p: 1, top_k: 50 });
  });

  it('reads generation_config.json, each given setting overriding it', () => {
    const gc = { do_sample: true, temperature: 0.7, top_p: 0.9, top_k: 20 };
    expect(samplingOptions(gc)).toEqual(gc);
    expect(samplingOptions(gc, { top_k: 5 })).toEqual({ ...gc, top_k: 5 });
    // A temperature given decides sampling: 0 is greedy whatever the config says, above 0 samples.
    expect(samplingOptions(gc, { temperature: 0 })).toMatchObject({ do_sample: false, temperature: 0 });
    expect(samplingOptions({ do_sample: false }, { temperature: 0.5 })).toMatchObject({ do_sample: true, temperature: 0.5 });
  });
});
