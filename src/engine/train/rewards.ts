/**
 * GRPO's built-in reward functions, with TRL's reward-function shape: given the batch's prompts,
 * completions and each completion's dataset columns, one reward per completion, null where the
 * function does not apply (TRL's `None`, which the weighted `nansum` skips). Built-ins are named in
 * `reward_funcs` as objects, `{"name": "format", "pattern": "…"}`; user functions in JavaScript have
 * the same shape and are run elsewhere, isolated. Whatever a function returns passes through
 * `checkRewardValues`, so a bad value is null and a warning, never a crashed run.
 */
import { z } from 'zod';
import Ajv from 'ajv';
import Ajv2019 from 'ajv/dist/2019.js';
import Ajv2020 from 'ajv/dist/2020.js';
import { UserError } from '../errors.ts';
import { compileModulePattern, ModulePatternError, type ModulePattern } from '../model/module_pattern.ts';
import type { ChatMessage } from '../data/tokenizer.ts';

/** One reward per completion; `columns[i]` holds the other dataset fields of completion i's prompt row. */
export type RewardFunction = (
  prompts: (string | ChatMessage[])[],
  completions: string[],
  columns: Record<string, unknown>[],
) => (number | null)[];

/**
 * TRL's `think_format_reward` (trl/rewards/format_rewards.py) as a JavaScript pattern: the completion
 * starts with `<think>`, holds no second `<think>`, and closes it with `</think>`; anything may follow.
 * TRL matches `^<think>(?!.*<think>)(.*?)</think>.*$` with re.DOTALL, whose `.` is `[\s\S]` here.
 */
export const THINK_FORMAT_PATTERN = String.raw`^<think>(?![\s\S]*<think>)[\s\S]*?</think>[\s\S]*$`;

/**
 * The usual GRPO format, reasoning then answer (DeepSeek-R1's, and TRL's documentation example
 * `^<think>.*?</think><answer>.*?</answer>$`): TRL's think rule above, then an `<answer>` block
 * that ends the completion; whitespace is allowed between the blocks and at the end.
 */
export const THINK_ANSWER_FORMAT_PATTERN = String.raw`^<think>(?![\s\S]*<think>)[\s\S]*?</think>\s*<answer>[\s\S]*?</answer>\s*$`;

/** The patterns this module writes itself; any other comes from a recipe and runs on the linear-time matcher. */
const TRUSTED_PATTERNS: ReadonlySet<string> = new Set([THINK_FORMAT_PATTERN, THINK_ANSWER_FORMAT_PATTERN]);

const ACCURACY_OPTIONS = z.strictObject({
  /** The column holding the expected answer; default: `answer`, else `solution`. */
  column: z.string().min(1).optional(),
});

const FORMAT_OPTIONS = z.strictObject({
  /**
   * A regular expression the completion must match, anywhere unless anchored with `^…$` (as
   * RegExp `test`; Python's `re.match` anchors at the start only). It comes from a file, so it runs
   * on the linear-time matcher of `model/module_pattern.ts` (literals, classes, groups, alternation,
   * quantifiers; no look-around or back-references), never on a backtracking engine.
   * Default: `THINK_ANSWER_FORMAT_PATTERN`.
   */
  pattern: z.string().optional(),
  /**
   * RegExp flags, e.g. "s" for `.` to match newlines (Python's re.DOTALL) or "i"; default none. "g"
   * and "y" are ignored: they would make each test start where the last completion's match ended.
   */
  flags: z.string().optional(),
});

const JSON_OPTIONS = z.strictObject({
  /**
   * A JSON Schema (2020-12 unless its `$schema` names 2019-09 or draft-07) the parsed completion must
   * also match; a boolean schema too. Its `format`s are annotations only, and its `pattern`s run on
   * the linear-time matcher, as the format reward's do: the schema comes from a recipe.
   */
  schema: z.union([z.record(z.string(), z.unknown()), z.boolean()]).optional(),
});

const LENGTH_OPTIONS = z.strictObject({
  /** The completion length, in characters (Unicode code points), that earns the top reward, 0. */
  target: z.number().positive(),
});

type Options<S extends z.ZodType> = z.infer<S>;

/** A built-in reward: what it does, in a sentence for the recipe form, its options, and how to make it. */
export interface BuiltinReward<S extends z.ZodType> {
  description: string;
  options: S;
  create(options: Options<S>): RewardFunction;
}

/**
 * 1 where the completion's final answer equals the row's expected answer, 0 where it differs, null
 * where the row has no expected answer (no `answer` or `solution` column, or not a string or number
 * there; TRL's accuracy_reward gives None for a gold answer it cannot parse). TRL's accuracy_reward
 * parses both sides as LaTeX with math_verify and compares them symbolically; this one compares
 * normalised answers, see `finalAnswer` and `sameAnswer`.
 */
const accuracy: BuiltinReward<typeof ACCURACY_OPTIONS> = {
  description:
    'Accuracy: 1 when the final answer (\\boxed{…}, <answer>…</answer>, "#### …", "answer: …", or the last number) equals the row\'s "answer" or "solution" column, else 0.',
  options: ACCURACY_OPTIONS,
  create: (options) => (_prompts, completions, columns) =>
    completions.map((completion, i) => {
      const gold = expectedAnswer(columns[i] ?? {}, options.column);
      return gold === null ? null : Number(sameAnswer(finalAnswer(completion), gold));
    }),
};

/** 1 where the completion matches the pattern (by default reasoning in `<think>`, then `<answer>`), else 0. */
const format: BuiltinReward<typeof FORMAT_OPTIONS> = {
  description: 'Format: 1 when the completion matches a regular expression (by default <think>…</think> then <answer>…</answer>), else 0.',
  options: FORMAT_OPTIONS,
  create: (options) => {
    const source = options.pattern ?? THINK_ANSWER_FORMAT_PATTERN;
    // The built-in patterns (with TRL's look-ahead) are ours and run on RegExp. A pattern from a
    // recipe never reaches a backtracking engine: it runs on the linear-time matcher, searched
    // anywhere in the completion unless anchored, as RegExp.test would.
    if (TRUSTED_PATTERNS.has(source)) {
      const trusted = new RegExp(source);
      return (_prompts, completions) => completions.map((c) => Number(trusted.test(c)));
    }
    const flags = options.flags ?? '';
    const unknown = flags.replace(/[gyis]/g, '');
    if (unknown) throw new UserError(`reward_funcs: the "format" reward takes the flags "i" and "s" only (got "${unknown}").`, { field: 'reward_funcs' });
    let pattern: ModulePattern;
    try {
      // The pattern alone first, so a refusal's character positions are the recipe's.
      compileModulePattern(source, { dotAll: flags.includes('s'), ignoreCase: flags.includes('i') });
      pattern = compileModulePattern(`[\\s\\S]*?(?:${source})[\\s\\S]*`, { dotAll: flags.includes('s'), ignoreCase: flags.includes('i') });
    } catch (e) {
      if (!(e instanceof ModulePatternError)) throw e;
      throw new UserError(`reward_funcs: the "format" reward's pattern is not a valid JavaScript regular expression (${e.reason}).`, { field: 'reward_funcs' });
    }
    return (_prompts, completions) => completions.map((c) => Number(pattern.fullMatch(c)));
  },
};

/**
 * 1 where the completion, trimmed, is JSON, or else where its first fenced block (```json … ``` or
 * ``` … ```) is; 0 otherwise. Any JSON value counts, a bare number or string too. With a `schema`,
 * the JSON must also match it (either reading of the completion may); a schema that is not one is
 * refused before anything runs.
 */
const json: BuiltinReward<typeof JSON_OPTIONS> = {
  description: 'JSON: 1 when the completion (or its fenced ```json block) parses as JSON, and matches the schema where one is given, else 0.',
  options: JSON_OPTIONS,
  create: (options) => {
    const matches = options.schema === undefined ? () => true : compileJsonSchema(options.schema);
    return (_prompts, completions) => completions.map((c) => Number(jsonValues(c).some(matches)));
  },
};

/**
 * −|n − target| / target, n the completion's length in characters (Unicode code points): 0 at the
 * target, −1 at an empty completion or one twice the target, lower still beyond, so every character
 * closer to the target is worth the same.
 */
const length: BuiltinReward<typeof LENGTH_OPTIONS> = {
  description: 'Length: −|characters − target| / target, 0 at the target length and lower the further a completion is from it.',
  options: LENGTH_OPTIONS,
  create: (options) => (_prompts, completions) =>
    completions.map((c) => -Math.abs([...c].length - options.target) / options.target),
};

/** The built-in rewards by name, as `reward_funcs` names them. */
export const BUILTIN_REWARDS = { accuracy, format, json, length } as const;

export type BuiltinRewardName = keyof typeof BUILTIN_REWARDS;

/** A built-in as `reward_funcs` writes it: its name and its options, e.g. `{"name": "length", "target": 200}`. */
export type BuiltinRewardSpec = { [N in BuiltinRewardName]: { name: N } & Options<(typeof BUILTIN_REWARDS)[N]['options']> }[BuiltinRewardName];

export function isBuiltinRewardName(name: unknown): name is BuiltinRewardName {
  return typeof name === 'string' && Object.hasOwn(BUILTIN_REWARDS, name);
}

/**
 * The reward function a `reward_funcs` object describes; an unknown name or a bad option is a
 * UserError with one sentence naming it, before anything runs.
 */
export function builtinReward(spec: { name: unknown } & Record<string, unknown>): RewardFunction {
  const { name, ...rest } = spec;
  if (!isBuiltinRewardName(name)) {
    throw new UserError(
      `reward_funcs: ${JSON.stringify(name)} is not a built-in reward; the built-ins are ${Object.keys(BUILTIN_REWARDS).map((n) => `"${n}"`).join(', ')}, and a JavaScript reward is named by its file's path.`,
      { field: 'reward_funcs' },
    );
  }
  const reward = BUILTIN_REWARDS[name] as BuiltinReward<z.ZodType>;
  const parsed = reward.options.safeParse(rest);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue.path.length > 0 ? `option "${issue.path.join('.')}"` : 'options';
    throw new UserError(`reward_funcs: the "${name}" reward's ${where}: ${issue.message}.`, { field: 'reward_funcs' });
  }
  return reward.create(parsed.data);
}

/**
 * The name a reward's values go under (`rewards/<name>/mean`, the rollout log's `rewards`): a
 * built-in's name; for a JavaScript file, its default export's function name where it has one,
 * else the file's name without folder or extension (TRL names a function reward by `__name__`).
 */
export function rewardFunctionName(spec: string | { name: string }, exportName?: string | null): string {
  if (typeof spec !== 'string') return spec.name;
  if (exportName && exportName !== 'default' && exportName !== 'anonymous') return exportName;
  const base = spec.split(/[\\/]/).pop() as string;
  return base.replace(/\.[^.]+$/, '') || base;
}

/**
 * A reward function's output made safe to train on: exactly `expected` values, each a finite number
 * or null. A value that is not an array, or an array of the wrong length, gives null for every
 * completion; a non-number, NaN or ±Infinity gives null for its completion. Each problem is one
 * warning sentence naming the function (and the first completion concerned, 0-based as `completions[i]`).
 */
export function checkRewardValues(name: string, values: unknown, expected: number): { values: (number | null)[]; warnings: string[] } {
  const none = Array.from({ length: expected }, () => null);
  if (!Array.isArray(values)) {
    return {
      values: none,
      warnings: [`Reward function "${name}" returned ${describeValue(values)} instead of an array of ${expected} numbers, so it gives no reward to this batch.`],
    };
  }
  if (values.length !== expected) {
    return {
      values: none,
      warnings: [`Reward function "${name}" returned ${values.length} values for ${expected} completions, so it gives no reward to this batch.`],
    };
  }
  const bad: number[] = [];
  const out = Array.from(values, (v, i): number | null => {
    if (v === null) return null;
    if (typeof v === 'number' && Number.isFinite(v)) return v;
    bad.push(i);
    return null;
  });
  if (bad.length === 0) return { values: out, warnings: [] };
  const others = bad.length > 1 ? ` (and ${bad.length - 1} other completion${bad.length > 2 ? 's' : ''})` : '';
  return {
    values: out,
    warnings: [`Reward function "${name}" returned ${describeValue(values[bad[0]])} for completions[${bad[0]}]${others}, not a finite number or null, so ${bad.length === 1 ? 'that completion gets' : 'they get'} no reward from it.`],
  };
}

/** A value as a warning names it: `NaN`, `"abc"`, `undefined`, `an object`. */
function describeValue(value: unknown): string {
  if (typeof value === 'number' || typeof value === 'boolean' || value === undefined || value === null) return String(value);
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
  if (typeof value === 'bigint') return `${value}n`;
  return Array.isArray(value) ? 'an array' : `a${typeof value === 'object' ? 'n object' : ` ${typeof value}`}`;
}

/** The row's expected answer as text: `column`, else `answer`, else `solution`; null where there is none. */
function expectedAnswer(columns: Record<string, unknown>, column: string | undefined): string | null {
  const keys = column === undefined ? ['answer', 'solution'] : [column];
  for (const key of keys) {
    const value = columns[key];
    if (typeof value === 'number' && Number.isFinite(value)) return String(value);
    if (typeof value === 'string' && value.trim() !== '') return goldAnswer(value);
  }
  return null;
}

/**
 * A dataset's answer may be a whole worked solution: GSM8K's ends in "#### 72", MATH's holds
 * \boxed{…}. Those markers give the answer; otherwise the whole text is it.
 */
function goldAnswer(text: string): string {
  return lastBoxed(text) ?? afterMarker(text, /####/g) ?? text;
}

/**
 * The part of a completion that holds its final answer: the last \boxed{…}, else the last
 * <answer>…</answer>, else the text after the last "####" or "answer:" (to the end of its line), else
 * the whole completion. Where the expected answer is a number, `sameAnswer` then reads the last number
 * in it, so a bare completion's last number is its answer.
 */
export function finalAnswer(completion: string): string {
  return (
    lastBoxed(completion) ??
    [...completion.matchAll(/<answer>([\s\S]*?)<\/answer>/gi)].pop()?.[1] ??
    afterMarker(completion, /####|answer\s*:/gi) ??
    completion
  );
}

/** The contents of the last \boxed{…} (or \fbox{…}), braces balanced; null where there is none. */
function lastBoxed(text: string): string | null {
  const start = Math.max(text.lastIndexOf('\\boxed{'), text.lastIndexOf('\\fbox{'));
  if (start === -1) return null;
  const open = text.indexOf('{', start);
  let depth = 0;
  for (let i = open; i < text.length; i++) {
    if (text[i] === '{') depth++;
    else if (text[i] === '}' && --depth === 0) return text.slice(open + 1, i);
  }
  return null;
}

/** The rest of the line after the last match of `marker`; null where there is none or nothing follows. */
function afterMarker(text: string, marker: RegExp): string | null {
  const last = [...text.matchAll(marker)].pop();
  if (last === undefined) return null;
  const rest = text.slice((last.index as number) + last[0].length).split('\n')[0].trim();
  return rest === '' ? null : rest;
}

/** A number as written in text: a sign, digits with optional thousands commas, a decimal part. */
const NUMBER = /-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+/g;

/**
 * Whether a predicted answer equals the expected one. Both are normalised (`normalise`); where the
 * expected answer is a number, the prediction is its own number (the last number in it, so
 * "Answer: 42 apples" gives 42) compared numerically, so 1,000 = 1000 = 1000.0 and 63/400 =
 * \frac{63}{400} = 0.1575; otherwise the normalised texts must be equal.
 */
function sameAnswer(predicted: string, expected: string): boolean {
  const want = normalise(expected);
  const got = normalise(predicted);
  const wantNumber = asNumber(want);
  if (wantNumber === null) return got === want;
  const gotNumber = asNumber(got) ?? asNumber([...got.matchAll(NUMBER)].pop()?.[0] ?? '');
  return gotNumber !== null && Math.abs(gotNumber - wantNumber) <= 1e-9 * Math.max(1, Math.abs(wantNumber));
}

/**
 * Lower case, whitespace collapsed, and the wrapping an answer often carries removed: `$…$`, \text{…},
 * \left/\right, a trailing full stop, a leading currency sign, a trailing percent sign or degree.
 */
function normalise(answer: string): string {
  return answer
    .replace(/\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}/g, '$1')
    .replace(/\\(?:left|right|!|,|;)/g, '')
    .replace(/\\?\$/g, '')
    .replace(/\\?%|\^\{?\\circ\}?|°/g, '')
    .replace(/\s+/g, ' ')
    .trim()
    .replace(/\.$/, '')
    .trim()
    .toLowerCase();
}

/** A normalised answer as a number: a decimal with optional thousands commas, a/b, or \frac{a}{b}; else null. */
function asNumber(text: string): number | null {
  const plain = /^[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?$/;
  const decimal = (s: string) => (plain.test(s) && /\d/.test(s) ? Number(s.replace(/,/g, '')) : null);
  const compact = text.replace(/\s+/g, '');
  const whole = decimal(compact);
  if (whole !== null) return whole;
  const fraction = /^([+-]?)(?:\\[dt]?frac\{([^{}]+)\}\{([^{}]+)\}|([^/]+)\/([^/]+))$/.exec(compact);
  if (fraction === null) return null;
  const num = decimal(fraction[2] ?? fraction[4]);
  const den = decimal(fraction[3] ?? fraction[5]);
  if (num === null || den === null || den === 0) return null;
  return (fraction[1] === '-' ? -1 : 1) * (num / den);
}

/** The JSON a completion holds: the whole completion parsed, and its first fenced block parsed, where each parses. */
function jsonValues(completion: string): unknown[] {
  const fenced = /```[ \t]*(?:json)?[ \t]*\n([\s\S]*?)```/i.exec(completion)?.[1];
  const values: unknown[] = [];
  for (const text of [completion, fenced]) {
    if (text === undefined || text.trim() === '') continue;
    try {
      values.push(JSON.parse(text));
    } catch {
      // Not JSON; the other reading may be.
    }
  }
  return values;
}

/** The JSON Schema drafts the json reward reads, by the `$schema` that names them. */
const SCHEMA_DRAFTS: { test: RegExp; make: (options: ConstructorParameters<typeof Ajv>[0]) => Ajv }[] = [
  { test: /json-schema\.org\/draft\/2020-12\/schema#?$/, make: (o) => new Ajv2020(o) },
  { test: /json-schema\.org\/draft\/2019-09\/schema#?$/, make: (o) => new Ajv2019(o) },
  { test: /json-schema\.org\/draft-07\/schema#?$/, make: (o) => new Ajv(o) },
];

/**
 * A regular-expression engine for Ajv that never backtracks: a schema's `pattern` comes from a
 * recipe and is searched in model output, so it runs on the linear-time matcher (as RegExp.test
 * would, anywhere in the text unless anchored), like the format reward's pattern.
 */
const linearRegExp = Object.assign(
  (pattern: string) => {
    // The pattern alone first, so a refusal's character positions are the schema's.
    compileModulePattern(pattern);
    const compiled = compileModulePattern(`[\\s\\S]*?(?:${pattern})[\\s\\S]*`);
    // Ajv keeps one compiled pattern per `toString()`, so it must name the pattern.
    return { test: (text: string) => compiled.fullMatch(text), toString: () => `/${pattern}/` };
  },
  { code: 'linearRegExp' },
);

/**
 * The json reward's schema as a test of a parsed value. Ajv compiles the schema to a function once;
 * formats are annotations (no `format` is checked), remote `$ref`s are not fetched, and an unknown
 * keyword is an error, so a misspelt one cannot quietly match everything.
 */
function compileJsonSchema(schema: Record<string, unknown> | boolean): (value: unknown) => boolean {
  const refuse = (why: string) =>
    new UserError(`reward_funcs: the "json" reward's schema is not a valid JSON Schema (${why.replace(/\.$/, '')}).`, { field: 'reward_funcs' });
  const named = typeof schema === 'object' ? schema.$schema : undefined;
  const draft = named === undefined ? SCHEMA_DRAFTS[0] : SCHEMA_DRAFTS.find((d) => typeof named === 'string' && d.test.test(named));
  if (draft === undefined) {
    throw refuse(`its "$schema" is ${JSON.stringify(named)}; the drafts read are 2020-12, 2019-09 and draft-07`);
  }
  const ajv = draft.make({ strict: true, strictTypes: false, strictTuples: false, validateFormats: false, allErrors: false, logger: false, code: { regExp: linearRegExp } });
  let validate: (value: unknown) => boolean;
  try {
    validate = ajv.compile(schema);
  } catch (e) {
    if (e instanceof ModulePatternError) throw refuse(`a "pattern" the linear-time matcher cannot run: ${e.reason}`);
    if (e instanceof RangeError) throw refuse('it is nested too deeply');
    throw refuse(e instanceof Error ? e.message : String(e));
  }
  return (value) => validate(value) === true;
}
