import { describe, expect, it } from 'vitest';
import { alignCurves, compareMetric, distinctLabels, runColor, RUN_COLORS } from '../../src/ui/runs/compare.ts';
import { addLog, emptySeries, type Series } from '../../src/ui/train/series.ts';
import type { LogEntry } from '../../src/engine/train/trainer.ts';

function series(entries: (Partial<LogEntry> & { step: number })[]): Series {
  return entries.reduce((s, e) => addLog(s, { epoch: 0, ...e }), emptySeries());
}

describe('comparing runs', () => {
  it('merges the runs’ steps into one sorted x array with gaps', () => {
    const { x, lines } = alignCurves([
      { label: 'a', color: '#1', x: [1, 2, 3], y: [3, 2.5, 2] },
      { label: 'b', color: '#2', x: [2, 4], y: [2.8, 2.1] },
    ]);
    expect(x).toEqual([1, 2, 3, 4]);
    expect(lines).toEqual([
      { label: 'a', color: '#1', values: [3, 2.5, 2, null] },
      { label: 'b', color: '#2', values: [null, 2.8, null, 2.1] },
    ]);
  });

  it('leaves out steps where no run has a value', () => {
    const { x, lines } = alignCurves([{ label: 'a', color: '#1', x: [1, 2, 3], y: [null, 2, Number.NaN] }]);
    expect(x).toEqual([2]);
    expect(lines[0].values).toEqual([2]);
  });

  it('names runs apart in a legend', () => {
    expect(distinctLabels(['run', 'other', 'run', 'run'])).toEqual(['run', 'other', 'run (2)', 'run (3)']);
  });

  it('gives each run its colour on every chart, and draws only runs with the metric', () => {
    const a = series([{ step: 1, loss: 3 }, { step: 2, loss: 2.5, eval_loss: 2.7 }]);
    const b = series([{ step: 1, loss: 3.1 }, { step: 2, loss: 2.9 }, { step: 3, loss: 2.6 }]);
    const c = series([{ step: 3, loss: 2, eval_loss: 2.2 }]);
    const runs = [
      { name: 'lr 5e-3', series: a },
      { name: 'lr 1e-3', series: b },
      { name: 'lr 5e-3', series: c },
    ];
    const loss = compareMetric(runs, 'loss');
    expect(loss.x).toEqual([1, 2, 3]);
    expect(loss.lines.map((l) => [l.label, l.color])).toEqual([
      ['lr 5e-3', runColor(0)],
      ['lr 1e-3', runColor(1)],
      ['lr 5e-3 (2)', runColor(2)],
    ]);
    expect(loss.lines[1].values).toEqual([3.1, 2.9, 2.6]);

    const evalLoss = compareMetric(runs, 'eval_loss');
    expect(evalLoss.x).toEqual([2, 3]);
    expect(evalLoss.lines.map((l) => [l.label, l.color, l.values])).toEqual([
      ['lr 5e-3', runColor(0), [2.7, null]],
      ['lr 5e-3 (2)', runColor(2), [null, 2.2]],
    ]);
  });

  it('has distinct colours for the first runs and reuses them after', () => {
    expect(new Set(RUN_COLORS).size).toBe(RUN_COLORS.length);
    expect(runColor(RUN_COLORS.length)).toBe(runColor(0));
  });
});
