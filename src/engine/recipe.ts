/**
 * The recipe: one JSON document describing a whole run. Its keys are TRL's config names
 * (`SFTConfig`, `DPOConfig`, `KTOConfig`, `ORPOConfig`, `CPOConfig` for SimPO) and PEFT's
 * `LoraConfig`, so a recipe moves to TRL on a cluster without translation (`recipeToTrlConfig`).
 * Every field is documented once, here, at its definition, with the methods it applies to; the UI
 * and the CLI read `RECIPE_FIELDS` instead of repeating the text.
 */
import { z } from 'zod';
import { LINEAR_MODULES } from './model/config.ts';
import { UserError, checkTextEncoding } from './errors.ts';

/** How a field's value is written on a command line, so an override string can be converted. */
export type FieldKind = 'string' | 'number' | 'integer' | 'boolean' | 'enum' | 'modules';

/** The training methods, by the recipe's `method`. */
export const METHODS = ['sft', 'dpo', 'kto', 'orpo', 'simpo'] as const;
export type MethodName = (typeof METHODS)[number];
/** The offline preference methods: rows of preferred and dispreferred completions. */
export const PREFERENCE_METHODS: readonly MethodName[] = ['dpo', 'kto', 'orpo', 'simpo'];

export interface RecipeField {
  /** One line for people: what the field does. */
  doc: string;
  /** The methods the field applies to; undefined for every method. */
  methods?: readonly MethodName[];
  /** The value used when the recipe leaves the field out; undefined when there is none. */
  default: unknown;
  /** Where the field lives on the TRL/PEFT side, e.g. `SFTConfig.learning_rate`. */
  trl: string;
  /** What a valid value looks like, finishing the sentence `"<field>" must be …`. */
  expect: string;
  kind: FieldKind;
  nullable: boolean;
  required: boolean;
  choices?: readonly string[];
}

type FieldMeta = Omit<RecipeField, 'default' | 'required'> & { default: unknown; required: boolean };

/** A field that applies to some methods only: setting it for another method is refused by name. */
function forMethods<S extends z.ZodType>(methods: readonly MethodName[], schema: S): S {
  const info = fieldMeta.get(schema);
  if (info) fieldMeta.add(schema, { ...info, methods });
  return schema;
}

interface FieldType<S extends z.ZodType> {
  schema: S;
  kind: FieldKind;
  expect: string;
  nullable?: boolean;
  choices?: readonly string[];
}

const fieldMeta = z.registry<FieldMeta>();

// ---- value types: the zod schema together with the words used to explain it ----

function text(expect: string, minLength = 1): FieldType<z.ZodString> {
  return { schema: z.string().min(minLength), kind: 'string', expect };
}

function integer(min: number): FieldType<z.ZodNumber> {
  return { schema: z.number().int().min(min), kind: 'integer', expect: `an integer of at least ${min}` };
}

function number(bounds: { gt?: number; ge?: number; lt?: number }): FieldType<z.ZodNumber> {
  let schema = z.number();
  const words: string[] = [];
  if (bounds.gt !== undefined) {
    schema = schema.gt(bounds.gt);
    words.push(`greater than ${bounds.gt}`);
  }
  if (bounds.ge !== undefined) {
    schema = schema.gte(bounds.ge);
    words.push(`of at least ${bounds.ge}`);
  }
  if (bounds.lt !== undefined) {
    schema = schema.lt(bounds.lt);
    words.push(`below ${bounds.lt}`);
  }
  return { schema, kind: 'number', expect: `a number ${words.join(' and ')}` };
}

function flag(): FieldType<z.ZodBoolean> {
  return { schema: z.boolean(), kind: 'boolean', expect: 'true or false' };
}

function choice<const T extends readonly [string, ...string[]]>(values: T, expect?: string): FieldType<z.ZodEnum<{ [K in T[number]]: K }>> {
  return {
    schema: z.enum(values),
    kind: 'enum',
    expect: expect ?? `one of ${values.map((v) => JSON.stringify(v)).join(', ')}`,
    choices: values,
  };
}

function nullable<S extends z.ZodType>(type: FieldType<S>): FieldType<z.ZodNullable<S>> {
  return { ...type, schema: type.schema.nullable(), expect: `${type.expect}, or null`, nullable: true };
}

// ---- fields: a default, a definition, or neither ----

function meta(type: FieldType<z.ZodType>, dflt: unknown, required: boolean, doc: string, trl: string): FieldMeta {
  const { kind, expect, nullable = false, choices } = type;
  return { doc, default: dflt, trl, expect, kind, nullable, required, choices };
}

/** A field with a default value. */
function field<S extends z.ZodType>(type: FieldType<S>, dflt: z.output<S>, doc: string, trl: string) {
  // A zod v4 default is returned as-is, so the stored value must already be the output type.
  const schema = (type.schema as unknown as z.ZodType<z.output<S>, z.input<S>>).default(dflt as never);
  fieldMeta.add(schema, meta(type, dflt, false, doc, trl));
  return schema;
}

/** A field the recipe must set. */
function required<S extends z.ZodType>(type: FieldType<S>, doc: string, trl: string): S {
  fieldMeta.add(type.schema, meta(type, undefined, true, doc, trl));
  return type.schema;
}

/** A field that may be left out, with no value standing in for it. */
function optional<S extends z.ZodType>(type: FieldType<S>, doc: string, trl: string) {
  const schema = type.schema.optional();
  fieldMeta.add(schema, meta(type, undefined, false, doc, trl));
  return schema;
}

/**
 * A run with fewer optimizer steps than this logs every step when logging_steps is left unset
 * (`RunOptions.loggingStepsSet`): TRL's default of 10 would show almost nothing of it.
 */
export const SHORT_RUN_STEPS = 50;

const LORA_TARGET_MODULES = LINEAR_MODULES;

const targetModules: FieldType<z.ZodType<'all-linear' | (typeof LORA_TARGET_MODULES)[number][]>> = {
  schema: z.union([z.literal('all-linear'), z.array(z.enum(LORA_TARGET_MODULES)).min(1)]),
  kind: 'modules',
  expect: `"all-linear" or a list of module names from ${LORA_TARGET_MODULES.join(', ')}`,
  choices: ['all-linear', ...LORA_TARGET_MODULES],
};

const stepLimit: FieldType<z.ZodNumber> = {
  schema: z.number().int().refine((n) => n === -1 || n >= 1),
  kind: 'integer',
  expect: 'a positive integer, or -1 to train for num_train_epochs',
};

// `adamw` is accepted because it is what people type; the recipe stores transformers' name.
const optimizer = choice(['adamw_torch', 'sgd'], '"adamw_torch" (or "adamw") or "sgd"');
const optimizerWithAlias: FieldType<z.ZodType<'adamw_torch' | 'sgd'>> = {
  ...optimizer,
  schema: z.preprocess((v) => (v === 'adamw' ? 'adamw_torch' : v), optimizer.schema),
};

// transformers' resume_from_checkpoint=True: the newest checkpoint in output_dir. "true" from a
// command line means the same.
const checkpointPath: FieldType<z.ZodType<string | true>> = {
  schema: z.preprocess((v) => (v === 'true' ? true : v), z.union([z.literal(true), z.string().min(1)])),
  kind: 'string',
  expect: 'a folder path (a checkpoint-<step> folder or an output folder), or true for the newest checkpoint in output_dir',
};

const PeftSchema = z.strictObject({
  type: field(choice(['lora', 'freeze', 'full']), 'lora',
    'What is trained: "lora" adds low-rank adapters and trains only them, "freeze" trains the last peft.layers_to_train decoder layers, "full" trains every weight.',
    'LoraConfig when "lora"; no PEFT config otherwise'),
  r: field(integer(1), 16,
    'LoRA rank: the inner width of each adapter; more is more capacity and more memory.',
    'LoraConfig.r'),
  lora_alpha: field(number({ gt: 0 }), 32,
    'LoRA scale numerator: adapter outputs are multiplied by lora_alpha / r (lora_alpha / sqrt(r) with use_rslora).',
    'LoraConfig.lora_alpha'),
  lora_dropout: field(number({ ge: 0, lt: 1 }), 0.05,
    'Dropout probability on the adapter input during training.',
    'LoraConfig.lora_dropout'),
  target_modules: field(targetModules, 'all-linear',
    'Which linear layers get adapters: "all-linear" for every projection in attention and MLP (never the LM head), or a list such as ["q_proj", "v_proj"].',
    'LoraConfig.target_modules'),
  use_rslora: field(flag(), false,
    'Rank-stabilised LoRA: scale by lora_alpha / sqrt(r) instead of lora_alpha / r, which keeps high ranks learning.',
    'LoraConfig.use_rslora'),
  layers_to_train: field(integer(1), 2,
    'With type "freeze": how many of the last decoder layers are trained; everything else stays frozen.',
    'none: unfreeze those layers before building SFTTrainer'),
});

const RecipeObject = z.strictObject({
  model: required(text('a folder path or a Hugging Face Hub model id'),
    'The base model: a local folder in the Hugging Face layout or a Hub id such as "HuggingFaceTB/SmolLM2-135M-Instruct".',
    'SFTTrainer(model=…)'),
  method: field(choice(METHODS), 'sft',
    'The training method: "sft" imitates the rows; "dpo", "orpo" and "simpo" learn from pairs of a chosen and a rejected completion; "kto" from single completions labelled desirable or not.',
    'SFTTrainer, DPOTrainer, KTOTrainer, ORPOTrainer, CPOTrainer (loss_type "simpo")'),
  train_file: required(text('a file path'),
    'JSONL file of training rows (messages, prompt/completion or text).',
    'SFTTrainer(train_dataset=load_dataset("json", data_files=…))'),
  eval_file: optional(text('a file path'),
    'JSONL file of evaluation rows, in the same format as train_file.',
    'SFTTrainer(eval_dataset=load_dataset("json", data_files=…))'),
  eval_split: field(number({ ge: 0, lt: 1 }), 0,
    'Fraction of train_file held out for evaluation when there is no eval_file; 0 holds out nothing.',
    'Dataset.train_test_split(test_size=…)'),
  output_dir: field(text('a folder path'), 'output',
    'Where checkpoints and the final adapter or model are written.',
    'SFTConfig.output_dir'),
  peft: PeftSchema.prefault({}),
  init_adapter: optional(text('a folder path'),
    'A PEFT adapter folder to start from instead of fresh adapters; its r, alpha and target modules must match peft.',
    'PeftModel.from_pretrained(model, init_adapter, is_trainable=True)'),
  resume_from_checkpoint: optional(checkpointPath,
    'A checkpoint of this recipe to continue from (weights, optimiser moments, schedule, data order and RNG): a checkpoint-<step> folder, an output folder (its newest complete checkpoint), or true for the newest in output_dir.',
    'SFTConfig.resume_from_checkpoint'),
  learning_rate: optional(number({ gt: 0 }),
    'Peak learning rate after warmup; 2e-4 when peft.type is "lora", 2e-5 otherwise (adapters need larger steps than full weights).',
    'SFTConfig.learning_rate'),
  num_train_epochs: field(number({ gt: 0 }), 3,
    'Passes over the training data; a fraction stops part-way through the last pass. Ignored when max_steps is set.',
    'SFTConfig.num_train_epochs'),
  max_steps: field(stepLimit, -1,
    'Total optimiser steps; -1 trains for num_train_epochs instead.',
    'SFTConfig.max_steps'),
  per_device_train_batch_size: field(integer(1), 8,
    'Rows per micro-batch (one forward and backward pass).',
    'SFTConfig.per_device_train_batch_size'),
  per_device_eval_batch_size: field(integer(1), 8,
    'Rows per evaluation batch.',
    'SFTConfig.per_device_eval_batch_size'),
  gradient_accumulation_steps: field(integer(1), 1,
    'Micro-batches per optimiser step; the effective batch is per_device_train_batch_size × this.',
    'SFTConfig.gradient_accumulation_steps'),
  gradient_checkpointing: field(flag(), true,
    'Recompute each decoder layer during the backward pass instead of keeping its activations: about a third more compute for a fraction of the activation memory, which is what lets a real model train in a browser tab.',
    'SFTConfig.gradient_checkpointing'),
  lr_scheduler_type: field(choice(['constant', 'constant_with_warmup', 'linear', 'cosine']), 'linear',
    'How the learning rate moves over the run: "linear" decays to 0, "cosine" follows a half cosine to 0, "constant_with_warmup" stays flat after warmup, "constant" stays flat and skips warmup.',
    'SFTConfig.lr_scheduler_type'),
  warmup_steps: field(integer(0), 0,
    'Optimiser steps over which the learning rate rises linearly from 0; when above 0 it wins over warmup_ratio.',
    'SFTConfig.warmup_steps'),
  warmup_ratio: field(number({ ge: 0, lt: 1 }), 0,
    'Warmup as a fraction of all optimiser steps (rounded up), used when warmup_steps is 0.',
    'SFTConfig.warmup_steps (a value below 1 is a ratio)'),
  weight_decay: field(number({ ge: 0 }), 0,
    'Decoupled weight decay: each step shrinks weights by learning_rate × weight_decay.',
    'SFTConfig.weight_decay'),
  adam_beta1: field(number({ ge: 0, lt: 1 }), 0.9,
    'AdamW decay rate of the running mean of gradients.',
    'SFTConfig.adam_beta1'),
  adam_beta2: field(number({ ge: 0, lt: 1 }), 0.999,
    'AdamW decay rate of the running mean of squared gradients.',
    'SFTConfig.adam_beta2'),
  adam_epsilon: field(number({ ge: 0 }), 1e-8,
    'AdamW term added to the denominator so tiny second moments do not blow up a step.',
    'SFTConfig.adam_epsilon'),
  max_grad_norm: field(number({ ge: 0 }), 1.0,
    'Gradients are scaled down so their global L2 norm is at most this; 0 turns clipping off.',
    'SFTConfig.max_grad_norm'),
  optim: field(optimizerWithAlias, 'adamw_torch',
    'The optimiser: "adamw_torch" (AdamW exactly as torch.optim.AdamW) or "sgd" (plain SGD, no momentum).',
    'SFTConfig.optim'),
  seed: field(integer(0), 42,
    'Seed for shuffling, dropout and adapter initialisation; the same seed repeats a run exactly.',
    'SFTConfig.seed'),
  shuffle: field(flag(), true,
    'Shuffle the training rows every epoch; false keeps file order.',
    'SFTConfig.train_sampling_strategy ("random" or "sequential")'),
  max_length: field(nullable(integer(1)), 1024,
    'Longest tokenised row; longer rows are cut at the end. null never truncates.',
    'SFTConfig.max_length'),
  completion_only_loss: field(flag(), true,
    'For prompt/completion rows, train only on the completion tokens; false also trains on the prompt.',
    'SFTConfig.completion_only_loss'),
  assistant_only_loss: field(flag(), true,
    'For conversations, train only on assistant turns where the chat template marks them (TRL defaults to false).',
    'SFTConfig.assistant_only_loss'),
  system_prompt: field(nullable(text('a string', 0)), null,
    'A system message put before every conversation that has none; null adds nothing.',
    'none: add a system message to the dataset rows'),
  use_chat_template: field(flag(), true,
    'Render conversations with the model\'s chat template; false joins the message contents with newlines as plain text (for base models without a template).',
    'none: TRL always applies the chat template to conversational rows'),
  eval_steps: field(nullable(integer(1)), null,
    'Evaluate every this many optimiser steps; null evaluates at the end of each epoch. Needs eval_file or eval_split.',
    'SFTConfig.eval_steps (with eval_strategy)'),
  save_steps: field(integer(1), 500,
    'Write a checkpoint every this many optimiser steps (and always at the end).',
    'SFTConfig.save_steps'),
  save_total_limit: field(nullable(integer(1)), null,
    'Keep at most this many checkpoints, deleting the oldest; null keeps all.',
    'SFTConfig.save_total_limit'),
  beta: forMethods(PREFERENCE_METHODS, field(number({ gt: 0 }), 0.1,
    'How strongly the preferences pull: DPO and KTO\'s β (lower stays closer to the reference model, the model with the adapter off), ORPO\'s λ on its odds-ratio term, SimPO\'s reward scale.',
    'DPOConfig.beta / KTOConfig.beta / ORPOConfig.beta / CPOConfig.beta')),
  loss_type: forMethods(['dpo'], field(choice(['sigmoid', 'ipo', 'hinge']), 'sigmoid',
    'DPO\'s loss: "sigmoid" is the original DPO, "ipo" a squared loss that does not overfit deterministic preferences, "hinge" the SLiC hinge.',
    'DPOConfig.loss_type')),
  precompute_ref_log_probs: forMethods(['dpo'], field(flag(), false,
    'Compute the reference model\'s log-probs (the adapter off) for every row once before training, instead of one extra forward pass per step.',
    'DPOConfig.precompute_ref_log_probs')),
  desirable_weight: forMethods(['kto'], field(number({ gt: 0 }), 1.0,
    'KTO: weight of the loss on desirable rows (label true); raise it when they are rarer than undesirable ones.',
    'KTOConfig.desirable_weight')),
  undesirable_weight: forMethods(['kto'], field(number({ gt: 0 }), 1.0,
    'KTO: weight of the loss on undesirable rows (label false).',
    'KTOConfig.undesirable_weight')),
  simpo_gamma: forMethods(['simpo'], field(number({ ge: 0 }), 0.5,
    'SimPO\'s target reward margin γ: the chosen completion must beat the rejected one by at least this.',
    'CPOConfig.simpo_gamma')),
  max_prompt_length: forMethods(PREFERENCE_METHODS, field(nullable(integer(1)), null,
    'Longest prompt in tokens for the preference methods; a longer one keeps its end. null (TRL 1.x, which removed the key) cuts only at max_length, keeping each sequence\'s start.',
    'DPOConfig.max_prompt_length (TRL 0.x)')),
  max_completion_length: forMethods(PREFERENCE_METHODS, field(nullable(integer(1)), null,
    'Longest completion (chosen, rejected) in tokens for the preference methods; a longer one keeps its start. null cuts only at max_length.',
    'DPOConfig.max_completion_length (TRL 0.x)')),
  logging_steps: field(integer(1), 10,
    `Report loss, learning rate and gradient norm every this many optimiser steps (and at the first and last). Left unset, \`finetune train\` logs every step of a run shorter than ${SHORT_RUN_STEPS} steps.`,
    'SFTConfig.logging_steps'),
});

/**
 * The learning rate when the recipe sets none. SFT: 2e-4 for LoRA, 2e-5 for full weights. The
 * preference methods start from a trained model and need far smaller steps (TRL's DPOConfig
 * defaults to 1e-6): 5e-5 for LoRA, 1e-6 for full weights.
 */
export function defaultLearningRate(peftType: z.output<typeof PeftSchema>['type'], method: MethodName = 'sft'): number {
  if (method === 'sft') return peftType === 'lora' ? 2e-4 : 2e-5;
  return peftType === 'lora' ? 5e-5 : 1e-6;
}

export const RecipeSchema = RecipeObject.transform((r) => ({
  ...r,
  learning_rate: r.learning_rate ?? defaultLearningRate(r.peft.type, r.method),
}));

/** A recipe after parsing: every default filled in. */
export type Recipe = z.output<typeof RecipeSchema>;
/** A recipe as written in a file: only `model` and `train_file` are required. */
export type RecipeInput = z.input<typeof RecipeSchema>;

function collectFields(shape: Record<string, z.ZodType>, prefix: string, out: Record<string, RecipeField>): void {
  for (const [key, schema] of Object.entries(shape)) {
    const info = fieldMeta.get(schema);
    if (info) out[prefix + key] = info;
  }
}

/** Every recipe field by its dotted path ('learning_rate', 'peft.r'), in document order. */
export const RECIPE_FIELDS: Readonly<Record<string, RecipeField>> = (() => {
  const out: Record<string, RecipeField> = {};
  collectFields(RecipeObject.shape, '', out);
  collectFields(PeftSchema.shape, 'peft.', out);
  return Object.freeze(out);
})();

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
  if (issue.code === 'unrecognized_keys') {
    const field = [...issue.path.map(String), issue.keys[0]].join('.');
    return { sentence: unknownFieldSentence(field, ''), field };
  }
  // Errors inside a value (one entry of target_modules) are reported against the field holding it.
  for (let n = issue.path.length; n > 0; n--) {
    const field = issue.path.slice(0, n).map(String).join('.');
    const info = RECIPE_FIELDS[field];
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
  }
  return { sentence: `the recipe must be a JSON object (got ${describe(json)}).`, field: '' };
}

/**
 * A field set for a method it does not apply to ("beta": 0.5 in an SFT recipe), or null. A value
 * equal to the field's default says nothing, so a parsed recipe (which carries every default)
 * reads back as it was.
 */
function misplacedField(json: unknown): { field: string; sentence: string } | null {
  if (!isPlainObject(json)) return null;
  const method = typeof json.method === 'string' && (METHODS as readonly string[]).includes(json.method) ? (json.method as MethodName) : 'sft';
  for (const [key, value] of Object.entries(json)) {
    const info = RECIPE_FIELDS[key];
    const methods = info?.methods;
    if (methods && !methods.includes(method) && value !== info.default) {
      const list = methods.map((m) => `"${m}"`).join(methods.length === 2 ? ' and ' : ', ');
      return { field: key, sentence: `"${key}" applies to method ${list} only, not "${method}"; remove it or set "method".` };
    }
  }
  return null;
}

/** The recipe without the fields of other methods (an SFT recipe has no beta): what files record. */
export function recipeForMethod(recipe: Recipe): Partial<Recipe> & Pick<Recipe, 'model' | 'train_file' | 'method'> {
  return Object.fromEntries(Object.entries(recipe).filter(([key]) => RECIPE_FIELDS[key]?.methods?.includes(recipe.method) ?? true)) as Recipe;
}

/** Validates a recipe and fills in its defaults; throws one UserError naming the file and the first bad field. */
export function parseRecipe(json: unknown, file: string): Recipe {
  const result = RecipeSchema.safeParse(json);
  if (result.success) {
    const misplaced = misplacedField(json);
    if (misplaced) throw new UserError(`${file}: ${misplaced.sentence}`, { file, field: misplaced.field });
    return result.data;
  }
  // An unknown key is usually a misspelt known one, which also explains a "required" error elsewhere.
  const issue = result.error.issues.find((i) => i.code === 'unrecognized_keys') ?? result.error.issues[0];
  const { sentence, field } = issueSentence(issue, json);
  throw new UserError(`${file}: ${sentence}`, { file, field: field || undefined });
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
 * an optional field without a null value (eval_file, init_adapter, learning_rate) removes it.
 * Returns a new object; the input is not changed.
 */
export function applyOverrides(
  json: Record<string, unknown>,
  overrides: Record<string, string>,
  source = 'command line',
): Record<string, unknown> {
  const out: Record<string, unknown> = { ...json };
  for (const [flag, raw] of Object.entries(overrides)) {
    const path = flag.replace(/^--/, '');
    const info = RECIPE_FIELDS[path];
    if (!info) {
      const sentence = path === 'peft'
        ? '--peft is a group of fields; set one of them, such as --peft.r.'
        : unknownFieldSentence(path, '--');
      throw new UserError(`${source}: ${sentence}`, { file: source, field: path });
    }
    const unset = raw === 'null' && !info.required && !info.nullable && info.default === undefined;
    const value = convertOverride(info, raw);
    if (!unset && !fieldSchema(path).safeParse(value).success) {
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
  }
  return out;
}

function fieldSchema(path: string): z.ZodType {
  const [head, leaf] = path.split('.');
  return leaf === undefined ? RecipeObject.shape[head as keyof typeof RecipeObject.shape] : PeftSchema.shape[leaf as keyof typeof PeftSchema.shape];
}

/** The TRL trainer and config class of each method (SimPO is CPO with loss_type "simpo"). */
export const TRL_CLASSES: Record<MethodName, { trainer: string; config: string }> = {
  sft: { trainer: 'SFTTrainer', config: 'SFTConfig' },
  dpo: { trainer: 'DPOTrainer', config: 'DPOConfig' },
  kto: { trainer: 'KTOTrainer', config: 'KTOConfig' },
  orpo: { trainer: 'ORPOTrainer', config: 'ORPOConfig' },
  simpo: { trainer: 'CPOTrainer', config: 'CPOConfig' },
};

export interface TrlConfig {
  /** The TRL trainer and config class the recipe maps to. */
  trainer: string;
  config_class: string;
  /** Keyword arguments for the config class (`trl.SFTConfig`, `trl.DPOConfig`, …). */
  config: Record<string, unknown>;
  /** Keyword arguments for `peft.LoraConfig`; null when peft.type is not "lora". */
  lora_config: Record<string, unknown> | null;
}

/**
 * The recipe as TRL (with transformers ≥ 5) and PEFT keyword arguments. Fields that are not
 * config on the TRL side (model, data files, eval_split, init_adapter, system_prompt, freeze
 * layers) belong to the script that builds the SFTTrainer; RECIPE_FIELDS[…].trl says where.
 */
export function recipeToTrlConfig(recipe: Recipe): TrlConfig {
  const hasEval = recipe.eval_file !== undefined || recipe.eval_split > 0;
  const config: Record<string, unknown> = {
    output_dir: recipe.output_dir,
    learning_rate: recipe.learning_rate,
    num_train_epochs: recipe.num_train_epochs,
    max_steps: recipe.max_steps,
    per_device_train_batch_size: recipe.per_device_train_batch_size,
    per_device_eval_batch_size: recipe.per_device_eval_batch_size,
    gradient_accumulation_steps: recipe.gradient_accumulation_steps,
    gradient_checkpointing: recipe.gradient_checkpointing,
    lr_scheduler_type: recipe.lr_scheduler_type,
    // transformers 5 folded warmup_ratio into warmup_steps: a value below 1 is a ratio.
    warmup_steps: recipe.warmup_steps > 0 ? recipe.warmup_steps : recipe.warmup_ratio,
    weight_decay: recipe.weight_decay,
    adam_beta1: recipe.adam_beta1,
    adam_beta2: recipe.adam_beta2,
    adam_epsilon: recipe.adam_epsilon,
    max_grad_norm: recipe.max_grad_norm,
    optim: recipe.optim,
    seed: recipe.seed,
    train_sampling_strategy: recipe.shuffle ? 'random' : 'sequential',
    max_length: recipe.max_length,
    ...methodConfig(recipe),
    eval_strategy: !hasEval ? 'no' : recipe.eval_steps === null ? 'epoch' : 'steps',
    ...(hasEval && recipe.eval_steps !== null ? { eval_steps: recipe.eval_steps } : {}),
    save_strategy: 'steps',
    save_steps: recipe.save_steps,
    save_total_limit: recipe.save_total_limit,
    logging_steps: recipe.logging_steps,
    ...(recipe.resume_from_checkpoint !== undefined ? { resume_from_checkpoint: recipe.resume_from_checkpoint } : {}),
  };
  const { peft } = recipe;
  const lora_config = peft.type !== 'lora' ? null : {
    r: peft.r,
    lora_alpha: peft.lora_alpha,
    lora_dropout: peft.lora_dropout,
    target_modules: peft.target_modules,
    use_rslora: peft.use_rslora,
    bias: 'none',
    task_type: 'CAUSAL_LM',
  };
  const classes = TRL_CLASSES[recipe.method];
  return { trainer: classes.trainer, config_class: classes.config, config, lora_config };
}

/** The config keys only one method's TRL config has. */
function methodConfig(recipe: Recipe): Record<string, unknown> {
  // TRL 1.x has neither prompt nor completion cut; they are written only where the recipe sets them (for TRL 0.x).
  const preference = {
    beta: recipe.beta,
    ...(recipe.max_prompt_length !== null ? { max_prompt_length: recipe.max_prompt_length } : {}),
    ...(recipe.max_completion_length !== null ? { max_completion_length: recipe.max_completion_length } : {}),
  };
  switch (recipe.method) {
    case 'sft':
      return { completion_only_loss: recipe.completion_only_loss, assistant_only_loss: recipe.assistant_only_loss };
    case 'dpo':
      return { ...preference, loss_type: recipe.loss_type, precompute_ref_log_probs: recipe.precompute_ref_log_probs };
    case 'kto':
      return { ...preference, desirable_weight: recipe.desirable_weight, undesirable_weight: recipe.undesirable_weight };
    case 'orpo':
      return preference;
    case 'simpo':
      return { ...preference, loss_type: 'simpo', simpo_gamma: recipe.simpo_gamma, cpo_alpha: 0 };
  }
}
