/**
 * Preference data as TRL tokenises it: pairs (prompt, chosen, rejected) for DPO, ORPO and SimPO,
 * and unpaired rows (prompt, completion, label) for KTO. Token lists are kept apart (prompt and
 * completion), so a method builds the sequences it needs (KTO's mismatched pairs for its KL term).
 */
import { isUserError } from '../errors.ts';
import { type DatasetRow, type RowError, rowLabel, rowRef } from './dataset.ts';
import { type KtoFormat, type PairFormat, toPairRows, toUnpairedRows } from './formats.ts';
import { IGNORE_INDEX, lengthStats, lowerFirst, rowCount, startsWith, type LengthStats } from './sft.ts';
import type { ChatMessage, TextTokenizer } from './tokenizer.ts';

/** One tokenised preference pair: the prompt's tokens once, each completion's own tokens after it. */
export interface PairExample {
  /** 1-based line of the row in its file. */
  line: number;
  prompt_ids: number[];
  chosen_ids: number[];
  rejected_ids: number[];
}

/** One tokenised KTO row: a completion judged desirable (label true) or not. */
export interface KtoExample {
  line: number;
  prompt_ids: number[];
  completion_ids: number[];
  label: boolean;
}

export interface PreferenceOptions {
  /**
   * Longest sequence, prompt + one completion, in tokens (TRL 1.x's DPOConfig and KTOConfig
   * `max_length`, default 1024 there); null keeps all. Cut as `truncation_mode` says, after the two
   * cuts below. Cut further to the model's context length where that is smaller, as SFT is.
   */
  max_length: number | null;
  /**
   * The prompt keeps only its last this many tokens (TRL 0.x's DPOConfig `max_prompt_length`, whose
   * default was 512; TRL 1.x removed it and cuts only to `max_length`, which null reproduces).
   */
  max_prompt_length: number | null;
  /** Each completion keeps only its first this many tokens (TRL 0.x's `max_completion_length`); null: not cut. */
  max_completion_length: number | null;
  /**
   * How a sequence longer than `max_length` is cut (TRL 1.x's default "keep_start"). keep_start keeps
   * its first `max_length` tokens, and a row whose prompt alone has `max_length` tokens or more is
   * dropped, as TRL 1.x drops it, for it would keep no completion token. keep_end keeps the last
   * tokens, so the prompt loses its start first (TRL 1.x deprecates this mode; its KTOTrainer only
   * keeps the start). TRL cuts the chosen and the rejected sequence each on its own; here the prompt
   * is shared, so it loses what the longer of the two needs, and the shorter keeps a little less
   * prompt than TRL would keep.
   */
  truncation_mode: 'keep_start' | 'keep_end';
  /** Prepended as a system message to conversational prompts that do not start with one; text rows are left alone. */
  system_prompt?: string | null;
}

export interface PairData {
  format: PairFormat;
  examples: PairExample[];
  errors: RowError[];
  /** Rows left out, with why (a prompt that fills `max_length`, a completion without a token). */
  dropped: { line: number; reason: string }[];
  /** How many kept examples were cut by `max_length`, `max_prompt_length` or `max_completion_length`. */
  truncated: number;
  /** The cut applied: `max_length`, or the model's context length where smaller; null where nothing is cut. */
  max_length: number | null;
  warnings: string[];
}

export interface KtoData {
  format: KtoFormat;
  examples: KtoExample[];
  errors: RowError[];
  dropped: { line: number; reason: string }[];
  truncated: number;
  max_length: number | null;
  warnings: string[];
}

/**
 * Tokenises preference pairs as TRL 1.x's DPOTrainer (`_prepare_dataset`) does, for DPO, ORPO and
 * SimPO alike:
 * - an implicit prompt is extracted first (`toPairRows`);
 * - text rows: `eos_token` is appended to each completion that does not end with it; the prompt and
 *   prompt + completion are tokenised with the tokenizer's own special tokens (BOS where it adds one,
 *   so the prompt starts with BOS once, and no BOS is added by hand where it adds none);
 * - conversations: the prompt is rendered with the generation prompt, prompt + completion rendered
 *   whole, both tokenised without special tokens (the template writes its own); no EOS is appended,
 *   the template's end of turn closes each completion;
 * - each completion is the tokens of prompt + completion after as many as the prompt alone has
 *   (TRL warns, as here, where the prompt's tokens are not their start);
 * - then the cuts of `PreferenceOptions`.
 * `format` is the file's as `detectFormatFor` gave it; explicit and implicit pairs are read alike,
 * row by row.
 * TRL 1.x's experimental ORPO and CPO (SimPO) trainers still tokenise the TRL 0.x way (template text,
 * BOS and EOS ids added by hand); one layout serves all three methods here.
 */
export function tokenizePairs(
  rows: DatasetRow[],
  format: PairFormat,
  tokenizer: TextTokenizer,
  opts: PreferenceOptions,
  file: string,
): PairData {
  const converted = toPairRows(rows, file, { system_prompt: opts.system_prompt });
  const sequences = converted.rows.map((row): Sequences =>
    row.kind === 'text'
      ? { kind: 'text', line: row.line, prompt: row.prompt, completions: [row.chosen, row.rejected] }
      : { kind: 'chat', line: row.line, prompt: row.prompt, completions: [row.chosen, row.rejected] },
  );
  const { kept, ...data } = tokenizeAll(sequences, ['chosen', 'rejected'], tokenizer, opts, file);
  return {
    format,
    ...data,
    examples: kept.map(({ line, prompt, completions: [chosen, rejected] }) => ({
      line,
      prompt_ids: prompt,
      chosen_ids: chosen,
      rejected_ids: rejected,
    })),
    errors: [...converted.errors, ...data.errors],
  };
}

/**
 * Tokenises KTO rows as TRL 1.x's KTOTrainer does: as `tokenizePairs` tokenises one completion
 * (EOS appended to text completions, templates for conversations, the same cuts), with preference
 * pairs first unpaired into a desirable and an undesirable row of the same line (`toUnpairedRows`).
 * The mismatched completions of KTO's KL term are the method's to pair, batch by batch. Every
 * format of KTO's is read row by row, so a file may mix labelled completions and pairs.
 */
export function tokenizeKto(
  rows: DatasetRow[],
  format: KtoFormat,
  tokenizer: TextTokenizer,
  opts: PreferenceOptions,
  file: string,
): KtoData {
  const converted = toUnpairedRows(rows, file, { system_prompt: opts.system_prompt });
  const sequences = converted.rows.map((row): Sequences =>
    row.kind === 'text'
      ? { kind: 'text', line: row.line, prompt: row.prompt, completions: [row.completion] }
      : { kind: 'chat', line: row.line, prompt: row.prompt, completions: [row.completion] },
  );
  const { kept, ...data } = tokenizeAll(sequences, ['completion'], tokenizer, opts, file);
  return {
    format,
    ...data,
    examples: kept.map(({ index, line, prompt, completions: [completion] }) => ({
      line,
      prompt_ids: prompt,
      completion_ids: completion,
      label: converted.rows[index].label,
    })),
    errors: [...converted.errors, ...data.errors],
  };
}

/** A prompt and the completions that follow it, all text or all conversation. */
type Sequences =
  | { kind: 'text'; line: number; prompt: string; completions: string[] }
  | { kind: 'chat'; line: number; prompt: ChatMessage[]; completions: ChatMessage[][] };

/** A row kept: its prompt and completions after the cuts; `index` is its place in the rows given. */
interface Kept {
  index: number;
  line: number;
  prompt: number[];
  completions: number[][];
}

/**
 * The loop both methods share: tokenise, cut, drop, and gather the file's warnings. `names` name the
 * completions in a dropped row's reason.
 */
function tokenizeAll(
  rows: Sequences[],
  names: string[],
  tokenizer: TextTokenizer,
  opts: PreferenceOptions,
  file: string,
): { kept: Kept[]; errors: RowError[]; dropped: { line: number; reason: string }[]; truncated: number; max_length: number | null; warnings: string[] } {
  const modelLimit = tokenizer.maxPositionEmbeddings;
  const capped = modelLimit !== null && (opts.max_length === null || opts.max_length > modelLimit);
  const maxLength = capped ? modelLimit : opts.max_length;
  const cutTo = capped ? `the model's ${maxLength} positions` : `max_length ${maxLength}`;
  const out = {
    kept: [] as Kept[],
    errors: [] as RowError[],
    dropped: [] as { line: number; reason: string }[],
    truncated: 0,
    max_length: maxLength,
    warnings: [] as string[],
  };

  const textRows = rows.filter((r) => r.kind === 'text').length;
  if (opts.system_prompt && textRows > 0) {
    out.warnings.push(
      `${file}: system_prompt applies to conversations only; ${rowCount(textRows)} of plain text ${textRows === 1 ? 'is' : 'are'} tokenised without it.`,
    );
  }

  const mismatch: number[] = [];
  const beyondModel: number[] = [];
  for (const [index, row] of rows.entries()) {
    let tokens: Tokenised;
    try {
      tokens = tokenizeSequences(tokenizer, row);
    } catch (e) {
      // Without any template the whole file is unusable; a template that rejects one row spoils only that row.
      if (!isUserError(e) || !tokenizer.hasChatTemplate) throw e;
      out.errors.push({ line: row.line, message: `${rowLabel(file, row.line)}: ${lowerFirst(e.message)}` });
      continue;
    }
    if (tokens.mismatch) mismatch.push(row.line);
    const cut = truncate(tokens, opts, maxLength, cutTo);
    if ('dropped' in cut) {
      out.dropped.push({ line: row.line, reason: cut.dropped });
      continue;
    }
    const empty = cut.completions.findIndex((c) => c.length === 0);
    if (empty !== -1) {
      out.dropped.push({ line: row.line, reason: `its ${names[empty]} completion has no token after the prompt` });
      continue;
    }
    if (cut.overLength && capped) beyondModel.push(row.line);
    if (cut.truncated) out.truncated++;
    out.kept.push({ index, line: row.line, prompt: cut.prompt, completions: cut.completions });
  }

  if (beyondModel.length > 0) {
    const asked = opts.max_length === null ? 'max_length is unset' : `max_length ${opts.max_length} is larger`;
    const one = beyondModel.length === 1;
    out.warnings.push(
      `${file}: ${rowCount(beyondModel.length)} (first on ${rowRef(file, beyondModel[0])}) ${one ? 'is' : 'are'} longer than the model's ${maxLength} positions (max_position_embeddings in its config.json) and ${asked}, so ${one ? 'it is' : 'they are'} cut to ${maxLength} tokens.`,
    );
  }
  if (mismatch.length > 0) {
    out.warnings.push(
      `${file}: on ${rowCount(mismatch.length)} (first on ${rowRef(file, mismatch[0])}) the tokens of prompt + completion do not start with the tokens of the prompt alone, so the boundary between prompt and completion there is approximate.`,
    );
  }
  return out;
}

interface Tokenised {
  prompt: number[];
  completions: number[][];
  /** Some prompt + completion does not start with the prompt's own tokens. */
  mismatch: boolean;
}

function tokenizeSequences(tokenizer: TextTokenizer, row: Sequences): Tokenised {
  let prompt: number[];
  let whole: number[][];
  if (row.kind === 'text') {
    const eos = tokenizer.eosToken;
    prompt = tokenizer.encode(row.prompt);
    whole = row.completions.map((c) => tokenizer.encode(row.prompt + (c.endsWith(eos) ? c : c + eos)));
  } else {
    const render = (messages: ChatMessage[], add_generation_prompt = false) =>
      tokenizer.encode(tokenizer.applyChatTemplate(messages, { add_generation_prompt }), { add_special_tokens: false });
    prompt = render(row.prompt, true);
    whole = row.completions.map((c) => render([...row.prompt, ...c]));
  }
  return {
    prompt,
    completions: whole.map((ids) => ids.slice(prompt.length)),
    mismatch: whole.some((ids) => !startsWith(ids, prompt)),
  };
}

type Cut =
  | { prompt: number[]; completions: number[][]; truncated: boolean; overLength: boolean }
  | { dropped: string };

/** The cuts of `PreferenceOptions`, in TRL 0.x's order: prompt, completions, then the whole sequence. */
function truncate(tokens: Tokenised, opts: PreferenceOptions, maxLength: number | null, cutTo: string): Cut {
  let { prompt, completions } = tokens;
  let truncated = false;
  const maxPrompt = opts.max_prompt_length;
  if (maxPrompt !== null && prompt.length > maxPrompt) {
    prompt = prompt.slice(prompt.length - maxPrompt);
    truncated = true;
  }
  const maxCompletion = opts.max_completion_length;
  if (maxCompletion !== null && completions.some((c) => c.length > maxCompletion)) {
    completions = completions.map((c) => c.slice(0, maxCompletion));
    truncated = true;
  }
  const longest = Math.max(...completions.map((c) => c.length));
  const overLength = maxLength !== null && prompt.length + longest > maxLength;
  if (maxLength !== null && opts.truncation_mode === 'keep_start') {
    if (prompt.length >= maxLength) {
      return { dropped: `its prompt alone has ${prompt.length} tokens, which fill ${cutTo} and leave no completion token` };
    }
    if (prompt.length + longest > maxLength) {
      completions = completions.map((c) => c.slice(0, maxLength - prompt.length));
      truncated = true;
    }
  } else if (maxLength !== null && prompt.length + longest > maxLength) {
    prompt = prompt.slice(prompt.length - Math.max(0, maxLength - longest));
    completions = completions.map((c) => c.slice(Math.max(0, c.length - maxLength)));
    truncated = true;
  }
  return { prompt, completions, truncated, overLength };
}

/**
 * One pair as `finetune data --dump` writes it: each sequence as the model reads it, prompt then
 * completion, with labels -100 on the prompt (the completion's tokens are what the loss sums).
 */
export function pairDumpRow(e: PairExample): {
  chosen_input_ids: number[];
  chosen_labels: number[];
  rejected_input_ids: number[];
  rejected_labels: number[];
} {
  const chosen = dumpSequence(e.prompt_ids, e.chosen_ids);
  const rejected = dumpSequence(e.prompt_ids, e.rejected_ids);
  return {
    chosen_input_ids: chosen.input_ids,
    chosen_labels: chosen.labels,
    rejected_input_ids: rejected.input_ids,
    rejected_labels: rejected.labels,
  };
}

/** One KTO row as `finetune data --dump` writes it, labels -100 on the prompt. */
export function ktoDumpRow(e: KtoExample): { input_ids: number[]; labels: number[]; label: boolean } {
  return { ...dumpSequence(e.prompt_ids, e.completion_ids), label: e.label };
}

function dumpSequence(prompt: number[], completion: number[]): { input_ids: number[]; labels: number[] } {
  return {
    input_ids: [...prompt, ...completion],
    labels: [...prompt.map(() => IGNORE_INDEX), ...completion],
  };
}

export interface PairStats {
  num_examples: number;
  /** Tokens of both sequences of every pair, prompt counted in each: what an epoch reads. */
  total_tokens: number;
  prompt: LengthStats;
  chosen: LengthStats;
  rejected: LengthStats;
}

export interface KtoStats {
  num_examples: number;
  num_desirable: number;
  num_undesirable: number;
  total_tokens: number;
  prompt: LengthStats;
  completion: LengthStats;
}

/** Token lengths after the cuts (what trains), as sft.ts's `datasetStats` gives them. */
export function pairStats(examples: PairExample[]): PairStats {
  const prompt = examples.map((e) => e.prompt_ids.length);
  const chosen = examples.map((e) => e.chosen_ids.length);
  const rejected = examples.map((e) => e.rejected_ids.length);
  return {
    num_examples: examples.length,
    total_tokens: 2 * sum(prompt) + sum(chosen) + sum(rejected),
    prompt: lengthsOf(prompt),
    chosen: lengthsOf(chosen),
    rejected: lengthsOf(rejected),
  };
}

export function ktoStats(examples: KtoExample[]): KtoStats {
  const prompt = examples.map((e) => e.prompt_ids.length);
  const completion = examples.map((e) => e.completion_ids.length);
  const desirable = examples.filter((e) => e.label).length;
  return {
    num_examples: examples.length,
    num_desirable: desirable,
    num_undesirable: examples.length - desirable,
    total_tokens: sum(prompt) + sum(completion),
    prompt: lengthsOf(prompt),
    completion: lengthsOf(completion),
  };
}

function sum(values: number[]): number {
  return values.reduce((a, b) => a + b, 0);
}

/** Length statistics of unsorted lengths, as sft.ts computes them. */
function lengthsOf(values: number[]): LengthStats {
  return lengthStats([...values].sort((a, b) => a - b));
}
