import { readFileSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { beforeAll, describe, expect, it } from 'vitest';
import { AdamW, SGD, clipGradNorm, createOptimizer, transformersDecays, type OptimizerState } from '../../src/engine/train/optim.ts';
import { UserError } from '../../src/engine/errors.ts';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

/** Written by tests/reference/optim_golden.py with torch itself. */
interface Golden {
  shapes: Record<string, number[]>;
  init: Record<string, number[]>;
  grads: Record<string, number[]>[];
  lrs: number[];
  adamw: { kwargs: { betas: [number, number]; eps: number; weight_decay: number }; after: Record<string, number[]>[]; state: Record<string, number[]> };
  sgd: { kwargs: { weight_decay: number }; after: Record<string, number[]>[] };
  clip: { max_norm: number; total_norm: number; grads: Record<string, number[]> }[];
}
const golden: Golden = JSON.parse(readFileSync(new URL('../fixtures/optim_golden.json', import.meta.url), 'utf8'));

function variables(values: Record<string, number[]>, shapes: Record<string, number[]>): Map<string, tf.Variable> {
  return new Map(Object.entries(values).map(([k, v]) => [k, tf.variable(tf.tensor(v, shapes[k]), true, `${k}_${Math.random()}`)]));
}

function tensors(values: Record<string, number[]>, shapes: Record<string, number[]>): Map<string, tf.Tensor> {
  return new Map(Object.entries(values).map(([k, v]) => [k, tf.tensor(v, shapes[k])]));
}

function dispose(map: Map<string, tf.Tensor>): void {
  for (const t of map.values()) t.dispose();
}

function values(map: Map<string, tf.Tensor>): Record<string, number[]> {
  return Object.fromEntries([...map].map(([k, t]) => [k, Array.from(t.dataSync())]));
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
}

// ---- an independent float64 re-implementation, written from torch's documented algorithms ----

interface RefAdamState {
  p: number[];
  m: number[];
  v: number[];
  t: number;
}

function refAdamW(s: RefAdamState, g: number[], lr: number, b1: number, b2: number, eps: number, wd: number): void {
  s.t += 1;
  for (let i = 0; i < s.p.length; i++) {
    s.p[i] *= 1 - lr * wd;
    s.m[i] = b1 * s.m[i] + (1 - b1) * g[i];
    s.v[i] = b2 * s.v[i] + (1 - b2) * g[i] * g[i];
    const mHat = s.m[i] / (1 - b1 ** s.t);
    s.p[i] -= (lr * mHat) / (Math.sqrt(s.v[i]) / Math.sqrt(1 - b2 ** s.t) + eps);
  }
}

function refClip(grads: number[][], maxNorm: number): { grads: number[][]; total: number } {
  const total = Math.sqrt(grads.flat().reduce((s, x) => s + x * x, 0));
  const coef = Math.min(maxNorm / (total + 1e-6), 1);
  return { grads: maxNorm > 0 ? grads.map((g) => g.map((x) => x * coef)) : grads, total };
}

describe('AdamW', () => {
  it('moves each weight by lr against a constant gradient sign, after decay (worked by hand)', () => {
    // With a constant gradient m̂ = g and v̂ = g², so every step is p ← p·(1 − lr·wd) − lr·sign(g)
    // (up to eps); a zero gradient leaves only the decay.
    const p = tf.variable(tf.tensor1d([1, -2, 0.5, 3]));
    const opt = new AdamW(new Map([['p', p]]), { betas: [0.9, 0.999], eps: 1e-8, weight_decay: 0.1 });
    const g = tf.tensor1d([0.5, -0.25, 2, 0]);
    const expected = [
      [0.89, -1.88, 0.395, 2.97],
      [0.7811, -1.7612, 0.29105, 2.9403],
      [0.673289, -1.643588, 0.1881395, 2.910897],
    ];
    for (const want of expected) {
      opt.step(new Map([['p', g]]), 0.1);
      expect(maxAbsDiff(p.dataSync(), want)).toBeLessThan(1e-6);
    }
    g.dispose();
    opt.dispose();
    p.dispose();
  });

  it('matches a float64 re-implementation over steps with changing gradients and learning rates', () => {
    const init = [0.3, -1.2, 2.5, -0.7, 0.05, 1.1];
    const grads = [
      [0.1, -0.4, 1.5, 0.0, -2.0, 0.3],
      [-0.2, 0.1, 0.01, 0.5, 1.0, -0.3],
      [3.0, -0.001, -1.0, 0.2, 0.0, 0.7],
      [0.05, 0.05, 0.05, -0.05, -0.05, 0.5],
    ];
    const lrs = [1e-2, 3e-2, 5e-3, 1e-3];
    const [b1, b2, eps, wd] = [0.8, 0.95, 1e-6, 0.05];
    const ref: RefAdamState = { p: [...init], m: init.map(() => 0), v: init.map(() => 0), t: 0 };
    const p = tf.variable(tf.tensor2d(init, [2, 3]));
    const opt = new AdamW(new Map([['w', p]]), { betas: [b1, b2], eps, weight_decay: wd });
    grads.forEach((g, k) => {
      const gt = tf.tensor2d(g, [2, 3]);
      opt.step(new Map([['w', gt]]), lrs[k]);
      gt.dispose();
      refAdamW(ref, g, lrs[k], b1, b2, eps, wd);
      expect(maxAbsDiff(p.dataSync(), ref.p)).toBeLessThan(1e-6);
    });
    opt.dispose();
    p.dispose();
  });

  it('matches torch.optim.AdamW (golden numbers) to 1e-6', async () => {
    const params = variables(golden.init, golden.shapes);
    const opt = new AdamW(params, golden.adamw.kwargs);
    golden.grads.forEach((g, k) => {
      const grads = tensors(g, golden.shapes);
      opt.step(grads, golden.lrs[k]);
      dispose(grads);
      for (const [name, want] of Object.entries(golden.adamw.after[k])) {
        expect(maxAbsDiff(params.get(name)!.dataSync(), want), `${name} after step ${k + 1}`).toBeLessThan(1e-6);
      }
    });
    const state = await opt.state();
    expect(state.step).toBe(3);
    expect([...state.tensors.keys()].sort()).toEqual(Object.keys(golden.adamw.state).sort());
    for (const [key, want] of Object.entries(golden.adamw.state)) {
      expect(maxAbsDiff(state.tensors.get(key)!.data, want), key).toBeLessThan(1e-6);
    }
    opt.dispose();
    dispose(params);
  });

  it('saves and restores its state so a resumed run continues identically', async () => {
    const shapes = golden.shapes;
    const runA = variables(golden.init, shapes);
    const a = new AdamW(runA, golden.adamw.kwargs);
    const step = (opt: AdamW, k: number) => {
      const grads = tensors(golden.grads[k], shapes);
      opt.step(grads, golden.lrs[k]);
      dispose(grads);
    };
    step(a, 0);
    step(a, 1);
    const saved = await a.state();
    const weights = values(runA);
    step(a, 2);

    // A fresh optimiser over restored weights, as after a reload.
    const runB = variables(weights, shapes);
    const b = new AdamW(runB, golden.adamw.kwargs);
    b.loadState(saved);
    expect((await b.state()).step).toBe(2);
    step(b, 2);
    for (const name of runA.keys()) {
      expect(Array.from(runB.get(name)!.dataSync())).toEqual(Array.from(runA.get(name)!.dataSync()));
    }
    // The saved copy is not tied to the live moments that kept changing.
    expect(maxAbsDiff(saved.tensors.get('w.exp_avg')!.data, (await a.state()).tensors.get('w.exp_avg')!.data)).toBeGreaterThan(0);
    for (const o of [a, b]) o.dispose();
    dispose(runA);
    dispose(runB);
  });

  it('skips a parameter without a gradient and keeps its own step count, as torch does', async () => {
    const [b1, b2, eps, wd] = [0.9, 0.999, 1e-8, 0.01];
    const params = new Map([
      ['a', tf.variable(tf.tensor1d([1, 2]))],
      ['b', tf.variable(tf.tensor1d([-1, 0.5]))],
    ]);
    const opt = new AdamW(params, { betas: [b1, b2], eps, weight_decay: wd });
    const refA: RefAdamState = { p: [1, 2], m: [0, 0], v: [0, 0], t: 0 };
    const refB: RefAdamState = { p: [-1, 0.5], m: [0, 0], v: [0, 0], t: 0 };
    const plan: [Record<string, number[]>, number][] = [
      [{ a: [0.3, -0.1], b: [1, 2] }, 0.1],
      [{ a: [0.2, 0.2] }, 0.05],
      [{ a: [-0.5, 0.4], b: [0.1, -3] }, 0.02],
    ];
    for (const [g, lr] of plan) {
      const grads = tensors(g, { a: [2], b: [2] });
      opt.step(grads, lr);
      dispose(grads);
      refAdamW(refA, g.a, lr, b1, b2, eps, wd);
      if (g.b) refAdamW(refB, g.b, lr, b1, b2, eps, wd);
    }
    expect(maxAbsDiff(params.get('a')!.dataSync(), refA.p)).toBeLessThan(1e-6);
    expect(maxAbsDiff(params.get('b')!.dataSync(), refB.p)).toBeLessThan(1e-6);
    const state = await opt.state();
    expect(state.tensors.get('a.step')!.data[0]).toBe(3);
    expect(state.tensors.get('b.step')!.data[0]).toBe(2);
    opt.dispose();
    dispose(params);
  });

  it('leaks no tensors across steps', async () => {
    const params = variables(golden.init, golden.shapes);
    const opt = new AdamW(params, golden.adamw.kwargs);
    const counts: number[] = [];
    for (let k = 0; k < 6; k++) {
      const grads = tensors(golden.grads[k % 3], golden.shapes);
      const clipped = await clipGradNorm(grads, 1.0);
      opt.step(clipped.grads, 1e-3);
      dispose(clipped.grads);
      dispose(grads);
      counts.push(tf.memory().numTensors);
    }
    expect(new Set(counts).size).toBe(1);
    const before = tf.memory().numTensors;
    opt.dispose();
    expect(tf.memory().numTensors).toBe(before - 2 * params.size);
    dispose(params);
  });

  it('rejects a gradient of the wrong shape or for an unknown parameter', () => {
    const p = tf.variable(tf.zeros([2, 2]));
    const opt = new AdamW(new Map([['p', p]]));
    const wrong = tf.zeros([2]);
    expect(() => opt.step(new Map([['p', wrong]]), 0.1)).toThrow(/shape/);
    expect(() => opt.step(new Map([['q', wrong]]), 0.1)).toThrow(/unknown parameter q/);
    wrong.dispose();
    opt.dispose();
    p.dispose();
  });
});

describe('SGD', () => {
  it('matches torch.optim.SGD (golden numbers) to 1e-6', () => {
    const params = variables(golden.init, golden.shapes);
    const opt = new SGD(params, golden.sgd.kwargs);
    golden.grads.forEach((g, k) => {
      const grads = tensors(g, golden.shapes);
      opt.step(grads, golden.lrs[k]);
      dispose(grads);
      for (const [name, want] of Object.entries(golden.sgd.after[k])) {
        expect(maxAbsDiff(params.get(name)!.dataSync(), want), `${name} after step ${k + 1}`).toBeLessThan(1e-6);
      }
    });
    opt.dispose();
    dispose(params);
  });

  it('adds L2 decay to the gradient: p ← p − lr·(g + wd·p) (worked by hand)', async () => {
    const p = tf.variable(tf.tensor1d([2, -1]));
    const opt = new SGD(new Map([['p', p]]), { weight_decay: 0.5 });
    const g = tf.tensor1d([1, 1]);
    opt.step(new Map([['p', g]]), 0.1);
    // 2 − 0.1·(1 + 1) = 1.8;  −1 − 0.1·(1 − 0.5) = −1.05
    expect(maxAbsDiff(p.dataSync(), [1.8, -1.05])).toBeLessThan(1e-7);
    const state = await opt.state();
    expect(state).toEqual({ step: 1, tensors: new Map() });
    const other = new SGD(new Map([['p', p]]));
    other.loadState(state);
    expect((await other.state()).step).toBe(1);
    g.dispose();
    p.dispose();
  });
});

describe('clipGradNorm', () => {
  it('matches torch.nn.utils.clip_grad_norm_ (golden numbers), clipping and not', async () => {
    for (const c of golden.clip) {
      const grads = tensors(golden.grads[2], golden.shapes);
      const out = await clipGradNorm(grads, c.max_norm);
      expect(Math.abs(out.totalNorm - c.total_norm) / c.total_norm).toBeLessThan(1e-6);
      for (const [name, want] of Object.entries(c.grads)) {
        expect(maxAbsDiff(out.grads.get(name)!.dataSync(), want), name).toBeLessThan(1e-6);
      }
      dispose(out.grads);
      dispose(grads);
    }
  });

  it('matches a float64 re-implementation', async () => {
    const raw = [[3, 4], [12]];
    const ref = refClip(raw, 5);
    expect(ref.total).toBe(13);
    const grads = new Map([
      ['x', tf.tensor1d(raw[0])],
      ['y', tf.tensor1d(raw[1])],
    ]);
    const out = await clipGradNorm(grads, 5);
    expect(out.totalNorm).toBeCloseTo(13, 5);
    expect(maxAbsDiff(out.grads.get('x')!.dataSync(), ref.grads[0])).toBeLessThan(1e-6);
    expect(maxAbsDiff(out.grads.get('y')!.dataSync(), ref.grads[1])).toBeLessThan(1e-6);
    dispose(out.grads);
    dispose(grads);
  });

  it('reports the norm but leaves gradients unchanged when maxNorm ≤ 0, and returns tensors the caller owns', async () => {
    const grads = new Map([['x', tf.tensor1d([3, 4])]]);
    const out = await clipGradNorm(grads, 0);
    expect(out.totalNorm).toBeCloseTo(5, 6);
    expect(Array.from(out.grads.get('x')!.dataSync())).toEqual([3, 4]);
    out.grads.get('x')!.dispose();
    expect(grads.get('x')!.isDisposed).toBe(false);
    dispose(grads);
    expect(await clipGradNorm(new Map(), 1)).toEqual({ grads: new Map(), totalNorm: 0 });
  });
});

describe('createOptimizer', () => {
  it('builds the optimiser a recipe names, decaying what transformers decays', () => {
    expect(transformersDecays('base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight')).toBe(true);
    expect(transformersDecays('model.layers.0.input_layernorm.weight')).toBe(false);
    expect(transformersDecays('model.layers.0.self_attn.q_proj.bias')).toBe(false);

    const params = new Map([
      ['w', tf.variable(tf.tensor1d([1]))],
      ['x.bias', tf.variable(tf.tensor1d([1]))],
    ]);
    const recipe = { optim: 'sgd' as const, adam_beta1: 0.9, adam_beta2: 0.999, adam_epsilon: 1e-8, weight_decay: 0.5 };
    const sgd = createOptimizer(recipe, params);
    expect(sgd).toBeInstanceOf(SGD);
    const zero = new Map([...params.keys()].map((k) => [k, tf.zeros([1])]));
    sgd.step(zero, 0.1);
    expect(params.get('w')!.dataSync()[0]).toBeCloseTo(0.95, 6);
    expect(params.get('x.bias')!.dataSync()[0]).toBe(1);
    const adam = createOptimizer({ ...recipe, optim: 'adamw_torch' }, params);
    expect(adam).toBeInstanceOf(AdamW);
    adam.dispose();
    dispose(zero);
    dispose(params);
  });
});

describe('loadState refuses a state it cannot continue from', () => {
  const FILE = 'ckpt/optimizer.safetensors';
  async function saved(): Promise<{ opt: AdamW; p: tf.Variable; state: OptimizerState }> {
    const p = tf.variable(tf.tensor2d([[1, 2], [3, 4]]));
    const opt = new AdamW(new Map([['w', p]]));
    const g = tf.tensor2d([[0.1, -0.2], [0.3, 0.4]]);
    opt.step(new Map([['w', g]]), 0.01);
    g.dispose();
    return { opt, p, state: await opt.state() };
  }
  const edited = (state: OptimizerState, key: string, value: { shape: number[]; data: Float32Array } | null): OptimizerState => {
    const tensors = new Map(state.tensors);
    if (value) tensors.set(key, value);
    else tensors.delete(key);
    return { step: state.step, tensors };
  };

  it.each([
    ['a NaN moment', (s: OptimizerState) => edited(s, 'w.exp_avg', { shape: [2, 2], data: Float32Array.of(0, NaN, 0, 0) }), `${FILE}: exp_avg of w holds NaN; this checkpoint cannot be resumed.`],
    ['an infinite second moment', (s: OptimizerState) => edited(s, 'w.exp_avg_sq', { shape: [2, 2], data: Float32Array.of(0, 0, Infinity, 0) }), `${FILE}: exp_avg_sq of w holds Infinity; this checkpoint cannot be resumed.`],
    ['a negative second moment', (s: OptimizerState) => edited(s, 'w.exp_avg_sq', { shape: [2, 2], data: Float32Array.of(0, -1, 0, 0) }), `${FILE}: exp_avg_sq of w holds -1; this checkpoint cannot be resumed.`],
    ['a misshapen moment', (s: OptimizerState) => edited(s, 'w.exp_avg', { shape: [4], data: new Float32Array(4) }), `${FILE}: tensor w.exp_avg has shape [4] but the parameter has [2,2]; this checkpoint cannot be resumed.`],
    ['a missing moment', (s: OptimizerState) => edited(s, 'w.exp_avg_sq', null), `${FILE}: tensor w.exp_avg_sq is missing (was it written with another optim or peft setting?); this checkpoint cannot be resumed.`],
    ['a tensor of no parameter', (s: OptimizerState) => edited(s, 'v.exp_avg', { shape: [1], data: new Float32Array(1) }), `${FILE}: tensor v.exp_avg belongs to no parameter of this run (was it written with another optim or peft setting?); this checkpoint cannot be resumed.`],
    ['a step that is not a count', (s: OptimizerState) => edited(s, 'w.step', { shape: [], data: Float32Array.of(1.5) }), `${FILE}: tensor w.step must hold one non-negative integer (got 1.5); this checkpoint cannot be resumed.`],
    ['an optimizer step that is not a count', (s: OptimizerState) => ({ ...s, step: NaN }), `${FILE}: the optimizer step must be a non-negative integer (got NaN); this checkpoint cannot be resumed.`],
  ])('%s: one sentence naming the file and tensor, and nothing changes', async (_, edit, message) => {
    const { opt, p, state } = await saved();
    let error: unknown = null;
    try {
      opt.loadState(edit(state), FILE);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(UserError);
    expect((error as Error).message).toBe(message);
    expect(await opt.state()).toEqual(state);
    opt.dispose();
    p.dispose();
  });

  it('SGD refuses AdamW moments', async () => {
    const { opt, p, state } = await saved();
    expect(() => new SGD(new Map([['w', p]])).loadState(state, FILE)).toThrow(UserError);
    opt.dispose();
    p.dispose();
  });
});
