/**
 * The training Worker's side of the studio's reward sandbox: a `RewardScriptHost` that speaks the
 * protocol of `engine/train/script_reward.ts` over the MessagePort the page got from
 * `openRewardSandbox` (`ui/lib/reward_sandbox.ts`) and transferred here. The sandbox iframe keeps
 * each request's clock and ends the realm that overran it; this side keeps its own backstop, the
 * limit plus `GRACE_MS`, for a sandbox that does not answer at all (an iframe that was removed or
 * never started), so a call still never hangs the run.
 */
import {
  REWARD_LOAD_TIMEOUT_MS,
  loadFailureError,
  parseOutcome,
  timeoutMessage,
  type RewardHostMessage,
  type RewardSandboxMessage,
  type RewardScriptHost,
  type ScriptCallResult,
} from '../engine/train/script_reward.ts';

/** How much longer than a request's own limit this side waits before giving up on the sandbox. */
const GRACE_MS = 2000;

/** How long the sandbox iframe may take to start and take its port; a busy page takes a few seconds. */
const START_TIMEOUT_MS = 30_000;

type Answer = RewardSandboxMessage | 'no answer';

/**
 * A `RewardScriptHost` over `port`. Requests go one at a time, in the order made (the sandbox has one
 * realm for user code, which a timeout ends for every file in it). `loadTimeoutMs` bounds a file's
 * top-level code (default `REWARD_LOAD_TIMEOUT_MS`).
 */
export function portRewardHost(port: MessagePort, options: { loadTimeoutMs?: number } = {}): RewardScriptHost {
  const loadTimeoutMs = options.loadTimeoutMs ?? REWARD_LOAD_TIMEOUT_MS;
  const waiting = new Map<number, (answer: Answer) => void>();
  const loaded = new Set<string>();
  let nextId = 1;
  let queue: Promise<unknown> = Promise.resolve();
  let disposed = false;
  let started = false;
  let markStarted!: () => void;
  const startedSignal = new Promise<void>((r) => (markStarted = r));

  port.onmessage = (e: MessageEvent<RewardSandboxMessage>) => {
    const m = e.data;
    if (m === null || typeof m !== 'object') return;
    if (m.type === 'ready') {
      started = true;
      markStarted();
      return;
    }
    const resolve = waiting.get(m.id);
    if (resolve === undefined) return;
    waiting.delete(m.id);
    resolve(m);
  };

  function serial<T>(task: () => Promise<T>): Promise<T> {
    const run = queue.then(task);
    queue = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  /** Whether the sandbox has taken its port, waiting up to START_TIMEOUT_MS for it. */
  async function sandboxUp(): Promise<boolean> {
    if (started) return true;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([startedSignal, new Promise<void>((r) => (timer = setTimeout(r, START_TIMEOUT_MS)))]);
    clearTimeout(timer);
    return started;
  }

  /** A request and its answer, or 'no answer' after `ms` plus the grace. */
  function request(message: Extract<RewardHostMessage, { id: number }>, ms: number): Promise<Answer> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        waiting.delete(message.id);
        resolve('no answer');
      }, ms + GRACE_MS);
      waiting.set(message.id, (answer) => {
        clearTimeout(timer);
        resolve(answer);
      });
      try {
        port.postMessage(message);
      } catch (e) {
        clearTimeout(timer);
        waiting.delete(message.id);
        throw e;
      }
    });
  }

  return {
    load(script) {
      return serial(async () => {
        if (disposed) throw new Error('The reward sandbox was disposed.');
        if (!(await sandboxUp())) throw loadFailureError(script.path, { reason: 'stopped', message: 'it did not start' });
        loaded.delete(script.path);
        const answer = await request({ type: 'load', id: nextId++, path: script.path, source: script.source, timeoutMs: loadTimeoutMs }, loadTimeoutMs);
        if (answer === 'no answer') throw loadFailureError(script.path, { reason: 'stopped', message: 'it did not answer' });
        if (answer.type === 'timeout') throw loadFailureError(script.path, { reason: 'timeout', ms: loadTimeoutMs });
        if (answer.type === 'load-failed') throw loadFailureError(script.path, answer.failure);
        if (answer.type !== 'loaded') throw new Error(`The reward sandbox answered a load with "${answer.type}".`);
        loaded.add(script.path);
        return { exportName: answer.exportName };
      });
    },

    call(path, batch, timeoutMs) {
      return serial(async (): Promise<ScriptCallResult> => {
        if (disposed) return { ok: false, message: 'was not run: the reward sandbox was disposed' };
        if (!loaded.has(path)) return { ok: false, message: 'is not loaded' };
        let answer: Answer;
        try {
          answer = await request({ type: 'call', id: nextId++, path, batch, timeoutMs }, timeoutMs);
        } catch (e) {
          // postMessage refuses what structured clone cannot copy (a function in a column, say).
          return { ok: false, message: `was not run: its batch could not be sent (${e instanceof Error ? e.message : String(e)})` };
        }
        if (answer === 'no answer' && disposed) return { ok: false, message: 'was stopped: the reward sandbox was disposed' };
        if (answer === 'no answer') return { ok: false, message: `${timeoutMessage(timeoutMs)} (the reward sandbox did not reply)` };
        if (answer.type === 'timeout') return { ok: false, message: timeoutMessage(timeoutMs) };
        if (answer.type !== 'result') return { ok: false, message: 'gave an answer the sandbox could not read' };
        return parseOutcome(answer.outcome);
      });
    },

    async dispose() {
      if (disposed) return;
      disposed = true;
      loaded.clear();
      for (const resolve of waiting.values()) resolve('no answer');
      waiting.clear();
      port.postMessage({ type: 'dispose' } satisfies RewardHostMessage);
      port.close();
    },
  };
}
