import * as tf from '@tensorflow/tfjs';
import type { HostBatch } from './batch.ts';
import { clipGradNorm, type Optimizer } from './optim.ts';

export interface StepResult {
  /** Token-mean loss over every trainable token of the step's micro-batches. */
  loss: number;
  /** Global gradient norm before clipping, as torch's clip_grad_norm_ returns it. */
  grad_norm: number;
  /** Trainable tokens in the step (TRL's num_items_in_batch). */
  num_items: number;
  /** Real input tokens in the step, for tokens/s. */
  num_tokens: number;
}

/**
 * One optimizer step over several micro-batches: each micro-batch's summed loss is
 * differentiated and the gradients added up; then the sum is divided once by the step's
 * trainable-token count, clipped, and applied. This is TRL's token mean over the whole
 * effective batch, not a mean of micro-batch means.
 */
export async function trainStep(
  params: Map<string, tf.Variable>,
  microBatches: HostBatch[],
  lossSum: (batch: HostBatch) => tf.Scalar,
  optimizer: Optimizer,
  lr: number,
  maxGradNorm: number,
): Promise<StepResult> {
  const numItems = microBatches.reduce((n, b) => n + b.targets.length, 0);
  const numTokens = microBatches.reduce((n, b) => n + b.num_tokens, 0);
  const keys = [...params.keys()];
  const vars = keys.map((k) => params.get(k)!);
  const byVarName = new Map(vars.map((v, i) => [v.name, keys[i]]));

  let summed: Map<string, tf.Tensor> | null = null;
  let lossTotal = tf.scalar(0);
  for (const batch of microBatches) {
    if (batch.targets.length === 0) continue;
    const { value, grads } = tf.variableGrads(() => lossSum(batch), vars);
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
    const total = tf.add(lossTotal, value) as tf.Scalar;
    lossTotal.dispose();
    value.dispose();
    lossTotal = total;
  }
  const loss = numItems > 0 ? (await lossTotal.data())[0] / numItems : 0;
  lossTotal.dispose();
  if (!summed) return { loss, grad_norm: 0, num_items: numItems, num_tokens: numTokens };

  const scaled = new Map<string, tf.Tensor>();
  for (const [k, g] of summed) {
    scaled.set(k, tf.div(g, numItems));
    g.dispose();
  }
  const { grads, totalNorm } = await clipGradNorm(scaled, maxGradNorm);
  optimizer.step(grads, lr);
  for (const g of grads.values()) g.dispose();
  for (const g of scaled.values()) if (!g.isDisposed) g.dispose();
  return { loss, grad_norm: totalNorm, num_items: numItems, num_tokens: numTokens };
}
