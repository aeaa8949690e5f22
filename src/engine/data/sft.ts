/**
 * Rows to the token ids and labels SFT trains on, as TRL's SFTTrainer prepares its dataset
 * (`_prepare_dataset` in trl/trainer/sft_trainer.py): EOS added to plain text, chat templates for
 * conversations, the prompt masked out of prompt/completion rows, optionally everything but the
 * assistant's turns masked, then truncation to `max_length` keeping the start, and rows left with
 * nothing to learn dropped. Labels are not shifted; the loss shifts them.
 */
import { UserError, isUserError } from '../errors.ts';
import { type DatasetFormat, type DatasetRow, type RowError, type SftRow, rowLabel, rowRef, toSftRows } from './dataset.ts';
import type { ChatMessage, TextTokenizer } from './tokenizer.ts';

/** The label of a token the loss ignores, as in PyTorch's cross-entropy. */
export const IGNORE_INDEX = -100;

export interface SftOptions {
  /** Longest sequence kept, in tokens; longer ones lose their end (TRL's `truncation_mode="keep_start"`). null keeps all. */
  max_length: number | null;
  /** Train prompt/completion rows on the completion only. */
  completion_only_loss: boolean;
  /** Train conversations on the assistant's turns only. */
  assistant_only_loss: boolean;
  /** Prepended as a system message to conversations that do not start with one. */
  system_prompt?: string | null;
  /** false: conversations become plain text (contents joined by newlines) instead of going through the chat template. */
  use_chat_template?: boolean;
  /**
   * The model's context length: longer sequences are cut to it even where `max_length` is null or
   * larger, with a warning (TRL would train them past what the model's positions were trained for).
   * Omitted: the tokenizer's `maxPositionEmbeddings`; null: no cap.
   */
  max_position_embeddings?: number | null;
}

/**
 * A plain text row is tokenised from a prefix of this many characters per token it may keep (plus
 * PREFIX_MARGIN_TOKENS), not whole, so a row of megabytes costs what `max_length` keeps of it.
 * If the prefix gives too few tokens (tokens of many characters), it is doubled until it gives enough.
 */
export const PREFIX_CHARS_PER_TOKEN = 8;
/** Tokens tokenised beyond the cut, so that the cut cannot change the tokens kept. */
export const PREFIX_MARGIN_TOKENS = 16;

export interface SftExample {
  line: number;
  input_ids: number[];
  /** Same length as `input_ids`: the id where the token is trained, -100 where it is not. */
  labels: number[];
  /**
   * Only on an example cut to the maximum length: how many tokens the row has whole. A plain
   * text row much longer than the cut is tokenised only as far as the cut needs (see
   * PREFIX_CHARS_PER_TOKEN), so its count is extrapolated from that prefix's characters per token.
   */
  num_tokens_before_truncation?: number;
}

export interface SftData {
  format: DatasetFormat;
  examples: SftExample[];
  /** Rows that tokenised but left no token to train on, with why. */
  dropped: { line: number; reason: string }[];
  /** How many kept examples were cut to `max_length`. */
  truncated: number;
  /**
   * The cut applied, in tokens: `max_length`, or the model's context length where that is smaller;
   * null where nothing is cut. Absent where the data was assembled without saying (treated as null).
   */
  max_length?: number | null;
  errors: RowError[];
  warnings: string[];
}

/** A label at position 0 is never predicted (nothing comes before it), so it does not count. */
function hasPredictedLabel(labels: number[]): boolean {
  return labels.some((l, i) => i > 0 && l !== IGNORE_INDEX);
}

export function tokenizeSft(
  rows: DatasetRow[],
  format: DatasetFormat,
  tokenizer: TextTokenizer,
  opts: SftOptions,
  file: string,
): SftData {
  const converted = toSftRows(rows, format, file, { system_prompt: opts.system_prompt });
  const modelLimit = opts.max_position_embeddings === undefined ? tokenizer.maxPositionEmbeddings : opts.max_position_embeddings;
  const capped = modelLimit !== null && (opts.max_length === null || opts.max_length > modelLimit);
  const maxLength = capped ? modelLimit : opts.max_length;
  const data: SftData = { format, examples: [], dropped: [], truncated: 0, max_length: maxLength, errors: converted.errors, warnings: [] };

  const plain = converted.rows.filter((r) => r.kind === 'text' || r.kind === 'prompt_completion');
  // assistant_only_loss is on by default here (TRL's is off), so it applies where there are
  // assistant turns and leaves plain rows to completion_only_loss instead of refusing them.
  if (opts.system_prompt && plain.length > 0) {
    data.warnings.push(`${file}: system_prompt applies to conversations only; ${rowCount(plain.length)} of plain text are tokenised without it.`);
  }

  const beyondModel: number[] = [];

  const boundaryMismatch: number[] = [];
  const noAssistantSpans: number[] = [];
  for (const chatRow of converted.rows) {
    const row = opts.use_chat_template === false ? withoutChatTemplate(chatRow) : chatRow;
    let sequence: Sequence;
    try {
      sequence = tokenizeRow(row, tokenizer, opts, maxLength);
    } catch (e) {
      // Without any template the whole file is unusable; a template that rejects one row spoils only that row.
      if (!isUserError(e) || !tokenizer.hasChatTemplate) throw e;
      data.errors.push({ line: row.line, message: `${rowLabel(file, row.line)}: ${lowerFirst(e.message)}` });
      continue;
    }
    if (sequence.promptMismatch) boundaryMismatch.push(row.line);
    if (sequence.assistantSpansFailed) noAssistantSpans.push(row.line);

    const { input_ids, labels } = sequence;
    if (!hasPredictedLabel(labels)) {
      const reason =
        opts.assistant_only_loss && row.kind === 'messages' && !row.messages.some((m) => m.role === 'assistant')
          ? 'no assistant message to train on'
          : 'no token to train on';
      data.dropped.push({ line: row.line, reason });
      continue;
    }
    if (maxLength !== null && input_ids.length > maxLength) {
      if (capped) beyondModel.push(row.line);
      const kept = labels.slice(0, maxLength);
      const cutTo = capped ? `the model's ${maxLength} positions` : `max_length ${maxLength}`;
      if (!hasPredictedLabel(kept)) {
        const firstTrained = labels.findIndex((l, i) => i > 0 && l !== IGNORE_INDEX) + 1;
        data.dropped.push({
          line: row.line,
          reason: `its ${input_ids.length} tokens are cut to ${cutTo}, but training starts at token ${firstTrained}`,
        });
        continue;
      }
      data.truncated++;
      data.examples.push({ line: row.line, input_ids: input_ids.slice(0, maxLength), labels: kept, num_tokens_before_truncation: sequence.numTokens ?? input_ids.length });
      continue;
    }
    data.examples.push({ line: row.line, input_ids, labels });
  }

  if (beyondModel.length > 0) {
    const asked = opts.max_length === null ? 'max_length is unset' : `max_length ${opts.max_length} is larger`;
    data.warnings.push(
      `${file}: ${rowCount(beyondModel.length)} (first on ${rowRef(file, beyondModel[0])}) ${beyondModel.length === 1 ? 'is' : 'are'} longer than the model's ${maxLength} positions (max_position_embeddings in its config.json) and ${asked}, so ${beyondModel.length === 1 ? 'it is' : 'they are'} cut to ${maxLength} tokens.`,
    );
  }
  if (boundaryMismatch.length > 0) {
    data.warnings.push(
      `${file}: on ${rowCount(boundaryMismatch.length)} (first on ${rowRef(file, boundaryMismatch[0])}) the tokens of prompt + completion do not start with the tokens of the prompt alone, so the boundary between prompt and completion there is approximate.`,
    );
  }
  if (noAssistantSpans.length > 0) {
    data.warnings.push(
      `${file}: the chat template does not render these conversations turn by turn the same way as whole, so assistant_only_loss could not find the assistant turns of ${rowCount(noAssistantSpans.length)} (first on ${rowRef(file, noAssistantSpans[0])}), which train as if it were off.`,
    );
  }
  return data;
}

/** A conversation as plain text: the contents joined by newlines, prompt and completion kept apart. */
function withoutChatTemplate(row: SftRow): SftRow {
  const join = (messages: ChatMessage[]) => messages.map((m) => m.content).join('\n');
  if (row.kind === 'messages') return { kind: 'text', line: row.line, text: join(row.messages) };
  if (row.kind === 'chat_prompt_completion') return { kind: 'prompt_completion', line: row.line, prompt: join(row.prompt) + '\n', completion: join(row.completion) };
  return row;
}

interface Sequence {
  input_ids: number[];
  labels: number[];
  /** The whole row's token count, extrapolated, where `input_ids` holds only a prefix of its tokens. */
  numTokens?: number;
  /** TRL warns when prompt + completion does not tokenise as the prompt's tokens followed by more. */
  promptMismatch: boolean;
  /** The assistant turns could not be located, so the whole sequence is trained. */
  assistantSpansFailed: boolean;
}

/** `maxLength`: the most tokens kept (null: all); a plain text row is tokenised only as far as that needs. */
function tokenizeRow(row: SftRow, tokenizer: TextTokenizer, opts: SftOptions, maxLength: number | null): Sequence {
  const eos = tokenizer.eosToken;
  const withEos = (s: string) => (s.endsWith(eos) ? s : s + eos);
  switch (row.kind) {
    case 'text': {
      const { ids, numTokens } = encodeHead(tokenizer, withEos(row.text), maxLength);
      return { input_ids: ids, labels: ids.slice(), numTokens, promptMismatch: false, assistantSpansFailed: false };
    }
    case 'prompt_completion': {
      const promptIds = tokenizer.encode(row.prompt);
      const ids = tokenizer.encode(row.prompt + withEos(row.completion));
      return maskCompletion(ids, promptIds, null, opts);
    }
    case 'chat_prompt_completion': {
      const messages = [...row.prompt, ...row.completion];
      const text = tokenizer.applyChatTemplate(messages);
      const ids = tokenizer.encode(text, { add_special_tokens: false });
      const promptIds = tokenizer.encode(tokenizer.applyChatTemplate(row.prompt, { add_generation_prompt: true }), {
        add_special_tokens: false,
      });
      // The completion mask already keeps the assistant's reply; assistant spans only matter
      // when the prompt's turns are trained too.
      const wantSpans = opts.assistant_only_loss && !opts.completion_only_loss;
      const assistant = wantSpans ? assistantMask(tokenizer, messages, text, ids) : null;
      return { ...maskCompletion(ids, promptIds, assistant, opts), assistantSpansFailed: wantSpans && assistant === null };
    }
    case 'messages': {
      const text = tokenizer.applyChatTemplate(row.messages);
      const ids = tokenizer.encode(text, { add_special_tokens: false });
      const assistant = opts.assistant_only_loss ? assistantMask(tokenizer, row.messages, text, ids) : null;
      const labels = assistant === null ? ids.slice() : ids.map((id, i) => (assistant[i] ? id : IGNORE_INDEX));
      return { input_ids: ids, labels, promptMismatch: false, assistantSpansFailed: opts.assistant_only_loss && assistant === null };
    }
  }
}

/**
 * The tokens of `text`, or, where it has more than `maxLength`, at least its first `maxLength + 1`
 * (enough for the caller to see it is cut): tokenising a prefix of the text instead of all of it,
 * PREFIX_MARGIN_TOKENS beyond the cut so that the tokens kept are those of the whole text. Then
 * `numTokens` extrapolates the whole text's count from the prefix's characters per token.
 */
function encodeHead(tokenizer: TextTokenizer, text: string, maxLength: number | null): { ids: number[]; numTokens?: number } {
  if (maxLength === null) return { ids: tokenizer.encode(text) };
  const wanted = maxLength + PREFIX_MARGIN_TOKENS;
  for (let chars = wanted * PREFIX_CHARS_PER_TOKEN; chars < text.length; chars *= 2) {
    // Never split a surrogate pair.
    const end = isHighSurrogate(text.charCodeAt(chars - 1)) ? chars - 1 : chars;
    const ids = tokenizer.encode(text.slice(0, end));
    if (ids.length > wanted) return { ids: ids.slice(0, maxLength + 1), numTokens: Math.max(ids.length, Math.round((ids.length * text.length) / end)) };
  }
  return { ids: tokenizer.encode(text) };
}

function isHighSurrogate(code: number): boolean {
  return code >= 0xd800 && code <= 0xdbff;
}

/** TRL's completion mask: zero for as many tokens as the prompt alone has, even where the two tokenisations disagree. */
function maskCompletion(
  ids: number[],
  promptIds: number[],
  assistant: boolean[] | null,
  opts: SftOptions,
): Sequence {
  const labels = ids.map((id, i) => {
    const inCompletion = !opts.completion_only_loss || i >= promptIds.length;
    const inAssistant = assistant === null || assistant[i];
    return inCompletion && inAssistant ? id : IGNORE_INDEX;
  });
  return {
    input_ids: ids,
    labels,
    promptMismatch: !startsWith(ids, promptIds),
    assistantSpansFailed: false,
  };
}

/**
 * Which tokens belong to assistant turns, found without `{% generation %}` markers (which few templates
 * have): a turn starts where `messages[:i]` rendered with the generation prompt ends and stops where
 * `messages[:i+1]` rendered ends. Each boundary must also be a token boundary of the whole conversation.
 * null where the template does not render conversations prefix by prefix.
 */
function assistantMask(tokenizer: TextTokenizer, messages: ChatMessage[], text: string, ids: number[]): boolean[] | null {
  const mask = new Array<boolean>(ids.length).fill(false);
  for (const [i, message] of messages.entries()) {
    if (message.role !== 'assistant') continue;
    const span = assistantSpan(tokenizer, messages, i, text);
    if (span === null) return null;
    const from = tokenBoundary(tokenizer, text, span.start, ids);
    const to = tokenBoundary(tokenizer, text, span.end, ids);
    if (from === null || to === null) return null;
    mask.fill(true, from, to);
  }
  return mask;
}

/** Character range of assistant turn `i` in `text`, the whole conversation rendered. */
function assistantSpan(
  tokenizer: TextTokenizer,
  messages: ChatMessage[],
  i: number,
  text: string,
): { start: number; end: number } | null {
  let before: string;
  let through: string;
  try {
    before = tokenizer.applyChatTemplate(messages.slice(0, i), { add_generation_prompt: true });
    through = tokenizer.applyChatTemplate(messages.slice(0, i + 1));
  } catch {
    // Templates may refuse a partial conversation (one that ends on the assistant, say); the
    // caller then trains the whole row.
    return null;
  }
  if (!text.startsWith(before) || !through.startsWith(before)) return null;
  const turn = through.slice(before.length);
  // Templates such as Qwen3's decorate only the last assistant turn (with an empty <think></think>
  // block), so an earlier turn appears in the whole conversation as a tail of the turn rendered last:
  // the longest tail that still holds the whole content and matches the conversation is the turn.
  const content = messages[i].content;
  const contentAt = content.length > 0 ? turn.indexOf(content) : -1;
  for (let skip = 0; skip <= Math.max(contentAt, 0); skip++) {
    if (text.startsWith(turn.slice(skip), before.length)) {
      return { start: before.length, end: before.length + turn.length - skip };
    }
  }
  return null;
}

/** How many tokens of `ids` cover `text[:position]`, or null if a token straddles that position. */
function tokenBoundary(tokenizer: TextTokenizer, text: string, position: number, ids: number[]): number | null {
  if (position === text.length) return ids.length;
  const prefix = tokenizer.encode(text.slice(0, position), { add_special_tokens: false });
  return startsWith(ids, prefix) ? prefix.length : null;
}

/** Whether `ids` begins with `prefix`. */
export function startsWith(ids: number[], prefix: number[]): boolean {
  if (prefix.length > ids.length) return false;
  for (let i = 0; i < prefix.length; i++) if (ids[i] !== prefix[i]) return false;
  return true;
}

export function rowCount(n: number): string {
  return n === 1 ? '1 row' : `${n} rows`;
}

export function lowerFirst(s: string): string {
  return s.charAt(0).toLowerCase() + s.slice(1);
}

/** Sequence lengths in tokens. Median and p95 are nearest-rank percentiles: lengths some example has, whole tokens. */
export interface LengthStats {
  min: number;
  mean: number;
  median: number;
  p95: number;
  max: number;
}

export interface DatasetStats {
  num_examples: number;
  num_dropped: number;
  num_truncated: number;
  /** Tokens whose label is not -100, counted as TRL counts them (before the loss's shift), after truncation. */
  trainable_tokens: number;
  /** Tokens after truncation: what trains. */
  total_tokens: number;
  /** Lengths after truncation: what trains (none longer than `histogram.max_length`). */
  length: LengthStats;
  /** Lengths before truncation: the rows as they are (see `SftExample.num_tokens_before_truncation`). */
  length_before_truncation: LengthStats;
  /**
   * Lengths before truncation in bins of a whole, round number of tokens: bin i holds lengths
   * from `bin_edges[i]` up to but not including `bin_edges[i + 1]` (`bin_edges` has one more
   * entry than `counts`). Where the cut falls among the lengths, `max_length + 1` is an edge, so
   * the bins from there on hold exactly the rows that are cut. `max_length`: the cut (see
   * `SftData.max_length`), null where nothing is cut.
   */
  histogram: { bin_edges: number[]; counts: number[]; max_length: number | null };
}

/** About how many bins the histogram has; the width is rounded to 1, 2 or 5 times a power of ten. */
const HISTOGRAM_BINS = 10;

export function datasetStats(data: SftData): DatasetStats {
  const lengths = data.examples.map((e) => e.input_ids.length).sort((a, b) => a - b);
  const before = data.examples.map((e) => e.num_tokens_before_truncation ?? e.input_ids.length).sort((a, b) => a - b);
  let trainable = 0;
  for (const e of data.examples) for (const l of e.labels) if (l !== IGNORE_INDEX) trainable++;
  const maxLength = data.max_length ?? null;
  return {
    num_examples: data.examples.length,
    num_dropped: data.dropped.length,
    num_truncated: data.truncated,
    trainable_tokens: trainable,
    total_tokens: sum(lengths),
    length: lengthStats(lengths),
    length_before_truncation: lengthStats(before),
    histogram: { ...histogram(before, maxLength), max_length: maxLength },
  };
}

function sum(values: number[]): number {
  return values.reduce((a, b) => a + b, 0);
}

/** Min, mean, nearest-rank median and p95, and max of lengths sorted ascending. */
export function lengthStats(sorted: number[]): LengthStats {
  const n = sorted.length;
  return {
    min: n ? sorted[0] : 0,
    mean: n ? sum(sorted) / n : 0,
    median: percentile(sorted, 50),
    p95: percentile(sorted, 95),
    max: n ? sorted[n - 1] : 0,
  };
}

/** Nearest rank: the smallest value with at least q% of the values at or below it. */
function percentile(sorted: number[], q: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.max(0, Math.ceil((q / 100) * sorted.length) - 1)];
}

function histogram(sorted: number[], maxLength: number | null): { bin_edges: number[]; counts: number[] } {
  if (sorted.length === 0) return { bin_edges: [], counts: [] };
  const min = sorted[0];
  const max = sorted[sorted.length - 1];
  const width = niceWidth((max - min + 1) / HISTOGRAM_BINS);
  // Edges are multiples of the width, or shifted so that max_length + 1 is one when some rows are cut.
  const origin = maxLength !== null && min <= maxLength && maxLength < max ? (maxLength + 1) % width : 0;
  const first = Math.floor((min - origin) / width) * width + origin;
  const bins = Math.floor((max - first) / width) + 1;
  const bin_edges = Array.from({ length: bins + 1 }, (_, i) => first + i * width);
  const counts = new Array<number>(bins).fill(0);
  for (const v of sorted) counts[Math.floor((v - first) / width)]++;
  return { bin_edges, counts };
}

/** The smallest of 1, 2, 5, 10, 20, 50, … that is at least `x`. */
function niceWidth(x: number): number {
  for (let power = 1; ; power *= 10) {
    for (const step of [1, 2, 5]) if (step * power >= x) return step * power;
  }
}
