import { UserError } from '../engine/errors.ts';

/** `--key value`, `--key=value` and bare `--flag` (for the names in `booleans`), plus positionals. */
export interface ParsedArgs {
  positionals: string[];
  flags: Map<string, string>;
}

export function parseArgs(argv: string[], command: string, booleans: readonly string[] = []): ParsedArgs {
  const positionals: string[] = [];
  const flags = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (!arg.startsWith('--')) {
      positionals.push(arg);
      continue;
    }
    const eq = arg.indexOf('=');
    const key = eq > 0 ? arg.slice(2, eq) : arg.slice(2);
    if (!key) throw new UserError(`finetune ${command}: "${arg}" is not a flag.`);
    if (flags.has(key)) throw new UserError(`finetune ${command}: --${key} is given twice.`);
    if (eq > 0) flags.set(key, arg.slice(eq + 1));
    else if (booleans.includes(key)) flags.set(key, 'true');
    else {
      const value = argv[i + 1];
      if (value === undefined || (value.startsWith('--') && !/^--?\d/.test(value))) {
        throw new UserError(`finetune ${command}: --${key} needs a value.`);
      }
      flags.set(key, value);
      i++;
    }
  }
  return { positionals, flags };
}

/** Refuses any flag the command does not know, naming the ones it does. */
export function checkFlags(args: ParsedArgs, command: string, known: readonly string[]): void {
  for (const key of args.flags.keys()) {
    if (!known.includes(key)) {
      throw new UserError(`finetune ${command}: unknown flag --${key} (it takes ${known.map((k) => `--${k}`).join(', ')}).`);
    }
  }
}

export function required(args: ParsedArgs, command: string, key: string): string {
  const v = args.flags.get(key);
  if (v === undefined) throw new UserError(`finetune ${command}: --${key} is required.`);
  return v;
}

export function numberFlag(args: ParsedArgs, command: string, key: string, opts: { integer?: boolean; min?: number } = {}): number | undefined {
  const raw = args.flags.get(key);
  if (raw === undefined) return undefined;
  const v = Number(raw);
  if (!Number.isFinite(v) || (opts.integer && !Number.isInteger(v)) || (opts.min !== undefined && v < opts.min)) {
    const what = opts.integer ? 'an integer' : 'a number';
    throw new UserError(`finetune ${command}: --${key} must be ${what}${opts.min !== undefined ? ` of at least ${opts.min}` : ''} (got "${raw}").`);
  }
  return v;
}
