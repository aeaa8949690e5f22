/**
 * The Data view's rows browser in the built app: page through the "Pirate assistant" sample with
 * stories260K loaded, pick a row, and read it token by token with the legend beside it.
 */
import { readFileSync } from 'node:fs';
import { expect, test } from '@playwright/test';
import { modelFolder } from './fixtures.ts';
import { openWithFolder, watchErrors } from './studio_page.ts';

const PIRATE = readFileSync(new URL('../../public/samples/chat-pirate.jsonl', import.meta.url), 'utf8').trim().split('\n');

/** The longest word of a line's assistant answer: its tokens are drawn side by side in the token view. */
function answerWord(line: number): string {
  const { messages } = JSON.parse(PIRATE[line - 1]) as { messages: { role: string; content: string }[] };
  const answer = messages.filter((m) => m.role === 'assistant').map((m) => m.content).join(' ');
  return answer.split(/[^A-Za-z]+/).reduce((a, b) => (b.length > a.length ? b : a), '');
}

test('the rows browser pages through a sample and shows any row token by token', async ({ page }) => {
  const errors = watchErrors(page);
  await openWithFolder(page, modelFolder());

  await page.getByTestId('nav-data').click();
  await page.getByTestId('sample-chat-pirate.jsonl').click();
  await expect(page.getByTestId('data-rows')).toHaveText('24');

  const range = page.getByTestId('preview-range');
  const rows = page.getByTestId('preview-rows').getByTestId('preview-row');
  const maskView = page.getByTestId('mask-view');
  await expect(range).toHaveText('rows 1–10 of 24');
  await expect(rows).toHaveCount(10);
  await expect(page.getByTestId('preview-prev')).toBeDisabled();
  // Until a row is picked, the first row that trains is shown.
  await expect(page.getByTestId('mask-line')).toHaveText('line 1');
  await expect(maskView.locator('.tok.trained').first()).toBeVisible();

  // The next page, and a row on it.
  await page.getByTestId('preview-next').click();
  await expect(range).toHaveText('rows 11–20 of 24');
  await expect(rows).toHaveCount(10);
  await expect(rows.first()).toHaveAttribute('data-line', '11');
  await rows.nth(2).click();
  await expect(rows.nth(2)).toHaveAttribute('aria-pressed', 'true');
  await expect(page.getByTestId('mask-line')).toHaveText('line 13');
  await expect(maskView.locator('.tokens')).toContainText(answerWord(13));
  await expect(maskView.locator('.tok.trained').first()).toBeVisible();

  // The legend explains what the view draws: the highlight, and ↵ for the line break between turns.
  const legend = page.getByTestId('token-legend');
  await expect(legend).toBeVisible();
  await expect(legend).toContainText('trained');
  await expect(legend.locator('[data-symbol="↵"]')).toContainText('line break');

  // No word is broken across lines: each word's box is one line, even in a narrow window.
  await page.setViewportSize({ width: 700, height: 900 });
  // Chrome gives an inline box one rectangle per child; a word on two lines has rectangles at two heights.
  const brokenWords = () =>
    maskView.locator('.word').evaluateAll((words) => words.filter((w) => new Set(Array.from(w.getClientRects(), (r) => Math.round(r.top))).size > 1).length);
  expect(await brokenWords()).toBe(0);
  const lines = await maskView.locator('.word').evaluateAll((words) => new Set(words.map((w) => Math.round(w.getBoundingClientRect().top))).size);
  expect(lines).toBeGreaterThan(1);

  // The last page, then back; the picked row stays picked.
  await page.getByTestId('preview-next').click();
  await expect(range).toHaveText('rows 21–24 of 24');
  await expect(rows).toHaveCount(4);
  await expect(page.getByTestId('preview-next')).toBeDisabled();
  await expect(page.getByTestId('mask-line')).toHaveText('line 13');
  await page.getByTestId('preview-prev').click();
  await expect(range).toHaveText('rows 11–20 of 24');
  await expect(page.getByTestId('preview-rows').locator('[data-line="13"]')).toHaveAttribute('aria-pressed', 'true');

  // Straight to a line.
  await page.getByTestId('preview-goto').fill('23');
  await page.getByTestId('data-preview').getByRole('button', { name: 'Go', exact: true }).click();
  await expect(range).toHaveText('rows 21–24 of 24');
  await expect(page.getByTestId('mask-line')).toHaveText('line 23');
  await expect(maskView.locator('.tokens')).toContainText(answerWord(23));

  expect(errors).toEqual([]);
});
