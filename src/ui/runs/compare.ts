/**
 * Several runs' curves on one chart. Each run logs its own steps (another max_steps, logging_steps
 * or eval_steps), while uPlot draws lines over one shared x array: the steps of all runs merged,
 * each run's values on it with null gaps, which the chart spans.
 */
import type { ChartLine } from '../lib/chart.ts';
import { valuesOf, type Metric, type Series } from '../train/series.ts';

/** Colours told apart at a glance, one per compared run, in the order the runs were ticked. */
export const RUN_COLORS = ['#4f46e5', '#dc2626', '#16a34a', '#f59e0b', '#0891b2', '#9333ea', '#db2777', '#65a30d', '#475569', '#ea580c'];

export function runColor(index: number): string {
  return RUN_COLORS[index % RUN_COLORS.length];
}

/** One line with its own x values. */
export interface Curve {
  label: string;
  color: string;
  x: number[];
  y: (number | null)[];
}

/** The curves on one sorted x array holding every step any of them has a point at. */
export function alignCurves(curves: Curve[]): { x: number[]; lines: ChartLine[] } {
  const byStep = curves.map((c) => {
    const m = new Map<number, number>();
    c.x.forEach((step, i) => {
      const v = c.y[i];
      if (v !== null && v !== undefined && Number.isFinite(v)) m.set(step, v);
    });
    return m;
  });
  const x = [...new Set(byStep.flatMap((m) => [...m.keys()]))].sort((a, b) => a - b);
  const lines = curves.map((c, i) => ({ label: c.label, color: c.color, values: x.map((step) => byStep[i].get(step) ?? null) }));
  return { x, lines };
}

/** Names a legend can tell apart: a second "run" is "run (2)". */
export function distinctLabels(names: string[]): string[] {
  const seen = new Map<string, number>();
  return names.map((name) => {
    const n = (seen.get(name) ?? 0) + 1;
    seen.set(name, n);
    return n === 1 ? name : `${name} (${n})`;
  });
}

/**
 * One metric of several runs: a line per run that logged it, labelled by run name, each run
 * keeping its colour across charts (the loss and eval-loss charts match).
 */
export function compareMetric(runs: { name: string; series: Series }[], metric: Metric): { x: number[]; lines: ChartLine[] } {
  const labels = distinctLabels(runs.map((r) => r.name));
  const curves = runs.map((r, i) => ({ label: labels[i], color: runColor(i), x: r.series.step, y: valuesOf(r.series, metric) }));
  return alignCurves(curves.filter((c) => c.y.some((v) => v !== null)));
}
