/**
 * Physical memory of the active tfjs backend. `tf.memory().numBytes` adds up tensor handles, so
 * a clone or a reshape that shares its buffer counts twice, and it knows nothing of pooled GPU
 * buffers. This meter counts each backend buffer once, from the moment the backend stores it to
 * the moment it frees it, and keeps the peak; on WebGPU it also reads the buffer pool (tfjs
 * pools buffers by exact size and frees none until the backend goes), on WASM the heap.
 */
import * as tf from '@tensorflow/tfjs';

export interface MemoryReading {
  /** Bytes of live backend buffers, each counted once. */
  bytes: number;
  /** The most `bytes` has been since the meter started or was last reset. */
  peak: number;
  /** WebGPU: bytes of every GPU buffer tfjs holds, in use or pooled. WASM: the heap's size. */
  reserved: number | null;
}

export interface MemoryMeter {
  read(): MemoryReading;
  /** Starts a new peak from the current level. */
  resetPeak(): void;
  /** Restores the backend's own bookkeeping. */
  dispose(): void;
}

interface Storage {
  set(dataId: object, value: unknown): void;
  delete(dataId: object): boolean;
  has(dataId: object): boolean;
}

const BYTES: Record<string, number> = { float32: 4, int32: 4, bool: 1, complex64: 8 };

/** Bytes a backend's record of one buffer stands for. */
function recordBytes(value: unknown): number {
  const v = value as { values?: ArrayLike<number> & { byteLength?: number }; shape?: number[]; dtype?: string; size?: number };
  if (v.values && typeof v.values.byteLength === 'number') return v.values.byteLength;
  if (Array.isArray(v.shape) && v.dtype) return v.shape.reduce((a, b) => a * b, 1) * (BYTES[v.dtype] ?? 4);
  return typeof v.size === 'number' ? v.size : 0;
}

/**
 * Starts metering the active backend. Buffers that existed before are counted from their
 * records where the backend lets them be enumerated, else they count as 0 until replaced; the
 * meter is meant for differences (a step's peak above what was resident before it).
 */
export function meterBackendMemory(): MemoryMeter {
  const backend = tf.backend() as unknown as { data?: Storage; dataIdMap?: Storage; tensorMap?: Storage };
  // The buffer table: WASM's dataIdMap, WebGPU's tensorMap, the CPU backend's data.
  const storage = backend.dataIdMap ?? backend.tensorMap ?? backend.data;
  if (!storage) throw new Error(`meterBackendMemory: the ${tf.getBackend()} backend keeps no buffer table this meter knows`);
  const sizes = new WeakMap<object, number>();
  let bytes = 0;
  let peak = 0;
  const set = storage.set;
  const del = storage.delete;
  storage.set = function (dataId: object, value: unknown) {
    const before = sizes.get(dataId) ?? 0;
    const after = recordBytes(value);
    sizes.set(dataId, after);
    bytes += after - before;
    if (bytes > peak) peak = bytes;
    return set.call(this, dataId, value);
  };
  storage.delete = function (dataId: object) {
    bytes -= sizes.get(dataId) ?? 0;
    sizes.delete(dataId);
    return del.call(this, dataId);
  };
  return {
    read: () => ({
      bytes,
      peak,
      reserved: reservedBytes(),
    }),
    resetPeak: () => {
      peak = bytes;
    },
    dispose: () => {
      storage.set = set;
      storage.delete = del;
    },
  };
}

/**
 * What the backend holds right now, as a person would count it: WebGPU's buffers (in use and
 * pooled), WASM's heap, else the bytes of live tensors.
 */
export function backendMemoryBytes(): number {
  return reservedBytes() ?? tf.memory().numBytes;
}

/** WebGPU: every GPU buffer tfjs holds, in use or pooled. WASM: the heap's size. Else null. */
function reservedBytes(): number | null {
  const backend = tf.backend() as unknown as { bufferManager?: { numBytesAllocated: number }; wasm?: { HEAPU8: Uint8Array } };
  if (backend.bufferManager) return backend.bufferManager.numBytesAllocated;
  return backend.wasm ? backend.wasm.HEAPU8.byteLength : null;
}
