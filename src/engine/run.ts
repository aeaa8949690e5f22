/**
 * A whole run from a recipe: load the model folder, the tokenizer and the data, build the
 * adapter (or make layers trainable), and hand the pieces to the Trainer; then the files a run
 * leaves behind. The CLI and the Web Worker both drive training through this module, each with
 * its own FileSource and its own checkpoint store.
 */
import * as tf from '@tensorflow/tfjs';
import { UserError } from './errors.ts';
import { pathIn, readJsonObject, readText, type FileSource } from './io/files.ts';
import { floatValues, openModelFolder, type OpenModelFolder } from './io/model_folder.ts';
import { adapterFiles, loadAdapter } from './io/peft.ts';
import { modelFiles } from './export.ts';
import { CausalLM, expectedWeights, type LoadOptions } from './model/llama.ts';
import { LoraAdapter, resolveTargetModules, type LoraConfig } from './model/lora.ts';
import { TextTokenizer } from './data/tokenizer.ts';
import { Rng } from './rng.ts';
import { SHORT_RUN_STEPS, type Recipe } from './recipe.ts';
import { Trainer, type TrainerCallbacks } from './train/trainer.ts';
import { createMethod, prepareMethodData, type MethodData, type OnlineOptions } from './train/methods/index.ts';
import { loadRewardFunctions, type RewardLoadOptions } from './train/reward_funcs.ts';
import { storageQuantization } from './model/quantized.ts';
import { describeValue, findUnusableTensor } from './train/guard.ts';
import { nonFiniteWeight } from './model/check.ts';
import { resolveCheckpoint } from './train/checkpoints.ts';

export interface LoadedModel {
  folder: OpenModelFolder;
  model: CausalLM;
  tokenizer: TextTokenizer;
}

/** A model folder streamed onto the backend weight by weight, with its tokenizer. */
export async function loadModel(source: FileSource, opts: LoadOptions = {}): Promise<LoadedModel> {
  const folder = await openModelFolder(source);
  await adoptChatTemplateFile(source, folder.tokenizerConfig);
  const tokenizer = TextTokenizer.fromFiles(folder.tokenizerJson, folder.tokenizerConfig, folder.generationConfig, pathIn(source, 'tokenizer_config.json'), folder.config);
  const model = await CausalLM.fromFolder(folder, opts);
  // Every loss would be NaN and every reply garbage, whatever the recipe: refused up front.
  const bad = await nonFiniteWeight(model);
  if (bad !== null) {
    model.dispose();
    throw new UserError(`${source.location}: the model's weights contain non-finite values (NaN or infinity), for example ${bad}; the model is damaged, so download or export it again.`, { file: source.location });
  }
  return { folder, model, tokenizer };
}

/** The optimizer steps of a run on this many examples, as the Trainer counts them. */
export function optimizerSteps(recipe: Recipe, numTrainExamples: number): number {
  if (recipe.max_steps > 0) return recipe.max_steps;
  // GRPO's batch counts completions, num_generations of each prompt, and trains num_iterations steps on each.
  const grpo = recipe.method === 'grpo';
  const perMicro = grpo ? recipe.per_device_train_batch_size / recipe.num_generations : recipe.per_device_train_batch_size;
  const microPerEpoch = Math.ceil(numTrainExamples / perMicro);
  const perEpoch = Math.ceil(microPerEpoch / recipe.gradient_accumulation_steps) * (grpo ? recipe.num_iterations : 1);
  return Math.max(1, Math.ceil(recipe.num_train_epochs * perEpoch));
}

/** Seeded split of the training examples into train and eval (TRL's eval_split / datasets' train_test_split). */
export function splitExamples<T>(examples: T[], fraction: number, seed: number): { train: T[]; eval: T[] } {
  if (fraction <= 0) return { train: examples, eval: [] };
  const n = examples.length;
  const k = Math.min(n - 1, Math.max(1, Math.round(n * fraction)));
  const order = new Rng(seed ^ 0x5eed5eed).permutation(n);
  const evalIdx = new Set(order.slice(0, k));
  return { train: examples.filter((_, i) => !evalIdx.has(i)), eval: examples.filter((_, i) => evalIdx.has(i)) };
}

export interface RunSources {
  model: FileSource;
  /** The train_file's text and the name to use in messages. */
  train: { text: string; file: string };
  eval?: { text: string; file: string } | null;
  initAdapter?: FileSource | null;
  /**
   * resume_from_checkpoint: a checkpoint-<step> folder, or an output folder whose newest complete
   * checkpoint is resumed (as transformers' resume_from_checkpoint=True does with output_dir).
   */
  resumeFrom?: FileSource | null;
}

export interface RunOptions {
  /**
   * Whether the person set logging_steps (in the recipe file, or as an override) rather than
   * leaving it to its default. Where they did not and the run has fewer than SHORT_RUN_STEPS
   * optimizer steps, it logs every step. Omitted: the recipe's value stands.
   */
  loggingStepsSet?: boolean;
  /** GRPO: where its JavaScript reward functions run and where its rollouts go. */
  online?: OnlineRunOptions;
}

export interface OnlineRunOptions extends Omit<RewardLoadOptions, 'timeoutMs'> {
  onCompletions?: OnlineOptions['onCompletions'];
  onWarning?: OnlineOptions['onWarning'];
}

export interface PreparedRun {
  /** The recipe as it runs: the one given, with logging_steps 1 where RunOptions.loggingStepsSet says so. */
  recipe: Recipe;
  loaded: LoadedModel;
  adapter: LoraAdapter | null;
  trainer: Trainer;
  /** The train_file as the method reads it, every example, including those eval_split holds out. */
  train: MethodData;
  /** The examples trained on: `train.examples` less those eval_split holds out. */
  trainExamples: unknown[];
  evalExamples: unknown[];
  /** The checkpoint folder the run resumed from (resolved from an output folder), or null. */
  resumedFrom: FileSource | null;
  /** The files of the finished run: the adapter, or the trained model folder. */
  outputFiles(): Promise<Record<string, Uint8Array>>;
  dispose(): void;
}

/**
 * Everything up to the first step, checked before anything is written: a bad recipe, model,
 * adapter or data file fails here with its one sentence, and the output folder is never touched.
 */
export async function prepareRun(
  recipe: Recipe,
  sources: RunSources,
  callbacks: TrainerCallbacks = {},
  load: LoadOptions = {},
  options: RunOptions = {},
): Promise<PreparedRun> {
  // A quantised base (QLoRA) is quantised as it streams in; the run trains LoRA on top of it.
  const loaded = await loadModel(sources.model, { ...load, quantization: load.quantization ?? storageQuantization(recipe.quantization) });
  const disposables: { dispose(): void }[] = [loaded.model];
  try {
    const { model, tokenizer, folder } = loaded;
    if (folder.prequantized && recipe.peft.type !== 'lora') {
      const file = pathIn(sources.model, 'config.json');
      throw new UserError(`${file}: the model is a 4-bit checkpoint (bitsandbytes ${folder.prequantized.quant_type}), so it stays frozen and only a LoRA adapter can train on it; use peft.type "lora" (got "${recipe.peft.type}").`, { file, field: 'peft.type' });
    }
    if (folder.prequantized) {
      // The checkpoint's own quantisation is what runs (transformers ignores a different request);
      // the recipe saved with the run says so.
      const { quant_type, double_quant } = folder.prequantized;
      recipe = { ...recipe, quantization: { load_in_4bit: true, bnb_4bit_quant_type: quant_type, bnb_4bit_use_double_quant: double_quant, load_in_8bit: false } };
    }
    const train = prepareMethodData(sources.train.text, sources.train.file, tokenizer, recipe);
    let trainExamples: unknown[] = train.examples;
    let evalExamples: unknown[] = [];
    if (sources.eval) {
      evalExamples = prepareMethodData(sources.eval.text, sources.eval.file, tokenizer, recipe).examples;
    } else if (recipe.eval_split > 0) {
      ({ train: trainExamples, eval: evalExamples } = splitExamples(train.examples, recipe.eval_split, recipe.seed));
    }
    if (options.loggingStepsSet === false && optimizerSteps(recipe, trainExamples.length) < SHORT_RUN_STEPS) recipe = { ...recipe, logging_steps: 1 };

    const peft = recipe.peft;
    let adapter: LoraAdapter | null = null;
    let params: Map<string, tf.Variable>;
    const checkpointModel = sources.resumeFrom ? resolveCheckpoint(sources.resumeFrom) : null;
    if (peft.type === 'lora') {
      const from = checkpointModel ?? sources.initAdapter ?? null;
      adapter = from
        ? await loadAdapter(model, from)
        : LoraAdapter.init(model.config, {
            r: peft.r,
            lora_alpha: peft.lora_alpha,
            lora_dropout: peft.lora_dropout,
            target_modules: resolveTargetModules(peft.target_modules),
            use_rslora: peft.use_rslora,
            layers_to_transform: null,
          }, new Rng(recipe.seed));
      disposables.push(adapter);
      if (from) {
        checkAdapterMatchesRecipe(adapter.config, peft, pathIn(from, 'adapter_config.json'), checkpointModel ? 'resume_from_checkpoint' : 'init_adapter');
        adapter.config.lora_dropout = peft.lora_dropout;
      }
      params = adapter.variables();
      if (from && !checkpointModel) {
        // A resumed checkpoint's weights are checked by Trainer.restore, with its other files.
        const bad = await findUnusableTensor(params);
        const file = pathIn(from, 'adapter_model.safetensors');
        if (bad) throw new UserError(`${file}: ${bad.name} holds ${describeValue(bad.value)}; this adapter cannot be trained from.`, { file, field: bad.name });
      }
    } else {
      if (sources.initAdapter) throw new UserError(`recipe: init_adapter needs peft.type "lora" (got "${peft.type}").`, { field: 'init_adapter' });
      const names = trainableNames(model, peft.type, peft.layers_to_train);
      if (checkpointModel) await loadWeightsInto(model, checkpointModel, names);
      params = model.makeTrainable(names);
    }

    const saveModel = async (): Promise<Record<string, Uint8Array>> =>
      adapter ? adapterFiles(adapter, recipe.model) : modelFiles(folder, model, 'F32');
    let online: OnlineOptions | undefined;
    if (recipe.method === 'grpo') {
      const o = options.online ?? {};
      online = { rewards: await loadRewardFunctions(recipe.reward_funcs, o), onCompletions: o.onCompletions, onWarning: o.onWarning };
    }
    const method = await createMethod(recipe, model, tokenizer, [trainExamples, evalExamples], online);
    const trainer = new Trainer({ recipe, model, adapter, params, method, train: trainExamples, eval: evalExamples.length ? evalExamples : null, saveModel, callbacks });
    disposables.push(trainer);
    if (checkpointModel) await trainer.restore(checkpointModel);
    return {
      recipe,
      loaded,
      adapter,
      trainer,
      train,
      trainExamples,
      evalExamples,
      resumedFrom: checkpointModel,
      outputFiles: saveModel,
      dispose: () => disposables.forEach((d) => d.dispose()),
    };
  } catch (e) {
    disposables.forEach((d) => d.dispose());
    throw e;
  }
}

/**
 * An adapter loaded from a file (init_adapter, or a checkpoint being resumed) must be the one the
 * recipe describes: otherwise the file's adapter would be trained while recipe.json records the
 * recipe's r, lora_alpha and target modules. PEFT would follow the file; refusing keeps the record true.
 */
export function checkAdapterMatchesRecipe(
  config: LoraConfig,
  peft: { r: number; lora_alpha: number; target_modules: readonly string[] | string; use_rslora: boolean },
  file: string,
  field: 'init_adapter' | 'resume_from_checkpoint',
): void {
  const fail = (what: string, fileValue: string, recipeValue: string, key: string): never => {
    throw new UserError(
      `${file}: ${what} is ${fileValue} but the recipe's peft.${key} is ${recipeValue}; set peft.${key} to ${fileValue} to train this adapter, or change ${field} (a mismatch is refused rather than recording the wrong value in recipe.json).`,
      { file, field: `peft.${key}` },
    );
  };
  if (config.r !== peft.r) fail('r', String(config.r), String(peft.r), 'r');
  if (config.lora_alpha !== peft.lora_alpha) fail('lora_alpha', String(config.lora_alpha), String(peft.lora_alpha), 'lora_alpha');
  const wanted = resolveTargetModules(peft.target_modules);
  const sameModules = wanted.length === config.target_modules.length && wanted.every((m) => config.target_modules.includes(m));
  const show = (list: readonly string[]) => JSON.stringify(list.length === resolveTargetModules('all-linear').length ? 'all-linear' : list);
  if (!sameModules) fail('target_modules', show(config.target_modules), show(wanted), 'target_modules');
  if (config.use_rslora !== peft.use_rslora) fail('use_rslora', String(config.use_rslora), String(peft.use_rslora), 'use_rslora');
  if (config.layers_to_transform !== null) {
    throw new UserError(
      `${file}: layers_to_transform ${JSON.stringify(config.layers_to_transform)} adapts only some layers, but a recipe's peft adapts every layer; this adapter cannot be trained here.`,
      { file, field: 'layers_to_transform' },
    );
  }
}

/** Weights trained by `freeze` (every weight of the last N decoder layers) or `full`. */
export function trainableNames(model: CausalLM, type: 'freeze' | 'full', layersToTrain: number): string[] {
  const all = expectedWeights(model.config).map(([name]) => name);
  if (type === 'full') return all;
  const L = model.config.num_hidden_layers;
  const first = Math.max(0, L - layersToTrain);
  return all.filter((name) => {
    const m = /^model\.layers\.(\d+)\./.exec(name);
    return m !== null && Number(m[1]) >= first;
  });
}

async function loadWeightsInto(model: CausalLM, source: FileSource, names: string[]): Promise<void> {
  const where = pathIn(source, 'model.safetensors');
  if (!source.has('model.safetensors')) throw new UserError(`${where} is missing; the checkpoint has no model weights.`, { file: where });
  const folder = await openModelFolder(source);
  const wanted = new Set(names);
  for (const name of names) {
    if (!folder.tensors.has(name)) throw new UserError(`${where}: weight ${name} is missing.`, { file: where, field: name });
  }
  await folder.readWeights((w) => {
    if (!wanted.has(w.name)) return;
    const old = model.params.get(w.name)!;
    model.params.set(w.name, tf.tensor(floatValues(w, where), w.shape, 'float32'));
    old.dispose();
  });
}

/** The tokenizer of a model folder, without reading its weights (for `finetune data`). */
export async function loadTokenizer(source: FileSource): Promise<TextTokenizer> {
  for (const name of ['tokenizer.json', 'tokenizer_config.json']) {
    if (!source.has(name)) {
      throw new UserError(`${pathIn(source, name)} is missing: a model folder needs config.json, tokenizer.json and tokenizer_config.json.`, { file: pathIn(source, name) });
    }
  }
  const tokenizerJson = await readJsonObject(source, 'tokenizer.json');
  const tokenizerConfig = await readJsonObject(source, 'tokenizer_config.json');
  await adoptChatTemplateFile(source, tokenizerConfig);
  const generationConfig = source.has('generation_config.json') ? await readJsonObject(source, 'generation_config.json') : null;
  // The model's context length caps max_length; config.json is optional for `finetune data`.
  const modelConfig = source.has('config.json') ? await readJsonObject(source, 'config.json') : null;
  return TextTokenizer.fromFiles(tokenizerJson, tokenizerConfig, generationConfig, pathIn(source, 'tokenizer_config.json'), modelConfig);
}

/** Newer Hub repos keep the chat template in chat_template.jinja instead of tokenizer_config.json. */
async function adoptChatTemplateFile(source: FileSource, tokenizerConfig: Record<string, unknown>): Promise<void> {
  if (tokenizerConfig.chat_template === undefined && source.has('chat_template.jinja')) {
    tokenizerConfig.chat_template = await readText(source, 'chat_template.jinja');
  }
}
