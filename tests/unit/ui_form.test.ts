import { describe, expect, it } from 'vitest';
import { RECIPE_FIELDS, parseRecipe } from '../../src/engine/recipe.ts';
import { UserError } from '../../src/engine/errors.ts';
import {
  REWARDS_KEY,
  STUDIO_FIELDS,
  PAGE_FIELDS,
  STUDIO_DEFAULTS,
  defaultForm,
  effectiveForm,
  exportRecipe,
  formFromRecipe,
  formGroups,
  formToJson,
  fromRaw,
  fieldApplies,
  groupApplies,
  importRecipe,
  learningRatePlaceholder,
  recipeFromLink,
  recipeLink,
  restoreForm,
  toRaw,
  validateForm,
} from '../../src/ui/recipe/form.ts';
import { readDrafts, writeDrafts, type RewardDraft } from '../../src/ui/recipe/rewards.ts';
import { nextStep, type NextFacts } from '../../src/ui/lib/next.ts';

const PAGE = { model: 'HuggingFaceTB/SmolLM2-135M-Instruct', train_file: 'chat.jsonl' };

describe('the QLoRA switch', () => {
  it('sits in the essentials for LoRA, shows the 4-bit settings once on, and says nothing under freeze or full', () => {
    const page = { model: 'm', train_file: 't.jsonl' };
    const form = defaultForm();
    expect(formGroups().find((g) => g.id === 'essentials')!.fields).toContain('quantization.load_in_4bit');
    expect(fieldApplies('quantization.load_in_4bit', form)).toBe(true);
    expect(fieldApplies('quantization.bnb_4bit_quant_type', form)).toBe(false);
    const on = { ...form, 'quantization.load_in_4bit': true, 'quantization.bnb_4bit_use_double_quant': true };
    expect(fieldApplies('quantization.bnb_4bit_quant_type', on)).toBe(true);
    expect(validateForm(on, page).recipe?.quantization).toEqual({ load_in_4bit: true, bnb_4bit_quant_type: 'nf4', bnb_4bit_use_double_quant: true, load_in_8bit: false });
    const full = { ...on, 'peft.type': 'full' };
    expect(fieldApplies('quantization.load_in_4bit', full)).toBe(false);
    expect(validateForm(full, page).recipe?.quantization.load_in_4bit).toBe(false);
  });
});

describe('a pre-quantised model in the form', () => {
  it('fixes the quantization fields to the checkpoint\'s storage and refuses anything but LoRA', () => {
    const page = { model: 'unsloth/m-bnb-4bit', train_file: 't.jsonl', quantization: { quant_type: 'nf4' as const, double_quant: true } };
    const form = { ...defaultForm(), 'quantization.load_in_4bit': false, 'quantization.load_in_8bit': true };
    const shown = effectiveForm(form, page);
    expect(shown['quantization.load_in_4bit']).toBe(true);
    expect(shown['quantization.load_in_8bit']).toBe(false);
    expect(fieldApplies('quantization.bnb_4bit_use_double_quant', shown)).toBe(true);
    expect(validateForm(form, page).recipe?.quantization).toEqual({ load_in_4bit: true, bnb_4bit_quant_type: 'nf4', bnb_4bit_use_double_quant: true, load_in_8bit: false });
    const full = validateForm({ ...form, 'peft.type': 'full' }, page);
    expect(full.recipe).toBeNull();
    expect(full.errors['peft.type']).toBe('The model is a 4-bit checkpoint (NF4), so it stays frozen and only a LoRA adapter can train on it; choose lora.');
    // An unquantised model leaves the form as it is.
    expect(effectiveForm(form, { quantization: null })).toBe(form);
  });
});

describe('a recipe as a link', () => {
  it('carries the recipe and its JavaScript rewards in the fragment, and reads back to the same form', () => {
    const form = { ...defaultForm(), method: 'grpo', learning_rate: '0.0002', 'peft.r': '8', [REWARDS_KEY]: writeDrafts([{ kind: 'script', path: 'rewards/len.mjs', code: 'export default (c) => c.completions.map(() => 1);', weight: '1' } as RewardDraft]) };
    const page = { model: 'HuggingFaceTB/SmolLM2-135M-Instruct', train_file: 'prompts.jsonl' };
    const recipe = validateForm(form, page).recipe!;
    expect(recipe).not.toBeNull();
    const url = recipeLink('http://localhost:4173/?hub=x#old', recipe, { 'rewards/len.mjs': 'export default (c) => c.completions.map(() => 1);' });
    expect(url.startsWith('http://localhost:4173/?hub=x#recipe=')).toBe(true);
    expect(url).not.toContain('#old');
    const link = recipeFromLink(new URL(url).hash)!;
    const opened = importRecipe(link.text, 'the link', page, link.scripts);
    expect(opened.model).toBe('HuggingFaceTB/SmolLM2-135M-Instruct');
    expect(validateForm(opened.form, page).recipe).toEqual(recipe);
    expect(readDrafts(opened.form[REWARDS_KEY])[0]).toMatchObject({ kind: 'script', path: 'rewards/len.mjs', code: 'export default (c) => c.completions.map(() => 1);' });
  });

  it('ignores other fragments and says when a link is damaged', () => {
    expect(recipeFromLink('')).toBeNull();
    expect(recipeFromLink('#section')).toBeNull();
    expect(() => recipeFromLink('#recipe=eyJyZWNp')).toThrow('The link is cut short or damaged: its recipe cannot be read. Ask for the link again.');
    expect(() => recipeFromLink(`#recipe=${btoa('[1]')}`)).toThrow('The link holds no recipe object.');
    // A readable link with a bad recipe is refused as an import is, naming the field.
    const bad = recipeFromLink(`#recipe=${btoa(JSON.stringify({ recipe: { learning_rate: -1 } }))}`)!;
    expect(() => importRecipe(bad.text, 'the link', PAGE)).toThrow(/learning_rate/);
  });
});

describe('recipe form groups', () => {
  it('shows every recipe field the page does not fill itself, exactly once', () => {
    const shown = formGroups().flatMap((g) => g.fields);
    const expected = Object.keys(STUDIO_FIELDS).filter((f) => !PAGE_FIELDS.has(f));
    expect([...shown].sort()).toEqual([...expected].sort());
    expect(new Set(shown).size).toBe(shown.length);
  });

  it('offers GRPO, with its own beta, loss_type and lengths under their own keys and the rewards as one', () => {
    expect(STUDIO_FIELDS.method.choices).toContain('grpo');
    expect(STUDIO_FIELDS.beta).toMatchObject({ default: 0.1, methods: ['dpo', 'kto', 'orpo', 'simpo'] });
    expect(STUDIO_FIELDS['grpo:beta']).toMatchObject({ default: 0, methods: ['grpo'], trl: 'GRPOConfig.beta' });
    expect(STUDIO_FIELDS.loss_type.methods).toEqual(['dpo']);
    expect(STUDIO_FIELDS['grpo:loss_type']).toMatchObject({ default: 'dapo', choices: ['dapo', 'grpo', 'dr_grpo', 'bnpo'] });
    expect(STUDIO_FIELDS['grpo:max_completion_length'].default).toBe(256);
    expect(STUDIO_FIELDS.max_completion_length.default).toBeNull();
    expect(STUDIO_FIELDS['grpo:max_prompt_length'].methods).toEqual(['grpo']);
    expect(STUDIO_FIELDS[REWARDS_KEY].methods).toEqual(['grpo']);
    // Each reward's weight is edited beside it.
    expect(STUDIO_FIELDS).not.toHaveProperty('reward_weights');
    const grpo = { ...defaultForm(), method: 'grpo' };
    expect(fieldApplies('grpo:beta', grpo)).toBe(true);
    expect(fieldApplies('beta', grpo)).toBe(false);
    expect(fieldApplies('num_generations', grpo)).toBe(true);
    expect(fieldApplies('num_generations', defaultForm())).toBe(false);
  });

  it('puts GRPO\'s rewards and group size in the essentials, its sampling and objective under Advanced', () => {
    const groups = formGroups();
    const essentials = groups.find((g) => g.id === 'essentials')!;
    for (const key of [REWARDS_KEY, 'num_generations', 'grpo:max_completion_length']) expect(essentials.fields).toContain(key);
    const sampling = groups.find((g) => g.id === 'grpo-sampling')!;
    const objective = groups.find((g) => g.id === 'grpo-objective')!;
    expect(sampling).toMatchObject({ advanced: true });
    expect(sampling.fields).toEqual(expect.arrayContaining(['temperature', 'top_p', 'top_k', 'grpo:max_prompt_length']));
    expect(objective.fields).toEqual(expect.arrayContaining(['grpo:beta', 'grpo:loss_type', 'epsilon', 'epsilon_high', 'scale_rewards', 'num_iterations']));
    expect(groupApplies(objective, { ...defaultForm(), method: 'grpo' })).toBe(true);
    expect(groupApplies(objective, { ...defaultForm(), method: 'dpo' })).toBe(false);
    expect(groupApplies(groups.find((g) => g.id === 'preference')!, { ...defaultForm(), method: 'grpo' })).toBe(false);
  });

  it('puts a field it does not know under "More"', () => {
    const fields = { ...STUDIO_FIELDS, future_field: { ...RECIPE_FIELDS.seed } };
    const more = formGroups(fields).find((g) => g.id === 'more');
    expect(more?.fields).toEqual(['future_field']);
  });

  it('shows LoRA settings for lora and the layer count for freeze', () => {
    const groups = formGroups();
    const lora = groups.find((g) => g.id === 'lora')!;
    const form = defaultForm();
    expect(groupApplies(lora, form)).toBe(true);
    expect(fieldApplies('peft.r', form)).toBe(true);
    expect(fieldApplies('peft.layers_to_train', form)).toBe(false);
    form['peft.type'] = 'freeze';
    expect(groupApplies(lora, form)).toBe(false);
    expect(fieldApplies('peft.r', form)).toBe(false);
    expect(fieldApplies('peft.layers_to_train', form)).toBe(true);
    expect(fieldApplies('learning_rate', form)).toBe(true);
  });

  it('puts the essentials first and everything else under Advanced', () => {
    const [first, ...rest] = formGroups();
    expect(first).toMatchObject({ id: 'essentials', advanced: false });
    for (const f of ['method', 'peft.r', 'peft.lora_alpha', 'learning_rate', 'num_train_epochs', 'max_steps', 'per_device_train_batch_size', 'max_length']) expect(first.fields).toContain(f);
    expect(rest.every((g) => g.advanced)).toBe(true);
  });

  it('restores a saved form over the defaults, leaving out unknown fields and values of the wrong kind', () => {
    const saved = { ...defaultForm(), 'peft.r': '4', gradient_checkpointing: false, 'peft.target_modules': ['q_proj'], gone_field: '1', max_length: 7, shuffle: 'yes' };
    const form = restoreForm(JSON.parse(JSON.stringify(saved)));
    expect(form['peft.r']).toBe('4');
    expect(form.gradient_checkpointing).toBe(false);
    expect(form['peft.target_modules']).toEqual(['q_proj']);
    expect('gone_field' in form).toBe(false);
    expect(form.max_length).toBe(defaultForm().max_length);
    expect(form.shuffle).toBe(defaultForm().shuffle);
    expect(restoreForm(null)).toEqual(defaultForm());
    expect(restoreForm('garbage')).toEqual(defaultForm());
  });
});

describe('recipe form values', () => {
  it('starts from the engine defaults, with per-step logging for the charts', () => {
    const form = defaultForm();
    expect(form['peft.r']).toBe('16');
    expect(form['peft.target_modules']).toEqual(['all-linear']);
    expect(form['shuffle']).toBe(true);
    expect(form['max_length']).toBe('1024');
    expect(form['system_prompt']).toBe('');
    expect(form['learning_rate']).toBe('');
    expect(form['logging_steps']).toBe(String(STUDIO_DEFAULTS.logging_steps));
    const recipe = validateForm(form, PAGE).recipe!;
    expect(recipe).toEqual(parseRecipe({ ...PAGE, ...STUDIO_DEFAULTS }, 'x'));
    expect(recipe.learning_rate).toBe(2e-4);
  });

  it('converts inputs to recipe values by the field kind', () => {
    expect(fromRaw(RECIPE_FIELDS['peft.r'], ' 8 ')).toBe(8);
    expect(fromRaw(RECIPE_FIELDS['learning_rate'], '1e-4')).toBe(1e-4);
    expect(fromRaw(RECIPE_FIELDS['learning_rate'], '')).toBeUndefined();
    expect(fromRaw(RECIPE_FIELDS['max_length'], '')).toBeNull();
    expect(fromRaw(RECIPE_FIELDS['max_length'], 'abc')).toBe('abc');
    expect(fromRaw(RECIPE_FIELDS['system_prompt'], '')).toBeNull();
    expect(fromRaw(RECIPE_FIELDS['peft.target_modules'], ['q_proj', 'v_proj'])).toEqual(['q_proj', 'v_proj']);
    expect(fromRaw(RECIPE_FIELDS['peft.target_modules'], ['all-linear', 'q_proj'])).toBe('all-linear');
    expect(toRaw(RECIPE_FIELDS['max_length'], null)).toBe('');
    expect(toRaw(RECIPE_FIELDS['peft.target_modules'], ['q_proj'])).toEqual(['q_proj']);
  });

  it('nests peft fields in the JSON', () => {
    const form = defaultForm();
    form['peft.r'] = '8';
    const json = formToJson(form, PAGE);
    expect(json.model).toBe(PAGE.model);
    expect((json.peft as Record<string, unknown>).r).toBe(8);
  });

  it('follows the method for the learning rate placeholder', () => {
    const form = defaultForm();
    expect(learningRatePlaceholder(form)).toBe('0.0002');
    form['peft.type'] = 'full';
    expect(learningRatePlaceholder(form)).toBe('0.00002');
    expect(validateForm(form, PAGE).recipe!.learning_rate).toBe(2e-5);
  });
});

describe('recipe form validation', () => {
  it('explains every bad field at once, in the engine’s words', () => {
    const form = defaultForm();
    form['peft.r'] = '0';
    form['learning_rate'] = 'fast';
    form['peft.target_modules'] = [];
    const v = validateForm(form, PAGE);
    expect(v.recipe).toBeNull();
    expect(Object.keys(v.errors).sort()).toEqual(['learning_rate', 'peft.r', 'peft.target_modules']);
    expect(v.errors['peft.r']).toBe('"peft.r" must be an integer of at least 1 (got 0).');
    expect(v.errors['learning_rate']).toBe('"learning_rate" must be a number greater than 0 (got "fast").');
    expect(v.errors['peft.target_modules']).toMatch(/^"peft.target_modules" must be "all-linear" or a list/);
    expect(v.general).toBeNull();
  });

  it('accepts a fixed form again', () => {
    const form = defaultForm();
    form['peft.r'] = '0';
    expect(validateForm(form, PAGE).recipe).toBeNull();
    form['peft.r'] = '32';
    expect(validateForm(form, PAGE).recipe!.peft.r).toBe(32);
  });
});

describe('recipe import and export', () => {
  it('round-trips through the exported JSON', () => {
    const form = defaultForm();
    form['peft.r'] = '8';
    form['peft.lora_alpha'] = '16';
    form['system_prompt'] = 'You are terse.';
    form['peft.target_modules'] = ['q_proj', 'v_proj'];
    const recipe = validateForm(form, PAGE).recipe!;
    const text = exportRecipe(recipe);
    const back = importRecipe(text, 'recipe.json', PAGE);
    expect(back.model).toBe(PAGE.model);
    expect(validateForm(back.form, PAGE).recipe).toEqual(recipe);
  });

  it('leaves out fields at engine defaults, with the page filling model and train_file', () => {
    const { form, model } = importRecipe('{"peft": {"r": 4}, "max_steps": 10}', 'mine.json', PAGE);
    expect(model).toBeNull();
    expect(form['peft.r']).toBe('4');
    expect(form['max_steps']).toBe('10');
    // An imported recipe means what it says: the engine's logging_steps, not the studio's.
    expect(form['logging_steps']).toBe(String(RECIPE_FIELDS.logging_steps.default));
  });

  it('rejects a bad file with the engine’s sentence naming it', () => {
    expect(() => importRecipe('{"lora_r": 8}', 'mine.json', PAGE)).toThrow(UserError);
    expect(() => importRecipe('{"lora_r": 8}', 'mine.json', PAGE)).toThrow(/mine\.json: "lora_r" is not a recipe field \(did you mean "peft\.r"\?\)/);
    expect(() => importRecipe('{"seed": 1,}', 'mine.json', PAGE)).toThrow(/mine\.json is not valid JSON at line 1/);
  });

  it('restores a run’s recipe into the form', () => {
    const recipe = parseRecipe({ ...PAGE, peft: { type: 'freeze', layers_to_train: 3 }, max_length: null }, 'run');
    const form = formFromRecipe(recipe);
    expect(form['peft.type']).toBe('freeze');
    expect(form['peft.layers_to_train']).toBe('3');
    expect(form['max_length']).toBe('');
    expect(validateForm(form, PAGE).recipe).toEqual(recipe);
  });
});

describe('continuing a dropped-in adapter', () => {
  it('takes the LoRA shape from adapter_config.json', async () => {
    const { formWithAdapterConfig } = await import('../../src/ui/recipe/form.ts');
    const form = formWithAdapterConfig(defaultForm(), { peft_type: 'LORA', r: 4, lora_alpha: 8, lora_dropout: 0, target_modules: ['v_proj', 'q_proj'], use_rslora: false });
    const recipe = validateForm(form, PAGE).recipe!;
    expect(recipe.peft).toMatchObject({ type: 'lora', r: 4, lora_alpha: 8, lora_dropout: 0, target_modules: ['v_proj', 'q_proj'], use_rslora: false });
  });
});

describe('the "Next" hint', () => {
  const base: NextFacts = { view: 'model', modelLoaded: false, datasetChosen: false, datasetUsable: false, recipeValid: true, training: false, adapterReady: false, runCount: 0 };

  it('walks a first visit from model to data to recipe to train to chat', () => {
    expect(nextStep(base)).toMatchObject({ go: null });
    expect(nextStep({ ...base, view: 'data' })).toMatchObject({ go: 'model', text: 'Load a model first.' });
    expect(nextStep({ ...base, modelLoaded: true })).toMatchObject({ go: 'data' });
    expect(nextStep({ ...base, modelLoaded: true, view: 'data' })).toMatchObject({ go: null });
    expect(nextStep({ ...base, modelLoaded: true, view: 'data', datasetChosen: true })).toMatchObject({ go: null, text: expect.stringMatching(/^Fix the rows/) });
    expect(nextStep({ ...base, modelLoaded: true, view: 'data', datasetChosen: true, datasetUsable: true })).toMatchObject({ go: 'recipe' });
    expect(nextStep({ ...base, modelLoaded: true, view: 'recipe' })).toMatchObject({ go: 'train' });
    expect(nextStep({ ...base, modelLoaded: true, view: 'recipe', recipeValid: false })).toMatchObject({ go: null });
    expect(nextStep({ ...base, modelLoaded: true, view: 'train', adapterReady: true })).toMatchObject({ go: 'chat' });
    expect(nextStep({ ...base, modelLoaded: true, view: 'chat', adapterReady: true })).toMatchObject({ go: 'runs' });
    expect(nextStep({ ...base, modelLoaded: true, view: 'runs', runCount: 2 })).toMatchObject({ go: null });
  });
});

describe('a method the form cannot run', () => {
  it('shows DPO on full weights at peft.type', () => {
    const form = { ...defaultForm(), method: 'dpo', 'peft.type': 'full' };
    const v = validateForm(form, { model: 'm', train_file: 'pairs.jsonl' });
    expect(v.recipe).toBeNull();
    expect(v.errors['peft.type']).toMatch(/^DPO compares the model with its reference/);
  });
});

const LENGTH_REWARD: RewardDraft = { kind: 'builtin', name: 'length', options: { target: '200' }, weight: '1' };
const SCRIPT_REWARD: RewardDraft = {
  kind: 'script',
  path: 'rewards/mentions_cat.js',
  code: "export default function mentions_cat(prompts, completions) { return completions.map((c) => (c.includes('cat') ? 1 : 0)); }\n",
  weight: '0.5',
};

function grpoForm(drafts: RewardDraft[] = [LENGTH_REWARD, SCRIPT_REWARD]) {
  return { ...defaultForm(), method: 'grpo', [REWARDS_KEY]: writeDrafts(drafts) };
}

describe('a GRPO recipe in the form', () => {
  it('round-trips through formToJson and formFromRecipe with its own beta 0 while DPO keeps 0.1', () => {
    const form = grpoForm();
    const json = formToJson(form, PAGE);
    expect(json).toMatchObject({ method: 'grpo', beta: 0, loss_type: 'dapo', max_completion_length: 256, num_generations: 8 });
    expect(json.reward_funcs).toEqual([{ name: 'length', target: 200 }, 'rewards/mentions_cat.js']);
    expect(json.reward_weights).toEqual([1, 0.5]);
    expect(json.max_prompt_length).toBeNull();
    const recipe = validateForm(form, PAGE).recipe!;
    expect(recipe).toMatchObject({ method: 'grpo', beta: 0, loss_type: 'dapo', max_prompt_length: null, max_completion_length: 256 });

    const back = formFromRecipe(recipe, undefined, { [SCRIPT_REWARD.path]: SCRIPT_REWARD.code });
    expect(validateForm(back, PAGE).recipe).toEqual(recipe);
    expect(readDrafts(back[REWARDS_KEY])).toEqual([LENGTH_REWARD, SCRIPT_REWARD]);
    expect(back['grpo:beta']).toBe('0');
    expect(back.beta).toBe('0.1');

    // Switching the method shows each method's own value.
    const dpo = formToJson({ ...form, method: 'dpo' }, PAGE);
    expect(dpo).toMatchObject({ method: 'dpo', beta: 0.1, loss_type: 'sigmoid', max_completion_length: null });
    expect(dpo).not.toHaveProperty('reward_funcs');
    expect(dpo).not.toHaveProperty('num_generations');
  });

  it('keeps an edited GRPO beta apart from DPO\'s', () => {
    const form = { ...grpoForm(), 'grpo:beta': '0.04' };
    expect(validateForm(form, PAGE).recipe).toMatchObject({ beta: 0.04 });
    expect(validateForm({ ...form, method: 'dpo' }, PAGE).recipe).toMatchObject({ beta: 0.1 });
  });

  it('reads only the fields of the recipe\'s method', () => {
    const grpo = formFromRecipe({ ...PAGE, method: 'grpo', beta: 0.04, loss_type: 'bnpo', max_completion_length: 64, reward_funcs: [{ name: 'json' }] });
    expect(grpo).toMatchObject({ method: 'grpo', 'grpo:beta': '0.04', 'grpo:loss_type': 'bnpo', 'grpo:max_completion_length': '64', beta: '0.1', loss_type: 'sigmoid', max_completion_length: '' });
    const dpo = formFromRecipe({ ...PAGE, method: 'dpo', beta: 0.3, num_generations: 4 });
    expect(dpo).toMatchObject({ beta: '0.3', 'grpo:beta': '0', num_generations: '8' });
    expect(readDrafts(dpo[REWARDS_KEY])).toEqual([]);
  });

  it('needs at least one reward, with the engine\'s message at reward_funcs, and still checks the other fields', () => {
    const form = { ...grpoForm([]), 'peft.r': '0', 'grpo:beta': '-1' };
    const v = validateForm(form, PAGE);
    expect(v.recipe).toBeNull();
    expect(v.errors[REWARDS_KEY]).toMatch(/^"reward_funcs" must be a list of reward functions/);
    expect(v.errors['peft.r']).toBe('"peft.r" must be an integer of at least 1 (got 0).');
    expect(v.errors['grpo:beta']).toBe('"beta" must be a number of at least 0 (got -1).');
    expect(v.general).toBeNull();
    // The data report still reads the file as GRPO's while the form is being fixed.
    expect(v.checked?.method).toBe('grpo');
  });

  it('shows a reward the editor finds wrong, and one the engine refuses, at reward_funcs', () => {
    const noTarget = validateForm(grpoForm([{ ...LENGTH_REWARD, options: {} }]), PAGE);
    expect(noTarget.errors).toEqual({ [REWARDS_KEY]: 'Reward 1: The "length" reward needs its target.' });
    const badFlags = validateForm(grpoForm([{ kind: 'builtin', name: 'format', options: { pattern: 'a+', flags: 'x' }, weight: '1' }]), PAGE);
    expect(badFlags.errors[REWARDS_KEY]).toBe('reward_funcs: the "format" reward takes the flags "i" and "s" only (got "x").');
    const batch = validateForm({ ...grpoForm(), per_device_train_batch_size: '6' }, PAGE);
    expect(batch.errors.per_device_train_batch_size).toMatch(/must be a multiple of 8 \(got 6\)/);
  });

  it('imports a GRPO recipe, taking JavaScript rewards\' code from the form by path', () => {
    const text = JSON.stringify({ method: 'grpo', reward_funcs: [{ name: 'json' }, SCRIPT_REWARD.path], reward_weights: [2, 1], beta: 0.04 });
    const { form } = importRecipe(text, 'grpo.json', PAGE, { [SCRIPT_REWARD.path]: SCRIPT_REWARD.code });
    expect(form.method).toBe('grpo');
    expect(readDrafts(form[REWARDS_KEY])).toEqual([
      { kind: 'builtin', name: 'json', options: {}, weight: '2' },
      { ...SCRIPT_REWARD, weight: '1' },
    ]);
    expect(validateForm(form, PAGE).recipe).toMatchObject({ method: 'grpo', beta: 0.04, reward_weights: [2, 1] });
    // Without the file's code the editor asks for it.
    const bare = importRecipe(text, 'grpo.json', PAGE).form;
    expect(validateForm(bare, PAGE).errors[REWARDS_KEY]).toBe('Reward 2: rewards/mentions_cat.js has no code yet: a recipe names the file but does not hold it, so paste its code here.');
  });

  it('restores saved reward drafts and leaves out ones it cannot read', () => {
    const saved = JSON.parse(JSON.stringify(grpoForm()));
    expect(restoreForm(saved)).toEqual(grpoForm());
    expect(restoreForm({ ...saved, [REWARDS_KEY]: '[{"kind": "nonsense"}]' })[REWARDS_KEY]).toBe('[]');
    expect(restoreForm({ ...saved, [REWARDS_KEY]: ['a'] })[REWARDS_KEY]).toBe('[]');
  });
});
