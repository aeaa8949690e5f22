/**
 * A GRPO run on stories260K through the real studio: the method chosen, a JavaScript reward written
 * in the editor and tried on sample completions (run in the page's sandboxed iframe), a few steps,
 * the completions table filled with every function's reward and the advantage, the metrics
 * charted, and the adapter and the rollout log downloaded.
 */
import { readFileSync } from 'node:fs';
import { expect, test } from '@playwright/test';
import { unzipSync } from 'fflate';
import { modelFolder } from './fixtures.ts';
import { openWithFolder, setField, watchErrors } from './studio_page.ts';

const STEPS = 2;
const SHOTS = 'test-results/screenshots';
const PROMPTS = ['Once upon a time', 'Tom had a', 'Lily saw a', 'The sun was', 'One day, a cat', 'The dog ran'];
// Longer completions score higher: partial credit, so a group rarely ties.
const CODE = 'export default function long_words(prompts, completions, columns) {\n  return completions.map((c, i) => c.length / 50 + (columns.completion_ids[i].length > 0 ? 0 : -1));\n}\n';

test('GRPO: a JavaScript reward written and tried, a run with its completions table and charts, downloads', async ({ page }) => {
  const errors = watchErrors(page);
  await openWithFolder(page, modelFolder());

  // The prompts, with a column the reward functions receive.
  await page.getByTestId('nav-data').click();
  const rows = PROMPTS.map((p, i) => JSON.stringify({ prompt: p, topic: i % 2 ? 'dog' : 'cat' })).join('\n') + '\n';
  await page.getByTestId('data-input').setInputFiles({ name: 'prompts.jsonl', mimeType: 'application/jsonl', buffer: Buffer.from(rows) });

  // GRPO with its own defaults, and the rewards in the editor.
  await page.getByTestId('nav-recipe').click();
  await page.getByTestId('field-method').locator('select').selectOption('grpo');
  await expect(page.getByTestId('reward-editor')).toBeVisible();
  await page.getByTestId('reward-add-script').click();
  await page.getByTestId('reward-0-path').fill('rewards/long_words.js');
  await page.getByTestId('reward-0-code').fill(CODE);
  // A built-in that has nothing to compare with (no answer column) gives null: shown as such.
  await page.getByTestId('reward-add-builtin').click();
  await page.getByTestId('reward-1-name').selectOption('accuracy');
  for (const [path, value] of Object.entries({ num_generations: '2', 'grpo:max_completion_length': '8', max_steps: String(STEPS), per_device_train_batch_size: '4', save_steps: '1', learning_rate: '0.01' })) {
    await setField(page, path, value);
  }
  await expect(page.getByTestId('recipe-errors')).toHaveCount(0);

  // Tried on sample completions before training, in the sandbox.
  await page.getByTestId('reward-try').click();
  const trial = page.getByTestId('reward-try-table');
  await expect(trial.getByTestId('completions-group')).toHaveCount(2, { timeout: 120_000 });
  await expect(trial).toContainText('long_words');
  await expect(trial.getByTestId('completions-null').first()).toBeVisible();
  await page.screenshot({ path: `${SHOTS}/grpo-recipe.png`, fullPage: true });

  // A few steps: the latest rollout in the table, the rewards charted.
  await page.getByTestId('nav-train').click();
  await page.getByTestId('train-start').click();
  await expect(page.getByTestId('train-status')).toHaveText('finished', { timeout: 240_000 });
  const table = page.getByTestId('train-completions').getByTestId('completions-table');
  await expect(table.getByTestId('completions-group')).toHaveCount(2);
  await expect(table).toContainText('long_words');
  await expect(table).toContainText('accuracy');
  await expect(page.getByTestId('chart-reward').locator('.plot')).toHaveAttribute('data-points', String(STEPS));
  await expect(page.getByTestId('chart-rewards-functions').locator('.plot')).toHaveAttribute('data-points', String(STEPS));
  await expect(page.getByTestId('chart-completions-length').locator('.plot')).toHaveAttribute('data-points', String(STEPS));
  await expect(page.getByTestId('chart-clip-ratio').locator('.plot')).toHaveAttribute('data-points', String(STEPS));
  await expect(page.getByTestId('train-reward')).toHaveText(/\d/);
  await page.screenshot({ path: `${SHOTS}/grpo-train.png`, fullPage: true });

  // The adapter as PEFT files; the recipe download holds the rollout log.
  await page.getByTestId('nav-runs').click();
  const row = page.getByTestId('run-row').first();
  await expect(row).toContainText('GRPO');
  const [dl] = await Promise.all([page.waitForEvent('download'), row.getByTestId('download-adapter').click()]);
  const zip = unzipSync(new Uint8Array(readFileSync((await dl.path())!)));
  expect(Object.keys(zip).sort()).toEqual(['adapter_config.json', 'adapter_model.safetensors']);
  const [rl] = await Promise.all([page.waitForEvent('download'), row.getByTestId('download-recipe').click()]);
  const files = unzipSync(new Uint8Array(readFileSync((await rl.path())!)));
  const recipe = JSON.parse(new TextDecoder().decode(files['recipe.json']));
  expect(recipe).toMatchObject({ method: 'grpo', reward_funcs: ['rewards/long_words.js', { name: 'accuracy' }], num_generations: 2, beta: 0 });
  const records = new TextDecoder().decode(files['completions.jsonl']).trim().split('\n').map((l) => JSON.parse(l));
  expect(records).toHaveLength(STEPS * 4);
  expect(records[0].rewards).toHaveProperty('long_words');
  expect(records[0].rewards.accuracy).toBeNull();
  expect(errors).toEqual([]);
});
