/**
 * GRPO's reward functions as the recipe form edits them. The form keeps drafts, not recipe values:
 * each reward with its inputs as typed (a half-written JSON Schema, a weight being typed) and, for a
 * JavaScript function, its code, which a recipe names only by path. The drafts are stored as JSON
 * under the form's `reward_funcs` key, so they persist with the form; `draftsToRecipe` gives the
 * recipe's `reward_funcs` and `reward_weights`, `recipeToDrafts` the way back.
 */
import { BUILTIN_REWARDS, isBuiltinRewardName, type BuiltinRewardName } from '../../engine/train/rewards.ts';

/** A built-in reward: its name, each option as typed (by option name), and its weight as typed. */
export interface BuiltinDraft {
  kind: 'builtin';
  name: BuiltinRewardName;
  /** Options of every built-in are kept, so switching the name back finds what was typed. */
  options: Record<string, string>;
  weight: string;
}

/** A JavaScript reward: the path the recipe names it by, its code, and its weight as typed. */
export interface ScriptDraft {
  kind: 'script';
  path: string;
  code: string;
  weight: string;
}

export type RewardDraft = BuiltinDraft | ScriptDraft;

/** How an option of a built-in is typed: a line of text, a number, or a JSON document. */
export interface RewardOption {
  key: string;
  input: 'text' | 'number' | 'json';
  /** Whether the built-in refuses to run without it (length's target). */
  required: boolean;
  placeholder: string;
  doc: string;
}

/**
 * Each built-in's options as the editor shows them; the keys are those of the built-in's options
 * schema in engine/train/rewards.ts (a unit test holds the two together), which documents them.
 */
export const BUILTIN_OPTIONS: Readonly<Record<BuiltinRewardName, readonly RewardOption[]>> = {
  accuracy: [{ key: 'column', input: 'text', required: false, placeholder: 'answer, else solution', doc: 'The dataset column holding the expected answer.' }],
  format: [
    { key: 'pattern', input: 'text', required: false, placeholder: '<think>…</think> then <answer>…</answer>', doc: 'A regular expression the completion must match, anywhere unless anchored with ^…$.' },
    { key: 'flags', input: 'text', required: false, placeholder: 'none', doc: '"i" ignores case; "s" lets . match line breaks.' },
  ],
  json: [{ key: 'schema', input: 'json', required: false, placeholder: '{"type": "object", "required": ["name"]}', doc: 'A JSON Schema the parsed completion must also match; empty accepts any JSON.' }],
  length: [{ key: 'target', input: 'number', required: true, placeholder: '200', doc: 'The completion length in characters that earns the top reward, 0.' }],
};

/** What a JavaScript reward starts as: TRL's shape, with comments saying what it is given. */
export function exampleCode(functionName: string): string {
  return `// A reward function in TRL's shape. It gets the batch's prompts (text, or messages),
// its completions (text) and the dataset's other columns, each an array with one
// entry per completion (columns.answer[i] is completion i's row's "answer").
// It returns one number per completion, or null where it does not apply.
// Its values are logged under the function's name: rewards/${functionName}/mean.
export default function ${functionName}(prompts, completions, columns) {
  return completions.map((c) => (c.includes('cat') ? 1 : 0));
}
`;
}

const EXAMPLE_NAME = 'mentions_cat';

/** A new JavaScript reward whose file and function names are not yet taken by another draft. */
export function newScriptDraft(drafts: readonly RewardDraft[]): ScriptDraft {
  const paths = new Set(drafts.flatMap((d) => (d.kind === 'script' ? [d.path] : [])));
  let name = EXAMPLE_NAME;
  for (let n = 2; paths.has(`rewards/${name}.js`); n++) name = `${EXAMPLE_NAME}_${n}`;
  return { kind: 'script', path: `rewards/${name}.js`, code: exampleCode(name), weight: '1' };
}

/** A new built-in reward: the first built-in no other draft uses yet (the same twice would share a name in the logs). */
export function newBuiltinDraft(drafts: readonly RewardDraft[]): BuiltinDraft {
  const used = new Set(drafts.flatMap((d) => (d.kind === 'builtin' ? [d.name] : [])));
  const names = Object.keys(BUILTIN_REWARDS) as BuiltinRewardName[];
  const name = names.find((n) => !used.has(n)) ?? names[0];
  return { kind: 'builtin', name, options: {}, weight: '1' };
}

/** A weight as the recipe holds it: a number, or the text when it is not one (the form says so). */
function weightValue(text: string): number | string {
  const t = text.trim();
  if (t === '') return 1;
  return Number.isFinite(Number(t)) ? Number(t) : t;
}

/** A built-in draft as `reward_funcs` writes it: its name and the options that were filled in. */
function builtinSpec(draft: BuiltinDraft): { name: BuiltinRewardName } & Record<string, unknown> {
  const spec: { name: BuiltinRewardName } & Record<string, unknown> = { name: draft.name };
  for (const option of BUILTIN_OPTIONS[draft.name]) {
    const text = (draft.options[option.key] ?? '').trim();
    if (text === '') continue;
    if (option.input === 'number') spec[option.key] = Number.isFinite(Number(text)) ? Number(text) : text;
    else if (option.input === 'json') {
      const parsed = parseJson(text);
      if (parsed.ok) spec[option.key] = parsed.value;
    } else spec[option.key] = draft.options[option.key];
  }
  return spec;
}

function parseJson(text: string): { ok: true; value: unknown } | { ok: false; reason: string } {
  try {
    return { ok: true, value: JSON.parse(text) };
  } catch (e) {
    return { ok: false, reason: (e as Error).message.replace(/[.\s]+$/, '') };
  }
}

/**
 * The recipe's `reward_funcs` (built-ins as objects, JavaScript rewards as their paths) and
 * `reward_weights` (null when every weight is 1, as TRL's default weighs each function 1).
 */
export function draftsToRecipe(drafts: readonly RewardDraft[]): { reward_funcs: unknown[]; reward_weights: unknown[] | null } {
  const reward_funcs = drafts.map((d) => (d.kind === 'builtin' ? builtinSpec(d) : d.path.trim()));
  const weights = drafts.map((d) => weightValue(d.weight));
  return { reward_funcs, reward_weights: weights.every((w) => w === 1) ? null : weights };
}

/**
 * The drafts for a recipe's `reward_funcs` and `reward_weights`. A JavaScript reward's code comes
 * from `scripts` (by path: the form's current drafts, or a run's stored files); a recipe names the
 * file but does not hold it, so where the code is not known it is empty and the form asks for it.
 */
export function recipeToDrafts(funcs: unknown, weights: unknown, scripts: Readonly<Record<string, string>> = {}): RewardDraft[] {
  if (!Array.isArray(funcs)) return [];
  const weightOf = (i: number) => (Array.isArray(weights) && typeof weights[i] === 'number' ? String(weights[i]) : '1');
  return funcs.flatMap((spec, i): RewardDraft[] => {
    if (typeof spec === 'string') return [{ kind: 'script', path: spec, code: Object.hasOwn(scripts, spec) ? scripts[spec] : '', weight: weightOf(i) }];
    if (typeof spec !== 'object' || spec === null || !isBuiltinRewardName((spec as { name?: unknown }).name)) return [];
    const { name, ...rest } = spec as { name: BuiltinRewardName } & Record<string, unknown>;
    const options: Record<string, string> = {};
    for (const option of BUILTIN_OPTIONS[name]) {
      const value = rest[option.key];
      if (value === undefined) continue;
      options[option.key] = option.input === 'json' ? JSON.stringify(value, null, 2) : String(value);
    }
    return [{ kind: 'builtin', name, options, weight: weightOf(i) }];
  });
}

/** Each JavaScript reward's code by its path, as the Worker reads the files `reward_funcs` names. */
export function draftScripts(drafts: readonly RewardDraft[]): Record<string, string> {
  return Object.fromEntries(drafts.flatMap((d) => (d.kind === 'script' ? [[d.path.trim(), d.code]] : [])));
}

/**
 * What is wrong with each draft that only the editor can see (the engine checks the rest when the
 * recipe is parsed): an option that is not a number or not JSON, a missing target, a weight that is
 * not a number, a file without a name or code, two drafts with one path or one built-in. One
 * sentence per draft, null where there is nothing to fix.
 */
export function draftProblems(drafts: readonly RewardDraft[]): (string | null)[] {
  return drafts.map((d, i) => {
    const earlier = drafts.slice(0, i);
    const weight = d.weight.trim();
    if (weight !== '' && !Number.isFinite(Number(weight))) return `The weight must be a number (got ${JSON.stringify(d.weight)}).`;
    if (d.kind === 'builtin') {
      if (earlier.some((e) => e.kind === 'builtin' && e.name === d.name)) return `The built-in "${d.name}" is already in the list; its values would share one name in the logs, so keep one.`;
      for (const option of BUILTIN_OPTIONS[d.name]) {
        const text = (d.options[option.key] ?? '').trim();
        if (text === '') {
          if (option.required) return `The "${d.name}" reward needs its ${option.key}.`;
          continue;
        }
        if (option.input === 'number' && !Number.isFinite(Number(text))) return `The ${option.key} must be a number (got ${JSON.stringify(text)}).`;
        if (option.input === 'json') {
          const parsed = parseJson(text);
          if (!parsed.ok) return `The ${option.key} is not valid JSON (${parsed.reason}).`;
        }
      }
      return null;
    }
    const path = d.path.trim();
    if (path === '') return 'Give the file a name, such as rewards/my_reward.js.';
    if (!/\.m?js$/i.test(path)) return `Name the file with a .js ending (got "${path}"), so the finetune command line loads it as JavaScript too.`;
    if (earlier.some((e) => e.kind === 'script' && e.path.trim() === path)) return `Another reward is already the file ${path}; give this one its own name.`;
    if (d.code.trim() === '') return `${path} has no code yet: a recipe names the file but does not hold it, so paste its code here.`;
    return null;
  });
}

function isDraft(value: unknown): value is RewardDraft {
  if (typeof value !== 'object' || value === null) return false;
  const d = value as Record<string, unknown>;
  if (typeof d.weight !== 'string') return false;
  if (d.kind === 'script') return typeof d.path === 'string' && typeof d.code === 'string';
  if (d.kind !== 'builtin' || !isBuiltinRewardName(d.name)) return false;
  const options = d.options;
  return typeof options === 'object' && options !== null && !Array.isArray(options) && Object.values(options).every((v) => typeof v === 'string');
}

/** The drafts a form value holds, or null when it holds none (a page of another version wrote it, or nothing did). */
export function parseDrafts(value: unknown): RewardDraft[] | null {
  if (typeof value !== 'string') return null;
  const parsed = parseJson(value);
  if (!parsed.ok || !Array.isArray(parsed.value) || !parsed.value.every(isDraft)) return null;
  return parsed.value;
}

/** The drafts of a form value; none where it holds none. */
export function readDrafts(value: unknown): RewardDraft[] {
  return parseDrafts(value) ?? [];
}

/** The form value for drafts. */
export function writeDrafts(drafts: readonly RewardDraft[]): string {
  return JSON.stringify(drafts);
}
