import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

/** The Chromium half of `npm run bench` (see chromium.ts): a dev server for browser/index.html. */
export default defineConfig({
  root: fileURLToPath(new URL('./browser', import.meta.url)),
  // The page imports the engine and node_modules from the repository root.
  server: { host: 'localhost', port: 5183, strictPort: false, fs: { allow: [fileURLToPath(new URL('../..', import.meta.url))] } },
  cacheDir: fileURLToPath(new URL('../../node_modules/.vite-bench', import.meta.url)),
  clearScreen: false,
});
