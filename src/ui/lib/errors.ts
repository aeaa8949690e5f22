/**
 * What the page shows when something fails. A `UserError` from the Worker arrives through comlink
 * as an Error with the same name and message, and its message is shown as it is. Anything else is
 * a bug or the browser giving up (a lost GPU device, memory): the page says so in words and
 * leaves the stack trace to the console.
 */

export interface ShownError {
  message: string;
  /** The recipe field the error is about, when the Worker named one. */
  field?: string;
  /** True for errors meant for people (UserError); false for failures the page explains. */
  user: boolean;
}

function firstLine(s: string): string {
  const line = s.split('\n')[0].trim();
  return line.length > 500 ? `${line.slice(0, 500)}…` : line;
}

export function describeError(e: unknown): ShownError {
  const err = e as { name?: unknown; message?: unknown; field?: unknown } | null;
  const name = typeof err?.name === 'string' ? err.name : '';
  const raw = typeof err?.message === 'string' ? err.message : typeof e === 'string' ? e : String(e);
  const message = firstLine(raw);
  const field = typeof err?.field === 'string' ? err.field : undefined;
  // HubError is the page's own: a download problem already put in words (src/ui/model/hub.ts).
  if (name === 'UserError' || name === 'HubError') return { message, field, user: true };
  if (/device (was )?lost|GPUDevice.*lost|Device is lost/i.test(raw)) {
    return { message: 'The GPU device was lost (the driver reset or another tab took the GPU). Reload the page to start again; a run resumes from its last checkpoint.', user: false };
  }
  if (/out of memory|OOM|Failed to allocate|allocation failed|RangeError: Array buffer allocation/i.test(raw)) {
    return { message: `The browser ran out of memory (${message}). Try a smaller model, a shorter max_length or a smaller batch size.`, user: false };
  }
  if (/Failed to fetch|NetworkError|Load failed/i.test(raw)) {
    return { message: `A network request failed (${message}). Check your connection and the Hub address in Settings.`, user: false };
  }
  return { message: `Something went wrong: ${message}`, user: false };
}

export function errorText(e: unknown): string {
  return describeError(e).message;
}
