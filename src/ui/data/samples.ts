import type { MethodName } from '../../engine/recipe.ts';

/** Small datasets served from public/samples/, so a first visit can train without a file of its own. */
export interface Sample {
  file: string;
  title: string;
  description: string;
  /** The method the sample is for: choosing it sets the recipe's method when that cannot read it. */
  method: MethodName;
}

export const SAMPLES: readonly Sample[] = [
  { file: 'chat-pirate.jsonl', title: 'Pirate assistant', description: '24 conversations (messages): everyday answers in pirate speak; the change is easy to see in chat.', method: 'sft' },
  { file: 'prompt-completion-sentiment.jsonl', title: 'Review sentiment', description: '24 prompt/completion pairs: a review in, "positive" or "negative" out.', method: 'sft' },
  { file: 'alpaca-email.jsonl', title: 'Email subject lines', description: '16 instruction/input/output rows (Alpaca): subject lines and one-sentence summaries.', method: 'sft' },
  { file: 'preference-concise.jsonl', title: 'Concise answers (DPO)', description: '16 preference pairs (prompt / chosen / rejected conversations): a short direct answer preferred over a rambling one; for DPO, ORPO or SimPO.', method: 'dpo' },
];
