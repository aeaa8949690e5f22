/**
 * The fields every method has: the model and data, the adapter (`peft`), the optimiser and its
 * schedule, the data settings, evaluation, logging and checkpoints. Their keys are TRL's config
 * names (`SFTConfig`, `DPOConfig`, … share them all through transformers' `TrainingArguments`) and
 * PEFT's `LoraConfig`.
 */
import { z } from 'zod';
import { LINEAR_MODULES } from '../model/config.ts';
import { choice, field, flag, integer, nullable, number, optional, required, text, type FieldType } from './fields.ts';

/** The training methods, by the recipe's `method`. */
export const METHODS = ['sft', 'dpo', 'kto', 'orpo', 'simpo', 'grpo'] as const;
export type MethodName = (typeof METHODS)[number];
/** The offline preference methods: rows of preferred and dispreferred completions. */
export const PREFERENCE_METHODS: readonly MethodName[] = ['dpo', 'kto', 'orpo', 'simpo'];

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

export const PeftSchema = z.strictObject({
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

/**
 * The frozen base weights' storage (transformers' `BitsAndBytesConfig`): 4-bit NF4 or FP4 blocks
 * of 64 with one absmax each (QLoRA), optionally with the absmax values themselves quantised
 * (double quantisation), or 8-bit rows. Only the decoder's projections are quantised, as
 * transformers' load_in_4bit does; embeddings, norms and the LM head stay as they are.
 */
export const QuantizationSchema = z.strictObject({
  load_in_4bit: field(flag(), false,
    'Keep the base model\'s projection weights in 4 bits (QLoRA): about a quarter of the memory of 16-bit weights, with LoRA trained on top.',
    'BitsAndBytesConfig.load_in_4bit'),
  bnb_4bit_quant_type: field(choice(['nf4', 'fp4']), 'nf4',
    'The 4-bit code: "nf4" (NormalFloat, QLoRA\'s, made for normally distributed weights) or "fp4".',
    'BitsAndBytesConfig.bnb_4bit_quant_type'),
  bnb_4bit_use_double_quant: field(flag(), false,
    'Quantise the 4-bit blocks\' scales too (8 bits each, in blocks of 256): about 0.4 bits less per weight.',
    'BitsAndBytesConfig.bnb_4bit_use_double_quant'),
  load_in_8bit: field(flag(), false,
    'Keep the base model\'s projection weights in 8 bits, one scale per row (bitsandbytes\' int8 without outlier columns).',
    'BitsAndBytesConfig.load_in_8bit'),
});

export type QuantizationConfig = z.output<typeof QuantizationSchema>;

/** The recipe's nested groups of fields, by their key. */
export const FIELD_GROUPS = { peft: PeftSchema, quantization: QuantizationSchema } as const;

/** The fields of every method, in the order a recipe lists them. */
export const SHARED_FIELDS = {
  model: required(text('a folder path or a Hugging Face Hub model id'),
    'The base model: a local folder in the Hugging Face layout or a Hub id such as "HuggingFaceTB/SmolLM2-135M-Instruct".',
    'SFTTrainer(model=…)'),
  // Each method's object (schema.ts) puts its own tag here; this definition documents the field
  // and checks a --method override.
  method: field(choice(METHODS), 'sft',
    'The training method: "sft" imitates the rows; "dpo", "orpo" and "simpo" learn from pairs of a chosen and a rejected completion; "kto" from single completions labelled desirable or not; "grpo" samples completions of each prompt and learns from reward functions.',
    'SFTTrainer, DPOTrainer, KTOTrainer, ORPOTrainer, CPOTrainer (loss_type "simpo"), GRPOTrainer'),
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
  quantization: QuantizationSchema.prefault({}),
  init_adapter: optional(text('a folder path'),
    'A PEFT adapter folder to start from instead of fresh adapters; its r, alpha and target modules must match peft.',
    'PeftModel.from_pretrained(model, init_adapter, is_trainable=True)'),
  resume_from_checkpoint: optional(checkpointPath,
    'A checkpoint of this recipe to continue from (weights, optimiser moments, schedule, data order and RNG): a checkpoint-<step> folder, an output folder (its newest complete checkpoint), or true for the newest in output_dir.',
    'SFTConfig.resume_from_checkpoint'),
  learning_rate: optional(number({ gt: 0 }),
    'Peak learning rate after warmup. Left empty: SFT 2e-4 with LoRA, 2e-5 otherwise; the preference methods, which start from a trained model, 5e-5 with LoRA and 1e-6 otherwise (DPO on full weights usually wants 5e-7 to 5e-6).',
    'SFTConfig.learning_rate / DPOConfig.learning_rate'),
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
  logging_steps: field(integer(1), 10,
    `Report loss, learning rate and gradient norm every this many optimiser steps (and at the first and last). Left unset, \`finetune train\` logs every step of a run shorter than ${SHORT_RUN_STEPS} steps.`,
    'SFTConfig.logging_steps'),
};
