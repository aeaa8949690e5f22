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

/**
 * A text file's bytes as a string, refusing what is not UTF-8: a UTF-16/UTF-32 file with
 * `checkTextEncoding`'s sentence, and any other invalid byte sequence (a file saved as Latin-1 or
 * Windows-1252, say) with the 1-based line it is on, where a lenient decoder would silently turn
 * it into U+FFFD. A UTF-8 byte-order mark is dropped. The bytes are decoded once; only a file
 * that fails is scanned again to find the line.
 */
export function decodeUtf8Text(bytes: Uint8Array, file: string): string {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    // UTF-16/UTF-32 say so in their first bytes, which decode leniently for the check.
    checkTextEncoding(new TextDecoder().decode(bytes.subarray(0, 256)), file);
    throw invalidUtf8(bytes, file);
  }
  checkTextEncoding(text, file);
  return text;
}

function invalidUtf8(bytes: Uint8Array, file: string): UserError {
  const at = firstInvalidUtf8(bytes);
  if (at === bytes.length) return new UserError(`${file} is not valid UTF-8; save the file as UTF-8.`, { file });
  const lineStart = at === 0 ? 0 : bytes.lastIndexOf(0x0a, at - 1) + 1;
  let line = 1;
  for (let i = bytes.indexOf(0x0a); i !== -1 && i < lineStart; i = bytes.indexOf(0x0a, i + 1)) line++;
  // Counted in code points, as an editor's column is.
  const column = [...new TextDecoder().decode(bytes.subarray(lineStart, at))].length + 1;
  const hex = bytes[at].toString(16).toUpperCase().padStart(2, '0');
  return new UserError(
    `${file} line ${line} is not valid UTF-8 (byte 0x${hex} at column ${column}, as in a file saved as Latin-1 or Windows-1252); save the file as UTF-8.`,
    { file, line },
  );
}

/**
 * The offset of the first byte that starts an invalid UTF-8 sequence, by the rules of the WHATWG
 * decoder that TextDecoder follows (no overlong forms, no surrogates, nothing past U+10FFFF, no
 * sequence cut short); bytes.length when there is none.
 */
export function firstInvalidUtf8(bytes: Uint8Array): number {
  const n = bytes.length;
  let i = 0;
  while (i < n) {
    const b = bytes[i];
    if (b < 0x80) {
      i++;
      continue;
    }
    let need: number;
    let lo = 0x80;
    let hi = 0xbf;
    if (b >= 0xc2 && b <= 0xdf) need = 1;
    else if (b >= 0xe0 && b <= 0xef) {
      need = 2;
      if (b === 0xe0) lo = 0xa0;
      if (b === 0xed) hi = 0x9f;
    } else if (b >= 0xf0 && b <= 0xf4) {
      need = 3;
      if (b === 0xf0) lo = 0x90;
      if (b === 0xf4) hi = 0x8f;
    } else return i;
    for (let k = 1; k <= need; k++) {
      const c = i + k < n ? bytes[i + k] : -1;
      if (c < (k === 1 ? lo : 0x80) || c > (k === 1 ? hi : 0xbf)) return i;
    }
    i += need + 1;
  }
  return n;
}
