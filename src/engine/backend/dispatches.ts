/**
 * Counting WebGPU compute dispatches, for tests and the benchmark: tfjs records a dispatch per
 * kernel as ops run, so wrapping GPUComputePassEncoder.dispatchWorkgroups while `f` runs counts
 * exactly the dispatches `f` made. Zero where there is no WebGPU.
 */
export function countDispatches<T>(f: () => T): { result: T; dispatches: number } {
  const proto = (globalThis as { GPUComputePassEncoder?: { prototype: GPUComputePassEncoder } }).GPUComputePassEncoder?.prototype;
  if (proto == null) return { result: f(), dispatches: 0 };
  const original = proto.dispatchWorkgroups;
  let dispatches = 0;
  proto.dispatchWorkgroups = function (this: GPUComputePassEncoder, ...args: Parameters<GPUComputePassEncoder['dispatchWorkgroups']>) {
    dispatches++;
    return original.apply(this, args);
  };
  try {
    const result = f();
    return { result, dispatches };
  } finally {
    proto.dispatchWorkgroups = original;
  }
}
