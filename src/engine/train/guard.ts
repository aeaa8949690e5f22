/**
 * Checks that keep garbage out of checkpoints and out of resumed runs: tensors that hold values
 * no training step can use (NaN, ±Infinity, or numbers so large that squaring them overflows
 * float32), and the `resume` block of trainer_state.json against the recipe and the data.
 */
import * as tf from '@tensorflow/tfjs';
import { z } from 'zod';
import { UserError } from '../errors.ts';

/** √(largest float32): a weight past this overflows as soon as it is squared (norms, matmuls). */
const SQRT_FLOAT32_MAX = 1.8446742974197924e19;

/** A value that cannot be trained with, for messages: "NaN", "Infinity", "1.00e+28". */
export function describeValue(x: number): string {
  return Number.isFinite(x) && (Math.abs(x) >= 1e6 || (x !== 0 && Math.abs(x) < 1e-4)) ? x.toExponential(2) : String(x);
}

/**
 * Index of the first element that is not finite (or, for a weight, whose square overflows
 * float32; or, with `nonNegative`, that is negative); -1 when all are usable.
 */
export function firstUnusable(data: ArrayLike<number>, options: { nonNegative?: boolean; finiteOnly?: boolean } = {}): number {
  const limit = options.finiteOnly ? Number.MAX_VALUE : SQRT_FLOAT32_MAX;
  for (let i = 0; i < data.length; i++) {
    const x = data[i];
    if (!(Math.abs(x) <= limit)) return i;
    if (options.nonNegative && x < 0) return i;
  }
  return -1;
}

/**
 * The first tensor (in map order) holding a value no step can use, with that value; null when all
 * are usable. One sum of squares per tensor on the backend, read back in one go: NaN, ±Infinity
 * and overflowing squares all make that sum non-finite. Only a failing tensor is read whole.
 */
export async function findUnusableTensor(tensors: Map<string, tf.Tensor>): Promise<{ name: string; value: number } | null> {
  const names = [...tensors.keys()];
  if (names.length === 0) return null;
  // Each square is freed as soon as it is summed: a full fine-tune checks every weight of the model.
  const parts = names.map((n) => tf.tidy(() => tf.sum(tf.square(tensors.get(n)!.toFloat()))));
  const sums = tf.stack(parts);
  tf.dispose(parts);
  const values = (await sums.data()) as Float32Array;
  sums.dispose();
  for (let i = 0; i < names.length; i++) {
    if (Number.isFinite(values[i])) continue;
    const data = (await tensors.get(names[i])!.data()) as Float32Array;
    const at = firstUnusable(data);
    // Every value fits but their squares add up past float32: report the largest.
    const value = at >= 0 ? data[at] : data.reduce((m, x) => (Math.abs(x) > Math.abs(m) ? x : m), 0);
    return { name: names[i], value };
  }
  return null;
}

// ---- trainer_state.json's `resume` block ----

/** What a resume block must fit: the recipe's step count and batch size, and the data's size. */
export interface ResumeLimits {
  totalSteps: number;
  numExamples: number;
  batchSize: number;
}

export interface ResumeBlock {
  global_step: number;
  epoch_index: number;
  batch_index: number;
  order: number[];
  rng: [number, number, number, number];
  num_input_tokens_seen: number;
  num_train_examples: number;
}

const nonNegativeInt = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);

/**
 * Parses the `resume` block; any field that the loop would misread (a string step, a step past
 * the end, an order index outside the data, an RNG state of the wrong size) is one sentence
 * naming the file and the field. `num_train_examples` is checked first, since a different data
 * file explains every other mismatch.
 */
export function parseResumeBlock(raw: unknown, file: string, limits: ResumeLimits, dataFile: string): ResumeBlock {
  const fail = (field: string, expect: string, got: unknown): never => {
    throw new UserError(`${file}: resume.${field} must be ${expect} (got ${shortJson(got)}); this checkpoint cannot be resumed.`, { file, field: `resume.${field}` });
  };
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new UserError(`${file} has no "resume" block; only checkpoints written by this studio can be resumed.`, { file });
  }
  const r = raw as Record<string, unknown>;
  const n = limits.numExamples;
  if (!nonNegativeInt.min(1).safeParse(r.num_train_examples).success) fail('num_train_examples', 'a positive integer', r.num_train_examples);
  if (r.num_train_examples !== n) {
    throw new UserError(
      `${file}: the checkpoint was trained on ${r.num_train_examples} examples but ${dataFile} now gives ${n}; resume with the same data and recipe.`,
      { file, field: 'resume.num_train_examples' },
    );
  }
  const microPerEpoch = Math.ceil(n / limits.batchSize);
  const schema = z.object({
    global_step: nonNegativeInt.max(limits.totalSteps),
    epoch_index: nonNegativeInt,
    batch_index: nonNegativeInt.max(microPerEpoch),
    order: z.array(nonNegativeInt.max(n - 1)).length(n),
    rng: z.tuple([z.number().int().min(0).max(0xffffffff), z.number().int().min(0).max(0xffffffff), z.number().int().min(0).max(0xffffffff), z.number().int().min(0).max(0xffffffff)]),
    num_input_tokens_seen: nonNegativeInt,
    num_train_examples: z.literal(n),
  });
  const expect: Record<string, string> = {
    global_step: `an integer step from 0 to ${limits.totalSteps} (the recipe's total steps)`,
    epoch_index: 'a non-negative integer',
    batch_index: `an integer from 0 to ${microPerEpoch} (the micro-batches of an epoch)`,
    order: `a list of the ${n} example indices 0 to ${n - 1}`,
    rng: 'a list of four unsigned 32-bit integers',
    num_input_tokens_seen: 'a non-negative integer',
  };
  const parsed = schema.safeParse(r);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const [key, index] = issue.path as (string | number)[];
    const field = String(key);
    if (field === 'order' && typeof index === 'number') {
      fail(`order[${index}]`, `an example index from 0 to ${n - 1}`, (r.order as unknown[])[index]);
    }
    if (field === 'rng' && typeof index === 'number' && Array.isArray(r.rng) && r.rng.length === 4) {
      fail(`rng[${index}]`, 'an unsigned 32-bit integer', r.rng[index]);
    }
    fail(field, expect[field] ?? 'valid', r[field]);
  }
  const block = parsed.data as ResumeBlock;
  const seen = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    if (seen[block.order[i]]) fail(`order[${i}]`, `an index not already in the list (order must be a permutation of 0 to ${n - 1})`, block.order[i]);
    seen[block.order[i]] = 1;
  }
  if (block.rng.every((x) => x === 0)) fail('rng', 'a state that is not all zeros', block.rng);
  // Every epoch takes at least one step, so the loop cannot be further into the data than its step count.
  if (block.epoch_index > block.global_step) fail('epoch_index', `at most global_step (${block.global_step})`, block.epoch_index);
  return block;
}

/** Log history entries as saved; anything else in trainer_state.json's log_history is refused. */
export function parseLogHistory<T>(raw: unknown, file: string): T[] {
  if (raw === undefined) return [];
  const parsed = z.array(z.looseObject({ step: nonNegativeInt })).safeParse(raw);
  if (!parsed.success) {
    throw new UserError(`${file}: log_history must be a list of entries with an integer "step"; this checkpoint cannot be resumed.`, { file, field: 'log_history' });
  }
  return parsed.data as T[];
}

function shortJson(v: unknown): string {
  const s = v === undefined ? 'nothing' : JSON.stringify(v);
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}
