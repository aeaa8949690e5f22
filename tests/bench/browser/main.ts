/// <reference types="vite/client" />
/**
 * The page Chromium runs for `npm run bench`: the same core.ts as in Node, on the page's own
 * WebGPU (navigator.gpu) and WASM. Progress goes to the console (prefixed "[bench] ", which the
 * Node side prints); results are the return value of `runBench`.
 */
import { setWasmPaths } from '@tensorflow/tfjs-backend-wasm';
import wasmUrl from '@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm?url';
import wasmSimdUrl from '@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-simd.wasm?url';
import wasmThreadedSimdUrl from '@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-threaded-simd.wasm?url';
import { runBackend, type Plan } from '../core.ts';

setWasmPaths({
  'tfjs-backend-wasm.wasm': wasmUrl,
  'tfjs-backend-wasm-simd.wasm': wasmSimdUrl,
  'tfjs-backend-wasm-threaded-simd.wasm': wasmThreadedSimdUrl,
});

(globalThis as unknown as { runBench(plan: Plan): ReturnType<typeof runBackend> }).runBench = (plan) => runBackend(plan, (line) => console.log(`[bench] ${line}`));
