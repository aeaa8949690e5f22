// Our WGSL kernels against the tfjs composition of the same math in a real browser's WebGPU
// (headless Chromium: SwiftShader), the same checks tests/unit/kernels_*.test.ts make on Dawn in
// Node. The page (tests/e2e/kernels/) is served by a Vite dev server of its own.
import { expect, test } from '@playwright/test';
import { createServer, type ViteDevServer } from 'vite';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
let server: ViteDevServer;

test.beforeAll(async () => {
  server = await createServer({
    configFile: false,
    root: ROOT,
    logLevel: 'silent',
    server: { host: 'localhost', port: 0 },
    // Dependencies are found by scanning the page up front: one found later reloads the page mid-run.
    optimizeDeps: { entries: ['tests/e2e/kernels/index.html'] },
  });
  await server.listen();
});

test.afterAll(async () => {
  await server?.close();
});

test('every kernel equals the tfjs composition within 1e-5 on the browser’s WebGPU', async ({ page }) => {
  const address = server.httpServer!.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  await page.goto(`http://localhost:${port}/tests/e2e/kernels/index.html`);
  await expect(page.locator('#status')).not.toHaveText('running', { timeout: 240_000 });
  const results = (await page.evaluate(() => (window as unknown as { kernelResults: Record<string, number | string> }).kernelResults)) as Record<string, number | string>;
  expect(results.error).toBeUndefined();
  expect(results.kernels).toBeGreaterThanOrEqual(10);
  const checked = Object.entries(results).filter(([name]) => name !== 'kernels');
  expect(checked.length).toBe(12);
  for (const [name, diff] of checked) expect(diff, name).toBeLessThanOrEqual(1e-5);
});
