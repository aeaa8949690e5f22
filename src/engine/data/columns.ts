/**
 * Column mapping for datasets whose columns are not named as our row formats name them (Hub
 * datasets: question/answer, query/response, conversation, …): which column becomes which field
 * of the rows a method trains on (formats.ts), proposed from the column names and the first rows'
 * values, checked with one sentence naming the column or field, and applied row by row.
 */
import { METHOD_NAMES, type TrainingMethod } from './formats.ts';

/** The fields a column can become: the keys of our row formats. */
export type Field = 'text' | 'messages' | 'conversations' | 'prompt' | 'completion' | 'instruction' | 'input' | 'output' | 'chosen' | 'rejected' | 'label';

/**
 * Each column's target, keyed by column (every column present): a field, the column's own name
 * (GRPO keeps such columns for its reward functions), or null to leave the column out.
 */
export type ColumnMapping = Record<string, string | null>;

/** The fields each method's rows have, in the order the mapping table offers them. */
export const METHOD_FIELDS: Record<TrainingMethod, readonly Field[]> = {
  sft: ['text', 'messages', 'conversations', 'prompt', 'completion', 'instruction', 'input', 'output'],
  dpo: ['prompt', 'chosen', 'rejected'],
  orpo: ['prompt', 'chosen', 'rejected'],
  simpo: ['prompt', 'chosen', 'rejected'],
  kto: ['prompt', 'completion', 'label', 'chosen', 'rejected'],
  grpo: ['prompt'],
};

/** GRPO hands every field of a row but the prompt to its reward functions, so its other columns are kept by name. */
export function keepsColumns(method: TrainingMethod): boolean {
  return method === 'grpo';
}

/** Column names (lower case, `-` and spaces as `_`) that usually hold each field, most telling first. */
const NAMES: Record<Field, readonly string[]> = {
  text: ['text', 'content', 'document', 'story', 'body'],
  messages: ['messages', 'conversation', 'conversations', 'dialog', 'dialogue', 'chat', 'turns'],
  conversations: ['conversations', 'conversation', 'messages', 'dialog', 'dialogue', 'chat', 'turns'],
  prompt: ['prompt', 'question', 'query', 'problem', 'instruction', 'input'],
  completion: ['completion', 'answer', 'response', 'output', 'solution', 'target', 'reply'],
  instruction: ['instruction'],
  input: ['input'],
  output: ['output'],
  chosen: ['chosen', 'chosen_response', 'response_chosen', 'preferred', 'accepted', 'positive'],
  rejected: ['rejected', 'rejected_response', 'response_rejected', 'dispreferred', 'negative'],
  label: ['label', 'labels', 'desirable', 'is_desirable', 'kto_label'],
};

/** What a value looks like, as far as the fields care. */
type Shape = 'text' | 'chat' | 'turns' | 'strings' | 'empty' | 'list' | 'bool' | 'number' | 'object';

const HOLDS: Record<Shape, string> = {
  text: 'text',
  chat: 'lists of {role, content} messages',
  turns: 'lists of ShareGPT turns ({from, value})',
  strings: 'lists of strings',
  empty: 'empty lists',
  list: 'lists',
  bool: 'true/false values',
  number: 'numbers',
  object: 'objects',
};

/** The shapes each field takes, and the same in words. */
const ACCEPTS: Record<Field, { shapes: readonly Shape[]; words: string }> = {
  text: { shapes: ['text'], words: 'text' },
  instruction: { shapes: ['text'], words: 'text' },
  input: { shapes: ['text'], words: 'text' },
  output: { shapes: ['text'], words: 'text' },
  prompt: { shapes: ['text', 'chat'], words: 'text or a list of {role, content} messages' },
  completion: { shapes: ['text', 'chat'], words: 'text or a list of {role, content} messages' },
  chosen: { shapes: ['text', 'chat'], words: 'text or a list of {role, content} messages' },
  rejected: { shapes: ['text', 'chat'], words: 'text or a list of {role, content} messages' },
  messages: { shapes: ['chat', 'strings'], words: 'a list of {role, content} messages (or of strings, read as user and assistant turns)' },
  conversations: { shapes: ['turns'], words: 'a list of ShareGPT turns ({from, value})' },
  label: { shapes: ['bool'], words: 'true or false' },
};

/** The rows each method trains on, as the fields they need (and may have). */
const ROW_FIELDS: Record<TrainingMethod, readonly { required: readonly Field[]; optional?: readonly Field[] }[]> = {
  sft: [{ required: ['text'] }, { required: ['messages'] }, { required: ['conversations'] }, { required: ['prompt', 'completion'] }, { required: ['instruction', 'output'], optional: ['input'] }],
  dpo: [{ required: ['chosen', 'rejected'], optional: ['prompt'] }],
  orpo: [{ required: ['chosen', 'rejected'], optional: ['prompt'] }],
  simpo: [{ required: ['chosen', 'rejected'], optional: ['prompt'] }],
  kto: [{ required: ['prompt', 'completion', 'label'] }, { required: ['chosen', 'rejected'], optional: ['prompt'] }],
  grpo: [{ required: ['prompt'] }],
};

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A value's shape; null for a missing value, which says nothing about its column. */
function shapeOf(v: unknown): Shape | null {
  if (v === null || v === undefined) return null;
  if (typeof v === 'string') return 'text';
  if (typeof v === 'boolean') return 'bool';
  if (typeof v === 'number' || typeof v === 'bigint') return 'number';
  if (Array.isArray(v)) {
    if (v.length === 0) return 'empty';
    if (v.every((m) => isObject(m) && typeof m.role === 'string' && 'content' in m)) return 'chat';
    if (v.every((m) => isObject(m) && typeof m.from === 'string' && 'value' in m)) return 'turns';
    if (v.every((m) => typeof m === 'string')) return 'strings';
    return 'list';
  }
  return 'object';
}

/** A column's shape: its first value's that is there (an empty list counts only when nothing else does). */
function columnShape(column: string, sample: readonly Record<string, unknown>[]): Shape | null {
  let found: Shape | null = null;
  for (const row of sample) {
    const shape = shapeOf(row[column]);
    if (shape !== null && shape !== 'empty') return shape;
    found ??= shape;
  }
  return found;
}

function normalise(name: string): string {
  return name.trim().toLowerCase().replace(/[\s-]+/g, '_');
}

/** Whether a column of this shape can be `field` (a column without values in the sample may be anything). */
function fits(field: Field, shape: Shape | null): boolean {
  return shape === null || shape === 'empty' || ACCEPTS[field].shapes.includes(shape);
}

/**
 * The mapping proposed for `method` from the column names and the first rows (`sample`): each field
 * the method's rows need from the first column named as that field usually is and holding values
 * it takes (question/answer, input/output and query/response as prompt/completion; conversation
 * or dialog as messages, or as ShareGPT conversations when its turns are {from, value}; …). SFT
 * takes one row format, in this order: a conversation, Alpaca's instruction/input/output, a
 * prompt/completion pair, text, and else the only column holding text or conversations. GRPO keeps
 * every column but the prompt under its own name for the reward functions (question/answer gives
 * prompt + answer); the other methods leave the rest out.
 */
export function proposeMapping(columns: readonly string[], sample: readonly Record<string, unknown>[], method: TrainingMethod): ColumnMapping {
  const shapes = new Map(columns.map((c) => [c, columnShape(c, sample)]));
  const mapping: ColumnMapping = Object.fromEntries(columns.map((c) => [c, null]));
  const taken = (c: string) => mapping[c] !== null;
  /** The first free column named as `field` usually is, holding what `field` takes. */
  const find = (field: Field, as: Field = field): string | undefined => {
    for (const name of NAMES[field]) {
      const column = columns.find((c) => !taken(c) && normalise(c) === name && fits(as, shapes.get(c) ?? null));
      if (column !== undefined) return column;
    }
    return undefined;
  };
  const set = (column: string | undefined, field: Field): boolean => {
    if (column === undefined) return false;
    mapping[column] = field;
    return true;
  };
  /** Both fields or neither. */
  const pair = (a: Field, b: Field): boolean => {
    const first = find(a);
    if (first === undefined) return false;
    set(first, a);
    if (set(find(b), b)) return true;
    mapping[first] = null;
    return false;
  };

  switch (method) {
    case 'sft': {
      if (set(find('messages'), 'messages') || set(find('conversations'), 'conversations')) break;
      if (columns.includes('instruction') && columns.includes('output') && pair('instruction', 'output')) {
        set(find('input'), 'input');
        break;
      }
      if (pair('prompt', 'completion') || set(find('text'), 'text')) break;
      // A dataset with one column of text or of conversations, whatever its name, is that.
      const chats = columns.filter((c) => shapes.get(c) === 'chat');
      const turns = columns.filter((c) => shapes.get(c) === 'turns');
      const texts = columns.filter((c) => shapes.get(c) === 'text');
      if (chats.length === 1) set(chats[0], 'messages');
      else if (turns.length === 1) set(turns[0], 'conversations');
      else if (texts.length === 1) set(texts[0], 'text');
      break;
    }
    case 'dpo':
    case 'orpo':
    case 'simpo':
      pair('chosen', 'rejected');
      set(find('prompt'), 'prompt');
      break;
    case 'kto':
      // Labelled completions where the dataset has a label, else pairs (which KTO unpairs).
      if (!pair('label', 'completion')) pair('chosen', 'rejected');
      set(find('prompt'), 'prompt');
      break;
    case 'grpo': {
      set(find('prompt'), 'prompt');
      const used = new Set(Object.values(mapping));
      for (const c of columns) if (mapping[c] === null && !used.has(c)) mapping[c] = c;
      break;
    }
  }
  return mapping;
}

/**
 * `mapping` with `column` going to `target` (null: left out); a column that went to the same
 * target before is left out, so each field keeps one column.
 */
export function reassign(mapping: ColumnMapping, column: string, target: string | null): ColumnMapping {
  const out: ColumnMapping = {};
  for (const [c, t] of Object.entries(mapping)) out[c] = c === column ? target : target !== null && t === target ? null : t;
  return out;
}

/** `"a"`, `"a" and "b"`, `"a", "b" and "c"`. */
function quoted(names: readonly string[]): string {
  const q = names.map((n) => `"${n}"`);
  return q.length <= 1 ? (q[0] ?? '') : `${q.slice(0, -1).join(', ')} and ${q[q.length - 1]}`;
}

/** "SFT takes "text"; "messages"; …; or "instruction" and "output" (and "input")". */
function takes(method: TrainingMethod): string {
  const alternatives = ROW_FIELDS[method].map((r) => `${quoted(r.required)}${r.optional ? ` (and ${quoted(r.optional)})` : ''}`);
  const list = alternatives.length === 1 ? alternatives[0] : `${alternatives.slice(0, -1).join('; ')}; or ${alternatives[alternatives.length - 1]}`;
  return `${METHOD_NAMES[method]} takes ${list}${keepsColumns(method) ? ', and gives the other columns to the reward functions' : ''}`;
}

/**
 * Why `mapping` cannot give `method` its rows, as one sentence starting with `dataset` and naming
 * the column or field; null when it can. Checked: a target that is neither one of the method's
 * fields nor (for GRPO) the column's own name; two columns on one target; the fields mapped
 * making none of the method's row formats (a field missing, or one from another format); and each
 * column's values in `sample` (the first rows) being what its field takes.
 */
export function mappingProblem(mapping: ColumnMapping, sample: readonly Record<string, unknown>[], method: TrainingMethod, dataset: string): string | null {
  const fields = METHOD_FIELDS[method] as readonly string[];
  const byTarget = new Map<string, string>();
  for (const [column, target] of Object.entries(mapping)) {
    if (target === null) continue;
    if (!fields.includes(target) && !(keepsColumns(method) && target === column)) {
      return `${dataset}: column "${column}" is mapped to "${target}", which ${METHOD_NAMES[method]} rows do not have; ${takes(method)}.`;
    }
    const other = byTarget.get(target);
    if (other !== undefined) return `${dataset}: columns "${other}" and "${column}" are both mapped to "${target}"; a field takes one column, so leave one of them out.`;
    byTarget.set(target, column);
  }

  const mapped = [...byTarget.keys()].filter((t): t is Field => fields.includes(t));
  if (mapped.length === 0) return `${dataset}: no column is mapped to a field ${METHOD_NAMES[method]} trains on; ${takes(method)}.`;
  // The row format the mapped fields come closest to: the most of them it has, then the fewest it lacks.
  const scored = ROW_FIELDS[method].map((r) => {
    const allowed = new Set<Field>([...r.required, ...(r.optional ?? [])]);
    return { missing: r.required.filter((f) => !byTarget.has(f)), extra: mapped.filter((f) => !allowed.has(f)), hits: mapped.filter((f) => allowed.has(f)).length };
  });
  const best = scored.reduce((a, b) => (b.hits > a.hits || (b.hits === a.hits && b.missing.length < a.missing.length) ? b : a));
  if (best.missing.length > 0) return `${dataset}: no column is mapped to ${quoted(best.missing)}; ${takes(method)}.`;
  if (best.extra.length > 0) {
    const f = best.extra[0];
    const column = byTarget.get(f);
    return `${dataset}: "${f}" (column "${column}") is not part of the same row format as ${quoted(mapped.filter((m) => m !== f))}, so leave column "${column}" out; ${takes(method)}.`;
  }

  for (const [target, column] of byTarget) {
    if (!fields.includes(target)) continue;
    const field = target as Field;
    for (let i = 0; i < sample.length; i++) {
      const shape = shapeOf(sample[i][column]);
      if (shape === null || ACCEPTS[field].shapes.includes(shape)) continue;
      return `${dataset}: column "${column}" holds ${HOLDS[shape]} (row ${i + 1}), so it cannot be "${field}", which takes ${ACCEPTS[field].words}.`;
    }
  }
  return null;
}

/**
 * One row as the method reads it: each column under its target, left-out columns dropped. A list
 * of strings mapped to messages becomes user and assistant turns in turn, as dialog datasets
 * store them; every other value is passed as it is (the data report validates it, by field).
 */
export function mapRow(row: Record<string, unknown>, mapping: ColumnMapping): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [column, target] of Object.entries(mapping)) {
    if (target === null || row[column] === undefined) continue;
    const value = row[column];
    out[target] = target === 'messages' && shapeOf(value) === 'strings' ? (value as string[]).map((content, i) => ({ role: i % 2 === 0 ? 'user' : 'assistant', content })) : value;
  }
  return out;
}
