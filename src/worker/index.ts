/// <reference types="vite/client" />
/**
 * The training Worker: one StudioWorker, exposed to the page through comlink. The page creates it with
 * `new Worker(new URL('./worker/index.ts', import.meta.url), { type: 'module' })` and talks to it
 * through `Comlink.wrap<StudioApi>(worker)`, wrapping callbacks in `Comlink.proxy()`.
 */
import * as Comlink from 'comlink';
import { setWasmPaths } from '@tensorflow/tfjs-backend-wasm';
import wasmUrl from '@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm?url';
import wasmSimdUrl from '@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-simd.wasm?url';
import wasmThreadedSimdUrl from '@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-threaded-simd.wasm?url';
import { StudioWorker } from './studio_worker.ts';

// The binaries are bundled with the app under hashed names, so each is mapped by name: the WASM
// backend then never falls back to fetching them from a CDN.
setWasmPaths({
  'tfjs-backend-wasm.wasm': wasmUrl,
  'tfjs-backend-wasm-simd.wasm': wasmSimdUrl,
  'tfjs-backend-wasm-threaded-simd.wasm': wasmThreadedSimdUrl,
});

class TransferringStudioWorker extends StudioWorker {
  // A merged model's zip can be gigabytes: its buffer is handed to the page, not copied.
  override async exportZip(kind: 'adapter' | 'merged' | 'recipe', runId?: string): Promise<Uint8Array> {
    const zip = await super.exportZip(kind, runId);
    return Comlink.transfer(zip, [zip.buffer as ArrayBuffer]);
  }
}

Comlink.expose(new TransferringStudioWorker());
