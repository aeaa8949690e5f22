/**
 * The Chat view's state: one conversation with the base model and one with the trained adapter.
 * A message goes to both at once (their tokens interleave in the Worker), each side shows its
 * speed while it writes, and Stop ends both, keeping what was written.
 */
import type { AppState } from '../app.svelte.ts';
import { errorText } from '../lib/errors.ts';
import { proxy } from '../connect.ts';
import type { ChatProgress } from '../../worker/protocol.ts';

export interface ChatMessage {
  role: string;
  content: string;
}

export type ChatSideId = 'base' | 'adapter';

export interface ChatSide {
  messages: ChatMessage[];
  /** While a reply is written: its progress; null when idle. */
  writing: ChatProgress | null;
  /** The last reply's figures, kept after it ends. */
  last: ChatProgress | null;
}

function emptySide(): ChatSide {
  return { messages: [], writing: null, last: null };
}

export class ChatStore {
  sides = $state<Record<ChatSideId, ChatSide>>({ base: emptySide(), adapter: emptySide() });
  busy = $state(false);
  stopping = $state(false);
  error = $state<string | null>(null);
  /** 'auto' lets the Worker choose the length from the speed of the first tokens. */
  maxNewTokens = $state<number | 'auto'>('auto');
  temperature = $state(0);

  constructor(private readonly app: AppState) {}

  async send(text: string): Promise<void> {
    if (this.busy || text.trim() === '') return;
    this.busy = true;
    this.stopping = false;
    this.error = null;
    const system = this.app.recipe.validation.recipe?.system_prompt ?? null;
    const sides: ChatSideId[] = this.app.runs.adapter.available ? ['base', 'adapter'] : ['base'];
    const opts = {
      ...(this.maxNewTokens === 'auto' ? {} : { max_new_tokens: Math.max(1, Math.round(this.maxNewTokens)) }),
      temperature: Math.max(0, this.temperature),
    };
    try {
      // Both sides at once: the Worker interleaves their tokens, so neither waits for the other.
      const results = await Promise.allSettled(sides.map((side) => this.replyOn(side, text, system, opts)));
      const failed = results.find((r) => r.status === 'rejected');
      if (failed) this.error = errorText((failed as PromiseRejectedResult).reason);
    } finally {
      this.busy = false;
      this.stopping = false;
    }
  }

  private async replyOn(side: ChatSideId, text: string, system: string | null, opts: { max_new_tokens?: number; temperature: number }): Promise<void> {
    const history: ChatMessage[] = [...this.sides[side].messages, { role: 'user', content: text }];
    this.sides[side].messages = [...history, { role: 'assistant', content: '' }];
    this.sides[side].writing = { text: '', tokens: 0, tokens_per_second: null, max_new_tokens: opts.max_new_tokens ?? null, stopped: false };
    const at = history.length;
    // Plain objects for the Worker: earlier turns are reactive proxies, which cannot be cloned.
    const plain = $state.snapshot(history);
    const messages = system ? [{ role: 'system', content: system }, ...plain] : plain;
    let done = false;
    // The Worker sends the whole reply so far each time it grows; late messages are dropped.
    const onProgress = proxy((p: ChatProgress) => {
      if (done) return;
      this.sides[side].messages[at].content = p.text;
      this.sides[side].writing = p;
    });
    try {
      const result = await this.app.api.chat(messages, { adapter: side === 'adapter', ...opts }, onProgress);
      this.sides[side].messages[at].content = result.text;
      this.sides[side].last = result;
    } finally {
      done = true;
      this.sides[side].writing = null;
    }
  }

  /** Ends both replies after their current token; each keeps what it wrote. */
  async stop(): Promise<void> {
    if (!this.busy || this.stopping) return;
    this.stopping = true;
    try {
      await this.app.api.stopChat();
    } catch (e) {
      this.error = errorText(e);
    }
  }

  clear(): void {
    this.sides = { base: emptySide(), adapter: emptySide() };
    this.error = null;
  }
}
