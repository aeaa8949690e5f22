/**
 * Runs side by side: two short runs with different learning rates, one renamed in place, both
 * ticked in Runs, their loss curves drawn on one chart; one run's curves opened on their own.
 */
import { expect, test, type Page } from '@playwright/test';
import { modelFolder } from './fixtures.ts';
import { dropStories, openWithFolder, setField, shortRecipe, watchErrors } from './studio_page.ts';

const STEPS = 3;

/** Sets the learning rate, trains STEPS steps and waits for the run to finish. */
async function train(page: Page, learningRate: string): Promise<void> {
  await page.getByTestId('nav-recipe').click();
  await setField(page, 'learning_rate', learningRate);
  await expect(page.getByTestId('recipe-errors')).toHaveCount(0);
  await page.getByTestId('nav-train').click();
  await page.getByTestId('train-start').click();
  await expect(page.getByTestId('train-status')).toHaveText('running');
  await expect(page.getByTestId('train-status')).toHaveText('finished', { timeout: 240_000 });
}

test('two runs renamed and compared on one chart', async ({ page }) => {
  // Two runs, each compiling GPU kernels on SwiftShader before its first step.
  test.setTimeout(480_000);
  const errors = watchErrors(page);
  await openWithFolder(page, modelFolder());
  await dropStories(page);
  await shortRecipe(page, STEPS);

  await train(page, '0.005');
  await train(page, '0.001');

  await page.getByTestId('nav-runs').click();
  const rows = page.getByTestId('run-row');
  await expect(rows).toHaveCount(2);
  await expect(rows.getByText('finished', { exact: true })).toHaveCount(2);

  // Rename the newest run in place: an empty name is refused with the Worker's sentence, then a real one is kept.
  const newest = rows.first();
  await newest.getByTestId('run-rename').click();
  await newest.getByTestId('run-name-input').fill(' ');
  await newest.getByTestId('run-name-input').press('Enter');
  await expect(newest.getByTestId('run-rename-error')).toContainText('A run needs a name');
  await newest.getByTestId('run-name-input').fill('lr 0.001');
  await newest.getByTestId('run-name-input').press('Enter');
  await expect(newest.getByTestId('run-name-input')).toHaveCount(0);
  await expect(page.getByTestId('runs-table').getByTestId('run-name').first()).toHaveText('lr 0.001');

  // Both ticked: one loss chart with a line per run, the legend naming them.
  await expect(page.getByTestId('runs-compare')).toHaveCount(0);
  await rows.nth(0).getByTestId('run-compare').check();
  await rows.nth(1).getByTestId('run-compare').check();
  const compare = page.getByTestId('runs-compare');
  const plot = compare.getByTestId('compare-loss').locator('.plot');
  await expect(plot).toHaveAttribute('data-series', '2');
  await expect(plot).toHaveAttribute('data-points', String(STEPS));
  await expect(compare).toContainText('lr 0.001');

  // One run's own curves, read back from its stored metrics.
  await rows.nth(1).getByTestId('run-open-curves').click();
  await expect(page.getByTestId('run-curves').getByTestId('run-chart-loss').locator('.plot')).toHaveAttribute('data-points', String(STEPS));
  await expect(page.getByTestId('run-curves').getByTestId('run-chart-lr').locator('.plot')).toHaveAttribute('data-series', '1');

  expect(errors).toEqual([]);
});
