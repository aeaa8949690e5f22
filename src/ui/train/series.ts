/**
 * The live curves of a run, as uPlot wants them: one x array and aligned y arrays with gaps, one
 * per metric any log line has (the method's own metrics too: rewards/chosen, eval_rewards/margins…);
 * and GRPO's latest rollout as the completions table groups it.
 */
import type { LogEntry } from '../../engine/train/trainer.ts';
import type { CompletionRecord } from '../../engine/train/methods/grpo.ts';

/** The metrics every run logs; a method adds its own (`METHOD_METRICS`). */
export const METRICS = ['loss', 'eval_loss', 'learning_rate', 'grad_norm', 'tokens_per_second'] as const;
export type Metric = string;

export interface Series {
  step: number[];
  values: Record<Metric, (number | null)[]>;
}

/** Keys of a log line that are not curves. */
const NOT_CURVES = new Set(['step', 'epoch', 'kind', 'num_tokens', 'eval_num_tokens']);

export function emptySeries(): Series {
  return { step: [], values: Object.fromEntries(METRICS.map((m) => [m, []])) as Record<Metric, (number | null)[]> };
}

function finite(x: unknown): number | null {
  return typeof x === 'number' && Number.isFinite(x) ? x : null;
}

/**
 * The series with one more log line. A line for the step of the last point (an eval after a
 * train log) fills that point in; a line for an earlier step (a run resumed from a checkpoint)
 * drops the points after it, which the resumed run is about to redo. A metric seen for the first
 * time gets a curve with gaps before it. Returns a new object, so a reactive holder sees the change.
 */
export function addLog(s: Series, entry: LogEntry): Series {
  let keep = s.step.length;
  while (keep > 0 && s.step[keep - 1] > entry.step) keep--;
  const step = s.step.slice(0, keep);
  const names = new Set([...Object.keys(s.values), ...Object.keys(entry).filter((k) => !NOT_CURVES.has(k) && finite(entry[k]) !== null)]);
  const values: Record<Metric, (number | null)[]> = {};
  for (const m of names) values[m] = (s.values[m] ?? Array<number | null>(s.step.length).fill(null)).slice(0, keep);
  const last = step.length - 1;
  if (last >= 0 && step[last] === entry.step) {
    for (const m of names) {
      const v = finite(entry[m]);
      if (v !== null) values[m][last] = v;
    }
  } else {
    step.push(entry.step);
    for (const m of names) values[m].push(finite(entry[m]));
  }
  return { step, values };
}

/** A metric's values, gaps where it was not logged (none at all when it never was). */
export function valuesOf(s: Series, m: Metric): (number | null)[] {
  return s.values[m] ?? s.step.map(() => null);
}

/** The last value of a metric that is not a gap. */
export function latest(s: Series, m: Metric): number | null {
  const v = valuesOf(s, m);
  for (let i = v.length - 1; i >= 0; i--) if (v[i] !== null) return v[i];
  return null;
}

/** Whether the metric has any point, so an empty chart can say so instead of drawing axes. */
export function hasPoints(s: Series, m: Metric): boolean {
  return valuesOf(s, m).some((v) => v !== null);
}

/**
 * DPO's common surprise: the chosen completions' reward (β·(logp − ref)) falling below zero and
 * still falling over the last `window` logged steps, so the model is lowering the likelihood of
 * what it should prefer and wins only by lowering the rejected ones faster.
 */
export function chosenRewardFalling(s: Series, window = 5): boolean {
  const v = valuesOf(s, 'rewards/chosen').filter((x): x is number => x !== null).slice(-window);
  if (v.length < window || v[v.length - 1] >= 0) return false;
  return v.every((x, i) => i === 0 || x < v[i - 1]);
}

/** The curves of a stored run from its logged metrics, up to and including step `upTo` (where a resumed run picks up). */
export function seriesFromMetrics(entries: LogEntry[], upTo: number): Series {
  let s = emptySeries();
  for (const entry of entries) if (entry.step <= upTo) s = addLog(s, entry);
  return s;
}

/**
 * A mean's spread as two lines, mean − std and mean + std (GRPO's reward with reward_std), with a
 * gap wherever either is missing.
 */
export function spreadOf(s: Series, mean: Metric, std: Metric): { low: (number | null)[]; high: (number | null)[] } {
  const m = valuesOf(s, mean);
  const sd = valuesOf(s, std);
  return {
    low: m.map((v, i) => (v === null || sd[i] === null ? null : v - (sd[i] as number))),
    high: m.map((v, i) => (v === null || sd[i] === null ? null : v + (sd[i] as number))),
  };
}

/** GRPO's reward functions as a run's logs name them (`rewards/<name>/mean`), in the order first logged. */
export function rewardNamesOf(s: Series): string[] {
  return Object.keys(s.values).flatMap((k) => {
    const m = /^rewards\/(.+)\/mean$/.exec(k);
    return m ? [m[1]] : [];
  });
}

/** One prompt's completions in a GRPO step: its prompt as shown, its records, and whether their rewards all tie. */
export interface CompletionGroup {
  prompt: string;
  records: CompletionRecord[];
  /**
   * Every scored completion got the same reward (TRL's zero std, within 1e-8), so every advantage
   * is 0 and the group adds nothing to the step's gradient.
   */
  tied: boolean;
}

/** A prompt as one line of text: a conversation shows as its last user message (what was asked). */
export function promptText(prompt: CompletionRecord['prompt']): string {
  if (typeof prompt === 'string') return prompt;
  const user = prompt.filter((m) => m.role === 'user').at(-1) ?? prompt.at(-1);
  return user?.content ?? '';
}

/** Whether rewards tie as TRL's `frac_reward_zero_std` counts them: the unbiased std of the scored ones is 0 (within 1e-8). */
export function rewardsTie(rewards: readonly (number | null)[]): boolean {
  const scored = rewards.filter((r): r is number => r !== null && Number.isFinite(r));
  if (scored.length < 2) return true;
  const mean = scored.reduce((a, b) => a + b, 0) / scored.length;
  const variance = scored.reduce((a, r) => a + (r - mean) ** 2, 0) / (scored.length - 1);
  return Math.sqrt(variance) <= 1e-8;
}

/**
 * The latest step's completions by prompt: a step's records come num_generations at a time, each
 * run of them one prompt's group (the order the advantages were computed in).
 */
export function completionGroups(records: readonly CompletionRecord[], numGenerations: number): CompletionGroup[] {
  const step = records.at(-1)?.step;
  const latest = records.filter((r) => r.step === step);
  const size = Number.isInteger(numGenerations) && numGenerations >= 1 ? numGenerations : Math.max(1, latest.length);
  const groups: CompletionGroup[] = [];
  for (let i = 0; i < latest.length; i += size) {
    const group = latest.slice(i, i + size);
    groups.push({ prompt: promptText(group[0].prompt), records: group, tied: rewardsTie(group.map((r) => r.reward)) });
  }
  return groups;
}
