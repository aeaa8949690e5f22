/**
 * Optimisers over tfjs variables with PyTorch's arithmetic, so a run here and the same recipe in
 * TRL take the same steps: `clip_grad_norm_`, `torch.optim.AdamW` and `torch.optim.SGD`
 * (single-tensor code path). The learning rate is passed to every step because the schedule
 * owns it, as with torch's LambdaLR writing `param_group['lr']` before each step.
 */
import * as tf from '@tensorflow/tfjs';
import { UserError } from '../errors.ts';
import { describeValue, firstUnusable } from './guard.ts';

/** Optimiser state for a checkpoint, keyed as torch names it: `<param>.exp_avg`, `<param>.exp_avg_sq`, `<param>.step`. */
export interface OptimizerState {
  /** Optimiser steps taken. */
  step: number;
  tensors: Map<string, { shape: number[]; data: Float32Array }>;
}

export interface Optimizer {
  /** Updates every parameter that has a gradient, in place. The caller keeps owning `grads`. */
  step(grads: Map<string, tf.Tensor>, lr: number): void;
  state(): Promise<OptimizerState>;
  /**
   * Takes a saved state over. Anything that does not fit this optimiser and its parameters (a
   * missing, extra or wrongly shaped tensor, a NaN moment, a step that is not a count) is a
   * UserError naming `file` and the tensor, and leaves the optimiser as it was.
   */
  loadState(state: OptimizerState, file?: string): void;
  dispose(): void;
}

/**
 * transformers' rule for which parameters get weight decay: all but biases and norm weights
 * (parameter names containing "bias", "layernorm" or "rmsnorm").
 */
export function transformersDecays(name: string): boolean {
  return !/bias|layernorm|rmsnorm/.test(name.toLowerCase());
}

/**
 * `torch.nn.utils.clip_grad_norm_`: total = ‖(‖g₁‖, ‖g₂‖, …)‖₂, every gradient multiplied by
 * min(maxNorm / (total + 1e-6), 1). maxNorm ≤ 0 leaves gradients as they are (transformers skips
 * clipping when max_grad_norm is 0) but still reports the norm. Returns new tensors; the caller
 * still owns and disposes the ones it passed in.
 */
export async function clipGradNorm(grads: Map<string, tf.Tensor>, maxNorm: number): Promise<{ grads: Map<string, tf.Tensor>; totalNorm: number }> {
  if (grads.size === 0) return { grads: new Map(), totalNorm: 0 };
  const names = [...grads.keys()];
  const [total, ...clipped] = tf.tidy(() => {
    const total = tf.norm(tf.stack(names.map((n) => tf.norm(grads.get(n)!))));
    if (maxNorm <= 0) return [total, ...names.map((n) => grads.get(n)!.clone())];
    // The coefficient stays on the device so the scaling never waits for the norm to be read.
    const coef = tf.minimum(tf.div(maxNorm, tf.add(total, 1e-6)), 1);
    return [total, ...names.map((n) => tf.mul(grads.get(n)!, coef))];
  });
  // Read asynchronously: WebGPU has no synchronous readback in a worker or in Node.
  const totalNorm = (await total.data())[0];
  total.dispose();
  return { grads: new Map(names.map((n, i) => [n, clipped[i]])), totalNorm };
}

const decayAll = (): boolean => true;

function checkGrads(params: Map<string, tf.Variable>, grads: Map<string, tf.Tensor>): void {
  for (const [name, g] of grads) {
    const p = params.get(name);
    if (!p) throw new Error(`optimizer: gradient for unknown parameter ${name}`);
    // tfjs would broadcast a wrongly shaped gradient silently.
    if (!tf.util.arraysEqual(p.shape, g.shape)) {
      throw new Error(`optimizer: gradient for ${name} has shape [${g.shape}], parameter has [${p.shape}]`);
    }
  }
}

function stateError(file: string, message: string, key?: string): UserError {
  return new UserError(`${file}: ${message}; this checkpoint cannot be resumed.`, { file, field: key });
}

/** Throws unless every tensor of `state` is one of `expected`, and the step is a count. */
function checkStateKeys(state: OptimizerState, expected: Set<string>, file: string): void {
  if (!Number.isSafeInteger(state.step) || state.step < 0) throw stateError(file, `the optimizer step must be a non-negative integer (got ${state.step})`);
  for (const key of state.tensors.keys()) {
    if (!expected.has(key)) throw stateError(file, `tensor ${key} belongs to no parameter of this run (was it written with another optim or peft setting?)`, key);
  }
}

/** A moment tensor from `state`, checked for its shape and for values a step could use. */
function takeMoment(state: OptimizerState, param: string, which: 'exp_avg' | 'exp_avg_sq', shape: number[], file: string): Float32Array {
  const key = `${param}.${which}`;
  const t = state.tensors.get(key);
  if (!t) throw stateError(file, `tensor ${key} is missing (was it written with another optim or peft setting?)`, key);
  if (!tf.util.arraysEqual(t.shape, shape) || t.data.length !== tf.util.sizeFromShape(shape)) {
    throw stateError(file, `tensor ${key} has shape [${t.shape}] but the parameter has [${shape}]`, key);
  }
  // exp_avg_sq is a running mean of squares: a negative one would put NaN into the next step.
  // Moments only need to be finite: a large one is caught in the weights it moves, before any save.
  const bad = firstUnusable(t.data, { nonNegative: which === 'exp_avg_sq', finiteOnly: true });
  if (bad >= 0) throw stateError(file, `${which} of ${param} holds ${describeValue(t.data[bad])}`, key);
  return t.data;
}

function takeStep(state: OptimizerState, param: string, file: string): number {
  const key = `${param}.step`;
  const t = state.tensors.get(key);
  if (!t) throw stateError(file, `tensor ${key} is missing (was it written with another optim or peft setting?)`, key);
  const step = t.data.length === 1 ? t.data[0] : NaN;
  if (!Number.isSafeInteger(step) || step < 0) throw stateError(file, `tensor ${key} must hold one non-negative integer (got ${t.data.length === 1 ? describeValue(step) : `${t.data.length} values`})`, key);
  return step;
}

async function snapshot(t: tf.Tensor): Promise<{ shape: number[]; data: Float32Array }> {
  // The CPU backend hands out its live buffer; a checkpoint needs its own copy.
  return { shape: [...t.shape], data: Float32Array.from((await t.data()) as Float32Array) };
}

export interface AdamWOptions {
  betas?: [number, number];
  eps?: number;
  weight_decay?: number;
  /** Which parameters weight decay applies to; all by default, as in one torch param group. */
  decays?: (name: string) => boolean;
}

/**
 * `torch.optim.AdamW` (single-tensor path), per parameter with a gradient at step t:
 *   p *= 1 − lr·wd;  m = β₁m + (1−β₁)g;  v = β₂v + (1−β₂)g²;
 *   p −= (lr / (1−β₁ᵗ)) · m / (√v / √(1−β₂ᵗ) + ε)
 * Bias corrections are computed in float64 on the host, as torch does with its Python floats.
 * Each parameter counts its own steps, as torch does, so one left without a gradient (torch's
 * `grad is None`) is skipped entirely and its bias correction stays right.
 */
export class AdamW implements Optimizer {
  private readonly params: Map<string, tf.Variable>;
  private readonly beta1: number;
  private readonly beta2: number;
  private readonly eps: number;
  private readonly weightDecay: number;
  private readonly decays: (name: string) => boolean;
  private readonly expAvg = new Map<string, tf.Variable>();
  private readonly expAvgSq = new Map<string, tf.Variable>();
  private readonly paramSteps = new Map<string, number>();
  private steps = 0;

  /** Defaults are torch's: betas (0.9, 0.999), eps 1e-8, weight_decay 0.01. */
  constructor(params: Map<string, tf.Variable>, options: AdamWOptions = {}) {
    this.params = params;
    [this.beta1, this.beta2] = options.betas ?? [0.9, 0.999];
    this.eps = options.eps ?? 1e-8;
    this.weightDecay = options.weight_decay ?? 0.01;
    this.decays = options.decays ?? decayAll;
    for (const [name, p] of params) {
      this.expAvg.set(name, tf.variable(tf.zeros(p.shape), false));
      this.expAvgSq.set(name, tf.variable(tf.zeros(p.shape), false));
      this.paramSteps.set(name, 0);
    }
  }

  step(grads: Map<string, tf.Tensor>, lr: number): void {
    checkGrads(this.params, grads);
    const { beta1, beta2, eps } = this;
    tf.tidy(() => {
      for (const [name, g] of grads) {
        const p = this.params.get(name)!;
        const m = this.expAvg.get(name)!;
        const v = this.expAvgSq.get(name)!;
        const t = this.paramSteps.get(name)! + 1;
        this.paramSteps.set(name, t);

        const wd = this.decays(name) ? this.weightDecay : 0;
        const decayed = wd > 0 ? tf.mul(p, 1 - lr * wd) : p;
        const mNew = tf.add(tf.mul(m, beta1), tf.mul(g, 1 - beta1));
        const vNew = tf.add(tf.mul(v, beta2), tf.mul(tf.mul(g, g), 1 - beta2));
        const stepSize = lr / (1 - beta1 ** t);
        const denom = tf.add(tf.div(tf.sqrt(vNew), Math.sqrt(1 - beta2 ** t)), eps);
        const pNew = tf.sub(decayed, tf.mul(tf.div(mNew, denom), stepSize));
        m.assign(mNew);
        v.assign(vNew);
        p.assign(pNew);
      }
    });
    this.steps++;
  }

  async state(): Promise<OptimizerState> {
    const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
    for (const name of this.params.keys()) {
      tensors.set(`${name}.exp_avg`, await snapshot(this.expAvg.get(name)!));
      tensors.set(`${name}.exp_avg_sq`, await snapshot(this.expAvgSq.get(name)!));
      tensors.set(`${name}.step`, { shape: [], data: Float32Array.of(this.paramSteps.get(name)!) });
    }
    return { step: this.steps, tensors };
  }

  loadState(state: OptimizerState, file = 'optimizer state'): void {
    checkStateKeys(state, new Set([...this.params.keys()].flatMap((n) => [`${n}.exp_avg`, `${n}.exp_avg_sq`, `${n}.step`])), file);
    // Everything is checked before anything is assigned, so a refused state changes nothing.
    const loaded = [...this.params].map(([name, p]) => ({
      name,
      m: takeMoment(state, name, 'exp_avg', p.shape, file),
      v: takeMoment(state, name, 'exp_avg_sq', p.shape, file),
      step: takeStep(state, name, file),
    }));
    for (const { name, m, v, step } of loaded) {
      const shape = this.params.get(name)!.shape;
      tf.tidy(() => {
        this.expAvg.get(name)!.assign(tf.tensor(m, shape, 'float32'));
        this.expAvgSq.get(name)!.assign(tf.tensor(v, shape, 'float32'));
      });
      this.paramSteps.set(name, step);
    }
    this.steps = state.step;
  }

  dispose(): void {
    for (const t of [...this.expAvg.values(), ...this.expAvgSq.values()]) t.dispose();
    this.expAvg.clear();
    this.expAvgSq.clear();
  }
}

export interface SGDOptions {
  weight_decay?: number;
  /** Which parameters weight decay applies to; all by default, as in one torch param group. */
  decays?: (name: string) => boolean;
}

/**
 * `torch.optim.SGD` without momentum: g += wd·p (coupled L2, unlike AdamW), then p −= lr·g.
 * It keeps no tensors, so its checkpoint state is the step count alone.
 */
export class SGD implements Optimizer {
  private readonly params: Map<string, tf.Variable>;
  private readonly weightDecay: number;
  private readonly decays: (name: string) => boolean;
  private steps = 0;

  constructor(params: Map<string, tf.Variable>, options: SGDOptions = {}) {
    this.params = params;
    this.weightDecay = options.weight_decay ?? 0;
    this.decays = options.decays ?? decayAll;
  }

  step(grads: Map<string, tf.Tensor>, lr: number): void {
    checkGrads(this.params, grads);
    tf.tidy(() => {
      for (const [name, g] of grads) {
        const p = this.params.get(name)!;
        const wd = this.decays(name) ? this.weightDecay : 0;
        const d = wd > 0 ? tf.add(g, tf.mul(p, wd)) : g;
        p.assign(tf.sub(p, tf.mul(d, lr)));
      }
    });
    this.steps++;
  }

  async state(): Promise<OptimizerState> {
    return { step: this.steps, tensors: new Map() };
  }

  loadState(state: OptimizerState, file = 'optimizer state'): void {
    checkStateKeys(state, new Set(), file);
    this.steps = state.step;
  }

  dispose(): void {}
}

/** The optimiser a recipe names, with the recipe's hyperparameters and the Trainer's decay rule. */
export function createOptimizer(
  recipe: { optim: 'adamw_torch' | 'sgd'; adam_beta1: number; adam_beta2: number; adam_epsilon: number; weight_decay: number },
  params: Map<string, tf.Variable>,
): Optimizer {
  const decays = transformersDecays;
  if (recipe.optim === 'sgd') return new SGD(params, { weight_decay: recipe.weight_decay, decays });
  return new AdamW(params, {
    betas: [recipe.adam_beta1, recipe.adam_beta2],
    eps: recipe.adam_epsilon,
    weight_decay: recipe.weight_decay,
    decays,
  });
}
