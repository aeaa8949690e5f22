/**
 * A browser without WebGPU (Chromium without --enable-unsafe-webgpu, as the 'no-webgpu' project
 * launches it): the page says so plainly and still works, on the WASM backend.
 */
import { expect, test } from '@playwright/test';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { modelFolder } from './fixtures.ts';

test('without WebGPU the page says so and runs on WASM', async ({ page }) => {
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto('/');
  await expect(page.getByTestId('backend-name')).toHaveText('WASM');
  await expect(page.getByTestId('backend-warning')).toHaveText('WebGPU is not available in this browser; training runs on WASM, much slower.');

  // The model's files picked one by one rather than as a folder.
  const folder = modelFolder();
  await page.getByTestId('model-files-input').setInputFiles(readdirSync(folder).map((f) => join(folder, f)));
  await expect(page.getByTestId('model-summary')).toContainText('local model');

  await page.getByTestId('nav-chat').click();
  await page.getByTestId('chat-max-tokens').fill('6');
  await page.getByTestId('chat-input').fill('Once upon a time');
  await page.getByTestId('chat-send').click();
  await expect(page.getByTestId('chat-send')).toHaveText('Send');
  await expect(page.getByTestId('chat-base-assistant')).toHaveText(/^, there was/);
  expect(errors).toEqual([]);
});
