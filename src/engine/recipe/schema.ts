/**
 * The recipe schema: one strict object per method (the shared fields, the method's tag, the
 * method's own fields), told apart by `method`; a recipe that names no method is SFT. A parsed
 * recipe is therefore one method's recipe: an SFT recipe has no beta, and code reads a method's
 * fields after narrowing on `recipe.method`.
 */
import { z } from 'zod';
import { fieldMeta, type RecipeField } from './fields.ts';
import { FIELD_GROUPS, METHODS, PeftSchema, SHARED_FIELDS, type MethodName } from './shared.ts';
import { SFT_FIELDS } from './sft.ts';
import { DPO_FIELDS } from './dpo.ts';
import { KTO_FIELDS } from './kto.ts';
import { ORPO_FIELDS } from './orpo.ts';
import { SIMPO_FIELDS } from './simpo.ts';
import { GRPO_FIELDS } from './grpo.ts';

const sftObject = z.strictObject({ ...SHARED_FIELDS, method: z.literal('sft').default('sft'), ...SFT_FIELDS });
const dpoObject = z.strictObject({ ...SHARED_FIELDS, method: z.literal('dpo'), ...DPO_FIELDS });
const ktoObject = z.strictObject({ ...SHARED_FIELDS, method: z.literal('kto'), ...KTO_FIELDS });
const orpoObject = z.strictObject({ ...SHARED_FIELDS, method: z.literal('orpo'), ...ORPO_FIELDS });
const simpoObject = z.strictObject({ ...SHARED_FIELDS, method: z.literal('simpo'), ...SIMPO_FIELDS });
const grpoObject = z.strictObject({ ...SHARED_FIELDS, method: z.literal('grpo'), ...GRPO_FIELDS });

/** Each method's own fields, beside the shared ones. */
const METHOD_FIELDS: Record<MethodName, Record<string, z.ZodType>> = {
  sft: SFT_FIELDS,
  dpo: DPO_FIELDS,
  kto: KTO_FIELDS,
  orpo: ORPO_FIELDS,
  simpo: SIMPO_FIELDS,
  grpo: GRPO_FIELDS,
};

export type PeftType = z.output<typeof PeftSchema>['type'];

/**
 * The learning rate when the recipe sets none. SFT: 2e-4 for LoRA, 2e-5 for full weights. The
 * preference methods and GRPO start from a trained model and need far smaller steps (TRL's
 * DPOConfig and GRPOConfig default to 1e-6): 5e-5 for LoRA, 1e-6 for full weights.
 */
export function defaultLearningRate(peftType: PeftType, method: MethodName = 'sft'): number {
  if (method === 'sft') return peftType === 'lora' ? 2e-4 : 2e-5;
  return peftType === 'lora' ? 5e-5 : 1e-6;
}

export const RecipeSchema = z
  .discriminatedUnion('method', [sftObject, dpoObject, ktoObject, orpoObject, simpoObject, grpoObject])
  .transform((r) => ({ ...r, learning_rate: r.learning_rate ?? defaultLearningRate(r.peft.type, r.method) }));

/** A recipe after parsing: one method's fields, every default filled in. Narrow on `method` to read a method's own fields. */
export type Recipe = z.output<typeof RecipeSchema>;
/** A recipe as written in a file: only `model` and `train_file` are required. */
export type RecipeInput = z.input<typeof RecipeSchema>;
/** The recipe of one method (or of several: `RecipeOf<'dpo' | 'kto'>`). */
export type RecipeOf<M extends MethodName> = Extract<Recipe, { method: M }>;
export type SftRecipe = RecipeOf<'sft'>;
export type DpoRecipe = RecipeOf<'dpo'>;
export type KtoRecipe = RecipeOf<'kto'>;
export type OrpoRecipe = RecipeOf<'orpo'>;
export type SimpoRecipe = RecipeOf<'simpo'>;
export type GrpoRecipe = RecipeOf<'grpo'>;
/** The recipe of an offline preference method. */
export type PreferenceRecipe = RecipeOf<'dpo' | 'kto' | 'orpo' | 'simpo'>;

/**
 * Every recipe field by its dotted path ('learning_rate', 'peft.r'), in document order: the shared
 * fields, then the methods' own, then peft's. A field several methods have is listed once, with all
 * of them in `methods`; where methods define it differently (GRPO's `beta` is a KL weight of
 * default 0, DPO's a preference strength of default 0.1) this holds the first definition and
 * `recipeField` gives each method's own.
 */
export const RECIPE_FIELDS: Readonly<Record<string, RecipeField>> = (() => {
  const out: Record<string, RecipeField> = {};
  const add = (shape: Record<string, z.ZodType>, prefix: string) => {
    for (const [key, schema] of Object.entries(shape)) {
      const info = fieldMeta.get(schema);
      if (info) out[prefix + key] = info;
    }
  };
  add(SHARED_FIELDS, '');
  for (const method of METHODS) {
    for (const [key, schema] of Object.entries(METHOD_FIELDS[method])) {
      if (key in out) continue;
      out[key] = { ...fieldMeta.get(schema)!, methods: METHODS.filter((m) => key in METHOD_FIELDS[m]) };
    }
  }
  for (const [group, schema] of Object.entries(FIELD_GROUPS)) add(schema.shape, `${group}.`);
  return Object.freeze(out);
})();

/** A field as one method defines it (GRPO's `beta`, not DPO's); undefined where the method has no such field. */
export function recipeField(path: string, method: MethodName): RecipeField | undefined {
  const common = RECIPE_FIELDS[path];
  if (!common) return undefined;
  const own = METHOD_FIELDS[method][path];
  if (own === undefined) return common.methods && !common.methods.includes(method) ? undefined : common;
  return { ...fieldMeta.get(own)!, methods: common.methods };
}

/**
 * The schema of one field by its dotted path, for checking an override on its own: the method's
 * definition where it has one, else the first method's that has the field.
 */
export function fieldSchema(path: string, method?: MethodName): z.ZodType | undefined {
  const [head, leaf] = path.split('.');
  if (leaf !== undefined) return Object.hasOwn(FIELD_GROUPS, head) ? (FIELD_GROUPS[head as keyof typeof FIELD_GROUPS].shape as Record<string, z.ZodType>)[leaf] : undefined;
  if (head in SHARED_FIELDS) return SHARED_FIELDS[head as keyof typeof SHARED_FIELDS];
  return (method ? METHOD_FIELDS[method][head] : undefined) ?? METHODS.map((m) => METHOD_FIELDS[m][head]).find((s) => s !== undefined);
}
