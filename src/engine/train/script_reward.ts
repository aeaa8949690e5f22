/**
 * User reward functions in JavaScript, TRL's shape: a file whose default export is
 * `(prompts, completions, columns) => (number | null)[]`, sync or async. The code is the user's and
 * may be hostile or broken, so it never runs beside the engine: a `RewardScriptHost` runs it in a realm
 * that reaches neither the page, its storage nor the network (the studio: a sandboxed iframe's worker,
 * `ui/lib/reward_sandbox.ts` and `worker/reward_port_host.ts`; Node: a separate process,
 * `cli/reward_process.ts`), hands it only the batch, and gives back what it returned or why it gave
 * nothing. Both hosts speak the protocol below and run the same `SANDBOX_KIT_SOURCE` inside the
 * sandbox, so a script behaves and fails alike in both.
 *
 * Platform-neutral: no Node or DOM imports here.
 */
import type { ChatMessage } from '../data/tokenizer.ts';
import { UserError } from '../errors.ts';

/** A user's reward file as the recipe names it: its path (as written in reward_funcs) and its text. */
export interface RewardScript {
  path: string;
  source: string;
}

/** What one call hands the function, and nothing else. */
export interface ScriptRewardBatch {
  prompts: (string | ChatMessage[])[];
  completions: string[];
  /** The batch's other dataset columns as arrays (one entry per completion), plus `completion_ids` (number[][]). */
  columns: Record<string, unknown[]>;
}

/** A call never rejects: what the function returned (checked later by rewards.ts checkRewardValues), or why it gave nothing. */
export type ScriptCallResult = { ok: true; values: unknown } | { ok: false; message: string };

export interface RewardScriptHost {
  /**
   * Loads a script in the isolated realm. Resolves with its default export's function name (null for an anonymous one);
   * rejects with a UserError (src/engine/errors.ts) whose one sentence names the path, when the file does not parse,
   * has no default export, or its default export is not a function (e.g. `rewards/letters.js: line 3: Unexpected token …`).
   */
  load(script: RewardScript): Promise<{ exportName: string | null }>;
  /**
   * Calls a loaded script's default export as `fn(prompts, completions, columns)`, awaiting a promise. Failures become
   * { ok: false, message } with the function's own message: `threw Error: boom`, `did not answer within 5 s`, etc.
   * After a timeout the isolated process/worker is killed and re-created with every loaded script loaded again, so the
   * next call works. Values cross by structured clone / JSON only.
   */
  call(path: string, batch: ScriptRewardBatch, timeoutMs: number): Promise<ScriptCallResult>;
  dispose(): Promise<void>;
}

export const DEFAULT_REWARD_TIMEOUT_MS = 5000;

/**
 * How long loading a script (evaluating its top-level code) may take. Loading is not a call and has
 * no per-call limit of its own; a file whose top level loops for ever is stopped after this long.
 */
export const REWARD_LOAD_TIMEOUT_MS = DEFAULT_REWARD_TIMEOUT_MS;

// ---------------------------------------------------------------------------------------------------
// The protocol between a host and its sandbox (Node: parent and child process over IPC; studio: the
// training Worker and the sandbox iframe over a MessagePort). Every request carries an id; the
// sandbox answers each once. `timeoutMs` is for a sandbox that keeps its own clock (the iframe); the
// Node child has none, its parent kills it instead.

/** A host's request to the sandbox. */
export type RewardHostMessage =
  | { type: 'load'; id: number; path: string; source: string; timeoutMs: number }
  | { type: 'call'; id: number; path: string; batch: ScriptRewardBatch; timeoutMs: number }
  | { type: 'dispose' };

/**
 * The sandbox's answer. `outcome` is the JSON text `SANDBOX_KIT_SOURCE` writes; `parseOutcome` reads
 * it. `timeout` comes from a sandbox that keeps its own clock: the request ran past its `timeoutMs`
 * and the realm running it was ended.
 */
export type RewardSandboxMessage =
  | { type: 'ready' }
  | { type: 'loaded'; id: number; exportName: string | null }
  | { type: 'load-failed'; id: number; failure: LoadFailure }
  | { type: 'result'; id: number; outcome: string }
  | { type: 'timeout'; id: number };

/** Why a script did not load, as data; `loadFailureError` makes the sentence, the same in both hosts. */
export type LoadFailure =
  | { reason: 'syntax'; message: string; line?: number }
  | { reason: 'import'; specifier?: string }
  | { reason: 'no-default' }
  | { reason: 'not-function'; got: string }
  | { reason: 'threw'; message: string }
  | { reason: 'timeout'; ms: number }
  | { reason: 'stopped'; message: string };

/** A duration as a message says it: `5 s`, `0.3 s`. */
export function formatSeconds(ms: number): string {
  return `${Number((ms / 1000).toFixed(3))} s`;
}

/** The call failure for a sandbox that did not answer in time. */
export function timeoutMessage(ms: number): string {
  return `did not answer within ${formatSeconds(ms)}`;
}

/** The one-sentence UserError for a script that did not load, naming its path (and the line of a syntax error). */
export function loadFailureError(path: string, failure: LoadFailure): UserError {
  const what = ((): string => {
    switch (failure.reason) {
      case 'syntax':
        return `${failure.line === undefined ? '' : `line ${failure.line}: `}${failure.message}`;
      case 'import':
        return `imports ${failure.specifier === undefined ? 'a module' : JSON.stringify(failure.specifier)}, but a reward file runs isolated and can import nothing`;
      case 'no-default':
        return 'has no default export; a reward file exports its function as default, (prompts, completions, columns) => rewards';
      case 'not-function':
        return `its default export is ${failure.got}, not a function (prompts, completions, columns) => rewards`;
      case 'threw':
        return `threw ${failure.message} while loading`;
      case 'timeout':
        return `did not finish loading within ${formatSeconds(failure.ms)}`;
      case 'stopped':
        return `the reward sandbox stopped while loading it (${failure.message})`;
    }
  })();
  return new UserError(sentence(`${path}: ${what}`), { file: path, field: 'reward_funcs' });
}

/** Ends a message with a full stop unless it already ends with punctuation. */
function sentence(text: string): string {
  return /[.!?…]$/.test(text) ? text : `${text}.`;
}

/**
 * A call's outcome from the JSON text the sandbox wrote. The values come back as the function
 * returned them, as far as `checkRewardValues` can tell: numbers (NaN and ±Infinity too), null,
 * strings, booleans, undefined, bigints, and stand-ins for what cannot cross (a function, a symbol,
 * an object, a nested array). Text that is not an outcome is a failure, never a throw.
 */
export function parseOutcome(text: unknown): ScriptCallResult {
  let parsed: unknown;
  try {
    parsed = typeof text === 'string' ? JSON.parse(text) : undefined;
  } catch {
    parsed = undefined;
  }
  if (typeof parsed === 'object' && parsed !== null) {
    const o = parsed as { ok?: unknown; values?: unknown; message?: unknown };
    if (o.ok === true) return { ok: true, values: decodeWire(o.values) };
    if (o.ok === false && typeof o.message === 'string') return { ok: false, message: o.message };
  }
  return { ok: false, message: 'gave an answer the sandbox could not read' };
}

/** The inverse of the kit's `encode`: tagged objects back to the values they stand for. */
function decodeWire(wire: unknown): unknown {
  if (typeof wire !== 'object' || wire === null) return wire;
  const tag = wire as { $?: unknown; v?: unknown; n?: unknown };
  switch (tag.$) {
    case 'list':
      return Array.isArray(tag.v) ? tag.v.map(decodeWire) : [];
    case 'long':
      // An array too long to copy: only its length matters (it is the wrong one).
      return new Array(typeof tag.n === 'number' ? tag.n : 0);
    case 'number':
      return Number(tag.v);
    case 'undefined':
      return undefined;
    case 'bigint':
      try {
        return BigInt(String(tag.v));
      } catch {
        return Number.NaN;
      }
    case 'symbol':
      return Symbol('returned');
    case 'function':
      return () => undefined;
    case 'array':
      return [];
    default:
      return {};
  }
}

/**
 * JavaScript evaluated inside the sandbox, once per realm and before any user code, to an object
 * `{ start, poll, nameOf, kindOf, describe }`. It captures the builtins it uses first, so a script
 * that replaces `JSON` or `Promise.prototype.then` in its realm breaks only its own answers. It
 * writes every answer as JSON text by hand, so what leaves the sandbox is a string and nothing else:
 * in Node the realm is a `vm` context inside the child process, and a host object that reached it
 * (or a host function that user code could call back) would be a way out.
 *
 * `start(fn, input, done?)` calls `fn(prompts, completions, columns)` with `input` (the batch, or its
 * JSON text, parsed in the realm), awaits a thenable, and leaves the outcome for `poll()` and passes
 * it to `done` where given: `{"ok":true,"values":…}` or `{"ok":false,"message":"threw Error: boom"}`.
 * A later `start` supersedes an earlier one that had not finished.
 */
export const SANDBOX_KIT_SOURCE = String.raw`(() => {
  'use strict';
  const apply = Reflect.apply;
  const isArray = Array.isArray;
  const isFinite = Number.isFinite;
  const toText = String;
  const parse = JSON.parse;
  const quote = JSON.stringify;
  const P = Promise;
  const resolve = Promise.resolve;
  const then = Promise.prototype.then;
  const slice = String.prototype.slice;
  const replace = String.prototype.replace;
  const join = Array.prototype.join;
  const push = Array.prototype.push;
  const SPACE = /\s+/g;
  const MAX_TEXT = 200;
  const MAX_LENGTH = 100000;

  /** Text on one line, cut to MAX_TEXT characters: a message goes into a one-sentence warning. */
  const clip = (s) => {
    s = apply(replace, toText(s), [SPACE, ' ']);
    return s.length > MAX_TEXT ? apply(slice, s, [0, MAX_TEXT]) + '…' : s;
  };
  /** A thrown value as a warning names it: "Error: boom", "\"oops\"", "42". */
  const describe = (e) => {
    try {
      if (e !== null && (typeof e === 'object' || typeof e === 'function')) {
        const name = e.name;
        const message = e.message;
        if (typeof message === 'string') {
          const n = typeof name === 'string' && name !== '' ? name : 'Error';
          return clip(message === '' ? n : n + ': ' + message);
        }
      }
      if (typeof e === 'string') return clip(quote(e));
      return clip(toText(e));
    } catch (_) {
      return 'a value that cannot be shown';
    }
  };
  /** A value's kind as a sentence names it: "a number", "an object", "undefined". */
  const kindOf = (v) => {
    if (v === null || v === undefined) return toText(v);
    if (isArray(v)) return 'an array';
    const t = typeof v;
    return (t === 'object' ? 'an ' : 'a ') + t;
  };
  /** The default export's own name; null for an anonymous one (V8 names those "default"). */
  const nameOf = (fn) => {
    try {
      const n = fn.name;
      return typeof n === 'string' && n !== '' && n !== 'default' ? clip(n) : null;
    } catch (_) {
      return null;
    }
  };
  /** One returned value as JSON text: a finite number, null, a string, a boolean, or a tag for the rest. */
  const cell = (v) => {
    switch (typeof v) {
      case 'number': return isFinite(v) ? toText(v) : '{"$":"number","v":"' + toText(v) + '"}';
      case 'string': return quote(v.length > MAX_TEXT ? apply(slice, v, [0, MAX_TEXT]) : v);
      case 'boolean': return v ? 'true' : 'false';
      case 'undefined': return '{"$":"undefined"}';
      case 'bigint': return '{"$":"bigint","v":"' + toText(v) + '"}';
      case 'symbol': return '{"$":"symbol"}';
      case 'function': return '{"$":"function"}';
      default: return v === null ? 'null' : isArray(v) ? '{"$":"array"}' : '{"$":"object"}';
    }
  };
  /** What the function returned as JSON text; an array keeps its length and each entry's kind. */
  const encode = (v) => {
    if (!isArray(v)) return cell(v);
    const n = v.length;
    if (n > MAX_LENGTH) return '{"$":"long","n":' + toText(n) + '}';
    const parts = [];
    for (let i = 0; i < n; i++) apply(push, parts, [cell(v[i])]);
    return '{"$":"list","v":[' + apply(join, parts, [',']) + ']}';
  };

  let latest = 0;
  let outcome;
  const start = (fn, input, done) => {
    const token = ++latest;
    outcome = undefined;
    const finish = (text) => {
      if (token !== latest) return;
      latest++;
      outcome = text;
      if (done) done(text);
    };
    const failed = (prefix, e) => finish('{"ok":false,"message":' + quote(prefix + describe(e)) + '}');
    const answered = (v) => {
      let text;
      try {
        text = '{"ok":true,"values":' + encode(v) + '}';
      } catch (e) {
        return failed('returned a value that could not be read: ', e);
      }
      finish(text);
    };
    try {
      const batch = typeof input === 'string' ? parse(input) : input;
      const result = fn(batch.prompts, batch.completions, batch.columns);
      let thenable = false;
      if (result !== null && (typeof result === 'object' || typeof result === 'function')) thenable = typeof result.then === 'function';
      if (!thenable) return answered(result);
      apply(then, apply(resolve, P, [result]), [answered, (e) => failed('threw ', e)]);
    } catch (e) {
      failed('threw ', e);
    }
  };
  const poll = () => outcome;
  return { start, poll, nameOf, kindOf, describe };
})()`;
