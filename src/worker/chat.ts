/**
 * One chat reply in the Worker: the conversation rendered as the model was trained to read it,
 * generated token by token with the whole reply so far streamed to the page, stoppable at any
 * token, and (without a length from the person) as long as the measured speed allows.
 */
import { generate } from '../engine/model/generate.ts';
import { promptIds, samplingOptions } from '../engine/model/prompt.ts';
import type { LoraAdapter } from '../engine/model/lora.ts';
import type { LoadedModel } from '../engine/run.ts';
import type { ChatProgress } from './protocol.ts';

/** With no max_new_tokens: a reply is cut where it would take longer than this at the measured speed. */
export const AUTO_REPLY_SECONDS = 30;
export const AUTO_MIN_TOKENS = 16;
export const AUTO_MAX_TOKENS = 256;
/** Tokens timed before the automatic length is chosen; the first (kernels compile) is not timed. */
const AUTO_TIMED_TOKENS = 4;

export interface ReplyOptions {
  max_new_tokens?: number;
  temperature?: number;
  seed?: number;
  /** The adapter was trained on plain text (use_chat_template off): talk to it the same way. */
  plainText: boolean;
  adapter: LoraAdapter | null;
  /** Checked after every token: true ends the reply there, keeping what was written. */
  stopped: () => boolean;
  now?: () => number;
}

/** The automatic reply length for a measured speed (tokens per second). */
export function autoReplyTokens(tokensPerSecond: number): number {
  const n = Math.round(tokensPerSecond * AUTO_REPLY_SECONDS);
  return Math.max(AUTO_MIN_TOKENS, Math.min(AUTO_MAX_TOKENS, Number.isFinite(n) ? n : AUTO_MAX_TOKENS));
}

export async function chatReply(
  loaded: LoadedModel,
  messages: { role: string; content: string }[],
  opts: ReplyOptions,
  onProgress: (p: ChatProgress) => void,
): Promise<ChatProgress> {
  const { tokenizer } = loaded;
  const now = opts.now ?? (() => performance.now());
  const ids = promptIds(tokenizer, messages, opts.plainText ? 'plain' : 'auto');
  const reply: number[] = [];
  const auto = opts.max_new_tokens === undefined;
  let limit = opts.max_new_tokens ?? AUTO_MAX_TOKENS;
  let firstAt: number | null = null;
  let progress: ChatProgress = { text: '', tokens: 0, tokens_per_second: null, max_new_tokens: auto ? null : limit, stopped: false };
  await generate(loaded.model, [ids], {
    adapter: opts.adapter,
    max_new_tokens: limit,
    ...samplingOptions(loaded.folder.generationConfig, { temperature: opts.temperature }),
    seed: opts.seed ?? 0,
    eos_token_id: tokenizer.eosTokenIds,
    pad_token_id: tokenizer.padTokenId,
    onTokens: ([token]) => {
      if (token < 0 || tokenizer.eosTokenIds.includes(token)) return false;
      reply.push(token);
      const t = now();
      // The first token carries the prompt's forward pass and, on WebGPU, the kernels' compilation.
      if (firstAt === null) firstAt = t;
      const timed = reply.length - 1;
      const speed = timed > 0 && t > firstAt ? (timed * 1000) / (t - firstAt) : null;
      if (auto && progress.max_new_tokens === null && timed >= AUTO_TIMED_TOKENS && speed !== null) limit = Math.max(reply.length, autoReplyTokens(speed));
      // The whole reply each time, with a trailing half of a multi-byte character held back.
      const text = tokenizer.decode(reply, { skip_special_tokens: true }).replace(/\uFFFD+$/, '');
      progress = {
        text,
        tokens: reply.length,
        tokens_per_second: speed,
        max_new_tokens: auto && timed < AUTO_TIMED_TOKENS ? null : limit,
        stopped: false,
      };
      onProgress(progress);
      if (opts.stopped()) {
        progress = { ...progress, stopped: true };
        return false;
      }
      return reply.length < limit;
    },
  });
  return { ...progress, text: tokenizer.decode(reply, { skip_special_tokens: true }) };
}
