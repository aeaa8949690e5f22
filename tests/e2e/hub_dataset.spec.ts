/**
 * A dataset from the Hub by its id, against the local Hub stand-in: the splits found in the repo,
 * the Parquet shards read in the Worker, the column mapping proposed and changed (and a column
 * that cannot be a field named in one sentence), the preview, a short run, and a reload that reads
 * the dataset (and the model) from the browser cache with no request to the server.
 */
import { expect, test } from '@playwright/test';
import { modelFolder } from './fixtures.ts';
import { startHubServer } from './hub_server.ts';
import { shortRecipe, watchErrors } from './studio_page.ts';

/** Two Parquet shards of question/answer rows (the first in two row groups), written by tests/reference/parquet_fixtures.py. */
const DATASET_DIR = new URL('../fixtures/datasets/stories-qa/', import.meta.url).pathname;
const DATASET = 'test-org/stories-qa';
const MODEL = 'test-org/stories260K';
const STEPS = 2;

test('a Hub dataset: its splits, the mapping changed, a run, and a reload from the cache', async ({ page }) => {
  const errors = watchErrors(page);
  const hub = await startHubServer({ [MODEL]: modelFolder() }, { [DATASET]: DATASET_DIR });
  try {
    await page.goto(`/?hub=${encodeURIComponent(hub.url)}`);
    await expect(page.getByTestId('backend-name')).toHaveText('WebGPU');
    // The model from the same server, so that after the reload it too comes from the cache.
    await page.getByTestId('hub-repo').fill(MODEL);
    await page.getByTestId('hub-download').click();
    await expect(page.getByTestId('model-summary')).toContainText(MODEL);

    await page.getByTestId('nav-data').click();
    await page.getByTestId('hub-dataset-id').fill('test-org/nothing');
    await page.getByTestId('hub-dataset-find').click();
    await expect(page.getByTestId('hub-dataset-error')).toHaveText(`${hub.url} has no dataset test-org/nothing (check the spelling, or the Hub address in Model › Settings).`);

    await page.getByTestId('hub-dataset-id').fill(DATASET);
    await page.getByTestId('hub-dataset-find').click();
    const split = page.getByTestId('hub-dataset-split');
    await expect(split.locator('option')).toHaveText([/^train \(2 Parquet files, /, /^test \(1 Parquet file, /]);
    await expect(split).toHaveValue('0');
    await page.getByTestId('hub-dataset-load').click();

    // The mapping proposed from the column names, then the rows as training reads them.
    await expect(page.getByTestId('hub-dataset-rows')).toHaveText('12 rows');
    await expect(page.getByTestId('hub-mapping-question')).toHaveValue('prompt');
    await expect(page.getByTestId('hub-mapping-answer')).toHaveValue('completion');
    await expect(page.getByTestId('hub-mapping-title')).toHaveValue('');
    await expect(page.getByTestId('hub-mapping-id')).toHaveValue('');
    await expect(page.getByTestId('hub-dataset-mapping')).toContainText('Once upon a time, there was a little');
    await expect(page.getByTestId('data-format')).toHaveText('prompt / completion');
    await expect(page.getByTestId('data-rows')).toHaveText('12');
    await expect(page.getByTestId('data-preview')).toContainText('girl named Lily');
    const fetched = hub.requests.filter((r) => r.startsWith(`GET /datasets/${DATASET}/resolve/`));
    expect(fetched.some((r) => r.endsWith('train-00000-of-00002.parquet')) && fetched.some((r) => r.endsWith('train-00001-of-00002.parquet'))).toBe(true);

    // The title as the prompt instead: the question is left out, and the preview follows.
    await page.getByTestId('hub-mapping-title').selectOption('prompt');
    await expect(page.getByTestId('hub-mapping-question')).toHaveValue('');
    await expect(page.getByTestId('data-preview')).toContainText('Lily in the park');
    await expect(page.getByTestId('data-preview')).not.toContainText('Once upon a time, there was a little');
    // A column that cannot be that field is named in one sentence, until it is set right.
    await page.getByTestId('hub-mapping-id').selectOption('completion');
    await expect(page.getByTestId('hub-dataset-problem')).toHaveText(`${DATASET} (train): column "id" holds numbers (row 1), so it cannot be "completion", which takes text or a list of {role, content} messages.`);
    await expect(page.getByTestId('data-report')).toHaveCount(0);
    await page.getByTestId('hub-mapping-answer').selectOption('completion');
    await expect(page.getByTestId('hub-dataset-problem')).toHaveCount(0);
    await expect(page.getByTestId('hub-mapping-id')).toHaveValue('');
    await expect(page.getByTestId('data-rows')).toHaveText('12');
    await expect(page.getByTestId('data-preview')).toContainText('Lily in the park');

    await shortRecipe(page, STEPS);
    await page.getByTestId('nav-train').click();
    await page.getByTestId('train-start').click();
    await expect(page.getByTestId('train-log')).toContainText(`on ${DATASET}/train.jsonl`);
    await expect(page.getByTestId('train-status')).toHaveText('finished', { timeout: 240_000 });

    // A reload: the model and the dataset, with its changed mapping, come from the browser cache.
    hub.requests.length = 0;
    await page.reload();
    await expect(page.getByTestId('model-summary')).toContainText(MODEL);
    await page.getByTestId('nav-data').click();
    await expect(page.getByTestId('hub-mapping-title')).toHaveValue('prompt');
    await expect(page.getByTestId('hub-mapping-question')).toHaveValue('');
    await expect(page.getByTestId('data-rows')).toHaveText('12');
    await expect(page.getByTestId('data-preview')).toContainText('Lily in the park');
    expect(hub.requests).toEqual([]);

    // Removing the downloaded datasets: the next reload fetches the split's files again.
    await page.getByTestId('hub-dataset-clear').click();
    await expect(page.getByTestId('hub-dataset')).toContainText('Downloaded datasets were removed from this browser');
    await page.reload();
    await page.getByTestId('nav-data').click();
    await expect(page.getByTestId('data-rows')).toHaveText('12');
    expect(hub.requests.some((r) => r.startsWith(`GET /datasets/${DATASET}/resolve/`))).toBe(true);
    expect(errors).toEqual([]);
  } finally {
    await hub.close();
  }
});
