/**
 * The recipe: one JSON document describing a whole run. Its keys are TRL's config names
 * (`SFTConfig`, `DPOConfig`, `KTOConfig`, `ORPOConfig`, `CPOConfig` for SimPO) and PEFT's
 * `LoraConfig`, so a recipe moves to TRL on a cluster without translation (`recipeToTrlConfig`).
 * Every field is documented once, at its definition (shared.ts for every method's, sft.ts,
 * preference.ts, dpo.ts, kto.ts, orpo.ts, simpo.ts for a method's own); the UI and the CLI read
 * `RECIPE_FIELDS` instead of repeating the text.
 */
export type { FieldKind, RecipeField } from './fields.ts';
export { METHODS, PREFERENCE_METHODS, SHORT_RUN_STEPS, type MethodName, type QuantizationConfig } from './shared.ts';
export {
  RECIPE_FIELDS,
  RecipeSchema,
  defaultLearningRate,
  recipeField,
  type DpoRecipe,
  type GrpoRecipe,
  type KtoRecipe,
  type OrpoRecipe,
  type PeftType,
  type PreferenceRecipe,
  type Recipe,
  type RecipeInput,
  type RecipeOf,
  type SftRecipe,
  type SimpoRecipe,
} from './schema.ts';
export { applyOverrides, closestField, parseRecipe, parseRecipeJson, parseRecipeText } from './parse.ts';
export { TRL_CLASSES, recipeToTrlConfig, type TrlConfig } from './trl.ts';
