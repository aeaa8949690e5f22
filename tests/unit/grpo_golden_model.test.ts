// GRPO through the model against the PyTorch reference (tests/reference/grpo_model_golden.py,
// fixtures tests/fixtures/grpo/model*): on the llama_f32 golden model with a nonzero adapter and
// 2 prompts × 3 fixed completions, the batch layout, the completions' log-probs (policy, old
// adapter, reference) at temperature 1 and 0.7, the advantages for each scale_rewards, and for every
// loss type, both importance sampling levels, beta > 0, temperature 0.7, num_iterations 2 and
// mask_truncated_completions: the step's loss (method.loss / countItems, as step.ts divides), TRL's
// metrics and the LoRA gradient. On the cpu and wasm backends.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { initBackend, type BackendName } from '../../src/engine/backend/index.ts';
import { parseSafetensors } from '../../src/engine/io/safetensors.ts';
import { LoraAdapter, parseAdapterConfig } from '../../src/engine/model/lora.ts';
import type { CausalLM } from '../../src/engine/model/llama.ts';
import type { LossContext } from '../../src/engine/train/method.ts';
import { grpoLogProbsOnHost, grpoMethod, layoutGrpoBatch, type GrpoBatch } from '../../src/engine/train/methods/grpo.ts';
import { combineRewards, groupAdvantages, rewardMetrics, type GrpoLossType, type ImportanceSamplingLevel, type ScaleRewards } from '../../src/engine/train/methods/grpo_loss.ts';
import { allTensors, loadGolden, maxAbsDiff } from './helpers/golden.ts';

const DIR = fileURLToPath(new URL('../fixtures/grpo/', import.meta.url));

interface Case {
  loss_type: GrpoLossType;
  importance_sampling_level: ImportanceSamplingLevel;
  beta: number;
  temperature: number;
  num_iterations: number;
  epsilon: number;
  epsilon_high: number | null;
  mask_truncated_completions: boolean;
  scale_rewards: ScaleRewards;
  /** countItems: dapo's completion tokens, 1 otherwise. */
  num_items: number;
  loss: number;
  /** The loss is a cancelled sum (grpo's on-policy mean of advantages, ~0): compare against loss_scale. */
  loss_cancels: boolean;
  /** The same aggregation of |A|: the size of the loss's terms. */
  loss_scale: number;
  metrics: Record<string, number>;
}

interface Fixture {
  base_case: string;
  pad_token_id: number;
  eos_token_id: number;
  lora: Record<string, unknown>;
  num_generations: number;
  max_completion_length: number;
  prompts: number[][];
  completions: number[][];
  truncated: boolean[];
  reward_names: string[];
  reward_weights: number[];
  rewards: (number | null)[][];
  combined_rewards: number[];
  reward_metrics: Record<string, number>;
  advantages: Record<ScaleRewards, { advantages: number[]; std: number[]; frac_reward_zero_std: number }>;
  layout: {
    prompt_length: number;
    completion_length: number;
    input_ids: number[][];
    attention_mask: number[][];
    position_ids: number[][];
    completion_mask: number[][];
    completion_mask_truncated_masked: number[][];
  };
  /** `<policy|old|ref>/<temperature>`: [rows][completion_length], float64. */
  logps: Record<string, number[][]>;
  cases: Record<string, Case>;
}

const fx = JSON.parse(readFileSync(DIR + 'model.json', 'utf8')) as Fixture;
const G = fx.num_generations;
const rowPrompts = fx.completions.map((_, i) => fx.prompts[Math.floor(i / G)]);
const expectedGrads = allTensors(parseSafetensors(new Uint8Array(readFileSync(DIR + 'model_grads.safetensors')), 'model_grads.safetensors'));
const temperatureKey = (t: number) => (Number.isInteger(t) ? t.toFixed(1) : String(t));

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

/** The batch the rollout builds: completions that stopped without EOS masked out when asked. */
function layout(maskTruncated: boolean): GrpoBatch {
  const eos = fx.eos_token_id;
  const keep = fx.completions.map((c) => (maskTruncated && (c.length === 0 || c[c.length - 1] !== eos) ? 0 : 1));
  return layoutGrpoBatch(rowPrompts, fx.completions, keep, fx.pad_token_id);
}

/** Expected per-token values on the completion tokens only, flattened as the batch holds them. */
function onCompletionTokens(values: ArrayLike<number>, C: number): number[] {
  return fx.completions.flatMap((c, r) => Array.from({ length: c.length }, (_, j) => values[r * C + j]));
}

describe('advantages and layout', () => {
  // 1e-6 absolute, as grpo_loss.test.ts: the reference's nanstd (TRL's) takes its Bessel factor
  // count / (count − 1) from an integer division, which torch returns in float32 (6/5 is off by 4e-8).
  it('rewards combine into the advantages of every scale_rewards (1e-6)', () => {
    const combined = combineRewards(fx.rewards, fx.reward_weights);
    expect(maxAbsDiff(combined, fx.combined_rewards)).toBeLessThanOrEqual(1e-12);
    for (const scale of ['group', 'batch', 'none'] as const) {
      const a = groupAdvantages(combined, G, scale);
      expect(maxAbsDiff(a.advantages, fx.advantages[scale].advantages), scale).toBeLessThanOrEqual(1e-6);
      expect(maxAbsDiff(a.std, fx.advantages[scale].std), scale).toBeLessThanOrEqual(1e-6);
      expect(a.fracZeroStd).toBe(fx.advantages[scale].frac_reward_zero_std);
    }
    const m = rewardMetrics(fx.rewards, fx.reward_names, combined);
    for (const [k, v] of Object.entries(fx.reward_metrics)) expect(Math.abs(m[k] - v), k).toBeLessThanOrEqual(1e-6);
  });

  it('layoutGrpoBatch lays the completions out as TRL (left-padded prompts, positions over real tokens)', () => {
    const L = fx.layout;
    for (const maskTruncated of [false, true]) {
      const b = layout(maskTruncated);
      expect(b.rows).toBe(fx.completions.length);
      expect([b.promptLength, b.completionLength]).toEqual([L.prompt_length, L.completion_length]);
      expect(b.input_ids).toEqual(L.input_ids.flat());
      expect(b.attention_mask).toEqual(L.attention_mask.flat());
      expect(b.position_ids).toEqual(L.position_ids.flat());
      const mask = maskTruncated ? L.completion_mask_truncated_masked : L.completion_mask;
      expect(b.completion_mask).toEqual(mask.flat());
      expect(b.num_completion_tokens).toBe(mask.flat().reduce((a, x) => a + x, 0));
    }
  });
});

const BACKENDS: BackendName[] = ['cpu', 'wasm'];

describe.each(BACKENDS)('GRPO on the model matches TRL (PyTorch reference) on %s', (backend) => {
  let model: CausalLM;
  let adapter: LoraAdapter;
  let oldAdapter: LoraAdapter;
  const worst = { loss: 0, metric: 0, gradient: 0, logps: 0 };

  beforeAll(async () => {
    const info = await initBackend(backend);
    if (info.name !== backend) throw new Error(`${backend} is not available: ${info.fallbackReason}`);
    model = (await loadGolden(fx.base_case)).model;
    const config = parseAdapterConfig({ peft_type: 'LORA', ...fx.lora });
    const read = (file: string) => LoraAdapter.fromSafetensors(model.config, config, parseSafetensors(new Uint8Array(readFileSync(DIR + file)), file));
    adapter = read('model_lora.safetensors');
    oldAdapter = read('model_lora_old.safetensors');
  });

  afterAll(() => {
    adapter.dispose();
    oldAdapter.dispose();
    model.dispose();
  });

  it.each([1.0, 0.7])('completion log-probs (policy, old adapter, reference) at temperature %s within 1e-5', async (temperature) => {
    const b = layout(false);
    const C = b.completionLength;
    for (const [which, a] of [['policy', adapter], ['old', oldAdapter], ['ref', null]] as const) {
      const got = onCompletionTokens(await grpoLogProbsOnHost(model, b, a, temperature), C);
      const expected = onCompletionTokens(fx.logps[`${which}/${temperatureKey(temperature)}`].flat(), C);
      const err = maxAbsDiff(got, expected);
      worst.logps = Math.max(worst.logps, err);
      expect(err, which).toBeLessThanOrEqual(1e-5);
    }
  });

  describe.each(Object.entries(fx.cases))('%s', (name, c) => {
    it.each([false, true])('loss / countItems, metrics (relative 1e-5) and LoRA gradients (‖Δ‖/‖g‖ ≤ 1e-5), gradient_checkpointing %s', async (gradientCheckpointing) => {
      const b = layout(c.mask_truncated_completions);
      b.advantages = groupAdvantages(combineRewards(fx.rewards, fx.reward_weights), G, c.scale_rewards).advantages;
      // What the rollout computes outside the gradient: the old policy's log-probs (the adapter
      // before the update) and the reference's (adapter off), at the sampling temperature.
      if (c.num_iterations > 1) b.old_logps = await grpoLogProbsOnHost(model, b, oldAdapter, c.temperature);
      if (c.beta > 0) b.ref_logps = await grpoLogProbsOnHost(model, b, null, c.temperature);
      const method = grpoMethod({
        num_generations: G,
        temperature: c.temperature,
        top_p: 1,
        top_k: 0,
        max_completion_length: fx.max_completion_length,
        beta: c.beta,
        epsilon: c.epsilon,
        epsilon_high: c.epsilon_high,
        loss_type: c.loss_type,
        scale_rewards: c.scale_rewards,
        importance_sampling_level: c.importance_sampling_level,
        num_iterations: c.num_iterations,
        mask_truncated_completions: c.mask_truncated_completions,
        reward_weights: null,
        rewards: [],
        padTokenId: fx.pad_token_id,
        eosTokenIds: [fx.eos_token_id],
        decode: () => '',
      });
      const items = method.countItems(b);
      expect(items).toBe(c.num_items);

      const ctx: LossContext = { model, adapter, gradientCheckpointing };
      const vars = adapter.variables();
      const byName = new Map([...vars].map(([k, v]) => [v.name, k]));
      let metrics: Record<string, tf.Scalar> = {};
      const before = tf.memory().numTensors;
      const { value, grads } = tf.variableGrads(() => {
        const r = method.loss(b, ctx);
        metrics = r.metrics;
        return tf.div(r.loss, items) as tf.Scalar;
      }, [...vars.values()]);
      const loss = (await value.data())[0];
      const got = new Map<string, Float32Array>();
      for (const [n, g] of Object.entries(grads)) got.set(byName.get(n)!, Float32Array.from(await g.data()));
      const means: Record<string, number> = {};
      for (const [k, m] of Object.entries(metrics)) means[k] = (await m.data())[0] / items;
      tf.dispose([value, ...Object.values(grads), ...Object.values(metrics)]);
      expect(tf.memory().numTensors).toBe(before);

      const lossErr = c.loss_cancels ? Math.abs(loss - c.loss) / c.loss_scale : relErr(loss, c.loss);
      worst.loss = Math.max(worst.loss, lossErr);
      expect(lossErr, `loss ${loss} vs ${c.loss}`).toBeLessThanOrEqual(1e-5);

      expect('kl' in means).toBe(c.beta > 0);
      for (const [k, v] of Object.entries(c.metrics)) {
        // clip_ratio/* are fractions of counts: the same count, up to float32 division.
        const err = k.startsWith('clip_ratio/') ? Math.abs(means[k] - v) : relErr(means[k], v);
        worst.metric = Math.max(worst.metric, err);
        expect(err, `${k}: ${means[k]} vs ${v}`).toBeLessThanOrEqual(k.startsWith('clip_ratio/') ? 1e-6 : 1e-5);
      }

      const expected = new Map([...expectedGrads].filter(([k]) => k.startsWith(`${name}/base_model.`)).map(([k, v]) => [k.slice(name.length + 1), v]));
      expect(got.size).toBe(vars.size);
      expect([...got.keys()].sort()).toEqual([...expected.keys()].sort());
      const gErr = gradRelErr(got, expected);
      worst.gradient = Math.max(worst.gradient, gErr);
      expect(gErr).toBeLessThanOrEqual(1e-5);
      const scale = Math.max(...[...expected.values()].map((e) => Math.max(...e.map(Math.abs))));
      for (const [k, e] of expected) expect(maxAbsDiff(got.get(k)!, e) / scale, k).toBeLessThanOrEqual(2e-5);
    });
  });

  afterAll(() => {
    if (process.env.GRPO_GOLDEN_REPORT) console.log(`${backend}: worst relative errors`, worst);
  });
});
