/**
 * Bounds on tfjs-webgpu's buffer pool. tfjs keeps every released GPU buffer for reuse, keyed by
 * its exact size, and frees none until the backend goes: a run whose sequence lengths vary, or a
 * second model after the first, leaves the pool holding buffers of sizes it will never ask for
 * again. Here the free part of the pool is capped at the most the backend has had in use at once
 * (so a steady run reuses everything it needs), evicting the sizes used least recently first,
 * and can be emptied outright when a run ends or the model changes.
 */
import * as tf from '@tensorflow/tfjs';

interface BufferManager {
  freeBuffers: Map<string, GPUBuffer[]>;
  numFreeBuffers: number;
  numBytesUsed: number;
  numBytesAllocated: number;
  acquireBuffer(size: number, usage: number, mappedAtCreation?: boolean, reuse?: boolean): GPUBuffer;
  releaseBuffer(buffer: GPUBuffer, reuse?: boolean): void;
  bounded?: boolean;
}

function manager(): BufferManager | null {
  if (tf.getBackend() !== 'webgpu') return null;
  return (tf.backend() as unknown as { bufferManager?: BufferManager }).bufferManager ?? null;
}

/** Destroys free buffers, least recently used sizes first, until at most `keepBytes` are free. */
function evict(m: BufferManager, keepBytes: number, lastUsed: Map<string, number>): void {
  const keys = [...m.freeBuffers.keys()].sort((a, b) => (lastUsed.get(a) ?? 0) - (lastUsed.get(b) ?? 0));
  for (const key of keys) {
    if (m.numBytesAllocated - m.numBytesUsed <= keepBytes) return;
    const list = m.freeBuffers.get(key)!;
    while (list.length > 0 && m.numBytesAllocated - m.numBytesUsed > keepBytes) {
      const buffer = list.pop()!;
      m.numBytesAllocated -= buffer.size;
      m.numFreeBuffers--;
      buffer.destroy();
    }
  }
}

const LAST_USED = new WeakMap<BufferManager, Map<string, number>>();

/** Installs the cap on the active WebGPU backend's pool (once); does nothing elsewhere. */
export function boundGpuBufferPool(): void {
  const m = manager();
  if (!m || m.bounded) return;
  m.bounded = true;
  const lastUsed = new Map<string, number>();
  LAST_USED.set(m, lastUsed);
  let tick = 0;
  let peakUsed = 0;
  const acquire = m.acquireBuffer.bind(m);
  const release = m.releaseBuffer.bind(m);
  m.acquireBuffer = (size, usage, mappedAtCreation, reuse) => {
    lastUsed.set(`${size}_${usage}`, ++tick);
    const buffer = acquire(size, usage, mappedAtCreation, reuse);
    peakUsed = Math.max(peakUsed, m.numBytesUsed);
    return buffer;
  };
  m.releaseBuffer = (buffer, reuse) => {
    release(buffer, reuse);
    if (m.numBytesAllocated - m.numBytesUsed > peakUsed) evict(m, peakUsed, lastUsed);
  };
}

/** Frees every pooled buffer no tensor holds (a run ended, the model changed). */
export function releaseFreeGpuBuffers(): void {
  const m = manager();
  if (m) evict(m, 0, LAST_USED.get(m) ?? new Map());
}
