/**
 * A reload when the model came from a folder on disk: the page keeps the recipe and the dropped
 * dataset, and the resume offer says up front that the folder must be picked again (a browser
 * cannot reopen it by itself), instead of failing after "Resuming…". Once it is picked, the run
 * resumes and shows the recipe and data it was trained with.
 */
import { expect, test } from '@playwright/test';
import { modelFolder } from './fixtures.ts';
import { dropStories, openWithFolder, shortRecipe, watchErrors } from './studio_page.ts';

test('after a reload, a folder model is asked for up front, and the run resumes with its own recipe and data', async ({ page }) => {
  const folder = modelFolder();
  const errors = watchErrors(page);
  await openWithFolder(page, folder);
  await dropStories(page, 'my_stories.jsonl');
  await shortRecipe(page, 8, { 'peft.r': '4' });

  await page.getByTestId('nav-train').click();
  await page.getByTestId('train-start').click();
  await expect(page.getByTestId('train-log')).toContainText('Checkpoint saved at step 2', { timeout: 120_000 });
  await page.getByTestId('train-pause').click();
  await expect(page.getByTestId('train-status')).toHaveText('paused');

  // The person changes the form after the run started; the resumed run must show its own recipe.
  await page.getByTestId('nav-recipe').click();
  await page.getByTestId('field-peft-r').locator('input').fill('16');
  await expect(page.getByTestId('field-peft-r').locator('input')).toHaveValue('16');
  // The form is saved a moment after the change.
  await page.waitForFunction(() => JSON.parse(localStorage.getItem('studio.recipe') ?? '{}')['peft.r'] === '16');

  await page.reload();
  await expect(page.getByTestId('backend-name')).toHaveText('WebGPU');
  // Recipe and data survive the reload; the model folder cannot be reopened without the person.
  await expect(page.getByTestId('nav-data')).toContainText('my_stories.jsonl');
  await page.getByTestId('nav-recipe').click();
  await expect(page.getByTestId('field-peft-r').locator('input')).toHaveValue('16');
  await expect(page.getByTestId('resume-needs-model')).toContainText('pick its folder again');
  await expect(page.getByTestId('resume-offer').getByRole('button', { name: /Resume from step/ })).toHaveCount(0);
  await page.getByTestId('resume-offer').getByRole('button', { name: 'Open Model' }).click();
  await expect(page.getByTestId('model-pick-again')).toContainText('stories260K');

  await page.getByTestId('model-folder-input').setInputFiles(folder);
  await expect(page.getByTestId('model-summary')).toContainText('stories260K');
  const resume = page.getByTestId('resume-offer').getByRole('button', { name: /Resume from step \d+/ });
  await expect(resume).toBeVisible();
  await resume.click();
  await expect(page.getByTestId('train-status')).toHaveText(/running|finished/);
  // The resumed run shows what it trains with: r 4 again, and its own data.
  await page.getByTestId('nav-recipe').click();
  await expect(page.getByTestId('field-peft-r').locator('input')).toHaveValue('4');
  await expect(page.getByTestId('nav-data')).toContainText('my_stories.jsonl');
  await page.getByTestId('nav-train').click();
  await expect(page.getByTestId('train-status')).toHaveText('finished', { timeout: 240_000 });
  expect(errors).toEqual([]);
});
