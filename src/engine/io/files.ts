import { UserError } from '../errors.ts';

/**
 * A folder of files as the engine sees it: a model folder, an adapter folder, a checkpoint.
 * Node reads a directory; the browser wraps dropped or downloaded files. Nothing else in the
 * engine touches the filesystem.
 */
export interface FileSource {
  /** Where the files come from, for messages: a directory path or a name the user recognises. */
  readonly location: string;
  /** File names relative to the folder, with '/' separators. */
  list(): string[];
  has(name: string): boolean;
  read(name: string): Promise<Uint8Array>;
}

/** Files held in memory (dropped in the browser, built by a test, unzipped from a download). */
export function memoryFiles(location: string, files: Record<string, Uint8Array | string>): FileSource {
  const enc = new TextEncoder();
  const map = new Map<string, Uint8Array>();
  for (const [name, content] of Object.entries(files)) {
    map.set(name, typeof content === 'string' ? enc.encode(content) : content);
  }
  return {
    location,
    list: () => [...map.keys()].sort(),
    has: (name) => map.has(name),
    read: async (name) => {
      const bytes = map.get(name);
      if (!bytes) throw new Error(`${location}: no file ${name}`);
      return bytes;
    },
  };
}

/** A file's path inside its folder, for messages. */
export function pathIn(source: FileSource, name: string): string {
  return source.location ? `${source.location.replace(/\/$/, '')}/${name}` : name;
}

export async function readText(source: FileSource, name: string): Promise<string> {
  return new TextDecoder().decode(await source.read(name));
}

/** A JSON file that must hold an object; anything else is one sentence naming the file. */
export async function readJsonObject(source: FileSource, name: string): Promise<Record<string, unknown>> {
  const file = pathIn(source, name);
  let value: unknown;
  try {
    value = JSON.parse(await readText(source, name));
  } catch (e) {
    const why = e instanceof Error ? ` (${e.message})` : '';
    throw new UserError(`${file} is not valid JSON${why}.`, { file });
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new UserError(`${file} must hold a JSON object.`, { file });
  }
  return value as Record<string, unknown>;
}
