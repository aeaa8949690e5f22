/**
 * Which row formats each training method accepts, with TRL's dataset types (docs/source/dataset_formats.md
 * in TRL 1.x): SFT trains on language modelling and prompt/completion rows, DPO, ORPO and SimPO on
 * preference pairs (explicit or implicit prompt), KTO on unpaired preference rows or on pairs (which it
 * unpairs, as TRL's KTOTrainer does), GRPO on prompts. A file's format is detected knowing the method,
 * and each preference or prompt row is validated and converted here; sft.ts and preference.ts tokenise.
 * Text or conversation is decided row by row within a format, as SFT's prompt/completion is.
 */
import { z } from 'zod';
import { UserError } from '../errors.ts';
import {
  type DatasetFormat,
  type DatasetRow,
  type RowError,
  SHAPES,
  chatMessages,
  describeIssue,
  detectFormat,
  rowLabel,
  withSystem,
} from './dataset.ts';
import type { ChatMessage } from './tokenizer.ts';

export type TrainingMethod = 'sft' | 'dpo' | 'kto' | 'orpo' | 'simpo' | 'grpo';

/** Preference pairs: with an explicit `prompt`, or implicit (the shared start of `chosen` and `rejected`). */
export type PairFormat = 'preference' | 'implicit_preference';
/** KTO's rows: unpaired (`prompt`, `completion`, `label`), or pairs that each become a desirable and an undesirable row. */
export type KtoFormat = 'unpaired_preference' | PairFormat;
/** Every format a file can be detected as; SFT's are dataset.ts's `DatasetFormat`. */
export type RowFormat = DatasetFormat | PairFormat | 'unpaired_preference' | 'prompt_only';

/** The formats each method trains on, as TRL's trainers accept them. */
export const METHOD_FORMATS: Record<TrainingMethod, readonly RowFormat[]> = {
  sft: ['text', 'prompt_completion', 'messages', 'alpaca', 'sharegpt'],
  dpo: ['preference', 'implicit_preference'],
  orpo: ['preference', 'implicit_preference'],
  simpo: ['preference', 'implicit_preference'],
  kto: ['unpaired_preference', 'preference', 'implicit_preference'],
  grpo: ['prompt_only'],
};

export const METHOD_NAMES: Record<TrainingMethod, string> = {
  sft: 'SFT',
  dpo: 'DPO',
  kto: 'KTO',
  orpo: 'ORPO',
  simpo: 'SimPO',
  grpo: 'GRPO',
};

/** What each method's rows must give it, completing "DPO needs …". */
const NEEDS: Record<TrainingMethod, string> = {
  sft: 'text to learn from',
  dpo: 'preference pairs, a "chosen" and a "rejected" completion of each prompt',
  orpo: 'preference pairs, a "chosen" and a "rejected" completion of each prompt',
  simpo: 'preference pairs, a "chosen" and a "rejected" completion of each prompt',
  kto: 'completions each labelled desirable or not',
  grpo: 'prompts to generate completions for',
};

/** Each format's row shape, as messages show it. */
export const FORMAT_SHAPES: Record<RowFormat, string> = {
  ...SHAPES,
  preference: '{"prompt": "...", "chosen": "...", "rejected": "..."} (or all three as lists of {role, content})',
  implicit_preference:
    '{"chosen": [...], "rejected": [...]} (two whole conversations, or texts, whose shared start is the prompt)',
  unpaired_preference:
    '{"prompt": "...", "completion": "...", "label": true} (label false for an undesirable completion; prompt and completion may be lists of {role, content})',
  prompt_only: '{"prompt": "..."} (or a list of {role, content}; the row\'s other fields go to the reward functions)',
};

/** Each format as a plural noun, for "most rows here are …". */
export const FORMAT_NAMES: Record<RowFormat, string> = {
  text: 'plain text',
  prompt_completion: 'prompt/completion rows',
  messages: 'conversations',
  alpaca: 'Alpaca rows',
  sharegpt: 'ShareGPT conversations',
  preference: 'preference pairs',
  implicit_preference: 'preference pairs',
  unpaired_preference: 'labelled completions',
  prompt_only: 'prompts without completions',
};

function accepted(method: TrainingMethod): string {
  return `${METHOD_NAMES[method]} accepts ${METHOD_FORMATS[method].map((f) => FORMAT_SHAPES[f]).join('; ')}`;
}

/**
 * The format a row's keys point to, including rows missing a field, so that validation can name it.
 * `chosen`/`rejected` and `label` come first: dataset.ts's SFT classification reads any row with a
 * `prompt` as prompt/completion, which would lose them.
 */
function rowShape(value: Record<string, unknown>): RowFormat | null {
  if ('chosen' in value || 'rejected' in value) return 'prompt' in value ? 'preference' : 'implicit_preference';
  if ('label' in value && ('prompt' in value || 'completion' in value)) return 'unpaired_preference';
  if ('messages' in value) return 'messages';
  if ('conversations' in value) return 'sharegpt';
  if ('prompt' in value && !('completion' in value)) return 'prompt_only';
  if ('prompt' in value || 'completion' in value) return 'prompt_completion';
  if ('instruction' in value || 'output' in value) return 'alpaca';
  if ('text' in value) return 'text';
  return null;
}

/** GRPO generates its own completions, so any row with a prompt is a prompt; the rest are its reward functions' columns. */
function rowFormatFor(method: TrainingMethod, value: Record<string, unknown>): RowFormat | null {
  if (method === 'grpo' && 'prompt' in value) return 'prompt_only';
  return rowShape(value);
}

/**
 * The format of a file for `method`: the shape most rows have (the earliest on a tie), so a few stray
 * rows do not decide for the file, and they get their own error when converted. A file whose rows
 * mostly have a shape the method does not train on is refused with one sentence saying what the
 * method needs and accepts. For SFT the answer is dataset.ts's `detectFormat`'s, unchanged, unless
 * most rows are of a shape only the other methods train on (preference pairs, labelled completions,
 * bare prompts), which SFT would misread as prompt/completion rows.
 */
export function detectFormatFor(method: TrainingMethod, rows: DatasetRow[], file: string): RowFormat {
  const name = METHOD_NAMES[method];
  if (rows.length === 0) {
    throw new UserError(`${file} has no rows: it is empty or holds only blank lines; ${accepted(method)}.`, { file });
  }
  const counts = new Map<RowFormat, number>();
  for (const row of rows) {
    const format = rowFormatFor(method, row.value);
    if (format !== null) counts.set(format, (counts.get(format) ?? 0) + 1);
  }
  let best: RowFormat | null = null;
  for (const [format, count] of counts) {
    if (best === null || count > (counts.get(best) as number)) best = format;
  }
  if (best === null) {
    const keys = Object.keys(rows[0].value).map((k) => `"${k}"`).join(', ') || 'none';
    throw new UserError(
      `${file}: no row has a recognised shape (the first has keys ${keys}); ${name} needs ${NEEDS[method]}, and ${accepted(method)}.`,
      { file },
    );
  }
  if (METHOD_FORMATS[method].includes(best)) return method === 'sft' ? detectFormat(rows, file) : best;
  const count = counts.get(best) as number;
  const most = count === rows.length ? 'its rows' : `most of its rows (${count} of ${rows.length})`;
  throw new UserError(
    `${file}: ${name} needs ${NEEDS[method]}, but ${most} are ${FORMAT_NAMES[best]}, which ${trainedBy(best)}; ${accepted(method)}.`,
    { file },
  );
}

/** "SFT trains on", "DPO, ORPO, SimPO and KTO train on", naming the methods that take `format`. */
function trainedBy(format: RowFormat): string {
  const methods = (Object.keys(METHOD_FORMATS) as TrainingMethod[])
    .filter((m) => METHOD_FORMATS[m].includes(format))
    .map((m) => METHOD_NAMES[m]);
  if (methods.length === 1) return `${methods[0]} trains on`;
  return `${methods.slice(0, -1).join(', ')} and ${methods[methods.length - 1]} train on`;
}

/** A preference pair ready to tokenise: all text, or all conversation (prompt turns, then each completion's turns). */
export type PairRow =
  | { kind: 'text'; line: number; prompt: string; chosen: string; rejected: string }
  | { kind: 'chat'; line: number; prompt: ChatMessage[]; chosen: ChatMessage[]; rejected: ChatMessage[] };

/** A KTO row ready to tokenise: `label` true for a desirable completion. */
export type UnpairedRow =
  | { kind: 'text'; line: number; prompt: string; completion: string; label: boolean }
  | { kind: 'chat'; line: number; prompt: ChatMessage[]; completion: ChatMessage[]; label: boolean };

/** A GRPO prompt, with the row's other fields for the reward functions. */
export type PromptRow =
  | { kind: 'text'; line: number; prompt: string; columns: Record<string, unknown> }
  | { kind: 'chat'; line: number; prompt: ChatMessage[]; columns: Record<string, unknown> };

export interface ToRowsOptions {
  /** Prepended as a system message to conversational prompts that do not start with one; text is left alone. */
  system_prompt?: string | null;
}

const PAIR_HINT = 'preference pairs need "chosen" and "rejected" completions, with the "prompt" they answer or sharing it as their start.';
const CHAT_PAIR_HINT = 'conversational pairs need "chosen" and "rejected" as lists of {role, content} messages.';
const UNPAIRED_HINT = 'KTO rows need "prompt" and "completion" (strings, or lists of {role, content}) and a "label", true for a desirable completion and false for an undesirable one.';
const PROMPT_HINT = 'GRPO rows need a "prompt" string or list of {role, content} messages.';

const SCHEMAS = {
  pair: z.object({ prompt: z.string(), chosen: z.string(), rejected: z.string() }),
  chat_pair: z.object({ prompt: chatMessages, chosen: chatMessages, rejected: chatMessages }),
  implicit_pair: z.object({ chosen: z.string(), rejected: z.string() }),
  implicit_chat_pair: z.object({ chosen: chatMessages, rejected: chatMessages }),
  unpaired: z.object({ prompt: z.string(), completion: z.string(), label: z.boolean() }),
  chat_unpaired: z.object({ prompt: chatMessages, completion: chatMessages, label: z.boolean() }),
  prompt: z.object({ prompt: z.string() }),
  chat_prompt: z.object({ prompt: chatMessages }),
};

function check<K extends keyof typeof SCHEMAS>(
  schema: K,
  value: Record<string, unknown>,
  hint: string,
): z.infer<(typeof SCHEMAS)[K]> | string {
  const result = SCHEMAS[schema].safeParse(value);
  if (result.success) return result.data as z.infer<(typeof SCHEMAS)[K]>;
  return describeIssue(result.error.issues[0], value, hint);
}

/**
 * Validates and converts preference rows, explicit and implicit alike (a file may mix them). An
 * implicit prompt is extracted as TRL's `extract_prompt` does (see `extractPrompt`); so is the prompt
 * of a row whose `prompt` is a string beside conversational `chosen`/`rejected` (datasets that repeat
 * the question as text though the conversations hold it), as TRL's `maybe_extract_prompt` does.
 * A bad row becomes an error, not an exception.
 */
export function toPairRows(rows: DatasetRow[], file: string, opts: ToRowsOptions = {}): { rows: PairRow[]; errors: RowError[] } {
  return convert(rows, file, (row) => {
    const shape = rowShape(row.value);
    if (shape !== 'preference' && shape !== 'implicit_preference') {
      return wrongShape(row.value, `a preference pair like ${FORMAT_SHAPES.preference} or ${FORMAT_SHAPES.implicit_preference}`);
    }
    return toPairRow(row, opts.system_prompt ?? null);
  });
}

function toPairRow(row: DatasetRow, systemPrompt: string | null): PairRow | string {
  const { line, value } = row;
  const chat = Array.isArray(value.chosen) || Array.isArray(value.rejected);
  // As TRL's maybe_extract_prompt: a string prompt beside conversations is not their start.
  const explicit = 'prompt' in value && !(chat && typeof value.prompt === 'string');
  const fields = explicit ? ['prompt', 'chosen', 'rejected'] : ['chosen', 'rejected'];
  if (fields.some((k) => (chat ? typeof value[k] === 'string' : Array.isArray(value[k])))) {
    return explicit
      ? '"prompt", "chosen" and "rejected" must all be strings or all be lists of messages.'
      : '"chosen" and "rejected" must both be strings or both be lists of messages.';
  }
  if (explicit) {
    if (chat) {
      const r = check('chat_pair', value, CHAT_PAIR_HINT);
      if (typeof r === 'string') return r;
      return { kind: 'chat', line, prompt: withSystem(r.prompt, systemPrompt), chosen: r.chosen, rejected: r.rejected };
    }
    const r = check('pair', value, PAIR_HINT);
    return typeof r === 'string' ? r : { kind: 'text', line, prompt: r.prompt, chosen: r.chosen, rejected: r.rejected };
  }
  if (chat) {
    const r = check('implicit_chat_pair', value, CHAT_PAIR_HINT);
    if (typeof r === 'string') return r;
    const pair = extractPrompt(r.chosen, r.rejected);
    if (pair.prompt.length === 0) {
      return '"chosen" and "rejected" differ from their first message, so they share no prompt; give it in a "prompt" field.';
    }
    return { kind: 'chat', line, prompt: withSystem(pair.prompt, systemPrompt), chosen: pair.chosen, rejected: pair.rejected };
  }
  const r = check('implicit_pair', value, PAIR_HINT);
  return typeof r === 'string' ? r : { kind: 'text', line, ...extractPrompt(r.chosen, r.rejected) };
}

/**
 * TRL's `extract_prompt`: the prompt is the longest shared start of `chosen` and `rejected` (whole
 * messages for conversations, characters for text), and a space just before the first difference
 * goes with the completions. Two quirks of TRL's loop are kept: where one is a prefix of the other
 * (or they are equal), the last shared item stays with the completions; and where they differ from
 * the first character there is no prompt (TRL would look at the text's last character there).
 */
export function extractPrompt<T extends string | ChatMessage[]>(chosen: T, rejected: T): { prompt: T; chosen: T; rejected: T } {
  const n = Math.min(chosen.length, rejected.length);
  let idx = Math.max(n - 1, 0);
  for (let i = 0; i < n; i++) {
    if (!sameItem(chosen[i], rejected[i])) {
      idx = i > 0 && chosen[i - 1] === ' ' ? i - 1 : i;
      break;
    }
  }
  return {
    prompt: chosen.slice(0, idx) as T,
    chosen: chosen.slice(idx) as T,
    rejected: rejected.slice(idx) as T,
  };
}

function sameItem(a: string | ChatMessage, b: string | ChatMessage): boolean {
  if (typeof a === 'string' || typeof b === 'string') return a === b;
  return a.role === b.role && a.content === b.content;
}

/**
 * Validates and converts KTO rows: unpaired rows as they are, and each preference pair (explicit or
 * implicit, as `toPairRows` reads them) as two rows with its line, chosen labelled true and rejected
 * false, as TRL's `unpair_preference_dataset` does.
 */
export function toUnpairedRows(rows: DatasetRow[], file: string, opts: ToRowsOptions = {}): { rows: UnpairedRow[]; errors: RowError[] } {
  const systemPrompt = opts.system_prompt ?? null;
  return convert(rows, file, (row) => {
    const shape = rowShape(row.value);
    if (shape === 'preference' || shape === 'implicit_preference') {
      const pair = toPairRow(row, systemPrompt);
      if (typeof pair === 'string') return pair;
      const { chosen, rejected, ...rest } = pair;
      return [
        { ...rest, completion: chosen, label: true },
        { ...rest, completion: rejected, label: false },
      ] as UnpairedRow[];
    }
    if (shape !== 'unpaired_preference') {
      return wrongShape(row.value, `a labelled completion like ${FORMAT_SHAPES.unpaired_preference}, or a preference pair like ${FORMAT_SHAPES.preference}`);
    }
    const { line, value } = row;
    const chat = Array.isArray(value.prompt) || Array.isArray(value.completion);
    if (chat && (typeof value.prompt === 'string' || typeof value.completion === 'string')) {
      return '"prompt" and "completion" must both be strings or both be lists of messages.';
    }
    if (chat) {
      const r = check('chat_unpaired', value, UNPAIRED_HINT);
      if (typeof r === 'string') return r;
      return { kind: 'chat', line, prompt: withSystem(r.prompt, systemPrompt), completion: r.completion, label: r.label };
    }
    const r = check('unpaired', value, UNPAIRED_HINT);
    return typeof r === 'string' ? r : { kind: 'text', line, prompt: r.prompt, completion: r.completion, label: r.label };
  });
}

/** Validates and converts GRPO prompts; every field but `prompt` is kept in `columns`, as TRL passes them to reward functions. */
export function toPromptRows(rows: DatasetRow[], file: string, opts: ToRowsOptions = {}): { rows: PromptRow[]; errors: RowError[] } {
  return convert(rows, file, (row) => {
    const { line, value } = row;
    if (!('prompt' in value)) return wrongShape(value, `a prompt like ${FORMAT_SHAPES.prompt_only}`);
    const columns = { ...value };
    delete columns.prompt;
    if (Array.isArray(value.prompt)) {
      const r = check('chat_prompt', value, PROMPT_HINT);
      return typeof r === 'string' ? r : { kind: 'chat', line, prompt: withSystem(r.prompt, opts.system_prompt ?? null), columns };
    }
    const r = check('prompt', value, PROMPT_HINT);
    return typeof r === 'string' ? r : { kind: 'text', line, prompt: r.prompt, columns };
  });
}

/** Runs `one` over the rows; a string it returns is the row's error, prefixed with the file and line. */
function convert<R>(rows: DatasetRow[], file: string, one: (row: DatasetRow) => R | R[] | string): { rows: R[]; errors: RowError[] } {
  const out: R[] = [];
  const errors: RowError[] = [];
  for (const row of rows) {
    const result = one(row);
    if (typeof result === 'string') errors.push({ line: row.line, message: `${rowLabel(file, row.line)}: ${result}` });
    else if (Array.isArray(result)) out.push(...result);
    else out.push(result);
  }
  return { rows: out, errors };
}

function wrongShape(value: Record<string, unknown>, expected: string): string {
  const keys = Object.keys(value).map((k) => `"${k}"`).join(', ') || 'no keys';
  return `expected ${expected}, but this row has ${keys}.`;
}
