import { defineConfig } from '@playwright/test';

const PORT = Number(process.env.STUDIO_PORT ?? 4173);
/** Where the app is built: STUDIO_OUT_DIR lets a second Playwright run build elsewhere than dist/. */
const OUT_DIR = process.env.STUDIO_OUT_DIR ?? 'dist';
const CHROMIUM = '/usr/bin/chromium';
const ARGS = ['--no-sandbox', '--headless=new', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'];

/**
 * End-to-end tests drive the built app in Debian's Chromium (never a downloaded browser) with
 * WebGPU on; headless it gets SwiftShader, a software adapter: correct and slow, so the tests
 * train a 260K-parameter model for a few steps.
 */
export default defineConfig({
  testDir: 'tests/e2e',
  outputDir: 'test-results/playwright',
  timeout: 300_000,
  expect: { timeout: 60_000 },
  fullyParallel: false,
  workers: 1,
  reporter: [['list']],
  use: {
    baseURL: `http://localhost:${PORT}`,
    viewport: { width: 1280, height: 900 },
    acceptDownloads: true,
    trace: 'retain-on-failure',
  },
  projects: [
    {
      name: 'chromium',
      testIgnore: /wasm\.spec\.ts/,
      use: { browserName: 'chromium', launchOptions: { executablePath: CHROMIUM, args: ['--enable-unsafe-webgpu', ...ARGS] } },
    },
    {
      // The same browser without WebGPU, as most Linux browsers still are.
      name: 'no-webgpu',
      testMatch: /wasm\.spec\.ts/,
      use: { browserName: 'chromium', launchOptions: { executablePath: CHROMIUM, args: ARGS } },
    },
  ],
  webServer: {
    // WebGPU needs a secure context, which http://localhost is.
    command: `npx vite build --outDir ${OUT_DIR} --emptyOutDir && npx vite preview --outDir ${OUT_DIR} --port ${PORT} --strictPort`,
    url: `http://localhost:${PORT}`,
    reuseExistingServer: !process.env.CI,
    timeout: 180_000,
    stdout: 'ignore',
    stderr: 'pipe',
  },
});
