/** What the end-to-end tests do in the studio again and again, as a person would. */
import { expect, type Page } from '@playwright/test';
import { storiesJsonl } from './fixtures.ts';

/** Sets a recipe field, opening Advanced when the field is there. */
export async function setField(page: Page, path: string, value: string): Promise<void> {
  const field = page.getByTestId(`field-${path.replace(/\./g, '-')}`);
  // Fields beyond the essentials are under Advanced, closed at first.
  if (!(await field.isVisible())) await page.getByTestId('recipe-advanced').locator('summary').click();
  await field.locator('input').fill(value);
}

/** Fails the test on anything the page logs as an uncaught error. */
export function watchErrors(page: Page): string[] {
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  return errors;
}

/** Opens the studio and loads the model folder through the folder picker. */
export async function openWithFolder(page: Page, folder: string): Promise<void> {
  await page.goto('/');
  await expect(page.getByTestId('backend-name')).toHaveText('WebGPU');
  await page.getByTestId('model-folder-input').setInputFiles(folder);
  await expect(page.getByTestId('model-summary')).toContainText('stories260K');
}

/** Drops the twelve-row stories file in the Data view. */
export async function dropStories(page: Page, name = 'stories.jsonl'): Promise<void> {
  await page.getByTestId('nav-data').click();
  await page.getByTestId('data-input').setInputFiles({ name, mimeType: 'application/jsonl', buffer: Buffer.from(storiesJsonl()) });
  await expect(page.getByTestId('data-rows')).toHaveText('12');
}

/** A short run's recipe: `steps` steps of one 32-token row, a checkpoint every two. */
export async function shortRecipe(page: Page, steps: number, extra: Record<string, string> = {}): Promise<void> {
  await page.getByTestId('nav-recipe').click();
  const fields = { max_steps: String(steps), per_device_train_batch_size: '1', max_length: '32', save_steps: '2', ...extra };
  for (const [path, value] of Object.entries(fields)) await setField(page, path, value);
  await expect(page.getByTestId('recipe-errors')).toHaveCount(0);
}
