/**
 * A preference data file as the studio's data view and `finetune data --method …` show it: the
 * format for the method, every bad or dropped row with its line, counts and lengths, and any row
 * as the pair (prompt once, chosen and rejected) or KTO row (with its label) training reads,
 * decoded from its tokens.
 */
import type { RowError } from './dataset.ts';
import { parseDatasetText } from './dataset.ts';
import { detectFormatFor, type KtoFormat, type PairFormat, type RowFormat } from './formats.ts';
import { ktoStats, pairStats, tokenizeKto, tokenizePairs, type KtoExample, type KtoStats, type PairExample, type PairStats } from './preference.ts';
import type { TextTokenizer } from './tokenizer.ts';
import type { PreferenceRecipe } from '../recipe.ts';
import { preferenceOptions } from '../train/methods/index.ts';

export type PreferenceStats = { kind: 'pairs'; stats: PairStats } | { kind: 'kto'; stats: KtoStats };

export interface PreferenceReport {
  format: RowFormat | null;
  /** Lines with a row in the file (good or bad), whatever the page. */
  num_lines: number;
  num_rows: number;
  errors: RowError[];
  dropped: { line: number; reason: string }[];
  warnings: string[];
  truncated: number;
  preference: PreferenceStats | null;
  examples: (PairExample | KtoExample)[];
  /** Each row in file order: its line, and its example when it has one. */
  lines: { line: number; example: PairExample | KtoExample | null; problem: string | null }[];
}

/**
 * The report for the recipe's preference method (dpo, kto, orpo, simpo). With `page` (the rows
 * browser's), only the lines from index `start`, `count` of them, are tokenised and reported in
 * `lines`, and the counts and statistics cover those alone; `num_lines` stays the file's.
 */
export function preferenceReport(text: string, file: string, tokenizer: TextTokenizer, recipe: PreferenceRecipe, page?: { start: number; count: number }): PreferenceReport {
  const parsed = parseDatasetText(text, file);
  // The format is the whole file's, decided over every row; the tokens are the page's at most.
  const format = parsed.rows.length ? detectFormatFor(recipe.method, parsed.rows, file) : null;
  const everyLine = [...new Set([...parsed.rows.map((r) => r.line), ...parsed.errors.map((e) => e.line)])].sort((a, b) => a - b);
  const allLines = page ? everyLine.slice(page.start, page.start + page.count) : everyLine;
  const shown = new Set(allLines);
  const rows = page ? parsed.rows.filter((r) => shown.has(r.line)) : parsed.rows;
  const opts = preferenceOptions(recipe);
  const data =
    format === null ? null : recipe.method === 'kto' ? tokenizeKto(rows, format as KtoFormat, tokenizer, opts, file) : tokenizePairs(rows, format as PairFormat, tokenizer, opts, file);
  const errors = [...parsed.errors, ...(data?.errors ?? [])].sort((a, b) => a.line - b.line);
  const examples = data?.examples ?? [];
  const preference: PreferenceStats | null =
    data === null ? null : recipe.method === 'kto' ? { kind: 'kto', stats: ktoStats(examples as KtoExample[]) } : { kind: 'pairs', stats: pairStats(examples as PairExample[]) };
  // KTO reads a pair as two rows of one line; the browser shows each line once, with its first.
  const byLine = new Map<number, PairExample | KtoExample>();
  for (const e of examples) if (!byLine.has(e.line)) byLine.set(e.line, e);
  const problems = new Map<number, string>([...errors.map((e): [number, string] => [e.line, e.message]), ...(data?.dropped ?? []).map((d): [number, string] => [d.line, `Left out of training: ${d.reason}.`])]);
  return {
    format,
    num_lines: everyLine.length,
    num_rows: parsed.rows.length + parsed.errors.length,
    errors,
    dropped: data?.dropped ?? [],
    warnings: data?.warnings ?? [],
    truncated: data?.truncated ?? 0,
    preference,
    examples,
    lines: allLines.map((line) => ({ line, example: byLine.get(line) ?? null, problem: problems.get(line) ?? null })),
  };
}
