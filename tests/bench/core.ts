/**
 * What `npm run bench` measures on one backend, the same code in Node and in a page: LoRA SFT
 * steps on random-weight models, the best matmul on the same adapter, dispatches, physical
 * memory, and generation speed. Browser-safe: no Node imports (Node's WebGPU must already be on
 * `navigator.gpu` when `runBackend` is called).
 */
import * as tf from '@tensorflow/tfjs';
import { getThreadsCount, setThreadsCount } from '@tensorflow/tfjs-backend-wasm';
import { initBackend, type BackendInfo, type BackendName } from '../../src/engine/backend/index.ts';
import { meterBackendMemory, type MemoryMeter } from '../../src/engine/backend/memory.ts';
import {
  disposeFrozenWeight,
  float32ToBits16,
  frozenWeightF32,
  linearForward,
  linearForwardComposed,
  linearInputGrad,
  linearInputGradComposed,
  packQuantizedWeight,
  packWeight16,
  unpackWeight,
  type FrozenWeight,
} from '../../src/engine/backend/kernels/linear.ts';
import { CausalLM, frozenWeightBytes } from '../../src/engine/model/llama.ts';
import { isQuantizedProjection } from '../../src/engine/model/quantized.ts';
import { LoraAdapter, resolveTargetModules } from '../../src/engine/model/lora.ts';
import { generate } from '../../src/engine/model/generate.ts';
import { AdamW } from '../../src/engine/train/optim.ts';
import { collate } from '../../src/engine/train/batch.ts';
import { sftMethod } from '../../src/engine/train/methods/sft.ts';
import { trainStep } from '../../src/engine/train/step.ts';
import { Rng } from '../../src/engine/rng.ts';
import { largestLinear, modelConfig, parseModelConfig, randomWeights, stepFlops, storageQuantization, tokenFlops, type Storage } from './models.ts';

export const LORA_RANK = 16;

/** What to run on one backend; 'auto' fields are settled once the adapter is known (see `resolvePlan`). */
export interface Plan {
  runtime: 'node' | 'chromium';
  backend: BackendName;
  models: string[] | 'auto';
  storages: Storage[];
  checkpointing: boolean[];
  seqs: number[] | 'auto';
  steps: number | 'auto';
  genTokens: number | 'auto';
  /** Rows of each generation case (one prompt, `num_return_sequences` = batch, as GRPO samples a group). */
  genBatches: number[];
  /** Generate with a fresh LoRA adapter applied (as GRPO's policy), with the base model alone, or both. */
  genAdapters: ('lora' | 'none')[];
  /**
   * What to measure: LoRA training steps, generation, and (only when asked) 'quant': the fused
   * NF4 products against tfjs's matMul on the dequantised matrix (see `quantCases`).
   */
  cases: ('train' | 'generate' | 'quant')[];
  /** Also run each f32 model with our `Ft*` kernels unregistered (plain tfjs): dispatches "before". */
  before: boolean;
}

export interface CaseResult {
  runtime: string;
  backend: BackendName;
  adapter: string;
  software_adapter: boolean;
  /** WASM: threads XNNPACK runs on. */
  threads: number | null;
  model: string;
  stand_in: boolean;
  layers: number;
  hidden: number;
  vocab: number;
  storage: Storage;
  gradient_checkpointing: boolean;
  batch: number;
  seq: number;
  /** 'ours': the engine as shipped; 'tfjs': every Ft* kernel unregistered (tfjs's own ops). */
  kernels: 'ours' | 'tfjs';
  timed_steps: number;
  step_ms: number;
  tokens_per_s: number;
  /** Model FLOPs of one step (see stepFlops in models.ts). */
  step_flops: number;
  achieved_flops_per_s: number;
  best_matmul_flops_per_s: number;
  best_matmul_variant: string;
  /** achieved / best matmul, both on this adapter in this run. */
  matmul_fraction: number;
  /** WebGPU: GPUComputePassEncoder.dispatchWorkgroups calls per step; null elsewhere. */
  dispatches_per_step: number | null;
  /** tfjs kernel invocations per step (every backend). */
  kernel_calls_per_step: number;
  /** Most bytes of live backend buffers during the timed steps: weights, adapter, optimizer state and the step's transients, each buffer once. */
  peak_bytes: number;
  /** Live bytes just before the timed steps (weights + adapter + optimizer state). */
  resident_bytes: number;
  /** WebGPU: bytes of every GPU buffer tfjs holds, pooled ones too (pool trimmed before each model); WASM: heap size (only grows). */
  reserved_bytes: number | null;
  /** (peak − resident) / 4 / (tokens · layers · hidden): the step's transient memory in floats. */
  transient_floats_per_token_layer_hidden: number;
  frozen_bytes: number;
  frozen_parameters: number;
  frozen_bytes_per_parameter: number;
  loss: number;
}

/**
 * Greedy generation, with a fresh LoRA adapter applied (as GRPO samples) or the base model alone:
 * one GEN_PROMPT-token prompt, `batch` completions of it (num_return_sequences), `new_tokens`
 * each, no EOS.
 */
export interface GenerationResult {
  runtime: string;
  backend: BackendName;
  adapter: string;
  software_adapter: boolean;
  threads: number | null;
  model: string;
  stand_in: boolean;
  layers: number;
  storage: Storage;
  lora: boolean;
  batch: number;
  prompt_tokens: number;
  new_tokens: number;
  /**
   * The first call at these shapes, prefill included: on WebGPU it compiles a pipeline for every
   * program key it has not met before (a generation call after training meets new ones).
   */
  cold_ms: number;
  cold_tokens_per_s: number;
  /** The same call again (the fastest of up to three when a call is short): every pipeline it needs exists. */
  warm_ms: number;
  warm_tokens_per_s: number;
  /** WebGPU: pipelines compiled during the cold call and during the warm ones; null elsewhere. */
  programs_compiled_cold: number | null;
  programs_compiled_warm: number | null;
  /** tfjs kernel calls per generated token position (per forward pass), warm call. */
  kernel_calls_per_step: number;
  /** Model FLOPs per second of the warm call (tokenFlops per row and token). */
  flops_per_s: number;
}

/**
 * One product of a frozen linear with a LoRA adapter on an NF4 weight, timed three ways in the
 * same run on the same inputs and adapter: our fused kernel reading the packed weight, tfjs's
 * matMul on the dequantised float32 matrix (plus tfjs ops for the LoRA term: the composition our
 * kernels replace), and our FtLinear kernels on that float32 matrix.
 */
export interface QuantResult {
  runtime: string;
  backend: BackendName;
  adapter: string;
  software_adapter: boolean;
  threads: number | null;
  /** The weight, [out, in] (SmolLM2-135M's gate projection). */
  shape: [number, number];
  rows: number;
  rank: number;
  product: 'forward' | 'input_grad';
  /** 2·rows·in·out + the LoRA term's 2·rows·r·(out or in). */
  flops: number;
  nf4_fused_ms: number;
  tfjs_matmul_dequantized_ms: number;
  ours_f32_dequantized_ms: number;
  /** tfjs composition time / fused time. */
  speedup_vs_tfjs: number;
  /** max |fused − tfjs| / max(1, max |tfjs|): the two compute the same product. */
  max_relative_difference: number;
  /** Bytes of the NF4 weight (words + absmax) and of the dequantised float32 matrix. */
  nf4_bytes: number;
  f32_bytes: number;
}

type Log = (line: string) => void;

/** Whether this adapter is a software rasteriser (SwiftShader, or one the browser flags as fallback). */
export function isSoftware(info: BackendInfo): boolean {
  const a = info.adapter;
  if (!a) return false;
  return a.isFallbackAdapter === true || /swiftshader|llvmpipe|software/i.test(`${a.vendor} ${a.architecture} ${a.device} ${a.description}`);
}

/**
 * Defaults that fit a ~10-minute run on a 2-core machine without a GPU: a software WebGPU adapter
 * gets the SmolLM2 stand-in at 1×128; WASM the full SmolLM2-135M at 1×128 (and f32 at 1×512); the
 * CPU backend the stand-in. A real GPU gets all three full models at both lengths.
 */
export function resolvePlan(plan: Plan, info: BackendInfo): { [K in keyof Plan]: Exclude<Plan[K], 'auto'> } & { longOnlyF32: boolean } {
  const software = isSoftware(info);
  const host = plan.backend !== 'webgpu';
  const models =
    plan.models !== 'auto'
      ? plan.models
      : plan.backend === 'webgpu'
        ? software ? ['SmolLM2-135M/stand-in'] : ['SmolLM2-135M', 'Qwen2.5-0.5B', 'Llama-3.2-1B']
        : plan.backend === 'wasm' ? ['SmolLM2-135M'] : ['SmolLM2-135M/stand-in'];
  const seqs = plan.seqs !== 'auto' ? plan.seqs : software ? [128] : [128, 512];
  // A SmolLM2-135M step at 1×512 takes over a minute on one WASM thread, so by default only f32
  // runs there (both checkpointing settings, the PyTorch comparison among them).
  const longOnlyF32 = plan.seqs === 'auto' && host;
  const steps = plan.steps !== 'auto' ? plan.steps : software || host ? 1 : 5;
  // SwiftShader decodes a few tokens a second at best; the generation cases stay under a minute.
  const genTokens = plan.genTokens !== 'auto' ? plan.genTokens : software ? 16 : 32;
  return { ...plan, models, seqs, steps, genTokens, longOnlyF32 };
}

function adapterName(info: BackendInfo): string {
  if (info.adapter) return [info.adapter.vendor, info.adapter.architecture, info.adapter.description || info.adapter.device].filter(Boolean).join(' ');
  return info.name === 'wasm' ? 'host CPU (XNNPACK, WebAssembly)' : 'host CPU (JavaScript kernels)';
}

// ---------------------------------------------------------------------------------------------
// Counting dispatches and kernel calls.

const counts = { dispatches: 0, kernels: 0 };
const wrapped = new WeakSet<object>();

/** Wraps every kernel registered for the backend and, where WebGPU exists, dispatchWorkgroups. */
function installCounters(backend: BackendName): void {
  for (const k of tf.getKernelsForBackend(backend)) {
    if (wrapped.has(k)) continue;
    const f = k.kernelFunc;
    (k as { kernelFunc: tf.KernelFunc }).kernelFunc = (args) => {
      counts.kernels++;
      return f(args);
    };
    wrapped.add(k);
  }
  const enc = (globalThis as { GPUComputePassEncoder?: { prototype: GPUComputePassEncoder } }).GPUComputePassEncoder;
  if (enc && !wrapped.has(enc.prototype)) {
    const dispatch = enc.prototype.dispatchWorkgroups;
    enc.prototype.dispatchWorkgroups = function (this: GPUComputePassEncoder, ...args: Parameters<GPUComputePassEncoder['dispatchWorkgroups']>) {
      counts.dispatches++;
      return dispatch.apply(this, args);
    };
    wrapped.add(enc.prototype);
  }
}

/** Runs f with every `Ft*` kernel of the backend unregistered, so the engine falls back to tfjs's own ops. */
async function withoutOwnKernels<T>(backend: BackendName, f: () => Promise<T>): Promise<T> {
  const own = tf.getKernelsForBackend(backend).filter((k) => k.kernelName.startsWith('Ft'));
  for (const k of own) tf.unregisterKernel(k.kernelName, backend);
  try {
    return await f();
  } finally {
    for (const k of own) tf.registerKernel(k);
  }
}

// ---------------------------------------------------------------------------------------------
// Timing helpers.

/** Waits for the backend to finish queued work (WebGPU runs asynchronously). */
async function sync(t: tf.Tensor): Promise<void> {
  await t.data();
}

/**
 * Frees tfjs's pooled WebGPU buffers (it keeps every released buffer by exact size until the
 * backend goes), so `reserved_bytes` describes the model being measured, not those before it.
 */
async function trimGpuPool(): Promise<void> {
  const b = tf.backend() as unknown as {
    device?: GPUDevice;
    submitQueue?: () => void;
    commandEncoder?: GPUCommandEncoder | null;
    bufferManager?: { freeBuffers: Map<string, GPUBuffer[]>; numBytesAllocated: number; numFreeBuffers: number };
  };
  if (!b.bufferManager || !b.device) return;
  if (b.commandEncoder != null) b.submitQueue?.();
  await b.device.queue.onSubmittedWorkDone();
  const m = b.bufferManager;
  for (const list of m.freeBuffers.values()) {
    for (const buf of list) {
      m.numBytesAllocated -= buf.size;
      m.numFreeBuffers--;
      buf.destroy();
    }
    // Keys stay: tfjs's releaseBuffer does nothing at all when the map is empty.
    list.length = 0;
  }
}

/**
 * meterBackendMemory knows the CPU backend's `data` and WASM's `dataIdMap`; tfjs-webgpu keeps the
 * same kind of table under `tensorMap`, so it is shown to the meter under the name it looks for.
 */

const matmulCache = new Map<string, { flops: number; variant: string; all: Record<string, number> }>();

/**
 * The best matmul FLOP/s on this adapter for an [N, in] × [out, in]ᵀ product (the model's largest
 * layer linear at the step's token count): tfjs's matMul with Wᵀ implied (transposeB) and with
 * W stored transposed, and our FtLinear reading f32 and bf16 weights. Each variant is queued
 * `reps` times and read back once, reps chosen so a variant runs for about `targetMs`.
 */
async function bestMatmul(N: number, [out, inp]: [number, number], targetMs: number, log: Log): Promise<{ flops: number; variant: string; all: Record<string, number> }> {
  const key = `${tf.getBackend()} ${N} ${out} ${inp}`;
  const hit = matmulCache.get(key);
  if (hit) return hit;
  const rng = new Rng(7);
  const wValues = rng.uniform(out * inp, -0.04, 0.04);
  const x = tf.tensor2d(rng.uniform(N * inp, -1, 1), [N, inp]);
  const W = tf.tensor2d(wValues, [out, inp]);
  const Wt = tf.transpose(W) as tf.Tensor2D;
  const W16 = packWeight16(float32ToBits16(wValues, 'bfloat16'), [out, inp], 'bfloat16');
  const variants: Record<string, () => tf.Tensor> = {
    'tf.matMul(x, W, transposeB)': () => tf.matMul(x, W, false, true),
    'tf.matMul(x, Wᵀ stored)': () => tf.matMul(x, Wt),
    'FtLinear f32': () => linearForward(x, frozenWeightF32(W)),
    'FtLinear bf16': () => linearForward(x, W16),
  };
  const flops = 2 * N * inp * out;
  const all: Record<string, number> = {};
  for (const [name, f] of Object.entries(variants)) {
    const run = async (reps: number) => {
      const t0 = performance.now();
      let y: tf.Tensor | null = null;
      for (let i = 0; i < reps; i++) {
        y?.dispose();
        y = f();
      }
      await sync(y!);
      y!.dispose();
      return performance.now() - t0;
    };
    await run(1); // compile
    const once = await run(1);
    const reps = Math.max(1, Math.min(50, Math.round(targetMs / Math.max(once, 0.01))));
    const ms = reps === 1 ? once : await run(reps);
    all[name] = flops / ((ms / reps) / 1000);
  }
  tf.dispose([x, W, Wt, W16.data]);
  const [variant, best] = Object.entries(all).sort((a, b) => b[1] - a[1])[0];
  log(`  best matmul [${N}×${inp}]·[${out}×${inp}]ᵀ: ${Object.entries(all).map(([k, v]) => `${k} ${(v / 1e9).toFixed(2)}`).join(', ')} GFLOP/s`);
  const r = { flops: best, variant, all };
  matmulCache.set(key, r);
  return r;
}

// ---------------------------------------------------------------------------------------------
// One backend.

export interface BackendRun {
  runtime: string;
  backend: BackendName;
  adapter: string;
  available: boolean;
  note?: string;
  best_matmul: Record<string, Record<string, number>>;
  cases: CaseResult[];
  generation: GenerationResult[];
  /** Only when `--cases` names quant. */
  quant?: QuantResult[];
}

export async function runBackend(plan: Plan, log: Log): Promise<BackendRun> {
  if (plan.backend === 'wasm' && tf.findBackend('wasm') == null) {
    // One thread, to compare with single-threaded PyTorch. Without cross-origin isolation (and
    // in Node) tfjs-wasm has no threads anyway; this pins it where it has.
    setThreadsCount(1);
  }
  const info = await initBackend(plan.backend);
  if (info.name !== plan.backend) {
    return { runtime: plan.runtime, backend: plan.backend, adapter: '', available: false, note: info.fallbackReason ?? `${plan.backend} not available`, best_matmul: {}, cases: [], generation: [] };
  }
  if (plan.backend === 'webgpu') tf.env().set('WEBGPU_CPU_FORWARD', false);
  const p = resolvePlan(plan, info);
  const software = isSoftware(info);
  const adapter = adapterName(info);
  const threads = plan.backend === 'wasm' ? getThreadsCount() : null;
  log(`${plan.runtime}/${plan.backend}: ${adapter}${threads != null ? `, ${threads} thread(s)` : ''}; models ${p.models.join(', ')}; ${p.cases.includes('train') ? `train 1×${p.seqs.join(', 1×')}, ${p.steps} timed step(s)` : 'no training'}; ${p.cases.includes('generate') ? `generate ${p.genBatches.map((b) => `${b}×${p.genTokens}`).join(', ')}` : 'no generation'}`);
  installCounters(plan.backend);

  const cases: CaseResult[] = [];
  const generation: GenerationResult[] = [];
  const bestByN: Record<string, Record<string, number>> = {};
  const quant = p.cases.includes('quant') ? await quantCases({ runtime: plan.runtime, backend: plan.backend, adapter, software_adapter: software, threads }, log) : undefined;
  // A run of quant cases alone loads no model.
  const models = p.cases.some((c) => c === 'train' || c === 'generate') ? p.models : [];
  for (const modelName of models) {
    const raw = modelConfig(modelName);
    const config = parseModelConfig(raw);
    for (const storage of p.storages) {
      await trimGpuPool();
      const meter = meterBackendMemory();
      const t0 = performance.now();
      const model = await CausalLM.load(raw, randomWeights(config, storage), modelName, { storage: 'auto', quantization: storageQuantization(storage) });
      const frozen = model.frozenStorage();
      // The quantised projections alone (bytes per value as the issue's targets count them).
      const projections = [...model.packed].filter(([name]) => isQuantizedProjection(name));
      const projectionBytes = projections.reduce((n, [, w]) => n + frozenWeightBytes(w), 0);
      const projectionValues = projections.reduce((n, [, w]) => n + w.shape[0] * w.shape[1], 0);
      log(`  ${modelName} ${storage}: loaded in ${((performance.now() - t0) / 1000).toFixed(1)} s, ${(frozen.bytes / 2 ** 20).toFixed(0)} MiB frozen`);
      const common = {
        runtime: plan.runtime, backend: plan.backend, adapter, software_adapter: software, threads,
        model: modelName, stand_in: modelName.endsWith('/stand-in'), layers: config.num_hidden_layers, hidden: config.hidden_size, vocab: config.vocab_size, storage,
        frozen_bytes: frozen.bytes, frozen_parameters: frozen.parameters, frozen_bytes_per_parameter: frozen.bytes / frozen.parameters,
        projection_bytes_per_parameter: projectionValues > 0 ? projectionBytes / projectionValues : null,
      };
      const passes: { kernels: 'ours' | 'tfjs'; checkpointing: boolean[] }[] = p.cases.includes('train') ? [{ kernels: 'ours', checkpointing: p.checkpointing }] : [];
      // tfjs has no 16-bit storage, so "before" is the f32 model; without checkpointing, as plain tfjs training would run.
      if (p.cases.includes('train') && p.before && storage === 'f32') passes.push({ kernels: 'tfjs', checkpointing: [false] });
      const mine: CaseResult[] = [];
      try {
        for (const pass of passes) {
          for (const seq of p.seqs) {
            if (seq > Math.min(...p.seqs) && p.longOnlyF32 && (storage !== 'f32' || pass.kernels === 'tfjs')) continue;
            const best = await bestMatmul(seq, largestLinear(config), software ? 500 : 300, log);
            bestByN[`${seq}×${largestLinear(config).join('×')}`] = best.all;
            for (const ckpt of pass.checkpointing) {
              // WebGPU warms every case (shaders per shape); elsewhere only the first case of the
              // backend pays the process's warm-up (WASM compilation, JIT), which is not a step.
              const warm = plan.backend === 'webgpu' || !warmedHosts.has(plan.backend);
              warmedHosts.add(plan.backend);
              const run = () => runCase(model, seq, ckpt, p.steps, meter, warm);
              const m = pass.kernels === 'tfjs' ? await withoutOwnKernels(plan.backend, run) : await run();
              const flops = stepFlops(config, 1, seq, seq - 1, LORA_RANK);
              const tokens = seq;
              const r: CaseResult = {
                ...common,
                gradient_checkpointing: ckpt, batch: 1, seq, kernels: pass.kernels, timed_steps: p.steps,
                step_ms: m.stepMs,
                tokens_per_s: tokens / (m.stepMs / 1000),
                step_flops: flops.total,
                achieved_flops_per_s: flops.total / (m.stepMs / 1000),
                best_matmul_flops_per_s: best.flops,
                best_matmul_variant: best.variant,
                matmul_fraction: flops.total / (m.stepMs / 1000) / best.flops,
                dispatches_per_step: plan.backend === 'webgpu' ? m.dispatches : null,
                kernel_calls_per_step: m.kernels,
                peak_bytes: m.peak,
                resident_bytes: m.resident,
                reserved_bytes: m.reserved,
                transient_floats_per_token_layer_hidden: (m.peak - m.resident) / 4 / (tokens * config.num_hidden_layers * config.hidden_size),
                loss: m.loss,
              };
              log(`  ${modelName} ${storage} ckpt=${ckpt ? 'on' : 'off'} 1×${seq} kernels=${pass.kernels}: ${m.stepMs.toFixed(0)} ms/step, ${(r.achieved_flops_per_s / 1e9).toFixed(2)} GFLOP/s (${(r.matmul_fraction * 100).toFixed(0)} % of best matmul), ${r.dispatches_per_step ?? '-'} dispatches, ${r.kernel_calls_per_step} kernels, peak ${(m.peak / 2 ** 20).toFixed(0)} MiB`);
              mine.push(r);
            }
          }
        }
        if (p.cases.includes('generate')) {
          for (const [lora, batch] of p.genAdapters.flatMap((a) => p.genBatches.map((b) => [a === 'lora', b] as const))) {
            const g = await generationCase(model, batch, p.genTokens, lora);
            const r: GenerationResult = {
              runtime: plan.runtime, backend: plan.backend, adapter, software_adapter: software, threads,
              model: modelName, stand_in: common.stand_in, layers: config.num_hidden_layers, storage, lora,
              batch, prompt_tokens: GEN_PROMPT, new_tokens: p.genTokens,
              cold_ms: g.coldMs, cold_tokens_per_s: (batch * p.genTokens) / (g.coldMs / 1000),
              warm_ms: g.warmMs, warm_tokens_per_s: (batch * p.genTokens) / (g.warmMs / 1000),
              programs_compiled_cold: plan.backend === 'webgpu' ? g.programsCold : null,
              programs_compiled_warm: plan.backend === 'webgpu' ? g.programsWarm : null,
              kernel_calls_per_step: g.kernels / p.genTokens,
              flops_per_s: (batch * p.genTokens * tokenFlops(config, GEN_PROMPT + p.genTokens / 2, lora ? LORA_RANK : 0)) / (g.warmMs / 1000),
            };
            log(`  ${modelName} ${storage} generate ${batch}×${p.genTokens}${lora ? ' LoRA' : ''}: ${r.cold_tokens_per_s.toFixed(2)} tokens/s cold, ${r.warm_tokens_per_s.toFixed(2)} warm${r.programs_compiled_cold != null ? `, ${r.programs_compiled_cold} + ${r.programs_compiled_warm} pipelines compiled` : ''}, ${r.kernel_calls_per_step.toFixed(0)} kernels/step`);
            generation.push(r);
          }
        }
      } finally {
        model.dispose();
        meter.dispose();
      }
      cases.push(...mine);
    }
  }
  return { runtime: plan.runtime, backend: plan.backend, adapter, available: true, best_matmul: bestByN, cases, generation, ...(quant ? { quant } : {}) };
}

// ---------------------------------------------------------------------------------------------
// Quantised products.

/** SmolLM2-135M's gate projection: in = hidden 576, out = intermediate 1536. */
const QUANT_SHAPE: [number, number] = [1536, 576];
const QUANT_ROWS = [1, 8, 512];

/**
 * Each variant queued `reps` times and read back once, reps chosen so it runs about `targetMs`
 * (after one untimed call: shader compilation, buffer pools, XNNPACK's packing); ms per call.
 */
async function timeCall(f: () => tf.Tensor, targetMs: number): Promise<number> {
  const run = async (reps: number) => {
    const t0 = performance.now();
    let y: tf.Tensor | null = null;
    for (let i = 0; i < reps; i++) {
      y?.dispose();
      y = f();
    }
    await sync(y!);
    y!.dispose();
    return performance.now() - t0;
  };
  await run(1);
  const once = await run(1);
  const reps = Math.max(1, Math.min(50, Math.round(targetMs / Math.max(once, 0.01))));
  if (reps === 1) return Math.min(once, await run(1));
  return (await run(reps)) / reps;
}

/**
 * The fused NF4 product (FtLinear / FtLinearInputGrad reading packed 4-bit codes, LoRA r 16 fused)
 * against tfjs's matMul on the dequantised float32 matrix with the LoRA term as tfjs ops, and our
 * kernels on that float32 matrix: forward and input gradient, at 1, 8 and 512 rows, on a
 * SmolLM2-135M gate projection with random codes and scales.
 */
async function quantCases(
  common: Pick<QuantResult, 'runtime' | 'backend' | 'adapter' | 'software_adapter' | 'threads'>,
  log: Log,
): Promise<QuantResult[]> {
  const [out, inDim] = QUANT_SHAPE;
  const rng = new Rng(5);
  const count = out * inDim;
  const words = new Int32Array(Math.ceil(count / 8));
  for (let i = 0; i < words.length; i++) words[i] = rng.nextU32() | 0;
  const s = 1 / Math.sqrt(inDim);
  const nf4 = packQuantizedWeight({ dtype: 'nf4', shape: QUANT_SHAPE, words, absmax: rng.uniform(Math.ceil(count / 64), 0.5 * s, 1.5 * s) });
  const f32: FrozenWeight = frozenWeightF32(unpackWeight(nf4));
  const r = LORA_RANK;
  const A = tf.tensor2d(rng.uniform(r * inDim, -s, s), [r, inDim]);
  const B = tf.tensor2d(rng.uniform(out * r, -0.01, 0.01), [out, r]);
  const scale = 2;
  const results: QuantResult[] = [];
  const targetMs = common.software_adapter ? 1500 : 500;
  try {
    for (const rows of QUANT_ROWS) {
      const x = tf.tensor2d(rng.uniform(rows * inDim, -1, 1), [rows, inDim]);
      const dy = tf.tensor2d(rng.uniform(rows * out, -1, 1), [rows, out]);
      const xa = tf.matMul(x, A, false, true) as tf.Tensor2D;
      const g = tf.matMul(dy, B) as tf.Tensor2D;
      try {
        const products = {
          forward: {
            flops: 2 * rows * inDim * out + 2 * rows * r * out,
            fused: () => linearForward(x, nf4, undefined, { xa, B, scale }),
            tfjs: () => linearForwardComposed(x, f32, undefined, { xa, B, scale }),
            ours32: () => linearForward(x, f32, undefined, { xa, B, scale }),
          },
          input_grad: {
            flops: 2 * rows * inDim * out + 2 * rows * r * inDim,
            fused: () => linearInputGrad(dy, nf4, { g, A, scale }),
            tfjs: () => linearInputGradComposed(dy, f32, { g, A, scale }),
            ours32: () => linearInputGrad(dy, f32, { g, A, scale }),
          },
        };
        for (const [product, v] of Object.entries(products) as [QuantResult['product'], (typeof products)['forward']][]) {
          const a = v.fused();
          const b = v.tfjs();
          const [av, bv] = [await a.data(), await b.data()];
          let diff = 0;
          let mag = 1;
          for (let i = 0; i < bv.length; i++) {
            diff = Math.max(diff, Math.abs(av[i] - bv[i]));
            mag = Math.max(mag, Math.abs(bv[i]));
          }
          tf.dispose([a, b]);
          const fusedMs = await timeCall(v.fused, targetMs);
          const tfjsMs = await timeCall(v.tfjs, targetMs);
          const ours32Ms = await timeCall(v.ours32, targetMs);
          const res: QuantResult = {
            ...common,
            shape: QUANT_SHAPE,
            rows,
            rank: r,
            product,
            flops: v.flops,
            nf4_fused_ms: fusedMs,
            tfjs_matmul_dequantized_ms: tfjsMs,
            ours_f32_dequantized_ms: ours32Ms,
            speedup_vs_tfjs: tfjsMs / fusedMs,
            max_relative_difference: diff / mag,
            nf4_bytes: 4 * words.length + 4 * Math.ceil(count / 64),
            f32_bytes: 4 * count,
          };
          log(
            `  quant nf4 [${out}×${inDim}] ${product} ${rows} row(s), LoRA r ${r}: fused ${fusedMs.toFixed(2)} ms (${(v.flops / fusedMs / 1e6).toFixed(2)} GFLOP/s), tfjs matMul on dequantised f32 ${tfjsMs.toFixed(2)} ms, our f32 kernel ${ours32Ms.toFixed(2)} ms; ${res.speedup_vs_tfjs.toFixed(2)}× tfjs; max diff ${res.max_relative_difference.toExponential(1)}`,
          );
          results.push(res);
        }
      } finally {
        tf.dispose([x, dy, xa, g]);
      }
    }
  } finally {
    disposeFrozenWeight(nf4);
    tf.dispose([f32.data, A, B]);
  }
  return results;
}

interface Measured {
  stepMs: number;
  dispatches: number;
  kernels: number;
  peak: number;
  resident: number;
  reserved: number | null;
  loss: number;
}

/**
 * A fresh adapter (r 16, alpha 32, all-linear, no dropout) and AdamW (its state exists from the
 * start); a warm-up step where there are shaders to compile and pools to fill (WebGPU), then
 * `steps` timed.
 */
/** Host backends whose first case already ran its untimed warm-up step. */
const warmedHosts = new Set<string>();

async function runCase(model: CausalLM, seq: number, checkpointing: boolean, steps: number, meter: MemoryMeter, warmUp: boolean): Promise<Measured> {
  const rng = new Rng(1);
  const adapter = LoraAdapter.init(model.config, { r: LORA_RANK, lora_alpha: 32, lora_dropout: 0, target_modules: resolveTargetModules('all-linear'), use_rslora: false, layers_to_transform: null }, rng);
  const params = adapter.variables();
  const optimizer = new AdamW(params, { weight_decay: 0 });
  const probe = params.values().next().value!;
  try {
    const ids = Array.from({ length: seq }, () => 3 + rng.int(model.config.vocab_size - 3));
    const micro = [collate([{ input_ids: ids, labels: ids }], 0)];
    const step = () => trainStep(params, micro, sftMethod({ padTokenId: 0 }), { model, adapter, gradientCheckpointing: checkpointing }, optimizer, 1e-4, 1.0);
    if (warmUp) await step();
    await sync(probe);
    const resident = meter.read().bytes;
    meter.resetPeak();
    const c0 = { ...counts };
    const t0 = performance.now();
    let loss = 0;
    for (let i = 0; i < steps; i++) loss = (await step()).loss;
    await sync(probe);
    const stepMs = (performance.now() - t0) / steps;
    const reading = meter.read();
    return {
      stepMs,
      dispatches: (counts.dispatches - c0.dispatches) / steps,
      kernels: (counts.kernels - c0.kernels) / steps,
      peak: reading.peak,
      resident,
      reserved: reading.reserved,
      loss,
    };
  } finally {
    optimizer.dispose();
    adapter.dispose();
  }
}

/** Prompt length of the generation cases. */
export const GEN_PROMPT = 16;

/** Pipelines tfjs-webgpu has compiled so far (its cache by program key); 0 on other backends. */
function compiledPrograms(): number {
  const cache = (tf.backend() as unknown as { pipelineCache?: Record<string, unknown> }).pipelineCache;
  return cache ? Object.keys(cache).length : 0;
}

/**
 * A warm-up call of one token (the prefill's programs, buffer pools, JIT), then the case's call:
 * cold (every decode-step program key met for the first time), then warm.
 */
async function generationCase(model: CausalLM, batch: number, tokens: number, lora: boolean): Promise<{ coldMs: number; warmMs: number; programsCold: number; programsWarm: number; kernels: number }> {
  const rng = new Rng(2);
  const adapter = lora ? LoraAdapter.init(model.config, { r: LORA_RANK, lora_alpha: 32, lora_dropout: 0, target_modules: resolveTargetModules('all-linear'), use_rslora: false, layers_to_transform: null }, rng) : null;
  try {
    const prompt = Array.from({ length: GEN_PROMPT }, () => 3 + rng.int(model.config.vocab_size - 3));
    const run = async (n: number) => {
      const p0 = compiledPrograms();
      const k0 = counts.kernels;
      const t0 = performance.now();
      const out = await generate(model, [prompt], { do_sample: false, max_new_tokens: n, num_return_sequences: batch, adapter, eos_token_id: [] });
      const ms = performance.now() - t0;
      if (out.some((row) => row.length !== n)) throw new Error(`generation stopped early: ${out.map((r) => r.length)}`);
      return { ms, programs: compiledPrograms() - p0, kernels: counts.kernels - k0 };
    };
    await run(1);
    const cold = await run(tokens);
    // A shared machine's noise swamps a call of a fraction of a second: short calls are repeated
    // (up to three, about three seconds in all) and the fastest is taken.
    const warm = await run(tokens);
    for (let spent = warm.ms, i = 1; i < 3 && spent < 3000; i++) {
      const again = await run(tokens);
      spent += again.ms;
      if (again.ms < warm.ms) Object.assign(warm, { ms: again.ms, kernels: again.kernels });
      warm.programs += again.programs;
    }
    return { coldMs: cold.ms, warmMs: warm.ms, programsCold: cold.programs, programsWarm: warm.programs, kernels: warm.kernels };
  } finally {
    adapter?.dispose();
  }
}
