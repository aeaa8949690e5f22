/**
 * Watching the WebGPU device during training. WebGPU reports an allocation that failed and a
 * device that was lost asynchronously, not as exceptions: a failed buffer is silently invalid and
 * the step's results are garbage. So each optimizer step runs inside an 'out-of-memory' error
 * scope, and `device.lost` is watched, and the loop stops at the next step boundary either way.
 * On the CPU and WASM backends an allocation failure throws, and the guard does nothing.
 */
import * as tf from '@tensorflow/tfjs';
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';

/** What went wrong on the device; an allocation failure also says which optimizer step (1-based) it hit. */
export type DeviceProblem = { kind: 'lost'; detail: string } | { kind: 'oom'; detail: string; step: number };

export interface DeviceGuard {
  /** Called before step `step` runs: closes the last step's scope and opens this one's; true stops the run. */
  beforeStep(step: number): boolean;
  /** Called before checkpoint `step` is written: whether its step ran clean, so no garbage is saved. Opens no scope after `finish`. */
  check(step: number): Promise<DeviceProblem | null>;
  /** Called once when the loop is over, also after an exception (`failed`); balances the scopes. */
  finish(failed: boolean): Promise<DeviceProblem | null>;
}

/** How long a failure waits for `device.lost` to settle. */
const LOSS_GRACE_MS = 200;

/** Whether `device` is lost, or is within a moment: the loss may settle just after the error it caused. */
export async function lostSoon(device: GPUDevice | null): Promise<boolean> {
  if (device === null) return false;
  let lost = false;
  await Promise.race([device.lost.then(() => (lost = true)), new Promise((resolve) => setTimeout(resolve, LOSS_GRACE_MS))]);
  return lost;
}

/** The GPUDevice under the active tfjs backend, or null off WebGPU. */
export function activeDevice(): GPUDevice | null {
  return tf.getBackend() === 'webgpu' ? (tf.backend() as WebGPUBackend).device : null;
}

export function guardDevice(device: GPUDevice | null): DeviceGuard {
  if (device === null) return { beforeStep: () => false, check: async () => null, finish: async () => null };
  let problem: DeviceProblem | null = null;
  /** The step the open scope (or the last one) watches. */
  let step = 0;
  let scopeOpen = false;
  let finished = false;
  let popped: Promise<void> = Promise.resolve();
  device.lost.then((info) => {
    problem = { kind: 'lost', detail: info.message || info.reason || 'unknown reason' };
  });
  const closeScope = () => {
    if (!scopeOpen) return;
    scopeOpen = false;
    // Popped now, in stack order; the answer, about this scope's step, arrives later.
    const watched = step;
    const answer = device.popErrorScope().then(
      (error) => {
        if (error && problem === null) problem = { kind: 'oom', detail: error.message, step: watched };
      },
      // A lost device has no scopes left to pop; the loss itself is what gets reported.
      () => undefined,
    );
    popped = popped.then(() => answer);
  };
  const openScope = (forStep: number) => {
    if (finished) return;
    step = forStep;
    device.pushErrorScope('out-of-memory');
    scopeOpen = true;
  };
  return {
    beforeStep(next) {
      closeScope();
      if (problem !== null) return true;
      openScope(next);
      return false;
    },
    async check(current) {
      closeScope();
      await popped;
      if (problem === null) openScope(current);
      return problem;
    },
    async finish(failed) {
      finished = true;
      closeScope();
      await popped;
      // The listener above was registered first, so it has run once lostSoon answers.
      if (failed && problem === null) await lostSoon(device);
      return problem;
    },
  };
}
