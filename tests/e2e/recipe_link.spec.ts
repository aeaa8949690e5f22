/**
 * A recipe as a link: "Copy link" puts the recipe (not the data) into the page's address; the
 * link opened in a fresh browser profile restores the form, checked as an import is; a damaged
 * link says so.
 */
import { readFileSync } from 'node:fs';
import { expect, test } from '@playwright/test';
import { unzipSync } from 'fflate';
import { modelFolder, storiesJsonl } from './fixtures.ts';
import { dropStories, openWithFolder, setField, watchErrors } from './studio_page.ts';

test('a recipe link opened in a fresh page restores the form', async ({ page, browser }) => {
  const errors = watchErrors(page);
  await openWithFolder(page, modelFolder());
  await page.getByTestId('nav-recipe').click();
  await page.getByTestId('field-method').locator('select').selectOption('dpo');
  await setField(page, 'learning_rate', '0.0003');
  await setField(page, 'peft.r', '4');
  await setField(page, 'max_steps', '7');
  await expect(page.getByTestId('recipe-errors')).toHaveCount(0);
  await page.getByTestId('recipe-copy-link').click();
  const link = await page.getByTestId('recipe-link').inputValue();
  expect(link).toMatch(/^http:\/\/localhost:\d+\/#recipe=[\w-]+$/);
  expect(errors).toEqual([]);

  // A colleague: a new profile, nothing stored, no model loaded.
  const other = await browser.newContext();
  const fresh = await other.newPage();
  const freshErrors = watchErrors(fresh);
  await fresh.goto(link);
  await expect(fresh.getByTestId('view-recipe')).toBeVisible();
  await expect(fresh.getByTestId('recipe-link-note')).toHaveText('Recipe opened from a link, written for stories260K.');
  await expect(fresh.getByTestId('field-method').locator('select')).toHaveValue('dpo');
  await expect(fresh.getByTestId('field-learning_rate').locator('input')).toHaveValue('0.0003');
  await expect(fresh.getByTestId('field-peft-r').locator('input')).toHaveValue('4');
  await expect(fresh.getByTestId('field-max_steps').locator('input')).toHaveValue('7');
  // The address no longer carries it: a reload keeps the edits made since.
  expect(new URL(fresh.url()).hash).toBe('');
  await setField(fresh, 'max_steps', '9');
  // The form is saved a moment after the last edit.
  await expect.poll(() => fresh.evaluate(() => Object.values(localStorage).some((v) => v.includes('"max_steps":"9"')))).toBe(true);
  await fresh.reload();
  await fresh.getByTestId('nav-recipe').click();
  await expect(fresh.getByTestId('field-max_steps').locator('input')).toHaveValue('9');
  expect(freshErrors).toEqual([]);

  const damaged = await other.newPage();
  await damaged.goto(link.slice(0, link.length - 12));
  await expect(damaged.getByTestId('recipe-link-error')).toHaveText('The link is cut short or damaged: its recipe cannot be read. Ask for the link again.');
  await other.close();
});

test('Export as a TRL job: a zip with train.py, the dataset and the accelerate configs', async ({ page }) => {
  const errors = watchErrors(page);
  await openWithFolder(page, modelFolder());
  await page.getByTestId('nav-recipe').click();
  await expect(page.getByTestId('recipe-export-trl')).toBeDisabled();
  await dropStories(page);
  await page.getByTestId('nav-recipe').click();
  await setField(page, 'learning_rate', '0.0003');
  const [dl] = await Promise.all([page.waitForEvent('download'), page.getByTestId('recipe-export-trl').click()]);
  expect(dl.suggestedFilename()).toBe('stories260K-sft-trl-job.zip');
  const zip = unzipSync(new Uint8Array(readFileSync((await dl.path())!)));
  const dir = 'stories260K-sft-trl-job/';
  expect(Object.keys(zip)).toEqual(expect.arrayContaining([`${dir}train.py`, `${dir}README.md`, `${dir}requirements.txt`, `${dir}accelerate/single_gpu.yaml`, `${dir}accelerate/deepspeed_zero3.yaml`]));
  const train = new TextDecoder().decode(zip[`${dir}train.py`]);
  expect(train).toContain('from trl import SFTConfig, SFTTrainer');
  expect(train).toContain('"learning_rate": 0.0003');
  const data = Object.keys(zip).find((k) => k.startsWith(`${dir}data/`))!;
  expect(new TextDecoder().decode(zip[data])).toBe(storiesJsonl());
  expect(errors).toEqual([]);
});
