/**
 * Picking and initialising the tfjs backend. Runs unchanged in a page, a Web Worker and Node:
 * nothing here touches the DOM, and Node-only modules are reached only through a dynamic import
 * on the Node path, so bundlers never pull them into browser code.
 *
 * In Node, WebGPU exists only after `installNodeWebGPU()` from `./node_webgpu.ts` has put Dawn
 * on `navigator.gpu`; call that first, then `initBackend('webgpu')`.
 *
 * tfjs-core alone registers no gradients (the umbrella `@tensorflow/tfjs` package does), so
 * `initBackend` also registers them; anything that differentiates must call it first.
 */
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-cpu';
import '@tensorflow/tfjs-backend-wasm';
import '@tensorflow/tfjs-backend-webgpu';
import { setWasmPaths } from '@tensorflow/tfjs-backend-wasm';
import { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import { boundGpuBufferPool } from './gpu_pool.ts';

export type BackendName = 'webgpu' | 'wasm' | 'cpu';

export interface AdapterDescription {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  /** A software or otherwise degraded adapter (SwiftShader is one): correct but slow. */
  isFallbackAdapter?: boolean;
}

/** The limits the device was granted (not the adapter's defaults), which bound tensor sizes. */
export interface DeviceLimits {
  maxBufferSize: number;
  maxStorageBufferBindingSize: number;
  maxStorageBuffersPerShaderStage: number;
  maxComputeWorkgroupStorageSize: number;
  maxComputeInvocationsPerWorkgroup: number;
  maxComputeWorkgroupSizeX: number;
  maxComputeWorkgroupsPerDimension: number;
}

export interface BackendInfo {
  name: BackendName;
  adapter?: AdapterDescription;
  limits?: DeviceLimits;
  /** Optional WebGPU features enabled on the device (e.g. 'shader-f16', 'subgroups'). */
  features?: string[];
  /** Why each better backend than `name` was not used, most preferred first. */
  fallbackReason?: string;
}

export interface InitOptions {
  /**
   * Folder (URL prefix in a page, file path in Node, ending in '/') holding the tfjs-backend-wasm
   * `.wasm` binaries. Pages must set it, since a bundle moves the script away from them; Node
   * defaults to the installed package's `dist/`.
   */
  wasmPaths?: string;
}

const ORDER: readonly BackendName[] = ['webgpu', 'wasm', 'cpu'];

/** Same priority tfjs gives its own WebGPU factory, so `tf.ready()` still prefers it. */
const WEBGPU_PRIORITY = 3;

/** Features our kernels or profiling can use when present; none is required. */
const OPTIONAL_FEATURES: readonly GPUFeatureName[] = ['shader-f16', 'subgroups', 'timestamp-query'];

type Attempt = { ok: true; info: BackendInfo } | { ok: false; reason: string };

/**
 * Makes `preferred` (or the best available, for 'auto') the active tfjs backend, falling back
 * along webgpu → wasm → cpu. An explicit preference starts the chain there, so a caller that
 * needs a particular backend must check `info.name`. Calling it again for a backend that is
 * already initialised reuses that backend and the tensors on it.
 */
export async function initBackend(
  preferred: BackendName | 'auto' = 'auto',
  opts: InitOptions = {},
): Promise<BackendInfo> {
  const start = preferred === 'auto' ? 0 : ORDER.indexOf(preferred);
  if (start < 0) throw new Error(`Unknown backend '${preferred}'; expected one of auto, ${ORDER.join(', ')}.`);
  const reasons: string[] = [];
  for (const name of ORDER.slice(start)) {
    const attempt = await tryBackend(name, opts);
    if (attempt.ok) {
      return reasons.length > 0 ? { ...attempt.info, fallbackReason: reasons.join('; ') } : attempt.info;
    }
    reasons.push(`${name}: ${attempt.reason}`);
  }
  // The CPU backend ships with tfjs-core's registry and has no failure mode short of a broken install.
  throw new Error(`No tfjs backend could be initialised (${reasons.join('; ')}).`);
}

/**
 * Whether an adapter renders in software: a fallback adapter, or a CPU driver by its name
 * (SwiftShader, llvmpipe, lavapipe, Microsoft's WARP / Basic Render Driver). Such an adapter is
 * correct but slower than the WASM backend on the same CPU.
 */
export function isSoftwareAdapter(a: AdapterDescription): boolean {
  if (a.isFallbackAdapter === true) return true;
  return /swiftshader|llvmpipe|lavapipe|softpipe|microsoft basic render|\bwarp\b/i.test(`${a.vendor} ${a.architecture} ${a.device} ${a.description}`);
}

/**
 * Makes the fastest backend here the active one: WebGPU on a hardware adapter, else WASM, else
 * the CPU. Unlike `initBackend('auto')` it passes over a software adapter (`isSoftwareAdapter`)
 * for WASM. `fallbackReason` says why each faster backend was not used.
 */
export async function initFastestBackend(opts: InitOptions = {}): Promise<BackendInfo> {
  const gpu = (globalThis as { navigator?: { gpu?: GPU } }).navigator?.gpu;
  let skipped: string;
  if (gpu == null) skipped = 'no WebGPU in this runtime';
  else {
    const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' }).catch(() => null);
    const description = adapter == null ? null : describeAdapter(adapter.info, (adapter as { isFallbackAdapter?: boolean }).isFallbackAdapter);
    if (description == null) skipped = 'no WebGPU adapter';
    else if (isSoftwareAdapter(description)) {
      skipped = `the only WebGPU adapter is ${adapterName(description)}, a software renderer slower than WASM`;
    } else return initBackend('webgpu', opts);
  }
  const info = await initBackend('wasm', opts);
  return { ...info, fallbackReason: info.fallbackReason ? `webgpu: ${skipped}; ${info.fallbackReason}` : `webgpu: ${skipped}` };
}

/** An adapter as people know it: its description, else its vendor and architecture. */
export function adapterName(a: AdapterDescription): string {
  return a.description.trim() || [a.vendor, a.architecture].filter((s) => s.trim() !== '').join(' ') || a.device.trim() || 'an unnamed adapter';
}

function isNode(): boolean {
  return (globalThis as { process?: { versions?: { node?: string } } }).process?.versions?.node != null;
}

async function tryBackend(name: BackendName, opts: InitOptions): Promise<Attempt> {
  try {
    if (name === 'webgpu') return await tryWebGPU();
    if (name === 'wasm') return await tryWasm(opts);
    return (await tf.setBackend('cpu'))
      ? { ok: true, info: { name: 'cpu' } }
      : { ok: false, reason: 'tfjs could not initialise the CPU backend' };
  } catch (e) {
    return { ok: false, reason: e instanceof Error ? e.message : String(e) };
  }
}

async function tryWasm(opts: InitOptions): Promise<Attempt> {
  // setWasmPaths must precede the backend's first initialisation, and may not follow a failed one.
  if (tf.findBackend('wasm') == null) {
    const paths = opts.wasmPaths ?? (await nodeWasmDir());
    if (paths != null) setWasmPaths(paths);
  }
  shareWasmClones();
  // tfjs swallows the init error (it logs it as a console warning) and answers false.
  return (await tf.setBackend('wasm'))
    ? { ok: true, info: { name: 'wasm' } }
    : { ok: false, reason: 'the WASM backend failed to initialise (tfjs logged the cause as a warning)' };
}

/**
 * tfjs-wasm's Identity kernel (what tf.clone runs, and so every tensor the tape saves for a
 * backward pass) copies the buffer, where the CPU and WebGPU backends share it by reference
 * count. Tensors are immutable, so sharing is safe, and it is what keeps WASM's activation
 * memory at the other backends' level.
 */
function shareWasmClones(): void {
  const kernel = tf.getKernel('Identity', 'wasm');
  if (kernel === undefined || (kernel as { shared?: boolean }).shared) return;
  tf.unregisterKernel('Identity', 'wasm');
  tf.registerKernel({
    kernelName: 'Identity',
    backendName: 'wasm',
    kernelFunc: ({ inputs, backend }) => {
      const x = inputs.x as tf.TensorInfo;
      if (x.dtype === 'string') return kernel.kernelFunc({ inputs, backend, attrs: {} }) as tf.TensorInfo;
      (backend as unknown as { incRef(dataId: object): void }).incRef(x.dataId);
      return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
    },
    shared: true,
  } as tf.KernelConfig);
}

/** The installed tfjs-backend-wasm's `dist/` in Node, where the `.wasm` files are; undefined elsewhere. */
async function nodeWasmDir(): Promise<string | undefined> {
  if (!isNode()) return undefined;
  // A computed specifier keeps bundlers from trying to resolve a Node builtin for the browser.
  const specifier = 'node:module';
  const { createRequire } = (await import(/* @vite-ignore */ specifier)) as typeof import('node:module');
  const pkg = createRequire(import.meta.url).resolve('@tensorflow/tfjs-backend-wasm/package.json');
  return pkg.slice(0, pkg.length - 'package.json'.length) + 'dist/';
}

async function tryWebGPU(): Promise<Attempt> {
  const existing = tf.findBackend('webgpu');
  if (existing instanceof WebGPUBackend) {
    if (!(await tf.setBackend('webgpu'))) return { ok: false, reason: 'tfjs could not switch to the existing WebGPU backend' };
    return { ok: true, info: describeExisting(existing) };
  }

  const gpu = (globalThis as { navigator?: { gpu?: GPU } }).navigator?.gpu;
  if (gpu == null) {
    return { ok: false, reason: 'navigator.gpu is not available (no WebGPU in this runtime; in Node, call installNodeWebGPU() first)' };
  }
  const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (adapter == null) return { ok: false, reason: 'navigator.gpu.requestAdapter() returned no adapter' };

  const features = OPTIONAL_FEATURES.filter((f) => adapter.features.has(f));
  const a = adapter.limits;
  // The default device limits (128 MiB bindings, 256 MiB buffers) are far below what a model's
  // embedding or a chunk of logits needs, so ask for everything the adapter offers.
  const device = await adapter.requestDevice({
    requiredFeatures: features,
    requiredLimits: {
      maxBufferSize: a.maxBufferSize,
      maxStorageBufferBindingSize: a.maxStorageBufferBindingSize,
      maxStorageBuffersPerShaderStage: a.maxStorageBuffersPerShaderStage,
      maxComputeWorkgroupStorageSize: a.maxComputeWorkgroupStorageSize,
      maxComputeInvocationsPerWorkgroup: a.maxComputeInvocationsPerWorkgroup,
      maxComputeWorkgroupSizeX: a.maxComputeWorkgroupSizeX,
      maxComputeWorkgroupsPerDimension: a.maxComputeWorkgroupsPerDimension,
    },
  });
  const adapterInfo = adapter.info;

  // tfjs's own factory asks for a device with its choice of limits, and in Node it never
  // registers at all (navigator.gpu did not exist when the package was imported), so ours
  // replaces it. Kernels are keyed by the name 'webgpu' and stay registered.
  if (tf.findBackendFactory('webgpu') != null) tf.removeBackend('webgpu');
  tf.registerBackend('webgpu', () => new WebGPUBackend(device, adapterInfo), WEBGPU_PRIORITY);
  if (!(await tf.setBackend('webgpu'))) {
    device.destroy();
    return { ok: false, reason: 'tfjs could not create its WebGPU backend on the device (tfjs logged the cause as a warning)' };
  }
  boundGpuBufferPool();
  return {
    ok: true,
    info: { name: 'webgpu', adapter: describeAdapter(adapterInfo), limits: describeLimits(device.limits), features },
  };
}

/**
 * Info for a WebGPU backend initialised earlier. GPUDevice.adapterInfo is newer than some
 * runtimes (Dawn for Node lacks it); then only the vendor and architecture tfjs copied remain,
 * in fields its typings mark private.
 */
function describeExisting(backend: WebGPUBackend): BackendInfo {
  const device = backend.device;
  const info = (device as GPUDevice & { adapterInfo?: GPUAdapterInfo }).adapterInfo;
  const kept = backend.adapterInfo as unknown as { vendor?: string; architecture?: string };
  const adapter = info != null
    ? describeAdapter(info)
    : { vendor: kept.vendor ?? '', architecture: kept.architecture ?? '', device: '', description: '' };
  const features = OPTIONAL_FEATURES.filter((f) => device.features.has(f));
  return { name: 'webgpu', adapter, limits: describeLimits(device.limits), features };
}

/** `adapterFallback`: GPUAdapter.isFallbackAdapter, where a runtime has it there rather than on the info. */
function describeAdapter(info: GPUAdapterInfo, adapterFallback?: boolean): AdapterDescription {
  const out: AdapterDescription = {
    vendor: info.vendor,
    architecture: info.architecture,
    device: info.device,
    description: info.description,
  };
  const fallback = (info as GPUAdapterInfo & { isFallbackAdapter?: boolean }).isFallbackAdapter ?? adapterFallback;
  if (fallback != null) out.isFallbackAdapter = fallback;
  return out;
}

function describeLimits(l: GPUSupportedLimits): DeviceLimits {
  return {
    maxBufferSize: l.maxBufferSize,
    maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
    maxStorageBuffersPerShaderStage: l.maxStorageBuffersPerShaderStage,
    maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
    maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
    maxComputeWorkgroupSizeX: l.maxComputeWorkgroupSizeX,
    maxComputeWorkgroupsPerDimension: l.maxComputeWorkgroupsPerDimension,
  };
}
