// GRPO's objective against an independent PyTorch re-typing of TRL 1.9's GRPOTrainer
// (tests/reference/grpo_golden.py, fixture tests/fixtures/grpo/grpo.json): reward combination,
// advantages for each scale_rewards, and the loss, its metrics and d loss / d logp for every
// loss_type × importance_sampling_level, on- and off-policy, with and without the KL penalty.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../../src/engine/backend/index.ts';
import {
  combineRewards,
  GRPO_LOSS_METRICS,
  groupAdvantages,
  grpoTokenLoss,
  rewardMetrics,
  type GrpoLossInputs,
  type GrpoLossType,
  type ImportanceSamplingLevel,
  type ScaleRewards,
} from '../../src/engine/train/methods/grpo_loss.ts';

type Maybe = number | null;
interface Setting { old: 'detached' | 'given'; beta: number; epsilon: number; epsilon_high: number | null }
interface LossCase {
  setting: string;
  importance_sampling_level: ImportanceSamplingLevel;
  loss_type: GrpoLossType;
  loss: number;
  metrics: Record<string, number>;
  grad_logp: number[][];
}
interface AdvantageCase {
  rewards: Maybe[][];
  weights: number[];
  num_generations: number;
  reward_names: string[];
  combined: Maybe[];
  metrics: Record<string, Maybe>;
  scales: Record<ScaleRewards, { advantages: number[]; std: Maybe[]; frac_reward_zero_std: number }>;
}
interface Fixture {
  max_completion_length: number;
  num_items_in_batch: number;
  inputs: { logp: number[][]; old_logp: number[][]; ref_logp: number[][]; completion_mask: number[][]; advantages: number[] };
  settings: Record<string, Setting>;
  cases: Record<string, LossCase>;
  advantage_cases: Record<string, AdvantageCase>;
}

const FILE = fileURLToPath(new URL('../fixtures/grpo/grpo.json', import.meta.url));
const fx = JSON.parse(readFileSync(FILE, 'utf8')) as Fixture;
// JSON has no NaN: the reference writes it as null.
const nan = (v: Maybe) => (v === null ? NaN : v);

function expectClose(got: number, expected: number, tol: number, what: string) {
  if (Number.isNaN(expected)) return expect(got, what).toBeNaN();
  expect(Math.abs(got - expected), `${what}: ${got} vs ${expected}`).toBeLessThanOrEqual(tol);
}

const relErr = (got: number, expected: number) => (expected === 0 ? Math.abs(got) : Math.abs(got - expected) / Math.abs(expected));

beforeAll(async () => {
  const info = await initBackend('cpu');
  if (info.name !== 'cpu') throw new Error('cpu backend unavailable');
});

describe.each(Object.entries(fx.advantage_cases))('rewards and advantages match TRL: %s', (_name, c) => {
  it('combineRewards: weighted nansum, NaN where no function scored', () => {
    const got = combineRewards(c.rewards, c.weights);
    expect(got).toHaveLength(c.combined.length);
    got.forEach((v, i) => expectClose(v, nan(c.combined[i]), 1e-6, `completion ${i}`));
  });

  it.each(['group', 'batch', 'none'] as const)('groupAdvantages, scale_rewards %s', (scale) => {
    const e = c.scales[scale];
    const got = groupAdvantages(combineRewards(c.rewards, c.weights), c.num_generations, scale);
    got.advantages.forEach((v, i) => expectClose(v, e.advantages[i], 1e-6, `advantage ${i}`));
    got.std.forEach((v, i) => expectClose(v, nan(e.std[i]), 1e-6, `std ${i}`));
    expect(got.fracZeroStd).toBeCloseTo(e.frac_reward_zero_std, 12);
  });

  it('rewardMetrics', () => {
    const got = rewardMetrics(c.rewards, c.reward_names, combineRewards(c.rewards, c.weights));
    expect(Object.keys(got).sort()).toEqual(Object.keys(c.metrics).sort());
    for (const [k, v] of Object.entries(c.metrics)) expectClose(got[k], nan(v), 1e-6, k);
  });
});

it('groupAdvantages rejects rewards that do not form whole groups', () => {
  expect(() => groupAdvantages([1, 2, 3], 2, 'group')).toThrow(/groups of 2/);
});

function lossInputs(s: Setting): GrpoLossInputs {
  const i = fx.inputs;
  return {
    logp: tf.tensor2d(i.logp),
    oldLogp: s.old === 'given' ? tf.tensor2d(i.old_logp) : undefined,
    refLogp: s.beta !== 0 ? tf.tensor2d(i.ref_logp) : undefined,
    advantages: tf.tensor1d(i.advantages),
    completionMask: tf.tensor2d(i.completion_mask),
  };
}

/** The loss, its metrics and d loss / d logp, everything read back and disposed. */
async function run(c: LossCase) {
  const s = fx.settings[c.setting];
  const inputs = lossInputs(s);
  const options = {
    epsilon: s.epsilon,
    epsilon_high: s.epsilon_high,
    beta: s.beta,
    importance_sampling_level: c.importance_sampling_level,
    loss_type: c.loss_type,
    max_completion_length: fx.max_completion_length,
    num_items_in_batch: fx.num_items_in_batch,
  };
  let metrics: Record<string, tf.Scalar> = {};
  const { value, grads } = tf.valueAndGrads((logp: tf.Tensor) => {
    const r = grpoTokenLoss({ ...inputs, logp: logp as tf.Tensor2D }, options);
    // the tape's scope disposes everything but the loss; a Method keeps its metrics the same way
    metrics = r.metrics;
    for (const m of Object.values(metrics)) tf.keep(m);
    return r.loss;
  })([inputs.logp]);
  const out = {
    loss: (await value.data())[0],
    grad: Float64Array.from(await grads[0].data()),
    metrics: Object.fromEntries(await Promise.all(Object.entries(metrics).map(async ([k, m]) => [k, (await m.data())[0]] as const))),
  };
  tf.dispose([value, ...grads, ...Object.values(metrics), ...(Object.values(inputs) as (tf.Tensor | undefined)[]).filter((t) => t !== undefined)]);
  return out;
}

describe.each(Object.entries(fx.cases))('%s matches TRL (PyTorch reference)', (_name, c) => {
  it('loss, metrics (relative 1e-5) and d loss / d logp (‖Δ‖/‖g‖ ≤ 1e-5)', async () => {
    const r = await run(c);
    expect(relErr(r.loss, c.loss), `loss ${r.loss} vs ${c.loss}`).toBeLessThanOrEqual(1e-5);
    expect(Object.keys(r.metrics).sort()).toEqual(Object.keys(c.metrics).sort());
    for (const k of Object.keys(r.metrics)) expect(GRPO_LOSS_METRICS).toContain(k);
    for (const [k, v] of Object.entries(c.metrics)) expect(relErr(r.metrics[k], v), `${k}: ${r.metrics[k]} vs ${v}`).toBeLessThanOrEqual(1e-5);
    const expected = c.grad_logp.flat();
    let num = 0;
    let den = 0;
    expected.forEach((e, i) => {
      num += (r.grad[i] - e) ** 2;
      den += e * e;
    });
    expect(Math.sqrt(num / den)).toBeLessThanOrEqual(1e-5);
    // padding and masked-out completions get no gradient
    fx.inputs.completion_mask.flat().forEach((m, i) => {
      if (m === 0) expect(Math.abs(r.grad[i])).toBe(0);
    });
  });
});

it('leaks no tensor across calls', async () => {
  const c = fx.cases['off_policy_kl/sequence/grpo'];
  await run(c);
  const before = tf.memory().numTensors;
  for (let i = 0; i < 3; i++) await run(c);
  expect(tf.memory().numTensors).toBe(before);
});

it('asks for what its settings need', () => {
  const s = fx.settings.on_policy_kl;
  const inputs = lossInputs(s);
  const base = { epsilon: 0.2, importance_sampling_level: 'token', max_completion_length: 8 } as const;
  expect(() => grpoTokenLoss({ ...inputs, refLogp: undefined }, { ...base, beta: 0.04, loss_type: 'bnpo' })).toThrow(/reference/);
  expect(() => grpoTokenLoss(inputs, { ...base, beta: 0.04, loss_type: 'dapo' })).toThrow(/num_items_in_batch/);
  tf.dispose(Object.values(inputs).filter((t): t is tf.Tensor => t !== undefined));
});
