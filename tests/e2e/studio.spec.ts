/**
 * The studio as a person uses it, in real Chromium with WebGPU (SwiftShader when headless):
 * load a model from a folder and from a Hub-layout server, drop a dataset, set a recipe, train,
 * reload mid-run and resume, chat, download the adapter and check it with the engine's reader.
 */
import { mkdirSync, readFileSync } from 'node:fs';
import { expect, test, type Page } from '@playwright/test';
import { unzipSync } from 'fflate';
import { parseSafetensors } from '../../src/engine/io/safetensors.ts';
import { malformedJsonl, modelFolder, storiesJsonl } from './fixtures.ts';
import { startHubServer, type HubServer } from './hub_server.ts';
import { setField, watchErrors } from './studio_page.ts';

const SHOTS = 'test-results/screenshots';
const REPO = 'test-org/stories260K';
const STEPS = 12;

mkdirSync(SHOTS, { recursive: true });

async function shot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: `${SHOTS}/${name}.png`, fullPage: true });
}

/** Points drawn on a chart (the uPlot container says how many x values it has). */
async function chartPoints(page: Page, testid: string): Promise<number> {
  return Number(await page.getByTestId(testid).locator('.plot').getAttribute('data-points'));
}

async function download(page: Page, click: () => Promise<void>): Promise<Uint8Array> {
  const [dl] = await Promise.all([page.waitForEvent('download'), click()]);
  return new Uint8Array(readFileSync((await dl.path())!));
}

test.describe('studio', () => {
  let hub: HubServer | null = null;
  const folder = modelFolder();

  test.afterEach(async () => {
    await hub?.close();
    hub = null;
  });

  test('load, train, reload and resume, chat, download', async ({ page }) => {
    const t0 = Date.now();
    const lap = (what: string) => console.log(`${((Date.now() - t0) / 1000).toFixed(1)} s  ${what}`);
    const errors = watchErrors(page);
    hub = await startHubServer({ [REPO]: folder });

    // The backend line: WebGPU with the adapter's name.
    await page.goto(`/?hub=${encodeURIComponent(hub.url)}`);
    await expect(page.getByTestId('backend-name')).toHaveText('WebGPU');
    await expect(page.getByTestId('backend-adapter')).toContainText(/SwiftShader|\w/);
    lap('page open');

    // A model folder through the folder picker.
    await page.getByTestId('model-folder-input').setInputFiles(folder);
    await expect(page.getByTestId('model-summary')).toContainText('stories260K');
    await expect(page.getByTestId('model-params')).toContainText('260K');

    // The same model through the Hub's URL layout, with a progress bar, into Cache Storage.
    await page.getByTestId('hub-url-current').waitFor();
    await expect(page.getByTestId('hub-url-current')).toHaveText(hub.url);
    await page.getByTestId('hub-repo').fill(REPO);
    await page.getByTestId('hub-download').click();
    await expect(page.getByTestId('model-summary')).toContainText(REPO);
    expect(hub.requests).toContain(`GET /api/models/${REPO}/tree/main`);
    expect(hub.requests).toContain(`GET /${REPO}/resolve/main/model.safetensors`);
    // The settings panel (open for a custom Hub address) stays open through a download and a save.
    await expect(page.getByTestId('settings')).toHaveAttribute('open', '');
    await page.getByTestId('settings').getByRole('button', { name: 'Save address' }).click();
    await expect(page.getByTestId('hub-url-current')).toHaveText(hub.url);
    await expect(page.getByTestId('settings')).toHaveAttribute('open', '');
    await shot(page, '1-model');
    lap('model loaded from folder and from the hub');

    // A dataset file: format, preview, histogram, loss mask.
    await page.getByTestId('nav-data').click();
    await page.getByTestId('data-input').setInputFiles({ name: 'stories.jsonl', mimeType: 'application/jsonl', buffer: Buffer.from(storiesJsonl()) });
    await expect(page.getByTestId('data-format')).toHaveText('prompt / completion');
    await expect(page.getByTestId('data-rows')).toHaveText('12');
    await expect(page.getByTestId('data-preview')).toContainText('girl named Lily');
    await expect(page.getByTestId('length-histogram').locator('canvas')).toBeVisible();
    await expect(page.getByTestId('truncated-share')).toContainText('max_length');
    await expect(page.getByTestId('mask-view').locator('.tok.trained').first()).toBeVisible();
    await expect(page.getByTestId('bad-rows')).toHaveCount(0);
    await shot(page, '2-data');
    lap('dataset inspected');

    // The recipe: a bad value is explained at its field, then fixed.
    await page.getByTestId('nav-recipe').click();
    await setField(page, 'peft.r', '0');
    await expect(page.getByTestId('field-peft-r')).toContainText('"peft.r" must be an integer of at least 1 (got 0).');
    await setField(page, 'peft.r', '8');
    await setField(page, 'peft.lora_alpha', '16');
    await setField(page, 'learning_rate', '0.005');
    // SwiftShader takes about 3 s for a step of 32 tokens on two cores; a dozen steps show the flow.
    await setField(page, 'max_steps', String(STEPS));
    await setField(page, 'per_device_train_batch_size', '1');
    await setField(page, 'max_length', '32');
    await setField(page, 'save_steps', '2');
    await expect(page.getByTestId('recipe-errors')).toHaveCount(0);
    await expect(page.getByTestId('preflight')).toHaveAttribute('data-pending', 'false');
    // 260K f32 parameters, a rank-8 adapter with AdamW and 32 tokens come to a few megabytes.
    await expect(page.getByTestId('preflight-total')).toContainText(/About [\d.]+ MB of GPU memory/);
    await shot(page, '3-recipe');

    // Train; the loss chart fills in.
    await page.getByTestId('nav-train').click();
    // max_steps is known before the Worker counts the steps; the run's name defaults to model, method and date.
    await expect(page.getByTestId('train-total')).toHaveText(String(STEPS));
    await expect(page.getByTestId('train-run-name')).toHaveAttribute('placeholder', /^stories260K SFT LoRA \d{4}-\d\d-\d\d \d\d:\d\d$/);
    await page.getByTestId('train-start').click();
    // The first step compiles the GPU kernels, which takes a while: the page says so.
    await expect(page.getByTestId('train-preparing')).toContainText('Preparing GPU kernels');
    await expect(page.getByTestId('train-log')).toContainText(/Starting stories260K SFT LoRA .*: LoRA SFT on stories\.jsonl/);
    await expect(page.getByTestId('train-status')).toHaveText('running');
    await expect.poll(() => chartPoints(page, 'chart-loss')).toBeGreaterThanOrEqual(2);
    await expect(page.getByTestId('train-log')).toContainText('Checkpoint saved at step');
    // Two logged steps give a pace, so the time left shows a value.
    await expect(page.getByTestId('train-eta')).toHaveText(/^\d+ (s|min \d\d s|h \d\d min)$/);
    // …and it counts down as steps are logged.
    const etaSeconds = async () => {
      const [, a, unit, b] = /^(\d+) (s|min|h)(?: (\d+))?/.exec(await page.getByTestId('train-eta').innerText())!;
      return unit === 's' ? Number(a) : unit === 'min' ? Number(a) * 60 + Number(b) : Number(a) * 3600 + Number(b) * 60;
    };
    const firstEta = await etaSeconds();
    await expect.poll(etaSeconds, { timeout: 60_000 }).toBeLessThan(firstEta);
    lap(`training, at step ${await page.getByTestId('train-step').innerText()}`);

    // Pause stores a checkpoint where it stops; resume continues from it.
    // Pausing finishes the step and stores a checkpoint; until then the buttons say so and are off
    // (read in the frame after the click, before the Worker can have answered).
    const whilePausing = await page.evaluate(async () => {
      const button = (id: string) => document.querySelector<HTMLButtonElement>(`[data-testid="${id}"]`)!;
      button('train-pause').click();
      await new Promise((r) => requestAnimationFrame(r));
      return { pause: button('train-pause').textContent, pauseOff: button('train-pause').disabled, stopOff: button('train-stop').disabled };
    });
    expect(whilePausing).toEqual({ pause: 'Pausing…', pauseOff: true, stopOff: true });
    await expect(page.getByTestId('train-status')).toHaveText('paused');
    const pausedAt = Number(await page.getByTestId('train-step').innerText());
    await expect(page.getByTestId('train-log')).toContainText(`Checkpoint saved at step ${pausedAt}.`);
    await page.getByTestId('train-resume').click();
    await expect(page.getByTestId('train-status')).toHaveText('running');
    await expect.poll(async () => Number(await page.getByTestId('train-step').innerText())).toBeGreaterThan(pausedAt);
    lap(`paused at step ${pausedAt} and resumed`);

    // The Hub goes away and the page reloads mid-run: the model comes from Cache Storage and the run resumes.
    await hub.close();
    hub = null;
    await page.reload();
    // The reload keeps the person's work: the model (from the browser cache), the dataset and the recipe.
    await expect(page.getByTestId('nav-model')).toContainText('stories260K');
    await expect(page.getByTestId('nav-data')).toContainText('stories.jsonl');
    await page.getByTestId('nav-recipe').click();
    await expect(page.getByTestId('field-peft-r').locator('input')).toHaveValue('8');
    await expect(page.getByTestId('field-max_steps').locator('input')).toHaveValue(String(STEPS));
    const resume = page.getByTestId('resume-offer').getByRole('button', { name: /Resume from step \d+/ });
    await expect(resume).toBeVisible();
    const from = Number((await resume.innerText()).match(/\d+/)![0]);
    lap(`reloaded; resuming from step ${from}`);
    await resume.click();
    await expect(page.getByTestId('train-status')).toHaveText('running');
    await expect(page.getByTestId('nav-model')).toContainText('stories260K');
    await expect(page.getByTestId('train-status')).toHaveText('finished', { timeout: 240_000 });
    await expect(page.getByTestId('train-step')).toHaveText(String(STEPS));
    // The curve before the checkpoint comes back from the stored metrics; the resumed run logs the rest.
    expect(await chartPoints(page, 'chart-loss')).toBe(STEPS);
    await shot(page, '4-train');
    lap('training finished');

    // Chat: base and adapter side by side.
    await page.getByTestId('nav-chat').click();
    // Generation takes one to two seconds a token on SwiftShader.
    await page.getByTestId('chat-max-tokens').fill('6');
    await page.getByTestId('chat-input').fill('Once upon a time');
    await page.getByTestId('chat-send').click();
    // Both sides write at once, each showing its speed when done.
    await expect(page.getByTestId('chat-base-done')).toContainText(/^6 tokens at [\d.]+ tok\/s$/, { timeout: 120_000 });
    await expect(page.getByTestId('chat-adapter-done')).toContainText(/tokens at [\d.]+ tok\/s/, { timeout: 120_000 });
    // stories260K continues the story as in its greedy reference; the adapter says something too.
    await expect(page.getByTestId('chat-base-assistant')).toHaveText(/^, there was/);
    await expect(page.getByTestId('chat-adapter-assistant')).toHaveText(/\w{2,}/);
    await expect(page.getByTestId('chat-error')).toHaveCount(0);

    // Without a length the reply is sized from the measured speed; Stop ends both sides and keeps what was written.
    await page.getByTestId('chat-max-tokens').fill('');
    await page.getByTestId('chat-input').fill('Lily and Tom');
    await page.getByTestId('chat-send').click();
    await expect(page.getByTestId('chat-base-progress')).toContainText(/writing: [1-9]\d* (of up to \d+ )?tokens/, { timeout: 120_000 });
    await page.getByTestId('chat-stop').click();
    await expect(page.getByTestId('chat-base-done')).toContainText('stopped', { timeout: 60_000 });
    await expect(page.getByTestId('chat-adapter-done')).toContainText('stopped', { timeout: 60_000 });
    await expect(page.getByTestId('chat-base-assistant').nth(1)).toHaveText(/\S/);
    await expect(page.getByTestId('chat-send')).toBeVisible();
    await shot(page, '5-chat');
    lap('chat replied');

    // Runs: the finished run, its downloads.
    await page.getByTestId('nav-runs').click();
    const row = page.getByTestId('run-row').first();
    await expect(row.getByTestId('run-name')).toHaveText(/^stories260K SFT LoRA \d{4}-\d\d-\d\d \d\d:\d\d$/);
    await expect(row).toContainText('finished');
    await expect(page.getByTestId('storage')).toContainText('used');
    await shot(page, '6-runs');

    const adapterZip = await download(page, () => row.getByTestId('download-adapter').click());
    const zip = unzipSync(adapterZip);
    expect(Object.keys(zip).sort()).toEqual(['adapter_config.json', 'adapter_model.safetensors']);
    const config = JSON.parse(new TextDecoder().decode(zip['adapter_config.json']));
    expect(config).toMatchObject({ peft_type: 'LORA', task_type: 'CAUSAL_LM', r: 8, lora_alpha: 16, base_model_name_or_path: REPO });
    const st = parseSafetensors(zip['adapter_model.safetensors'], 'adapter_model.safetensors');
    // stories260K: 5 layers, hidden 64, 8 query heads and 4 KV heads of 8, MLP 172; all-linear = 7 modules.
    expect(st.tensors.size).toBe(5 * 7 * 2);
    const shape = (key: string) => st.tensors.get(`base_model.model.model.layers.${key}.weight`)?.shape;
    expect(shape('0.self_attn.q_proj.lora_A')).toEqual([8, 64]);
    expect(shape('0.self_attn.q_proj.lora_B')).toEqual([64, 8]);
    expect(shape('4.self_attn.k_proj.lora_B')).toEqual([32, 8]);
    expect(shape('2.mlp.down_proj.lora_A')).toEqual([8, 172]);
    expect(shape('2.mlp.up_proj.lora_B')).toEqual([172, 8]);

    const recipeZip = unzipSync(await download(page, () => row.getByTestId('download-recipe').click()));
    const recipe = JSON.parse(new TextDecoder().decode(recipeZip['recipe.json']));
    expect(recipe).toMatchObject({ model: REPO, train_file: 'stories.jsonl', max_steps: STEPS, peft: { r: 8, lora_alpha: 16 } });
    const metrics = new TextDecoder().decode(recipeZip['metrics.jsonl']).trim().split('\n').map((l) => JSON.parse(l));
    expect(metrics.filter((m) => m.loss !== undefined).map((m) => m.step)).toEqual(Array.from({ length: STEPS }, (_, i) => i + 1));

    // The downloaded adapter goes back in, for chat or to continue training.
    await page.getByTestId('adapter-input').setInputFiles({ name: 'stories-adapter.zip', mimeType: 'application/zip', buffer: Buffer.from(adapterZip) });
    await expect(page.getByTestId('adapter-loaded')).toContainText('stories-adapter.zip');
    await expect(page.getByTestId('adapter-error')).toHaveCount(0);
    // A dataset dropped there by mistake: the red sentence alone, not beside a green "Using …".
    await page.getByTestId('adapter-input').setInputFiles({ name: 'stories.jsonl', mimeType: 'application/jsonl', buffer: Buffer.from(storiesJsonl()) });
    await expect(page.getByTestId('adapter-error')).toContainText('stories.jsonl is not a .zip file');
    await expect(page.getByTestId('adapter-loaded')).toHaveCount(0);
    await expect(page.getByTestId('adapter-still')).toContainText('stories-adapter.zip');

    const merged = unzipSync(await download(page, () => row.getByTestId('download-merged').click()));
    expect(Object.keys(merged)).toEqual(expect.arrayContaining(['config.json', 'model.safetensors', 'tokenizer.json']));
    lap('downloads checked');

    expect(errors).toEqual([]);
  });

  test('a malformed JSONL file lists its bad lines and the page stays usable', async ({ page }) => {
    const errors = watchErrors(page);
    await page.goto('/');
    await expect(page.getByTestId('backend-name')).toBeVisible();
    await page.getByTestId('model-folder-input').setInputFiles(folder);
    await expect(page.getByTestId('model-summary')).toContainText('stories260K');

    await page.getByTestId('nav-data').click();
    await page.getByTestId('data-input').setInputFiles({ name: 'broken.jsonl', mimeType: 'application/jsonl', buffer: Buffer.from(malformedJsonl()) });
    const bad = page.getByTestId('bad-rows');
    await expect(bad).toBeVisible();
    await expect(bad.getByTestId('bad-row')).toHaveCount(2);
    await expect(bad.locator('[data-line="2"]')).toContainText('broken.jsonl, line 2');
    await expect(bad.locator('[data-line="4"]')).toContainText('broken.jsonl, line 4');
    await expect(page.locator('body')).not.toContainText(/\bat \S+ \(|\.ts:\d+/);
    await shot(page, '7-data-errors');

    // Training waits for a clean file, and says why.
    await page.getByTestId('nav-train').click();
    await expect(page.getByTestId('train-start')).toBeDisabled();
    await expect(page.getByTestId('train-blocked')).toContainText('2 bad rows');

    // A built-in sample replaces it, and everything works again.
    await page.getByTestId('nav-data').click();
    await page.getByTestId('sample-prompt-completion-sentiment.jsonl').click();
    await expect(page.getByTestId('data-rows')).toHaveText('24');
    await expect(page.getByTestId('bad-rows')).toHaveCount(0);
    await page.getByTestId('nav-train').click();
    await expect(page.getByTestId('train-start')).toBeEnabled();
    expect(errors).toEqual([]);
  });
});
