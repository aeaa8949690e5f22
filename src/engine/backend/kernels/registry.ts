import * as tf from '@tensorflow/tfjs';

/** Registers each kernel not registered yet, so importing a kernel module twice is harmless. */
export function registerKernels(kernels: Iterable<tf.KernelConfig>): void {
  for (const k of kernels) if (tf.getKernel(k.kernelName, k.backendName) == null) tf.registerKernel(k);
}

/** Whether the active backend has our kernel `name` and every input is float32. */
export function hasKernel(name: string, inputs: tf.Tensor[] = []): boolean {
  return tf.getKernel(name, tf.getBackend()) != null && inputs.every((t) => t.dtype === 'float32');
}
