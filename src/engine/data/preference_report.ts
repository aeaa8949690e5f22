/**
 * A preference or GRPO data file as the studio's data view and `finetune data --method …` show it:
 * the format for the method, every bad or dropped row with its line, counts and lengths, and any
 * row as the pair (prompt once, chosen and rejected), KTO row (with its label) or GRPO prompt (with
 * the columns its reward functions receive) training reads, decoded from its tokens.
 */
import type { RowError } from './dataset.ts';
import { parseDatasetText } from './dataset.ts';
import { detectFormatFor, type KtoFormat, type PairFormat, type RowFormat } from './formats.ts';
import { ktoStats, pairStats, tokenizeKto, tokenizePairs, type KtoExample, type KtoStats, type PairExample, type PairStats } from './preference.ts';
import { tokenizePrompts, type PromptExample } from './prompts.ts';
import { lengthStats, type LengthStats } from './sft.ts';
import type { TextTokenizer } from './tokenizer.ts';
import type { GrpoRecipe, PreferenceRecipe } from '../recipe.ts';
import { preferenceOptions, promptOptions } from '../train/methods/index.ts';

/** GRPO's prompts: how many, their lengths in tokens, and the columns the reward functions receive. */
export interface PromptStats {
  num_examples: number;
  prompt: LengthStats;
  /** Every column besides `prompt` in any kept row, in first-seen order. */
  columns: string[];
}

export type PreferenceStats = { kind: 'pairs'; stats: PairStats } | { kind: 'kto'; stats: KtoStats } | { kind: 'prompts'; stats: PromptStats };

export function promptStats(examples: PromptExample[]): PromptStats {
  const columns = new Set<string>();
  for (const e of examples) for (const k of Object.keys(e.columns)) columns.add(k);
  return { num_examples: examples.length, prompt: lengthStats(examples.map((e) => e.prompt_ids.length)), columns: [...columns] };
}

type ReportExample = PairExample | KtoExample | PromptExample;

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
  examples: ReportExample[];
  /** Each row in file order: its line, and its example when it has one. */
  lines: { line: number; example: ReportExample | null; problem: string | null }[];
}

/**
 * The report for the recipe's preference method (dpo, kto, orpo, simpo). With `page` (the rows
 * browser's), only the lines from index `start`, `count` of them, are tokenised and reported in
 * `lines`, and the counts and statistics cover those alone; `num_lines` stays the file's.
 */
export function preferenceReport(text: string, file: string, tokenizer: TextTokenizer, recipe: PreferenceRecipe | GrpoRecipe, page?: { start: number; count: number }): PreferenceReport {
  const parsed = parseDatasetText(text, file);
  // The format is the whole file's, decided over every row; the tokens are the page's at most.
  const format = parsed.rows.length ? detectFormatFor(recipe.method, parsed.rows, file) : null;
  const everyLine = [...new Set([...parsed.rows.map((r) => r.line), ...parsed.errors.map((e) => e.line)])].sort((a, b) => a - b);
  const allLines = page ? everyLine.slice(page.start, page.start + page.count) : everyLine;
  const shown = new Set(allLines);
  const rows = page ? parsed.rows.filter((r) => shown.has(r.line)) : parsed.rows;
  let data: { examples: ReportExample[]; errors: RowError[]; dropped: { line: number; reason: string }[]; warnings: string[]; truncated: number } | null = null;
  let preference: PreferenceStats | null = null;
  if (format !== null && recipe.method === 'grpo') {
    const d = tokenizePrompts(rows, tokenizer, promptOptions(recipe), file);
    data = d;
    preference = { kind: 'prompts', stats: promptStats(d.examples) };
  } else if (format !== null && recipe.method === 'kto') {
    const d = tokenizeKto(rows, format as KtoFormat, tokenizer, preferenceOptions(recipe), file);
    data = d;
    preference = { kind: 'kto', stats: ktoStats(d.examples) };
  } else if (format !== null && recipe.method !== 'grpo') {
    const d = tokenizePairs(rows, format as PairFormat, tokenizer, preferenceOptions(recipe), file);
    data = d;
    preference = { kind: 'pairs', stats: pairStats(d.examples) };
  }
  const errors = [...parsed.errors, ...(data?.errors ?? [])].sort((a, b) => a.line - b.line);
  const examples = data?.examples ?? [];
  // KTO reads a pair as two rows of one line; the browser shows each line once, with its first.
  const byLine = new Map<number, ReportExample>();
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
