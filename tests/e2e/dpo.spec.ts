/**
 * A DPO run through the real studio: the method chosen first in the recipe, the pairs previewed
 * side by side, the method's own metrics charted, the adapter downloaded, and a chat with it.
 */
import { readFileSync } from 'node:fs';
import { expect, test } from '@playwright/test';
import { unzipSync } from 'fflate';
import { modelFolder, storyPairsJsonl } from './fixtures.ts';
import { openWithFolder, shortRecipe, watchErrors } from './studio_page.ts';

const STEPS = 4;

test('DPO: method chosen, pairs previewed, metrics charted, adapter downloaded, chat', async ({ page }) => {
  const errors = watchErrors(page);
  await openWithFolder(page, modelFolder());

  // The method first: DPO's own fields appear with TRL's names and defaults.
  await page.getByTestId('nav-recipe').click();
  await page.getByTestId('field-method').locator('select').selectOption('dpo');
  await expect(page.getByTestId('field-beta').locator('input')).toHaveValue('0.1');
  await expect(page.getByTestId('field-loss_type').locator('select')).toHaveValue('sigmoid');
  await expect(page.getByTestId('field-learning_rate').locator('input')).toHaveAttribute('placeholder', /^0\.00005 /);
  await shortRecipe(page, STEPS, { learning_rate: '0.005' });

  // The pairs: counted, and shown with the prompt once and chosen beside rejected.
  await page.getByTestId('nav-data').click();
  await page.getByTestId('data-input').setInputFiles({ name: 'pairs.jsonl', mimeType: 'application/jsonl', buffer: Buffer.from(storyPairsJsonl()) });
  await expect(page.getByTestId('data-format')).toHaveText(/preference pairs/);
  await expect(page.getByTestId('data-pairs')).toContainText('12');
  const first = page.getByTestId('preview-row').first();
  await expect(first.locator('.msg.prompt')).toContainText('Once upon a time, Lily went to the park.');
  await expect(first.locator('.msg.chosen')).toContainText('Lily was very happy.');
  await expect(first.locator('.msg.rejected')).toContainText('Lily was very sad.');
  const [chosenBox, rejectedBox] = [await first.locator('.msg.chosen').boundingBox(), await first.locator('.msg.rejected').boundingBox()];
  expect(Math.abs(chosenBox!.y - rejectedBox!.y)).toBeLessThan(2);
  expect(rejectedBox!.x).toBeGreaterThan(chosenBox!.x);

  // Training draws DPO's metrics: rewards of chosen and rejected together, margins, accuracies.
  await page.getByTestId('nav-train').click();
  await page.getByTestId('train-start').click();
  await expect(page.getByTestId('train-status')).toHaveText('finished', { timeout: 240_000 });
  await expect(page.getByTestId('chart-rewards-chosen').locator('.plot')).toHaveAttribute('data-series', '2');
  await expect(page.getByTestId('chart-rewards-chosen').locator('.plot')).toHaveAttribute('data-points', String(STEPS));
  await expect(page.getByTestId('chart-rewards-margins').locator('.plot')).toHaveAttribute('data-series', '1');
  await expect(page.getByTestId('chart-rewards-accuracies').locator('.plot')).toHaveAttribute('data-series', '1');
  await expect(page.getByTestId('train-log')).toContainText('Starting');

  // The adapter downloads as PEFT files; the recipe inside says DPO.
  await page.getByTestId('nav-runs').click();
  const row = page.getByTestId('run-row').first();
  await expect(row).toContainText('DPO');
  const [dl] = await Promise.all([page.waitForEvent('download'), row.getByTestId('download-adapter').click()]);
  const zip = unzipSync(new Uint8Array(readFileSync((await dl.path())!)));
  expect(Object.keys(zip).sort()).toEqual(['adapter_config.json', 'adapter_model.safetensors']);
  const [rl] = await Promise.all([page.waitForEvent('download'), row.getByTestId('download-recipe').click()]);
  const recipe = JSON.parse(new TextDecoder().decode(unzipSync(new Uint8Array(readFileSync((await rl.path())!)))['recipe.json']));
  expect(recipe).toMatchObject({ method: 'dpo', beta: 0.1, loss_type: 'sigmoid', max_steps: STEPS });

  // Chat with the result beside the base model.
  await page.getByTestId('nav-chat').click();
  await page.getByTestId('chat-max-tokens').fill('4');
  await page.getByTestId('chat-input').fill('Once upon a time, Tom went to the park.');
  await page.getByTestId('chat-send').click();
  await expect(page.getByTestId('chat-adapter-done')).toBeVisible({ timeout: 120_000 });
  await expect(page.getByTestId('chat-adapter-assistant')).toHaveText(/\S/);
  expect(errors).toEqual([]);
});
