/**
 * Dataset files as rows: parsing JSONL (streamed, for files of hundreds of megabytes) and JSON arrays,
 * detecting which of the accepted shapes the rows have, and validating and converting each row to
 * the text, prompt/completion or conversation that TRL's SFTTrainer tokenises.
 */
import { z } from 'zod';
import { UserError, checkTextEncoding } from '../errors.ts';
import type { ChatMessage } from './tokenizer.ts';

export type DatasetFormat = 'text' | 'prompt_completion' | 'messages' | 'alpaca' | 'sharegpt';

/** `line` is the 1-based line of a JSONL row, or the 1-based element index of a .json array (see `rowLabel`). */
export interface DatasetRow {
  line: number;
  value: Record<string, unknown>;
}

export interface RowError {
  line: number;
  /** A whole sentence naming the file and the line. */
  message: string;
}

export interface ParsedDataset {
  rows: DatasetRow[];
  errors: RowError[];
}

/** A row ready to tokenise, in TRL's terms: language modelling (`text`, `messages`) or prompt/completion. */
export type SftRow =
  | { kind: 'text'; line: number; text: string }
  | { kind: 'prompt_completion'; line: number; prompt: string; completion: string }
  | { kind: 'chat_prompt_completion'; line: number; prompt: ChatMessage[]; completion: ChatMessage[] }
  | { kind: 'messages'; line: number; messages: ChatMessage[] };

/** Each SFT format's row shape, as messages show it. */
export const SHAPES: Record<DatasetFormat, string> = {
  text: '{"text": "..."}',
  prompt_completion: '{"prompt": "...", "completion": "..."} (or both as lists of {role, content})',
  messages: '{"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}',
  alpaca: '{"instruction": "...", "input": "...", "output": "..."} ("input" optional)',
  sharegpt: '{"conversations": [{"from": "human", "value": "..."}, {"from": "gpt", "value": "..."}]}',
};

const ACCEPTED = `accepted rows are ${Object.values(SHAPES).join('; ')}`;

/** How messages refer to a row: JSONL rows by line ("line 3"), JSON array elements by position ("row 3"). */
export function rowRef(file: string, line: number): string {
  return isJsonArrayFile(file) ? `row ${line}` : `line ${line}`;
}

/** A row's place for the start of a message: "train.jsonl, line 3". */
export function rowLabel(file: string, line: number): string {
  return `${file}, ${rowRef(file, line)}`;
}

function isJsonArrayFile(file: string): boolean {
  return /\.json$/i.test(file);
}

export interface JsonlParser {
  /** Parses the lines this chunk completes; a line cut by the chunk's end waits for the next push. */
  push(chunk: string): ParsedDataset;
  /**
   * Parses the last line if the file does not end with a newline. Throws `noRowsError` when the
   * whole file held no row, good or bad (it was empty or only blank lines).
   */
  end(): ParsedDataset;
}

/** The sentence for a dataset file without a single row, whatever reads it. */
export function noRowsError(file: string): UserError {
  return new UserError(`${file} has no rows: it is empty or holds only blank lines; ${ACCEPTED}.`, { file });
}

/**
 * Longest row accepted, in characters of its JSON text (about 1 MB of ASCII). Rows are tokenised
 * whole, and tokenising megabytes of text takes minutes and gigabytes, so a longer row is refused
 * with its line instead — far beyond any context length a model trains on.
 */
export const MAX_ROW_CHARS = 1_000_000;

/** `chars` null: only known to be over the limit. */
function tooLongRow(file: string, line: number, chars: number | null): RowError {
  const size = chars === null ? 'over' : `${chars.toLocaleString('en-US')} characters long, over`;
  return {
    line,
    message: `${rowLabel(file, line)}: the row is ${size} the limit of ${MAX_ROW_CHARS.toLocaleString('en-US')} characters a row may have; split it into shorter rows.`,
  };
}

/**
 * Streams a JSONL file: only the unfinished last line is kept between chunks, and a line longer than
 * MAX_ROW_CHARS is counted and skipped rather than held, so memory stays bounded whatever the file.
 */
export function createJsonlParser(file: string): JsonlParser {
  let pending = '';
  let line = 0;
  let first = true;
  /** Whether a row, good or bad, has been returned yet. */
  let anyRow = false;
  /** Characters so far of an overlong line being skipped, or null. */
  let skipped: number | null = null;

  const parseLine = (text: string, out: ParsedDataset): void => {
    line++;
    const source = text.endsWith('\r') ? text.slice(0, -1) : text;
    if (source.length > MAX_ROW_CHARS) {
      out.errors.push(tooLongRow(file, line, source.length));
      return;
    }
    if (source.trim() === '') return;
    let value: unknown;
    try {
      value = JSON.parse(source);
    } catch (e) {
      out.errors.push({ line, message: `${file}, line ${line}: not valid JSON (${jsonReason(e)}).` });
      return;
    }
    if (!isPlainObject(value)) {
      out.errors.push({ line, message: `${file}, line ${line}: expected a JSON object, found ${describe(value)}.` });
      return;
    }
    out.rows.push({ line, value });
  };

  return {
    push(chunk) {
      const out: ParsedDataset = { rows: [], errors: [] };
      let text = chunk;
      if (skipped !== null) {
        const nl = text.indexOf('\n');
        if (nl === -1) {
          skipped += text.length;
          return out;
        }
        out.errors.push(tooLongRow(file, line, skipped + nl - (text[nl - 1] === '\r' ? 1 : 0)));
        skipped = null;
        text = text.slice(nl + 1);
      } else {
        text = pending + text;
      }
      if (first && text.length > 0) {
        checkTextEncoding(text, file);
        if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
        first = false;
      }
      let start = 0;
      for (let nl = text.indexOf('\n'); nl !== -1; nl = text.indexOf('\n', start)) {
        parseLine(text.slice(start, nl), out);
        start = nl + 1;
      }
      pending = text.slice(start);
      if (pending.length > MAX_ROW_CHARS + 1) {
        line++;
        skipped = pending.length;
        pending = '';
      }
      anyRow ||= out.rows.length + out.errors.length > 0;
      return out;
    },
    end() {
      const out: ParsedDataset = { rows: [], errors: [] };
      if (skipped !== null) out.errors.push(tooLongRow(file, line, skipped - (pending.endsWith('\r') ? 1 : 0)));
      else if (pending !== '') parseLine(pending, out);
      skipped = null;
      pending = '';
      if (!anyRow && out.rows.length + out.errors.length === 0) throw noRowsError(file);
      return out;
    },
  };
}

/**
 * Parses a whole dataset file: a JSON array of objects for `.json`, JSON Lines otherwise. A file
 * without a single row (empty, blank lines, `[]`) is refused with `noRowsError`'s sentence.
 */
export function parseDatasetText(text: string, file: string): ParsedDataset {
  checkTextEncoding(text, file);
  if (isJsonArrayFile(file)) return parseJsonArray(text.charCodeAt(0) === 0xfeff ? text.slice(1) : text, file);
  const parser = createJsonlParser(file);
  const head = parser.push(text);
  const tail = parser.end();
  return { rows: head.rows.concat(tail.rows), errors: head.errors.concat(tail.errors) };
}

function parseJsonArray(text: string, file: string): ParsedDataset {
  const start = text.trimStart();
  if (start === '') throw noRowsError(file);
  // Checked before parsing so that JSON Lines saved as .json get this message, not a syntax error.
  if (!start.startsWith('[')) {
    throw new UserError(
      `${file}: expected a JSON array of row objects ([{...}, {...}]); a file with one JSON object per line should be named .jsonl.`,
      { file },
    );
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    const position = /at position (\d+)/.exec((e as Error).message);
    const line = position ? lineAt(text, Number(position[1])) : undefined;
    const where = line === undefined ? file : `${file}, line ${line}`;
    throw new UserError(`${where}: not valid JSON (${jsonReason(e)}).`, { file, line });
  }
  if ((value as unknown[]).length === 0) throw noRowsError(file);
  const out: ParsedDataset = { rows: [], errors: [] };
  (value as unknown[]).forEach((element, i) => {
    const line = i + 1;
    if (jsonChars(element, MAX_ROW_CHARS) > MAX_ROW_CHARS) out.errors.push(tooLongRow(file, line, null));
    else if (isPlainObject(element)) out.rows.push({ line, value: element });
    else out.errors.push({ line, message: `${file}, row ${line}: expected a JSON object, found ${describe(element)}.` });
  });
  return out;
}

/** Roughly how many characters `value` takes as JSON, counting strings and keys, stopping once past `limit`. */
function jsonChars(value: unknown, limit: number): number {
  let total = 0;
  const stack: unknown[] = [value];
  while (stack.length > 0 && total <= limit) {
    const v = stack.pop();
    if (typeof v === 'string') total += v.length + 2;
    else if (Array.isArray(v)) {
      total += 2 + v.length;
      for (const x of v) stack.push(x);
    } else if (v !== null && typeof v === 'object') {
      for (const [k, x] of Object.entries(v)) {
        total += k.length + 4;
        stack.push(x);
      }
    } else total += String(v).length;
  }
  return total;
}

function lineAt(text: string, position: number): number {
  let line = 1;
  for (let i = text.indexOf('\n'); i !== -1 && i < position; i = text.indexOf('\n', i + 1)) line++;
  return line;
}

function jsonReason(e: unknown): string {
  return (e as Error).message.replace(/\.$/, '');
}

/** The format a row's keys point to, including rows missing a field, so that validation can name it. */
function classify(value: Record<string, unknown>): DatasetFormat | null {
  if ('messages' in value) return 'messages';
  if ('conversations' in value) return 'sharegpt';
  if ('prompt' in value || 'completion' in value) return 'prompt_completion';
  if ('instruction' in value || 'output' in value) return 'alpaca';
  if ('text' in value) return 'text';
  return null;
}

/** The shape most rows have (the earliest on a tie), so a few stray rows do not decide for the file. */
export function detectFormat(rows: DatasetRow[], file: string): DatasetFormat {
  if (rows.length === 0) throw noRowsError(file);
  const counts = new Map<DatasetFormat, number>();
  for (const row of rows) {
    const format = classify(row.value);
    if (format !== null) counts.set(format, (counts.get(format) ?? 0) + 1);
  }
  let best: DatasetFormat | null = null;
  for (const [format, count] of counts) {
    if (best === null || count > (counts.get(best) as number)) best = format;
  }
  if (best === null) {
    const keys = Object.keys(rows[0].value).map((k) => `"${k}"`).join(', ') || 'none';
    throw new UserError(`${file}: no row has a recognised shape (the first has keys ${keys}); ${ACCEPTED}.`, { file });
  }
  return best;
}

const ROLES = ['system', 'user', 'assistant', 'tool'] as const;
const chatMessage = z.object({ role: z.enum(ROLES), content: z.string() });
export const chatMessages = z.array(chatMessage).min(1);

const SCHEMAS = {
  text: z.object({ text: z.string() }),
  prompt_completion: z.object({ prompt: z.string(), completion: z.string() }),
  chat_prompt_completion: z.object({ prompt: chatMessages, completion: chatMessages }),
  messages: z.object({ messages: chatMessages }),
  alpaca: z.object({ instruction: z.string(), input: z.string().nullish(), output: z.string() }),
  sharegpt: z.object({ conversations: z.array(z.object({ from: z.string(), value: z.string() })).min(1) }),
};

const HINTS: Record<keyof typeof SCHEMAS, string> = {
  text: 'text rows need a "text" string.',
  prompt_completion: 'prompt/completion rows need both.',
  chat_prompt_completion: 'prompt/completion rows need both, each a list of {role, content} messages.',
  messages: 'chat rows need a "messages" list of {role, content}.',
  alpaca: 'alpaca rows need "instruction" and "output" strings ("input" is optional).',
  sharegpt: 'ShareGPT rows need a "conversations" list of {from, value}.',
};

/** ShareGPT speaker names as the common exports write them, mapped to chat roles. */
const SHAREGPT_ROLES: Record<string, ChatMessage['role']> = {
  human: 'user',
  user: 'user',
  gpt: 'assistant',
  assistant: 'assistant',
  model: 'assistant',
  system: 'system',
  tool: 'tool',
};

export interface ToSftRowsOptions {
  /** Prepended as a system message to conversations that do not start with one; plain text is left alone. */
  system_prompt?: string | null;
}

/** Validates every row against the file's format and converts it; a bad row becomes an error, not an exception. */
export function toSftRows(
  rows: DatasetRow[],
  format: DatasetFormat,
  file: string,
  opts: ToSftRowsOptions = {},
): { rows: SftRow[]; errors: RowError[] } {
  const out: SftRow[] = [];
  const errors: RowError[] = [];
  for (const row of rows) {
    const result = toSftRow(row, format, opts.system_prompt ?? null);
    if (typeof result === 'string') errors.push({ line: row.line, message: `${rowLabel(file, row.line)}: ${result}` });
    else out.push(result);
  }
  return { rows: out, errors };
}

/** The converted row, or the reason it is rejected. */
function toSftRow(row: DatasetRow, format: DatasetFormat, systemPrompt: string | null): SftRow | string {
  const { line, value } = row;
  const found = classify(value);
  if (found !== format) {
    const keys = Object.keys(value).map((k) => `"${k}"`).join(', ') || 'no keys';
    return `expected a row like ${SHAPES[format]}, as most rows of this file are, but this one has ${keys}.`;
  }
  switch (format) {
    case 'text': {
      const r = check('text', value);
      return typeof r === 'string' ? r : { kind: 'text', line, text: r.text };
    }
    case 'prompt_completion': {
      const { prompt, completion } = value;
      if ((typeof prompt === 'string' && Array.isArray(completion)) || (Array.isArray(prompt) && typeof completion === 'string')) {
        return '"prompt" and "completion" must both be strings or both be lists of messages.';
      }
      if (!Array.isArray(prompt) && !Array.isArray(completion)) {
        const r = check('prompt_completion', value);
        return typeof r === 'string' ? r : { kind: 'prompt_completion', line, prompt: r.prompt, completion: r.completion };
      }
      const r = check('chat_prompt_completion', value);
      if (typeof r === 'string') return r;
      return { kind: 'chat_prompt_completion', line, prompt: withSystem(r.prompt, systemPrompt), completion: r.completion };
    }
    case 'messages': {
      const r = check('messages', value);
      return typeof r === 'string' ? r : { kind: 'messages', line, messages: withSystem(r.messages, systemPrompt) };
    }
    case 'alpaca': {
      const r = check('alpaca', value);
      if (typeof r === 'string') return r;
      const content = r.input ? `${r.instruction}\n\n${r.input}` : r.instruction;
      return {
        kind: 'chat_prompt_completion',
        line,
        prompt: withSystem([{ role: 'user', content }], systemPrompt),
        completion: [{ role: 'assistant', content: r.output }],
      };
    }
    case 'sharegpt': {
      const r = check('sharegpt', value);
      if (typeof r === 'string') return r;
      const messages: ChatMessage[] = [];
      for (const [i, turn] of r.conversations.entries()) {
        const role = SHAREGPT_ROLES[turn.from.toLowerCase()];
        if (role === undefined) {
          return `"conversations[${i}].from" is "${turn.from}"; expected human, gpt, system or tool (or user, assistant, model).`;
        }
        messages.push({ role, content: turn.value });
      }
      return { kind: 'messages', line, messages: withSystem(messages, systemPrompt) };
    }
  }
}

export function withSystem(messages: ChatMessage[], systemPrompt: string | null): ChatMessage[] {
  if (!systemPrompt || messages[0]?.role === 'system') return messages;
  return [{ role: 'system', content: systemPrompt }, ...messages];
}

function check<K extends keyof typeof SCHEMAS>(schema: K, value: Record<string, unknown>): z.infer<(typeof SCHEMAS)[K]> | string {
  const result = SCHEMAS[schema].safeParse(value);
  if (result.success) return result.data as z.infer<(typeof SCHEMAS)[K]>;
  return describeIssue(result.error.issues[0], value, HINTS[schema]);
}

/** One zod issue as a sentence naming the field, e.g. `"completion" is missing; prompt/completion rows need both.` */
export function describeIssue(issue: z.core.$ZodIssue, value: Record<string, unknown>, hint: string): string {
  const name = `"${fieldPath(issue.path)}"`;
  const found = valueAt(value, issue.path);
  if (found === undefined) return `${name} is missing; ${hint}`;
  switch (issue.code) {
    case 'invalid_type':
      return `${name} must be ${article(issue.expected)}, not ${describe(found)}; ${hint}`;
    case 'invalid_value':
      return `${name} is ${JSON.stringify(found)}; expected one of ${issue.values.map(String).join(', ')}.`;
    case 'too_small':
      return `${name} is empty; ${hint}`;
    default:
      return `${name} is not valid (${issue.message}); ${hint}`;
  }
}

function fieldPath(path: PropertyKey[]): string {
  return path.map((p, i) => (typeof p === 'number' ? `[${p}]` : i === 0 ? String(p) : `.${String(p)}`)).join('');
}

function valueAt(value: unknown, path: PropertyKey[]): unknown {
  let v = value;
  for (const key of path) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<PropertyKey, unknown>)[key];
  }
  return v;
}

function article(type: string): string {
  return type === 'array' ? 'a list' : type === 'object' ? 'an object' : `a ${type}`;
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'an object';
  if (typeof value === 'boolean') return value ? 'true' : 'false';
  return `a ${typeof value}`;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}
