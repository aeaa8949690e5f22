/**
 * From a recipe to its method: the data a method trains on (the file's rows read, checked and
 * tokenised as that method's TRL trainer does) and the `Method` the Trainer runs. The one place
 * that names every method; the Trainer, the CLI and the Worker go through it.
 */
import { UserError } from '../../errors.ts';
import { parseDatasetText, type RowError } from '../../data/dataset.ts';
import { detectFormatFor, type KtoFormat, type PairFormat, type RowFormat } from '../../data/formats.ts';
import { tokenizeKto, tokenizePairs, type KtoExample, type PairExample, type PreferenceOptions } from '../../data/preference.ts';
import { tokenizeSft, type SftOptions } from '../../data/sft.ts';
import type { TextTokenizer } from '../../data/tokenizer.ts';
import type { CausalLM } from '../../model/llama.ts';
import { tokenizePrompts, type PromptExample, type PromptOptions } from '../../data/prompts.ts';
import type { GrpoRecipe, PreferenceRecipe, Recipe, SftRecipe } from '../../recipe.ts';
import type { AnyMethod } from '../method.ts';
import { dpoMethod, precomputeReferenceLogProbs, type PairReference } from './dpo.ts';
import { ktoMethod } from './kto.ts';
import { orpoMethod } from './orpo.ts';
import { simpoMethod } from './simpo.ts';
import { sftMethod } from './sft.ts';
import { grpoMethod, type CompletionRecord } from './grpo.ts';
import type { LoadedReward } from '../reward_funcs.ts';

/** A data file as a method trains on it. */
export interface MethodData {
  format: RowFormat;
  examples: unknown[];
  /** Rows left out, with why (no token left to train on, a prompt that fills max_length). */
  dropped: { line: number; reason: string }[];
  truncated: number;
  warnings: string[];
}

/** The recipe's data settings, as the SFT tokeniser takes them. */
export function sftOptions(recipe: SftRecipe): SftOptions {
  return {
    max_length: recipe.max_length,
    completion_only_loss: recipe.completion_only_loss,
    assistant_only_loss: recipe.assistant_only_loss,
    system_prompt: recipe.system_prompt,
    use_chat_template: recipe.use_chat_template,
  };
}

/** The recipe's data settings, as the preference tokeniser takes them (TRL 1.x keeps a sequence's start). */
export function preferenceOptions(recipe: PreferenceRecipe): PreferenceOptions {
  return {
    max_length: recipe.max_length,
    max_prompt_length: recipe.max_prompt_length,
    max_completion_length: recipe.max_completion_length,
    truncation_mode: 'keep_start',
    system_prompt: recipe.system_prompt,
  };
}

/** The recipe's prompt settings, as GRPO's prompt tokeniser takes them. */
export function promptOptions(recipe: GrpoRecipe): PromptOptions {
  return { max_prompt_length: recipe.max_prompt_length, system_prompt: recipe.system_prompt };
}

/**
 * Reads, checks and tokenises a data file for the recipe's method; a bad row stops here with its
 * line (and how many more there are), a file with nothing to train on with one sentence.
 */
export function prepareMethodData(text: string, file: string, tokenizer: TextTokenizer, recipe: Recipe): MethodData {
  const parsed = parseDatasetText(text, file);
  if (parsed.errors.length > 0) throw rowErrors(parsed.errors, file);
  const format = detectFormatFor(recipe.method, parsed.rows, file);
  let data: MethodData & { errors: RowError[] };
  switch (recipe.method) {
    case 'sft':
      data = tokenizeSft(parsed.rows, format as Parameters<typeof tokenizeSft>[1], tokenizer, sftOptions(recipe), file);
      break;
    case 'kto':
      data = tokenizeKto(parsed.rows, format as KtoFormat, tokenizer, preferenceOptions(recipe), file);
      break;
    case 'grpo':
      data = { format, ...tokenizePrompts(parsed.rows, tokenizer, promptOptions(recipe), file) };
      break;
    default:
      data = tokenizePairs(parsed.rows, format as PairFormat, tokenizer, preferenceOptions(recipe), file);
  }
  if (data.errors.length > 0) throw rowErrors(data.errors, file);
  if (data.examples.length === 0) {
    const first = data.dropped[0];
    if (recipe.method === 'grpo') {
      throw new UserError(`${file}: no row has a prompt to generate from (${data.dropped.length} dropped${first ? `, e.g. line ${first.line}: ${first.reason}` : ''}).`, { file });
    }
    throw new UserError(`${file}: no row has a token left to train on (${data.dropped.length} dropped${first ? `, e.g. line ${first.line}: ${first.reason}` : ''}).`, { file });
  }
  return data;
}

export function rowErrors(errors: { line: number; message: string }[], file: string): UserError {
  const more = errors.length > 1 ? ` (${errors.length - 1} more bad row${errors.length > 2 ? 's' : ''}; \`finetune data ${file}\` lists them all)` : '';
  return new UserError(`${errors[0].message}${more}`, { file, line: errors[0].line });
}


/** What an online method (GRPO) needs besides the recipe: its reward functions and where its rollouts go. */
export interface OnlineOptions {
  rewards: LoadedReward[];
  onCompletions?: (records: CompletionRecord[]) => void | Promise<void>;
  onWarning?: (message: string) => void;
}

/**
 * The method the Trainer runs, for examples from `prepareMethodData`. With DPO's
 * precompute_ref_log_probs, the reference log-probs of `examples` (train and eval) are computed
 * here, once, before any step: the adapter is off, so a resumed run computes the same values.
 * GRPO needs `online`, its loaded reward functions (`loadRewardFunctions`).
 */
export async function createMethod(recipe: Recipe, model: CausalLM, tokenizer: TextTokenizer, examples: unknown[][] = [], online?: OnlineOptions): Promise<AnyMethod> {
  const padTokenId = tokenizer.padTokenId;
  switch (recipe.method) {
    case 'sft':
      return sftMethod({ padTokenId });
    case 'dpo': {
      let precomputedRef: ((e: PairExample) => PairReference) | undefined;
      if (recipe.precompute_ref_log_probs) {
        const all = examples.flat() as PairExample[];
        const refs = await precomputeReferenceLogProbs(model, all, { padTokenId, batchSize: recipe.per_device_eval_batch_size });
        const byExample = new Map(all.map((e, i) => [e, refs[i]]));
        precomputedRef = (e) => byExample.get(e)!;
      }
      return dpoMethod({ beta: recipe.beta, loss_type: recipe.loss_type, padTokenId, precomputedRef });
    }
    case 'kto':
      return ktoMethod({ beta: recipe.beta, desirable_weight: recipe.desirable_weight, undesirable_weight: recipe.undesirable_weight, padTokenId });
    case 'orpo':
      return orpoMethod({ beta: recipe.beta, padTokenId });
    case 'simpo':
      return simpoMethod({ beta: recipe.beta, simpo_gamma: recipe.simpo_gamma, padTokenId });
    case 'grpo':
      if (!online) throw new Error('createMethod: GRPO needs its reward functions');
      return grpoMethod({
        num_generations: recipe.num_generations,
        temperature: recipe.temperature,
        top_p: recipe.top_p,
        top_k: recipe.top_k,
        max_completion_length: recipe.max_completion_length,
        beta: recipe.beta,
        epsilon: recipe.epsilon,
        epsilon_high: recipe.epsilon_high,
        loss_type: recipe.loss_type,
        scale_rewards: recipe.scale_rewards,
        importance_sampling_level: recipe.importance_sampling_level,
        num_iterations: recipe.num_iterations,
        mask_truncated_completions: recipe.mask_truncated_completions,
        reward_weights: recipe.reward_weights,
        rewards: online.rewards,
        padTokenId,
        eosTokenIds: tokenizer.eosTokenIds,
        decode: (ids) => tokenizer.decode(ids, { skip_special_tokens: true }),
        onCompletions: online.onCompletions,
        onWarning: online.onWarning,
      });
  }
}

export type { CompletionRecord, KtoExample, PairExample, PromptExample };
