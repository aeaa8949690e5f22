/**
 * The CLI's reward sandbox: user reward files run in a separate Node process that is handed only the
 * batch. Three walls stand between a script and the machine:
 *
 * - the child is started with Node's permission model (no file system, child processes, workers or
 *   native addons), an empty environment, and code generation from strings off;
 * - inside it, each script is a `vm.SourceTextModule` in its own empty context: no `process`,
 *   `require`, `fetch`, timers or `import` (the linker refuses every static import, `import()` is
 *   refused with an error made in the script's own realm, so it holds nothing of the child's), and
 *   only strings cross between the context and the child's code (see `SANDBOX_KIT_SOURCE`);
 * - the parent keeps the clock: a call or load that does not answer in time kills the child, which
 *   is started again, with every loaded script loaded again, when next needed. A sync `while (true)`
 *   cannot be interrupted from inside the process that runs it; killing it can.
 *
 * The child does not keep the parent's event loop alive: its process and IPC channel are unref'd
 * whenever no request is waiting for it, so a CLI run that forgets `dispose()` still exits. `dispose()`
 * kills it and waits for it to be gone.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import {
  REWARD_LOAD_TIMEOUT_MS,
  SANDBOX_KIT_SOURCE,
  loadFailureError,
  parseOutcome,
  timeoutMessage,
  type LoadFailure,
  type RewardHostMessage,
  type RewardSandboxMessage,
  type RewardScript,
  type RewardScriptHost,
  type ScriptCallResult,
  type ScriptRewardBatch,
} from '../engine/train/script_reward.ts';

/** How long a fresh child may take to say it is ready; a slow machine under load takes a second or two. */
const START_TIMEOUT_MS = 30_000;

/**
 * The child's program (CommonJS, given to `node -e`, so no file path or TypeScript loader is needed).
 * It answers `load` and `call` messages one at a time; the parent never sends the next request
 * before the last one is answered.
 */
const RUNNER_SOURCE = String.raw`'use strict';
const vm = require('node:vm');
const KIT = ${JSON.stringify(SANDBOX_KIT_SOURCE)};
/** path → { fn, kit } of each loaded script. */
const scripts = new Map();

function send(message) {
  if (process.connected) process.send(message);
}

async function load(m) {
  scripts.delete(m.path);
  const context = vm.createContext(Object.create(null), { name: m.path, codeGeneration: { strings: false, wasm: false } });
  const kit = vm.runInContext(KIT, context);
  const start = kit.start, poll = kit.poll, nameOf = kit.nameOf, kindOf = kit.kindOf, describe = kit.describe;
  // Rejects import() with an error of the script's own realm: one of the child's realm would hand
  // the script this realm's Function, and with it a way out.
  const refuseImport = vm.runInContext('(() => Promise.reject(new TypeError("import() is not available to a reward function")))', context);
  let mod;
  try {
    mod = new vm.SourceTextModule(m.source, { identifier: m.path, context, importModuleDynamically: refuseImport });
  } catch (e) {
    const message = e !== null && typeof e === 'object' && typeof e.message === 'string' ? e.message : String(e);
    return { reason: 'syntax', message };
  }
  const specifiers = mod.dependencySpecifiers;
  if (specifiers.length > 0) return { reason: 'import', specifier: String(specifiers[0]) };
  await mod.link(() => { throw new Error('a reward file imports nothing'); });
  try {
    await mod.evaluate();
  } catch (e) {
    return { reason: 'threw', message: describe(e) };
  }
  const namespace = mod.namespace;
  if (!('default' in namespace)) return { reason: 'no-default' };
  const fn = namespace.default;
  if (typeof fn !== 'function') return { reason: 'not-function', got: kindOf(fn) };
  scripts.set(m.path, { fn, start, poll });
  return { exportName: nameOf(fn) };
}

/** Until the script's outcome is written: at once for a sync function, later for a promise. */
async function call(m) {
  const script = scripts.get(m.path);
  if (script === undefined) return JSON.stringify({ ok: false, message: 'is not loaded' });
  script.start(script.fn, JSON.stringify(m.batch));
  for (let wait = 0; ; wait = Math.min(2 * wait || 1, 20)) {
    const outcome = script.poll();
    if (typeof outcome === 'string') return outcome;
    if (outcome !== undefined) return JSON.stringify({ ok: false, message: 'gave an answer the sandbox could not read' });
    await new Promise((r) => (wait === 0 ? setImmediate(r) : setTimeout(r, wait)));
  }
}

process.on('message', async (m) => {
  if (m.type === 'load') {
    let r;
    try {
      r = await load(m);
    } catch (e) {
      r = { reason: 'stopped', message: e !== null && typeof e === 'object' && typeof e.message === 'string' ? e.message : 'it failed' };
    }
    send('exportName' in r ? { type: 'loaded', id: m.id, exportName: r.exportName } : { type: 'load-failed', id: m.id, failure: r });
  } else if (m.type === 'call') {
    send({ type: 'result', id: m.id, outcome: await call(m) });
  } else if (m.type === 'dispose') {
    process.disconnect();
  }
});
send({ type: 'ready' });
`;

/** The flags the child runs under: those of Node's permission model this Node has, and the vm modules. */
function childFlags(): string[] {
  const has = (flag: string) => process.allowedNodeEnvironmentFlags.has(flag);
  const flags = ['--experimental-vm-modules', '--disallow-code-generation-from-strings'];
  // Node 20–22 call it --experimental-permission; later Nodes --permission.
  if (has('--permission')) flags.push('--permission');
  else if (has('--experimental-permission')) flags.push('--experimental-permission');
  if (has('--disable-warning')) flags.push('--disable-warning=ExperimentalWarning');
  return flags;
}

interface Waiting {
  resolve(message: RewardSandboxMessage | null): void;
}

/** One child process and the requests waiting on it. */
class Child {
  readonly process: ChildProcess;
  readonly ready: Promise<boolean>;
  /** Why it stopped, once it has. */
  exit: string | null = null;
  private readonly waiting = new Map<number, Waiting>();
  private readonly gone: Promise<void>;
  private markReady!: (ok: boolean) => void;

  constructor() {
    this.process = spawn(process.execPath, [...childFlags(), '-e', RUNNER_SOURCE], {
      stdio: ['ignore', 'ignore', 'ignore', 'ipc'],
      env: {},
      cwd: '/',
      windowsHide: true,
    });
    this.ready = new Promise((r) => (this.markReady = r));
    this.gone = new Promise((r) => {
      this.process.once('exit', () => r());
      // A process that could not be started has no exit to wait for.
      this.process.once('error', () => {
        if (this.process.pid === undefined) r();
      });
    });
    this.process.on('message', (m: RewardSandboxMessage) => {
      if (m.type === 'ready') return this.markReady(true);
      const waiting = 'id' in m ? this.waiting.get(m.id) : undefined;
      if (waiting === undefined) return;
      this.waiting.delete((m as { id: number }).id);
      waiting.resolve(m);
    });
    this.process.on('error', (e) => this.stopped(e.message));
    this.process.on('exit', (code, signal) => this.stopped(signal ? `signal ${signal}` : `exit code ${code}`));
    const timer = setTimeout(() => this.markReady(false), START_TIMEOUT_MS);
    timer.unref();
    void this.ready.then(() => clearTimeout(timer));
  }

  /** Sends a request and waits for its answer; null when the child stopped (or was killed) first. */
  request(message: Extract<RewardHostMessage, { id: number }>): Promise<RewardSandboxMessage | null> {
    if (this.exit !== null) return Promise.resolve(null);
    return new Promise((resolve) => {
      this.waiting.set(message.id, { resolve });
      this.process.send(message, (e) => {
        if (e) this.stopped(e.message);
      });
    });
  }

  /** Whether the event loop should wait for this child: only while a request is out. */
  hold(held: boolean): void {
    if (held) {
      this.process.ref();
      this.process.channel?.ref();
    } else {
      this.process.unref();
      this.process.channel?.unref();
    }
  }

  async kill(): Promise<void> {
    // Waiting for the exit must keep the event loop alive, or a caller awaiting dispose() never resumes.
    this.process.ref();
    if (this.process.exitCode === null && this.process.signalCode === null) this.process.kill('SIGKILL');
    this.stopped('killed');
    await this.gone;
  }

  private stopped(why: string): void {
    this.exit ??= why;
    this.markReady(false);
    for (const waiting of this.waiting.values()) waiting.resolve(null);
    this.waiting.clear();
  }
}

/**
 * The Node reward sandbox: one child process for all of a run's reward files, started on the first
 * load. Requests are answered one at a time in the order made, each under its own time limit, which
 * starts when the child takes the request. `loadTimeoutMs` bounds a file's top-level code (default
 * `REWARD_LOAD_TIMEOUT_MS`).
 */
export function nodeRewardHost(options: { loadTimeoutMs?: number } = {}): RewardScriptHost {
  const loadTimeoutMs = options.loadTimeoutMs ?? REWARD_LOAD_TIMEOUT_MS;
  /** The scripts that loaded, to load again in a new child after a timeout. */
  const loaded = new Map<string, RewardScript>();
  let child: Child | null = null;
  let nextId = 1;
  let queue: Promise<unknown> = Promise.resolve();
  let pending = 0;
  let disposed = false;

  /** Runs `task` after every earlier request, holding the event loop open meanwhile. */
  function serial<T>(task: () => Promise<T>): Promise<T> {
    pending++;
    child?.hold(true);
    const run = queue.then(task);
    queue = run.then(
      () => undefined,
      () => undefined,
    );
    return run.finally(() => {
      if (--pending === 0) child?.hold(false);
    });
  }

  /** A child that is up, with every loaded script loaded; null when none could be started. */
  async function liveChild(): Promise<Child | null> {
    if (child !== null && child.exit === null) return child;
    child = new Child();
    if (!(await child.ready)) {
      await child.kill();
      child = null;
      return null;
    }
    for (const script of [...loaded.values()]) {
      // The same text loaded before, so it loads again; one that now fails is dropped and its calls say so.
      const answer = await timed(child, { type: 'load', id: nextId++, path: script.path, source: script.source, timeoutMs: loadTimeoutMs }, loadTimeoutMs);
      if (answer === 'timeout' || answer === null || answer.type !== 'loaded') loaded.delete(script.path);
      if (answer === 'timeout' || answer === null) return liveChild();
    }
    return child;
  }

  /** A request under a time limit: its answer, null where the child stopped, 'timeout' (and the child killed) where it took too long. */
  async function timed(to: Child, message: Extract<RewardHostMessage, { id: number }>, ms: number): Promise<RewardSandboxMessage | null | 'timeout'> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), ms)));
    const answer = await Promise.race([to.request(message), late]);
    clearTimeout(timer);
    if (answer === 'timeout') await to.kill();
    return answer;
  }

  return {
    load(script) {
      return serial(async () => {
        if (disposed) throw new Error('The reward sandbox was disposed.');
        const to = await liveChild();
        if (to === null) throw loadFailureError(script.path, { reason: 'stopped', message: 'its process could not be started' });
        to.hold(true);
        const answer = await timed(to, { type: 'load', id: nextId++, path: script.path, source: script.source, timeoutMs: loadTimeoutMs }, loadTimeoutMs);
        if (answer === 'timeout') throw loadFailureError(script.path, { reason: 'timeout', ms: loadTimeoutMs });
        if (answer === null) throw loadFailureError(script.path, { reason: 'stopped', message: to.exit ?? 'its process stopped' });
        if (answer.type === 'loaded') {
          loaded.set(script.path, script);
          return { exportName: answer.exportName };
        }
        loaded.delete(script.path);
        if (answer.type !== 'load-failed') throw new Error(`The reward process answered a load with "${answer.type}".`);
        throw loadFailureError(script.path, answer.failure.reason === 'syntax' ? await withSyntaxLine(script.source, answer.failure) : answer.failure);
      });
    },

    call(path: string, batch: ScriptRewardBatch, timeoutMs: number): Promise<ScriptCallResult> {
      return serial(async (): Promise<ScriptCallResult> => {
        if (disposed) return { ok: false, message: 'was not run: the reward sandbox was disposed' };
        if (!loaded.has(path)) return { ok: false, message: 'is not loaded' };
        const to = await liveChild();
        if (to === null) return { ok: false, message: 'was not run: the reward process could not be started' };
        if (!loaded.has(path)) return { ok: false, message: 'is not loaded: it failed to load again after the reward process restarted' };
        to.hold(true);
        const answer = await timed(to, { type: 'call', id: nextId++, path, batch, timeoutMs }, timeoutMs);
        if (answer === 'timeout') return { ok: false, message: timeoutMessage(timeoutMs) };
        if (answer === null && disposed) return { ok: false, message: 'was stopped: the reward sandbox was disposed' };
        if (answer === null) return { ok: false, message: `crashed the reward process (${to.exit ?? 'it exited'})` };
        if (answer.type !== 'result') return { ok: false, message: 'gave an answer the sandbox could not read' };
        return parseOutcome(answer.outcome);
      });
    },

    async dispose() {
      disposed = true;
      loaded.clear();
      // Waits for nothing queued: a call in flight finds its child killed and answers at once.
      const last = child;
      child = null;
      await last?.kill();
    },
  };
}

/**
 * The line of a syntax error, which V8 knows but a vm module's SyntaxError does not carry: Node's
 * `--check` on the same text (only parsed, never run) prints it as `[stdin]:LINE`. The message stays
 * the one the sandbox gave; without a line the sentence still names the file.
 */
function withSyntaxLine(source: string, failure: Extract<LoadFailure, { reason: 'syntax' }>): Promise<LoadFailure> {
  return new Promise((resolve) => {
    const check = spawn(process.execPath, ['--check', '--input-type=module'], { stdio: ['pipe', 'ignore', 'pipe'], env: {}, cwd: '/', windowsHide: true });
    let stderr = '';
    const timer = setTimeout(() => check.kill('SIGKILL'), REWARD_LOAD_TIMEOUT_MS);
    check.stderr.setEncoding('utf8');
    check.stderr.on('data', (d: string) => {
      if (stderr.length < 4096) stderr += d;
    });
    check.on('error', () => undefined);
    check.stdin.on('error', () => undefined);
    check.on('close', () => {
      clearTimeout(timer);
      const line = /^\[stdin\]:(\d+)/m.exec(stderr)?.[1];
      resolve(line === undefined ? failure : { ...failure, line: Number(line) });
    });
    check.stdin.end(source);
  });
}
