import { describe, expect, it } from 'vitest';
import { addLog, emptySeries, hasPoints, latest } from '../../src/ui/train/series.ts';

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
