/** The backend line in the page's header, from what the Worker's `init` reports. */
import type { BackendInfo } from '../../engine/backend/index.ts';
import { formatBytes } from './format.ts';

export interface BackendSummary {
  /** "WebGPU", "WASM" or "CPU". */
  name: string;
  /** The GPU as the browser names it, with "(software)" for a fallback adapter such as SwiftShader. */
  adapter: string | null;
  /** Device limits worth knowing, as label/value pairs. */
  limits: [string, string][];
  /** Said plainly when training will be slow. */
  warning: string | null;
}

const NAMES = { webgpu: 'WebGPU', wasm: 'WASM', cpu: 'CPU' } as const;

export function summarizeBackend(info: BackendInfo): BackendSummary {
  const name = NAMES[info.name];
  if (info.name !== 'webgpu') {
    const warning = info.name === 'wasm'
      ? 'WebGPU is not available in this browser; training runs on WASM, much slower.'
      : 'WebGPU is not available in this browser and WASM could not start; training runs on the CPU backend, very slowly.';
    return { name, adapter: null, limits: [], warning };
  }
  const a = info.adapter;
  const parts = a ? [a.description, a.device].filter((s) => s && s.trim() !== '') : [];
  const swiftshader = /swiftshader/i.test(`${a?.description} ${a?.architecture} ${a?.device}`);
  const software = a?.isFallbackAdapter === true || swiftshader;
  // Chrome often leaves the description empty; then vendor and architecture are all there is.
  let adapter = parts[0] ?? (swiftshader ? 'SwiftShader' : a ? [a.vendor, a.architecture].filter(Boolean).join(' ') : '');
  if (!adapter) adapter = 'unnamed adapter';
  if (software) adapter += ' (software)';
  const limits: [string, string][] = [];
  const l = info.limits;
  if (l) {
    limits.push(['max buffer', formatBytes(l.maxBufferSize)]);
    limits.push(['max storage binding', formatBytes(l.maxStorageBufferBindingSize)]);
    limits.push(['storage buffers per stage', String(l.maxStorageBuffersPerShaderStage)]);
    limits.push(['workgroup memory', formatBytes(l.maxComputeWorkgroupStorageSize)]);
    limits.push(['invocations per workgroup', String(l.maxComputeInvocationsPerWorkgroup)]);
  }
  if (info.features && info.features.length > 0) limits.push(['features', info.features.join(', ')]);
  const warning = software ? 'This is a software GPU (no hardware acceleration was offered): training works but is slow.' : null;
  return { name, adapter, limits, warning };
}
