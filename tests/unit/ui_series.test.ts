import { describe, expect, it } from 'vitest';
import { addLog, chosenRewardFalling, emptySeries, hasPoints, latest } from '../../src/ui/train/series.ts';
import { METHOD_METRICS, methodCharts } from '../../src/engine/train/metrics.ts';

describe('training series', () => {
  it('appends a point per logged step with gaps for missing metrics', () => {
    let s = emptySeries();
    s = addLog(s, { step: 1, epoch: 0.1, loss: 2.5, learning_rate: 1e-4, grad_norm: 1.2 });
    s = addLog(s, { step: 2, epoch: 0.2, loss: 2.3, learning_rate: 2e-4 });
    expect(s.step).toEqual([1, 2]);
    expect(s.values.loss).toEqual([2.5, 2.3]);
    expect(s.values.grad_norm).toEqual([1.2, null]);
    expect(s.values.eval_loss).toEqual([null, null]);
    expect(hasPoints(s, 'eval_loss')).toBe(false);
    expect(latest(s, 'grad_norm')).toBe(1.2);
  });

  it('merges an eval log into the train point of the same step', () => {
    let s = addLog(emptySeries(), { step: 4, epoch: 1, loss: 2 });
    s = addLog(s, { step: 4, epoch: 1, eval_loss: 2.2 });
    expect(s.step).toEqual([4]);
    expect(s.values.loss).toEqual([2]);
    expect(s.values.eval_loss).toEqual([2.2]);
  });

  it('drops the points a resumed run is about to redo', () => {
    let s = emptySeries();
    for (let step = 1; step <= 5; step++) s = addLog(s, { step, epoch: 0, loss: 3 - step / 10 });
    s = addLog(s, { step: 4, epoch: 0, loss: 9 });
    expect(s.step).toEqual([1, 2, 3, 4]);
    expect(s.values.loss[3]).toBe(9);
  });

  it('keeps NaN and infinite values out of the charts', () => {
    const s = addLog(emptySeries(), { step: 1, epoch: 0, loss: Number.NaN, grad_norm: Infinity });
    expect(s.values.loss).toEqual([null]);
    expect(s.values.grad_norm).toEqual([null]);
  });

  it('returns new arrays so a reactive holder sees the change', () => {
    const a = addLog(emptySeries(), { step: 1, epoch: 0, loss: 1 });
    const b = addLog(a, { step: 2, epoch: 0, loss: 1 });
    expect(a.step).toEqual([1]);
    expect(b.step).not.toBe(a.step);
  });
});

describe('seriesFromMetrics', () => {
  it('rebuilds the curves of a stored run up to its checkpoint', async () => {
    const { seriesFromMetrics } = await import('../../src/ui/train/series.ts');
    const logged = [
      { step: 1, epoch: 0.1, loss: 2 },
      { step: 2, epoch: 0.2, loss: 1.5 },
      { step: 2, epoch: 0.2, eval_loss: 1.7 },
      { step: 3, epoch: 0.3, loss: 1.2 },
    ];
    const s = seriesFromMetrics(logged, 2);
    expect(s.step).toEqual([1, 2]);
    expect(s.values.loss).toEqual([2, 1.5]);
    expect(s.values.eval_loss).toEqual([null, 1.7]);
  });
});

describe("a method's own metrics", () => {
  it('become curves when first logged, with gaps before, and eval_ ones beside them', () => {
    let s = addLog(emptySeries(), { step: 1, epoch: 0, loss: 0.7 });
    s = addLog(s, { step: 2, epoch: 0, kind: 'train', loss: 0.6, 'rewards/chosen': 0.1 });
    s = addLog(s, { step: 2, epoch: 0, kind: 'eval', eval_loss: 0.65, 'eval_rewards/chosen': 0.05 });
    expect(s.step).toEqual([1, 2]);
    expect(s.values['rewards/chosen']).toEqual([null, 0.1]);
    expect(s.values['eval_rewards/chosen']).toEqual([null, 0.05]);
    expect('kind' in s.values).toBe(false);
    expect(latest(s, 'rewards/margins')).toBeNull();
  });

  it('warns when DPO’s chosen reward keeps falling below zero', () => {
    const run = (values: number[]) => values.reduce((s, v, i) => addLog(s, { step: i + 1, epoch: 0, 'rewards/chosen': v }), emptySeries());
    expect(chosenRewardFalling(run([0.02, -0.01, -0.03, -0.05, -0.08]))).toBe(true);
    expect(chosenRewardFalling(run([0.02, -0.01, -0.03, -0.02, -0.08]))).toBe(false);
    expect(chosenRewardFalling(run([0.5, 0.4, 0.3, 0.2, 0.1]))).toBe(false);
    expect(chosenRewardFalling(run([-0.01, -0.03, -0.05, -0.08]))).toBe(false);
  });
});

describe('the charts a method declares', () => {
  it('puts chosen and rejected together and every other metric on its own', () => {
    expect(methodCharts('sft')).toEqual([]);
    const dpo = methodCharts('dpo');
    expect(dpo.map((c) => c.metrics)).toEqual([['rewards/chosen', 'rewards/rejected'], ['rewards/accuracies'], ['rewards/margins'], ['logps/chosen', 'logps/rejected']]);
    expect(methodCharts('kto').flatMap((c) => c.metrics)).toContain('kl');
    for (const m of ['dpo', 'kto', 'orpo', 'simpo'] as const) expect(methodCharts(m).flatMap((c) => c.metrics).sort()).toEqual([...METHOD_METRICS[m]].sort());
  });
});
