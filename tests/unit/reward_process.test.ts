// User reward functions in Node: a separate process, handed only the batch, under a time limit.
// Every hostile case gives nothing (a failure message, or values that show nothing was reached) and
// the next call with a good function still works. The same cases run in headless Chromium in
// tests/e2e/reward_sandbox.spec.ts.
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nodeRewardHost } from '../../src/cli/reward_process.ts';
import { UserError } from '../../src/engine/errors.ts';
import { checkRewardValues } from '../../src/engine/train/rewards.ts';
import { parseOutcome, type RewardScriptHost, type ScriptRewardBatch } from '../../src/engine/train/script_reward.ts';

/** Short limits keep the suite fast; nothing here asserts a duration. */
const TIMEOUT_MS = 500;

const BATCH: ScriptRewardBatch = {
  prompts: ['Name a dog.', [{ role: 'user', content: 'Name a cat.' }]],
  completions: ['Rex', 'Whiskers'],
  columns: { answer: ['Rex', 'Tom'], completion_ids: [[82, 101, 120], [87, 104]] },
};

const GOOD = { path: 'rewards/letters.js', source: 'export default function letters(prompts, completions) { return completions.map((c) => c.length); }' };

let host: RewardScriptHost;

beforeAll(async () => {
  host = nodeRewardHost({ loadTimeoutMs: 1000 });
  await host.load(GOOD);
});

afterAll(async () => {
  await host.dispose();
});

async function run(path: string, source: string, batch: ScriptRewardBatch = BATCH) {
  await host.load({ path, source });
  return host.call(path, batch, TIMEOUT_MS);
}

/** The good function still answers, whatever the case before it did. */
async function expectStillWorks(): Promise<void> {
  expect(await host.call(GOOD.path, BATCH, TIMEOUT_MS)).toEqual({ ok: true, values: [3, 8] });
}

async function loadError(path: string, source: string): Promise<UserError> {
  const error = await host.load({ path, source }).then(
    () => null,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(UserError);
  const message = (error as UserError).message;
  expect(message.startsWith(`${path}: `)).toBe(true);
  expect(message).not.toMatch(/\n|\s+at /);
  expect(message).toMatch(/\.$/);
  return error as UserError;
}

describe('good functions', () => {
  it('a sync function gets prompts, completions and the columns as arrays, completion_ids included', async () => {
    const source = `export default function echo(prompts, completions, columns) {
      return completions.map((c, i) => (typeof prompts[i] === 'string' ? 1 : prompts[i][0].content.length) * 1000
        + columns.completion_ids[i].length * 10 + (columns.answer[i] === c ? 1 : 0));
    }`;
    expect(await host.load({ path: 'rewards/echo.js', source })).toEqual({ exportName: 'echo' });
    expect(await host.call('rewards/echo.js', BATCH, TIMEOUT_MS)).toEqual({ ok: true, values: [1031, 11020] });
  });

  it('an async function is awaited; an anonymous default export has no name', async () => {
    const source = 'export default async (prompts, completions) => { await null; return completions.map((c) => (c.startsWith("R") ? 1 : null)); }';
    expect(await host.load({ path: 'rewards/async.js', source })).toEqual({ exportName: null });
    expect(await host.call('rewards/async.js', BATCH, TIMEOUT_MS)).toEqual({ ok: true, values: [1, null] });
  });

  it('top-level await and module state work; each file has its own realm', async () => {
    await host.load({ path: 'rewards/a.js', source: 'globalThis.shared = 1; let n = await Promise.resolve(10); export default (p, c) => c.map(() => ++n);' });
    await host.load({ path: 'rewards/b.js', source: 'export default (p, c) => c.map(() => typeof globalThis.shared === "undefined" ? 0 : 1);' });
    expect(await host.call('rewards/a.js', BATCH, TIMEOUT_MS)).toEqual({ ok: true, values: [11, 12] });
    expect(await host.call('rewards/b.js', BATCH, TIMEOUT_MS)).toEqual({ ok: true, values: [0, 0] });
  });

  it('what cannot be a reward comes back as what it was, for checkRewardValues to name', async () => {
    const r = await run('rewards/odd.js', 'export default () => [NaN, undefined, "2", () => 1, {}, [1], 5n, Infinity, -0.5, null, true]', { ...BATCH, completions: [] });
    expect(r.ok).toBe(true);
    const values = (r as { values: unknown[] }).values;
    expect(values.slice(0, 4)).toEqual([Number.NaN, undefined, '2', expect.any(Function)]);
    expect(values.slice(4)).toEqual([{}, [], 5n, Infinity, -0.5, null, true]);
    expect(checkRewardValues('odd', values, 11).warnings).toEqual([
      'Reward function "odd" returned NaN for completions[0] (and 8 other completions), not a finite number or null, so they get no reward from it.',
    ]);
    expect(await run('rewards/obj.js', 'export default () => ({ length: 2 })')).toEqual({ ok: true, values: {} });
    expect(await run('rewards/undef.js', 'export default () => {}')).toEqual({ ok: true, values: undefined });
  });
});

describe('failures become a message, and the next call works', () => {
  it('a throw gives the function\'s own message', async () => {
    expect(await run('rewards/throw.js', 'export default () => { throw new Error("boom"); }')).toEqual({ ok: false, message: 'threw Error: boom' });
    expect(await run('rewards/reject.js', 'export default async () => { throw new RangeError("no\\nway"); }')).toEqual({ ok: false, message: 'threw RangeError: no way' });
    expect(await run('rewards/string.js', 'export default () => { throw "oops"; }')).toEqual({ ok: false, message: 'threw "oops"' });
    expect(await run('rewards/deep.js', 'export default function f() { return f(); }')).toEqual({ ok: false, message: 'threw RangeError: Maximum call stack size exceeded' });
    await expectStillWorks();
  });

  it('a sync infinite loop is stopped at the time limit, and the sandbox comes back with every file loaded', async () => {
    expect(await run('rewards/loop.js', 'export default () => { while (true) {} }')).toEqual({ ok: false, message: 'did not answer within 0.5 s' });
    await expectStillWorks();
    expect(await host.call('rewards/loop.js', BATCH, 300)).toEqual({ ok: false, message: 'did not answer within 0.3 s' });
    await expectStillWorks();
  });

  it('a promise that never settles is stopped at the time limit', async () => {
    expect(await run('rewards/never.js', 'export default () => new Promise(() => {})')).toEqual({ ok: false, message: 'did not answer within 0.5 s' });
    expect(await run('rewards/later.js', 'export default () => Atomics.waitAsync(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 60000).value')).toEqual({
      ok: false,
      message: 'did not answer within 0.5 s',
    });
    await expectStillWorks();
  });

  it('the wrong length is returned as it is; checkRewardValues makes it null and a warning', async () => {
    const r = await run('rewards/short.js', 'export default () => [1, 2, 3]');
    expect(r).toEqual({ ok: true, values: [1, 2, 3] });
    expect(checkRewardValues('short', (r as { values: unknown }).values, 2)).toEqual({
      values: [null, null],
      warnings: ['Reward function "short" returned 3 values for 2 completions, so it gives no reward to this batch.'],
    });
    const long = await run('rewards/long.js', 'export default () => new Array(1e9)');
    expect(checkRewardValues('long', (long as { values: unknown }).values, 2).warnings).toEqual([
      'Reward function "long" returned 1000000000 values for 2 completions, so it gives no reward to this batch.',
    ]);
  });

  it('a value that cannot be read, or a tampered realm, is a message', async () => {
    const getter = 'export default () => { const a = [1, 2]; Object.defineProperty(a, 1, { get() { throw new Error("no") } }); return a; }';
    expect(await run('rewards/getter.js', getter)).toEqual({ ok: false, message: 'returned a value that could not be read: Error: no' });
    const tamper = 'export default async () => { JSON.stringify = () => 1; JSON.parse = () => 1; Promise.prototype.then = function () {}; Object.prototype.toJSON = () => 1; Array.prototype.toJSON = () => 1; return [7, 8]; }';
    expect(await run('rewards/tamper.js', tamper)).toEqual({ ok: true, values: [7, 8] });
    expect(await host.call('rewards/tamper.js', BATCH, TIMEOUT_MS)).toEqual({ ok: true, values: [7, 8] });
    await expectStillWorks();
  });

  it('a process that dies during a call is a message, and the next call gets a new one', async () => {
    await host.load({ path: 'rewards/slow.js', source: 'export default () => { while (true) {} }' });
    const pending = host.call('rewards/slow.js', BATCH, 60_000);
    // Stands for a crash (out of memory, say): the process is killed from outside while the call runs.
    for (let i = 0; i < 100 && childProcesses().length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    await new Promise((r) => setTimeout(r, 100));
    for (const pid of childProcesses()) process.kill(pid, 'SIGKILL');
    expect(await pending).toEqual({ ok: false, message: 'crashed the reward process (signal SIGKILL)' });
    await expectStillWorks();
  });

  it('a path never loaded is a message', async () => {
    expect(await host.call('rewards/nope.js', BATCH, TIMEOUT_MS)).toEqual({ ok: false, message: 'is not loaded' });
  });
});

describe('the sandbox reaches nothing', () => {
  const forbidden: [string, string, RegExp][] = [
    ['fetch', 'export default async () => { await fetch("http://localhost/"); return [1, 1]; }', /^threw ReferenceError: fetch is not defined$/],
    ['indexedDB', 'export default () => { indexedDB.open("studio"); return [1, 1]; }', /^threw ReferenceError: indexedDB is not defined$/],
    ['localStorage', 'export default () => [localStorage.getItem("secret"), 1]', /^threw ReferenceError: localStorage is not defined$/],
    ['document', 'export default () => [document.cookie.length, 1]', /^threw ReferenceError: document is not defined$/],
    ['require', 'export default () => [require("node:fs").readFileSync("/etc/hostname", "utf8").length, 1]', /^threw ReferenceError: require is not defined$/],
    ['process', 'export default () => [process.pid, 1]', /^threw ReferenceError: process is not defined$/],
    ['import()', 'export default async () => { const fs = await import("node:fs"); return [fs ? 1 : 0, 1]; }', /^threw TypeError: import\(\) is not available to a reward function$/],
    ['eval', 'export default () => [eval("1"), 1]', /^threw EvalError: /],
    ['new Function', 'export default () => [new Function("return 1")(), 1]', /^threw EvalError: /],
    ['timers', 'export default () => [setTimeout(() => 0, 1), 1]', /^threw ReferenceError: setTimeout is not defined$/],
  ];
  for (const [what, source, message] of forbidden) {
    it(`${what} gets nothing`, async () => {
      const r = await run(`rewards/${what.replace(/\W/g, '')}.js`, source);
      expect(r.ok).toBe(false);
      expect((r as { message: string }).message).toMatch(message);
      await expectStillWorks();
    });
  }

  it('the ways out of a vm context through the host realm find no process', async () => {
    // Each returns 1 where it reached the child's `process`, 0 where it did not (or was refused).
    const attempts = [
      'globalThis.constructor.constructor("return typeof process")()',
      'Object.getPrototypeOf(globalThis).constructor.constructor("return typeof process")()',
      'this',
    ];
    const source = `export default async (prompts) => {
      const probe = (f) => { try { const v = f(); return v === 'object' || (v && typeof v === 'object' && 'pid' in v) ? 1 : 0; } catch { return 0; } };
      const out = [${attempts.map((a) => `probe(() => ${a})`).join(', ')}];
      try { await import('node:fs'); out.push(1); } catch (e) { out.push(probe(() => e.constructor.constructor('return typeof process')())); }
      const p = import('x'); p.catch(() => {}); out.push(probe(() => p.constructor.constructor('return typeof process')()));
      out.push(probe(() => prompts.constructor.constructor('return typeof process')()));
      Error.prepareStackTrace = (e, frames) => frames.map((f) => { try { return f.getFunction() ? 1 : 0; } catch { return 0; } }).reduce((a, b) => a + b, 0);
      out.push(new Error('x').stack);
      return out;
    }`;
    const r = await run('rewards/escape.js', source);
    expect(r).toEqual({ ok: true, values: [0, 0, 0, 0, 0, 0, 0] });
    await expectStillWorks();
  });

  it('the process itself is held by the permission model and has an empty environment', async () => {
    // Not reachable from a script; checked on the child's own flags: a script that got out would find these walls.
    const flags = spawnSync(process.execPath, ['--experimental-permission', '-e', 'try { require("node:fs").readFileSync("/etc/hostname") } catch (e) { console.log(e.code) }'], { encoding: 'utf8' });
    expect(flags.stdout.trim()).toBe('ERR_ACCESS_DENIED');
    const children = childProcesses();
    expect(children.length).toBeGreaterThan(0);
    for (const pid of children) {
      const args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      expect(args).toContain('--experimental-vm-modules');
      expect(args.some((a) => a === '--permission' || a === '--experimental-permission')).toBe(true);
      expect(readFileSync(`/proc/${pid}/environ`, 'utf8')).toMatch(/^(NODE_CHANNEL_[A-Z_]+=[^\0]*\0)*$/);
    }
  });
});

describe('files that do not load', () => {
  it('a syntax error names the file and the line', async () => {
    const e = await loadError('rewards/broken.js', 'export default (prompts, completions) => {\n  const n = 1;\n  return completions.map((c) => c.length +);\n};\n');
    expect(e.message).toBe("rewards/broken.js: line 3: Unexpected token ')'.");
    expect(e.field).toBe('reward_funcs');
    expect(e.file).toBe('rewards/broken.js');
  });

  it('no default export, or a default export that is not a function', async () => {
    expect((await loadError('rewards/named.js', 'export function reward() { return []; }')).message).toBe(
      'rewards/named.js: has no default export; a reward file exports its function as default, (prompts, completions, columns) => rewards.',
    );
    expect((await loadError('rewards/number.js', 'export default 42;')).message).toBe(
      'rewards/number.js: its default export is a number, not a function (prompts, completions, columns) => rewards.',
    );
    expect((await loadError('rewards/cjs.js', 'module.exports = () => [];')).message).toBe('rewards/cjs.js: threw ReferenceError: module is not defined while loading.');
  });

  it('a static import is refused before anything runs', async () => {
    expect((await loadError('rewards/imports.js', 'import fs from "node:fs";\nexport default () => [];')).message).toBe(
      'rewards/imports.js: imports "node:fs", but a reward file runs isolated and can import nothing.',
    );
  });

  it('a top level that throws, or never finishes, is a sentence and the sandbox recovers', async () => {
    expect((await loadError('rewards/top.js', 'throw new TypeError("bad setup");\nexport default () => [];')).message).toBe(
      'rewards/top.js: threw TypeError: bad setup while loading.',
    );
    expect((await loadError('rewards/spin.js', 'while (true) {}\nexport default () => [];')).message).toBe('rewards/spin.js: did not finish loading within 1 s.');
    expect((await loadError('rewards/wait.js', 'await new Promise(() => {});\nexport default () => [];')).message).toBe('rewards/wait.js: did not finish loading within 1 s.');
    await expectStillWorks();
  });
});

describe('the process', () => {
  it('is gone after dispose, and a call after it says so', async () => {
    const own = nodeRewardHost();
    const before = new Set(childProcesses());
    await own.load(GOOD);
    const started = childProcesses().filter((pid) => !before.has(pid));
    expect(started).toHaveLength(1);
    await own.dispose();
    expect(childProcesses()).not.toContain(started[0]);
    expect(await own.call(GOOD.path, BATCH, TIMEOUT_MS)).toEqual({ ok: false, message: 'was not run: the reward sandbox was disposed' });
  });

  it('dispose during a call ends it with a message', async () => {
    const own = nodeRewardHost();
    await own.load({ path: 'rewards/loop.js', source: 'export default () => { while (true) {} }' });
    const pending = own.call('rewards/loop.js', BATCH, 60_000);
    await new Promise((r) => setTimeout(r, 100));
    await own.dispose();
    expect(await pending).toEqual({ ok: false, message: 'was stopped: the reward sandbox was disposed' });
  });

  it('does not keep Node running when idle, even without dispose', () => {
    const script = `
      import { nodeRewardHost } from ${JSON.stringify(new URL('../../src/cli/reward_process.ts', import.meta.url).pathname)};
      const host = nodeRewardHost();
      await host.load({ path: 'r.js', source: 'export default (p, c) => c.map(() => 1)' });
      const r = await host.call('r.js', { prompts: ['a'], completions: ['b'], columns: {} }, 5000);
      console.log(JSON.stringify(r));`;
    const tsx = new URL('../../node_modules/.bin/tsx', import.meta.url).pathname;
    const out = spawnSync(tsx, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 60_000 });
    expect(out.stderr).toBe('');
    expect(out.status).toBe(0);
    expect(JSON.parse(out.stdout)).toEqual({ ok: true, values: [1] });
  });

  it('parseOutcome never throws on text that is not an outcome', () => {
    expect(parseOutcome('not json')).toEqual({ ok: false, message: 'gave an answer the sandbox could not read' });
    expect(parseOutcome(42)).toEqual({ ok: false, message: 'gave an answer the sandbox could not read' });
    expect(parseOutcome('{"ok":true,"values":{"$":"list","v":[1,{"$":"number","v":"-Infinity"}]}}')).toEqual({ ok: true, values: [1, -Infinity] });
  });
});

/** This process's child processes that run the reward sandbox (Linux: read from /proc). */
function childProcesses(): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === process.pid && readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes('--experimental-vm-modules')) out.push(Number(entry));
    } catch {
      // Gone meanwhile.
    }
  }
  return out;
}
