/** Small datasets served from public/samples/, so a first visit can train without a file of its own. */
export interface Sample {
  file: string;
  title: string;
  description: string;
}

export const SAMPLES: readonly Sample[] = [
  { file: 'chat-pirate.jsonl', title: 'Pirate assistant', description: '24 conversations (messages): everyday answers in pirate speak; the change is easy to see in chat.' },
  { file: 'prompt-completion-sentiment.jsonl', title: 'Review sentiment', description: '24 prompt/completion pairs: a review in, "positive" or "negative" out.' },
  { file: 'alpaca-email.jsonl', title: 'Email subject lines', description: '16 instruction/input/output rows (Alpaca): subject lines and one-sentence summaries.' },
];
