/**
 * The one kind of error meant for people: bad input, a missing file, an unsupported model.
 * Its message is a complete sentence that names the file and, where it applies, the line or field.
 * The CLI prints the message alone; the UI shows it in place. Anything else is a bug.
 */
export class UserError extends Error {
  readonly file?: string;
  readonly line?: number;
  readonly field?: string;

  constructor(message: string, where: { file?: string; line?: number; field?: string } = {}) {
    super(message);
    this.name = 'UserError';
    this.file = where.file;
    this.line = where.line;
    this.field = where.field;
  }
}

export function isUserError(e: unknown): e is UserError {
  return e instanceof UserError;
}

/** The CPU and WASM backends throw when an allocation fails; these are the shapes that error takes. */
export function isAllocationError(e: unknown): boolean {
  if (e instanceof RangeError) return true;
  const message = e instanceof Error ? e.message : String(e);
  return /out of memory|\bOOM\b|allocation failed|enlarge memory/i.test(message);
}

/**
 * The encoding of a text file that was decoded as UTF-8 but was saved as UTF-16 or UTF-32 (as
 * Windows editors and PowerShell's `>` do), or null when nothing says so. Decoding such a file as
 * UTF-8 turns its byte-order mark into two U+FFFD characters and puts a NUL beside every ASCII
 * character, so either sign in the first few characters gives it away; real UTF-8 JSON has neither.
 */
export function wrongTextEncoding(text: string): 'UTF-16' | 'UTF-32' | null {
  const head = text.slice(0, 64);
  const bom = head.startsWith('\uFFFD\uFFFD') ? 2 : head.startsWith('\0\0\uFFFD\uFFFD') ? 4 : 0;
  const nuls = (head.match(/\0/g) ?? []).length;
  if (bom === 4) return 'UTF-32';
  // After the mark: "{\0\0\0" (UTF-32LE) or "{\0" / "\0{" (UTF-16) patterns.
  const body = head.slice(bom);
  if (/^(\0\0\0[^\0]|[^\0]\0\0\0)/.test(body) || (bom === 2 && body.startsWith('\0\0'))) return 'UTF-32';
  if (/^(\0[^\0]|[^\0]\0)/.test(body) || (bom === 2 && nuls > 0)) return 'UTF-16';
  if (nuls > 0 && nuls * 4 >= head.length) return 'UTF-16';
  return null;
}

/** Refuses text decoded from a UTF-16/UTF-32 file with a sentence naming the file and its encoding. */
export function checkTextEncoding(text: string, file: string): void {
  const encoding = wrongTextEncoding(text);
  if (encoding) throw new UserError(`${file} is ${encoding}; save it as UTF-8.`, { file });
}
