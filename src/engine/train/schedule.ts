/**
 * Learning-rate schedules exactly as transformers' `get_scheduler` builds them (a LambdaLR over
 * the base rate). The rate used by optimiser step k (0-based) is base_lr · lambda(k): LambdaLR
 * sets lambda(0) at construction and the Trainer advances it after every optimiser step.
 */
import type { Recipe } from '../recipe.ts';

export type SchedulerType = Recipe['lr_scheduler_type'];

/** The multiplier of the base learning rate at optimiser step `step`. */
export function lrLambda(type: SchedulerType, step: number, numWarmupSteps: number, numTrainingSteps: number): number {
  // transformers' constant schedule takes no warmup argument, so warmup settings do nothing.
  if (type === 'constant') return 1;
  if (step < numWarmupSteps) return step / Math.max(1, numWarmupSteps);
  switch (type) {
    case 'constant_with_warmup':
      return 1;
    case 'linear':
      return Math.max(0, (numTrainingSteps - step) / Math.max(1, numTrainingSteps - numWarmupSteps));
    case 'cosine': {
      // num_cycles = 0.5: half a cosine wave, from 1 down to 0.
      const progress = (step - numWarmupSteps) / Math.max(1, numTrainingSteps - numWarmupSteps);
      return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * 0.5 * 2 * progress)));
    }
  }
}

/** TrainingArguments.get_warmup_steps: warmup_steps when above 0, else ⌈warmup_ratio · total⌉. */
export function warmupSteps(recipe: Pick<Recipe, 'warmup_steps' | 'warmup_ratio'>, totalSteps: number): number {
  return recipe.warmup_steps > 0 ? recipe.warmup_steps : Math.ceil(recipe.warmup_ratio * totalSteps);
}

/** The learning rate for optimiser step `step` (0-based) of a run of `totalSteps` steps. */
export function learningRateAt(
  recipe: Pick<Recipe, 'learning_rate' | 'lr_scheduler_type' | 'warmup_steps' | 'warmup_ratio'>,
  step: number,
  totalSteps: number,
): number {
  return recipe.learning_rate * lrLambda(recipe.lr_scheduler_type, step, warmupSteps(recipe, totalSteps), totalSteps);
}
