/**
 * `npm run bench`: LoRA SFT step speed, FLOP/s against the best matmul on the same adapter,
 * dispatches per step (with our kernels and with tfjs's own ops), physical peak memory, bytes
 * per frozen parameter and generation tokens/s at batch 1 and 8, for SmolLM2-135M, Qwen2.5-0.5B and Llama-3.2-1B
 * shaped models with random weights (stand-ins on a software adapter), in Node (WebGPU through
 * Dawn, WASM, CPU) and in headless Chromium. Prints a table and writes bench.json; asserts nothing.
 *
 *   npm run bench -- [--runtimes node,chromium] [--backends webgpu,wasm,cpu]
 *                    [--models SmolLM2-135M,Qwen2.5-0.5B/stand-in,...] [--storage f32,16-bit,nf4,nf4+dq,int8]
 *                    [--checkpointing on,off] [--seq 128,512] [--steps N] [--cases train,generate,quant]
 *                    [--gen-tokens N] [--gen-batches 1,8] [--gen-adapter lora,none]
 *                    [--before node,chromium|none] [--no-torch]
 *                    [--out bench.json]
 *
 * Unset, --backends is webgpu,wasm in Node and webgpu in Chromium, and models, lengths and steps
 * follow the adapter (see resolvePlan in core.ts): full shapes on a real GPU, stand-ins on
 * SwiftShader. WebGPU in Node runs on SwiftShader unless VK_ICD_FILENAMES names another driver.
 */
import '../../src/cli/quiet_tfjs.ts';
import { execFileSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { installNodeWebGPU } from '../../src/engine/backend/node_webgpu.ts';
import type { BackendName } from '../../src/engine/backend/index.ts';
import { GEN_PROMPT, LORA_RANK, runBackend, type BackendRun, type CaseResult, type GenerationResult, type Plan, type QuantResult } from './core.ts';
import { FLOPS_FORMULA, STAND_IN, type Storage } from './models.ts';
import { runInChromium } from './chromium.ts';

const { values } = parseArgs({
  options: {
    runtimes: { type: 'string', default: 'node,chromium' },
    backends: { type: 'string' },
    models: { type: 'string' },
    storage: { type: 'string', default: 'f32,16-bit' },
    checkpointing: { type: 'string', default: 'on,off' },
    seq: { type: 'string' },
    steps: { type: 'string' },
    cases: { type: 'string', default: 'train,generate' },
    'gen-tokens': { type: 'string' },
    'gen-batches': { type: 'string', default: '1,8' },
    'gen-adapter': { type: 'string', default: 'lora' },
    before: { type: 'string', default: 'node' },
    'no-torch': { type: 'boolean', default: false },
    out: { type: 'string', default: fileURLToPath(new URL('../../bench.json', import.meta.url)) },
  },
});

const list = (s: string) => s.split(',').map((x) => x.trim()).filter(Boolean);
const basePlan = (runtime: Plan['runtime'], backend: BackendName): Plan => ({
  runtime,
  backend,
  models: values.models ? list(values.models) : 'auto',
  storages: list(values.storage) as Storage[],
  checkpointing: list(values.checkpointing).map((s) => s === 'on' || s === 'true'),
  seqs: values.seq ? list(values.seq).map(Number) : 'auto',
  steps: values.steps ? Number(values.steps) : 'auto',
  genTokens: values['gen-tokens'] ? Number(values['gen-tokens']) : 'auto',
  genBatches: list(values['gen-batches']).map(Number),
  genAdapters: list(values['gen-adapter']).map((a) => {
    if (a !== 'lora' && a !== 'none') throw new Error(`unknown --gen-adapter ${a}; expected lora or none`);
    return a;
  }),
  cases: list(values.cases).map((c) => {
    if (c !== 'train' && c !== 'generate' && c !== 'quant') throw new Error(`unknown case kind ${c}; expected train, generate or quant`);
    return c;
  }),
  before: list(values.before).includes(runtime),
});

const started = Date.now();
const log = (line: string) => console.log(`[${((Date.now() - started) / 1000).toFixed(0).padStart(4)} s] ${line}`);
const runs: BackendRun[] = [];

for (const runtime of list(values.runtimes)) {
  const backends = (values.backends ? list(values.backends) : runtime === 'node' ? ['webgpu', 'wasm'] : ['webgpu']) as BackendName[];
  if (runtime === 'node') {
    for (const backend of backends) {
      if (backend === 'webgpu' && !(await installNodeWebGPU())) {
        runs.push({ runtime, backend, adapter: '', available: false, note: 'no WebGPU adapter in Node (Dawn found none)', best_matmul: {}, cases: [], generation: [] });
        log('node/webgpu: no adapter; skipped');
        continue;
      }
      runs.push(await runBackend(basePlan('node', backend), log));
    }
  } else if (runtime === 'chromium') {
    runs.push(...(await runInChromium(backends.map((b) => basePlan('chromium', b)), log)));
  } else {
    throw new Error(`unknown runtime ${runtime}; expected node or chromium`);
  }
}

const torch = values['no-torch'] ? { note: 'skipped (--no-torch)' } : runTorchReference(runs.flatMap((r) => r.cases));
const cases = runs.flatMap((r) => r.cases);
const generation = runs.flatMap((r) => r.generation);
const quant = runs.flatMap((r) => r.quant ?? []);
const report = {
  generated: new Date().toISOString(),
  host: { cpus: cpus().length, cpu: cpus()[0]?.model ?? '', node: process.version },
  flops_formula: FLOPS_FORMULA,
  stand_in: `"<model>/stand-in": the model's layer shapes with ${STAND_IN.layers} layer(s) and a ${STAND_IN.vocab}-word vocabulary`,
  runs: runs.map(({ cases: _c, quant: _q, ...r }) => r),
  cases,
  generation,
  ...(quant.length ? { quant } : {}),
  dispatches_before_after: beforeAfter(cases),
  torch,
  targets: targets(cases, torch),
};
writeFileSync(values.out, JSON.stringify(report, null, 2) + '\n');

if (cases.length) printTable(cases);
if (generation.length) printGeneration(generation);
if (quant.length) printQuant(quant);
console.log(`\nFLOP/s = model FLOPs per step / step time, with\n${FLOPS_FORMULA}`);
console.log('\nDispatches per step, plain tfjs ops (every Ft* kernel unregistered) → ours, f32 weights:');
if (report.dispatches_before_after.length) console.table(report.dispatches_before_after);
else console.log('  none measured (--before)');
console.log('\nPyTorch reference:', JSON.stringify(torch));
console.log('\nTargets (reported, never asserted):');
console.table(report.targets);
for (const r of runs) if (!r.available) console.log(`${r.runtime}/${r.backend}: not run (${r.note})`);
console.log(`\nwrote ${values.out} (${cases.length} cases) in ${((Date.now() - started) / 1000).toFixed(0)} s`);

// ---------------------------------------------------------------------------------------------

function printTable(cases: CaseResult[]): void {
  const mb = (b: number | null) => (b == null ? '-' : (b / 2 ** 20).toFixed(0));
  console.table(
    cases.map((c) => ({
      runtime: c.runtime,
      backend: c.backend,
      model: c.model,
      storage: c.storage,
      ckpt: c.gradient_checkpointing ? 'on' : 'off',
      seq: `1×${c.seq}`,
      kernels: c.kernels,
      'step ms': Math.round(c.step_ms),
      'tok/s': +c.tokens_per_s.toFixed(1),
      'GFLOP/s': +(c.achieved_flops_per_s / 1e9).toFixed(3),
      'best mm GFLOP/s': +(c.best_matmul_flops_per_s / 1e9).toFixed(3),
      '% of mm': +(c.matmul_fraction * 100).toFixed(1),
      dispatches: c.dispatches_per_step ?? '-',
      kernels_: c.kernel_calls_per_step,
      'peak MiB': mb(c.peak_bytes),
      'resident MiB': mb(c.resident_bytes),
      'reserved MiB': mb(c.reserved_bytes),
      'floats/tok·layer·hid': +c.transient_floats_per_token_layer_hidden.toFixed(1),
      'B/frozen param': +c.frozen_bytes_per_parameter.toFixed(2),
    })),
  );
  console.log('(kernels_ = tfjs kernel calls per step; dispatches = WebGPU dispatchWorkgroups per step; peak/resident = live backend buffers, each once; reserved = WebGPU buffer pool or WASM heap)');
}

function printGeneration(rows: GenerationResult[]): void {
  console.log(`\nGeneration: greedy, LoRA r ${LORA_RANK} applied or none, one ${GEN_PROMPT}-token prompt × batch completions, no EOS; tokens/s = batch · new tokens / wall time of the generate() call, prefill included:`);
  console.table(
    rows.map((g) => ({
      runtime: g.runtime,
      backend: g.backend,
      model: g.model,
      storage: g.storage,
      adapter: g.lora ? `LoRA r ${LORA_RANK}` : 'none',
      batch: g.batch,
      'new tokens': g.new_tokens,
      'cold tok/s': +g.cold_tokens_per_s.toFixed(2),
      'warm tok/s': +g.warm_tokens_per_s.toFixed(2),
      'pipelines compiled (cold + warm)': g.programs_compiled_cold == null ? '-' : `${g.programs_compiled_cold} + ${g.programs_compiled_warm}`,
      'kernels/step': Math.round(g.kernel_calls_per_step),
      'GFLOP/s warm': +(g.flops_per_s / 1e9).toFixed(3),
    })),
  );
}

function printQuant(rows: QuantResult[]): void {
  console.log(`\nQuantised products (--cases quant): NF4 weight [out, in] = [${rows[0].shape.join(', ')}] (SmolLM2-135M gate projection), LoRA r ${rows[0].rank} fused; the fused kernel reading packed codes vs tfjs's matMul on the dequantised float32 matrix (+ tfjs ops for the LoRA term), same inputs and adapter, same run:`);
  console.table(
    rows.map((q) => ({
      runtime: q.runtime,
      backend: q.backend,
      product: q.product,
      rows: q.rows,
      'fused nf4 ms': +q.nf4_fused_ms.toFixed(3),
      'tfjs matMul f32 ms': +q.tfjs_matmul_dequantized_ms.toFixed(3),
      'our f32 kernel ms': +q.ours_f32_dequantized_ms.toFixed(3),
      '× tfjs': +q.speedup_vs_tfjs.toFixed(2),
      'fused GFLOP/s': +(q.flops / q.nf4_fused_ms / 1e6).toFixed(3),
      'tfjs GFLOP/s': +(q.flops / q.tfjs_matmul_dequantized_ms / 1e6).toFixed(3),
      'max rel diff': q.max_relative_difference.toExponential(1),
      'weight KiB nf4 / f32': `${(q.nf4_bytes / 1024).toFixed(0)} / ${(q.f32_bytes / 1024).toFixed(0)}`,
    })),
  );
}

function beforeAfter(cases: CaseResult[]) {
  const out: Record<string, unknown>[] = [];
  for (const b of cases.filter((c) => c.kernels === 'tfjs')) {
    const a = cases.find((c) => c.kernels === 'ours' && c.runtime === b.runtime && c.backend === b.backend && c.model === b.model && c.storage === b.storage && c.seq === b.seq && c.gradient_checkpointing === b.gradient_checkpointing);
    out.push({
      runtime: b.runtime,
      backend: b.backend,
      model: b.model,
      seq: b.seq,
      ckpt: b.gradient_checkpointing ? 'on' : 'off',
      dispatches_tfjs: b.dispatches_per_step,
      dispatches_ours: a?.dispatches_per_step ?? null,
      kernels_tfjs: b.kernel_calls_per_step,
      kernels_ours: a?.kernel_calls_per_step ?? null,
      step_ms_tfjs: Math.round(b.step_ms),
      step_ms_ours: a ? Math.round(a.step_ms) : null,
      peak_mib_tfjs: Math.round(b.peak_bytes / 2 ** 20),
      peak_mib_ours: a ? Math.round(a.peak_bytes / 2 ** 20) : null,
    });
  }
  return out;
}

type Torch = { ms_per_step?: number; note: string; torch?: string; command?: string; matmul_flops_per_s?: number; blas?: string[] };

/** tests/reference/bench_torch.py: the SmolLM2-135M LoRA step at 1×512 in float32 PyTorch eager on one thread. */
function runTorchReference(cases: CaseResult[]): Torch {
  const wanted = cases.some((c) => c.backend === 'wasm' && c.model === 'SmolLM2-135M' && c.seq === 512);
  if (!wanted) return { note: 'skipped: no WASM SmolLM2-135M 1×512 case in this run to compare with' };
  const script = fileURLToPath(new URL('../reference/bench_torch.py', import.meta.url));
  // Debian's python3-torch lives under /usr/bin/python3; a python3 earlier on PATH may lack it.
  for (const python of ['/usr/bin/python3', 'python3']) {
    if (python.startsWith('/') && !existsSync(python)) continue;
    try {
      execFileSync(python, ['-c', 'import torch'], { stdio: 'ignore' });
    } catch {
      continue;
    }
    log(`torch: ${python} ${script} --seq 512`);
    // One step without a warm-up: eager CPU PyTorch has no compilation to amortise, and a step
    // takes minutes where torch sits on netlib's reference BLAS.
    const out = execFileSync(python, ['-B', script, '--seq', '512', '--steps', '1', '--warmup', '0'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
    const r = JSON.parse(out.trim().split('\n').pop()!) as { ms_per_step: number; torch: string; threads: number; matmul_flops_per_s: number; blas: string[] };
    log(`torch: ${r.ms_per_step.toFixed(0)} ms/step (torch ${r.torch}, ${r.threads} thread, matmul ${(r.matmul_flops_per_s / 1e9).toFixed(2)} GFLOP/s, BLAS ${r.blas.join(' ') || 'built in'})`);
    return {
      ms_per_step: r.ms_per_step,
      torch: r.torch,
      matmul_flops_per_s: r.matmul_flops_per_s,
      blas: r.blas,
      command: `${python} -B tests/reference/bench_torch.py --seq 512 --steps 1 --warmup 0`,
      note: 'float32 eager, torch.set_num_threads(1), LoRA r16 all-linear, no checkpointing, one step',
    };
  }
  return { note: 'skipped: no python3 with torch (apt-get install -y python3-torch)' };
}

function targets(cases: CaseResult[], torch: Torch) {
  const rows: { target: string; measured: string; met: string }[] = [];
  const fmt = (ok: boolean | null) => (ok == null ? 'n/a' : ok ? 'yes' : 'NO');
  const ours = cases.filter((c) => c.kernels === 'ours');
  for (const [model, limit] of [['SmolLM2-135M', 1.5], ['Qwen2.5-0.5B', 3], ['Llama-3.2-1B', 5]] as const) {
    const c = ours.filter((c) => c.model === model && c.storage === '16-bit' && c.gradient_checkpointing && c.seq === 512);
    rows.push({
      target: `${model} LoRA 1×512 ckpt, 16-bit: peak ≤ ${limit} GB`,
      measured: c.length ? c.map((c) => `${c.runtime}/${c.backend} ${(c.peak_bytes / 1e9).toFixed(2)} GB`).join('; ') : 'no full-shape case in this run',
      met: c.length ? fmt(c.every((c) => c.peak_bytes <= limit * 1e9)) : 'n/a',
    });
  }
  // QLoRA: a 4-bit base (NF4, with or without double quantisation) at 1×512, checkpointed.
  for (const [model, limit] of [['Qwen2.5-0.5B', 1.5], ['Llama-3.2-1B', 2.5], ['Llama-3.2-3B', 4]] as const) {
    const c = ours.filter((c) => c.model === model && (c.storage === 'nf4' || c.storage === 'nf4+dq') && c.gradient_checkpointing && c.seq === 512);
    rows.push({
      target: `${model} QLoRA 1×512 ckpt, nf4: peak ≤ ${limit} GB`,
      measured: c.length ? c.map((c) => `${c.runtime}/${c.backend} ${c.storage} ${(c.peak_bytes / 1e9).toFixed(2)} GB`).join('; ') : 'no full-shape 4-bit case in this run',
      met: c.length ? fmt(c.every((c) => c.peak_bytes <= limit * 1e9)) : 'n/a',
    });
  }
  const noCkpt = ours.filter((c) => !c.gradient_checkpointing);
  rows.push({
    target: 'transient ≤ 40 floats per token·layer·hidden, ckpt off',
    measured: noCkpt.map((c) => `${c.runtime}/${c.backend} ${c.model} ${c.storage} 1×${c.seq}: ${c.transient_floats_per_token_layer_hidden.toFixed(1)}`).join('; ') || 'none',
    met: noCkpt.some((c) => !c.stand_in) ? fmt(noCkpt.filter((c) => !c.stand_in).every((c) => c.transient_floats_per_token_layer_hidden <= 40)) + ' (full shapes; a 1-layer stand-in spreads the LM head chunk over one layer)' : 'n/a (stand-ins only)',
  });
  const pairs: string[] = [];
  let allOk: boolean | null = null;
  for (const on of ours.filter((c) => c.gradient_checkpointing)) {
    const off = ours.find((c) => !c.gradient_checkpointing && c.runtime === on.runtime && c.backend === on.backend && c.model === on.model && c.storage === on.storage && c.seq === on.seq);
    if (!off) continue;
    const ratio = on.step_ms / off.step_ms;
    pairs.push(`${on.runtime}/${on.backend} ${on.model} ${on.storage} 1×${on.seq}: ${ratio.toFixed(2)}×`);
    allOk = (allOk ?? true) && ratio <= 1.4;
  }
  rows.push({ target: 'checkpointed step ≤ 1.4× uncheckpointed', measured: pairs.join('; ') || 'no pair', met: fmt(allOk) });
  const wasm = ours.filter((c) => c.backend === 'wasm' && c.model === 'SmolLM2-135M' && c.seq === 512 && c.storage === 'f32' && !c.gradient_checkpointing);
  rows.push({
    target: 'WASM 1 thread SmolLM2-135M LoRA 1×512 (f32, ckpt off) ≤ 5× PyTorch eager f32 1 thread',
    measured: torch.ms_per_step && wasm.length ? wasm.map((c) => `${c.runtime}: ${c.step_ms.toFixed(0)} ms vs ${torch.ms_per_step!.toFixed(0)} ms = ${(c.step_ms / torch.ms_per_step!).toFixed(2)}×`).join('; ') : `${wasm.length ? wasm.map((c) => `${c.runtime}: ${c.step_ms.toFixed(0)} ms`).join('; ') : 'no case'}; torch ${torch.note}`,
    met: torch.ms_per_step && wasm.length ? fmt(wasm.every((c) => c.step_ms <= 5 * torch.ms_per_step!)) : 'n/a',
  });
  const gpu = ours.filter((c) => c.backend === 'webgpu');
  rows.push({
    target: 'WebGPU step ≥ 50 % of the best matmul FLOP/s',
    measured: gpu.map((c) => `${c.runtime} ${c.model} ${c.storage} ckpt ${c.gradient_checkpointing ? 'on' : 'off'} 1×${c.seq}: ${(c.matmul_fraction * 100).toFixed(0)} %`).join('; ') || 'no WebGPU case',
    met: gpu.length ? fmt(gpu.every((c) => c.matmul_fraction >= 0.5)) + (gpu.some((c) => c.software_adapter) ? ' (software adapter)' : '') : 'n/a',
  });
  return rows;
}
