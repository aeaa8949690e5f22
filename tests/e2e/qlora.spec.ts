/**
 * QLoRA through the real studio: the switch on the recipe form, the memory it saves in the
 * pre-flight estimate, a short run on the 4-bit base (quantised as it loads, in the Worker, on
 * WebGPU), and the adapter downloaded with the recipe that says so.
 */
import { readFileSync } from 'node:fs';
import { expect, test } from '@playwright/test';
import { unzipSync } from 'fflate';
import { modelFolder } from './fixtures.ts';
import { dropStories, openWithFolder, shortRecipe, watchErrors } from './studio_page.ts';

const STEPS = 2;

test('QLoRA: the switch, the memory it saves, a run on the 4-bit base, the adapter', async ({ page }) => {
  const errors = watchErrors(page);
  await openWithFolder(page, modelFolder());
  await dropStories(page);

  await page.getByTestId('nav-recipe').click();
  await expect(page.getByTestId('preflight-total')).toBeVisible();
  await expect(page.getByTestId('preflight-quant')).toHaveCount(0);
  await page.getByTestId('field-quantization-load_in_4bit').locator('input').check();
  await expect(page.getByTestId('preflight-quant')).toContainText('less');
  // The 4-bit settings are under Advanced, with their bitsandbytes defaults.
  await page.getByTestId('recipe-advanced').locator('summary').click();
  await expect(page.getByTestId('field-quantization-bnb_4bit_quant_type').locator('select')).toHaveValue('nf4');
  await page.getByTestId('field-quantization-bnb_4bit_use_double_quant').locator('input').check();
  await shortRecipe(page, STEPS);

  await page.getByTestId('nav-train').click();
  await page.getByTestId('train-start').click();
  await expect(page.getByTestId('train-status')).toHaveText('finished', { timeout: 240_000 });

  await page.getByTestId('nav-runs').click();
  const row = page.getByTestId('run-row').first();
  const [dl] = await Promise.all([page.waitForEvent('download'), row.getByTestId('download-adapter').click()]);
  const zip = unzipSync(new Uint8Array(readFileSync((await dl.path())!)));
  expect(Object.keys(zip).sort()).toEqual(['adapter_config.json', 'adapter_model.safetensors']);
  const [rl] = await Promise.all([page.waitForEvent('download'), row.getByTestId('download-recipe').click()]);
  const recipe = JSON.parse(new TextDecoder().decode(unzipSync(new Uint8Array(readFileSync((await rl.path())!)))['recipe.json']));
  expect(recipe.quantization).toEqual({ load_in_4bit: true, bnb_4bit_quant_type: 'nf4', bnb_4bit_use_double_quant: true, load_in_8bit: false });
  expect(errors).toEqual([]);
});
