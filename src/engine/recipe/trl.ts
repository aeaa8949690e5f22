/**
 * The recipe as TRL and PEFT keyword arguments, so a run moves to TRL on a cluster without
 * translation.
 */
import type { MethodName } from './shared.ts';
import type { PreferenceRecipe, Recipe } from './schema.ts';

/** The TRL trainer and config class of each method (SimPO is CPO with loss_type "simpo"). */
export const TRL_CLASSES: Record<MethodName, { trainer: string; config: string }> = {
  sft: { trainer: 'SFTTrainer', config: 'SFTConfig' },
  dpo: { trainer: 'DPOTrainer', config: 'DPOConfig' },
  kto: { trainer: 'KTOTrainer', config: 'KTOConfig' },
  orpo: { trainer: 'ORPOTrainer', config: 'ORPOConfig' },
  simpo: { trainer: 'CPOTrainer', config: 'CPOConfig' },
  grpo: { trainer: 'GRPOTrainer', config: 'GRPOConfig' },
};

export interface TrlConfig {
  /** The TRL trainer and config class the recipe maps to. */
  trainer: string;
  config_class: string;
  /** Keyword arguments for the config class (`trl.SFTConfig`, `trl.DPOConfig`, …). */
  config: Record<string, unknown>;
  /** Keyword arguments for `peft.LoraConfig`; null when peft.type is not "lora". */
  lora_config: Record<string, unknown> | null;
  /** Keyword arguments for `transformers.BitsAndBytesConfig`; null for an unquantised base. */
  bnb_config: Record<string, unknown> | null;
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
  const q = recipe.quantization;
  const bnb_config = q.load_in_4bit
    ? { load_in_4bit: true, bnb_4bit_quant_type: q.bnb_4bit_quant_type, bnb_4bit_use_double_quant: q.bnb_4bit_use_double_quant }
    : q.load_in_8bit ? { load_in_8bit: true } : null;
  const classes = TRL_CLASSES[recipe.method];
  return { trainer: classes.trainer, config_class: classes.config, config, lora_config, bnb_config };
}

/** The config keys only one method's TRL config has. */
function methodConfig(recipe: Recipe): Record<string, unknown> {
  switch (recipe.method) {
    case 'sft':
      return { completion_only_loss: recipe.completion_only_loss, assistant_only_loss: recipe.assistant_only_loss };
    case 'dpo':
      return { ...preferenceConfig(recipe), loss_type: recipe.loss_type, precompute_ref_log_probs: recipe.precompute_ref_log_probs };
    case 'kto':
      return { ...preferenceConfig(recipe), desirable_weight: recipe.desirable_weight, undesirable_weight: recipe.undesirable_weight };
    case 'orpo':
      return preferenceConfig(recipe);
    case 'simpo':
      return { ...preferenceConfig(recipe), loss_type: 'simpo', simpo_gamma: recipe.simpo_gamma, cpo_alpha: 0 };
    case 'grpo':
      // reward_funcs are GRPOTrainer's argument, not config: the script that builds the trainer passes them.
      return {
        num_generations: recipe.num_generations,
        temperature: recipe.temperature,
        top_p: recipe.top_p,
        // TRL 1.x's top_k is 0 to disable, as here.
        top_k: recipe.top_k,
        ...(recipe.max_prompt_length !== null ? { max_prompt_length: recipe.max_prompt_length } : {}),
        max_completion_length: recipe.max_completion_length,
        beta: recipe.beta,
        epsilon: recipe.epsilon,
        ...(recipe.epsilon_high !== null ? { epsilon_high: recipe.epsilon_high } : {}),
        loss_type: recipe.loss_type,
        scale_rewards: recipe.scale_rewards,
        importance_sampling_level: recipe.importance_sampling_level,
        num_iterations: recipe.num_iterations,
        mask_truncated_completions: recipe.mask_truncated_completions,
        log_completions: recipe.log_completions,
        ...(recipe.reward_weights !== null ? { reward_weights: recipe.reward_weights } : {}),
      };
  }
}

/** The config keys every preference method's TRL config has. */
function preferenceConfig(recipe: PreferenceRecipe): Record<string, unknown> {
  // TRL 1.x has neither prompt nor completion cut; they are written only where the recipe sets them (for TRL 0.x).
  return {
    beta: recipe.beta,
    ...(recipe.max_prompt_length !== null ? { max_prompt_length: recipe.max_prompt_length } : {}),
    ...(recipe.max_completion_length !== null ? { max_completion_length: recipe.max_completion_length } : {}),
  };
}
