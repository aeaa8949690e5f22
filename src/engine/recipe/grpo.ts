/**
 * GRPO's own fields (TRL 1.x's `GRPOConfig`): how completions are sampled, how the reward
 * functions score them, and the clipped objective. `beta`, `loss_type`, `max_prompt_length` and
 * `max_completion_length` share their names with DPOConfig's but not their meaning or default
 * (GRPO's β is a KL penalty, 0 by default; its completions are generated, 256 tokens at most), so
 * they are defined again here; `RECIPE_FIELDS` keeps both definitions (`recipeField`).
 */
import { z } from 'zod';
import { choice, field, flag, integer, nullable, number, required, type FieldType } from './fields.ts';

/**
 * A reward function as `reward_funcs` names it: the path of a JavaScript file (its default export
 * is the function), or a built-in as an object, `{"name": "format", "pattern": "…"}`. The
 * built-ins' own options are checked when the recipe is parsed (`methodConflict`).
 */
const rewardFuncs: FieldType<z.ZodType<(string | ({ name: string } & Record<string, unknown>))[]>> = {
  schema: z.array(z.union([z.string().min(1), z.looseObject({ name: z.string().min(1) })])).min(1),
  kind: 'list',
  expect: 'a list of reward functions: paths of JavaScript files such as "rewards/letters.js", or built-ins such as {"name": "accuracy"}',
};

const rewardWeights: FieldType<z.ZodType<number[]>> = {
  schema: z.array(z.number()).min(1),
  kind: 'list',
  expect: 'a list of numbers, one per reward function',
};

export const GRPO_FIELDS = {
  reward_funcs: required(rewardFuncs,
    'The reward functions that score each completion: JavaScript files whose default export is (prompts, completions, columns) => numbers (or null where it does not apply), and built-ins written as objects: {"name": "accuracy"}, {"name": "format", "pattern": "…"}, {"name": "json"}, {"name": "length", "target": 200}.',
    'GRPOTrainer(reward_funcs=…)'),
  reward_weights: field(nullable(rewardWeights), null,
    'Weight of each reward function in the sum that makes a completion\'s reward; null weighs each 1.',
    'GRPOConfig.reward_weights'),
  num_generations: field(integer(2), 8,
    'Completions sampled per prompt; each is scored against the others of its prompt. per_device_train_batch_size counts completions, so it must be a multiple of this.',
    'GRPOConfig.num_generations'),
  temperature: field(number({ gt: 0 }), 1.0,
    'Sampling temperature of the completions; the log-probs are taken at the same temperature.',
    'GRPOConfig.temperature'),
  top_p: field(number({ gt: 0, le: 1 }), 1.0,
    'Sample only from the most likely tokens whose probabilities add up to this; 1 keeps all.',
    'GRPOConfig.top_p'),
  top_k: field(integer(0), 0,
    'Sample only from this many most likely tokens; 0 keeps all.',
    'GRPOConfig.top_k'),
  max_prompt_length: field(nullable(integer(1)), null,
    'Longest prompt in tokens; a longer one keeps its end. null (TRL 1.x, which removed the key) keeps whole prompts.',
    'GRPOConfig.max_prompt_length (TRL 0.x)'),
  max_completion_length: field(integer(1), 256,
    'Longest completion in tokens; sampling stops there for a completion that has not ended.',
    'GRPOConfig.max_completion_length'),
  beta: field(number({ ge: 0 }), 0.0,
    'Weight of the KL penalty that keeps the model near its reference (the model with the adapter off); 0 computes no reference.',
    'GRPOConfig.beta'),
  epsilon: field(number({ gt: 0, lt: 1 }), 0.2,
    'Clipping range of the probability ratio below 1 (and above it when epsilon_high is null).',
    'GRPOConfig.epsilon'),
  epsilon_high: field(nullable(number({ gt: 0 })), null,
    'Clipping range above 1; null uses epsilon (DAPO uses 0.28).',
    'GRPOConfig.epsilon_high'),
  loss_type: field(choice(['dapo', 'grpo', 'dr_grpo', 'bnpo']), 'dapo',
    'How token losses are averaged: "dapo" over all completion tokens of the step, "grpo" per completion then over completions, "bnpo" over the tokens of each micro-batch, "dr_grpo" by a constant (completions × max_completion_length).',
    'GRPOConfig.loss_type'),
  scale_rewards: field(choice(['group', 'batch', 'none']), 'group',
    'What a completion\'s advantage (its reward minus its group\'s mean) is divided by: its group\'s standard deviation, the whole batch\'s, or nothing.',
    'GRPOConfig.scale_rewards'),
  importance_sampling_level: field(choice(['token', 'sequence']), 'token',
    'The probability ratio per token, or one per completion from its mean token log-ratio (GSPO).',
    'GRPOConfig.importance_sampling_level'),
  num_iterations: field(integer(1), 1,
    'Optimiser steps taken on each batch of completions (μ); above 1 the log-probs at generation time are kept as the old ones, and each batch of prompts is sampled once for μ steps.',
    'GRPOConfig.num_iterations'),
  mask_truncated_completions: field(flag(), false,
    'Leave completions that hit max_completion_length without ending out of the loss.',
    'GRPOConfig.mask_truncated_completions'),
  log_completions: field(flag(), true,
    'Append every completion trained on, with its rewards and advantage, to output_dir/completions.jsonl (TRL defaults to false and logs a table instead).',
    'GRPOConfig.log_completions'),
};
