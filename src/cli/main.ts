/**
 * `finetune`: the engine from a terminal. Every command checks all of its input before it
 * writes anything; a mistake prints one sentence and exits with status 2.
 */
import './quiet_tfjs.ts';
import { existsSync, statSync } from 'node:fs';
import { appendFile, mkdir, readFile, readdir, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { UserError, decodeUtf8Text } from '../engine/errors.ts';
import { adapterName, initBackend, initFastestBackend, type BackendInfo, type BackendName } from '../engine/backend/index.ts';
import { METHODS, parseRecipe, parseRecipeJson, applyOverrides, SHORT_RUN_STEPS, type GrpoRecipe, type MethodName, type PreferenceRecipe, type Recipe } from '../engine/recipe.ts';
import { loadModel, loadTokenizer, prepareRun, type LoadedModel } from '../engine/run.ts';
import { loadAdapter } from '../engine/io/peft.ts';
import { modelFiles, savedDType } from '../engine/export.ts';
import { quantizedFolderFiles } from '../engine/quantize.ts';
import { exportGgufCommand } from './export_gguf.ts';
import { exportTrlCommand } from './export_trl.ts';
import { openModelFolder } from '../engine/io/model_folder.ts';
import { createMethod, prepareMethodData } from '../engine/train/methods/index.ts';
import { FORMAT_NAMES } from '../engine/data/formats.ts';
import { ktoDumpRow, pairDumpRow, type KtoExample, type PairExample } from '../engine/data/preference.ts';
import { preferenceReport } from '../engine/data/preference_report.ts';
import { promptDumpRow, type PromptExample } from '../engine/data/prompts.ts';
import { sftDataReport } from '../engine/data/report.ts';
import type { DatasetStats, LengthStats } from '../engine/data/sft.ts';
import type { TextTokenizer } from '../engine/data/tokenizer.ts';
import { evaluateMethod } from '../engine/train/step.ts';
import { generate } from '../engine/model/generate.ts';
import { promptIds, samplingOptions } from '../engine/model/prompt.ts';
import { checkFiniteAdapter } from '../engine/model/check.ts';
import { storageQuantization, type StorageQuantization } from '../engine/model/quantized.ts';
import type { LogEntry } from '../engine/train/trainer.ts';
import { nodeFolder, writeFileAtomic, writeFolderAtomic } from './fs_files.ts';
import { nodeRewardHost } from './reward_process.ts';
import { onceEach } from '../engine/train/reward_funcs.ts';
import type { CompletionRecord } from '../engine/train/methods/grpo.ts';
import { checkFlags, numberFlag, parseArgs, required, type ParsedArgs } from './args.ts';
import { loadProgress, Progress } from './progress.ts';
import { describeFailure, type FailureContext } from './failure.ts';
import { checkOutputDir, cleanLeftovers, truncateMetrics } from './output_dir.ts';

const USAGE = `finetune — fine-tune small LLMs with LoRA on TensorFlow.js

  finetune train RECIPE.json [--key value …]     train; flags override recipe keys (--learning_rate 1e-4, --peft.r 8)
  finetune eval --model DIR [--adapter DIR] --data FILE [--method sft] [--max_length N] [--json]
  finetune data FILE --model DIR [--method sft] [--max_length N] [--dump OUT.jsonl]
  finetune generate --model DIR [--adapter DIR] --prompt TEXT [--chat] [--max_new_tokens N]
                    [--temperature T] [--top_p P] [--top_k K] [--seed S] [--num_return_sequences N]
  finetune merge --model DIR --adapter DIR --out DIR
  finetune quantize --model DIR --out DIR [--bnb_4bit_quant_type nf4|fp4] [--bnb_4bit_use_double_quant]
                    writes the model as transformers saves a bitsandbytes 4-bit checkpoint
  finetune export-gguf --model DIR [--adapter DIR] --out FILE.gguf [--outtype f32|f16|bf16|q8_0] [--lora]
                    a GGUF for llama.cpp, Ollama, LM Studio: the merged model, or (--lora) the adapter
  finetune export-trl RECIPE.json --out DIR [--key value …]
                    the recipe as a TRL + accelerate job (train.py, accelerate configs, data, README)

train, eval, generate and merge also take --backend cpu|wasm|webgpu; the default is the fastest
available here: webgpu on a hardware GPU, else wasm (a software GPU such as SwiftShader is slower).
eval, generate and merge quantise the base as a recipe's quantization block does with --load_in_4bit
[--bnb_4bit_quant_type nf4|fp4] [--bnb_4bit_use_double_quant] or --load_in_8bit (QLoRA).
A recipe that leaves logging_steps unset logs every step of a run shorter than ${SHORT_RUN_STEPS} steps.`;

/** What the failure message needs to know about the command that failed. */
const failure: FailureContext = { command: 'finetune', backend: 'cpu' };

const COMMANDS: Record<string, (argv: string[]) => Promise<void>> = { train, eval: evaluate, data, generate: generateCommand, merge, quantize, 'export-gguf': exportGgufCommand, 'export-trl': exportTrlCommand };

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (!command || command === '--help' || command === '-h' || command === 'help') {
    console.log(USAGE);
    return command ? 0 : 2;
  }
  const run = COMMANDS[command];
  if (!run) throw new UserError(`finetune: unknown command "${command}"; the commands are ${Object.keys(COMMANDS).join(', ')}.`);
  failure.command = command;
  await run(rest);
  return typeof process.exitCode === 'number' ? process.exitCode : 0;
}

/**
 * Starts the backend --backend names, or without it the fastest available here. Returns the
 * command's opening line, which says which and why; the command prints it once every input is
 * checked, so that a refused input is still the one line printed.
 */
async function useBackend(args: ParsedArgs, command: string): Promise<string> {
  failure.flags = args.flags;
  const flag = args.flags.get('backend');
  if (flag !== undefined && !['cpu', 'wasm', 'webgpu'].includes(flag)) throw new UserError(`finetune ${command}: --backend must be cpu, wasm or webgpu (got "${flag}").`);
  const wanted = flag as BackendName | undefined;
  if (wanted === undefined || wanted === 'webgpu') {
    const { installNodeWebGPU } = await import('../engine/backend/node_webgpu.ts');
    await installNodeWebGPU();
  }
  if (wanted === undefined) {
    const info = await initFastestBackend();
    failure.backend = info.name;
    const passedOver = info.fallbackReason ? `; ${info.fallbackReason}` : '';
    return `Backend: ${backendName(info)} (the fastest available here${passedOver}; choose with --backend cpu|wasm|webgpu).`;
  }
  const info = await initBackend(wanted);
  if (info.name !== wanted) throw new UserError(`finetune ${command}: the ${wanted} backend is not available here (${info.fallbackReason ?? 'no reason given'}).`);
  failure.backend = wanted;
  return `Backend: ${backendName(info)} (chosen with --backend).`;
}

function backendName(info: BackendInfo): string {
  return info.name === 'webgpu' && info.adapter ? `webgpu on ${adapterName(info.adapter)}` : info.name;
}

function folder(dir: string, what: string) {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new UserError(`${dir}: no such folder (the ${what}).`, { file: dir });
  return nodeFolder(dir);
}

async function textFile(path: string, what: string): Promise<{ text: string; file: string }> {
  if (!existsSync(path) || !statSync(path).isFile()) throw new UserError(`${path}: no such file (the ${what}).`, { file: path });
  return { text: decodeUtf8Text(await readFile(path), path), file: path };
}

function methodFlag(args: ParsedArgs, command: string): MethodName {
  const m = args.flags.get('method') ?? 'sft';
  if (!(METHODS as readonly string[]).includes(m)) throw new UserError(`finetune ${command}: --method must be one of ${METHODS.join(', ')} (got "${m}").`);
  return m as MethodName;
}

/** The flags of eval and data that are recipe fields (the method's own, and the data settings). */
const RECIPE_FLAGS = ['max_length', 'system_prompt', 'completion_only_loss', 'assistant_only_loss', 'use_chat_template', 'beta', 'loss_type', 'desirable_weight', 'undesirable_weight', 'simpo_gamma', 'max_prompt_length', 'max_completion_length'];

/** What `finetune data --method grpo` needs to parse a GRPO recipe: a reward function; its prompts do not depend on it. */
const DATA_ONLY_REWARD = [{ name: 'length', target: 1 }];

/** A recipe for eval and data from their flags: the method, its fields, the data settings. */
function flagRecipe(args: ParsedArgs, file: string, method: MethodName, source: string): Recipe {
  const overrides = Object.fromEntries([...args.flags].filter(([k]) => RECIPE_FLAGS.includes(k)));
  const base = method === 'grpo' ? { model: '-', train_file: file, method, reward_funcs: DATA_ONLY_REWARD, per_device_train_batch_size: 8, num_generations: 8 } : { model: '-', train_file: file, method };
  return parseRecipe(applyOverrides(base, overrides, 'command line'), source);
}

// ---------------------------------------------------------------------------------------------

async function train(argv: string[]): Promise<void> {
  const args = parseArgs(argv, 'train');
  const [recipePath, ...extra] = args.positionals;
  if (!recipePath) throw new UserError('finetune train: give the recipe file, e.g. finetune train recipe.json.');
  if (extra.length) throw new UserError(`finetune train: unexpected argument "${extra[0]}".`);
  const overrides = Object.fromEntries([...args.flags].filter(([k]) => k !== 'backend'));
  const { text } = await textFile(recipePath, 'recipe');
  // Overrides go onto the file's own JSON so that defaults are applied once, after both.
  const json = applyOverrides(parseRecipeJson(text, recipePath), overrides);
  const recipe = parseRecipe(json, recipePath);
  failure.recipe = recipe;
  // Before anything is loaded: a folder that cannot be written would fail only at the first checkpoint.
  await checkOutputDir(recipe.output_dir);
  const opening = await useBackend(args, 'train');

  const sources = {
    model: folder(recipe.model, 'model'),
    train: await textFile(recipe.train_file, 'train_file'),
    eval: recipe.eval_file ? await textFile(recipe.eval_file, 'eval_file') : null,
    initAdapter: recipe.init_adapter ? folder(recipe.init_adapter, 'init_adapter') : null,
    // A checkpoint folder or an output folder (true: output_dir); prepareRun picks its newest checkpoint.
    resumeFrom: recipe.resume_from_checkpoint === true
      ? folder(recipe.output_dir, 'output_dir, where resume_from_checkpoint true looks for checkpoints')
      : recipe.resume_from_checkpoint ? folder(recipe.resume_from_checkpoint, 'resume_from_checkpoint') : null,
  };
  const out = recipe.output_dir;
  let stopRequested = false;
  const onSigint = () => {
    if (stopRequested) process.exit(130);
    stopRequested = true;
    process.stderr.write('\nStopping after this step and saving a checkpoint (Ctrl-C again quits at once).\n');
  };
  const metricsPath = join(out, 'metrics.jsonl');
  const completionsPath = join(out, 'completions.jsonl');
  let progress: Progress | null = null;
  let savedStep: number | null = null;
  // GRPO: JavaScript rewards run in a child process; each distinct warning is printed once.
  const rewardHost = recipe.method === 'grpo' && recipe.reward_funcs.some((f) => typeof f === 'string') ? nodeRewardHost() : null;
  const online = recipe.method !== 'grpo' ? undefined : {
    host: rewardHost,
    readScript: async (path: string) => (await textFile(path, 'reward function in reward_funcs')).text,
    onCompletions: recipe.log_completions
      ? (records: CompletionRecord[]) => appendFile(completionsPath, records.map((r) => JSON.stringify(r) + '\n').join(''))
      : undefined,
    onWarning: onceEach((message) => {
      if (progress) progress.note(`warning: ${message}`);
      else process.stderr.write(`warning: ${message}\n`);
    }),
  };
  let run: Awaited<ReturnType<typeof prepareRun>>;
  try {
    run = await prepareRun(recipe, sources, {
    onLog: async (entry: LogEntry) => {
      await appendFile(metricsPath, JSON.stringify(entry) + '\n');
      progress?.update(entry);
    },
    onCheckpoint: async (step, files) => {
      await writeFolderAtomic(join(out, `checkpoint-${step}`), files);
      savedStep = step;
      await pruneCheckpoints(out, recipe.save_total_limit);
    },
    shouldStop: () => stopRequested,
  }, { onProgress: loadProgress(process.stderr) }, { loggingStepsSet: 'logging_steps' in json, online });
  } catch (e) {
    await rewardHost?.dispose();
    throw e;
  }
  const t = run.trainer;
  // Everything is checked: only now does the output folder come into being.
  await mkdir(out, { recursive: true });
  await cleanLeftovers(out);
  // A resumed run logs from the checkpoint's step on; lines past it came from the run that stopped.
  for (const path of [metricsPath, completionsPath]) {
    if (sources.resumeFrom) await truncateMetrics(path, t.state.global_step);
    else await rm(path, { force: true });
  }
  failure.kept = () => (savedStep === null ? null : `the checkpoint from step ${savedStep} is kept in ${join(out, `checkpoint-${savedStep}`)}`);
  process.stderr.write(opening + '\n');
  const warnings = run.train.warnings;
  for (const w of warnings) process.stderr.write(`warning: ${w}\n`);
  const logging = run.recipe.logging_steps === 1 ? 'logging every step' : `logging every ${run.recipe.logging_steps} steps`;
  process.stderr.write(
    `Training ${recipe.peft.type}${recipe.method === 'sft' ? '' : ` ${recipe.method.toUpperCase()}`} on ${run.trainExamples.length} ${['dpo', 'orpo', 'simpo'].includes(recipe.method) ? 'pairs' : 'examples'}` +
      (run.train.dropped.length ? ` (${run.train.dropped.length} rows dropped: ${recipe.method === 'sft' ? 'no trainable token' : run.train.dropped[0].reason})` : '') +
      (run.evalExamples.length ? `, evaluating on ${run.evalExamples.length}` : '') +
      `, ${t.totalSteps} steps, ${logging}` +
      (run.recipe.logging_steps !== recipe.logging_steps ? ` (logging_steps is unset and the run is shorter than ${SHORT_RUN_STEPS} steps)` : '') +
      '.\n',
  );
  // The bar comes after the lines above: a line written after it would land on the bar's own line.
  progress = new Progress(t.totalSteps, t.state.global_step, process.stderr);
  process.on('SIGINT', onSigint);
  try {
    const state = await t.train();
    progress.done();
    const files = { ...(await run.outputFiles()), 'trainer_state.json': new TextEncoder().encode(JSON.stringify(t.trainerStateJson(), null, 2)) };
    for (const [name, content] of Object.entries(files)) await writeFileAtomic(join(out, name), content);
    await writeFileAtomic(join(out, 'recipe.json'), JSON.stringify(run.recipe, null, 2) + '\n');
    if (state.global_step < t.totalSteps) {
      const ckpt = join(out, `checkpoint-${state.global_step}`);
      await writeFolderAtomic(ckpt, await t.checkpointFiles());
      process.stderr.write(`Stopped at step ${state.global_step} of ${t.totalSteps}; continue with --resume_from_checkpoint ${ckpt}\n`);
    } else {
      process.stderr.write(`Saved to ${out}\n`);
    }
  } finally {
    process.off('SIGINT', onSigint);
    run.dispose();
    await rewardHost?.dispose();
  }
}

/** save_total_limit: keep the newest N checkpoint-* folders. */
async function pruneCheckpoints(out: string, limit: number | null): Promise<void> {
  if (!limit) return;
  const steps = (await readdir(out))
    .map((n) => /^checkpoint-(\d+)$/.exec(n))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => Number(m[1]))
    .sort((a, b) => a - b);
  for (const s of steps.slice(0, Math.max(0, steps.length - limit))) await rm(join(out, `checkpoint-${s}`), { recursive: true, force: true });
}

/** The bare flags of eval, generate and merge that quantise the base as a recipe's `quantization` block does. */
const QUANT_BOOLEANS = ['load_in_4bit', 'bnb_4bit_use_double_quant', 'load_in_8bit'];
const QUANT_FLAGS = [...QUANT_BOOLEANS, 'bnb_4bit_quant_type'];

/** `--load_in_4bit [--bnb_4bit_quant_type nf4|fp4] [--bnb_4bit_use_double_quant]` or `--load_in_8bit`, checked as the recipe's block is. */
function quantizationFlags(args: ParsedArgs, command: string): StorageQuantization | null {
  const overrides = Object.fromEntries(QUANT_FLAGS.filter((f) => args.flags.has(f)).map((f) => [`quantization.${f}`, args.flags.get(f)!]));
  if (Object.keys(overrides).length === 0) return null;
  const recipe = parseRecipe(applyOverrides({ model: '-', train_file: '-' }, overrides, 'command line'), `finetune ${command}`);
  const q = recipe.quantization;
  if (!q.load_in_4bit && !q.load_in_8bit) throw new UserError(`finetune ${command}: --bnb_4bit_quant_type and --bnb_4bit_use_double_quant go with --load_in_4bit.`);
  return storageQuantization(q);
}

async function withModel(args: ParsedArgs, command: string): Promise<LoadedModel & { adapter: Awaited<ReturnType<typeof loadAdapter>> | null; quantization: StorageQuantization | null }> {
  const modelDir = required(args, command, 'model');
  const quantization = quantizationFlags(args, command);
  const loaded = await loadModel(folder(modelDir, 'model'), { onProgress: loadProgress(process.stderr), quantization });
  const adapterDir = args.flags.get('adapter');
  const adapter = adapterDir ? await loadAdapter(loaded.model, folder(adapterDir, 'adapter')) : null;
  if (adapter && adapterDir) await checkFiniteAdapter(adapter, adapterDir);
  return { ...loaded, adapter, quantization };
}

async function evaluate(argv: string[]): Promise<void> {
  const args = parseArgs(argv, 'eval', ['json', ...QUANT_BOOLEANS]);
  checkFlags(args, 'eval', ['model', 'adapter', 'data', 'method', 'batch_size', 'json', 'backend', ...RECIPE_FLAGS, ...QUANT_FLAGS]);
  const method = methodFlag(args, 'eval');
  if (method === 'grpo') throw new UserError('finetune eval: GRPO has no loss to evaluate on a file (its completions are sampled while training); `finetune generate` samples from the trained adapter.', { field: 'method' });
  const dataFile = await textFile(required(args, 'eval', 'data'), 'data');
  const batchSize = numberFlag(args, 'eval', 'batch_size', { integer: true, min: 1 }) ?? 8;
  const recipe = flagRecipe(args, dataFile.file, method, 'eval options');
  const opening = await useBackend(args, 'eval');
  const { model, tokenizer, adapter } = await withModel(args, 'eval');
  const data = prepareMethodData(dataFile.text, dataFile.file, tokenizer, recipe);
  process.stderr.write(opening + '\n');
  // The reference of DPO and KTO is the base model, the adapter switched off.
  const m = await createMethod({ ...recipe, per_device_eval_batch_size: batchSize }, model, tokenizer, [data.examples]);
  const ev = await evaluateMethod(m, { model, adapter }, data.examples, batchSize);
  // SFT's loss is a token mean (num_tokens: the tokens trained on); the others' a mean over rows.
  const num_tokens = method === 'sft' ? ev.num_items : ev.num_tokens;
  const metrics = method === 'sft' ? { perplexity: Math.exp(ev.loss) } : ev.metrics;
  const result = { loss: ev.loss, num_tokens, num_examples: data.examples.length, metrics };
  if (args.flags.has('json')) console.log(JSON.stringify(result));
  else if (method === 'sft') console.log(`loss ${ev.loss.toFixed(4)} (perplexity ${metrics.perplexity.toFixed(2)}) over ${num_tokens} tokens in ${data.examples.length} examples`);
  else console.log(`${method} loss ${ev.loss.toFixed(4)} over ${data.examples.length} examples (${num_tokens} tokens); ${Object.entries(metrics).map(([k, v]) => `${k} ${v.toFixed(4)}`).join(', ')}`);
  adapter?.dispose();
  model.dispose();
}

async function data(argv: string[]): Promise<void> {
  const args = parseArgs(argv, 'data');
  checkFlags(args, 'data', ['model', 'method', 'dump', ...RECIPE_FLAGS]);
  const method = methodFlag(args, 'data');
  const [path] = args.positionals;
  if (!path) throw new UserError('finetune data: give the dataset file, e.g. finetune data train.jsonl --model DIR.');
  const file = await textFile(path, 'dataset');
  const recipe = flagRecipe(args, path, method, 'data options');
  const tokenizer = await loadTokenizer(folder(required(args, 'data', 'model'), 'model'));
  if (recipe.method === 'grpo') return promptData(args, path, file.text, tokenizer, recipe);
  if (recipe.method !== 'sft') return preferenceData(args, path, file.text, tokenizer, recipe);

  // The same report the studio's data view shows.
  const { report, data: sft } = sftDataReport(path, file.text, tokenizer, recipe);
  console.log(`${path}: ${report.format ?? 'no valid row'} format, ${report.num_rows} rows`);
  const s = report.stats;
  if (s) {
    const cut = s.histogram.max_length;
    const cutBy = cut === null ? 'none' : cut === recipe.max_length ? `max_length ${cut}` : `the model's ${cut} positions`;
    console.log(`examples ${s.num_examples}, dropped ${s.num_dropped} (no trainable token), truncated ${s.num_truncated} (cut: ${cutBy})`);
    console.log(`tokens ${s.total_tokens} (trained ${s.trainable_tokens}); length as trained: ${lengths(s.length)}`);
    if (s.num_truncated > 0) console.log(`length before truncation: ${lengths(s.length_before_truncation)}`);
    for (const line of histogramLines(s.histogram)) console.log(line);
  }
  for (const d of report.dropped) console.log(`dropped: ${path}, line ${d.line}: ${d.reason}`);
  for (const w of report.warnings) console.log(`warning: ${w}`);
  for (const e of report.errors) console.log(`bad row: ${e.message}`);
  const dump = args.flags.get('dump');
  if (dump) {
    const lines = (sft?.examples ?? []).map((e) => JSON.stringify({ input_ids: e.input_ids, labels: e.labels })).join('\n');
    await writeFileAtomic(dump, lines ? lines + '\n' : '');
    console.log(`wrote ${sft?.examples.length ?? 0} examples to ${dump}`);
  }
  if (report.errors.length) process.exitCode = 1;
}

/** `finetune data --method dpo|kto|orpo|simpo`: the format for that method, counts, lengths, every bad row; --dump writes what is trained. */
async function preferenceData(args: ParsedArgs, path: string, text: string, tokenizer: TextTokenizer, recipe: PreferenceRecipe): Promise<void> {
  const report = preferenceReport(text, path, tokenizer, recipe);
  console.log(`${path}: ${report.format === null ? 'no valid row' : FORMAT_NAMES[report.format]} for ${recipe.method.toUpperCase()}, ${report.num_rows} rows`);
  const p = report.preference;
  if (p?.kind === 'kto') {
    console.log(`examples ${p.stats.num_examples} (${p.stats.num_desirable} desirable, ${p.stats.num_undesirable} undesirable), dropped ${report.dropped.length}, truncated ${report.truncated}`);
    console.log(`prompt tokens: ${lengths(p.stats.prompt)}`);
    console.log(`completion tokens: ${lengths(p.stats.completion)}`);
  } else if (p?.kind === 'pairs') {
    console.log(`pairs ${p.stats.num_examples}, dropped ${report.dropped.length}, truncated ${report.truncated}`);
    console.log(`prompt tokens: ${lengths(p.stats.prompt)}`);
    console.log(`chosen tokens: ${lengths(p.stats.chosen)}`);
    console.log(`rejected tokens: ${lengths(p.stats.rejected)}`);
  }
  for (const d of report.dropped) console.log(`dropped: ${path}, line ${d.line}: ${d.reason}`);
  for (const w of report.warnings) console.log(`warning: ${w}`);
  for (const e of report.errors) console.log(`bad row: ${e.message}`);
  const dump = args.flags.get('dump');
  if (dump) {
    const rows = recipe.method === 'kto' ? (report.examples as KtoExample[]).map(ktoDumpRow) : (report.examples as PairExample[]).map(pairDumpRow);
    await writeFileAtomic(dump, rows.map((r) => JSON.stringify(r) + '\n').join(''));
    console.log(`wrote ${rows.length} examples to ${dump}`);
  }
  if (report.errors.length) process.exitCode = 1;
}

/** `finetune data --method grpo`: the prompts, their lengths and the columns the reward functions get; --dump writes {prompt_ids, …columns}. */
async function promptData(args: ParsedArgs, path: string, text: string, tokenizer: TextTokenizer, recipe: GrpoRecipe): Promise<void> {
  const report = preferenceReport(text, path, tokenizer, recipe);
  console.log(`${path}: ${report.format === null ? 'no valid row' : FORMAT_NAMES[report.format]} for GRPO, ${report.num_rows} rows`);
  const p = report.preference;
  if (p?.kind === 'prompts') {
    console.log(`prompts ${p.stats.num_examples}, dropped ${report.dropped.length}, truncated ${report.truncated}`);
    console.log(`prompt tokens: ${lengths(p.stats.prompt)}`);
    console.log(`columns for the reward functions: ${p.stats.columns.length ? p.stats.columns.join(', ') : 'none'}`);
  }
  for (const d of report.dropped) console.log(`dropped: ${path}, line ${d.line}: ${d.reason}`);
  for (const w of report.warnings) console.log(`warning: ${w}`);
  for (const e of report.errors) console.log(`bad row: ${e.message}`);
  const dump = args.flags.get('dump');
  if (dump) {
    const rows = (report.examples as PromptExample[]).map(promptDumpRow);
    await writeFileAtomic(dump, rows.map((r) => JSON.stringify(r) + '\n').join(''));
    console.log(`wrote ${rows.length} prompts to ${dump}`);
  }
  if (report.errors.length) process.exitCode = 1;
}

function lengths(l: LengthStats): string {
  return `min ${l.min}, mean ${Math.round(l.mean * 10) / 10}, median ${l.median}, p95 ${l.p95}, max ${l.max}`;
}

/** The histogram of lengths before truncation as text: one bar per bin, a rule at the cut. */
function histogramLines(h: DatasetStats['histogram']): string[] {
  if (h.counts.length === 0) return [];
  const most = Math.max(...h.counts);
  const labels = h.counts.map((_, i) => {
    const [lo, hi] = [h.bin_edges[i], h.bin_edges[i + 1] - 1];
    return lo === hi ? String(lo) : `${lo}–${hi}`;
  });
  const width = Math.max(...labels.map((l) => l.length));
  const lines = [`tokens per row before truncation${h.max_length === null ? '' : `, cut at ${h.max_length}`}:`];
  h.counts.forEach((count, i) => {
    const cutHere = h.max_length !== null && h.bin_edges[i] > h.max_length && (i === 0 || h.bin_edges[i - 1] <= h.max_length);
    if (cutHere) lines.push(`  ${'-'.repeat(width)}  cut at ${h.max_length}: the rows below lose their end`);
    lines.push(`  ${labels[i].padStart(width)}  ${'#'.repeat(Math.ceil((count / most) * 40)).padEnd(40)}  ${count}`);
  });
  return lines;
}

async function generateCommand(argv: string[]): Promise<void> {
  const args = parseArgs(argv, 'generate', ['chat', ...QUANT_BOOLEANS]);
  checkFlags(args, 'generate', ['model', 'adapter', 'prompt', 'chat', 'max_new_tokens', 'temperature', 'top_p', 'top_k', 'seed', 'num_return_sequences', 'backend', ...QUANT_FLAGS]);
  const prompt = required(args, 'generate', 'prompt');
  const g = {
    max_new_tokens: numberFlag(args, 'generate', 'max_new_tokens', { integer: true, min: 1 }),
    temperature: numberFlag(args, 'generate', 'temperature', { min: 0 }),
    top_p: numberFlag(args, 'generate', 'top_p', { min: 0 }),
    top_k: numberFlag(args, 'generate', 'top_k', { integer: true, min: 0 }),
    seed: numberFlag(args, 'generate', 'seed', { integer: true }),
    num_return_sequences: numberFlag(args, 'generate', 'num_return_sequences', { integer: true, min: 1 }),
  };
  const opening = await useBackend(args, 'generate');
  const { model, tokenizer, adapter, folder: f } = await withModel(args, 'generate');
  process.stderr.write(opening + '\n');
  const ids = args.flags.has('chat') ? promptIds(tokenizer, [{ role: 'user', content: prompt }], 'template') : promptIds(tokenizer, prompt);
  const n = g.num_return_sequences ?? 1;
  let streamed = '';
  const all: number[] = [];
  const completions = await generate(model, [ids], {
    adapter,
    max_new_tokens: g.max_new_tokens ?? 128,
    ...samplingOptions(f.generationConfig, g),
    seed: g.seed ?? 0,
    num_return_sequences: n,
    eos_token_id: tokenizer.eosTokenIds,
    pad_token_id: tokenizer.padTokenId,
    onTokens: n === 1 ? (tokens) => {
      // Stream the decoded text as it grows; decoding the whole completion keeps multi-byte characters whole.
      const t = tokens[0];
      if (t < 0 || tokenizer.eosTokenIds.includes(t)) return;
      all.push(t);
      const now = tokenizer.decode(all, { skip_special_tokens: true });
      process.stdout.write(now.slice(streamed.length));
      streamed = now;
    } : undefined,
  });
  if (n === 1) process.stdout.write('\n');
  else completions.forEach((c, i) => console.log(`--- ${i + 1}\n${tokenizer.decode(c, { skip_special_tokens: true })}`));
  adapter?.dispose();
  model.dispose();
}

async function merge(argv: string[]): Promise<void> {
  const args = parseArgs(argv, 'merge', QUANT_BOOLEANS);
  checkFlags(args, 'merge', ['model', 'adapter', 'out', 'backend', ...QUANT_FLAGS]);
  const out = required(args, 'merge', 'out');
  required(args, 'merge', 'adapter');
  // The merged folder replaces `out` whole: refuse a file there, or a folder that cannot be written.
  await checkOutputDir(out, '--out', { replacedWhole: true });
  const opening = await useBackend(args, 'merge');
  const { model, adapter, folder: f } = await withModel(args, 'merge');
  const q = model.quantization();
  process.stderr.write(opening + '\n');
  await writeFolderAtomic(out, await modelFiles(f, model, savedDType(f), adapter));
  console.log(`merged model written to ${out}`);
  if (q) console.log(`the base was quantised (${q.kind}${q.kind !== 'int8' && q.double_quant ? ' with double quantisation' : ''}): its projections are the dequantised weights plus the LoRA delta, in ${savedDType(f)}, as PEFT's merge_and_unload does on a quantised model.`);
  adapter?.dispose();
  model.dispose();
}

/**
 * A model folder written as a pre-quantised bitsandbytes 4-bit checkpoint, as transformers'
 * save_pretrained writes one (what unsloth's "-bnb-4bit" repos hold): a quarter of the download,
 * and it loads here, in transformers and in PEFT as a 4-bit base. Runs on the host, no backend.
 */
async function quantize(argv: string[]): Promise<void> {
  const args = parseArgs(argv, 'quantize', ['bnb_4bit_use_double_quant', 'load_in_4bit', 'load_in_8bit']);
  if (args.flags.has('load_in_8bit')) {
    throw new UserError('finetune quantize writes bitsandbytes 4-bit checkpoints only; 8-bit quantisation happens as a model loads (--load_in_8bit on eval, generate and merge, or quantization.load_in_8bit in a recipe).', { field: 'load_in_8bit' });
  }
  checkFlags(args, 'quantize', ['model', 'out', 'bnb_4bit_quant_type', 'bnb_4bit_use_double_quant', 'load_in_4bit']);
  const modelDir = required(args, 'quantize', 'model');
  const out = required(args, 'quantize', 'out');
  // The flags are the recipe's quantization block, with load_in_4bit implied.
  const flags = new Map([...args.flags, ['load_in_4bit', 'true']] as [string, string][]);
  const q = quantizationFlags({ ...args, flags }, 'quantize');
  if (!q || q.kind === 'int8') throw new Error('quantize: no 4-bit quantisation');
  await checkOutputDir(out, '--out', { replacedWhole: true });
  const source = folder(modelDir, 'model');
  if (resolve(modelDir) === resolve(out)) throw new UserError(`finetune quantize: --out ${out} is the model folder itself; write the quantised model to a new folder.`, { field: 'out' });
  const files = await quantizedFolderFiles(await openModelFolder(source), { quant_type: q.kind, double_quant: q.double_quant }, loadProgress(process.stderr));
  await writeFolderAtomic(out, files);
  const bytes = files['model.safetensors'].length;
  console.log(`quantised model written to ${out} (${q.kind}${q.double_quant ? ' with double quantisation' : ''}; model.safetensors ${(bytes / 2 ** 20).toFixed(1)} MiB)`);
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    const { message, code } = describeFailure(e, failure);
    console.error(message);
    process.exit(code);
  },
);
