/**
 * A hostile adapter_config.json in the browser: a `target_modules` pattern that makes a
 * backtracking regex engine run for ever ("(.*.*)*zz") and one that is not a regular expression
 * at all ("(q_proj") are each answered with one sentence that names adapter_config.json and
 * target_modules, quickly, with no uncaught error or stack trace; the Worker stays responsive:
 * a valid adapter with a pattern target_modules then loads and the chat answers from both sides.
 */
import { expect, test, type Page } from '@playwright/test';
import { zipSync } from 'fflate';
import { writeSafetensors, type TensorToWrite } from '../../src/engine/io/safetensors.ts';
import { modelFolder } from './fixtures.ts';

// stories260K: 5 layers, hidden 64; q_proj is 64 → 64.
const LAYERS = 5;
const HIDDEN = 64;
const R = 2;
/** How long an answer to a dropped adapter may take; a hung Worker never gives one. */
const ANSWER_MS = 10_000;

/** A PEFT adapter zip for stories260K: rank R on every layer's q_proj, with the given target_modules. */
function adapterZip(targetModules: unknown): Buffer {
  const tensors: TensorToWrite[] = [];
  const values = (n: number, seed: number) => Float32Array.from({ length: n }, (_, i) => 0.01 * Math.sin(seed + i));
  for (let l = 0; l < LAYERS; l++) {
    const base = `base_model.model.model.layers.${l}.self_attn.q_proj`;
    tensors.push({ name: `${base}.lora_A.weight`, dtype: 'F32', shape: [R, HIDDEN], data: values(R * HIDDEN, l) });
    tensors.push({ name: `${base}.lora_B.weight`, dtype: 'F32', shape: [HIDDEN, R], data: values(HIDDEN * R, 100 + l) });
  }
  const config = {
    peft_type: 'LORA',
    task_type: 'CAUSAL_LM',
    base_model_name_or_path: 'stories260K',
    r: R,
    lora_alpha: 4,
    lora_dropout: 0,
    bias: 'none',
    target_modules: targetModules,
  };
  return Buffer.from(zipSync({
    'adapter_config.json': new TextEncoder().encode(JSON.stringify(config, null, 2)),
    'adapter_model.safetensors': writeSafetensors(tensors, { format: 'pt' }),
  }));
}

/** Uncaught errors in the page, and console errors that carry a stack trace (the page's or the Worker's). */
function watchErrors(page: Page): { pageErrors: string[]; consoleErrors: string[] } {
  const out = { pageErrors: [] as string[], consoleErrors: [] as string[] };
  page.on('pageerror', (e) => out.pageErrors.push(`${e.message}\n${e.stack ?? ''}`));
  page.on('console', (m) => {
    if (m.type() === 'error') out.consoleErrors.push(m.text());
  });
  page.on('worker', (w) => w.on('console', (m) => {
    if (m.type() === 'error') out.consoleErrors.push(`[worker] ${m.text()}`);
  }));
  return out;
}

const STACK = /\n\s+at |\w+@\S+:\d+:\d+|\.(ts|js):\d+:\d+/;

/** The message is one sentence: a single line, no stack frames, one full stop at its end (quoted text aside). */
function expectOneSentence(text: string): void {
  expect(text).not.toMatch(/\n/);
  expect(text).not.toMatch(STACK);
  expect(text).not.toMatch(/Something went wrong|undefined|\[object/);
  expect(text.length).toBeLessThan(400);
  const unquoted = text.replace(/"[^"]*"/g, '""');
  expect(unquoted).toMatch(/\.$/);
  // "adapter_config.json" is the file's name, not a sentence break.
  expect(unquoted.replace(/adapter_config\.json/g, 'FILE').replace(/\{m,n\}\./, '{m,n}').split(/\.\s/)).toHaveLength(1);
}

test('a hostile target_modules in a dropped adapter is refused in one sentence and the studio stays usable', async ({ page }) => {
  const t0 = Date.now();
  const lap = (what: string) => console.log(`${((Date.now() - t0) / 1000).toFixed(1)} s  ${what}`);
  const errors = watchErrors(page);

  await page.goto('/');
  // The Worker is up once the header names its backend (WebGPU here; the refusals do not depend on it).
  await expect(page.getByTestId('backend-name')).toHaveText(/\w/);
  lap(`backend ${await page.getByTestId('backend-name').innerText()}`);
  await page.getByTestId('model-folder-input').setInputFiles(modelFolder());
  await expect(page.getByTestId('model-summary')).toContainText('stories260K');
  lap('model loaded');

  await page.getByTestId('nav-chat').click();
  const input = page.getByTestId('adapter-input');
  const error = page.getByTestId('adapter-error');
  await expect(input).toBeEnabled();

  const cases: [string, string, RegExp][] = [
    // Valid syntax, so it runs: a backtracking engine never returns; the linear matcher finds no module.
    ['catastrophic.zip', '(.*.*)*zz', /^\S*adapter_config\.json: "target_modules" selects no linear layer of this model\.$/],
    // Not a regular expression: one sentence saying why, not a SyntaxError's stack.
    ['unclosed.zip', '(q_proj', /^\S*adapter_config\.json: "target_modules" "\(q_proj" cannot be used: it has an unclosed "\(" at character 1; .*\.$/],
  ];
  for (const [name, pattern, expected] of cases) {
    const started = Date.now();
    await input.setInputFiles({ name, mimeType: 'application/zip', buffer: adapterZip(pattern) });
    // Waiting for this case's own sentence, so the previous case's message cannot stand in for it.
    await expect(error).toHaveText(expected, { timeout: ANSWER_MS });
    const text = (await error.innerText()).trim();
    lap(`${JSON.stringify(pattern)} answered in ${Date.now() - started} ms: ${text}`);
    expect(text).toMatch(expected);
    expectOneSentence(text);
    await expect(page.getByTestId('adapter-loaded')).toHaveCount(0);
    await expect(input).toBeEnabled();
  }

  // The Worker is free: a valid adapter whose target_modules is a pattern loads, replacing the error.
  await input.setInputFiles({ name: 'q-proj.zip', mimeType: 'application/zip', buffer: adapterZip('.*\\.q_proj') });
  await expect(page.getByTestId('adapter-loaded')).toContainText('q-proj.zip', { timeout: ANSWER_MS });
  await expect(error).toHaveCount(0);
  lap('valid adapter loaded');

  // And the chat answers from the base model and the adapter (a few tokens; SwiftShader is slow).
  await page.getByTestId('chat-max-tokens').fill('3');
  await page.getByTestId('chat-input').fill('Once upon a time');
  await page.getByTestId('chat-send').click();
  await expect(page.getByTestId('chat-base-done')).toBeVisible({ timeout: 60_000 });
  await expect(page.getByTestId('chat-adapter-done')).toBeVisible({ timeout: 60_000 });
  await expect(page.getByTestId('chat-base-assistant')).toHaveText(/^, there/);
  await expect(page.getByTestId('chat-adapter-assistant')).toHaveText(/\S/);
  await expect(page.getByTestId('chat-error')).toHaveCount(0);
  lap(`chat answered; console errors: ${JSON.stringify(errors.consoleErrors)}`);

  expect(errors.pageErrors).toEqual([]);
  expect(errors.consoleErrors.filter((e) => STACK.test(e))).toEqual([]);
  expect(errors.consoleErrors.filter((e) => /target_modules|adapter_config/.test(e))).toEqual([]);
});
