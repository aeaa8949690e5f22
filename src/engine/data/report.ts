/**
 * What the studio's data view shows and `finetune data` prints about a dataset file before
 * training: its format, token statistics, every bad row with its line, a preview and one example's
 * loss mask; and, page by page, any of
 * its rows as training sees it. The file is read in slices through the streaming JSONL parser and
 * tokenised slice by slice, so the parsed rows of a large file never exist all at once beside its
 * text; what is kept is what training keeps, the tokens.
 */
import { createJsonlParser, detectFormat, parseDatasetText, toSftRows, type DatasetFormat, type DatasetRow, type ParsedDataset, type RowError, type SftRow } from './dataset.ts';
import { datasetStats, IGNORE_INDEX, tokenizeSft, type SftData, type SftExample } from './sft.ts';
import type { TextTokenizer } from './tokenizer.ts';
import type { GrpoRecipe, PreferenceRecipe, Recipe, SftRecipe } from '../recipe.ts';
import { sftOptions } from '../train/methods/index.ts';
import { preferenceReport } from './preference_report.ts';
import type { KtoExample, PairExample } from './preference.ts';
import type { PromptExample } from './prompts.ts';
import type { RowFormat } from './formats.ts';
import type { PreferenceStats } from './preference_report.ts';
import type { DatasetStats } from './sft.ts';

/** What the data view shows about a dataset file before training. */
export interface DataReport {
  file: string;
  /** The rows' format for the recipe's method. */
  format: RowFormat | null;
  num_rows: number;
  /** SFT's token statistics; null for the preference methods, whose counts are in `preference`. */
  stats: DatasetStats | null;
  /** The preference methods' counts and lengths (pairs, or KTO rows with their labels); null for SFT. */
  preference?: PreferenceStats | null;
  /** Every bad row: line number and the full sentence. */
  errors: { line: number; message: string }[];
  dropped: { line: number; reason: string }[];
  warnings: string[];
  /** The first rows as chat transcripts (role/content), for the preview. */
  preview: { line: number; messages: { role: string; content: string }[] }[];
  /** Share of examples longer than max_length before truncation. */
  truncated_share: number;
  /** One example token by token: the decoded piece and whether it is trained on. */
  mask_view: { line: number; tokens: { text: string; trained: boolean }[] } | null;
}

/** One row of a dataset as the data view's browser shows it. */
export interface PreviewRow {
  /** 0-based among the file's rows (bad rows included), the index `previewRows` pages by. */
  index: number;
  /** 1-based line in the file (the array element's index + 1 for a .json file). */
  line: number;
  /** The row as the chat transcript it trains as (plain text is one 'text' message), or null for a bad row. */
  messages: { role: string; content: string }[] | null;
  /** Why the row is refused or dropped, as the sentence training would give; null for a good row. */
  problem: string | null;
  /**
   * Token by token as training sees it (after truncation): the decoded piece, whether the loss
   * is taken on it, and whether it is a special token (shown as a symbol, explained in the view).
   */
  tokens: { text: string; trained: boolean; special: boolean }[] | null;
  /** Tokens before truncation (tokens.length is min of it and max_length). */
  num_tokens: number | null;
}

export interface PreviewPage {
  /** Rows in the file, bad ones included. */
  total: number;
  rows: PreviewRow[];
}

/** Characters parsed at a time; most datasets fit in one slice, which keeps warnings exact. */
const SLICE = 32 * 2 ** 20;
const PREVIEW_ROWS = 5;

/** Rows in slices: JSON Lines streamed, a .json array (which cannot be) in one piece. */
function* rowSlices(text: string, file: string): Generator<ParsedDataset> {
  if (/\.json$/i.test(file)) {
    yield parseDatasetText(text, file);
    return;
  }
  const parser = createJsonlParser(file);
  for (let start = 0; start < text.length; start += SLICE) yield parser.push(text.slice(start, start + SLICE));
  yield parser.end();
}

/**
 * The format of the whole file, decided as `detectFormat` decides it over every row, from rows
 * reduced to their keys (all that detection reads), one shared object per distinct key set.
 */
function wholeFileFormat(text: string, file: string, eachSlice?: (slice: ParsedDataset) => void): DatasetFormat | null {
  const shapes = new Map<string, Record<string, unknown>>();
  const rows: DatasetRow[] = [];
  for (const slice of rowSlices(text, file)) {
    eachSlice?.(slice);
    for (const row of slice.rows) {
      const keys = Object.keys(row.value);
      const signature = keys.join('\u0000');
      let shape = shapes.get(signature);
      if (!shape) shapes.set(signature, (shape = Object.fromEntries(keys.map((k) => [k, null]))));
      rows.push({ line: row.line, value: shape });
    }
  }
  return rows.length === 0 ? null : detectFormat(rows, file);
}

/** The report on a data file for the recipe's method. */
export function dataReport(file: string, text: string, tokenizer: TextTokenizer, recipe: Recipe): DataReport {
  if (recipe.method !== 'sft') return preferenceDataReport(file, text, tokenizer, recipe);
  return sftDataReport(file, text, tokenizer, recipe).report;
}

/** The report on an SFT data file, with the examples it tokenised (what `finetune data --dump` writes). */
export function sftDataReport(file: string, text: string, tokenizer: TextTokenizer, recipe: SftRecipe): { report: DataReport; data: SftData | null } {
  const format = wholeFileFormat(text, file);
  const errors: RowError[] = [];
  let numRows = 0;
  if (format === null) {
    for (const slice of rowSlices(text, file)) errors.push(...slice.errors);
    // Nothing at all in the file: detectFormat's sentence says which row shapes are accepted.
    if (errors.length === 0) detectFormat([], file);
    return { report: { file, format, num_rows: errors.length, stats: null, errors, dropped: [], warnings: [], preview: [], truncated_share: 0, mask_view: null }, data: null };
  }

  const data: SftData = { format, examples: [], dropped: [], truncated: 0, errors: [], warnings: [] };
  const preview: DataReport['preview'] = [];
  const options = sftOptions(recipe);
  for (const slice of rowSlices(text, file)) {
    numRows += slice.rows.length + slice.errors.length;
    errors.push(...slice.errors);
    for (let i = 0; preview.length < PREVIEW_ROWS && i < slice.rows.length; i += PREVIEW_ROWS) {
      const head = toSftRows(slice.rows.slice(i, i + PREVIEW_ROWS), format, file, { system_prompt: recipe.system_prompt }).rows;
      for (const row of head.slice(0, PREVIEW_ROWS - preview.length)) preview.push({ line: row.line, messages: transcript(row) });
    }
    const part = tokenizeSft(slice.rows, format, tokenizer, options, file);
    data.max_length = part.max_length;
    for (const e of part.examples) data.examples.push(e);
    data.dropped.push(...part.dropped);
    data.truncated += part.truncated;
    errors.push(...part.errors);
    for (const w of part.warnings) if (!data.warnings.includes(w)) data.warnings.push(w);
  }
  errors.sort((a, b) => a.line - b.line);

  const warnings = data.warnings.slice();
  if (data.examples.length === 0) {
    const first = data.dropped[0];
    warnings.push(`${file}: no row has a token left to train on${first ? ` (e.g. line ${first.line}: ${first.reason})` : ''}, so training cannot start.`);
  }
  const report: DataReport = {
    file,
    format,
    num_rows: numRows,
    stats: datasetStats(data),
    errors,
    dropped: data.dropped,
    warnings,
    preview,
    truncated_share: data.examples.length > 0 ? data.truncated / data.examples.length : 0,
    mask_view: data.examples.length > 0 ? maskView(data.examples[0], tokenizer) : null,
  };
  return { report, data };
}

/** A row as the chat transcript it trains as: plain text is one 'text' message. */
function transcript(row: SftRow): { role: string; content: string }[] {
  switch (row.kind) {
    case 'text':
      return [{ role: 'text', content: row.text }];
    case 'prompt_completion':
      return [{ role: 'user', content: row.prompt }, { role: 'assistant', content: row.completion }];
    case 'chat_prompt_completion':
      return [...row.prompt, ...row.completion];
    case 'messages':
      return row.messages;
  }
}

/** One example token by token: the decoded piece and whether it is trained on. */
function maskView(example: SftExample, tokenizer: TextTokenizer): NonNullable<DataReport['mask_view']> {
  const pieces = tokenPieces(example.input_ids, tokenizer);
  return { line: example.line, tokens: pieces.map((text, i) => ({ text, trained: example.labels[i] !== IGNORE_INDEX })) };
}

/**
 * Each token's own text, so the view shows exactly where training starts and stops. A token is
 * decoded after the token before it (the first token after itself) and that token's text cut off,
 * because SentencePiece-style decoders drop the leading space of a text's first token, which would
 * glue the pieces together. A character spelt in several byte tokens (UTF-8 cut between tokens
 * decodes to U+FFFD) is shown whole on its last token, the ones before it empty.
 */
function tokenPieces(ids: number[], tokenizer: TextTokenizer): string[] {
  const pieces: string[] = [];
  for (let i = 0; i < ids.length; ) {
    const context = ids[i > 0 ? i - 1 : 0];
    const before = tokenizer.decode([context]);
    const after = (end: number): string | null => {
      const both = tokenizer.decode([context, ...ids.slice(i, end)]);
      return both.startsWith(before) ? both.slice(before.length) : null;
    };
    let end = i + 1;
    let piece = after(end);
    // A UTF-8 character has at most 4 bytes, so at most 3 more tokens can complete it.
    for (let more = i + 2; piece !== null && piece.endsWith('\uFFFD') && more <= Math.min(ids.length, i + 4); more++) {
      const longer = after(more);
      if (longer !== null && !longer.endsWith('\uFFFD')) {
        end = more;
        piece = longer;
      }
    }
    for (let j = i; j < end - 1; j++) pieces.push('');
    pieces.push(piece ?? tokenizer.decode([ids[i]]));
    i = end;
  }
  return pieces;
}

/**
 * Whether a token is one the tokenizer or the chat template adds as a marker (BOS, EOS, turn
 * boundaries): the tokens `skip_special_tokens` leaves out of a decoded text (tokenizer.json's
 * added tokens marked special), and the tokenizer's own BOS and EOS wherever they are not marked.
 */
function specialTokens(tokenizer: TextTokenizer): (id: number) => boolean {
  const known = new Map<number, boolean>();
  return (id) => {
    let special = known.get(id);
    if (special === undefined) {
      special =
        id === tokenizer.bosTokenId ||
        tokenizer.eosTokenIds.includes(id) ||
        (tokenizer.decode([id], { skip_special_tokens: true }) === '' && tokenizer.decode([id]) !== '');
      known.set(id, special);
    }
    return special;
  };
}

/** A file's rows in order, bad ones included: one slice's rows and errors merged by line. */
function* inLineOrder(slice: ParsedDataset): Generator<DatasetRow | RowError> {
  let r = 0;
  let e = 0;
  while (r < slice.rows.length || e < slice.errors.length) {
    if (e >= slice.errors.length || (r < slice.rows.length && slice.rows[r].line < slice.errors[e].line)) yield slice.rows[r++];
    else yield slice.errors[e++];
  }
}

/**
 * Rows `start` to `start + count` (0-based among all the file's rows, bad ones included) as the
 * data view's rows browser shows them: a bad row with its sentence; a good one as its transcript
 * and its tokens after truncation, each with whether the loss is taken on it; a row training
 * leaves out with why, and its tokens none of which is trained. Only these rows are tokenised;
 * the file is parsed once, for its format and to find them.
 */
export function previewRows(file: string, text: string, tokenizer: TextTokenizer, recipe: Recipe, start: number, count: number): PreviewPage {
  if (recipe.method !== 'sft') return preferencePreviewRows(file, text, tokenizer, recipe, start, count);
  const from = Math.max(0, Math.floor(start));
  const to = from + Math.max(0, Math.floor(count));
  const page: (DatasetRow | RowError)[] = [];
  let total = 0;
  const format = wholeFileFormat(text, file, (slice) => {
    for (const entry of inLineOrder(slice)) {
      if (total >= from && total < to) page.push(entry);
      total++;
    }
  });

  const good = page.filter((entry): entry is DatasetRow => 'value' in entry);
  const messages = new Map<number, PreviewRow['messages']>();
  const problems = new Map<number, string>();
  const examples = new Map<number, SftExample>();
  const options = sftOptions(recipe);
  if (format !== null && good.length > 0) {
    for (const row of toSftRows(good, format, file, { system_prompt: recipe.system_prompt }).rows) messages.set(row.line, transcript(row));
    const data = tokenizeSft(good, format, tokenizer, options, file);
    for (const e of data.errors) problems.set(e.line, e.message);
    for (const e of data.examples) examples.set(e.line, e);
    const byLine = new Map(good.map((row) => [row.line, row]));
    for (const { line, reason } of data.dropped) {
      problems.set(line, `Left out of training: ${reason}.`);
      // Its tokens all the same: tokenised with nothing masked (which nothing drops), shown with none trained.
      const row = byLine.get(line) as DatasetRow;
      const whole = tokenizeSft([row], format, tokenizer, { ...options, completion_only_loss: false, assistant_only_loss: false }, file).examples[0];
      if (whole) examples.set(line, { ...whole, labels: whole.labels.map(() => IGNORE_INDEX) });
    }
  }

  const isSpecial = specialTokens(tokenizer);
  const tokensOf = (example: SftExample): NonNullable<PreviewRow['tokens']> => {
    const pieces = tokenPieces(example.input_ids, tokenizer);
    return example.input_ids.map((id, i) => ({ text: pieces[i], trained: example.labels[i] !== IGNORE_INDEX, special: isSpecial(id) }));
  };
  const rows = page.map((entry, i): PreviewRow => {
    const index = from + i;
    if (!('value' in entry)) return { index, line: entry.line, messages: null, problem: entry.message, tokens: null, num_tokens: null };
    const { line } = entry;
    const example = examples.get(line);
    return {
      index,
      line,
      messages: messages.get(line) ?? null,
      problem: problems.get(line) ?? null,
      tokens: example ? tokensOf(example) : null,
      num_tokens: example ? (example.num_tokens_before_truncation ?? example.input_ids.length) : null,
    };
  });
  return { total, rows };
}

/** The report of a preference file (DPO, KTO, ORPO, SimPO): counts and lengths for the method, bad rows, no SFT statistics. */
function preferenceDataReport(file: string, text: string, tokenizer: TextTokenizer, recipe: PreferenceRecipe | GrpoRecipe): DataReport {
  const r = preferenceReport(text, file, tokenizer, recipe);
  const kept = r.examples.length;
  return {
    file,
    format: r.format,
    num_rows: r.num_rows,
    stats: null,
    preference: r.preference,
    errors: r.errors,
    dropped: r.dropped,
    warnings: kept === 0 && r.errors.length === 0 ? [...r.warnings, `${file}: no row has ${recipe.method === 'grpo' ? 'a prompt to generate from' : 'a token left to train on'}, so training cannot start.`] : r.warnings,
    preview: [],
    truncated_share: kept > 0 ? r.truncated / kept : 0,
    mask_view: null,
  };
}

/**
 * Preference rows for the rows browser: a pair as its prompt once, then the chosen and the
 * rejected completion (roles "chosen" and "rejected", which the view sets side by side), a KTO row
 * as its prompt and its completion labelled desirable or undesirable; each decoded from the
 * tokens training reads. The token view shows the chosen (or KTO) sequence, its completion trained.
 */
function preferencePreviewRows(file: string, text: string, tokenizer: TextTokenizer, recipe: PreferenceRecipe | GrpoRecipe, start: number, count: number): PreviewPage {
  const from = Math.max(0, Math.floor(start));
  // Only the page's rows are tokenised, as the SFT browser does.
  const r = preferenceReport(text, file, tokenizer, recipe, { start: from, count: Math.max(0, Math.floor(count)) });
  const isSpecial = specialTokens(tokenizer);
  const decode = (ids: number[]) => tokenizer.decode(ids, { skip_special_tokens: false });
  const rows = r.lines.map(({ line, example, problem }, i): PreviewRow => {
    const index = from + i;
    if (!example) return { index, line, messages: null, problem, tokens: null, num_tokens: null };
    if ('columns' in example) return promptPreviewRow(index, line, example, problem, tokenizer, isSpecial);
    const pair = 'chosen_ids' in example ? (example as PairExample) : null;
    const completion = pair ? pair.chosen_ids : (example as KtoExample).completion_ids;
    const ids = [...example.prompt_ids, ...completion];
    const pieces = tokenPieces(ids, tokenizer);
    const messages = pair
      ? [{ role: 'prompt', content: decode(pair.prompt_ids) }, { role: 'chosen', content: decode(pair.chosen_ids) }, { role: 'rejected', content: decode(pair.rejected_ids) }]
      : [{ role: 'prompt', content: decode(example.prompt_ids) }, { role: (example as KtoExample).label ? 'desirable' : 'undesirable', content: decode(completion) }];
    return {
      index,
      line,
      messages,
      problem,
      tokens: ids.map((id, k) => ({ text: pieces[k], trained: k >= example.prompt_ids.length, special: isSpecial(id) })),
      num_tokens: ids.length,
    };
  });
  return { total: r.num_lines, rows };
}

/**
 * A GRPO prompt for the rows browser: the prompt as the model reads it, then each column the
 * reward functions receive, as its name and its JSON. Nothing of it is trained on: the
 * completions are sampled during training.
 */
function promptPreviewRow(index: number, line: number, example: PromptExample, problem: string | null, tokenizer: TextTokenizer, isSpecial: (id: number) => boolean): PreviewRow {
  const pieces = tokenPieces(example.prompt_ids, tokenizer);
  const columns = Object.entries(example.columns).map(([role, value]) => ({ role, content: typeof value === 'string' ? value : JSON.stringify(value) }));
  return {
    index,
    line,
    messages: [{ role: 'prompt', content: tokenizer.decode(example.prompt_ids, { skip_special_tokens: false }) }, ...columns],
    problem,
    tokens: example.prompt_ids.map((id, k) => ({ text: pieces[k], trained: false, special: isSpecial(id) })),
    num_tokens: example.prompt_ids.length,
  };
}
