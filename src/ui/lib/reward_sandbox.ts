/**
 * The studio's reward sandbox, where user reward files (JavaScript, TRL's shape) run. Training runs in
 * a Web Worker, which cannot make an iframe, so the page makes one here and hands the Worker a
 * MessagePort to it (`worker/reward_port_host.ts` speaks the protocol of
 * `engine/train/script_reward.ts` over that port).
 *
 * The iframe is `sandbox="allow-scripts"` without `allow-same-origin`: its origin is opaque, so it
 * has no access to the studio's DOM, cookies, localStorage or IndexedDB, and the page's data reaches
 * it only as messages. Its Content-Security-Policy (`default-src 'none'`) refuses every fetch,
 * XHR, WebSocket, import or script from anywhere but `blob:` and inline, and eval and WebAssembly
 * with them; workers it starts inherit that policy. User code does not run in the iframe's document
 * but in a dedicated Worker the iframe starts from a blob, so a `while (true) {}` freezes only that
 * Worker: the iframe keeps the clock, terminates it when a call or load runs past its limit, and
 * starts a new one with every loaded file loaded again when next needed.
 *
 * Before a file goes to that Worker the iframe parses it as an inline module whose first statement
 * is `throw 0;`: a syntax error is reported with its line (which a failed `import()` does not give),
 * a static import fails to load (the policy allows none), and a file that parses stops at `throw 0`
 * before any of its own code runs.
 */
import { SANDBOX_KIT_SOURCE } from '../../engine/train/script_reward.ts';

/**
 * The inner Worker's program: it loads files with `import()` of a blob and calls their default
 * exports through the kit. It takes the private port it answers on from its first message, so a
 * user file that calls `postMessage` on its global talks to nobody.
 */
const WORKER_SOURCE = String.raw`'use strict';
const kit = ${SANDBOX_KIT_SOURCE};
const createURL = URL.createObjectURL;
const revokeURL = URL.revokeObjectURL;
const BlobOf = Blob;
const scripts = new Map();

async function load(m) {
  scripts.delete(m.path);
  const url = createURL(new BlobOf([m.source], { type: 'text/javascript' }));
  let namespace;
  try {
    namespace = await import(url);
  } catch (e) {
    return { reason: 'threw', message: kit.describe(e) };
  } finally {
    revokeURL(url);
  }
  if (!('default' in namespace)) return { reason: 'no-default' };
  const fn = namespace.default;
  if (typeof fn !== 'function') return { reason: 'not-function', got: kit.kindOf(fn) };
  scripts.set(m.path, fn);
  return { exportName: kit.nameOf(fn) };
}

self.onmessage = (first) => {
  self.onmessage = null;
  const port = first.ports[0];
  port.onmessage = async (e) => {
    const m = e.data;
    if (m.type === 'load') {
      const r = await load(m);
      port.postMessage('exportName' in r ? { type: 'loaded', id: m.id, exportName: r.exportName } : { type: 'load-failed', id: m.id, failure: r });
    } else if (m.type === 'call') {
      const fn = scripts.get(m.path);
      if (fn === undefined) port.postMessage({ type: 'result', id: m.id, outcome: '{"ok":false,"message":"is not loaded"}' });
      else kit.start(fn, m.batch, (outcome) => port.postMessage({ type: 'result', id: m.id, outcome }));
    }
  };
};
`;

/**
 * The iframe document's program. It takes the port to the training Worker from the page's one
 * message, then answers requests one at a time: a load is parsed here first, then loaded in the
 * inner Worker; a call goes to the inner Worker. Whatever runs past its `timeoutMs` gets a
 * `timeout` answer and the inner Worker is terminated.
 */
const FRAME_SOURCE = String.raw`'use strict';
const WORKER_SOURCE = ${JSON.stringify(WORKER_SOURCE).replace(/</g, '\\u003c')};
/** path → source of each file that loaded, to load again in a new inner Worker. */
const scripts = new Map();
let inner = null;
let host = null;
let queue = Promise.resolve();

addEventListener('message', (e) => {
  if (host !== null || e.source !== parent || e.ports.length !== 1) return;
  host = e.ports[0];
  host.onmessage = (m) => {
    queue = queue.then(() => handle(m.data)).catch(() => undefined);
  };
  host.postMessage({ type: 'ready' });
});

function startInner() {
  const url = URL.createObjectURL(new Blob([WORKER_SOURCE], { type: 'text/javascript' }));
  const worker = new Worker(url);
  URL.revokeObjectURL(url);
  // A user file's uncaught error (a throw in a callback it scheduled) is its own business.
  worker.onerror = (e) => e.preventDefault();
  const channel = new MessageChannel();
  const waiting = new Map();
  channel.port1.onmessage = (e) => {
    const resolve = waiting.get(e.data.id);
    if (resolve === undefined) return;
    waiting.delete(e.data.id);
    resolve(e.data);
  };
  worker.postMessage(null, [channel.port2]);
  return { worker, port: channel.port1, waiting };
}

function stopInner() {
  if (inner === null) return;
  inner.worker.terminate();
  inner.port.close();
  inner = null;
}

/** A request to the inner Worker: its answer, or 'timeout' (and the Worker terminated) after ms. */
function ask(message, ms) {
  const to = inner;
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      to.waiting.delete(message.id);
      if (inner === to) stopInner();
      resolve('timeout');
    }, ms);
    to.waiting.set(message.id, (answer) => {
      clearTimeout(timer);
      resolve(answer);
    });
    to.port.postMessage(message);
  });
}

let innerId = 0;

/** An inner Worker with every loaded file loaded; a file that no longer loads is dropped. */
async function liveInner(ms) {
  if (inner !== null) return;
  inner = startInner();
  for (const [path, source] of [...scripts]) {
    const answer = await ask({ type: 'load', id: --innerId, path, source }, ms);
    if (answer === 'timeout' || answer.type !== 'loaded') scripts.delete(path);
    if (answer === 'timeout') return liveInner(ms);
  }
}

/** The first static import's specifier, to name in the message; the refusal itself is the browser's. */
function firstImport(source) {
  const m = /(?:^|[;}\s])(?:import|export)\s*(?:[\w$*{}\s,]*?\sfrom\s*)?(["'])([^"'\n]+)\1/m.exec(source);
  return m === null ? undefined : m[2];
}

let checking = null;
addEventListener('error', (e) => {
  if (checking === null) return;
  e.preventDefault();
  checking.window(e);
}, true);

/**
 * Parses a file as a module without running it: null when it parses and links, else why not.
 * The script's first statement is "throw 0", so a file that parses stops there; its static imports
 * would run first, but the policy lets none load.
 */
function parseCheck(source, ms) {
  return new Promise((resolve) => {
    const script = document.createElement('script');
    const finish = (failure) => {
      if (checking !== entry) return;
      checking = null;
      clearTimeout(timer);
      script.remove();
      resolve(failure);
    };
    const entry = {
      window(e) {
        if (e.error === 0) return finish(null);
        const error = e.error;
        const raw = error !== null && typeof error === 'object' && typeof error.message === 'string' ? error.message : String(e.message);
        const message = raw.replace(/^Uncaught /, '').replace(/^Failed to execute '[^']*' on '[^']*': /, '');
        if (error instanceof SyntaxError) return finish({ reason: 'syntax', message, line: e.lineno > 0 ? e.lineno : undefined });
        const specifier = firstImport(source);
        finish(specifier === undefined ? { reason: 'import' } : { reason: 'import', specifier });
      },
    };
    checking = entry;
    const timer = setTimeout(() => finish({ reason: 'timeout', ms }), ms);
    script.type = 'module';
    script.onerror = () => {
      const specifier = firstImport(source);
      finish(specifier === undefined ? { reason: 'import' } : { reason: 'import', specifier });
    };
    script.textContent = 'throw 0;' + source;
    document.head.append(script);
  });
}

async function handle(m) {
  if (m.type === 'dispose') {
    stopInner();
    scripts.clear();
    host.close();
    return;
  }
  if (m.type === 'load') {
    scripts.delete(m.path);
    const failure = await parseCheck(m.source, m.timeoutMs);
    if (failure !== null) return host.postMessage({ type: 'load-failed', id: m.id, failure });
    await liveInner(m.timeoutMs);
    const answer = await ask({ type: 'load', id: m.id, path: m.path, source: m.source }, m.timeoutMs);
    if (answer === 'timeout') return host.postMessage({ type: 'timeout', id: m.id });
    if (answer.type === 'loaded') scripts.set(m.path, m.source);
    return host.postMessage(answer);
  }
  if (m.type === 'call') {
    if (!scripts.has(m.path)) return host.postMessage({ type: 'result', id: m.id, outcome: '{"ok":false,"message":"is not loaded"}' });
    await liveInner(m.timeoutMs);
    if (!scripts.has(m.path)) return host.postMessage({ type: 'result', id: m.id, outcome: '{"ok":false,"message":"is not loaded: it failed to load again after the reward sandbox restarted"}' });
    const answer = await ask(m, m.timeoutMs);
    host.postMessage(answer === 'timeout' ? { type: 'timeout', id: m.id } : answer);
  }
}
`;

/**
 * The iframe's policy: nothing from anywhere, except its own inline program (and the inline parse
 * check) and `blob:` for the inner Worker and the files it imports.
 */
const POLICY = "default-src 'none'; script-src 'unsafe-inline' blob:; worker-src blob:; base-uri 'none'; form-action 'none'";

// The program goes into the document as an inline script, which any "<" in it could end; there is
// none outside the embedded Worker program, whose "<" are escaped there.
if (FRAME_SOURCE.includes('<')) throw new Error('The reward sandbox program must not contain "<".');

/** The iframe's whole document. */
export const REWARD_SANDBOX_DOCUMENT = `<!doctype html><html><head><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" content="${POLICY}"><script>${FRAME_SOURCE}</script></head><body></body></html>`;

/**
 * Opens the reward sandbox: a hidden sandboxed iframe in this page, and the port to it, to be
 * transferred to the training Worker (for `portRewardHost`). `close()` removes the iframe, which ends
 * the inner Worker and everything running in it.
 */
export function openRewardSandbox(): { port: MessagePort; close(): void } {
  const channel = new MessageChannel();
  const frame = document.createElement('iframe');
  frame.setAttribute('sandbox', 'allow-scripts');
  frame.setAttribute('aria-hidden', 'true');
  frame.tabIndex = -1;
  frame.title = 'Reward sandbox';
  frame.style.display = 'none';
  let sent = false;
  frame.addEventListener('load', () => {
    // Once: the iframe takes the first port it is given and ignores any later message.
    if (sent) return;
    sent = true;
    frame.contentWindow?.postMessage(null, '*', [channel.port2]);
  });
  frame.srcdoc = REWARD_SANDBOX_DOCUMENT;
  document.body.append(frame);
  return {
    port: channel.port1,
    close() {
      frame.remove();
      channel.port1.close();
    },
  };
}
