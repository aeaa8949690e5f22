/**
 * The recipe as TRL and PEFT keyword arguments, so a run moves to TRL on a cluster without
 * translation: `recipeToTrlConfig` gives the keyword arguments, `trlFieldMapping` says for every
 * recipe field where it goes (a config key, the script that builds the trainer, or nowhere, with
 * why). Written against TRL 1.9.0 (`trl.experimental` holds ORPO and CPO there), transformers 5,
 * PEFT 0.19.1; `tests/fixtures/trl/config_fields.json` lists the keys those versions accept.
 */
import type { MethodName } from './shared.ts';
import type { PreferenceRecipe, Recipe } from './schema.ts';

/**
 * The TRL trainer and config class of each method, and the module both come from (SimPO is CPO
 * with loss_type "simpo"; TRL 1.x keeps ORPO and CPO under `trl.experimental`).
 */
export const TRL_CLASSES: Record<MethodName, { trainer: string; config: string; module: string }> = {
  sft: { trainer: 'SFTTrainer', config: 'SFTConfig', module: 'trl' },
  dpo: { trainer: 'DPOTrainer', config: 'DPOConfig', module: 'trl' },
  kto: { trainer: 'KTOTrainer', config: 'KTOConfig', module: 'trl' },
  orpo: { trainer: 'ORPOTrainer', config: 'ORPOConfig', module: 'trl.experimental.orpo' },
  simpo: { trainer: 'CPOTrainer', config: 'CPOConfig', module: 'trl.experimental.cpo' },
  grpo: { trainer: 'GRPOTrainer', config: 'GRPOConfig', module: 'trl' },
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
 * The recipe as TRL 1.x (with transformers ≥ 5) and PEFT keyword arguments. Fields that are not
 * config on the TRL side (model, data files, eval_split, init_adapter, system_prompt, freeze
 * layers, reward functions) belong to the script that builds the trainer; `trlFieldMapping` says
 * where each one goes.
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
    ...samplingConfig(recipe),
    // GRPOConfig has no max_length: GRPO cuts completions at max_completion_length.
    ...(recipe.method !== 'grpo' ? { max_length: recipe.max_length } : {}),
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

/** `shuffle` as each trainer's sampler takes it. */
function samplingConfig(recipe: Recipe): Record<string, unknown> {
  switch (recipe.method) {
    // GRPO samples prompts with its own repeat sampler, which reads shuffle_dataset.
    case 'grpo':
      return { shuffle_dataset: recipe.shuffle };
    // KTO's KL term pairs each row with its neighbour in a fixed-order batch, so TRL refuses any
    // sampler but "sequential"; the script shuffles the rows once instead (trlFieldMapping).
    case 'kto':
      return { train_sampling_strategy: 'sequential' };
    default:
      return { train_sampling_strategy: recipe.shuffle ? 'random' : 'sequential' };
  }
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
  return {
    beta: recipe.beta,
    // TRL's preference configs default to switching dropout off; the studio trains with
    // peft.lora_dropout in every method, so the job does too.
    disable_dropout: false,
  };
}

/**
 * Where one recipe field goes in a TRL job: a keyword of the method's config class, of
 * `peft.LoraConfig` or of `transformers.BitsAndBytesConfig`; something the job's train.py does
 * with TRL, transformers, datasets or PEFT calls (`script`, saying what); or nowhere (`none`,
 * saying why), which the job's README lists. `note` says where TRL's meaning differs.
 */
export type TrlFieldMapping =
  | { config: string; note?: string }
  | { lora: string; note?: string }
  | { bnb: string; note?: string }
  | { script: string; note?: string }
  | { none: string };

type FieldEntry = TrlFieldMapping | ((method: MethodName) => TrlFieldMapping);

const TRL_1X_NO_PROMPT_CUT = 'TRL 1.x removed the prompt cut: a sequence is cut at max_length only, keeping its start (null here does the same).';

/**
 * Every recipe field by its dotted path. A field without an entry fails `tests/unit/trl_job.test.ts`:
 * a new field needs a mapping or a reason before an export can be trusted not to drop it.
 */
const FIELD_MAP: Record<string, FieldEntry> = {
  model: { script: 'AutoModelForCausalLM.from_pretrained(model, quantization_config=…) and AutoTokenizer.from_pretrained(model)' },
  method: (m) => ({ script: `${TRL_CLASSES[m].trainer} with ${TRL_CLASSES[m].config}, from ${TRL_CLASSES[m].module}${m === 'simpo' ? ' (loss_type "simpo", cpo_alpha 0)' : ''}` }),
  train_file: { script: 'load_dataset("json", data_files=…) on the copy in data/' },
  eval_file: { script: 'load_dataset("json", data_files=…) on the copy in data/, passed as eval_dataset' },
  eval_split: {
    script: 'Dataset.train_test_split(test_size=eval_split, seed=seed)',
    note: 'datasets draws its own seeded permutation, so other rows are held out than in the studio.',
  },
  output_dir: { config: 'output_dir' },
  'peft.type': {
    script: '"lora": LoraConfig passed as the trainer\'s peft_config; "freeze": requires_grad on the last peft.layers_to_train decoder layers only; "full": every weight trains',
  },
  'peft.r': { lora: 'r' },
  'peft.lora_alpha': { lora: 'lora_alpha' },
  'peft.lora_dropout': { lora: 'lora_dropout' },
  'peft.target_modules': { lora: 'target_modules' },
  'peft.use_rslora': { lora: 'use_rslora' },
  'peft.layers_to_train': { script: 'requires_grad=True on model.model.layers[-layers_to_train:], False elsewhere' },
  'quantization.load_in_4bit': { bnb: 'load_in_4bit' },
  'quantization.bnb_4bit_quant_type': { bnb: 'bnb_4bit_quant_type' },
  'quantization.bnb_4bit_use_double_quant': { bnb: 'bnb_4bit_use_double_quant' },
  'quantization.load_in_8bit': {
    bnb: 'load_in_8bit',
    note: 'bitsandbytes\' LLM.int8() keeps outlier columns (above llm_int8_threshold 6.0) in 16 bits; the studio\'s int8 has none.',
  },
  init_adapter: { script: 'PeftModel.from_pretrained(model, "init_adapter", is_trainable=True) on the copy in init_adapter/' },
  resume_from_checkpoint: {
    config: 'resume_from_checkpoint',
    note: 'passed on to trainer.train(resume_from_checkpoint=…); it must be a checkpoint this TRL job wrote (the studio\'s checkpoints are its own format).',
  },
  learning_rate: { config: 'learning_rate' },
  num_train_epochs: { config: 'num_train_epochs' },
  max_steps: { config: 'max_steps' },
  per_device_train_batch_size: { config: 'per_device_train_batch_size' },
  per_device_eval_batch_size: { config: 'per_device_eval_batch_size' },
  gradient_accumulation_steps: { config: 'gradient_accumulation_steps' },
  gradient_checkpointing: { config: 'gradient_checkpointing' },
  lr_scheduler_type: { config: 'lr_scheduler_type' },
  warmup_steps: { config: 'warmup_steps' },
  warmup_ratio: { config: 'warmup_steps', note: 'transformers 5 reads a warmup_steps below 1 as a ratio; it is used when warmup_steps is 0.' },
  weight_decay: { config: 'weight_decay' },
  adam_beta1: { config: 'adam_beta1' },
  adam_beta2: { config: 'adam_beta2' },
  adam_epsilon: { config: 'adam_epsilon' },
  max_grad_norm: { config: 'max_grad_norm' },
  optim: { config: 'optim' },
  seed: { config: 'seed' },
  shuffle: (m) =>
    m === 'grpo'
      ? { config: 'shuffle_dataset' }
      : m === 'kto'
        ? {
          script: 'Dataset.shuffle(seed=seed) once before training, with train_sampling_strategy "sequential"',
          note: 'KTOTrainer refuses any other sampler (its KL term pairs neighbouring rows), so the rows are shuffled once rather than every epoch.',
        }
        : { config: 'train_sampling_strategy' },
  max_length: (m) =>
    m === 'grpo'
      ? { none: 'GRPO reads no max_length, in the studio or in TRL: completions are cut at max_completion_length.' }
      : { config: 'max_length', note: 'capped at the model\'s max_position_embeddings (null: that length), as the studio caps it.' },
  system_prompt: { script: 'a system message put before each conversation (or conversational prompt) that has none, with Dataset.map' },
  use_chat_template: (m) =>
    m === 'sft'
      ? { script: 'false: conversations become text, their contents joined by newlines, with Dataset.map (TRL always applies the chat template to conversations)' }
      : { none: 'TRL applies the chat template to every conversational row; the studio reads use_chat_template for SFT only, so both ignore it here.' },
  eval_steps: { config: 'eval_steps', note: 'with eval_strategy "steps" (null: "epoch").' },
  save_steps: { config: 'save_steps' },
  save_total_limit: { config: 'save_total_limit' },
  logging_steps: { config: 'logging_steps' },
  completion_only_loss: {
    config: 'completion_only_loss',
    note: 'left unset for text and whole conversations, which have no completion (TRL refuses the flag there; the studio ignores it).',
  },
  assistant_only_loss: {
    config: 'assistant_only_loss',
    note: 'kept only for conversations whose chat template TRL can mark ({% generation %}, or one TRL patches); otherwise off with a warning, as the studio trains whole conversations it cannot split.',
  },
  beta: { config: 'beta' },
  max_prompt_length: (m) =>
    ({ none: m === 'grpo' ? 'TRL 1.x\'s GRPOConfig has no prompt cut: prompts are kept whole (null here does the same).' : TRL_1X_NO_PROMPT_CUT }),
  max_completion_length: (m) =>
    m === 'grpo'
      ? { config: 'max_completion_length' }
      : {
        none: m === 'orpo' || m === 'simpo'
          ? `${TRL_CLASSES[m].config}.max_completion_length applies to encoder-decoder models only: a sequence is cut at max_length, keeping its start (null here does the same).`
          : 'TRL 1.x removed the completion cut: a sequence is cut at max_length only, keeping its start (null here does the same).',
      },
  loss_type: (m) => ({ config: 'loss_type', ...(m === 'dpo' ? { note: 'DPOConfig takes a list; a single name is read as [name].' } : {}) }),
  precompute_ref_log_probs: { config: 'precompute_ref_log_probs' },
  desirable_weight: { config: 'desirable_weight' },
  undesirable_weight: { config: 'undesirable_weight' },
  simpo_gamma: { config: 'simpo_gamma' },
  reward_funcs: {
    script: 'GRPOTrainer(reward_funcs=…): the built-ins from rewards.py (the studio\'s semantics, standard library only), JavaScript files through node and reward_bridge.mjs',
    note: 'a JavaScript file runs as plain node, not in the studio\'s sandbox: it is your own code on your own machine.',
  },
  reward_weights: { config: 'reward_weights' },
  num_generations: { config: 'num_generations' },
  temperature: { config: 'temperature' },
  top_p: { config: 'top_p' },
  top_k: { config: 'top_k' },
  epsilon: { config: 'epsilon' },
  epsilon_high: { config: 'epsilon_high', note: 'left out when null: TRL then uses epsilon, as the studio does.' },
  scale_rewards: { config: 'scale_rewards' },
  importance_sampling_level: { config: 'importance_sampling_level' },
  num_iterations: { config: 'num_iterations' },
  mask_truncated_completions: { config: 'mask_truncated_completions' },
  log_completions: {
    config: 'log_completions',
    note: 'TRL prints (or logs to a tracker) a sample of completions every logging_steps; it writes no completions.jsonl.',
  },
};

/**
 * Where a recipe field goes in a TRL job for `method`; undefined for a field that has no entry
 * (which the tests refuse) or a path that is no field.
 */
export function trlFieldMapping(path: string, method: MethodName): TrlFieldMapping | undefined {
  const entry = FIELD_MAP[path];
  return typeof entry === 'function' ? entry(method) : entry;
}
