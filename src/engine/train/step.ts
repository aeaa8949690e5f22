import * as tf from '@tensorflow/tfjs';
import type { LossContext, Method } from './method.ts';
import { clipGradNorm, type Optimizer } from './optim.ts';

export interface StepResult {
  /** The loss averaged over the step's items (SFT: trainable tokens; DPO: pairs). */
  loss: number;
  /** The method's metrics, each averaged over the step's items. */
  metrics: Record<string, number>;
  /** Global gradient norm before clipping, as torch's clip_grad_norm_ returns it. */
  grad_norm: number;
  /** The items the loss is averaged over (TRL's num_items_in_batch). */
  num_items: number;
  /** Real input tokens in the step, for tokens/s. */
  num_tokens: number;
}

/**
 * One optimizer step over several micro-batches: each micro-batch's summed loss is
 * differentiated and the gradients added up; then the sum is divided once by the step's item
 * count, clipped, and applied. For SFT this is TRL's token mean over the whole effective batch,
 * not a mean of micro-batch means; for the preference methods the mean over the step's rows.
 */
export async function trainStep<B>(
  params: Map<string, tf.Variable>,
  microBatches: B[],
  method: Method<unknown, B>,
  ctx: LossContext,
  optimizer: Optimizer,
  lr: number,
  maxGradNorm: number,
): Promise<StepResult> {
  const numItems = microBatches.reduce((n, b) => n + method.countItems(b), 0);
  const numTokens = microBatches.reduce((n, b) => n + method.countTokens(b), 0);
  const keys = [...params.keys()];
  const vars = keys.map((k) => params.get(k)!);
  const byVarName = new Map(vars.map((v, i) => [v.name, keys[i]]));

  let summed: Map<string, tf.Tensor> | null = null;
  const totals = new MetricSums();
  for (const batch of microBatches) {
    if (method.countItems(batch) === 0) continue;
    await method.prepareBatch?.(batch, ctx);
    let metrics: Record<string, tf.Scalar> = {};
    const { value, grads } = tf.variableGrads(() => {
      const out = method.loss(batch, ctx);
      // The metrics leave the tape's scope alive; they carry no gradient.
      metrics = Object.fromEntries(Object.entries(out.metrics).map(([k, v]) => [k, tf.keep(v)]));
      return out.loss;
    }, vars);
    const next = new Map<string, tf.Tensor>();
    for (const [name, g] of Object.entries(grads)) {
      const key = byVarName.get(name)!;
      const prev = summed?.get(key);
      next.set(key, prev ? tf.add(prev, g) : g);
      if (prev) {
        prev.dispose();
        g.dispose();
      }
    }
    summed = next;
    totals.add({ loss: value, ...metrics });
  }
  const means = await totals.means(numItems);
  const { loss = 0, ...metrics } = means;
  if (!summed) return { loss, metrics, grad_norm: 0, num_items: numItems, num_tokens: numTokens };

  const scaled = new Map<string, tf.Tensor>();
  for (const [k, g] of summed) {
    scaled.set(k, tf.div(g, numItems));
    g.dispose();
  }
  const { grads, totalNorm } = await clipGradNorm(scaled, maxGradNorm);
  optimizer.step(grads, lr);
  for (const g of grads.values()) g.dispose();
  for (const g of scaled.values()) if (!g.isDisposed) g.dispose();
  return { loss, metrics, grad_norm: totalNorm, num_items: numItems, num_tokens: numTokens };
}

/**
 * The loss and metrics of a method over examples, without dropout or gradients (evaluation):
 * each averaged over the examples' items, as a step averages them.
 */
export async function evaluateMethod<E, B>(
  method: Method<E, B>,
  ctx: LossContext,
  examples: E[],
  batchSize: number,
): Promise<{ loss: number; metrics: Record<string, number>; num_items: number; num_tokens: number }> {
  const totals = new MetricSums();
  let numItems = 0;
  let numTokens = 0;
  for (let i = 0; i < examples.length; i += batchSize) {
    const batch = method.collate(examples.slice(i, i + batchSize));
    const items = method.countItems(batch);
    if (items === 0) continue;
    await method.prepareBatch?.(batch, ctx);
    const out = tf.tidy(() => {
      const { loss, metrics } = method.loss(batch, { model: ctx.model, adapter: ctx.adapter });
      return { loss, ...metrics };
    });
    totals.add(out);
    numItems += items;
    numTokens += method.countTokens(batch);
  }
  const { loss = NaN, ...metrics } = await totals.means(numItems);
  return { loss: numItems > 0 ? loss : NaN, metrics, num_items: numItems, num_tokens: numTokens };
}

/** Scalar sums kept as tensors until the end, then read back once each and divided. */
class MetricSums {
  private readonly sums = new Map<string, tf.Scalar>();

  /** Adds (and takes ownership of) each scalar. */
  add(values: Record<string, tf.Scalar>): void {
    for (const [k, v] of Object.entries(values)) {
      const prev = this.sums.get(k);
      if (prev) {
        this.sums.set(k, tf.add(prev, v) as tf.Scalar);
        prev.dispose();
        v.dispose();
      } else {
        this.sums.set(k, v);
      }
    }
  }

  async means(count: number): Promise<Record<string, number>> {
    const out: Record<string, number> = {};
    for (const [k, v] of this.sums) {
      out[k] = count > 0 ? (await v.data())[0] / count : 0;
      v.dispose();
    }
    this.sums.clear();
    return out;
  }
}
