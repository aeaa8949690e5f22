// The backend chosen when none is asked for: WebGPU only on a hardware adapter; a software one
// (SwiftShader, llvmpipe, …) is slower than WASM on the same CPU, so WASM is chosen instead.
import { afterEach, describe, expect, it } from 'vitest';
import { adapterName, initFastestBackend, isSoftwareAdapter, type AdapterDescription } from '../../src/engine/backend/index.ts';

const adapter = (a: Partial<AdapterDescription>): AdapterDescription => ({ vendor: '', architecture: '', device: '', description: '', ...a });

describe('isSoftwareAdapter', () => {
  it('knows software renderers by the fallback flag or by name', () => {
    // What Dawn reports for chromium's SwiftShader.
    expect(isSoftwareAdapter(adapter({ vendor: 'google', architecture: 'swiftshader', device: 'swiftshader-device-subzero-', description: 'SwiftShader driver 5.0.0', isFallbackAdapter: true }))).toBe(true);
    expect(isSoftwareAdapter(adapter({ vendor: 'google', architecture: 'swiftshader' }))).toBe(true);
    expect(isSoftwareAdapter(adapter({ vendor: 'mesa', description: 'llvmpipe (LLVM 15.0.6, 256 bits)' }))).toBe(true);
    expect(isSoftwareAdapter(adapter({ description: 'Microsoft Basic Render Driver' }))).toBe(true);
    expect(isSoftwareAdapter(adapter({ vendor: 'nvidia', architecture: 'hopper', description: 'NVIDIA H200' }))).toBe(false);
    expect(isSoftwareAdapter(adapter({ vendor: 'apple', architecture: 'metal-3' }))).toBe(false);
    expect(isSoftwareAdapter(adapter({ vendor: 'nvidia', isFallbackAdapter: false }))).toBe(false);
  });

  it('names an adapter by its description, else vendor and architecture', () => {
    expect(adapterName(adapter({ vendor: 'nvidia', architecture: 'hopper', description: 'NVIDIA H200' }))).toBe('NVIDIA H200');
    expect(adapterName(adapter({ vendor: 'apple', architecture: 'metal-3' }))).toBe('apple metal-3');
  });
});

describe('initFastestBackend', () => {
  const g = globalThis as { navigator?: unknown };
  const original = Object.getOwnPropertyDescriptor(globalThis, 'navigator');
  afterEach(() => {
    if (original) Object.defineProperty(globalThis, 'navigator', original);
    else delete g.navigator;
  });

  const withGpu = (gpu: unknown) => Object.defineProperty(globalThis, 'navigator', { value: { gpu }, configurable: true, writable: true });

  it('passes over a software WebGPU adapter for WASM, saying why', async () => {
    withGpu({ requestAdapter: async () => ({ info: { vendor: 'google', architecture: 'swiftshader', device: '', description: 'SwiftShader driver 5.0.0' }, isFallbackAdapter: true }) });
    const info = await initFastestBackend();
    expect(info.name).toBe('wasm');
    expect(info.fallbackReason).toBe('webgpu: the only WebGPU adapter is SwiftShader driver 5.0.0, a software renderer slower than WASM');
  });

  it('takes WASM where there is no WebGPU or no adapter', async () => {
    withGpu(undefined);
    expect(await initFastestBackend()).toEqual({ name: 'wasm', fallbackReason: 'webgpu: no WebGPU in this runtime' });
    withGpu({ requestAdapter: async () => null });
    expect(await initFastestBackend()).toEqual({ name: 'wasm', fallbackReason: 'webgpu: no WebGPU adapter' });
  });
});
