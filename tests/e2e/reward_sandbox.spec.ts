/**
 * User reward functions in headless Chromium, as the studio runs them: the page opens the sandbox
 * iframe (`ui/lib/reward_sandbox.ts`) and transfers its port to a Worker that stands for the
 * training Worker (`worker/reward_port_host.ts`). The harness is bundled here with esbuild and served
 * by `page.route` on the studio's own origin, never added to the app: the page first stores a secret
 * in localStorage, IndexedDB and a cookie of that origin, so a reward function that reads them, or
 * fetches, imports, or reaches for the page, shows whether the sandbox holds. Every hostile case
 * gives nothing (a failure message, or values that show nothing was reached) and the next call with
 * a good function still works. The same cases run in Node in tests/unit/reward_process.test.ts.
 */
import { expect, test, type Page } from '@playwright/test';
import { build } from 'esbuild';
import type { ScriptCallResult, ScriptRewardBatch } from '../../src/engine/train/script_reward.ts';

const ROOT = new URL('../../', import.meta.url).pathname;
/** The studio's origin (playwright.config.ts serves it on STUDIO_PORT). */
const ORIGIN = `http://localhost:${Number(process.env.STUDIO_PORT ?? 4173)}`;
const HARNESS = '/__reward_sandbox_test.html';
const HARNESS_JS = '/__reward_sandbox_test.js';
/** Where a reward function that got out would send its requests; nothing may reach it. */
const PROBE = '/__reward_probe';
const SECRET = 'S3CRET-reward-sandbox';

/** Short limits keep the suite fast; nothing here asserts a duration. */
const TIMEOUT_MS = 500;
const LOAD_TIMEOUT_MS = 1000;

const BATCH: ScriptRewardBatch = {
  prompts: ['Name a dog.', [{ role: 'user', content: 'Name a cat.' }]],
  completions: ['Rex', 'Whiskers'],
  columns: { answer: ['Rex', 'Tom'], completion_ids: [[82, 101, 120], [87, 104]] },
};

const GOOD = { path: 'rewards/letters.js', source: 'export default function letters(prompts, completions) { return completions.map((c) => c.length); }' };

/** The stand-in training Worker: a portRewardHost answering the page's requests. */
const WORKER_ENTRY = `
import { portRewardHost } from './src/worker/reward_port_host.ts';
import { builtinReward, checkRewardValues } from './src/engine/train/rewards.ts';
let host;
/** What the page can be sent: structured clone copies no function or symbol. */
const shown = (v) => (typeof v === 'function' ? '[function]' : typeof v === 'symbol' ? '[symbol]' : v);
self.onmessage = async (e) => {
  const m = e.data;
  if (m.port) {
    host = portRewardHost(m.port, { loadTimeoutMs: ${LOAD_TIMEOUT_MS} });
    return;
  }
  try {
    if (m.op === 'load') postMessage({ id: m.id, value: await host.load({ path: m.path, source: m.source }) });
    else if (m.op === 'call') {
      const r = await host.call(m.path, m.batch, m.timeoutMs);
      const checked = r.ok ? checkRewardValues('f', r.values, m.batch.completions.length) : null;
      const result = r.ok ? { ok: true, values: Array.isArray(r.values) ? r.values.map(shown) : shown(r.values) } : r;
      postMessage({ id: m.id, value: { result, warnings: checked ? checked.warnings : [] } });
    } else if (m.op === 'json') {
      postMessage({ id: m.id, value: builtinReward({ name: 'json', schema: m.schema })(m.completions.map(() => ''), m.completions, m.completions.map(() => ({}))) });
    } else if (m.op === 'dispose') postMessage({ id: m.id, value: await host.dispose() });
  } catch (err) {
    postMessage({ id: m.id, error: { name: err.name, message: err.message, field: err.field, file: err.file } });
  }
};
`;

/** The harness page's script: stores the secrets, opens the sandbox, starts the Worker. */
function pageEntry(workerCode: string): string {
  return `
import { openRewardSandbox } from './src/ui/lib/reward_sandbox.ts';
localStorage.setItem('reward-secret', ${JSON.stringify(SECRET)});
document.cookie = 'reward_secret=${SECRET}; path=/';
await new Promise((resolve, reject) => {
  const open = indexedDB.open('reward-secret', 1);
  open.onupgradeneeded = () => open.result.createObjectStore('s');
  open.onerror = () => reject(open.error);
  open.onsuccess = () => {
    const tx = open.result.transaction('s', 'readwrite');
    tx.objectStore('s').put(${JSON.stringify(SECRET)}, 'secret');
    tx.oncomplete = () => { open.result.close(); resolve(); };
  };
});
const sandbox = openRewardSandbox();
const url = URL.createObjectURL(new Blob([${JSON.stringify(workerCode)}], { type: 'text/javascript' }));
const worker = new Worker(url, { type: 'module' });
worker.postMessage({ port: sandbox.port }, [sandbox.port]);
const waiting = new Map();
let next = 1;
worker.onmessage = (e) => { const { id, ...reply } = e.data; waiting.get(id)?.(reply); waiting.delete(id); };
const ask = (m) => new Promise((resolve) => { const id = next++; waiting.set(id, resolve); worker.postMessage({ ...m, id }); });
window.rewards = {
  load: (path, source) => ask({ op: 'load', path, source }),
  call: (path, batch, timeoutMs) => ask({ op: 'call', path, batch, timeoutMs }),
  dispose: () => ask({ op: 'dispose' }),
  json: (schema, completions) => ask({ op: 'json', schema, completions }),
  close: () => sandbox.close(),
  frames: () => [...document.querySelectorAll('iframe')].map((f) => ({ sandbox: f.getAttribute('sandbox'), hidden: getComputedStyle(f).display === 'none' })),
};
window.harnessReady = true;
`;
}

async function bundle(contents: string): Promise<string> {
  const result = await build({
    stdin: { contents, resolveDir: ROOT, loader: 'ts', sourcefile: 'reward_sandbox_harness.ts' },
    bundle: true,
    write: false,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    logLevel: 'silent',
  });
  return result.outputFiles[0].text;
}

type Reply<T> = { value?: T; error?: { name: string; message: string; field?: string; file?: string } };
type CallReply = { result: ScriptCallResult; warnings: string[] };

test.describe.configure({ mode: 'serial' });

let page: Page;
const probeHits: string[] = [];
const pageErrors: string[] = [];

test.beforeAll(async ({ browser }) => {
  const workerCode = await bundle(WORKER_ENTRY);
  const pageCode = await bundle(pageEntry(workerCode));
  page = await browser.newPage();
  page.on('pageerror', (e) => pageErrors.push(e.message));
  await page.route(`**${HARNESS}`, (route) =>
    route.fulfill({ contentType: 'text/html', body: `<!doctype html><html><head><meta charset="utf-8"><title>reward sandbox</title></head><body><script type="module" src="${HARNESS_JS}"></script></body></html>` }),
  );
  await page.route(`**${HARNESS_JS}`, (route) => route.fulfill({ contentType: 'text/javascript', body: pageCode }));
  await page.context().route(`**${PROBE}**`, (route) => {
    probeHits.push(route.request().url());
    return route.fulfill({ contentType: 'text/javascript', body: `export default ${JSON.stringify(SECRET)};` });
  });
  await page.goto(`${ORIGIN}${HARNESS}`);
  await page.waitForFunction(() => (window as unknown as { harnessReady?: boolean }).harnessReady === true);
  expect(await page.evaluate(() => localStorage.getItem('reward-secret'))).toBe(SECRET);
  expect(await load(GOOD.path, GOOD.source)).toEqual({ value: { exportName: 'letters' } });
});

test.afterAll(async () => {
  expect(probeHits).toEqual([]);
  expect(pageErrors).toEqual([]);
  await page.close();
});

function load(path: string, source: string): Promise<Reply<{ exportName: string | null }>> {
  return page.evaluate(([p, s]) => (window as unknown as { rewards: { load(p: string, s: string): Promise<Reply<{ exportName: string | null }>> } }).rewards.load(p, s), [path, source] as const);
}

async function call(path: string, batch: ScriptRewardBatch = BATCH, timeoutMs = TIMEOUT_MS): Promise<CallReply> {
  const reply = await page.evaluate(
    ([p, b, t]) => (window as unknown as { rewards: { call(p: string, b: unknown, t: number): Promise<Reply<CallReply>> } }).rewards.call(p, b, t),
    [path, batch, timeoutMs] as const,
  );
  expect(reply.error).toBeUndefined();
  return reply.value as CallReply;
}

async function run(path: string, source: string, batch: ScriptRewardBatch = BATCH): Promise<CallReply> {
  expect((await load(path, source)).error).toBeUndefined();
  return call(path, batch);
}

/** The good function still answers, whatever the case before it did. */
async function expectStillWorks(): Promise<void> {
  expect((await call(GOOD.path)).result).toEqual({ ok: true, values: [3, 8] });
}

/** A load refused with one sentence that names the file. */
async function loadError(path: string, source: string): Promise<string> {
  const reply = await load(path, source);
  expect(reply.error?.name).toBe('UserError');
  expect(reply.error?.field).toBe('reward_funcs');
  expect(reply.error?.file).toBe(path);
  const message = reply.error?.message ?? '';
  expect(message.startsWith(`${path}: `)).toBe(true);
  expect(message).not.toMatch(/\n|\s+at /);
  expect(message).toMatch(/\.$/);
  return message;
}

test('the sandbox is one hidden iframe with scripts allowed and no same origin', async () => {
  expect(await page.evaluate(() => (window as unknown as { rewards: { frames(): unknown } }).rewards.frames())).toEqual([{ sandbox: 'allow-scripts', hidden: true }]);
});

test('good functions: sync and async, with prompts, completions and the columns as arrays, completion_ids included', async () => {
  const echo = `export default function echo(prompts, completions, columns) {
    return completions.map((c, i) => (typeof prompts[i] === 'string' ? 1 : prompts[i][0].content.length) * 1000
      + columns.completion_ids[i].length * 10 + (columns.answer[i] === c ? 1 : 0));
  }`;
  expect(await load('rewards/echo.js', echo)).toEqual({ value: { exportName: 'echo' } });
  expect(await call('rewards/echo.js')).toEqual({ result: { ok: true, values: [1031, 11020] }, warnings: [] });
  const later = 'export default async (prompts, completions) => { await null; return completions.map((c) => (c.startsWith("R") ? 1 : null)); }';
  expect(await load('rewards/async.js', later)).toEqual({ value: { exportName: null } });
  expect(await call('rewards/async.js')).toEqual({ result: { ok: true, values: [1, null] }, warnings: [] });
  const odd = await run('rewards/odd.js', 'export default () => [NaN, undefined, "2", () => 1, {}, [1], 5n, Infinity, -0.5, null, true]', { ...BATCH, completions: [] });
  expect(odd.result).toEqual({ ok: true, values: [Number.NaN, undefined, '2', '[function]', {}, [], 5n, Infinity, -0.5, null, true] });
});

test('a throw gives the function\'s own message', async () => {
  expect((await run('rewards/throw.js', 'export default () => { throw new Error("boom"); }')).result).toEqual({ ok: false, message: 'threw Error: boom' });
  expect((await run('rewards/reject.js', 'export default async () => { throw new RangeError("no\\nway"); }')).result).toEqual({ ok: false, message: 'threw RangeError: no way' });
  await expectStillWorks();
});

test('a sync infinite loop is stopped at the time limit, then every file answers again', async () => {
  expect((await run('rewards/loop.js', 'export default () => { while (true) {} }')).result).toEqual({ ok: false, message: 'did not answer within 0.5 s' });
  await expectStillWorks();
  expect((await call('rewards/async.js')).result).toEqual({ ok: true, values: [1, null] });
  expect((await call('rewards/loop.js', BATCH, 300)).result).toEqual({ ok: false, message: 'did not answer within 0.3 s' });
  await expectStillWorks();
});

test('a promise that never settles is stopped at the time limit', async () => {
  expect((await run('rewards/never.js', 'export default () => new Promise(() => {})')).result).toEqual({ ok: false, message: 'did not answer within 0.5 s' });
  await expectStillWorks();
});

test('the wrong length is returned as it is; checkRewardValues makes it a warning', async () => {
  expect(await run('rewards/short.js', 'export default () => [1, 2, 3]')).toEqual({
    result: { ok: true, values: [1, 2, 3] },
    warnings: ['Reward function "f" returned 3 values for 2 completions, so it gives no reward to this batch.'],
  });
});

/** A reward function that looks for the secret everywhere: its values count the places it was found. */
const SECRETS = `export default async (prompts, completions) => {
  const found = [];
  const attempt = async (f) => { try { found.push(String(await f())); } catch (e) { found.push('refused'); } };
  await attempt(() => localStorage.getItem('reward-secret'));
  await attempt(() => sessionStorage.getItem('reward-secret'));
  await attempt(() => document.cookie);
  await attempt(() => parent.document.cookie);
  await attempt(() => top.localStorage.getItem('reward-secret'));
  await attempt(() => new Promise((resolve, reject) => {
    const open = indexedDB.open('reward-secret');
    open.onerror = () => reject(open.error);
    open.onsuccess = () => {
      const get = open.result.transaction('s').objectStore('s').get('secret');
      get.onsuccess = () => resolve(get.result);
      get.onerror = () => reject(get.error);
    };
  }));
  await attempt(async () => (await fetch('${PROBE}?fetch')).text());
  await attempt(async () => (await import('${PROBE}?import')).default);
  await attempt(async () => (await fetch('${ORIGIN}${PROBE}?fetch')).text());
  await attempt(async () => (await import('${ORIGIN}${PROBE}?import')).default);
  await attempt(async () => (await caches.open('x')).keys());
  await attempt(() => new Promise((resolve) => { const ws = new WebSocket('ws://localhost/${PROBE}'); ws.onopen = () => resolve('open'); ws.onerror = () => resolve('refused'); }));
  const reached = found.filter((text) => text.includes(${JSON.stringify(SECRET)}) || text === 'open').length;
  return completions.map(() => reached);
}`;

test('control: outside the sandbox the same function finds the secrets, and the probe sees its requests', async () => {
  const reached = await page.evaluate(async (source) => {
    const url = URL.createObjectURL(new Blob([source], { type: 'text/javascript' }));
    const { default: reward } = await import(url);
    return (await reward([], ['a'])) as number[];
  }, SECRETS);
  // localStorage, the cookie twice (document, parent), top.localStorage, IndexedDB, fetch twice and the
  // absolute import (sessionStorage is empty; a relative import from a blob module has no base).
  expect(reached).toEqual([8]);
  expect(probeHits).toHaveLength(3);
  probeHits.length = 0;
  // A worker's request on this origin goes through the probe too, so the sandbox's would be seen.
  expect(await page.evaluate(async (url) => {
    const worker = new Worker(URL.createObjectURL(new Blob([`fetch(${JSON.stringify(url)}).then((r) => r.text()).then((t) => postMessage(t), (e) => postMessage(String(e)))`])));
    return new Promise((resolve) => (worker.onmessage = (e) => resolve(e.data)));
  }, `${ORIGIN}${PROBE}?worker`)).toContain(SECRET);
  expect(probeHits).toEqual([`${ORIGIN}${PROBE}?worker`]);
  probeHits.length = 0;
});

test('the secrets of the studio\'s origin are out of reach', async () => {
  expect((await run('rewards/secrets.js', SECRETS)).result).toEqual({ ok: true, values: [0, 0] });
  await expectStillWorks();
});

const FORBIDDEN: [string, string, RegExp][] = [
  ['fetch', `export default async () => { await fetch('${PROBE}?fetch'); return [1, 1]; }`, /^threw TypeError: /],
  ['fetch on the studio\'s origin', `export default async () => { await fetch('${ORIGIN}${PROBE}?fetch'); return [1, 1]; }`, /^threw TypeError: Failed to fetch$/],
  ['indexedDB', 'export default () => { indexedDB.open("reward-secret"); return [1, 1]; }', /^threw SecurityError: .*denied/],
  ['localStorage', 'export default () => [localStorage.getItem("reward-secret"), 1]', /^threw ReferenceError: localStorage is not defined$/],
  ['document', 'export default () => [document.cookie.length, 1]', /^threw ReferenceError: document is not defined$/],
  ['parent.document', 'export default () => [parent.document.cookie.length, 1]', /^threw ReferenceError: parent is not defined$/],
  ['require', 'export default () => [require("fs"), 1]', /^threw ReferenceError: require is not defined$/],
  ['process', 'export default () => [process.env, 1]', /^threw ReferenceError: process is not defined$/],
  ['import()', `export default async () => { await import('${PROBE}?import'); return [1, 1]; }`, /^threw TypeError: /],
  ['import() from the studio\'s origin', `export default async () => { await import('${ORIGIN}${PROBE}?import'); return [1, 1]; }`, /^threw TypeError: /],
  ['eval', 'export default () => [eval("1"), 1]', /^threw EvalError: /],
  ['XMLHttpRequest', `export default () => { const x = new XMLHttpRequest(); x.open('GET', '${ORIGIN}${PROBE}?xhr', false); x.send(); return [x.status, 1]; }`, /^threw NetworkError: /],
];
for (const [what, source, message] of FORBIDDEN) {
  test(`${what} gets nothing`, async () => {
    const { result } = await run(`rewards/${what.replace(/\W/g, '')}.js`, source);
    expect(result.ok).toBe(false);
    expect((result as { message: string }).message).toMatch(message);
    await expectStillWorks();
  });
}

test('a file that posts messages on its own global reaches no one', async () => {
  const source = `export default (prompts, completions) => {
    for (let id = 0; id < 50; id++) postMessage({ type: 'result', id, outcome: '{"ok":true,"values":[99,99]}' });
    return completions.map(() => 1);
  }`;
  expect((await run('rewards/spoof.js', source)).result).toEqual({ ok: true, values: [1, 1] });
  await expectStillWorks();
});

test('files that do not load are refused in one sentence that names them', async () => {
  expect(await loadError('rewards/broken.js', 'export default (prompts, completions) => {\n  const n = 1;\n  return completions.map((c) => c.length +);\n};\n')).toBe(
    "rewards/broken.js: line 3: Unexpected token ')'.",
  );
  expect(await loadError('rewards/named.js', 'export function reward() { return []; }')).toBe(
    'rewards/named.js: has no default export; a reward file exports its function as default, (prompts, completions, columns) => rewards.',
  );
  expect(await loadError('rewards/number.js', 'export default 42;')).toBe(
    'rewards/number.js: its default export is a number, not a function (prompts, completions, columns) => rewards.',
  );
  expect(await loadError('rewards/imports.js', 'import fs from "node:fs";\nexport default () => [];')).toBe(
    'rewards/imports.js: imports "node:fs", but a reward file runs isolated and can import nothing.',
  );
  expect(await loadError('rewards/probe.js', `import secret from '${PROBE}?static';\nexport default () => [secret];`)).toBe(
    `rewards/probe.js: imports "${PROBE}?static", but a reward file runs isolated and can import nothing.`,
  );
  expect(await loadError('rewards/top.js', 'throw new TypeError("bad setup");\nexport default () => [];')).toBe('rewards/top.js: threw TypeError: bad setup while loading.');
  expect(await loadError('rewards/spin.js', 'while (true) {}\nexport default () => [];')).toBe('rewards/spin.js: did not finish loading within 1 s.');
  expect(await loadError('rewards/wait.js', 'await new Promise(() => {});\nexport default () => [];')).toBe('rewards/wait.js: did not finish loading within 1 s.');
  await expectStillWorks();
});

test("the json reward's schema compiles and checks inside a Worker", async () => {
  const schema = { type: 'object', properties: { name: { type: 'string', pattern: '^[A-Z]' } }, required: ['name'] };
  const reply = await page.evaluate(
    ([s, c]) => (window as unknown as { rewards: { json(s: unknown, c: readonly string[]): Promise<Reply<number[]>> } }).rewards.json(s, c),
    [schema, ['{"name": "Ada"}', '{"name": "ada"}', '{}', 'nope']] as const,
  );
  expect(reply).toEqual({ value: [1, 0, 0, 0] });
});

test('a sandbox that is gone: the Worker side gives up after its backstop, with a message', async () => {
  await page.evaluate(() => (window as unknown as { rewards: { close(): void } }).rewards.close());
  expect(await page.evaluate(() => document.querySelectorAll('iframe').length)).toBe(0);
  expect((await call(GOOD.path, BATCH, 300)).result).toEqual({ ok: false, message: 'did not answer within 0.3 s (the reward sandbox did not reply)' });
});

test('after dispose a call says so, and nothing is left waiting', async () => {
  expect(await page.evaluate(() => (window as unknown as { rewards: { dispose(): Promise<unknown> } }).rewards.dispose())).toEqual({});
  expect((await call(GOOD.path)).result).toEqual({ ok: false, message: 'was not run: the reward sandbox was disposed' });
});
