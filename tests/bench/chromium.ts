/**
 * The bench in headless Chromium (Debian's /usr/bin/chromium, never a downloaded browser): a Vite
 * dev server serves tests/bench/browser/ from http://localhost (WebGPU needs a secure context),
 * Playwright opens it, and the page runs core.ts's runBackend for each plan and hands the results
 * back. Node only.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { createServer } from 'vite';
import { chromium } from 'playwright';
import type { BackendRun, Plan } from './core.ts';

const CHROMIUM = '/usr/bin/chromium';
const ARGS = ['--no-sandbox', '--headless=new', '--enable-unsafe-webgpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'];

export async function runInChromium(plans: Plan[], log: (line: string) => void): Promise<BackendRun[]> {
  const unavailable = (note: string) => plans.map((p) => ({ runtime: 'chromium', backend: p.backend, adapter: '', available: false, note, best_matmul: {}, cases: [], generation: [] }));
  if (!existsSync(CHROMIUM)) {
    log(`chromium: ${CHROMIUM} not found; skipped`);
    return unavailable(`${CHROMIUM} not found (apt-get install -y chromium)`);
  }
  const server = await createServer({ configFile: fileURLToPath(new URL('./vite.config.ts', import.meta.url)), logLevel: 'warn' });
  await server.listen();
  const url = server.resolvedUrls?.local[0];
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS });
  try {
    if (!url) throw new Error('the Vite server reported no local URL');
    const page = await browser.newPage();
    page.on('console', (m) => {
      const text = m.text();
      if (text.startsWith('[bench] ')) log(text.slice(8));
      else if (m.type() === 'error') log(`chromium console: ${text}`);
    });
    page.on('pageerror', (e) => log(`chromium page error: ${e.message}`));
    log(`chromium: ${url}`);
    await page.goto(url);
    await page.waitForFunction(() => (globalThis as { runBench?: unknown }).runBench != null, undefined, { timeout: 180_000 });
    const runs: BackendRun[] = [];
    for (const plan of plans) {
      runs.push(await page.evaluate((p) => (globalThis as unknown as { runBench(p: Plan): Promise<BackendRun> }).runBench(p), plan));
    }
    return runs;
  } finally {
    await browser.close();
    await server.close();
  }
}
