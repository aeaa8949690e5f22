/**
 * Watching the WebGPU device during training. WebGPU reports an allocation that failed and a
 * device that was lost asynchronously, not as exceptions: a failed buffer is silently invalid and
 * the step's results are garbage. So each optimizer step runs inside an 'out-of-memory' error
 * scope, and `device.lost` is watched, and the loop stops at the next step boundary either way.
 * On the CPU and WASM backends an allocation failure throws, and the guard does nothing.
 */
import * as tf from '@tensorflow/tfjs';
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';

export type DeviceProblem = { kind: 'lost' | 'oom'; detail: string };

export interface DeviceGuard {
  /** Called before each step: closes the last step's scope and opens this one's; true stops the run. */
  beforeStep(): boolean;
  /** Called before a checkpoint is written: whether this step so far ran clean, so no garbage is saved. Opens no scope after `finish`. */
  check(): Promise<DeviceProblem | null>;
  /** Called once when the loop is over, also after an exception (`failed`); balances the scopes. */
  finish(failed: boolean): Promise<DeviceProblem | null>;
}

/** How long a failed step waits for `device.lost`, which may settle just after the error it caused. */
const LOSS_GRACE_MS = 200;

/** The GPUDevice under the active tfjs backend, or null off WebGPU. */
export function activeDevice(): GPUDevice | null {
  return tf.getBackend() === 'webgpu' ? (tf.backend() as WebGPUBackend).device : null;
}

export function guardDevice(device: GPUDevice | null): DeviceGuard {
  if (device === null) return { beforeStep: () => false, check: async () => null, finish: async () => null };
  let problem: DeviceProblem | null = null;
  let scopeOpen = false;
  let finished = false;
  let popped: Promise<void> = Promise.resolve();
  const lost = device.lost.then((info) => {
    problem = { kind: 'lost', detail: info.message || info.reason || 'unknown reason' };
  });
  const closeScope = () => {
    if (!scopeOpen) return;
    scopeOpen = false;
    // Popped now, in stack order; the answer arrives later.
    const answer = device.popErrorScope().then(
      (error) => {
        if (error && problem === null) problem = { kind: 'oom', detail: error.message };
      },
      // A lost device has no scopes left to pop; the loss itself is what gets reported.
      () => undefined,
    );
    popped = popped.then(() => answer);
  };
  const openScope = () => {
    if (finished) return;
    device.pushErrorScope('out-of-memory');
    scopeOpen = true;
  };
  return {
    beforeStep() {
      closeScope();
      if (problem !== null) return true;
      openScope();
      return false;
    },
    async check() {
      closeScope();
      await popped;
      if (problem === null) openScope();
      return problem;
    },
    async finish(failed) {
      finished = true;
      closeScope();
      await popped;
      if (failed && problem === null) await Promise.race([lost, new Promise((r) => setTimeout(r, LOSS_GRACE_MS))]);
      return problem;
    },
  };
}
