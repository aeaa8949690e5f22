import { describe, expect, expectTypeOf, it } from 'vitest';
import { userErrorFrom } from './helpers/errors.ts';
import { UserError } from '../../src/engine/errors.ts';
import {
  METHODS,
  RECIPE_FIELDS,
  applyOverrides,
  closestField,
  parseRecipe,
  parseRecipeText,
  recipeField,
  recipeToTrlConfig,
  type MethodName,
  type Recipe,
} from '../../src/engine/recipe.ts';

const FILE = 'recipe.json';
const MINIMAL = { model: 'HuggingFaceTB/SmolLM2-135M', train_file: 'train.jsonl' };


/** The message for one bad recipe, checked to be a single sentence that names the file. */
function message(json: unknown): { message: string; field: string | undefined } {
  const e = userErrorFrom(() => parseRecipe(json, FILE));
  expect(e.message.startsWith(`${FILE}: `) || e.message.startsWith(`${FILE} `)).toBe(true);
  expect(e.message.endsWith('.')).toBe(true);
  expect(e.message).not.toContain('\n');
  expect(e.file).toBe(FILE);
  return { message: e.message, field: e.field };
}

describe('parseRecipe defaults', () => {
  it('fills every default the TRL/transformers way', () => {
    const r = parseRecipe(MINIMAL, FILE);
    expect(r).toEqual({
      model: 'HuggingFaceTB/SmolLM2-135M',
      method: 'sft',
      train_file: 'train.jsonl',
      eval_split: 0,
      output_dir: 'output',
      peft: { type: 'lora', r: 16, lora_alpha: 32, lora_dropout: 0.05, target_modules: 'all-linear', use_rslora: false, layers_to_train: 2 },
      quantization: { load_in_4bit: false, bnb_4bit_quant_type: 'nf4', bnb_4bit_use_double_quant: false, load_in_8bit: false },
      learning_rate: 2e-4,
      num_train_epochs: 3,
      max_steps: -1,
      per_device_train_batch_size: 8,
      per_device_eval_batch_size: 8,
      gradient_accumulation_steps: 1,
      gradient_checkpointing: true,
      lr_scheduler_type: 'linear',
      warmup_steps: 0,
      warmup_ratio: 0,
      weight_decay: 0,
      adam_beta1: 0.9,
      adam_beta2: 0.999,
      adam_epsilon: 1e-8,
      max_grad_norm: 1,
      optim: 'adamw_torch',
      seed: 42,
      shuffle: true,
      max_length: 1024,
      completion_only_loss: true,
      assistant_only_loss: true,
      system_prompt: null,
      use_chat_template: true,
      eval_steps: null,
      save_steps: 500,
      save_total_limit: null,
      logging_steps: 10,
    });
    expect('eval_file' in r).toBe(false);
    expect('init_adapter' in r).toBe(false);
  });

  it('defaults the learning rate by peft.type, and keeps an explicit one', () => {
    expect(parseRecipe({ ...MINIMAL, peft: { type: 'lora' } }, FILE).learning_rate).toBe(2e-4);
    expect(parseRecipe({ ...MINIMAL, peft: { type: 'freeze' } }, FILE).learning_rate).toBe(2e-5);
    expect(parseRecipe({ ...MINIMAL, peft: { type: 'full' } }, FILE).learning_rate).toBe(2e-5);
    expect(parseRecipe({ ...MINIMAL, peft: { type: 'full' }, learning_rate: 1e-3 }, FILE).learning_rate).toBe(1e-3);
  });

  it('keeps nested defaults when peft sets only some fields', () => {
    const r = parseRecipe({ ...MINIMAL, peft: { r: 8, target_modules: ['q_proj', 'v_proj'] } }, FILE);
    expect(r.peft).toEqual({ type: 'lora', r: 8, lora_alpha: 32, lora_dropout: 0.05, target_modules: ['q_proj', 'v_proj'], use_rslora: false, layers_to_train: 2 });
  });

  it('accepts "adamw" as an alias of "adamw_torch"', () => {
    expect(parseRecipe({ ...MINIMAL, optim: 'adamw' }, FILE).optim).toBe('adamw_torch');
    expect(parseRecipe({ ...MINIMAL, optim: 'sgd' }, FILE).optim).toBe('sgd');
  });

  it('accepts null where a field allows it', () => {
    const r = parseRecipe({ ...MINIMAL, max_length: null, eval_steps: 50, save_total_limit: 2, system_prompt: 'Be brief.' }, FILE);
    expect(r.max_length).toBeNull();
    expect(r.eval_steps).toBe(50);
    expect(r.save_total_limit).toBe(2);
    expect(r.system_prompt).toBe('Be brief.');
  });
});

describe('parseRecipe errors: one sentence naming the file and the field', () => {
  const cases: [string, unknown, string, string][] = [
    ['integer too small', { ...MINIMAL, peft: { r: 0 } }, 'peft.r', 'recipe.json: "peft.r" must be an integer of at least 1 (got 0).'],
    ['not an integer', { ...MINIMAL, per_device_train_batch_size: 2.5 }, 'per_device_train_batch_size', 'recipe.json: "per_device_train_batch_size" must be an integer of at least 1 (got 2.5).'],
    ['string for a number', { ...MINIMAL, learning_rate: '2e-4' }, 'learning_rate', 'recipe.json: "learning_rate" must be a number greater than 0 (got "2e-4").'],
    ['zero learning rate', { ...MINIMAL, learning_rate: 0 }, 'learning_rate', 'recipe.json: "learning_rate" must be a number greater than 0 (got 0).'],
    ['ratio out of range', { ...MINIMAL, eval_split: 1 }, 'eval_split', 'recipe.json: "eval_split" must be a number of at least 0 and below 1 (got 1).'],
    ['dropout negative', { ...MINIMAL, peft: { lora_dropout: -0.1 } }, 'peft.lora_dropout', 'recipe.json: "peft.lora_dropout" must be a number of at least 0 and below 1 (got -0.1).'],
    ['max_steps 0', { ...MINIMAL, max_steps: 0 }, 'max_steps', 'recipe.json: "max_steps" must be a positive integer, or -1 to train for num_train_epochs (got 0).'],
    ['boolean as string', { ...MINIMAL, shuffle: 'yes' }, 'shuffle', 'recipe.json: "shuffle" must be true or false (got "yes").'],
    ['unknown enum', { ...MINIMAL, lr_scheduler_type: 'cosine_with_restarts' }, 'lr_scheduler_type', 'recipe.json: "lr_scheduler_type" must be one of "constant", "constant_with_warmup", "linear", "cosine" (got "cosine_with_restarts").'],
    ['null where not allowed', { ...MINIMAL, save_steps: null }, 'save_steps', 'recipe.json: "save_steps" must be an integer of at least 1 (got null).'],
    ['nullable integer', { ...MINIMAL, max_length: 0 }, 'max_length', 'recipe.json: "max_length" must be an integer of at least 1, or null (got 0).'],
    ['bad module', { ...MINIMAL, peft: { target_modules: ['q_proj', 'qkv_proj'] } }, 'peft.target_modules', 'recipe.json: "peft.target_modules" must be "all-linear" or a list of module names from q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj (got ["q_proj","qkv_proj"]).'],
    ['peft not an object', { ...MINIMAL, peft: 'lora' }, 'peft', 'recipe.json: "peft" must be an object such as {"type": "lora", "r": 16} (got "lora").'],
    ['missing model', { train_file: 'train.jsonl' }, 'model', 'recipe.json: "model" is required; set it to a folder path or a Hugging Face Hub model id.'],
    ['empty train_file', { model: 'm', train_file: '' }, 'train_file', 'recipe.json: "train_file" must be a file path (got "").'],
    ['unknown method', { ...MINIMAL, method: 'ppo' }, 'method', 'recipe.json: "method" must be one of "sft", "dpo", "kto", "orpo", "simpo", "grpo" (got "ppo").'],
    ['a DPO field in an SFT recipe', { ...MINIMAL, beta: 0.5 }, 'beta', 'recipe.json: "beta" applies to method "dpo", "kto", "orpo", "simpo", "grpo" only, not "sft"; remove it or set "method".'],
    ['a KTO field in a DPO recipe', { ...MINIMAL, method: 'dpo', desirable_weight: 2 }, 'desirable_weight', 'recipe.json: "desirable_weight" applies to method "kto" only, not "dpo"; remove it or set "method".'],
    ['a DPO loss_type that is not DPO\'s', { ...MINIMAL, method: 'dpo', loss_type: 'simpo' }, 'loss_type', 'recipe.json: "loss_type" must be one of "sigmoid", "ipo", "hinge" (got "simpo").'],
    ['bad optim', { ...MINIMAL, optim: 'adafactor' }, 'optim', 'recipe.json: "optim" must be "adamw_torch" (or "adamw") or "sgd" (got "adafactor").'],
  ];
  for (const [name, json, field, expected] of cases) {
    it(name, () => {
      expect(message(json)).toEqual({ message: expected, field });
    });
  }

  it('rejects something that is not an object', () => {
    expect(message(['model']).message).toBe('recipe.json: the recipe must be a JSON object (got ["model"]).');
    expect(message(null).message).toBe('recipe.json: the recipe must be a JSON object (got null).');
  });

  it('names an unknown key and suggests the closest known one', () => {
    expect(message({ ...MINIMAL, learning_rte: 1e-4 })).toEqual({
      message: 'recipe.json: "learning_rte" is not a recipe field (did you mean "learning_rate"?).',
      field: 'learning_rte',
    });
    expect(message({ ...MINIMAL, peft: { rr: 8 } }).message).toBe('recipe.json: "peft.rr" is not a recipe field (did you mean "peft.r"?).');
    expect(message({ ...MINIMAL, lora_alpha: 16 }).message).toBe('recipe.json: "lora_alpha" is not a recipe field (did you mean "peft.lora_alpha"?).');
    expect(message({ ...MINIMAL, lr: 1e-4 }).message).toBe('recipe.json: "lr" is not a recipe field (did you mean "learning_rate"?).');
    expect(message({ ...MINIMAL, packing: true }).message).toBe('recipe.json: "packing" is not a recipe field.');
  });

  it('reports a misspelt key before the required field it leaves missing', () => {
    expect(message({ modle: 'm', train_file: 't.jsonl' }).message).toBe('recipe.json: "modle" is not a recipe field (did you mean "model"?).');
  });

  it('finds close names', () => {
    expect(closestField('warmup_ration')).toBe('warmup_ratio');
    expect(closestField('model_name_or_path')).toBe('model');
    expect(closestField('peft.lora_aplha')).toBe('peft.lora_alpha');
    expect(closestField('completely_different')).toBeUndefined();
  });
});

describe('parseRecipeText', () => {
  it('parses JSON text', () => {
    expect(parseRecipeText(JSON.stringify(MINIMAL), FILE).model).toBe(MINIMAL.model);
  });

  it('names the file and line of a JSON syntax error', () => {
    const e = userErrorFrom(() => parseRecipeText('{\n  "model": "m",\n  "train_file": "t.jsonl",,\n}', FILE));
    expect(e.message).toMatch(/^recipe\.json is not valid JSON( at line 3, column \d+)?: .+\.$/);
    expect(e.message).not.toContain('\n');
    expect(e.file).toBe(FILE);
  });

  it('checks the parsed document like parseRecipe', () => {
    expect(userErrorFrom(() => parseRecipeText('{"train_file": "t.jsonl"}', 'my.json')).message).toBe(
      'my.json: "model" is required; set it to a folder path or a Hugging Face Hub model id.',
    );
  });
});

describe('applyOverrides', () => {
  it('converts strings to each field type and sets dotted paths', () => {
    const json = { ...MINIMAL, peft: { type: 'lora', lora_alpha: 64 }, eval_file: 'eval.jsonl' };
    const out = applyOverrides(json, {
      'peft.r': '8',
      shuffle: 'false',
      max_length: 'null',
      'peft.target_modules': 'q_proj,v_proj',
      learning_rate: '1e-3',
      lr_scheduler_type: 'cosine',
      'peft.use_rslora': 'true',
      system_prompt: 'You are terse.',
      eval_file: 'null',
    });
    expect(out).toEqual({
      ...MINIMAL,
      peft: { type: 'lora', lora_alpha: 64, r: 8, target_modules: ['q_proj', 'v_proj'], use_rslora: true },
      shuffle: false,
      max_length: null,
      learning_rate: 1e-3,
      lr_scheduler_type: 'cosine',
      system_prompt: 'You are terse.',
    });
    // The input is left as it was.
    expect(json.peft).toEqual({ type: 'lora', lora_alpha: 64 });
    expect(json.eval_file).toBe('eval.jsonl');
    const r = parseRecipe(out, FILE);
    expect(r.peft.r).toBe(8);
    expect(r.peft.target_modules).toEqual(['q_proj', 'v_proj']);
    expect(r.max_length).toBeNull();
  });

  it('sets a method\'s field for that method and refuses it for another, in the same sentence as a file', () => {
    const dpo = applyOverrides({ ...MINIMAL, method: 'dpo' }, { '--beta': '0.2' });
    expect(dpo).toEqual({ ...MINIMAL, method: 'dpo', beta: 0.2 });
    expect(parseRecipe(dpo, FILE)).toMatchObject({ method: 'dpo', beta: 0.2 });
    // The method may come after the field it allows.
    expect(applyOverrides(MINIMAL, { beta: '0.2', method: 'orpo' })).toEqual({ ...MINIMAL, beta: 0.2, method: 'orpo' });
    const e = userErrorFrom(() => applyOverrides(MINIMAL, { '--beta': '0.2' }));
    expect(e.message).toBe('command line: "beta" applies to method "dpo", "kto", "orpo", "simpo", "grpo" only, not "sft"; remove it or set "method".');
    expect(e.field).toBe('beta');
    expect(userErrorFrom(() => applyOverrides({ ...MINIMAL, method: 'dpo' }, { simpo_gamma: '1' }, 'URL')).message).toBe(
      'URL: "simpo_gamma" applies to method "simpo" only, not "dpo"; remove it or set "method".',
    );
    // Changing the method away from a file's field is caught where the file is parsed.
    const switched = applyOverrides({ ...MINIMAL, method: 'dpo', beta: 0.2 }, { method: 'sft' });
    expect(message(switched).message).toBe('recipe.json: "beta" applies to method "dpo", "kto", "orpo", "simpo", "grpo" only, not "sft"; remove it or set "method".');
  });

  it('accepts flags written with their dashes and "all-linear"', () => {
    expect(applyOverrides({}, { '--peft.r': '4', '--peft.target_modules': 'all-linear' })).toEqual({ peft: { r: 4, target_modules: 'all-linear' } });
  });

  it('rejects an unknown field with a suggestion', () => {
    const e = userErrorFrom(() => applyOverrides(MINIMAL, { learning_rte: '1e-4' }));
    expect(e.message).toBe('command line: --learning_rte is not a recipe field (did you mean --learning_rate?).');
    expect(e.field).toBe('learning_rte');
    expect(userErrorFrom(() => applyOverrides(MINIMAL, { 'peft.r': '8', bogus_field_name: '1' }, 'URL')).message).toBe(
      'URL: --bogus_field_name is not a recipe field.',
    );
    expect(userErrorFrom(() => applyOverrides(MINIMAL, { peft: 'lora' })).message).toBe(
      'command line: --peft is a group of fields; set one of them, such as --peft.r.',
    );
  });

  it('rejects a value that does not convert or fit, naming the flag', () => {
    expect(userErrorFrom(() => applyOverrides(MINIMAL, { 'peft.r': 'eight' })).message).toBe(
      'command line: --peft.r must be an integer of at least 1 (got "eight").',
    );
    expect(userErrorFrom(() => applyOverrides(MINIMAL, { 'peft.r': '0' })).message).toBe('command line: --peft.r must be an integer of at least 1 (got "0").');
    expect(userErrorFrom(() => applyOverrides(MINIMAL, { shuffle: 'yes' })).message).toBe('command line: --shuffle must be true or false (got "yes").');
    expect(userErrorFrom(() => applyOverrides(MINIMAL, { save_steps: 'null' })).message).toBe('command line: --save_steps must be an integer of at least 1 (got "null").');
    expect(userErrorFrom(() => applyOverrides(MINIMAL, { method: 'ppo' })).message).toBe(
      'command line: --method must be one of "sft", "dpo", "kto", "orpo", "simpo", "grpo" (got "ppo").',
    );
    expect(userErrorFrom(() => applyOverrides(MINIMAL, { 'peft.target_modules': 'q_proj,lm_head' })).message).toContain('--peft.target_modules must be "all-linear"');
  });
});

describe('RECIPE_FIELDS', () => {
  it('documents every field once with its default and TRL name', () => {
    const paths = Object.keys(RECIPE_FIELDS);
    expect(paths).toContain('learning_rate');
    expect(paths).toContain('peft.r');
    expect(paths).not.toContain('peft');
    expect(paths.length).toBe(67);
    expect(RECIPE_FIELDS.beta).toMatchObject({ default: 0.1, methods: ['dpo', 'kto', 'orpo', 'simpo', 'grpo'] });
    // GRPO defines beta again: a KL weight of default 0.
    expect(recipeField('beta', 'grpo')).toMatchObject({ default: 0, trl: 'GRPOConfig.beta', methods: ['dpo', 'kto', 'orpo', 'simpo', 'grpo'] });
    expect(recipeField('beta', 'dpo')).toMatchObject({ default: 0.1 });
    expect(recipeField('beta', 'sft')).toBeUndefined();
    expect(recipeField('learning_rate', 'grpo')).toBe(RECIPE_FIELDS.learning_rate);
    expect(RECIPE_FIELDS.simpo_gamma).toMatchObject({ default: 0.5, methods: ['simpo'], trl: 'CPOConfig.simpo_gamma' });
    expect(RECIPE_FIELDS.completion_only_loss).toMatchObject({ default: true, methods: ['sft'] });
    expect(RECIPE_FIELDS.learning_rate.methods).toBeUndefined();
    for (const [path, f] of Object.entries(RECIPE_FIELDS)) {
      expect(f.doc.length, path).toBeGreaterThan(10);
      expect(f.trl.length, path).toBeGreaterThan(0);
    }
    const docs = Object.values(RECIPE_FIELDS).map((f) => f.doc);
    expect(new Set(docs).size).toBe(docs.length);
    expect(RECIPE_FIELDS['peft.r']).toMatchObject({ default: 16, trl: 'LoraConfig.r', kind: 'integer', required: false });
    expect(RECIPE_FIELDS['model']).toMatchObject({ default: undefined, required: true });
    expect(RECIPE_FIELDS['lr_scheduler_type'].choices).toEqual(['constant', 'constant_with_warmup', 'linear', 'cosine']);
    expect(RECIPE_FIELDS['max_length']).toMatchObject({ default: 1024, nullable: true });
  });

  it('has defaults that agree with parsing', () => {
    for (const [path, f] of Object.entries(RECIPE_FIELDS)) {
      if (f.default === undefined) continue;
      const method = f.methods?.[0] ?? 'sft';
      const r = parseRecipe({ ...MINIMAL, method, ...(method === 'grpo' ? GRPO_MINIMAL : {}) }, FILE) as unknown as Record<string, unknown>;
      const [head, leaf] = path.split('.');
      const value = leaf ? (r[head] as Record<string, unknown>)[leaf] : r[head];
      expect(value, path).toEqual(f.default);
    }
  });
});

const GRPO_MINIMAL = { method: 'grpo', reward_funcs: [{ name: 'length', target: 100 }] };

describe('quantization (BitsAndBytesConfig)', () => {
  it('takes BitsAndBytesConfig\'s names, maps onto its keyword arguments, and refuses what cannot train', () => {
    const q = parseRecipe({ ...MINIMAL, quantization: { load_in_4bit: true, bnb_4bit_use_double_quant: true } }, FILE);
    expect(q.quantization).toEqual({ load_in_4bit: true, bnb_4bit_quant_type: 'nf4', bnb_4bit_use_double_quant: true, load_in_8bit: false });
    expect(recipeToTrlConfig(q).bnb_config).toEqual({ load_in_4bit: true, bnb_4bit_quant_type: 'nf4', bnb_4bit_use_double_quant: true });
    expect(recipeToTrlConfig(parseRecipe({ ...MINIMAL, quantization: { load_in_8bit: true } }, FILE)).bnb_config).toEqual({ load_in_8bit: true });
    expect(parseRecipe(applyOverrides({ ...MINIMAL }, { '--quantization.load_in_4bit': 'true', '--quantization.bnb_4bit_quant_type': 'fp4' }), FILE).quantization).toMatchObject({ load_in_4bit: true, bnb_4bit_quant_type: 'fp4' });
    expect(() => parseRecipe({ ...MINIMAL, quantization: { load_in_4bit: true, load_in_8bit: true } }, FILE)).toThrow('recipe.json: "quantization" asks for both load_in_4bit and load_in_8bit; choose one.');
    expect(() => parseRecipe({ ...MINIMAL, quantization: { load_in_4bit: true }, peft: { type: 'full' } }, FILE)).toThrow('only a LoRA adapter can train on it; use peft.type "lora" (got "full")');
    expect(() => parseRecipe({ ...MINIMAL, quantization: { bnb_4bit_quant_type: 'int4' } }, FILE)).toThrow('"quantization.bnb_4bit_quant_type" must be one of "nf4", "fp4" (got "int4")');
    expect(() => parseRecipe({ ...MINIMAL, quantization: true }, FILE)).toThrow('"quantization" must be an object such as {"load_in_4bit": true} (got true)');
    expect(() => applyOverrides({ ...MINIMAL }, { '--quantization': 'true' })).toThrow('--quantization is a group of fields');
  });
});

describe('GRPO', () => {
  it('takes GRPOConfig\'s names and defaults, its own beta and max_completion_length, and reads back', () => {
    const r = parseRecipe({ ...MINIMAL, ...GRPO_MINIMAL }, FILE);
    expect(r).toMatchObject({
      method: 'grpo', num_generations: 8, temperature: 1, top_p: 1, top_k: 0, max_completion_length: 256, max_prompt_length: null,
      beta: 0, epsilon: 0.2, epsilon_high: null, loss_type: 'dapo', scale_rewards: 'group', importance_sampling_level: 'token',
      num_iterations: 1, mask_truncated_completions: false, log_completions: true, reward_weights: null, learning_rate: 5e-5,
      per_device_train_batch_size: 8,
    });
    expect(parseRecipe(JSON.parse(JSON.stringify(r)), FILE)).toEqual(r);
    expect(recipeToTrlConfig(r)).toMatchObject({ trainer: 'GRPOTrainer', config_class: 'GRPOConfig', config: { num_generations: 8, beta: 0, loss_type: 'dapo' } });
  });

  it.each([
    [{ reward_funcs: [] }, '"reward_funcs" must be a list of reward functions'],
    [{ reward_funcs: undefined }, '"reward_funcs" is required'],
    [{ per_device_train_batch_size: 6, num_generations: 4 }, 'must be a multiple of 4 (got 6)'],
    [{ reward_weights: [1, 2] }, '"reward_weights" has 2 weights for 1 reward function'],
    [{ beta: 0.04, peft: { type: 'full' } }, 'GRPO with "beta" 0.04 compares the model with its reference'],
    [{ beta: -1 }, '"beta" must be a number of at least 0'],
    [{ loss_type: 'sigmoid' }, '"loss_type" must be one of "dapo", "grpo", "dr_grpo", "bnpo"'],
    [{ eval_split: 0.1 }, 'GRPO has no evaluation loss here yet'],
    [{ reward_funcs: [{ name: 'length' }] }, 'reward_funcs: the "length" reward\'s option "target"'],
    [{ reward_funcs: [{ name: 'levenshtein' }] }, 'reward_funcs: "levenshtein" is not a built-in reward'],
  ])('refuses %j with one sentence', (change, words) => {
    expect(() => parseRecipe({ ...MINIMAL, ...GRPO_MINIMAL, ...change }, FILE)).toThrow(words);
  });

  it('reads GRPO\'s fields from a command line, as GRPO defines them', () => {
    const json = applyOverrides({ ...MINIMAL, method: 'grpo' }, { '--reward_funcs': 'rewards/a.js,rewards/b.js', '--reward_weights': '1,0.5', '--beta': '0', '--num_generations': '4', '--per_device_train_batch_size': '8' });
    expect(parseRecipe(json, FILE)).toMatchObject({ reward_funcs: ['rewards/a.js', 'rewards/b.js'], reward_weights: [1, 0.5], beta: 0, num_generations: 4 });
    const builtins = applyOverrides({ ...MINIMAL }, { '--method': 'grpo', '--reward_funcs': '[{"name": "json"}]' });
    expect(parseRecipe(builtins, FILE)).toMatchObject({ method: 'grpo', reward_funcs: [{ name: 'json' }] });
    expect(() => applyOverrides({ ...MINIMAL, method: 'dpo' }, { '--beta': '0' })).toThrow('--beta must be a number greater than 0');
  });
});

describe('the preference methods', () => {
  it('take their TRL defaults and a smaller learning rate, and read back from a parsed recipe', () => {
    const dpo = parseRecipe({ ...MINIMAL, method: 'dpo' }, FILE);
    expect(dpo).toMatchObject({ method: 'dpo', beta: 0.1, loss_type: 'sigmoid', learning_rate: 5e-5, max_prompt_length: null });
    expect(parseRecipe({ ...MINIMAL, method: 'orpo', peft: { type: 'full' } }, FILE).learning_rate).toBe(1e-6);
    // A parsed recipe has its own method's fields only, and parses again unchanged.
    expect(dpo).not.toHaveProperty('simpo_gamma');
    expect(dpo).not.toHaveProperty('completion_only_loss');
    expect(parseRecipe(JSON.parse(JSON.stringify(dpo)), FILE)).toEqual(dpo);
    const sft = parseRecipe(MINIMAL, FILE);
    expect(sft).not.toHaveProperty('beta');
    expect(parseRecipe(JSON.parse(JSON.stringify(sft)), FILE)).toEqual(sft);
  });

  it('narrow the recipe type by method: a DPO recipe has beta, an SFT one has not', () => {
    const r: Recipe = parseRecipe({ ...MINIMAL, method: 'dpo', beta: 0.3 }, FILE);
    // @ts-expect-error beta belongs to the preference methods, so the union does not have it.
    void r.beta;
    if (r.method !== 'dpo') throw new Error('expected a DPO recipe');
    expectTypeOf(r.beta).toEqualTypeOf<number>();
    expectTypeOf(r.loss_type).toEqualTypeOf<'sigmoid' | 'ipo' | 'hinge'>();
    expect(r.beta).toBe(0.3);
    const sft: Recipe = parseRecipe(MINIMAL, FILE);
    if (sft.method !== 'sft') throw new Error('expected an SFT recipe');
    expectTypeOf(sft.completion_only_loss).toEqualTypeOf<boolean>();
    // @ts-expect-error an SFT recipe has no beta.
    void sft.beta;
    expect('beta' in sft).toBe(false);
  });

  it('fill each method\'s own defaults and no other method\'s', () => {
    const own = (m: MethodName) => Object.keys(RECIPE_FIELDS).filter((p) => !p.startsWith('peft.') && RECIPE_FIELDS[p].methods?.includes(m));
    expect(own('sft')).toEqual(['completion_only_loss', 'assistant_only_loss']);
    expect(own('dpo').sort()).toEqual(['beta', 'loss_type', 'max_completion_length', 'max_prompt_length', 'precompute_ref_log_probs']);
    expect(own('kto').sort()).toEqual(['beta', 'desirable_weight', 'max_completion_length', 'max_prompt_length', 'undesirable_weight']);
    expect(own('orpo').sort()).toEqual(['beta', 'max_completion_length', 'max_prompt_length']);
    expect(own('simpo').sort()).toEqual(['beta', 'max_completion_length', 'max_prompt_length', 'simpo_gamma']);
    const shared = Object.keys(parseRecipe(MINIMAL, FILE)).filter((k) => !own('sft').includes(k));
    for (const m of METHODS) {
      const r = parseRecipe({ ...MINIMAL, method: m, ...(m === 'grpo' ? GRPO_MINIMAL : {}) }, FILE) as unknown as Record<string, unknown>;
      expect(Object.keys(r).sort(), m).toEqual([...shared, ...own(m)].sort());
      for (const f of own(m)) if (f !== 'reward_funcs') expect(r[f], `${m} ${f}`).toEqual(recipeField(f, m)!.default);
      expect(r.learning_rate, m).toBe(m === 'sft' ? 2e-4 : 5e-5);
    }
    expect(parseRecipe({ ...MINIMAL, method: 'kto' }, FILE)).toMatchObject({ beta: 0.1, desirable_weight: 1, undesirable_weight: 1 });
    expect(parseRecipe({ ...MINIMAL, method: 'simpo' }, FILE)).toMatchObject({ beta: 0.1, simpo_gamma: 0.5 });
  });

  it('read back a stored recipe that carries other methods\' defaults, and refuse any other value', () => {
    const stored = { ...MINIMAL, method: 'dpo', beta: 0.2, simpo_gamma: 0.5, desirable_weight: 1, completion_only_loss: true };
    const r = parseRecipe(stored, FILE);
    expect(r).toMatchObject({ method: 'dpo', beta: 0.2 });
    expect(r).not.toHaveProperty('simpo_gamma');
    expect(r).not.toHaveProperty('completion_only_loss');
    expect(parseRecipe({ ...MINIMAL, beta: 0.1, max_prompt_length: null }, FILE)).toEqual(parseRecipe(MINIMAL, FILE));
    expect(message({ ...MINIMAL, method: 'dpo', completion_only_loss: false })).toEqual({
      message: 'recipe.json: "completion_only_loss" applies to method "sft" only, not "dpo"; remove it or set "method".',
      field: 'completion_only_loss',
    });
    // A misspelt key is named before another method's field, and so is a bad value.
    expect(message({ ...MINIMAL, beta: 0.5, learning_rte: 1 }).field).toBe('learning_rte');
    expect(message({ ...MINIMAL, beta: 0.5, peft: { r: 0 } }).field).toBe('peft.r');
  });

  it('map to their TRL trainer and config', () => {
    const dpo = recipeToTrlConfig(parseRecipe({ ...MINIMAL, method: 'dpo', beta: 0.2, loss_type: 'ipo' }, FILE));
    expect(dpo).toMatchObject({ trainer: 'DPOTrainer', config_class: 'DPOConfig' });
    expect(dpo.config).toMatchObject({ beta: 0.2, loss_type: 'ipo', precompute_ref_log_probs: false, max_length: 1024 });
    expect(dpo.config).not.toHaveProperty('max_prompt_length');
    expect(dpo.config).not.toHaveProperty('completion_only_loss');
    const simpo = recipeToTrlConfig(parseRecipe({ ...MINIMAL, method: 'simpo', simpo_gamma: 1 }, FILE));
    expect(simpo).toMatchObject({ trainer: 'CPOTrainer', config_class: 'CPOConfig', config: { loss_type: 'simpo', simpo_gamma: 1, cpo_alpha: 0 } });
    const kto = recipeToTrlConfig(parseRecipe({ ...MINIMAL, method: 'kto', desirable_weight: 1.33 }, FILE));
    expect(kto).toMatchObject({ trainer: 'KTOTrainer', config: { desirable_weight: 1.33, undesirable_weight: 1 } });
    expect(recipeToTrlConfig(parseRecipe({ ...MINIMAL, method: 'orpo' }, FILE))).toMatchObject({ trainer: 'ORPOTrainer', config: { beta: 0.1 } });
  });
});

describe('methods the recipe cannot run as written', () => {
  it('refuses DPO and KTO on full or frozen weights, and KTO on one row a batch, at the field', () => {
    const refused = (json: Record<string, unknown>) => {
      try {
        parseRecipe({ ...MINIMAL, ...json }, FILE);
      } catch (e) {
        return { message: (e as Error).message, field: (e as { field?: string }).field };
      }
      return null;
    };
    expect(refused({ method: 'dpo', peft: { type: 'full' } })).toEqual({
      message: 'recipe.json: DPO compares the model with its reference, the same weights with the LoRA adapter switched off; with peft.type "full" the reference would need a second copy of the model. Use peft.type "lora", or method "orpo" or "simpo", which need no reference.',
      field: 'peft.type',
    });
    expect(refused({ method: 'kto', peft: { type: 'freeze' } })?.field).toBe('peft.type');
    expect(refused({ method: 'kto', per_device_train_batch_size: 1 })?.field).toBe('per_device_train_batch_size');
    expect(refused({ method: 'orpo', peft: { type: 'full' } })).toBeNull();
    expect(refused({ method: 'simpo', peft: { type: 'freeze' } })).toBeNull();
  });
});

describe('recipeToTrlConfig', () => {
  it('maps a LoRA recipe onto SFTConfig and LoraConfig keyword arguments', () => {
    const r = parseRecipe({
      ...MINIMAL,
      eval_file: 'eval.jsonl',
      eval_steps: 20,
      warmup_ratio: 0.1,
      shuffle: false,
      resume_from_checkpoint: 'output/checkpoint-100',
      peft: { r: 8, target_modules: ['q_proj', 'v_proj'], use_rslora: true },
    }, FILE);
    expect(recipeToTrlConfig(r)).toEqual({
      trainer: 'SFTTrainer',
      config_class: 'SFTConfig',
      config: {
        output_dir: 'output',
        learning_rate: 2e-4,
        num_train_epochs: 3,
        max_steps: -1,
        per_device_train_batch_size: 8,
        per_device_eval_batch_size: 8,
        gradient_accumulation_steps: 1,
        gradient_checkpointing: true,
        lr_scheduler_type: 'linear',
        warmup_steps: 0.1,
        weight_decay: 0,
        adam_beta1: 0.9,
        adam_beta2: 0.999,
        adam_epsilon: 1e-8,
        max_grad_norm: 1,
        optim: 'adamw_torch',
        seed: 42,
        train_sampling_strategy: 'sequential',
        max_length: 1024,
        completion_only_loss: true,
        assistant_only_loss: true,
        eval_strategy: 'steps',
        eval_steps: 20,
        save_strategy: 'steps',
        save_steps: 500,
        save_total_limit: null,
        logging_steps: 10,
        resume_from_checkpoint: 'output/checkpoint-100',
      },
      lora_config: {
        r: 8,
        lora_alpha: 32,
        lora_dropout: 0.05,
        target_modules: ['q_proj', 'v_proj'],
        use_rslora: true,
        bias: 'none',
        task_type: 'CAUSAL_LM',
      },
      bnb_config: null,
    });
  });

  it('uses integer warmup_steps when set, epoch evaluation without eval_steps, and no LoraConfig for full training', () => {
    const full = recipeToTrlConfig(parseRecipe({ ...MINIMAL, peft: { type: 'full' }, warmup_steps: 5, warmup_ratio: 0.5, eval_split: 0.1 }, FILE));
    expect(full.lora_config).toBeNull();
    expect(full.config).toMatchObject({ learning_rate: 2e-5, warmup_steps: 5, eval_strategy: 'epoch', train_sampling_strategy: 'random' });
    expect(full.config).not.toHaveProperty('eval_steps');
    expect(full.config).not.toHaveProperty('resume_from_checkpoint');
    const noEval = recipeToTrlConfig(parseRecipe({ ...MINIMAL, eval_steps: 10 }, FILE));
    expect(noEval.config).toMatchObject({ eval_strategy: 'no' });
    expect(noEval.config).not.toHaveProperty('eval_steps');
  });
});
