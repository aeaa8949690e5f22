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
  /** The whole file. */
  read(name: string): Promise<Uint8Array>;
  /** The file's length in bytes, without reading it. */
  size(name: string): Promise<number>;
  /**
   * Bytes [begin, end) of the file, in a buffer of their own that nothing else references (so a
   * reader may keep or reinterpret it). A range outside the file is a bug in the caller: an Error.
   */
  readRange(name: string, begin: number, end: number): Promise<Uint8Array>;
}

/** File contents held by `memoryFiles`: bytes, text, or a Blob (a dropped File, a cached download). */
export type MemoryFileContent = Uint8Array | string | Blob;

/** Throws unless 0 <= begin <= end <= size, all integers. */
export function checkRange(where: string, begin: number, end: number, size: number): void {
  if (!Number.isSafeInteger(begin) || !Number.isSafeInteger(end) || begin < 0 || begin > end || end > size) {
    throw new Error(`${where}: byte range [${begin}, ${end}) is outside the file (${size} bytes)`);
  }
}

/**
 * Files held in memory (dropped in the browser, built by a test, unzipped from a download).
 * Blob contents are read lazily: `readRange` slices the Blob, so a multi-gigabyte File is never
 * held whole unless `read` asks for all of it.
 */
export function memoryFiles(location: string, files: Record<string, MemoryFileContent>): FileSource {
  const enc = new TextEncoder();
  const map = new Map<string, Uint8Array | Blob>();
  for (const [name, content] of Object.entries(files)) {
    map.set(name, typeof content === 'string' ? enc.encode(content) : content);
  }
  const get = (name: string): Uint8Array | Blob => {
    const content = map.get(name);
    if (content === undefined) throw new Error(`${location}: no file ${name}`);
    return content;
  };
  return {
    location,
    list: () => [...map.keys()].sort(),
    has: (name) => map.has(name),
    read: async (name) => {
      const content = get(name);
      return content instanceof Uint8Array ? content : new Uint8Array(await content.arrayBuffer());
    },
    size: async (name) => {
      const content = get(name);
      return content instanceof Uint8Array ? content.length : content.size;
    },
    readRange: async (name, begin, end) => {
      const content = get(name);
      const size = content instanceof Uint8Array ? content.length : content.size;
      checkRange(`${location}/${name}`, begin, end, size);
      // slice() copies for bytes, and reads only the range for a Blob.
      if (content instanceof Uint8Array) return content.slice(begin, end);
      return new Uint8Array(await content.slice(begin, end).arrayBuffer());
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
