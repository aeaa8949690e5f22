/**
 * QLoRA through the real studio: the switch on the recipe form, the memory it saves in the
 * pre-flight estimate, a short run on the 4-bit base (quantised as it loads, in the Worker, on
 * WebGPU), and the adapter downloaded with the recipe that says so.
 */
import { copyFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect, test, type Locator, type Page } from '@playwright/test';
import { unzipSync } from 'fflate';
import { gguf } from '@huggingface/gguf';
import { modelFolder } from './fixtures.ts';
import { startHubServer } from './hub_server.ts';
import { dropStories, openWithFolder, shortRecipe, watchErrors } from './studio_page.ts';

/** stories260K pre-quantised by the PyTorch reference (tests/reference/bnb_folder_golden.py). */
const PREQUANTIZED = new URL('../fixtures/quant/stories260K-nf4-dq/', import.meta.url).pathname;

const STEPS = 2;

/** Trains the recipe on the form to the end, and returns the new run's row in Runs. */
async function trainToEnd(page: Page): Promise<Locator> {
  await page.getByTestId('nav-train').click();
  await page.getByTestId('train-start').click();
  await expect(page.getByTestId('train-status')).toHaveText('finished', { timeout: 240_000 });
  await page.getByTestId('nav-runs').click();
  return page.getByTestId('run-row').first();
}

/** The recipe.json of a run's "Recipe + metrics" download. */
async function downloadedRecipe(page: Page, row: Locator): Promise<Record<string, unknown>> {
  const [rl] = await Promise.all([page.waitForEvent('download'), row.getByTestId('download-recipe').click()]);
  return JSON.parse(new TextDecoder().decode(unzipSync(new Uint8Array(readFileSync((await rl.path())!)))['recipe.json']));
}

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
  const row = await trainToEnd(page);
  const [dl] = await Promise.all([page.waitForEvent('download'), row.getByTestId('download-adapter').click()]);
  const zip = unzipSync(new Uint8Array(readFileSync((await dl.path())!)));
  expect(Object.keys(zip).sort()).toEqual(['adapter_config.json', 'adapter_model.safetensors']);
  const recipe = await downloadedRecipe(page, row);
  expect(recipe.quantization).toEqual({ load_in_4bit: true, bnb_4bit_quant_type: 'nf4', bnb_4bit_use_double_quant: true, load_in_8bit: false });

  // GGUF for llama.cpp: the merged model (its 4-bit base dequantised) and the adapter alone, read back by @huggingface/gguf.
  await row.getByTestId('gguf-outtype').selectOption('f16');
  const [gm] = await Promise.all([page.waitForEvent('download'), row.getByTestId('download-gguf').click()]);
  expect(gm.suggestedFilename()).toMatch(/-f16\.gguf$/);
  const model = (await gguf((await gm.path())!, { allowLocalFile: true })) as unknown as { metadata: Record<string, unknown>; tensorInfos: { name: string }[] };
  expect(model.metadata['general.architecture']).toBe('llama');
  expect(model.metadata['tokenizer.ggml.model']).toBe('llama');
  expect(model.tensorInfos.map((t) => t.name)).toContain('blk.4.ffn_down.weight');
  const [gl] = await Promise.all([page.waitForEvent('download'), row.getByTestId('download-gguf-lora').click()]);
  const lora = (await gguf((await gl.path())!, { allowLocalFile: true })) as unknown as { metadata: Record<string, unknown>; tensorInfos: { name: string }[] };
  expect(lora.metadata['general.type']).toBe('adapter');
  expect(lora.metadata['adapter.type']).toBe('lora');
  expect(lora.tensorInfos.map((t) => t.name)).toContain('blk.0.attn_q.weight.lora_a');
  expect(errors).toEqual([]);
});

test('a pre-quantised 4-bit checkpoint from the Hub: its storage shown, the switch fixed, LoRA only, a run', async ({ page }) => {
  const errors = watchErrors(page);
  // stories260K's folder with the reference's 4-bit config.json and model.safetensors.
  const folder = modelFolder();
  for (const f of ['config.json', 'model.safetensors']) copyFileSync(join(PREQUANTIZED, f), join(folder, f));
  const repo = 'test/stories260K-bnb-4bit';
  const hub = await startHubServer({ [repo]: folder });
  try {
    await page.goto(`/?hub=${encodeURIComponent(hub.url)}`);
    await expect(page.getByTestId('backend-name')).toHaveText('WebGPU');
    await page.getByTestId('hub-repo').fill(repo);
    await page.getByTestId('hub-download').click();
    await expect(page.getByTestId('model-summary')).toContainText(repo);
    await expect(page.getByTestId('model-weights')).toHaveText('F32; projections pre-quantised to 4 bits (NF4, double quantisation), so it trains with LoRA only (QLoRA)');
    await dropStories(page);

    await page.getByTestId('nav-recipe').click();
    const toggle = page.getByTestId('field-quantization-load_in_4bit').locator('input');
    await expect(toggle).toBeChecked();
    await expect(toggle).toBeDisabled();
    await expect(page.getByTestId('field-quantization-load_in_4bit-note')).toContainText('is stored in 4 bits (NF4, double quantisation)');
    // Already 4-bit: nothing more to save, so the estimate does not claim a saving.
    await expect(page.getByTestId('preflight-total')).toBeVisible();
    await expect(page.getByTestId('preflight-quant')).toHaveCount(0);
    await page.getByTestId('field-peft-type').locator('select').selectOption('full');
    await expect(page.getByTestId('field-peft-type')).toContainText('only a LoRA adapter can train on it; choose lora.');
    await page.getByTestId('field-peft-type').locator('select').selectOption('lora');
    await shortRecipe(page, STEPS);
    const recipe = await downloadedRecipe(page, await trainToEnd(page));
    expect(recipe.quantization).toEqual({ load_in_4bit: true, bnb_4bit_quant_type: 'nf4', bnb_4bit_use_double_quant: true, load_in_8bit: false });
    expect(errors).toEqual([]);
  } finally {
    await hub.close();
  }
});
