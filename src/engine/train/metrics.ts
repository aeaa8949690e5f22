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
  /** Names the chart where the page needs a handle on it (its data-testid). */
  id: string;
  title: string;
  /** The metrics drawn together on it. */
  metrics: string[];
  /** A std metric drawn around the first metric as mean − std and mean + std (GRPO's reward_std). */
  spread?: string;
  /** Drawn only once logged: GRPO logs kl only when beta > 0. */
  optional?: boolean;
  /** Fractions: the axis runs from 0 to 1 whatever the values, so a share of 0 or 1 reads as one. */
  share?: boolean;
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

/**
 * A method's metrics as charts: a chosen/rejected pair on one chart, every other metric on its own;
 * GRPO's by what they tell together (`rewardNames` are the run's reward functions).
 */
export function methodCharts(method: MethodName, rewardNames: readonly string[] = []): MetricChart[] {
  if (method === 'grpo') return grpoCharts(rewardNames);
  const charts: MetricChart[] = [];
  for (const m of METHOD_METRICS[method]) {
    const [group, side] = m.split('/');
    if (side === 'chosen' || side === 'rejected') {
      const pair = charts.find((c) => c.metrics[0].startsWith(`${group}/`) && /\/(chosen|rejected)$/.test(c.metrics[0]));
      if (pair) pair.metrics.push(m);
      else charts.push({ id: m.replace('/', '-'), title: TITLES[group] ?? group, metrics: [m] });
    } else {
      charts.push({ id: m.replace('/', '-'), title: TITLES[m] ?? m, metrics: [m] });
    }
  }
  return charts;
}

/**
 * GRPO's charts: the reward with its spread over the step's completions (a spread of 0 is a step
 * that learns nothing), each function's mean together, how many groups tied, completion lengths and
 * how many hit max_completion_length, the KL penalty's estimate, the clipped share of tokens and
 * the entropy. The functions' std are left to the logs: the spread of their sum is the one that
 * makes advantages.
 */
function grpoCharts(rewardNames: readonly string[]): MetricChart[] {
  const charts: MetricChart[] = [{ id: 'reward', title: 'Reward (mean, and mean ± std over the completions)', metrics: ['reward'], spread: 'reward_std' }];
  if (rewardNames.length > 0) charts.push({ id: 'rewards-functions', title: 'Reward of each function (mean)', metrics: rewardNames.map((n) => `rewards/${n}/mean`) });
  charts.push(
    { id: 'reward-ties', title: 'Completions whose group\'s rewards all tie (share)', metrics: ['frac_reward_zero_std'], share: true },
    { id: 'completions-length', title: 'Completion length (tokens)', metrics: ['completions/mean_length', 'completions/min_length', 'completions/max_length'] },
    { id: 'completions-clipped', title: 'Completions cut at max_completion_length (share)', metrics: ['completions/clipped_ratio'], share: true },
    { id: 'kl', title: 'KL to the reference', metrics: ['kl'], optional: true },
    { id: 'clip-ratio', title: 'Clipped tokens (share)', metrics: ['clip_ratio/region_mean', 'clip_ratio/low_mean', 'clip_ratio/high_mean'], share: true },
    { id: 'entropy', title: 'Entropy of the completions (nats per token)', metrics: ['entropy'] },
  );
  return charts;
}
