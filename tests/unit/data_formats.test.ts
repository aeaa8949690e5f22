import { describe, expect, it } from 'vitest';
import { userErrorFrom } from './helpers/errors.ts';
import { UserError } from '../../src/engine/errors.ts';
import {
  type DatasetRow,
  MAX_ROW_CHARS,
  createJsonlParser,
  detectFormat,
  parseDatasetText,
  toSftRows,
} from '../../src/engine/data/dataset.ts';

const jsonl = (...rows: unknown[]) => rows.map((r) => JSON.stringify(r)).join('\n') + '\n';

function load(text: string, file = 'train.jsonl', system_prompt?: string) {
  const parsed = parseDatasetText(text, file);
  const format = detectFormat(parsed.rows, file);
  const converted = toSftRows(parsed.rows, format, file, { system_prompt });
  return { format, parsed, ...converted };
}


describe('format detection and conversion', () => {
  it('text', () => {
    const { format, rows, errors } = load(jsonl({ text: 'Once upon a time.' }, { text: 'The end.' }));
    expect(format).toBe('text');
    expect(errors).toEqual([]);
    expect(rows).toEqual([
      { kind: 'text', line: 1, text: 'Once upon a time.' },
      { kind: 'text', line: 2, text: 'The end.' },
    ]);
  });

  it('prompt/completion as strings', () => {
    const { format, rows } = load(jsonl({ prompt: 'The sky is', completion: ' blue.' }));
    expect(format).toBe('prompt_completion');
    expect(rows).toEqual([{ kind: 'prompt_completion', line: 1, prompt: 'The sky is', completion: ' blue.' }]);
  });

  it('prompt/completion as messages', () => {
    const prompt = [{ role: 'user', content: 'What colour is the sky?' }];
    const completion = [{ role: 'assistant', content: 'Blue.' }];
    const { format, rows } = load(jsonl({ prompt, completion }));
    expect(format).toBe('prompt_completion');
    expect(rows).toEqual([{ kind: 'chat_prompt_completion', line: 1, prompt, completion }]);
  });

  it('messages', () => {
    const messages = [
      { role: 'user', content: 'Hi' },
      { role: 'assistant', content: 'Hello!' },
    ];
    const { format, rows } = load(jsonl({ messages }));
    expect(format).toBe('messages');
    expect(rows).toEqual([{ kind: 'messages', line: 1, messages }]);
  });

  it('alpaca, with and without input', () => {
    const { format, rows } = load(
      jsonl(
        { instruction: 'Translate to French.', input: 'cat', output: 'chat' },
        { instruction: 'Name a colour.', input: '', output: 'Red.' },
        { instruction: 'Name a fruit.', output: 'Apple.' },
      ),
    );
    expect(format).toBe('alpaca');
    expect(rows[0]).toEqual({
      kind: 'chat_prompt_completion',
      line: 1,
      prompt: [{ role: 'user', content: 'Translate to French.\n\ncat' }],
      completion: [{ role: 'assistant', content: 'chat' }],
    });
    expect(rows[1].kind === 'chat_prompt_completion' && rows[1].prompt).toEqual([{ role: 'user', content: 'Name a colour.' }]);
    expect(rows[2].kind === 'chat_prompt_completion' && rows[2].completion).toEqual([{ role: 'assistant', content: 'Apple.' }]);
  });

  it('sharegpt, with its speaker names mapped to roles', () => {
    const conversations = [
      { from: 'system', value: 'Be kind.' },
      { from: 'human', value: 'Hi' },
      { from: 'gpt', value: 'Hello!' },
      { from: 'user', value: 'Bye' },
      { from: 'model', value: 'Bye!' },
    ];
    const { format, rows, errors } = load(jsonl({ conversations }, { conversations: [{ from: 'narrator', value: 'x' }] }));
    expect(format).toBe('sharegpt');
    expect(rows).toEqual([
      {
        kind: 'messages',
        line: 1,
        messages: [
          { role: 'system', content: 'Be kind.' },
          { role: 'user', content: 'Hi' },
          { role: 'assistant', content: 'Hello!' },
          { role: 'user', content: 'Bye' },
          { role: 'assistant', content: 'Bye!' },
        ],
      },
    ]);
    expect(errors).toEqual([
      {
        line: 2,
        message:
          'train.jsonl, line 2: "conversations[0].from" is "narrator"; expected human, gpt, system or tool (or user, assistant, model).',
      },
    ]);
  });

  it('prepends system_prompt to conversations without one, and leaves the others alone', () => {
    const { rows } = load(
      jsonl(
        { messages: [{ role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Hello' }] },
        { messages: [{ role: 'system', content: 'Mine.' }, { role: 'user', content: 'Hi' }] },
        { instruction: 'Add.', output: '2' },
      ),
      'train.jsonl',
      'Be brief.',
    );
    expect(rows[0].kind === 'messages' && rows[0].messages[0]).toEqual({ role: 'system', content: 'Be brief.' });
    expect(rows[1].kind === 'messages' && rows[1].messages[0]).toEqual({ role: 'system', content: 'Mine.' });
    // Row 3 is alpaca in a messages file: rejected, not converted.
    expect(rows).toHaveLength(2);
  });

  it('decides by the majority of rows and names the stray ones', () => {
    const { format, rows, errors } = load(jsonl({ text: 'x' }, { prompt: 'a', completion: 'b' }, { prompt: 'c', completion: 'd' }));
    expect(format).toBe('prompt_completion');
    expect(rows).toHaveLength(2);
    expect(errors[0].line).toBe(1);
    expect(errors[0].message).toMatch(/^train\.jsonl, line 1: expected a row like \{"prompt"/);
  });
});

describe('row validation', () => {
  it('names the line and the missing field', () => {
    const { rows, errors } = load(jsonl({ prompt: 'a', completion: 'b' }, { prompt: 'The sky is' }));
    expect(rows).toHaveLength(1);
    expect(errors).toEqual([
      { line: 2, message: 'train.jsonl, line 2: "completion" is missing; prompt/completion rows need both.' },
    ]);
  });

  it('names a field of the wrong type, a bad role and an empty conversation', () => {
    const { errors } = load(
      jsonl(
        { messages: [{ role: 'user', content: 42 }] },
        { messages: [{ role: 'bot', content: 'hi' }] },
        { messages: [] },
        { prompt: 'a', completion: [{ role: 'assistant', content: 'b' }] },
      ),
    );
    expect(errors.map((e) => e.message)).toEqual([
      'train.jsonl, line 1: "messages[0].content" must be a string, not a number; chat rows need a "messages" list of {role, content}.',
      'train.jsonl, line 2: "messages[0].role" is "bot"; expected one of system, user, assistant, tool.',
      'train.jsonl, line 3: "messages" is empty; chat rows need a "messages" list of {role, content}.',
      'train.jsonl, line 4: expected a row like {"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}, as most rows of this file are, but this one has "prompt", "completion".',
    ]);
  });

  it('rejects a row mixing a string prompt with a message-list completion', () => {
    const { errors } = load(jsonl({ prompt: 'a', completion: [{ role: 'assistant', content: 'b' }] }));
    expect(errors[0].message).toBe(
      'train.jsonl, line 1: "prompt" and "completion" must both be strings or both be lists of messages.',
    );
  });
});

describe('parsing', () => {
  it('reports a malformed line with the file and line, and keeps the others', () => {
    const text = '{"text": "a"}\n{"text": "b"}\n{"text": "c",}\n{"text": "d"}\n';
    const { rows, errors } = parseDatasetText(text, 'train.jsonl');
    expect(rows.map((r) => r.line)).toEqual([1, 2, 4]);
    expect(errors).toHaveLength(1);
    expect(errors[0].line).toBe(3);
    expect(errors[0].message).toMatch(/^train\.jsonl, line 3: not valid JSON \(.+\)\.$/);
  });

  it('skips blank lines but keeps counting them, and tolerates CRLF, a BOM and no final newline', () => {
    const text = '\uFEFF{"text": "a"}\r\n\r\n   \n{"text": "b"}\n\n{"text": "c"}';
    const { rows, errors } = parseDatasetText(text, 'train.jsonl');
    expect(errors).toEqual([]);
    expect(rows).toEqual([
      { line: 1, value: { text: 'a' } },
      { line: 4, value: { text: 'b' } },
      { line: 6, value: { text: 'c' } },
    ]);
  });

  it('rejects a line that is JSON but not an object', () => {
    const { errors } = parseDatasetText('{"text": "a"}\n[1, 2]\n', 'train.jsonl');
    expect(errors).toEqual([{ line: 2, message: 'train.jsonl, line 2: expected a JSON object, found a list.' }]);
  });

  it('streams: chunks cut anywhere give the same rows as the whole text', () => {
    const text = jsonl({ text: 'héllo' }, { text: 'wörld' }) + '\n{"text": broken}\n' + jsonl({ text: 'last' });
    const whole = parseDatasetText(text, 'train.jsonl');
    for (const size of [1, 3, 7, 1000]) {
      const parser = createJsonlParser('train.jsonl');
      const rows: DatasetRow[] = [];
      const errors: { line: number; message: string }[] = [];
      for (let i = 0; i < text.length; i += size) {
        const out = parser.push(text.slice(i, i + size));
        rows.push(...out.rows);
        errors.push(...out.errors);
      }
      const out = parser.end();
      rows.push(...out.rows);
      errors.push(...out.errors);
      expect({ rows, errors }).toEqual(whole);
    }
    expect(whole.rows.map((r) => r.line)).toEqual([1, 2, 5]);
    expect(whole.errors.map((e) => e.line)).toEqual([4]);
  });

  it('refuses a row longer than MAX_ROW_CHARS with its line, without parsing it, and keeps the others', () => {
    const long = JSON.stringify({ text: 'x'.repeat(MAX_ROW_CHARS) });
    const text = `{"text": "a"}\n${long}\r\n{"text": "b"}\n${long}`;
    const { rows, errors } = parseDatasetText(text, 'train.jsonl');
    expect(rows.map((r) => r.line)).toEqual([1, 3]);
    expect(errors.map((e) => e.line)).toEqual([2, 4]);
    expect(errors[0].message).toBe(
      `train.jsonl, line 2: the row is ${long.length.toLocaleString('en-US')} characters long, over the limit of 1,000,000 characters a row may have; split it into shorter rows.`,
    );
    expect(MAX_ROW_CHARS).toBe(1_000_000);
  });

  it('streams past an overlong line in chunks, giving the same rows and errors as the whole text', () => {
    const long = JSON.stringify({ text: 'y'.repeat(3 * MAX_ROW_CHARS) });
    const text = `{"text": "a"}\n${long}\n{"text": "b"}\n${long}\n{"text": "c"}\n${long}`;
    const whole = parseDatasetText(text, 'train.jsonl');
    expect(whole.rows.map((r) => r.line)).toEqual([1, 3, 5]);
    expect(whole.errors.map((e) => e.line)).toEqual([2, 4, 6]);
    for (const size of [65_536, 999_999]) {
      const parser = createJsonlParser('train.jsonl');
      const rows: DatasetRow[] = [];
      const errors: { line: number; message: string }[] = [];
      for (let i = 0; i < text.length; i += size) {
        const out = parser.push(text.slice(i, i + size));
        rows.push(...out.rows);
        errors.push(...out.errors);
      }
      const out = parser.end();
      rows.push(...out.rows);
      errors.push(...out.errors);
      expect({ rows, errors }).toEqual(whole);
    }
  });

  it('refuses an element of a .json array longer than MAX_ROW_CHARS, by row', () => {
    const text = JSON.stringify([{ text: 'a' }, { text: 'z'.repeat(MAX_ROW_CHARS) }, { text: 'b' }]);
    const { rows, errors } = parseDatasetText(text, 'train.json');
    expect(rows.map((r) => r.line)).toEqual([1, 3]);
    expect(errors).toEqual([
      { line: 2, message: 'train.json, row 2: the row is over the limit of 1,000,000 characters a row may have; split it into shorter rows.' },
    ]);
  });

  it('reads a .json array, naming elements by row', () => {
    const text = JSON.stringify([{ prompt: 'a', completion: 'b' }, 'oops', { prompt: 'c' }], null, 2);
    const { format, parsed, rows, errors } = load(text, 'train.json');
    expect(format).toBe('prompt_completion');
    expect(rows).toEqual([{ kind: 'prompt_completion', line: 1, prompt: 'a', completion: 'b' }]);
    expect([...parsed.errors, ...errors].map((e) => e.message)).toEqual([
      'train.json, row 2: expected a JSON object, found a string.',
      'train.json, row 3: "completion" is missing; prompt/completion rows need both.',
    ]);
  });

  it('reports a broken .json file by line, and a .json file that is not an array', () => {
    expect(userErrorFrom(() => parseDatasetText('[\n  {"text": "a"},\n  {"text" "b"}\n]', 'train.json')).message).toMatch(
      /^train\.json, line 3: not valid JSON \(/,
    );
    expect(userErrorFrom(() => parseDatasetText('{"text": "a"}\n{"text": "b"}\n', 'train.json')).message).toMatch(
      /^train\.json: expected a JSON array of row objects.*\.jsonl\.$/,
    );
  });

  it('refuses an empty file, listing the accepted shapes, in the same sentence as detectFormat', () => {
    for (const [text, file] of [['', 'train.jsonl'], ['\n\n', 'train.jsonl'], [' \r\n\t\n', 'train.jsonl'], ['\uFEFF', 'train.jsonl'], ['', 'train.json'], ['  \n', 'train.json'], ['[]', 'train.json'], ['[\n]\n', 'train.json']]) {
      const error = userErrorFrom(() => parseDatasetText(text, file));
      expect(error.message).toMatch(new RegExp(`^${file.replace('.', '\\.')} has no rows: it is empty or holds only blank lines; accepted rows are `));
      expect(error.file).toBe(file);
      for (const key of ['"text"', '"prompt"', '"messages"', '"instruction"', '"conversations"']) {
        expect(error.message).toContain(key);
      }
    }
    expect(userErrorFrom(() => detectFormat([], 'train.jsonl')).message).toBe(userErrorFrom(() => parseDatasetText('', 'train.jsonl')).message);
  });

  it('refuses rows with no recognised keys', () => {
    const { rows } = parseDatasetText(jsonl({ question: 'q', answer: 'a' }), 'train.jsonl');
    expect(userErrorFrom(() => detectFormat(rows, 'train.jsonl')).message).toMatch(
      /^train\.jsonl: no row has a recognised shape \(the first has keys "question", "answer"\); accepted rows are /,
    );
  });
});
