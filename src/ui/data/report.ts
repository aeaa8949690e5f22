/** Helpers for showing a DataReport. */
import type { RowFormat } from '../../engine/data/formats.ts';
import type { RewardDraft } from '../recipe/rewards.ts';

export const FORMAT_NAMES: Record<RowFormat, string> = {
  messages: 'conversations (messages)',
  prompt_completion: 'prompt / completion',
  text: 'plain text',
  alpaca: 'Alpaca (instruction / input / output)',
  sharegpt: 'ShareGPT (conversations)',
  preference: 'preference pairs (prompt / chosen / rejected)',
  implicit_preference: 'preference pairs (chosen / rejected sharing their prompt)',
  unpaired_preference: 'labelled completions (prompt / completion / label)',
  prompt_only: 'prompts (GRPO samples the completions)',
};

/** Histogram bins as uPlot bars: each bar at its bin's left edge. */
export function histogramBars(h: { bin_edges: number[]; counts: number[] }): { x: number[]; counts: number[] } | null {
  if (h.counts.length === 0) return null;
  return { x: h.bin_edges.slice(0, h.counts.length), counts: [...h.counts] };
}

/** A token as shown in the loss-mask view: line breaks and tabs made visible. */
export function tokenText(text: string): string {
  if (text === '') return '∅';
  return text.replace(/\t/g, '→').replace(/\n/g, '↵\n');
}

/**
 * The built-in rewards that would find nothing to score in a GRPO dataset: an accuracy reward whose
 * answer column no row has gives every completion null, which trains nothing. One sentence each.
 */
export function missingRewardColumns(drafts: readonly RewardDraft[], columns: readonly string[]): string[] {
  return drafts.flatMap((d) => {
    if (d.kind !== 'builtin' || d.name !== 'accuracy') return [];
    const column = (d.options.column ?? '').trim();
    if (column !== '') return columns.includes(column) ? [] : [`The accuracy reward reads the "${column}" column, which no row has, so it would give every completion null (no reward).`];
    if (columns.includes('answer') || columns.includes('solution')) return [];
    return ['The accuracy reward reads the "answer" column (else "solution"), which no row has, so it would give every completion null (no reward); set its column in the recipe to the one holding the expected answers.'];
  });
}
