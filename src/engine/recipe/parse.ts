/**
 * From text and flags to a checked recipe: the JSON of a file, overrides from a command line or a
 * URL, validation, and the one sentence that explains what is wrong (naming the file and field).
 */
import type { z } from 'zod';
import { UserError, checkTextEncoding, isUserError } from '../errors.ts';
import { builtinReward } from '../train/rewards.ts';
import type { RecipeField } from './fields.ts';
import { METHODS, type MethodName } from './shared.ts';
import { RECIPE_FIELDS, RecipeSchema, fieldSchema, recipeField, type GrpoRecipe, type Recipe } from './schema.ts';

const FIELD_PATHS = Object.keys(RECIPE_FIELDS);

/** Names from other tools' configs that people bring along. */
const SYNONYMS: Record<string, string> = {
  model_name_or_path: 'model',
  base_model: 'model',
  lr: 'learning_rate',
  epochs: 'num_train_epochs',
  num_epochs: 'num_train_epochs',
  batch_size: 'per_device_train_batch_size',
  rank: 'peft.r',
  lora_r: 'peft.r',
  alpha: 'peft.lora_alpha',
  warmup: 'warmup_steps',
  max_seq_length: 'max_length',
  scheduler: 'lr_scheduler_type',
};

/** Edit distance counting a swap of two neighbouring letters as one edit ("modle" → "model"). */
function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.length][b.length];
}

/** The known field path an unknown one was most likely meant to be, if any is close. */
export function closestField(path: string): string | undefined {
  const leaf = path.slice(path.lastIndexOf('.') + 1);
  const synonym = SYNONYMS[path] ?? SYNONYMS[leaf];
  if (synonym) return synonym;
  let best: string | undefined;
  let bestDistance = Math.max(1, Math.floor(path.length / 4)) + 1;
  for (const known of FIELD_PATHS) {
    // A nested field written at the top level ("lora_alpha") counts as close to "peft.lora_alpha".
    const knownLeaf = known.slice(known.lastIndexOf('.') + 1);
    const d = Math.min(editDistance(path, known), editDistance(leaf, knownLeaf) + (path === leaf ? 0 : 1));
    if (d < bestDistance) {
      best = known;
      bestDistance = d;
    }
  }
  return best;
}

function describe(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (Array.isArray(value)) {
    const s = JSON.stringify(value);
    return s.length <= 60 ? s : 'a long list';
  }
  if (typeof value === 'object' && value !== null) return 'an object';
  if (typeof value === 'number' && !Number.isFinite(value)) return Number.isNaN(value) ? 'NaN' : 'a number out of range';
  const s = JSON.stringify(value);
  return s.length <= 60 ? s : `${s.slice(0, 57)}…"`;
}

function valueAt(json: unknown, path: readonly PropertyKey[]): unknown {
  let v: unknown = json;
  for (const key of path) {
    if (typeof v !== 'object' || v === null) return undefined;
    v = (v as Record<PropertyKey, unknown>)[key];
  }
  return v;
}

function unknownFieldSentence(path: string, flagPrefix: string): string {
  const suggestion = closestField(path);
  const hint = suggestion ? ` (did you mean ${flagPrefix}${flagPrefix ? suggestion : `"${suggestion}"`}?)` : '';
  return `${flagPrefix}${flagPrefix ? path : `"${path}"`} is not a recipe field${hint}.`;
}

function issueSentence(issue: z.core.$ZodIssue, json: unknown): { sentence: string; field: string } {
  const method = isPlainObject(json) ? methodOf(json) : null;
  // Errors inside a value (one entry of target_modules) are reported against the field holding it.
  for (let n = issue.path.length; n > 0; n--) {
    const field = issue.path.slice(0, n).map(String).join('.');
    const info = (method && recipeField(field, method)) || RECIPE_FIELDS[field];
    const got = valueAt(json, issue.path.slice(0, n));
    if (info) {
      const sentence = got === undefined
        ? `"${field}" is required; set it to ${info.expect}.`
        : `"${field}" must be ${info.expect} (got ${describe(got)}).`;
      return { sentence, field };
    }
    if (field === 'peft') {
      return { sentence: `"peft" must be an object such as {"type": "lora", "r": 16} (got ${describe(got)}).`, field };
    }
    if (field === 'quantization') {
      return { sentence: `"quantization" must be an object such as {"load_in_4bit": true} (got ${describe(got)}).`, field };
    }
  }
  return { sentence: `the recipe must be a JSON object (got ${describe(json)}).`, field: '' };
}

/** The method a recipe object names: "sft" when it names none, null when what it names is no method. */
function methodOf(json: Record<string, unknown>): MethodName | null {
  if (json.method === undefined) return 'sft';
  return (METHODS as readonly unknown[]).includes(json.method) ? (json.method as MethodName) : null;
}

/** Whether a field belongs to methods other than this one (DPO's beta in an SFT recipe). */
function otherMethods(path: string, method: MethodName): readonly MethodName[] | null {
  const methods = RECIPE_FIELDS[path]?.methods;
  return methods && !methods.includes(method) ? methods : null;
}

function misplacedSentence(path: string, methods: readonly MethodName[], method: MethodName): string {
  const list = methods.map((m) => `"${m}"`).join(methods.length === 2 ? ' and ' : ', ');
  return `"${path}" applies to method ${list} only, not "${method}"; remove it or set "method".`;
}

/**
 * The recipe without other methods' fields that hold their defaults. Runs stored before a recipe
 * held one method's fields carry every method's defaults ("beta": 0.1 in an SFT recipe), and a
 * default says nothing, so they read back as they were; any other value is refused by name.
 */
function withoutOtherDefaults(json: unknown): unknown {
  if (!isPlainObject(json)) return json;
  const method = methodOf(json);
  if (method === null) return json;
  const kept = Object.entries(json).filter(([key, value]) => !(otherMethods(key, method) && value === RECIPE_FIELDS[key].default));
  return kept.length === Object.keys(json).length ? json : Object.fromEntries(kept);
}

/** The sentence for the first thing wrong with a recipe that failed the schema. */
function firstProblem(issues: readonly z.core.$ZodIssue[], json: unknown): { sentence: string; field: string } {
  const method = isPlainObject(json) ? methodOf(json) : null;
  const unknown = issues.flatMap((i) => (i.code === 'unrecognized_keys' ? i.keys.map((k) => [...i.path.map(String), k].join('.')) : []));
  const misplaced = method === null ? [] : unknown.flatMap((path) => {
    const methods = otherMethods(path, method);
    return methods ? [{ field: path, sentence: misplacedSentence(path, methods, method) }] : [];
  });
  // An unknown key is usually a misspelt known one, which also explains a "required" error
  // elsewhere; another method's field comes last, since it may be the method that is wrong.
  const misspelt = unknown.find((path) => !misplaced.some((m) => m.field === path));
  if (misspelt !== undefined) return { sentence: unknownFieldSentence(misspelt, ''), field: misspelt };
  const issue = issues.find((i) => i.code !== 'unrecognized_keys');
  return issue ? issueSentence(issue, json) : misplaced[0];
}

/** Validates a recipe and fills in its defaults; throws one UserError naming the file and the first bad field. */
export function parseRecipe(json: unknown, file: string): Recipe {
  const input = withoutOtherDefaults(json);
  const result = RecipeSchema.safeParse(input);
  if (result.success) {
    const conflict = methodConflict(result.data);
    if (conflict) throw new UserError(`${file}: ${conflict.sentence}`, { file, field: conflict.field });
    return result.data;
  }
  const { sentence, field } = firstProblem(result.error.issues, input);
  throw new UserError(`${file}: ${sentence}`, { file, field: field || undefined });
}

/**
 * Why the recipe's method cannot run as written, or null. DPO and KTO compare the model with its
 * reference, the same weights with the adapter off: training the weights themselves (peft.type
 * freeze or full) would need a second copy of the model, which a browser tab cannot hold.
 */
function methodConflict(recipe: Recipe): { field: string; sentence: string } | null {
  const q = recipe.quantization;
  if (q.load_in_4bit && q.load_in_8bit) {
    return { field: 'quantization.load_in_8bit', sentence: '"quantization" asks for both load_in_4bit and load_in_8bit; choose one.' };
  }
  if ((q.load_in_4bit || q.load_in_8bit) && recipe.peft.type !== 'lora') {
    return {
      field: 'peft.type',
      sentence: `a quantised base (quantization.${q.load_in_4bit ? 'load_in_4bit' : 'load_in_8bit'}) stays frozen, so only a LoRA adapter can train on it; use peft.type "lora" (got "${recipe.peft.type}").`,
    };
  }
  // KTO's KL term pairs each prompt with another row's completion in the micro-batch (TRL refuses 1 too).
  if (recipe.method === 'kto' && recipe.per_device_train_batch_size < 2) {
    return { field: 'per_device_train_batch_size', sentence: 'KTO estimates its KL term from each prompt with another row\'s completion in the same micro-batch, so "per_device_train_batch_size" must be at least 2.' };
  }
  if (recipe.method === 'grpo') return grpoConflict(recipe);
  if ((recipe.method === 'dpo' || recipe.method === 'kto') && recipe.peft.type !== 'lora') {
    return {
      field: 'peft.type',
      sentence: `${recipe.method.toUpperCase()} compares the model with its reference, the same weights with the LoRA adapter switched off; with peft.type "${recipe.peft.type}" the reference would need a second copy of the model. Use peft.type "lora", or method "orpo" or "simpo", which need no reference.`,
    };
  }
  return null;
}

/** Why a GRPO recipe cannot run as written, or null. */
function grpoConflict(recipe: GrpoRecipe): { field: string; sentence: string } | null {
  const G = recipe.num_generations;
  if (recipe.per_device_train_batch_size % G !== 0) {
    return {
      field: 'per_device_train_batch_size',
      sentence: `GRPO's "per_device_train_batch_size" counts completions, num_generations (${G}) of each prompt, so it must be a multiple of ${G} (got ${recipe.per_device_train_batch_size}).`,
    };
  }
  if (recipe.reward_weights !== null && recipe.reward_weights.length !== recipe.reward_funcs.length) {
    return {
      field: 'reward_weights',
      sentence: `"reward_weights" has ${recipe.reward_weights.length} weight${recipe.reward_weights.length === 1 ? '' : 's'} for ${recipe.reward_funcs.length} reward function${recipe.reward_funcs.length === 1 ? '' : 's'}; give one per function, or null.`,
    };
  }
  if (recipe.beta > 0 && recipe.peft.type !== 'lora') {
    return {
      field: 'peft.type',
      sentence: `GRPO with "beta" ${recipe.beta} compares the model with its reference, the same weights with the LoRA adapter switched off; with peft.type "${recipe.peft.type}" the reference would need a second copy of the model. Use peft.type "lora", or beta 0.`,
    };
  }
  if (recipe.eval_file !== undefined || recipe.eval_split > 0) {
    return {
      field: recipe.eval_file !== undefined ? 'eval_file' : 'eval_split',
      sentence: 'GRPO has no evaluation loss here yet; remove eval_file and set eval_split to 0 (the mean reward of each step is logged, and completions.jsonl holds every completion with its rewards).',
    };
  }
  for (const spec of recipe.reward_funcs) {
    if (typeof spec === 'string') continue;
    try {
      builtinReward(spec);
    } catch (e) {
      if (isUserError(e)) return { field: 'reward_funcs', sentence: e.message };
      throw e;
    }
  }
  return null;
}

/** The JSON of a recipe file, unvalidated (overrides go on before validation); a syntax error is reported with its line and column. */
export function parseRecipeJson(text: string, file: string): Record<string, unknown> {
  checkTextEncoding(text, file);
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    const message = (e as Error).message;
    const at = /position (\d+)/.exec(message);
    const reason = message.replace(/\s*in JSON at position \d+.*$/s, '').replace(/[.\s]+$/, '');
    if (!at) throw new UserError(`${file} is not valid JSON: ${reason}.`, { file });
    const before = text.slice(0, Number(at[1]));
    const line = before.split('\n').length;
    const column = Number(at[1]) - before.lastIndexOf('\n');
    throw new UserError(`${file} is not valid JSON at line ${line}, column ${column}: ${reason}.`, { file, line });
  }
  if (!isPlainObject(json)) throw new UserError(`${file}: the recipe must be a JSON object.`, { file });
  const huge = outOfRange(json, '');
  if (huge !== null) {
    throw new UserError(`${file}: "${huge}" is out of range (a number this large or small cannot be represented; the limit is about 1.8e308).`, { file, field: huge });
  }
  return json;
}

/** The dotted path of a number JSON.parse turned into ±Infinity (such as 1e400), or null. */
function outOfRange(value: unknown, path: string): string | null {
  if (typeof value === 'number') return Number.isFinite(value) ? null : path;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const p = outOfRange(value[i], `${path}[${i}]`);
      if (p !== null) return p;
    }
  } else if (isPlainObject(value)) {
    for (const [k, v] of Object.entries(value)) {
      const p = outOfRange(v, path ? `${path}.${k}` : k);
      if (p !== null) return p;
    }
  }
  return null;
}

/** Parses and validates recipe JSON text. */
export function parseRecipeText(text: string, file: string): Recipe {
  return parseRecipe(parseRecipeJson(text, file), file);
}

function convertOverride(info: RecipeField, raw: string): unknown {
  if (raw === 'null' && info.nullable) return null;
  switch (info.kind) {
    case 'number':
    case 'integer':
      return raw.trim() !== '' && Number.isFinite(Number(raw)) ? Number(raw) : raw;
    case 'boolean':
      return raw === 'true' ? true : raw === 'false' ? false : raw;
    case 'modules':
      return raw === 'all-linear' ? raw : raw.split(',').map((s) => s.trim()).filter((s) => s !== '');
    case 'list': {
      // JSON (a list with built-in rewards, or numbers), else comma-separated entries.
      try {
        const parsed: unknown = JSON.parse(raw);
        if (Array.isArray(parsed) || parsed === null) return parsed;
      } catch {
        // not JSON
      }
      const items = raw.split(',').map((s) => s.trim()).filter((s) => s !== '');
      return items.map((s) => (/^[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$/i.test(s) ? Number(s) : s));
    }
    default:
      return raw;
  }
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Sets dotted fields (`peft.r`) from strings such as command-line flags, converting each string to
 * its field's type ('8' → 8, 'false' → false, 'null' → null, 'q_proj,v_proj' → a list). 'null' on
 * an optional field without a null value (eval_file, init_adapter, learning_rate) removes it. A
 * field of another method than the one the result names (--beta for SFT) is refused.
 * Returns a new object; the input is not changed.
 */
export function applyOverrides(
  json: Record<string, unknown>,
  overrides: Record<string, string>,
  source = 'command line',
): Record<string, unknown> {
  const out: Record<string, unknown> = { ...json };
  const paths: string[] = [];
  // A field several methods define differently (beta) is read as the recipe's method defines it.
  const methodOverride = overrides['--method'] ?? overrides.method;
  const named = methodOf(methodOverride !== undefined ? { method: methodOverride } : json) ?? undefined;
  for (const [flag, raw] of Object.entries(overrides)) {
    const path = flag.replace(/^--/, '');
    const info = (named && recipeField(path, named)) || RECIPE_FIELDS[path];
    if (!info) {
      const sentence = path === 'peft'
        ? '--peft is a group of fields; set one of them, such as --peft.r.'
        : path === 'quantization'
          ? '--quantization is a group of fields; set one of them, such as --quantization.load_in_4bit true.'
          : unknownFieldSentence(path, '--');
      throw new UserError(`${source}: ${sentence}`, { file: source, field: path });
    }
    const unset = raw === 'null' && !info.required && !info.nullable && info.default === undefined;
    const value = convertOverride(info, raw);
    if (!unset && !fieldSchema(path, named)!.safeParse(value).success) {
      if ((info.kind === 'number' || info.kind === 'integer') && /^\s*[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?\s*$/i.test(raw) && !Number.isFinite(Number(raw))) {
        throw new UserError(`${source}: --${path} ${raw.trim()} is out of range (the limit is about 1.8e308); it must be ${info.expect}.`, { file: source, field: path });
      }
      throw new UserError(`${source}: --${path} must be ${info.expect} (got ${JSON.stringify(raw)}).`, { file: source, field: path });
    }
    const keys = path.split('.');
    let target = out;
    for (const key of keys.slice(0, -1)) {
      const inner = isPlainObject(target[key]) ? { ...(target[key] as Record<string, unknown>) } : {};
      target[key] = inner;
      target = inner;
    }
    const last = keys[keys.length - 1];
    if (unset) delete target[last];
    else target[last] = value;
    paths.push(path);
  }
  // Checked once all are set, since --method may come after the fields it allows.
  const method = methodOf(out);
  if (method !== null) {
    for (const path of paths) {
      const methods = otherMethods(path, method);
      if (methods) throw new UserError(`${source}: ${misplacedSentence(path, methods, method)}`, { file: source, field: path });
    }
  }
  return out;
}
