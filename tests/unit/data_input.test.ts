// Dataset files that hold nothing, or bytes that are not UTF-8: refused with one sentence naming
// the file (and the line), by the engine functions both the CLI and the studio's Worker call.
import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { decodeUtf8Text, firstInvalidUtf8 } from '../../src/engine/errors.ts';
import { createJsonlParser, detectFormat, parseDatasetText } from '../../src/engine/data/dataset.ts';
import { memoryFiles } from '../../src/engine/io/files.ts';
import { parseRecipe } from '../../src/engine/recipe.ts';
import { prepareRun } from '../../src/engine/run.ts';
import { Rng } from '../../src/engine/rng.ts';
import { userErrorFrom } from './helpers/errors.ts';
import { buildTinyModelFolder } from './helpers/tiny_model.ts';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

const utf8 = (s: string) => new TextEncoder().encode(s);
const bytes = (...parts: (string | number[])[]) => {
  const chunks = parts.map((p) => (typeof p === 'string' ? utf8(p) : Uint8Array.from(p)));
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
};

describe('decodeUtf8Text', () => {
  it('decodes UTF-8 and drops a byte-order mark', () => {
    expect(decodeUtf8Text(utf8('{"text": "café ☕ 𝄞"}\n'), 'train.jsonl')).toBe('{"text": "café ☕ 𝄞"}\n');
    expect(decodeUtf8Text(bytes([0xef, 0xbb, 0xbf], '{"text": "a"}\n'), 'train.jsonl')).toBe('{"text": "a"}\n');
    expect(decodeUtf8Text(new Uint8Array(0), 'train.jsonl')).toBe('');
  });

  it('names the line and column of the first invalid byte (a Latin-1 "é" on line 2)', () => {
    const file = bytes('{"text": "fine"}\n{"text": "caf', [0xe9], '"}\n{"text": "also ', [0xff], '"}\n');
    const e = userErrorFrom(() => decodeUtf8Text(file, 'data/train.jsonl'));
    expect(e.message).toBe('data/train.jsonl line 2 is not valid UTF-8 (byte 0xE9 at column 14, as in a file saved as Latin-1 or Windows-1252); save the file as UTF-8.');
    expect(e.file).toBe('data/train.jsonl');
    expect(e.line).toBe(2);
  });

  it('counts lines by their newlines and columns in characters', () => {
    expect(userErrorFrom(() => decodeUtf8Text(bytes([0x80], 'x'), 'a.jsonl')).message).toMatch(/^a\.jsonl line 1 is not valid UTF-8 \(byte 0x80 at column 1,/);
    expect(userErrorFrom(() => decodeUtf8Text(bytes([0xef, 0xbb, 0xbf], 'é☕', [0xc3]), 'a.jsonl')).message).toMatch(/ line 1 .*byte 0xC3 at column 3,/);
    expect(userErrorFrom(() => decodeUtf8Text(bytes('\r\n\n\n ', [0xed, 0xa0, 0x80]), 'a.jsonl')).line).toBe(4);
  });

  it('keeps the UTF-16 and UTF-32 sentence for those files', () => {
    const utf16le = bytes([0xff, 0xfe], [...'{"text": "a"}'].flatMap((c) => [c.charCodeAt(0), 0]));
    expect(userErrorFrom(() => decodeUtf8Text(utf16le, 'train.jsonl')).message).toBe('train.jsonl is UTF-16; save it as UTF-8.');
    const utf16NoBom = bytes([...'{"text": "a"}'].flatMap((c) => [c.charCodeAt(0), 0]));
    expect(userErrorFrom(() => decodeUtf8Text(utf16NoBom, 'train.jsonl')).message).toBe('train.jsonl is UTF-16; save it as UTF-8.');
    const utf32le = bytes([0xff, 0xfe, 0, 0], [...'{"t"}'].flatMap((c) => [c.charCodeAt(0), 0, 0, 0]));
    expect(userErrorFrom(() => decodeUtf8Text(utf32le, 'train.jsonl')).message).toBe('train.jsonl is UTF-32; save it as UTF-8.');
  });

  it('finds the invalid byte exactly where TextDecoder puts its first U+FFFD', () => {
    const rng = new Rng(7);
    const pieces = [[0x61], [0x0a], [0xc3, 0xa9], [0xe2, 0x98, 0x95], [0xf0, 0x9d, 0x84, 0x9e], [0x80], [0xc0, 0xaf], [0xe0, 0x80], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xf5], [0xe2, 0x98], [0xf0, 0x9d], [0xff]];
    for (let trial = 0; trial < 2000; trial++) {
      const parts: number[] = [];
      const n = 1 + (rng.nextU32() % 8);
      for (let i = 0; i < n; i++) parts.push(...pieces[rng.nextU32() % pieces.length]);
      const b = Uint8Array.from(parts);
      const lenient = new TextDecoder('utf-8', { ignoreBOM: true }).decode(b);
      const replaced = lenient.indexOf('\uFFFD');
      const expected = replaced === -1 ? b.length : utf8(lenient.slice(0, replaced)).length;
      expect(firstInvalidUtf8(b), `bytes ${parts.map((x) => x.toString(16)).join(' ')}`).toBe(expected);
    }
  });
});

describe('a dataset file without rows', () => {
  const sentence = /^train\.jsonl has no rows: it is empty or holds only blank lines; accepted rows are \{"text": "\.\.\."\}; /;

  it('is refused by the streaming parser the Worker reads slices with, however the slices fall', () => {
    const parser = createJsonlParser('train.jsonl');
    expect(parser.push('\n  ')).toEqual({ rows: [], errors: [] });
    expect(parser.push('\r\n\t')).toEqual({ rows: [], errors: [] });
    expect(userErrorFrom(() => parser.end()).message).toMatch(sentence);
    const once = createJsonlParser('train.jsonl');
    expect(userErrorFrom(() => once.end()).message).toMatch(sentence);
  });

  it('is not refused when it has a row, good or bad', () => {
    for (const chunks of [['{"text": "a"}'], ['\n\n{"text": "a"}\n', '\n'], ['not json\n'], ['{"te', 'xt": "a"}']]) {
      const parser = createJsonlParser('train.jsonl');
      let found = 0;
      for (const c of chunks) {
        const out = parser.push(c);
        found += out.rows.length + out.errors.length;
      }
      const end = parser.end();
      expect(found + end.rows.length + end.errors.length).toBe(1);
    }
  });

  it('gets the same sentence from parseDatasetText and from detectFormat', () => {
    const fromParser = userErrorFrom(() => parseDatasetText(' \n\n', 'train.jsonl'));
    expect(fromParser.message).toMatch(sentence);
    expect(fromParser.file).toBe('train.jsonl');
    expect(userErrorFrom(() => detectFormat([], 'train.jsonl')).message).toBe(fromParser.message);
  });

  it('stops a training run before anything else is built', async () => {
    const recipe = parseRecipe({ model: 'tiny', train_file: 'train.jsonl', max_steps: 1 }, 'recipe.json');
    const model = memoryFiles('tiny', buildTinyModelFolder({ architecture: 'LlamaForCausalLM', tokenizer: 'stories', seed: 5 }));
    const before = tf.memory().numTensors;
    for (const sources of [
      { model, train: { text: '\n\n', file: 'train.jsonl' } },
      { model, train: { text: '{"text": "Tom had a ball."}\n', file: 'train.jsonl' }, eval: { text: '', file: 'eval.jsonl' } },
    ]) {
      const error = await prepareRun(recipe, sources).then(() => null, (e: unknown) => e);
      expect(String((error as Error).message)).toMatch(/^(train|eval)\.jsonl has no rows: it is empty or holds only blank lines; /);
    }
    expect(tf.memory().numTensors).toBe(before);
  });
});
