/**
 * The recipe form's state, kept apart from the Svelte component so it can be tested in Node.
 * Fields, their docs, defaults and TRL names come from `RECIPE_FIELDS`; validation is the
 * engine's `parseRecipe`, whose message is shown at the field it names.
 */
import { isUserError } from '../../engine/errors.ts';
import { METHODS, RECIPE_FIELDS, defaultLearningRate, parseRecipe, parseRecipeJson, type MethodName, type Recipe, type RecipeField, type RecipeInput } from '../../engine/recipe.ts';

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

/** What a first run sets: the method, the adapter's size, how fast and how long, the batch and the length. */
const ESSENTIALS: FieldGroup = {
  id: 'essentials',
  title: 'Essentials',
  fields: ['method', 'beta', 'loss_type', 'peft.type', 'peft.r', 'peft.lora_alpha', 'peft.layers_to_train', 'learning_rate', 'num_train_epochs', 'max_steps', 'per_device_train_batch_size', 'max_length'],
  advanced: false,
};

const ADVANCED: Omit<FieldGroup, 'advanced'>[] = [
  { id: 'lora', title: 'LoRA adapter', fields: ['peft.lora_dropout', 'peft.target_modules', 'peft.use_rslora'] },
  {
    id: 'preference',
    title: 'Preference method',
    fields: ['desirable_weight', 'undesirable_weight', 'simpo_gamma', 'precompute_ref_log_probs', 'max_prompt_length', 'max_completion_length'],
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
export function formGroups(fields: Readonly<Record<string, RecipeField>> = RECIPE_FIELDS): FieldGroup[] {
  const placed = new Set(GROUPS.flatMap((g) => g.fields));
  const groups = GROUPS.map((g) => ({ ...g, fields: g.fields.filter((f) => f in fields) }));
  const rest = Object.keys(fields).filter((f) => !placed.has(f) && !PAGE_FIELDS.has(f));
  if (rest.length > 0) groups.push({ id: 'more', title: 'More', fields: rest, advanced: true });
  return groups.filter((g) => g.fields.length > 0);
}

/** Whether a section applies to the chosen method and peft.type: whether any of its fields does. */
export function groupApplies(group: FieldGroup, raw: RawForm, fields: Readonly<Record<string, RecipeField>> = RECIPE_FIELDS): boolean {
  return group.fields.some((f) => fieldApplies(f, raw, fields));
}

/**
 * Whether a field applies to the chosen method (DPO's beta to the preference methods) and
 * peft.type (LoRA's r and alpha to lora, the layer count to freeze).
 */
export function fieldApplies(path: string, raw: RawForm, fields: Readonly<Record<string, RecipeField>> = RECIPE_FIELDS): boolean {
  const methods = fields[path]?.methods;
  if (methods && !methods.includes(raw.method as MethodName)) return false;
  if (path.startsWith('peft.') && path !== 'peft.type') {
    return path === 'peft.layers_to_train' ? raw['peft.type'] === 'freeze' : raw['peft.type'] === 'lora';
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
export function defaultForm(fields: Readonly<Record<string, RecipeField>> = RECIPE_FIELDS): RawForm {
  const raw: RawForm = {};
  for (const [path, info] of Object.entries(fields)) {
    if (PAGE_FIELDS.has(path)) continue;
    raw[path] = toRaw(info, path in STUDIO_DEFAULTS ? STUDIO_DEFAULTS[path] : info.default);
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
}

/** The recipe JSON the form describes (nested `peft`), before validation. */
export function formToJson(raw: RawForm, page: PageValues, fields: Readonly<Record<string, RecipeField>> = RECIPE_FIELDS): Record<string, unknown> {
  const json: Record<string, unknown> = { model: page.model, train_file: page.train_file };
  for (const [path, value] of Object.entries(raw)) {
    const info = fields[path];
    // A field of another method (DPO's beta in an SFT recipe) stays in the form, not in the recipe.
    if (!info || (info.methods && !info.methods.includes(raw.method as MethodName))) continue;
    const v = fromRaw(info, value);
    if (v !== undefined) setPath(json, path, v);
  }
  return json;
}

export interface Validation {
  recipe: Recipe | null;
  /** The message for each field the engine rejected, without the file prefix. */
  errors: Record<string, string>;
  /** A problem not tied to one field. */
  general: string | null;
}

const SOURCE = 'recipe';

function withoutSource(message: string): string {
  return message.startsWith(`${SOURCE}: `) ? message.slice(SOURCE.length + 2) : message;
}

/**
 * Validates the form with the engine's parser. `parseRecipe` stops at the first bad field, so
 * that field is taken out and the rest checked again until the recipe passes, giving a message
 * at every bad field at once.
 */
export function validateForm(raw: RawForm, page: PageValues): Validation {
  const json = formToJson(raw, page);
  const errors: Record<string, string> = {};
  for (let round = 0; round <= Object.keys(raw).length; round++) {
    try {
      const recipe = parseRecipe(json, SOURCE);
      return { recipe: Object.keys(errors).length === 0 ? recipe : null, errors, general: null };
    } catch (e) {
      if (!isUserError(e)) throw e;
      const field = e.field;
      if (!field || field in errors || !deletePath(json, field)) return { recipe: null, errors, general: withoutSource(e.message) };
      errors[field] = withoutSource(e.message);
    }
  }
  return { recipe: null, errors, general: 'The recipe could not be checked.' };
}

/** The form for a recipe (imported, or a run's): fields it leaves out take their defaults. */
export function formFromRecipe(recipe: RecipeInput | Record<string, unknown>, fields: Readonly<Record<string, RecipeField>> = RECIPE_FIELDS): RawForm {
  const raw = defaultForm(fields);
  for (const [path, info] of Object.entries(fields)) {
    if (PAGE_FIELDS.has(path)) continue;
    const value = getPath(recipe as Record<string, unknown>, path);
    if (value !== undefined) raw[path] = toRaw(info, value);
    else if (path in STUDIO_DEFAULTS) raw[path] = toRaw(info, info.default);
  }
  return raw;
}

/**
 * Reads an imported recipe file. A syntax error or a bad field throws the engine's UserError,
 * naming the file; `model` and `train_file` may be missing since the page supplies them.
 */
export function importRecipe(text: string, file: string, page: PageValues): { form: RawForm; model: string | null } {
  const json = parseRecipeJson(text, file);
  const recipe = parseRecipe({ ...json, model: json.model ?? page.model, train_file: json.train_file ?? page.train_file }, file);
  return { form: formFromRecipe(json), model: typeof json.model === 'string' ? recipe.model : null };
}

/** The recipe as a JSON file: every field of its method with its value, so it reads the same in the CLI or in TRL. */
export function exportRecipe(recipe: Recipe): string {
  return `${JSON.stringify(recipe, null, 2)}\n`;
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
export function restoreForm(saved: unknown, fields: Readonly<Record<string, RecipeField>> = RECIPE_FIELDS): RawForm {
  const raw = defaultForm(fields);
  if (!saved || typeof saved !== 'object' || Array.isArray(saved)) return raw;
  for (const [path, value] of Object.entries(saved as Record<string, unknown>)) {
    if (!(path in raw)) continue;
    const kind = fields[path].kind;
    const ok = kind === 'boolean' ? typeof value === 'boolean' : kind === 'modules' ? Array.isArray(value) && value.every((m) => typeof m === 'string') : typeof value === 'string';
    if (ok) raw[path] = value as RawValue;
  }
  return raw;
}
