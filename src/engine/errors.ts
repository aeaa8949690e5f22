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
