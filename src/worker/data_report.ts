/**
 * What the data view shows about a dataset file before training: its format, token statistics,
 * every bad row with its line, a preview and one example's loss mask. The file is read in slices
 * through the streaming JSONL parser and tokenised slice by slice, so the parsed rows of a large
 * file never exist all at once beside its text; what is kept is what training keeps, the tokens.
 */
import { createJsonlParser, detectFormat, parseDatasetText, toSftRows, type DatasetFormat, type DatasetRow, type ParsedDataset, type RowError, type SftRow } from '../engine/data/dataset.ts';
import { datasetStats, IGNORE_INDEX, tokenizeSft, type SftData, type SftExample } from '../engine/data/sft.ts';
import type { TextTokenizer } from '../engine/data/tokenizer.ts';
import type { Recipe } from '../engine/recipe.ts';
import type { DataReport } from './protocol.ts';
import { sftOptions } from '../engine/run.ts';

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
function wholeFileFormat(text: string, file: string): DatasetFormat | null {
  const shapes = new Map<string, Record<string, unknown>>();
  const rows: DatasetRow[] = [];
  for (const slice of rowSlices(text, file)) {
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

export function dataReport(file: string, text: string, tokenizer: TextTokenizer, recipe: Recipe): DataReport {
  const format = wholeFileFormat(text, file);
  const errors: RowError[] = [];
  let numRows = 0;
  if (format === null) {
    for (const slice of rowSlices(text, file)) errors.push(...slice.errors);
    // Nothing at all in the file: detectFormat's sentence says which row shapes are accepted.
    if (errors.length === 0) detectFormat([], file);
    return { file, format, num_rows: errors.length, stats: null, errors, dropped: [], warnings: [], preview: [], truncated_share: 0, mask_view: null };
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
  return {
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

/**
 * Each token's own text, so the view shows exactly where training starts and stops. A token is
 * decoded after its predecessor and the predecessor's text cut off, because SentencePiece-style
 * decoders drop the leading space of a text's first token, which would glue the pieces together.
 */
function maskView(example: SftExample, tokenizer: TextTokenizer): NonNullable<DataReport['mask_view']> {
  const ids = example.input_ids;
  const piece = (i: number): string => {
    const alone = tokenizer.decode([ids[i]]);
    if (i === 0) return alone;
    const before = tokenizer.decode([ids[i - 1]]);
    const both = tokenizer.decode([ids[i - 1], ids[i]]);
    return both.startsWith(before) ? both.slice(before.length) : alone;
  };
  return { line: example.line, tokens: ids.map((_, i) => ({ text: piece(i), trained: example.labels[i] !== IGNORE_INDEX })) };
}
