/**
 * Two tabs of the studio on one origin: while one trains a run, the other cannot take it over; it
 * is told the run is open in another tab and watches it read-only, and the run finishes in the
 * first tab with its last checkpoint and status intact.
 */
import { expect, test, type Page } from '@playwright/test';
import { modelFolder } from './fixtures.ts';
import { dropStories, openWithFolder, shortRecipe } from './studio_page.ts';

const STEPS = 6;

/** The stored run and its checkpoint keys, read straight from the page's IndexedDB. */
async function stored(page: Page): Promise<{ runs: { id: string; status: string; global_step: number; checkpoint_step: number | null }[]; checkpoints: [string, number][] }> {
  return page.evaluate(async () => {
    const db = await new Promise<IDBDatabase>((resolve, reject) => {
      const req = indexedDB.open('finetune-studio');
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
    });
    const all = <T>(store: string, keys: boolean) =>
      new Promise<T[]>((resolve, reject) => {
        const os = db.transaction(store).objectStore(store);
        const req = keys ? os.getAllKeys() : os.getAll();
        req.onsuccess = () => resolve(req.result as T[]);
        req.onerror = () => reject(req.error);
      });
    const result = { runs: await all<never>('runs', false), checkpoints: await all<[string, number]>('checkpoints', true) };
    db.close();
    return result;
  });
}

test('a second tab is told the run is open in another tab, watches it, and the finished run keeps its last checkpoint', async ({ context }) => {
  const folder = modelFolder();
  const a = await context.newPage();
  const errors: string[] = [];
  a.on('pageerror', (e) => errors.push(e.message));

  await openWithFolder(a, folder);
  await dropStories(a);
  await shortRecipe(a, STEPS);
  await a.getByTestId('nav-train').click();
  await a.getByTestId('train-start').click();
  await expect(a.getByTestId('train-status')).toHaveText('running');

  // The second tab opens while the first trains: the run is not offered for resuming, only for watching.
  const b = await context.newPage();
  b.on('pageerror', (e) => errors.push(e.message));
  await b.goto('/');
  await expect(b.getByTestId('backend-name')).toBeVisible();
  await b.getByTestId('nav-runs').click();
  const row = b.getByTestId('run-row').first();
  await expect(row.getByTestId('run-elsewhere')).toHaveText('This run is open in another tab.');
  await expect(row.getByRole('button', { name: /Resume from step/ })).toHaveCount(0);
  await expect(row.getByTestId('run-delete')).toBeDisabled();
  await expect(b.getByTestId('resume-offer')).toHaveCount(0);

  await row.getByTestId('run-watch').click();
  await expect(b.getByTestId('train-watching')).toContainText('This run is open in another tab.');
  await expect(b.getByTestId('train-pause')).toHaveCount(0);
  await expect(b.getByTestId('train-stop')).toHaveCount(0);
  await expect.poll(async () => Number(await b.getByTestId('train-step').innerText())).toBeGreaterThan(0);

  // The first tab finishes; the watcher sees the stored result and lets go.
  await expect(a.getByTestId('train-status')).toHaveText('finished', { timeout: 240_000 });
  await expect(b.getByTestId('train-status')).toHaveText('finished');
  await expect(b.getByTestId('train-step')).toHaveText(String(STEPS));
  await expect(b.getByTestId('train-watching')).toHaveCount(0);

  const { runs, checkpoints } = await stored(b);
  expect(runs).toHaveLength(1);
  expect(runs[0]).toMatchObject({ status: 'finished', global_step: STEPS, checkpoint_step: STEPS });
  expect(checkpoints).toEqual([[runs[0].id, STEPS]]);
  expect(errors).toEqual([]);
});
