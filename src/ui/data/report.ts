/** Helpers for showing a DataReport. */
import type { RowFormat } from '../../engine/data/formats.ts';

export const FORMAT_NAMES: Record<RowFormat, string> = {
  messages: 'conversations (messages)',
  prompt_completion: 'prompt / completion',
  text: 'plain text',
  alpaca: 'Alpaca (instruction / input / output)',
  sharegpt: 'ShareGPT (conversations)',
  preference: 'preference pairs (prompt / chosen / rejected)',
  implicit_preference: 'preference pairs (chosen / rejected sharing their prompt)',
  unpaired_preference: 'labelled completions (prompt / completion / label)',
  prompt_only: 'prompts only',
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
