/**
 * What every reply starts from, the same in the Worker's chat and `finetune generate`: the prompt
 * as token ids, rendered as the model was trained to read it, and the sampling settings as
 * transformers' generate() takes them from generation_config.json.
 */
import type { ChatMessage, TextTokenizer } from '../data/tokenizer.ts';
import type { GenerationConfig } from './generate.ts';

/**
 * How a conversation becomes text: 'template' renders the model's chat template (refused when it
 * has none); 'plain' joins the contents by newlines and ends with one, as a run with
 * use_chat_template off was trained on a prompt; 'auto' uses the template when the model has one,
 * else joins the contents.
 */
export type PromptRendering = 'auto' | 'template' | 'plain';

/**
 * The ids of a prompt: a conversation, rendered as `rendering` says and ending where the reply
 * begins, or a string, encoded as it is. A chat template writes its own special tokens (BOS
 * included), as transformers assumes, so only text without one gets the tokenizer's.
 */
export function promptIds(tokenizer: TextTokenizer, prompt: string | ChatMessage[], rendering: PromptRendering = 'auto'): number[] {
  if (typeof prompt === 'string') return tokenizer.encode(prompt, { add_special_tokens: true });
  const templated = rendering === 'template' || (rendering === 'auto' && tokenizer.hasChatTemplate);
  if (templated) return tokenizer.encode(tokenizer.applyChatTemplate(prompt, { add_generation_prompt: true }), { add_special_tokens: false });
  const text = prompt.map((m) => m.content).join('\n') + (rendering === 'plain' ? '\n' : '');
  return tokenizer.encode(text, { add_special_tokens: true });
}

export type Sampling = Pick<GenerationConfig, 'do_sample' | 'temperature' | 'top_p' | 'top_k'>;

/**
 * Sampling as transformers decides it: the model's generation_config.json (absent: greedy, its
 * defaults temperature 1, top_p 1, top_k 50), each setting given here overriding it. A
 * temperature given samples when it is above 0 and is greedy at 0, whatever the config says.
 */
export function samplingOptions(generationConfig: Record<string, unknown> | null, given: Partial<Pick<Sampling, 'temperature' | 'top_p' | 'top_k'>> = {}): Sampling {
  const gc = generationConfig ?? {};
  const number = (key: string, fallback: number): number => {
    const value = gc[key];
    return typeof value === 'number' ? value : fallback;
  };
  return {
    do_sample: given.temperature !== undefined ? given.temperature > 0 : gc.do_sample === true,
    temperature: given.temperature ?? number('temperature', 1),
    top_p: given.top_p ?? number('top_p', 1),
    top_k: given.top_k ?? number('top_k', 50),
  };
}
