import { describe, expect, it } from 'vitest';
import { learningRateAt, lrLambda, warmupSteps } from '../../src/engine/train/schedule.ts';

// Expected values worked out by hand from transformers' optimization.py:
//   warmup:   step / max(1, warmup)
//   linear:   max(0, (total - step) / max(1, total - warmup))
//   cosine:   max(0, 0.5 · (1 + cos(π · 2 · 0.5 · progress))), progress = (step - warmup) / max(1, total - warmup)
describe('lrLambda', () => {
  it('linear: warmup 2 of 10 steps', () => {
    const at = (s: number) => lrLambda('linear', s, 2, 10);
    expect(at(0)).toBe(0);
    expect(at(1)).toBe(0.5);
    expect(at(2)).toBe(1); // (10 - 2) / 8
    expect(at(6)).toBe(0.5); // 4 / 8
    expect(at(9)).toBe(0.125);
    expect(at(10)).toBe(0);
    expect(at(12)).toBe(0); // clamped, never negative
  });

  it('linear without warmup starts at the full rate', () => {
    expect([0, 1, 2, 3, 4].map((s) => lrLambda('linear', s, 0, 4))).toEqual([1, 0.75, 0.5, 0.25, 0]);
  });

  it('cosine: warmup 2 of 10 steps', () => {
    const at = (s: number) => lrLambda('cosine', s, 2, 10);
    expect(at(0)).toBe(0);
    expect(at(1)).toBe(0.5);
    expect(at(2)).toBe(1); // progress 0
    expect(at(4)).toBeCloseTo(0.8535533905932737, 15); // progress 1/4: (1 + √2/2) / 2
    expect(at(6)).toBeCloseTo(0.5, 15); // progress 1/2
    expect(at(8)).toBeCloseTo(0.14644660940672627, 15); // progress 3/4: (1 − √2/2) / 2
    expect(at(10)).toBe(0); // progress 1
    // Past the end the half-cosine rises again, exactly as transformers' lambda does.
    expect(at(12)).toBeCloseTo(0.14644660940672627, 15);
  });

  it('constant_with_warmup: warmup 4', () => {
    expect([0, 1, 3, 4, 5, 100].map((s) => lrLambda('constant_with_warmup', s, 4, 10))).toEqual([0, 0.25, 0.75, 1, 1, 1]);
  });

  it('constant ignores warmup, as transformers does', () => {
    expect([0, 1, 5, 100].map((s) => lrLambda('constant', s, 4, 10))).toEqual([1, 1, 1, 1]);
  });

  it('warmup of 1 step and a run no longer than its warmup avoid division by zero', () => {
    expect(lrLambda('linear', 0, 1, 1)).toBe(0);
    expect(lrLambda('linear', 1, 1, 1)).toBe(0); // (1 - 1) / max(1, 0)
    expect(lrLambda('cosine', 3, 3, 3)).toBe(1); // progress 0 / max(1, 0)
  });
});

describe('warmupSteps', () => {
  it('uses warmup_steps when above 0, else ceil(warmup_ratio · total)', () => {
    expect(warmupSteps({ warmup_steps: 5, warmup_ratio: 0.5 }, 100)).toBe(5);
    expect(warmupSteps({ warmup_steps: 0, warmup_ratio: 0.1 }, 25)).toBe(3); // ceil(2.5)
    expect(warmupSteps({ warmup_steps: 0, warmup_ratio: 0 }, 25)).toBe(0);
    // 100 · 0.07 is 7.000000000000001 in float64; Python's math.ceil gives 8 too.
    expect(warmupSteps({ warmup_steps: 0, warmup_ratio: 0.07 }, 100)).toBe(8);
  });
});

describe('learningRateAt', () => {
  it('scales the base rate by the schedule', () => {
    const recipe = { learning_rate: 2e-4, lr_scheduler_type: 'linear' as const, warmup_steps: 0, warmup_ratio: 0.1 };
    // 20 steps: warmup ceil(2) = 2.
    expect(learningRateAt(recipe, 0, 20)).toBe(0);
    expect(learningRateAt(recipe, 1, 20)).toBeCloseTo(1e-4, 18);
    expect(learningRateAt(recipe, 2, 20)).toBeCloseTo(2e-4, 18);
    expect(learningRateAt(recipe, 11, 20)).toBeCloseTo(1e-4, 18); // 2e-4 · 9 / 18
    expect(learningRateAt(recipe, 20, 20)).toBe(0);
    expect(learningRateAt({ ...recipe, lr_scheduler_type: 'constant' }, 0, 20)).toBe(2e-4);
  });
});
