/**
 * GRPO's prompt-only rows as TRL 1.x's GRPOTrainer tokenises them (`_tokenize_prompts`): a
 * conversation is rendered with the chat template and the generation prompt and tokenised without
 * special tokens (the template writes its own); plain text is tokenised with the tokenizer's own
 * special tokens (BOS where it adds one). The prompt as given and the row's other columns are kept
 * for the reward functions.
 */
import { isUserError } from '../errors.ts';
import { type DatasetRow, type RowError, rowLabel, rowRef } from './dataset.ts';
import { toPromptRows } from './formats.ts';
import { lowerFirst, rowCount, startsWith } from './sft.ts';
import type { ChatMessage, TextTokenizer } from './tokenizer.ts';

/** One tokenised GRPO prompt. */
export interface PromptExample {
  /** 1-based line of the row in its file. */
  line: number;
  /**
   * The prompt as the reward functions receive it: the row's text, or its messages (with
   * `system_prompt` in front where it was added, as the model reads them), not rendered.
   */
  prompt: string | ChatMessage[];
  /** The prompt's tokens, as generation starts from them. */
  prompt_ids: number[];
  /** Every field of the row but `prompt` (`answer`, `solution`, …), for the reward functions. */
  columns: Record<string, unknown>;
}

export interface PromptOptions {
  /**
   * The prompt keeps only its last this many tokens (TRL 0.x's GRPOConfig `max_prompt_length`,
   * default 512 until TRL 0.26, which truncated on the left; TRL 0.28 and 1.x removed it and ask
   * for the dataset to be filtered instead, which null reproduces). A text prompt keeps the special
   * tokens the tokenizer adds (its BOS) and loses the start of its text, as the tokenizer's own
   * left truncation does; a rendered conversation keeps its last tokens whatever they are.
   */
  max_prompt_length: number | null;
  /** Prepended as a system message to conversational prompts that do not start with one; text rows are left alone. */
  system_prompt?: string | null;
}

export interface PromptData {
  examples: PromptExample[];
  errors: RowError[];
  /** Rows left out, with why: a prompt without a token, or one that fills the model's positions. */
  dropped: { line: number; reason: string }[];
  /** How many kept prompts were cut by `max_prompt_length`. */
  truncated: number;
  warnings: string[];
}

/**
 * Tokenises GRPO prompts (see the module's comment), cuts them to `max_prompt_length`, and drops a
 * prompt that has no token (nothing to generate from) or that fills the model's context
 * (`max_position_embeddings`), leaving no position for a completion. Text and conversation are
 * decided row by row. Without any chat template a conversational row is an error for the whole file,
 * as elsewhere; a template that fails on one conversation spoils only that row.
 */
export function tokenizePrompts(rows: DatasetRow[], tokenizer: TextTokenizer, opts: PromptOptions, file: string): PromptData {
  const converted = toPromptRows(rows, file, { system_prompt: opts.system_prompt });
  const out: PromptData = { examples: [], errors: [...converted.errors], dropped: [], truncated: 0, warnings: [] };

  const textRows = converted.rows.filter((r) => r.kind === 'text').length;
  if (opts.system_prompt && textRows > 0) {
    out.warnings.push(
      `${file}: system_prompt applies to conversations only; ${rowCount(textRows)} of plain text ${textRows === 1 ? 'is' : 'are'} tokenised without it.`,
    );
  }

  const modelLimit = tokenizer.maxPositionEmbeddings;
  const cut: number[] = [];
  for (const row of converted.rows) {
    let ids: number[];
    let text: number[] | null = null;
    try {
      if (row.kind === 'text') {
        ids = tokenizer.encode(row.prompt);
        text = tokenizer.encode(row.prompt, { add_special_tokens: false });
      } else {
        ids = tokenizer.encode(tokenizer.applyChatTemplate(row.prompt, { add_generation_prompt: true }), { add_special_tokens: false });
      }
    } catch (e) {
      if (!isUserError(e) || !tokenizer.hasChatTemplate) throw e;
      out.errors.push({ line: row.line, message: `${rowLabel(file, row.line)}: ${lowerFirst(e.message)}` });
      continue;
    }
    if (ids.length === 0) {
      out.dropped.push({ line: row.line, reason: 'its prompt has no token to generate from' });
      continue;
    }
    const max = opts.max_prompt_length;
    const wasCut = max !== null && ids.length > max;
    if (wasCut) ids = keepLast(ids, max, text);
    if (modelLimit !== null && ids.length >= modelLimit) {
      out.dropped.push({
        line: row.line,
        reason: `its prompt has ${ids.length} tokens, which fill the model's ${modelLimit} positions and leave none for a completion`,
      });
      continue;
    }
    if (wasCut) cut.push(row.line);
    out.examples.push({ line: row.line, prompt: row.prompt, prompt_ids: ids, columns: row.columns });
  }

  out.truncated = cut.length;
  if (cut.length > 0) {
    const one = cut.length === 1;
    out.warnings.push(
      `${file}: ${rowCount(cut.length)} (first on ${rowRef(file, cut[0])}) ${one ? 'has a prompt' : 'have prompts'} longer than max_prompt_length ${opts.max_prompt_length}, so ${one ? 'it keeps' : 'they keep'} only ${one ? 'its' : 'their'} last ${opts.max_prompt_length} tokens.`,
    );
  }
  return out;
}

/**
 * The last `max` tokens of `ids`. Where `text` (the same text tokenised without special tokens) sits
 * inside `ids`, the special tokens around it are kept and the text loses its start, as a Hugging Face
 * tokenizer truncating on the left does, so a Llama prompt still starts with BOS.
 */
function keepLast(ids: number[], max: number, text: number[] | null): number[] {
  if (text !== null) {
    for (let start = 0; start + text.length <= ids.length; start++) {
      if (!startsWith(ids.slice(start), text)) continue;
      const before = ids.slice(0, start);
      const after = ids.slice(start + text.length);
      const room = max - before.length - after.length;
      if (room > 0) return [...before, ...text.slice(text.length - room), ...after];
      break;
    }
  }
  return ids.slice(ids.length - max);
}

/**
 * One prompt as `finetune data FILE --method grpo --dump OUT` writes it: its tokens, then the row's
 * other columns. `prompt_ids` is set last too so that a column of that name cannot replace the tokens,
 * while JSON still lists it first.
 */
export function promptDumpRow(e: PromptExample): { prompt_ids: number[] } & Record<string, unknown> {
  return Object.assign({ prompt_ids: e.prompt_ids }, e.columns, { prompt_ids: e.prompt_ids });
}
