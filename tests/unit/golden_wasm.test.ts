// The PyTorch golden comparisons (see golden.test.ts) on the WASM backend. Its own file: tfjs keeps
// one engine per process, and vitest gives each file its own.
import { goldenSuite } from './helpers/golden_suite.ts';

goldenSuite('wasm');
