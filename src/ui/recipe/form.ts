/**
 * The recipe form's state, kept apart from the Svelte component so it can be tested in Node.
 * Fields, their docs, defaults and TRL names come from `RECIPE_FIELDS`; validation is the
 * engine's `parseRecipe`, whose message is shown at the field it names.
 *
 * The form keeps one raw value per form key. A key is the recipe path (`learning_rate`,
 * `peft.r`), except where a method defines a field its own way (GRPO's `beta` is a KL weight of
 * default 0, DPO's a preference strength of default 0.1): that method's variant has the key
 * `<method>:<path>` (`grpo:beta`), so switching the method shows each method's own value and
 * default. GRPO's reward functions and their weights are one key, `reward_funcs`, holding the
 * reward editor's drafts (rewards.ts).
 */
import { UserError, isUserError } from '../../engine/errors.ts';
import { METHODS, RECIPE_FIELDS, defaultLearningRate, parseRecipe, parseRecipeJson, recipeField, type MethodName, type Recipe, type RecipeField, type RecipeInput } from '../../engine/recipe.ts';
import { draftProblems, draftsToRecipe, parseDrafts, readDrafts, recipeToDrafts, writeDrafts } from './rewards.ts';

/** The form key of GRPO's reward functions, whose value is the reward editor's drafts as JSON. */
export const REWARDS_KEY = 'reward_funcs';

/** A form key's recipe path: `grpo:beta` → `beta`. */
export function recipePath(key: string): string {
  return key.slice(key.indexOf(':') + 1);
}

function sameDefinition(a: RecipeField, b: RecipeField): boolean {
  const { methods: _a, ...x } = a;
  const { methods: _b, ...y } = b;
  return JSON.stringify(x) === JSON.stringify(y);
}

/**
 * RECIPE_FIELDS by form key: a field every method that has it defines alike keeps its path; a
 * method that defines it otherwise gets its own key, `<method>:<path>`, with its own default and
 * doc. `reward_weights` has no key of its own: each reward's weight is edited beside it.
 */
export const STUDIO_FIELDS: Readonly<Record<string, RecipeField>> = Object.freeze(
  (() => {
    const out: Record<string, RecipeField> = {};
    for (const [path, first] of Object.entries(RECIPE_FIELDS)) {
      if (path === 'reward_weights') continue;
      if (!first.methods) {
        out[path] = first;
        continue;
      }
      const alike = first.methods.filter((m) => sameDefinition(recipeField(path, m)!, first));
      if (alike.length > 0) out[path] = { ...first, methods: alike };
      for (const m of first.methods) if (!alike.includes(m)) out[`${m}:${path}`] = { ...recipeField(path, m)!, methods: [m] };
    }
    return out;
  })(),
);

/** The form key that holds a recipe field for a method: `beta` of GRPO is `grpo:beta`; a weight is edited with its reward. */
export function formKey(path: string, method: string): string {
  if (path === 'reward_weights') return REWARDS_KEY;
  return `${method}:${path}` in STUDIO_FIELDS ? `${method}:${path}` : path;
}

/** What an input holds: text for numbers and strings, a flag for booleans, a list for target_modules. */
export type RawValue = string | boolean | string[];
export type RawForm = Record<string, RawValue>;

/** Fields the page fills in itself (the loaded model, the chosen dataset) or that have no meaning in a browser. */
export const PAGE_FIELDS: ReadonlySet<string> = new Set(['model', 'train_file', 'eval_file', 'output_dir', 'init_adapter', 'resume_from_checkpoint']);

/**
 * Starting values that differ from the engine's defaults because the page is not a terminal:
 * the charts want a point per step, and a reload should lose little work.
 */
export const STUDIO_DEFAULTS: Readonly<Record<string, unknown>> = { logging_steps: 1, save_steps: 20 };

export interface FieldGroup {
  id: string;
  title: string;
  fields: string[];
  /** Shown under "Advanced", closed until opened: the defaults suit a first run. */
  advanced: boolean;
}

/**
 * What a first run sets: the method (with GRPO's rewards and group size), the adapter's size, how
 * fast and how long, the batch and the length.
 */
const ESSENTIALS: FieldGroup = {
  id: 'essentials',
  title: 'Essentials',
  fields: [
    'method', REWARDS_KEY, 'num_generations', 'grpo:max_completion_length', 'beta', 'loss_type',
    'peft.type', 'quantization.load_in_4bit', 'peft.r', 'peft.lora_alpha', 'peft.layers_to_train', 'learning_rate', 'num_train_epochs', 'max_steps', 'per_device_train_batch_size', 'max_length',
  ],
  advanced: false,
};

const ADVANCED: Omit<FieldGroup, 'advanced'>[] = [
  { id: 'lora', title: 'LoRA adapter', fields: ['peft.lora_dropout', 'peft.target_modules', 'peft.use_rslora'] },
  { id: 'quantization', title: 'Quantised base (QLoRA)', fields: ['quantization.bnb_4bit_quant_type', 'quantization.bnb_4bit_use_double_quant', 'quantization.load_in_8bit'] },
  {
    id: 'preference',
    title: 'Preference method',
    fields: ['desirable_weight', 'undesirable_weight', 'simpo_gamma', 'precompute_ref_log_probs', 'max_prompt_length', 'max_completion_length'],
  },
  { id: 'grpo-sampling', title: 'GRPO sampling', fields: ['temperature', 'top_p', 'top_k', 'grpo:max_prompt_length', 'log_completions'] },
  {
    id: 'grpo-objective',
    title: 'GRPO objective',
    fields: ['grpo:beta', 'grpo:loss_type', 'epsilon', 'epsilon_high', 'scale_rewards', 'importance_sampling_level', 'num_iterations', 'mask_truncated_completions'],
  },
  { id: 'steps', title: 'Steps and schedule', fields: ['gradient_accumulation_steps', 'gradient_checkpointing', 'lr_scheduler_type', 'warmup_steps', 'warmup_ratio'] },
  {
    id: 'data',
    title: 'Data',
    fields: ['use_chat_template', 'system_prompt', 'completion_only_loss', 'assistant_only_loss', 'shuffle', 'eval_split', 'eval_steps', 'per_device_eval_batch_size'],
  },
  { id: 'optimizer', title: 'Optimizer', fields: ['optim', 'weight_decay', 'adam_beta1', 'adam_beta2', 'adam_epsilon', 'max_grad_norm', 'seed'] },
  { id: 'saving', title: 'Logging and checkpoints', fields: ['logging_steps', 'save_steps', 'save_total_limit'] },
];

const GROUPS: FieldGroup[] = [ESSENTIALS, ...ADVANCED.map((g) => ({ ...g, advanced: true }))];

/** The form's sections, essentials first; a field the engine adds later shows up under "More" (advanced) without a change here. */
export function formGroups(fields: Readonly<Record<string, RecipeField>> = STUDIO_FIELDS): FieldGroup[] {
  const placed = new Set(GROUPS.flatMap((g) => g.fields));
  const groups = GROUPS.map((g) => ({ ...g, fields: g.fields.filter((f) => f in fields) }));
  const rest = Object.keys(fields).filter((f) => !placed.has(f) && !PAGE_FIELDS.has(f));
  if (rest.length > 0) groups.push({ id: 'more', title: 'More', fields: rest, advanced: true });
  return groups.filter((g) => g.fields.length > 0);
}

/** Whether a section applies to the chosen method and peft.type: whether any of its fields does. */
export function groupApplies(group: FieldGroup, raw: RawForm, fields: Readonly<Record<string, RecipeField>> = STUDIO_FIELDS): boolean {
  return group.fields.some((f) => fieldApplies(f, raw, fields));
}

/** Whether a form key's field belongs to the form's method. */
function ofMethod(info: RecipeField, method: RawValue | undefined): boolean {
  return !info.methods || info.methods.includes(method as MethodName);
}

/**
 * Whether a field applies to the chosen method (DPO's beta to the preference methods, `grpo:beta`
 * to GRPO) and peft.type (LoRA's r and alpha to lora, the layer count to freeze).
 */
export function fieldApplies(path: string, raw: RawForm, fields: Readonly<Record<string, RecipeField>> = STUDIO_FIELDS): boolean {
  const info = fields[path];
  if (info && !ofMethod(info, raw.method)) return false;
  if (path.startsWith('peft.') && path !== 'peft.type') {
    return path === 'peft.layers_to_train' ? raw['peft.type'] === 'freeze' : raw['peft.type'] === 'lora';
  }
  // A quantised base trains LoRA only; the 4-bit settings mean something with load_in_4bit alone.
  if (path.startsWith('quantization.')) {
    if (raw['peft.type'] !== 'lora') return false;
    if (path.startsWith('quantization.bnb_4bit_')) return raw['quantization.load_in_4bit'] === true;
  }
  return true;
}

export function toRaw(info: RecipeField, value: unknown): RawValue {
  if (info.kind === 'boolean') return Boolean(value);
  if (info.kind === 'modules') return value === 'all-linear' || value === undefined ? ['all-linear'] : [...(value as string[])];
  if (value === null || value === undefined) return '';
  return String(value);
}

/** The recipe value of an input; undefined leaves the field out (so its default applies). */
export function fromRaw(info: RecipeField, raw: RawValue): unknown {
  if (info.kind === 'boolean') return raw === true;
  if (info.kind === 'modules') {
    const list = raw as string[];
    return list.includes('all-linear') ? 'all-linear' : [...list];
  }
  const text = String(raw);
  if (info.kind === 'number' || info.kind === 'integer') {
    const t = text.trim();
    if (t === '') return info.nullable ? null : undefined;
    // Text that is not a number goes through as text, so the schema's message names it.
    return Number.isFinite(Number(t)) ? Number(t) : t;
  }
  if (info.kind === 'string' && text === '') return info.nullable ? null : undefined;
  return text;
}

/** Every form field at its starting value. */
export function defaultForm(fields: Readonly<Record<string, RecipeField>> = STUDIO_FIELDS): RawForm {
  const raw: RawForm = {};
  for (const [key, info] of Object.entries(fields)) {
    if (PAGE_FIELDS.has(key)) continue;
    raw[key] = key === REWARDS_KEY ? writeDrafts([]) : toRaw(info, key in STUDIO_DEFAULTS ? STUDIO_DEFAULTS[key] : info.default);
  }
  return raw;
}

function setPath(json: Record<string, unknown>, path: string, value: unknown): void {
  const keys = path.split('.');
  let target = json;
  for (const key of keys.slice(0, -1)) {
    if (typeof target[key] !== 'object' || target[key] === null) target[key] = {};
    target = target[key] as Record<string, unknown>;
  }
  target[keys[keys.length - 1]] = value;
}

function deletePath(json: Record<string, unknown>, path: string): boolean {
  const keys = path.split('.');
  let target: unknown = json;
  for (const key of keys.slice(0, -1)) {
    if (typeof target !== 'object' || target === null) return false;
    target = (target as Record<string, unknown>)[key];
  }
  if (typeof target !== 'object' || target === null) return false;
  const last = keys[keys.length - 1];
  if (!(last in target)) return false;
  delete (target as Record<string, unknown>)[last];
  return true;
}

function getPath(json: Record<string, unknown>, path: string): unknown {
  let v: unknown = json;
  for (const key of path.split('.')) {
    if (typeof v !== 'object' || v === null) return undefined;
    v = (v as Record<string, unknown>)[key];
  }
  return v;
}

export interface PageValues {
  /** The loaded model's name; the recipe's `model`. */
  model: string;
  /** The chosen dataset's file name; the recipe's `train_file`. */
  train_file: string;
  /** The loaded model's own 4-bit storage when it is a pre-quantised checkpoint: the form cannot change it. */
  quantization?: { quant_type: 'nf4' | 'fp4'; double_quant: boolean } | null;
}

/**
 * The form as it applies to the loaded model: a pre-quantised checkpoint's own storage in place of
 * the quantization fields (it trains as it was saved, as transformers loads it).
 */
export function effectiveForm(raw: RawForm, page: Pick<PageValues, 'quantization'>): RawForm {
  const q = page.quantization;
  if (!q) return raw;
  return {
    ...raw,
    'quantization.load_in_4bit': true,
    'quantization.bnb_4bit_quant_type': q.quant_type,
    'quantization.bnb_4bit_use_double_quant': q.double_quant,
    'quantization.load_in_8bit': false,
  };
}

/** The recipe JSON the form describes (nested `peft`), before validation. */
export function formToJson(form: RawForm, page: PageValues, fields: Readonly<Record<string, RecipeField>> = STUDIO_FIELDS): Record<string, unknown> {
  const raw = effectiveForm(form, page);
  const json: Record<string, unknown> = { model: page.model, train_file: page.train_file };
  for (const [key, value] of Object.entries(raw)) {
    const info = fields[key];
    // A field of another method (DPO's beta in an SFT recipe) stays in the form, not in the recipe.
    if (!info || !ofMethod(info, raw.method)) continue;
    // A quantised base is LoRA's alone: the switch left on under freeze or full says nothing.
    if (key.startsWith('quantization.') && raw['peft.type'] !== 'lora') continue;
    if (key === REWARDS_KEY) {
      Object.assign(json, draftsToRecipe(readDrafts(value)));
      continue;
    }
    const v = fromRaw(info, value);
    if (v !== undefined) setPath(json, recipePath(key), v);
  }
  return json;
}

export interface Validation {
  recipe: Recipe | null;
  /** The recipe with every bad field at its default (and a stand-in for bad rewards), or null where even that fails. */
  checked: Recipe | null;
  /** The message for each field the engine rejected, by form key, without the file prefix. */
  errors: Record<string, string>;
  /** A problem not tied to one field. */
  general: string | null;
}

const SOURCE = 'recipe';

function withoutSource(message: string): string {
  return message.startsWith(`${SOURCE}: `) ? message.slice(SOURCE.length + 2) : message;
}

/**
 * A reward list that parses, put in place of one that does not (or of a reward the editor finds
 * wrong), so the rest of the form is still checked. It never trains: the form has no recipe while
 * any field is bad.
 */
const STAND_IN_REWARDS = [{ name: 'json' }];

/**
 * Validates the form with the engine's parser. `parseRecipe` stops at the first bad field, so
 * that field is taken out and the rest checked again until the recipe passes, giving a message
 * at every bad field at once, each under its form key. `checked` is that last recipe, every bad
 * field at its default: what the data report reads while the form is being fixed.
 */
export function validateForm(raw: RawForm, page: PageValues): Validation {
  const json = formToJson(raw, page);
  const method = String(raw.method);
  const errors: Record<string, string> = {};
  if (page.quantization && raw['peft.type'] !== 'lora') {
    errors['peft.type'] = `The model is a 4-bit checkpoint (${page.quantization.quant_type.toUpperCase()}), so it stays frozen and only a LoRA adapter can train on it; choose lora.`;
  }
  if (method === 'grpo') {
    const problems = draftProblems(readDrafts(raw[REWARDS_KEY]));
    const first = problems.findIndex((p) => p !== null);
    if (first !== -1) {
      errors[REWARDS_KEY] = `Reward ${first + 1}: ${problems[first]}`;
      json.reward_funcs = STAND_IN_REWARDS;
      delete json.reward_weights;
    }
  }
  for (let round = 0; round <= Object.keys(raw).length + 1; round++) {
    try {
      const recipe = parseRecipe(json, SOURCE);
      const valid = Object.keys(errors).length === 0;
      return { recipe: valid ? recipe : null, checked: recipe, errors, general: null };
    } catch (e) {
      if (!isUserError(e)) throw e;
      const field = e.field;
      const key = field ? formKey(field, method) : '';
      if (!field || key in errors) return { recipe: null, checked: null, errors, general: withoutSource(e.message) };
      if (field === 'reward_funcs') json.reward_funcs = STAND_IN_REWARDS;
      else if (!deletePath(json, field)) return { recipe: null, checked: null, errors, general: withoutSource(e.message) };
      errors[key] = withoutSource(e.message);
    }
  }
  return { recipe: null, checked: null, errors, general: 'The recipe could not be checked.' };
}

/**
 * The form for a recipe (imported, or a run's): fields it leaves out take their defaults, and only
 * fields of its method are read. `scripts` holds the code of JavaScript rewards by path, which a
 * recipe names but does not hold.
 */
export function formFromRecipe(recipe: RecipeInput | Record<string, unknown>, fields: Readonly<Record<string, RecipeField>> = STUDIO_FIELDS, scripts: Readonly<Record<string, string>> = {}): RawForm {
  const raw = defaultForm(fields);
  const json = recipe as Record<string, unknown>;
  const method = json.method ?? 'sft';
  for (const [key, info] of Object.entries(fields)) {
    if (PAGE_FIELDS.has(key) || !ofMethod(info, method as RawValue)) continue;
    if (key === REWARDS_KEY) {
      raw[key] = writeDrafts(recipeToDrafts(json.reward_funcs, json.reward_weights, scripts));
      continue;
    }
    const value = getPath(json, recipePath(key));
    if (value !== undefined) raw[key] = toRaw(info, value);
    else if (key in STUDIO_DEFAULTS) raw[key] = toRaw(info, info.default);
  }
  return raw;
}

/**
 * Reads an imported recipe file. A syntax error or a bad field throws the engine's UserError,
 * naming the file; `model` and `train_file` may be missing since the page supplies them.
 * `scripts` is the code of JavaScript rewards the form already has, by path.
 */
export function importRecipe(text: string, file: string, page: PageValues, scripts: Readonly<Record<string, string>> = {}): { form: RawForm; model: string | null } {
  const json = parseRecipeJson(text, file);
  const recipe = parseRecipe({ ...json, model: json.model ?? page.model, train_file: json.train_file ?? page.train_file }, file);
  return { form: formFromRecipe(json, STUDIO_FIELDS, scripts), model: typeof json.model === 'string' ? recipe.model : null };
}

/** The recipe as a JSON file: every field of its method with its value, so it reads the same in the CLI or in TRL. */
export function exportRecipe(recipe: Recipe): string {
  return `${JSON.stringify(recipe, null, 2)}\n`;
}

/**
 * A shared recipe travels in the page address's fragment, which browsers never send to a server:
 * `#recipe=` and the base64url of the UTF-8 JSON {recipe, reward_scripts?} (the JavaScript
 * rewards' code by path, which a recipe file names but does not hold). The data never goes along.
 */
const LINK_PREFIX = '#recipe=';

function toBase64Url(bytes: Uint8Array): string {
  let bin = '';
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

function fromBase64Url(text: string): Uint8Array {
  const bin = atob(text.replace(/-/g, '+').replace(/_/g, '/'));
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

/** The page address (`pageUrl` with its fragment replaced) that opens this recipe. */
export function recipeLink(pageUrl: string, recipe: Recipe, scripts: Readonly<Record<string, string>> = {}): string {
  const payload = { recipe, ...(Object.keys(scripts).length > 0 ? { reward_scripts: scripts } : {}) };
  const url = new URL(pageUrl);
  url.hash = '';
  return `${url.toString()}${LINK_PREFIX}${toBase64Url(new TextEncoder().encode(JSON.stringify(payload)))}`;
}

/**
 * The recipe text and reward code a page address's fragment carries; null when it carries none.
 * A fragment that is not one of ours throws one sentence.
 */
export function recipeFromLink(hash: string): { text: string; scripts: Record<string, string> } | null {
  if (!hash.startsWith(LINK_PREFIX)) return null;
  let payload: unknown;
  try {
    payload = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(fromBase64Url(hash.slice(LINK_PREFIX.length))));
  } catch {
    throw new UserError('The link is cut short or damaged: its recipe cannot be read. Ask for the link again.');
  }
  const p = payload as { recipe?: unknown; reward_scripts?: unknown };
  if (typeof payload !== 'object' || payload === null || typeof p.recipe !== 'object' || p.recipe === null) {
    throw new UserError('The link holds no recipe object. Ask for the link again.');
  }
  const scripts: Record<string, string> = {};
  if (typeof p.reward_scripts === 'object' && p.reward_scripts !== null) {
    for (const [path, code] of Object.entries(p.reward_scripts)) if (typeof code === 'string') scripts[path] = code;
  }
  return { text: JSON.stringify(p.recipe), scripts };
}

/** The learning rate that applies when the field is left empty, for the input's placeholder. */
export function learningRatePlaceholder(raw: RawForm): string {
  const type = raw['peft.type'];
  const method = (METHODS as readonly string[]).includes(String(raw.method)) ? (raw.method as MethodName) : 'sft';
  return String(defaultLearningRate(type === 'full' || type === 'freeze' ? type : 'lora', method));
}

/**
 * The form with its LoRA fields set from a PEFT adapter_config.json, so that continuing to train
 * a dropped-in adapter uses the shape it was trained with (the engine refuses a mismatch).
 */
export function formWithAdapterConfig(raw: RawForm, config: Record<string, unknown>): RawForm {
  const out: RawForm = { ...raw, 'peft.type': 'lora' };
  if (typeof config.r === 'number') out['peft.r'] = String(config.r);
  if (typeof config.lora_alpha === 'number') out['peft.lora_alpha'] = String(config.lora_alpha);
  if (typeof config.lora_dropout === 'number') out['peft.lora_dropout'] = String(config.lora_dropout);
  if (typeof config.use_rslora === 'boolean') out['peft.use_rslora'] = config.use_rslora;
  const modules = config.target_modules;
  if (modules === 'all-linear') out['peft.target_modules'] = ['all-linear'];
  else if (Array.isArray(modules)) out['peft.target_modules'] = modules.map(String);
  return out;
}

/**
 * A form saved on an earlier visit, over today's defaults: fields the recipe no longer has, and
 * values of the wrong kind (a page of another version wrote them), are left out.
 */
export function restoreForm(saved: unknown, fields: Readonly<Record<string, RecipeField>> = STUDIO_FIELDS): RawForm {
  const raw = defaultForm(fields);
  if (!saved || typeof saved !== 'object' || Array.isArray(saved)) return raw;
  for (const [key, value] of Object.entries(saved as Record<string, unknown>)) {
    if (!(key in raw)) continue;
    const kind = fields[key].kind;
    const ok =
      key === REWARDS_KEY ? parseDrafts(value) !== null
      : kind === 'boolean' ? typeof value === 'boolean'
      : kind === 'modules' ? Array.isArray(value) && value.every((m) => typeof m === 'string')
      : typeof value === 'string';
    if (ok) raw[key] = value as RawValue;
  }
  return raw;
}
