/** The live curves of a run, as uPlot wants them: one x array and aligned y arrays with gaps. */
import type { LogEntry } from '../../engine/train/trainer.ts';

export const METRICS = ['loss', 'eval_loss', 'learning_rate', 'grad_norm', 'tokens_per_second'] as const;
export type Metric = (typeof METRICS)[number];

export interface Series {
  step: number[];
  values: Record<Metric, (number | null)[]>;
}

export function emptySeries(): Series {
  return { step: [], values: Object.fromEntries(METRICS.map((m) => [m, []])) as unknown as Record<Metric, (number | null)[]> };
}

function finite(x: number | undefined): number | null {
  return x !== undefined && Number.isFinite(x) ? x : null;
}

/**
 * The series with one more log line. A line for the step of the last point (an eval after a
 * train log) fills that point in; a line for an earlier step (a run resumed from a checkpoint)
 * drops the points after it, which the resumed run is about to redo.
 * Returns a new object, so a reactive holder sees the change.
 */
export function addLog(s: Series, entry: LogEntry): Series {
  let keep = s.step.length;
  while (keep > 0 && s.step[keep - 1] > entry.step) keep--;
  const step = s.step.slice(0, keep);
  const values = Object.fromEntries(METRICS.map((m) => [m, s.values[m].slice(0, keep)])) as Record<Metric, (number | null)[]>;
  const last = step.length - 1;
  if (last >= 0 && step[last] === entry.step) {
    for (const m of METRICS) {
      const v = finite(entry[m]);
      if (v !== null) values[m][last] = v;
    }
  } else {
    step.push(entry.step);
    for (const m of METRICS) values[m].push(finite(entry[m]));
  }
  return { step, values };
}

/** The last value of a metric that is not a gap. */
export function latest(s: Series, m: Metric): number | null {
  const v = s.values[m];
  for (let i = v.length - 1; i >= 0; i--) if (v[i] !== null) return v[i];
  return null;
}

/** Whether the metric has any point, so an empty chart can say so instead of drawing axes. */
export function hasPoints(s: Series, m: Metric): boolean {
  return s.values[m].some((v) => v !== null);
}

/** The curves of a stored run from its logged metrics, up to and including step `upTo` (where a resumed run picks up). */
export function seriesFromMetrics(entries: LogEntry[], upTo: number): Series {
  let s = emptySeries();
  for (const entry of entries) if (entry.step <= upTo) s = addLog(s, entry);
  return s;
}
