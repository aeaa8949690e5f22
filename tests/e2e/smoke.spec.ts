import { test, expect } from '@playwright/test';
test('smoke', async ({ page }) => {
  page.on('console', (m) => console.log('console:', m.type(), m.text()));
  page.on('pageerror', (e) => console.log('pageerror:', e.message));
  await page.goto('/');
  await expect(page.getByTestId('backend-name')).toBeVisible();
  console.log(await page.getByTestId('backend').innerText());
  await page.getByTestId('model-folder-input').setInputFiles('/work/shared/models/stories260K');
  await expect(page.getByTestId('model-summary')).toBeVisible();
  console.log(await page.getByTestId('model-summary').innerText());
  await page.screenshot({ path: 'test-results/smoke-model.png', fullPage: true });
});
