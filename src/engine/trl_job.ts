/**
 * "When a run outgrows the browser": a recipe as a folder that runs the same training with TRL and
 * accelerate on one GPU or many. `trlJobFiles` writes train.py (the method's TRL trainer, the
 * recipe mapped field by field by `recipeToTrlConfig` and `trlFieldMapping`), rows.py and
 * rewards.py (the studio's data conversions and GRPO rewards, standard library only), the
 * accelerate configs, requirements.txt, the data and reward files, and a README that lists every
 * field with no TRL equivalent. Pure and browser-safe: the studio downloads it as a zip, the CLI
 * (`finetune export-trl`) writes it to a folder.
 */
import { UserError } from './errors.ts';
import { RECIPE_FIELDS, recipeField, type GrpoRecipe, type Recipe } from './recipe.ts';
import { recipeToTrlConfig, TRL_CLASSES, trlFieldMapping, type TrlFieldMapping } from './recipe/trl.ts';
import { ACCELERATE_CONFIGS } from './trl_job/accelerate.ts';
import { REWARD_BRIDGE_MJS } from './trl_job/bridge.ts';
import { REWARDS_PY } from './trl_job/rewards_py.ts';
import { ROWS_PY } from './trl_job/rows_py.ts';

/** A text file given to the job: its name as the user knows it, and its content. */
export interface JobTextFile {
  name: string;
  text: string;
}

export interface TrlJobData {
  train: JobTextFile;
  /** The eval_file, when the recipe names one. */
  eval?: JobTextFile;
  /** The files of the init_adapter folder (adapter_config.json, adapter_model.safetensors), when the recipe names one. */
  initAdapter?: Record<string, Uint8Array>;
}

/**
 * The versions the job pins, and why: TRL 1.9.0 is the release this export is written against
 * (ORPO and CPO under trl.experimental, no prompt cuts); TRL's own reference runs of that release
 * used transformers 5.14.1 and torch 2.11.0; accelerate 1.14.0 was the release beside them
 * (1.15 was still a dev version); datasets 4.7.0 is TRL's floor, the version its CI pins; PEFT
 * 0.19.1 was PEFT's release when TRL 1.9.0 came out; bitsandbytes 0.49.2 and deepspeed 0.18.6 are
 * the releases TRL 1.9.0 names in its own pyproject; jsonschema checks the json reward's schema.
 */
const TRL_JOB_VERSIONS = {
  trl: '1.9.0',
  transformers: '5.14.1',
  accelerate: '1.14.0',
  datasets: '4.7.0',
  peft: '0.19.1',
  torch: '2.11.0',
  bitsandbytes: '0.49.2',
  deepspeed: '0.18.6',
  jsonschema: '4.26.0',
} as const;

/** Where a JavaScript reward file goes in the job, by the path reward_funcs gives it. */
function scriptPaths(recipe: Recipe): Map<string, string> {
  const out = new Map<string, string>();
  if (recipe.method !== 'grpo') return out;
  const used = new Set<string>();
  for (const spec of recipe.reward_funcs) {
    if (typeof spec !== 'string' || out.has(spec)) continue;
    const base = spec.split(/[\\/]/).pop() as string;
    // Two files of one name from different folders both come along.
    let name = base;
    for (let i = 2; used.has(name); i++) name = `${i}_${base}`;
    used.add(name);
    out.set(spec, `reward_scripts/${name}`);
  }
  return out;
}

/** A data file's name in the job: train or eval, keeping .json (an array) apart from .jsonl. */
function dataPath(kind: 'train' | 'eval', file: JobTextFile): string {
  return `data/${kind}${/\.json$/i.test(file.name) ? '.json' : '.jsonl'}`;
}

/**
 * Every file of the job folder by its path (names use '/'), ready to zip or write. The reward
 * scripts are the texts of reward_funcs' JavaScript files by the path the recipe gives them. A
 * file the recipe needs and `data` or `rewardScripts` lacks is a UserError naming the field.
 */
export function trlJobFiles(recipe: Recipe, data: TrlJobData, rewardScripts: Record<string, string> = {}): Record<string, string | Uint8Array> {
  if (recipe.eval_file !== undefined && data.eval === undefined) {
    throw new UserError(`eval_file: the recipe names ${recipe.eval_file}, but its text was not given to the export.`, { field: 'eval_file' });
  }
  if (recipe.init_adapter !== undefined && data.initAdapter === undefined) {
    throw new UserError(`init_adapter: the recipe names ${recipe.init_adapter}, but its files were not given to the export.`, { field: 'init_adapter' });
  }
  const scripts = scriptPaths(recipe);
  const files: Record<string, string | Uint8Array> = {};
  for (const [spec, path] of scripts) {
    if (!Object.hasOwn(rewardScripts, spec)) throw new UserError(`reward_funcs: the text of "${spec}" was not given to the export.`, { field: 'reward_funcs' });
    files[path] = rewardScripts[spec];
  }
  if (scripts.size > 0) {
    // The studio runs every reward file as an ES module; node does so for .js files under this.
    files['reward_scripts/package.json'] = '{ "type": "module" }\n';
    files['reward_bridge.mjs'] = REWARD_BRIDGE_MJS;
  }
  files[dataPath('train', data.train)] = data.train.text;
  if (recipe.eval_file !== undefined && data.eval) files[dataPath('eval', data.eval)] = data.eval.text;
  if (recipe.init_adapter !== undefined && data.initAdapter) {
    for (const [name, bytes] of Object.entries(data.initAdapter)) files[`init_adapter/${name}`] = bytes;
  }
  files['train.py'] = trainScript(recipe, data, scripts);
  files['rows.py'] = ROWS_PY;
  if (recipe.method === 'grpo') files['rewards.py'] = REWARDS_PY;
  for (const c of Object.values(ACCELERATE_CONFIGS)) files[c.file] = c.yaml;
  files['requirements.txt'] = requirements(recipe);
  files['README.md'] = readme(recipe, data, scripts);
  return files;
}

// ---- Python text ------------------------------------------------------------------------------

/** A JSON value as a Python literal (JSON's strings and numbers are Python's too). */
function pyLiteral(value: unknown, indent = ''): string {
  if (value === null || value === undefined) return 'None';
  if (value === true) return 'True';
  if (value === false) return 'False';
  if (typeof value === 'number' || typeof value === 'string') return JSON.stringify(value);
  const inner = `${indent}    `;
  if (Array.isArray(value)) {
    if (value.every((v) => typeof v !== 'object' || v === null)) return `[${value.map((v) => pyLiteral(v)).join(', ')}]`;
    return `[\n${value.map((v) => `${inner}${pyLiteral(v, inner)},\n`).join('')}${indent}]`;
  }
  const entries = Object.entries(value as Record<string, unknown>).filter(([, v]) => v !== undefined);
  if (entries.length === 0) return '{}';
  return `{\n${entries.map(([k, v]) => `${inner}${JSON.stringify(k)}: ${pyLiteral(v, inner)},\n`).join('')}${indent}}`;
}

/** How each method's rows are made from the file's (rows.py). */
const PREPARE: Record<Recipe['method'], string> = {
  sft: 'dataset.map(rows.sft_row, fn_kwargs={"system_prompt": SYSTEM_PROMPT, "use_chat_template": USE_CHAT_TEMPLATE}, remove_columns=dataset.column_names)',
  dpo: 'dataset.map(rows.pair_row, fn_kwargs={"system_prompt": SYSTEM_PROMPT}, remove_columns=dataset.column_names)',
  orpo: 'dataset.map(rows.pair_row, fn_kwargs={"system_prompt": SYSTEM_PROMPT}, remove_columns=dataset.column_names)',
  simpo: 'dataset.map(rows.pair_row, fn_kwargs={"system_prompt": SYSTEM_PROMPT}, remove_columns=dataset.column_names)',
  // batched, so that a pair can become two rows
  kto: 'dataset.map(rows.kto_batch, batched=True, fn_kwargs={"system_prompt": SYSTEM_PROMPT}, remove_columns=dataset.column_names)',
  // the other columns stay: the reward functions read them
  grpo: 'dataset.map(rows.prompt_row, fn_kwargs={"system_prompt": SYSTEM_PROMPT})',
};

/** The reward_funcs entries as rewards.py takes them. */
function rewardSpecs(recipe: GrpoRecipe, scripts: Map<string, string>): unknown[] {
  return recipe.reward_funcs.map((spec) => (typeof spec === 'string' ? { script: scripts.get(spec), source: spec } : spec));
}

/** load_model(): the base model, quantised as BNB_CONFIG says, with what trains marked; and the peft_config for the trainer. */
function loadModelFunction(recipe: Recipe): string {
  const head = `def load_model():
    """The base model (quantised as BNB_CONFIG says) with what trains marked, and the trainer's peft_config."""
    quantization = BitsAndBytesConfig(**BNB_CONFIG) if BNB_CONFIG is not None else None
    model = AutoModelForCausalLM.from_pretrained(MODEL, quantization_config=quantization)
`;
  switch (recipe.peft.type) {
    case 'lora':
      if (recipe.init_adapter === undefined) return `${head}    return model, LoraConfig(**LORA_CONFIG)\n`;
      return `${head}    # init_adapter: training continues from that adapter, whose r, alpha and modules are peft's.
    if quantization is not None:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=CONFIG["gradient_checkpointing"])
    model = PeftModel.from_pretrained(model, os.path.join(HERE, INIT_ADAPTER), is_trainable=True)
    return model, None
`;
    case 'freeze':
      return `${head}    # peft.type "freeze": only the last LAYERS_TO_TRAIN decoder layers train.
    for parameter in model.parameters():
        parameter.requires_grad = False
    for layer in model.model.layers[-LAYERS_TO_TRAIN:]:
        for parameter in layer.parameters():
            parameter.requires_grad = True
    if CONFIG["gradient_checkpointing"]:
        # Recomputed layers need a gradient flowing in from the frozen embeddings.
        model.enable_input_require_grads()
    return model, None
`;
    case 'full':
      return `${head}    return model, None\n`;
  }
}

/** Method-specific changes to the config once the data and model are known. */
function configFixes(recipe: Recipe): string {
  const cap = `    # max_length as the studio uses it: at most the model's max_position_embeddings (null: exactly that).
    limit = model.config.max_position_embeddings
    config["max_length"] = limit if config["max_length"] is None else min(config["max_length"], limit)
`;
  switch (recipe.method) {
    case 'sft':
      return `${cap}    # Text and whole conversations have no completion: TRL refuses completion_only_loss there.
    if config["completion_only_loss"] and "prompt" not in train_dataset.column_names:
        config["completion_only_loss"] = None
    if config["assistant_only_loss"] and not assistant_masks(train_dataset, tokenizer):
        config["assistant_only_loss"] = False
`;
    case 'grpo':
      return '';
    default:
      return cap;
  }
}

const ASSISTANT_MASKS = `

def assistant_masks(dataset, tokenizer):
    """
    Whether TRL can train on assistant turns only: conversations, and a chat template with
    {% generation %} markers or one TRL patches. Otherwise the studio trains the whole
    conversation, and so does this job.
    """
    if not is_conversational(dataset[0]):
        return False
    if tokenizer.chat_template is not None and has_generation_markers(tokenizer.chat_template):
        return True
    try:
        get_training_chat_template(tokenizer)
    except (ValueError, TypeError):
        print("warning: assistant_only_loss is off: TRL cannot mark the assistant turns of this chat template.", file=sys.stderr)
        return False
    return True
`;

function trainerCall(recipe: Recipe): string {
  const { trainer, config } = TRL_CLASSES[recipe.method];
  if (recipe.method === 'grpo') {
    return `    trainer = ${trainer}(
        model=model,
        reward_funcs=rewards.reward_funcs(REWARD_FUNCS, HERE),
        args=${config}(**config),
        train_dataset=train_dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
    )`;
  }
  return `    trainer = ${trainer}(
        model=model,
        args=${config}(**config),
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
    )`;
}

/** train.py: the recipe's values under TRL's names, then the few steps that build and run the trainer. */
function trainScript(recipe: Recipe, data: TrlJobData, scripts: Map<string, string>): string {
  const trl = recipeToTrlConfig(recipe);
  const classes = TRL_CLASSES[recipe.method];
  const sft = recipe.method === 'sft';
  // peft only where an adapter trains: LoraConfig for a fresh one, PeftModel for init_adapter.
  const peftNames = recipe.init_adapter !== undefined ? ['PeftModel', 'prepare_model_for_kbit_training'] : recipe.peft.type === 'lora' ? ['LoraConfig'] : [];
  const imports = [
    'import os',
    ...(sft ? ['import sys'] : []),
    '',
    'from datasets import load_dataset',
    ...(peftNames.length > 0 ? [`from peft import ${peftNames.join(', ')}`] : []),
    'from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig',
    `from ${classes.module} import ${classes.config}, ${classes.trainer}`,
    ...(sft ? ['from trl import is_conversational', 'from trl.chat_template_utils import get_training_chat_template, has_generation_markers'] : []),
    '',
    ...(recipe.method === 'grpo' ? ['import rewards'] : []),
    'import rows',
  ];
  const constants: [string, unknown, string?][] = [
    ['MODEL', recipe.model, 'a Hub id, or a folder that must exist where the job runs'],
    ['TRAIN_FILE', dataPath('train', data.train), `the recipe's train_file, ${data.train.name}`],
    ['EVAL_FILE', recipe.eval_file !== undefined && data.eval ? dataPath('eval', data.eval) : null, recipe.eval_file !== undefined ? `the recipe's eval_file, ${recipe.eval_file}` : undefined],
    ['EVAL_SPLIT', recipe.eval_split],
    ['SEED', recipe.seed],
    ['SYSTEM_PROMPT', recipe.system_prompt],
  ];
  if (sft) constants.push(['USE_CHAT_TEMPLATE', recipe.use_chat_template]);
  if (recipe.method === 'kto') constants.push(['SHUFFLE', recipe.shuffle, 'shuffled once: KTOTrainer samples in order']);
  if (recipe.init_adapter !== undefined) constants.push(['INIT_ADAPTER', 'init_adapter', `a copy of the recipe's init_adapter, ${recipe.init_adapter}`]);
  if (recipe.peft.type === 'freeze') constants.push(['LAYERS_TO_TRAIN', recipe.peft.layers_to_train]);
  if (recipe.method === 'grpo') constants.push(['REWARD_FUNCS', rewardSpecs(recipe, scripts)]);

  // A comment ends at a line break, so a path that holds one is written on one line.
  const constantLines = constants.map(([name, value, why]) => `${why ? `# ${why.replace(/[\r\n]+/g, ' ')}\n` : ''}${name} = ${pyLiteral(value)}`).join('\n');
  const shuffleOnce = recipe.method === 'kto' ? '    if SHUFFLE:\n        train_dataset = train_dataset.shuffle(seed=SEED)\n' : '';
  return `#!/usr/bin/env python3
"""
${methodTitle(recipe)} of MODEL with TRL ${TRL_JOB_VERSIONS.trl}, written by finetune export-trl from the
studio's recipe.

    pip install -r requirements.txt
    accelerate launch --config_file accelerate/single_gpu.yaml train.py

The recipe's values are below under TRL's names; README.md says where every field went, and
which have no TRL equivalent. The result goes to CONFIG["output_dir"]:
${outputWords(recipe)}.
"""
${imports.join('\n')}

HERE = os.path.dirname(os.path.abspath(__file__))

${constantLines}

# ${classes.config}'s keyword arguments
CONFIG = ${pyLiteral(trl.config)}

# peft.LoraConfig's keyword arguments${trl.lora_config === null ? ' (none: peft.type is not "lora")' : ''}
LORA_CONFIG = ${pyLiteral(trl.lora_config)}

# transformers.BitsAndBytesConfig's keyword arguments${trl.bnb_config === null ? ' (none: the base is not quantised)' : ''}
BNB_CONFIG = ${pyLiteral(trl.bnb_config)}


def load_rows(path):
    return load_dataset("json", data_files=os.path.join(HERE, path), split="train")


def prepare(dataset):
    """The rows as ${classes.trainer} reads them, converted as the studio converts them (rows.py)."""
    return ${PREPARE[recipe.method]}


def datasets():
    """The training rows, and the eval_file's rows or the eval_split held out of the training rows."""
    train = prepare(load_rows(TRAIN_FILE))
    if EVAL_FILE is not None:
        return train, prepare(load_rows(EVAL_FILE))
    if EVAL_SPLIT > 0:
        split = train.train_test_split(test_size=EVAL_SPLIT, seed=SEED)
        return split["train"], split["test"]
    return train, None


${loadModelFunction(recipe)}${sft ? ASSISTANT_MASKS : ''}

def main():
    tokenizer = AutoTokenizer.from_pretrained(MODEL)
    model, peft_config = load_model()
    train_dataset, eval_dataset = datasets()
${shuffleOnce}    config = dict(CONFIG)
${configFixes(recipe)}${trainerCall(recipe)}
    trainer.train(resume_from_checkpoint=config.get("resume_from_checkpoint"))
    trainer.save_model(config["output_dir"])


if __name__ == "__main__":
    main()
`;
}

function methodTitle(recipe: Recipe): string {
  const name = { sft: 'SFT', dpo: 'DPO', kto: 'KTO', orpo: 'ORPO', simpo: 'SimPO', grpo: 'GRPO' }[recipe.method];
  const how = recipe.peft.type === 'lora' ? (recipe.quantization.load_in_4bit ? 'QLoRA' : recipe.quantization.load_in_8bit ? 'LoRA on an 8-bit base' : 'LoRA') : recipe.peft.type === 'freeze' ? `the last ${recipe.peft.layers_to_train} layers` : 'full fine-tuning';
  return `${name} (${how})`;
}

function outputWords(recipe: Recipe): string {
  return recipe.peft.type === 'lora'
    ? 'a PEFT adapter (adapter_config.json, adapter_model.safetensors) that the studio loads back'
    : 'the whole model in the Hugging Face layout (model.safetensors, config.json, tokenizer files), which the studio loads as a model';
}

// ---- requirements and README ------------------------------------------------------------------

function requirements(recipe: Recipe): string {
  const v = TRL_JOB_VERSIONS;
  const quantised = recipe.quantization.load_in_4bit || recipe.quantization.load_in_8bit;
  const schema = recipe.method === 'grpo' && recipe.reward_funcs.some((f) => typeof f !== 'string' && f.name === 'json' && f.schema !== undefined);
  return [
    `# TRL ${v.trl} and versions it was released and tested with (README.md, "Versions").`,
    `trl==${v.trl}`,
    `transformers==${v.transformers}`,
    `accelerate==${v.accelerate}`,
    `datasets==${v.datasets}`,
    `peft==${v.peft}`,
    `torch==${v.torch}`,
    ...(quantised ? ['# the quantised base (BitsAndBytesConfig)', `bitsandbytes==${v.bitsandbytes}`] : []),
    '# accelerate/deepspeed_zero3.yaml',
    `deepspeed==${v.deepspeed}`,
    ...(schema ? ['# the json reward\'s schema', `jsonschema==${v.jsonschema}`] : []),
    '',
  ].join('\n');
}

/** One recipe field's value as the README shows it. */
function shown(value: unknown): string {
  return value === undefined ? 'unset' : `\`${JSON.stringify(value)}\``;
}

function valueAt(recipe: Recipe, path: string): unknown {
  const [head, leaf] = path.split('.');
  const v = (recipe as Record<string, unknown>)[head];
  return leaf === undefined ? v : (v as Record<string, unknown>)[leaf];
}

function destination(field: string, m: TrlFieldMapping, recipe: Recipe): string {
  const note = 'note' in m && m.note ? ` — ${m.note}` : '';
  if (field === 'peft.layers_to_train' && recipe.peft.type !== 'freeze') return `unused (peft.type is "${recipe.peft.type}")`;
  if ('config' in m) return `\`${TRL_CLASSES[recipe.method].config}.${m.config}\`${note}`;
  if ('lora' in m) return `${recipe.peft.type === 'lora' ? '' : `unused (peft.type is "${recipe.peft.type}"): `}\`LoraConfig.${m.lora}\`${note}`;
  if ('bnb' in m) return `\`BitsAndBytesConfig.${m.bnb}\`${note}`;
  if ('script' in m) return `train.py: ${m.script}${note}`;
  return `not in TRL: ${m.none}`;
}

/** The fields of the recipe's method, each with its value and where it went. */
export function trlFieldTable(recipe: Recipe): { field: string; value: unknown; mapping: TrlFieldMapping }[] {
  return Object.keys(RECIPE_FIELDS)
    .filter((path) => recipeField(path, recipe.method) !== undefined)
    .map((path) => {
      const mapping = trlFieldMapping(path, recipe.method);
      if (mapping === undefined) throw new Error(`recipe field ${path} has no TRL mapping (src/engine/recipe/trl.ts)`);
      return { field: path, value: valueAt(recipe, path), mapping };
    });
}

function readme(recipe: Recipe, data: TrlJobData, scripts: Map<string, string>): string {
  const classes = TRL_CLASSES[recipe.method];
  const table = trlFieldTable(recipe);
  const none = table.filter((row) => 'none' in row.mapping);
  const launches = Object.values(ACCELERATE_CONFIGS).map((c) =>
    `accelerate launch --config_file ${c.file}${c.file.endsWith('single_gpu.yaml') ? '' : ' --num_processes 4'} train.py   # ${c.what}`);
  const quantised = recipe.quantization.load_in_4bit || recipe.quantization.load_in_8bit;
  const lines = [
    `# ${methodTitle(recipe)} with TRL: ${recipe.model}`,
    '',
    `The studio's recipe as a TRL job: \`train.py\` builds TRL's \`${classes.trainer}\` with \`${classes.config}\` (from \`${classes.module}\`), `
      + '`peft.LoraConfig` and `transformers.BitsAndBytesConfig` from the recipe, field by field, and runs it under accelerate on one GPU or many.',
    '',
    '## Run',
    '',
    '```sh',
    'pip install -r requirements.txt',
    ...launches,
    '```',
    '',
    'Run it from this folder. `--num_processes` is the number of GPUs; each config file says 8 otherwise. '
      + 'Each process takes `per_device_train_batch_size` rows (GRPO: completions) per micro-batch, so N GPUs see N times the rows of one optimizer step in the studio; '
      + 'divide `gradient_accumulation_steps` in train.py by N to keep the studio\'s step.',
    ...(quantised ? ['', 'The base is quantised with bitsandbytes: use single_gpu.yaml or multi_gpu.yaml. Under FSDP and ZeRO-3 bitsandbytes needs `bnb_4bit_quant_storage` set to the model\'s dtype in `BNB_CONFIG`.'] : []),
    ...(recipe.method === 'grpo' && scripts.size > 0 ? ['', 'The JavaScript rewards need `node` (20 or later) on the machine that trains.'] : []),
    '',
    '## Output',
    '',
    `\`${recipe.output_dir}\` (output_dir) receives ${outputWords(recipe)}, beside TRL's \`checkpoint-<step>\` folders. `
      + (recipe.peft.type === 'lora'
        ? `Load it in the studio under Chat or Runs, or run \`finetune generate --model ${recipe.model} --adapter ${recipe.output_dir}\`.`
        : `Load it in the studio as a model folder, or run \`finetune generate --model ${recipe.output_dir}\`.`),
    '',
    '## Files',
    '',
    '| file | what |',
    '| --- | --- |',
    '| `train.py` | the recipe under TRL\'s names, and the trainer |',
    '| `rows.py` | the studio\'s row conversions (Alpaca, ShareGPT, system_prompt, use_chat_template, prompt extraction, KTO pairs) |',
    ...(recipe.method === 'grpo' ? ['| `rewards.py` | the reward functions: the studio\'s built-ins, and JavaScript files through `reward_bridge.mjs` |'] : []),
    ...(scripts.size > 0 ? ['| `reward_bridge.mjs` | calls a JavaScript reward file\'s default export as the studio does |'] : []),
    ...[...scripts].map(([spec, path]) => `| \`${path}\` | a copy of ${spec} |`),
    `| \`${dataPath('train', data.train)}\` | a copy of train_file ${data.train.name} |`,
    ...(recipe.eval_file !== undefined && data.eval ? [`| \`${dataPath('eval', data.eval)}\` | a copy of eval_file ${data.eval.name} |`] : []),
    ...(recipe.init_adapter !== undefined ? [`| \`init_adapter/\` | a copy of init_adapter ${recipe.init_adapter} |`] : []),
    ...Object.values(ACCELERATE_CONFIGS).map((c) => `| \`${c.file}\` | accelerate: ${c.what} |`),
    '| `requirements.txt` | pinned versions |',
    '',
    '## Not in TRL',
    '',
    none.length === 0
      ? 'Every field of this recipe has a TRL equivalent.'
      : `These fields of the recipe have no TRL equivalent; nothing else is left out:`,
    '',
    ...none.map((row) => `- \`${row.field}\` = ${shown(row.value)}: ${'none' in row.mapping ? row.mapping.none : ''}`),
    '',
    '## Field by field',
    '',
    '| field | value | in the job |',
    '| --- | --- | --- |',
    ...table.map((row) => `| \`${row.field}\` | ${shown(row.value).replace(/\|/g, '\\|')} | ${destination(row.field, row.mapping, recipe).replace(/\|/g, '\\|')} |`),
    '',
    '## Versions',
    '',
    `requirements.txt pins TRL ${TRL_JOB_VERSIONS.trl}, the release this export is written for (ORPO and CPO live in \`trl.experimental\` there, and the configs have no prompt cut), `
      + `with transformers ${TRL_JOB_VERSIONS.transformers} and torch ${TRL_JOB_VERSIONS.torch}, which TRL's own reference runs of that release used, `
      + `accelerate ${TRL_JOB_VERSIONS.accelerate} (the release beside them), datasets ${TRL_JOB_VERSIONS.datasets} (TRL's floor, as its CI pins it), `
      + `PEFT ${TRL_JOB_VERSIONS.peft} (PEFT's release when TRL ${TRL_JOB_VERSIONS.trl} came out), and bitsandbytes ${TRL_JOB_VERSIONS.bitsandbytes} and deepspeed ${TRL_JOB_VERSIONS.deepspeed}, the releases TRL's pyproject names.`,
    '',
  ];
  return lines.join('\n');
}
