/**
 * A check after loading: a weight holding NaN or ±Infinity makes every loss NaN and every sample
 * garbage, and no setting of the recipe can fix it, so the shells refuse such a model up front.
 */
import * as tf from '@tensorflow/tfjs';
import { UserError } from '../errors.ts';
import { unpackWeight } from '../backend/kernels/linear.ts';
import type { CausalLM } from './llama.ts';

/**
 * The name of one weight of `model` that holds a non-finite value (NaN, +Infinity or -Infinity),
 * or null when every weight is finite. One reduction per tensor, read back once at the end;
 * 16-bit packed weights are widened one at a time, so at most one float32 copy exists at once.
 */
export async function nonFiniteWeight(model: Pick<CausalLM, 'params' | 'packed'>): Promise<string | null> {
  const names: string[] = [];
  const flags: tf.Scalar[] = [];
  try {
    for (const [name, t] of model.params) {
      if (t.dtype !== 'float32') continue;
      names.push(name);
      flags.push(tf.tidy(() => tf.cast(tf.all(tf.isFinite(t)), 'float32')));
    }
    for (const [name, w] of model.packed) {
      names.push(name);
      flags.push(
        tf.tidy(() => {
          const wide = unpackWeight(w);
          return tf.cast(tf.all(tf.isFinite(wide)), 'float32');
        }),
      );
    }
    if (flags.length === 0) return null;
    const all = tf.tidy(() => tf.stack(flags));
    try {
      const finite = await all.data();
      const i = finite.findIndex((v) => v === 0);
      return i < 0 ? null : names[i];
    } finally {
      all.dispose();
    }
  } finally {
    for (const f of flags) f.dispose();
  }
}

/** The name (`<module>.lora_A` / `.lora_B`) of one LoRA matrix holding a non-finite value, or null. */
export async function nonFiniteAdapterWeight(adapter: { modules: Map<string, { A: tf.Tensor; B: tf.Tensor }> }): Promise<string | null> {
  const params = new Map<string, tf.Tensor>();
  for (const [name, pair] of adapter.modules) {
    params.set(`${name}.lora_A`, pair.A);
    params.set(`${name}.lora_B`, pair.B);
  }
  return nonFiniteWeight({ params, packed: new Map() });
}

/**
 * Refuses an adapter whose weights hold NaN or infinity (the model's own weights are checked as
 * they load): every loss would be NaN and every sample garbage. `where` names it (a folder, a zip).
 */
export async function checkFiniteAdapter(adapter: { modules: Map<string, { A: tf.Tensor; B: tf.Tensor }> }, where: string): Promise<void> {
  const bad = await nonFiniteAdapterWeight(adapter);
  if (bad !== null) {
    throw new UserError(`${where}: the adapter's weights contain non-finite values (NaN or infinity), for example ${bad}; it cannot be used.`, { file: where });
  }
}
