/** The time-left estimate the studio and the CLI both show. */

/**
 * Seconds left in a run, from the pace of the steps taken since the run (or its resume) began:
 * `start` is when step `startStep` was current, `now` when `step` is.
 */
export function estimateEta(startStep: number, start: number, step: number, now: number, totalSteps: number): number | null {
  const done = step - startStep;
  if (done <= 0 || totalSteps <= 0 || now <= start) return null;
  const perStep = (now - start) / 1000 / done;
  return Math.max(0, totalSteps - step) * perStep;
}
