/**
 * The "What is trained on" view's tokens as a person reads them: what would not be seen (spaces,
 * line breaks, tokens without text) drawn as symbols, special tokens as chips of their own, and
 * tokens grouped into words so that a line breaks only where the text has whitespace.
 */
import type { PreviewRow } from '../../worker/protocol.ts';
import { tokenText } from './report.ts';

export type Token = NonNullable<PreviewRow['tokens']>[number];

/** `special`: a marker token; `blank`: only whitespace; `empty`: no text of its own. */
export type TokenKind = 'text' | 'special' | 'blank' | 'empty';

export interface ShownToken {
  /** Position in the example. */
  index: number;
  /** The token's own text, for its tooltip. */
  text: string;
  /** What is drawn: the text with symbols for what would not be seen (see LEGEND). */
  shown: string;
  kind: TokenKind;
  trained: boolean;
}

/** Tokens drawn together on one line, followed by `breaks` line breaks (the text's newlines, at most 2). */
export interface TokenWord {
  tokens: ShownToken[];
  breaks: number;
}

/** What each symbol the view may draw stands for. */
export const LEGEND = {
  special: 'a special token: a marker the tokenizer or the chat template adds (the start or end of a text, where a turn begins or ends), not text from the file',
  '∅': 'a token with no text of its own: one of several tokens that together spell one character, which shows on the last of them',
  '␣': 'a space, in a token made only of spaces (SentencePiece tokenizers often make the space before a word a token of its own)',
  '↵': 'a line break in the text (the text goes on on the next line)',
  '→': 'a tab',
  '\uFFFD': 'part of a character whose other bytes are cut off (at max_length) or bytes that are not valid UTF-8',
} as const;

export type LegendSymbol = keyof typeof LEGEND;

function show(t: Token, index: number): ShownToken {
  const base = { index, text: t.text, trained: t.trained };
  if (t.special) return { ...base, shown: t.text || '∅', kind: 'special' };
  // Line breaks are drawn as ↵ in the token and as real breaks after its word.
  const visible = tokenText(t.text).replace(/\n/g, '');
  if (t.text === '') return { ...base, shown: visible, kind: 'empty' };
  if (t.text.trim() === '') return { ...base, shown: visible.replace(/\s/g, '␣'), kind: 'blank' };
  return { ...base, shown: visible, kind: 'text' };
}

/**
 * Tokens grouped into words, each drawn without a line break inside it. A word starts at a token
 * that starts with a space or a tab, and at and after a special token; it ends after a token that
 * ends with whitespace or holds a line break (where the text breaks its line). A token that starts
 * with a line break stays with the word before it, so ↵ never begins a line alone.
 */
export function tokenWords(tokens: readonly Token[]): TokenWord[] {
  const words: TokenWord[] = [];
  let word: TokenWord | null = null;
  for (const [index, token] of tokens.entries()) {
    const t = show(token, index);
    const afterSpecial = word?.tokens.at(-1)?.kind === 'special' && !token.text.startsWith('\n');
    if (word === null || t.kind === 'special' || afterSpecial || /^[^\S\n]/.test(token.text)) words.push((word = { tokens: [], breaks: 0 }));
    word.tokens.push(t);
    const newlines = token.text.split('\n').length - 1;
    if (newlines > 0 || (t.kind === 'text' && /\s$/.test(token.text))) {
      word.breaks = Math.min(newlines, 2);
      word = null;
    }
  }
  return words;
}

/** The symbols the tokens use, in LEGEND's order, for the legend beside them. */
export function legendSymbols(tokens: readonly Token[]): LegendSymbol[] {
  const used = new Set<LegendSymbol>();
  for (const t of tokens) {
    if (t.special) {
      used.add('special');
      continue;
    }
    if (t.text === '') used.add('∅');
    if (t.text.includes('\n')) used.add('↵');
    if (t.text.includes('\t')) used.add('→');
    if (t.text.includes('\uFFFD')) used.add('\uFFFD');
    if (t.text !== '' && t.text.trim() === '' && /[^\n\t]/.test(t.text)) used.add('␣');
  }
  return (Object.keys(LEGEND) as LegendSymbol[]).filter((s) => used.has(s));
}
