import { describe, expect, it } from 'vitest';
import { addLog, chosenRewardFalling, completionGroups, emptySeries, hasPoints, latest, promptText, rewardNamesOf, rewardsTie, spreadOf } from '../../src/ui/train/series.ts';
import { METHOD_METRICS, grpoMetrics, methodCharts } from '../../src/engine/train/metrics.ts';
import type { CompletionRecord } from '../../src/engine/train/methods/grpo.ts';

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
    expect(dpo.map((c) => c.id)).toEqual(['rewards-chosen', 'rewards-accuracies', 'rewards-margins', 'logps-chosen']);
  });

  it('draws GRPO\'s reward with its spread, each function\'s mean together, and every other metric but the stds', () => {
    const charts = methodCharts('grpo', ['accuracy', 'format']);
    expect(charts[0]).toMatchObject({ id: 'reward', metrics: ['reward'], spread: 'reward_std' });
    expect(charts.find((c) => c.id === 'rewards-functions')?.metrics).toEqual(['rewards/accuracy/mean', 'rewards/format/mean']);
    expect(charts.find((c) => c.id === 'completions-length')?.metrics).toEqual(['completions/mean_length', 'completions/min_length', 'completions/max_length']);
    expect(charts.find((c) => c.id === 'clip-ratio')?.metrics).toEqual(['clip_ratio/region_mean', 'clip_ratio/low_mean', 'clip_ratio/high_mean']);
    expect(charts.find((c) => c.id === 'kl')).toMatchObject({ optional: true });
    const drawn = [...charts.flatMap((c) => c.metrics), ...charts.flatMap((c) => (c.spread ? [c.spread] : []))].sort();
    expect(drawn).toEqual(grpoMetrics(['accuracy', 'format']).filter((m) => !/^rewards\/.+\/std$/.test(m)).sort());
    // Before the run names its functions there is no chart for them.
    expect(methodCharts('grpo').some((c) => c.id === 'rewards-functions')).toBe(false);
  });
});

describe('GRPO in the train view', () => {
  it('draws a mean with its spread, and finds the reward functions the logs name', () => {
    let s = addLog(emptySeries(), { step: 1, epoch: 0, reward: 0.5, reward_std: 0.25, 'rewards/accuracy/mean': 0.5, 'rewards/accuracy/std': 0.1, 'rewards/chosen': 1 });
    s = addLog(s, { step: 2, epoch: 0, reward: 0.75 });
    expect(spreadOf(s, 'reward', 'reward_std')).toEqual({ low: [0.25, null], high: [0.75, null] });
    expect(rewardNamesOf(s)).toEqual(['accuracy']);
  });

  const record = (reward: number | null, advantage: number, prompt: CompletionRecord['prompt'] = 'p', step = 3): CompletionRecord => ({
    step, prompt, completion: 'c', prompt_ids: [1], completion_ids: [2], rewards: { f: reward }, reward, advantage, truncated: false,
  });

  it('groups the latest step\'s completions by prompt and marks groups whose rewards all tie', () => {
    const records = [
      record(1, 0, 'old', 2),
      record(1, 0.7, 'first'), record(0, -0.7, 'first'),
      record(1, 0, 'second'), record(1, 0, 'second'),
      record(null, 0, [{ role: 'system', content: 's' }, { role: 'user', content: 'asked' }, { role: 'assistant', content: 'a' }]), record(0.5, 0),
    ];
    const groups = completionGroups(records, 2);
    expect(groups.map((g) => [g.prompt, g.records.length, g.tied])).toEqual([['first', 2, false], ['second', 2, true], ['asked', 2, true]]);
    expect(completionGroups([], 8)).toEqual([]);
  });

  it('ties as TRL counts a zero std: within 1e-8, unscored completions left out', () => {
    expect(rewardsTie([1, 1, 1])).toBe(true);
    expect(rewardsTie([1, 1 + 1e-12])).toBe(true);
    expect(rewardsTie([1, 0.9])).toBe(false);
    expect(rewardsTie([1, null, 1])).toBe(true);
    expect(rewardsTie([null, null])).toBe(true);
    expect(promptText('plain')).toBe('plain');
    expect(promptText([{ role: 'assistant', content: 'only' }])).toBe('only');
  });
});
