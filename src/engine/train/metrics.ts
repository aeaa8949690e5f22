/**
 * What each method logs besides loss, grad_norm, learning_rate, num_tokens and tokens_per_second,
 * with TRL's names (evaluation logs them again prefixed `eval_`). Tensor-free, so the studio's
 * page reads it to draw a chart per declared metric; each method's `metrics` is its entry here.
 */
import type { MethodName } from '../recipe.ts';

const PAIR_METRICS = ['rewards/chosen', 'rewards/rejected', 'rewards/accuracies', 'rewards/margins', 'logps/chosen', 'logps/rejected'] as const;

export const METHOD_METRICS: Readonly<Record<MethodName, readonly string[]>> = {
  sft: [],
  dpo: PAIR_METRICS,
  kto: ['rewards/chosen', 'rewards/rejected', 'rewards/margins', 'logps/chosen', 'logps/rejected', 'kl'],
  orpo: [...PAIR_METRICS, 'nll_loss', 'log_odds_ratio', 'log_odds_chosen'],
  simpo: PAIR_METRICS,
  // Each reward function adds rewards/<name>/mean and /std after `reward_std` (grpoMetrics).
  grpo: [
    'reward', 'reward_std', 'frac_reward_zero_std',
    'completions/mean_length', 'completions/min_length', 'completions/max_length', 'completions/clipped_ratio',
    'kl', 'entropy', 'clip_ratio/low_mean', 'clip_ratio/high_mean', 'clip_ratio/region_mean',
  ],
};

/** GRPO's metrics with its reward functions' own, in the order TRL logs them. */
export function grpoMetrics(rewardNames: readonly string[]): string[] {
  const [reward, rewardStd, ...rest] = METHOD_METRICS.grpo;
  return [reward, rewardStd, ...rewardNames.flatMap((n) => [`rewards/${n}/mean`, `rewards/${n}/std`]), ...rest];
}

export interface MetricChart {
  title: string;
  /** The metrics drawn together on it. */
  metrics: string[];
}

const TITLES: Record<string, string> = {
  rewards: 'Rewards (chosen and rejected)',
  logps: 'Log-probabilities (chosen and rejected)',
  'rewards/accuracies': 'Reward accuracy (chosen above rejected)',
  'rewards/margins': 'Reward margin',
  kl: 'KL estimate',
  nll_loss: 'NLL of the chosen completion',
  log_odds_ratio: 'Log odds ratio',
  log_odds_chosen: 'Log odds of chosen',
};

/** A method's metrics as charts: a chosen/rejected pair on one chart, every other metric on its own. */
export function methodCharts(method: MethodName): MetricChart[] {
  const charts: MetricChart[] = [];
  for (const m of METHOD_METRICS[method]) {
    const [group, side] = m.split('/');
    if (side === 'chosen' || side === 'rejected') {
      const pair = charts.find((c) => c.metrics[0].startsWith(`${group}/`) && /\/(chosen|rejected)$/.test(c.metrics[0]));
      if (pair) pair.metrics.push(m);
      else charts.push({ title: TITLES[group] ?? group, metrics: [m] });
    } else {
      charts.push({ title: TITLES[m] ?? m, metrics: [m] });
    }
  }
  return charts;
}
