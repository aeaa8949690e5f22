// DPO (sigmoid, ipo, hinge), KTO, ORPO and SimPO against an independent PyTorch re-typing of
// TRL's losses (tests/reference/preference_golden.py, fixtures in tests/fixtures/preference/):
// the loss, every metric and the LoRA gradients of one micro-batch, and two AdamW steps of DPO
// with two micro-batches each, on the llama_f32 golden model with a nonzero adapter.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../../src/engine/backend/index.ts';
import { parseSafetensors } from '../../src/engine/io/safetensors.ts';
import { LoraAdapter, parseAdapterConfig } from '../../src/engine/model/lora.ts';
import type { CausalLM } from '../../src/engine/model/llama.ts';
import type { KtoExample, PairExample } from '../../src/engine/data/preference.ts';
import type { LossContext, Method } from '../../src/engine/train/method.ts';
import { createOptimizer } from '../../src/engine/train/optim.ts';
import { dpoMethod, precomputeReferenceLogProbs, type DpoLossType } from '../../src/engine/train/methods/dpo.ts';
import { ktoMethod } from '../../src/engine/train/methods/kto.ts';
import { orpoMethod } from '../../src/engine/train/methods/orpo.ts';
import { simpoMethod } from '../../src/engine/train/methods/simpo.ts';
import { METHOD_METRICS } from '../../src/engine/train/metrics.ts';
import { collatePairs, collateSequences } from '../../src/engine/train/methods/pairs.ts';
import { allTensors, loadGolden, maxAbsDiff } from './helpers/golden.ts';

const DIR = fileURLToPath(new URL('../fixtures/preference/', import.meta.url));

interface Case {
  method: 'dpo' | 'kto' | 'orpo' | 'simpo';
  beta: number;
  loss_type?: DpoLossType;
  desirable_weight?: number;
  undesirable_weight?: number;
  simpo_gamma?: number;
  loss: number;
  metrics: Record<string, number>;
}

interface Fixture {
  base_case: string;
  pad_token_id: number;
  lora: Record<string, unknown>;
  pairs: Omit<PairExample, 'line'>[];
  kto_rows: Omit<KtoExample, 'line'>[];
  cases: Record<string, Case>;
  train: { beta: number; loss_type: DpoLossType; lr: number; betas: [number, number]; eps: number; weight_decay: number; steps: number; micro_batches: number[][]; losses: number[] };
}

const fx = JSON.parse(readFileSync(DIR + 'preference.json', 'utf8')) as Fixture;
const pairs: PairExample[] = fx.pairs.map((p, i) => ({ line: i + 1, ...p }));
const ktoRows: KtoExample[] = fx.kto_rows.map((r, i) => ({ line: i + 1, ...r }));
const safetensors = (file: string) => allTensors(parseSafetensors(new Uint8Array(readFileSync(DIR + file)), file));

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyMethod = Method<any, any>;

function methodFor(c: Case): { method: AnyMethod; examples: (PairExample | KtoExample)[] } {
  const padTokenId = fx.pad_token_id;
  switch (c.method) {
    case 'dpo':
      return { method: dpoMethod({ beta: c.beta, loss_type: c.loss_type!, padTokenId }), examples: pairs };
    case 'kto':
      return { method: ktoMethod({ beta: c.beta, desirable_weight: c.desirable_weight!, undesirable_weight: c.undesirable_weight!, padTokenId }), examples: ktoRows };
    case 'orpo':
      return { method: orpoMethod({ beta: c.beta, padTokenId }), examples: pairs };
    case 'simpo':
      return { method: simpoMethod({ beta: c.beta, simpo_gamma: c.simpo_gamma!, padTokenId }), examples: pairs };
  }
}

const relErr = (got: number, expected: number) => Math.abs(got - expected) / Math.abs(expected);

/** ‖got − expected‖ / ‖expected‖ over the whole adapter gradient, all tensors as one vector. */
function gradRelErr(got: Map<string, Float32Array>, expected: Map<string, Float32Array>): number {
  let num = 0;
  let den = 0;
  for (const [k, e] of expected) {
    const g = got.get(k)!;
    for (let i = 0; i < e.length; i++) {
      num += (g[i] - e[i]) ** 2;
      den += e[i] ** 2;
    }
  }
  return Math.sqrt(num / den);
}

async function setup(): Promise<{ model: CausalLM; adapter: LoraAdapter }> {
  const { model } = await loadGolden(fx.base_case);
  const config = parseAdapterConfig({ peft_type: 'LORA', ...fx.lora });
  const adapter = LoraAdapter.fromSafetensors(model.config, config, parseSafetensors(new Uint8Array(readFileSync(DIR + 'lora_init.safetensors')), 'lora_init.safetensors'));
  return { model, adapter };
}

/** One micro-batch's loss / items and metric sums / items, with the gradient of the former. */
async function lossAndGrads(method: AnyMethod, batch: unknown, ctx: LossContext) {
  const vars = ctx.adapter!.variables();
  const byName = new Map([...vars].map(([k, v]) => [v.name, k]));
  const items = method.countItems(batch);
  let metrics: Record<string, tf.Scalar> = {};
  const { value, grads } = tf.variableGrads(() => {
    const r = method.loss(batch, ctx);
    metrics = r.metrics;
    return tf.div(r.loss, items) as tf.Scalar;
  }, [...vars.values()]);
  const loss = (await value.data())[0];
  const got = new Map<string, Float32Array>();
  for (const [name, g] of Object.entries(grads)) got.set(byName.get(name)!, Float32Array.from(await g.data()));
  const means: Record<string, number> = {};
  for (const [k, m] of Object.entries(metrics)) means[k] = (await m.data())[0] / items;
  tf.dispose([value, ...Object.values(grads), ...Object.values(metrics)]);
  return { loss, grads: got, metrics: means, gradCount: Object.keys(grads).length, varCount: vars.size };
}

beforeAll(async () => {
  const info = await initBackend('cpu');
  if (info.name !== 'cpu') throw new Error('cpu backend unavailable');
});

describe.each(Object.entries(fx.cases))('%s matches TRL (PyTorch reference)', (name, c) => {
  it.each([false, true])('loss, metrics (relative 1e-5) and LoRA gradients (‖Δ‖/‖g‖ ≤ 1e-5), gradient_checkpointing %s', async (gradientCheckpointing) => {
    const { model, adapter } = await setup();
    const { method, examples } = methodFor(c);
    expect([...method.metrics].sort()).toEqual(Object.keys(c.metrics).sort());
    const ctx: LossContext = { model, adapter, gradientCheckpointing };
    const batch = method.collate(examples);
    expect(method.countItems(batch)).toBe(examples.length);
    await method.prepareBatch?.(batch, ctx);
    const r = await lossAndGrads(method, batch, ctx);
    expect(relErr(r.loss, c.loss), `loss ${r.loss} vs ${c.loss}`).toBeLessThanOrEqual(1e-5);
    for (const [k, v] of Object.entries(c.metrics)) expect(relErr(r.metrics[k], v), `${k}: ${r.metrics[k]} vs ${v}`).toBeLessThanOrEqual(1e-5);
    // Only adapter tensors get gradients, every one of them.
    expect(r.gradCount).toBe(r.varCount);
    const expected = safetensors(`grad_${name}.safetensors`);
    expect(gradRelErr(r.grads, expected)).toBeLessThanOrEqual(1e-5);
    const scale = Math.max(...[...expected.values()].map((e) => Math.max(...e.map(Math.abs))));
    for (const [k, e] of expected) expect(maxAbsDiff(r.grads.get(k)!, e) / scale, k).toBeLessThanOrEqual(2e-5);
    adapter.dispose();
    model.dispose();
  });

  it('leaks no tensor across micro-batches (prepareBatch, loss, gradient)', async () => {
    const { model, adapter } = await setup();
    const { method, examples } = methodFor(c);
    const ctx: LossContext = { model, adapter };
    let before = 0;
    for (let i = 0; i < 3; i++) {
      const batch = method.collate(examples);
      await method.prepareBatch?.(batch, ctx);
      await lossAndGrads(method, batch, ctx);
      if (i === 0) before = tf.memory().numTensors;
      else expect(tf.memory().numTensors).toBe(before);
    }
    adapter.dispose();
    model.dispose();
  });
});

describe('DPO training', () => {
  it('2 AdamW steps of 2 micro-batches each: step losses (relative 1e-5) and the adapter after (1e-5)', async () => {
    const { model, adapter } = await setup();
    const t = fx.train;
    const method = dpoMethod({ beta: t.beta, loss_type: t.loss_type, padTokenId: fx.pad_token_id });
    const params = adapter.variables();
    const keys = [...params.keys()];
    const vars = keys.map((k) => params.get(k)!);
    const optimizer = createOptimizer({ optim: 'adamw_torch', adam_beta1: t.betas[0], adam_beta2: t.betas[1], adam_epsilon: t.eps, weight_decay: t.weight_decay }, params);
    const ctx: LossContext = { model, adapter };
    let after1 = 0;
    for (let s = 0; s < t.steps; s++) {
      const micro = t.micro_batches.map((rows) => method.collate(rows.map((r) => pairs[r])));
      for (const b of micro) await method.prepareBatch!(b, ctx);
      const items = micro.reduce((n, b) => n + method.countItems(b), 0);
      let summed: tf.Tensor[] | null = null;
      let lossSum = 0;
      for (const b of micro) {
        let metrics: Record<string, tf.Scalar> = {};
        const { value, grads } = tf.variableGrads(() => {
          const r = method.loss(b, ctx);
          metrics = r.metrics;
          return r.loss;
        }, vars);
        lossSum += (await value.data())[0];
        const g = vars.map((v) => grads[v.name]);
        const next: tf.Tensor[] = summed ? g.map((x, i) => tf.add(summed![i], x)) : g;
        if (summed) tf.dispose([...summed, ...g]);
        summed = next;
        tf.dispose([value, ...Object.values(metrics)]);
      }
      const scaled = new Map(keys.map((k, i) => [k, tf.div(summed![i], items)]));
      tf.dispose(summed!);
      optimizer.step(scaled, t.lr);
      tf.dispose([...scaled.values()]);
      expect(relErr(lossSum / items, t.losses[s])).toBeLessThanOrEqual(1e-5);
      if (s === 0) after1 = tf.memory().numTensors;
      else expect(tf.memory().numTensors).toBe(after1);
    }
    const expected = safetensors('dpo_after_2_steps.safetensors');
    for (const [k, v] of params) expect(maxAbsDiff(await v.data(), expected.get(k)!), k).toBeLessThanOrEqual(1e-5);
    optimizer.dispose();
    adapter.dispose();
    model.dispose();
  });
});

describe('preference batches', () => {
  it('pairs are TRL rows [chosen…, rejected…]: completion tokens only are summed, prompts and padding are not', () => {
    const b = collatePairs([{ line: 1, prompt_ids: [1, 5, 6], chosen_ids: [7, 2], rejected_ids: [8, 9, 2] }, { line: 2, prompt_ids: [1], chosen_ids: [4, 4, 4, 2], rejected_ids: [2] }], 0);
    expect(b.pairs).toBe(2);
    expect(b.seq.rows).toBe(4);
    expect(b.seq.length).toBe(8); // bucketed from 6
    expect([...b.seq.input_ids.subarray(0, 8)]).toEqual([1, 5, 6, 7, 2, 0, 0, 0]);
    expect([...b.seq.input_ids.subarray(16, 24)]).toEqual([1, 5, 6, 8, 9, 2, 0, 0]);
    expect([...b.seq.targets]).toEqual([7, 2, 4, 4, 4, 2, 8, 9, 2, 2]);
    expect([...b.seq.scoredTokens]).toEqual([2, 4, 3, 1]);
    expect([...b.seq.completionLengths]).toEqual([2, 4, 3, 1]);
    expect(b.seq.num_tokens).toBe(5 + 5 + 6 + 2);
    // ORPO's NLL scores the chosen rows' prompt tokens too (weight 0 in the completion sums).
    const whole = collatePairs([{ line: 1, prompt_ids: [1, 5, 6], chosen_ids: [7, 2], rejected_ids: [8, 2] }], 0, { wholeChosen: true });
    expect([...whole.seq.targets]).toEqual([5, 6, 7, 2, 8, 2]);
    expect([...whole.seq.completionMask]).toEqual([0, 0, 1, 1, 0, 0, /* row 1 */ 0, 0, 0, 0, 1, 1]);
    expect(whole.seq.rowStart[1]).toBe(4);
  });

  it("KTO's KL sequences pair row i's prompt with row i−1's completion (row 0 with the last)", () => {
    const method = ktoMethod({ beta: 0.1, desirable_weight: 1, undesirable_weight: 1, padTokenId: 0 });
    const rows: KtoExample[] = [
      { line: 1, prompt_ids: [1, 10], completion_ids: [11, 2], label: true },
      { line: 2, prompt_ids: [1, 20], completion_ids: [21, 22, 2], label: false },
      { line: 3, prompt_ids: [1, 30], completion_ids: [31, 2], label: true },
    ];
    const b = method.collate(rows);
    const T = b.kl.length;
    const row = (r: number) => [...b.kl.input_ids.subarray(r * T, (r + 1) * T)].filter((_, t) => b.kl.attention_mask[r * T + t]);
    expect(row(0)).toEqual([1, 10, 31, 2]);
    expect(row(1)).toEqual([1, 20, 11, 2]);
    expect(row(2)).toEqual([1, 30, 21, 22, 2]);
    expect([...b.desirable]).toEqual([1, 0, 1]);
    expect(method.countTokens(b)).toBe(4 + 5 + 4);
  });

  it('an empty prompt scores its completion from the second token on, as TRL shifts', () => {
    const s = collateSequences([{ prompt: [], completion: [4, 5, 2] }], 0, false);
    expect([...s.targets]).toEqual([5, 2]);
    expect([...s.scoredTokens]).toEqual([2]);
    expect([...s.completionLengths]).toEqual([3]);
  });

  it('DPO with precomputed reference log-probs gives the same loss, without a reference pass', async () => {
    const { model, adapter } = await setup();
    const c = fx.cases.dpo_sigmoid;
    const refs = await precomputeReferenceLogProbs(model, pairs, { padTokenId: fx.pad_token_id, batchSize: 3 });
    const byLine = new Map(pairs.map((p, i) => [p.line, refs[i]]));
    const method = dpoMethod({ beta: c.beta, loss_type: 'sigmoid', padTokenId: fx.pad_token_id, precomputedRef: (e) => byLine.get(e.line)! });
    const batch = method.collate(pairs);
    // Without an adapter the reference cannot be computed, but here it is already there.
    await method.prepareBatch!(batch, { model, adapter: null });
    const r = await lossAndGrads(method, batch, { model, adapter });
    expect(relErr(r.loss, c.loss)).toBeLessThanOrEqual(1e-5);
    adapter.dispose();
    model.dispose();
  });

  it('DPO and KTO refuse to build a reference without an adapter (freeze/full fine-tuning)', async () => {
    const { model, adapter } = await setup();
    const dpo = dpoMethod({ beta: 0.1, loss_type: 'sigmoid', padTokenId: 0 });
    await expect(dpo.prepareBatch!(dpo.collate(pairs), { model, adapter: null, trainsModelWeights: true })).rejects.toThrow(/adapter/);
    const kto = ktoMethod({ beta: 0.1, desirable_weight: 1, undesirable_weight: 1, padTokenId: 0 });
    await expect(kto.prepareBatch!(kto.collate(ktoRows), { model, adapter: null, trainsModelWeights: true })).rejects.toThrow(/adapter/);
    adapter.dispose();
    model.dispose();
  });
});

describe('the metrics each method declares', () => {
  it('are the ones the studio charts (engine/train/metrics.ts)', () => {
    const made = {
      dpo: dpoMethod({ beta: 0.1, loss_type: 'sigmoid', padTokenId: 0 }),
      kto: ktoMethod({ beta: 0.1, desirable_weight: 1, undesirable_weight: 1, padTokenId: 0 }),
      orpo: orpoMethod({ beta: 0.1, padTokenId: 0 }),
      simpo: simpoMethod({ beta: 0.1, simpo_gamma: 0.5, padTokenId: 0 }),
    };
    for (const [name, method] of Object.entries(made)) expect([...method.metrics].sort(), name).toEqual([...METHOD_METRICS[name as keyof typeof made]].sort());
  });
});
