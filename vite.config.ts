import { defineConfig } from 'vite';
import { svelte } from '@sveltejs/vite-plugin-svelte';

export default defineConfig({
  plugins: [svelte()],
  // The training Worker imports tfjs and the engine as an ES module.
  worker: { format: 'es' },
  // Pre-bundle every dependency at start-up, the Worker's included (Vite's scan starts from
  // index.html only and would find the Worker's imports late, re-bundle and reload the page).
  optimizeDeps: {
    entries: ['index.html', 'src/worker/index.ts'],
    include: ['idb', '@huggingface/jinja', '@huggingface/tokenizers', 'comlink', 'fflate', 'uplot', 'zod'],
  },
  server: { host: 'localhost', port: 5173, strictPort: false },
  preview: { host: 'localhost', port: 4173 },
  build: { target: 'es2022', chunkSizeWarningLimit: 4096 },
});
