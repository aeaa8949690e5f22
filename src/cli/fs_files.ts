/**
 * The filesystem side of `FileSource` for the CLI: reading a directory, and writing files and
 * folders so that a crash or a failed write never leaves a half-written checkpoint or export.
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import { mkdir, mkdtemp, open, readFile, rename, rm, stat } from 'node:fs/promises';
import { randomUUID } from 'node:crypto';
import { basename, dirname, join, resolve, sep } from 'node:path';
import { checkRange, type FileSource } from '../engine/io/files.ts';

/** A directory as a FileSource. Names are relative with '/' separators; none may leave the directory. */
export function nodeFolder(dir: string): FileSource {
  const root = resolve(dir);
  // A shard name in an index file is untrusted input: it must not reach files outside the folder.
  const inside = (name: string): string | null => {
    const p = resolve(root, name);
    return p.startsWith(root + sep) ? p : null;
  };
  const path = (name: string): string => {
    const p = inside(name);
    if (p === null) throw new Error(`${dir}: ${JSON.stringify(name)} is outside the folder`);
    return p;
  };
  return {
    location: dir,
    list: () => listFiles(root, '').sort(),
    has: (name) => {
      const p = inside(name);
      return p !== null && (statSync(p, { throwIfNoEntry: false })?.isFile() ?? false);
    },
    read: async (name) => {
      const buf = await readFile(path(name));
      // A plain Uint8Array, because Buffer's slice() shares memory where Uint8Array's copies.
      return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
    },
    size: async (name) => (await stat(path(name))).size,
    readRange: async (name, begin, end) => {
      const fh = await open(path(name), 'r');
      try {
        const size = (await fh.stat()).size;
        checkRange(`${dir}/${name}`, begin, end, size);
        // A fresh buffer (not Buffer.allocUnsafe's shared pool), so the caller owns it whole.
        const out = new Uint8Array(end - begin);
        let done = 0;
        while (done < out.length) {
          const { bytesRead } = await fh.read(out, done, out.length - done, begin + done);
          if (bytesRead === 0) throw new Error(`${dir}/${name}: the file ended at byte ${begin + done} while reading [${begin}, ${end})`);
          done += bytesRead;
        }
        return out;
      } finally {
        await fh.close();
      }
    },
  };
}

/**
 * Symlinked files are listed because the Hugging Face cache's snapshot folders consist of them;
 * symlinked directories are not followed, so a link loop cannot recurse forever.
 */
function listFiles(dir: string, prefix: string): string[] {
  const names: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = join(dir, entry.name);
    if (entry.isDirectory()) {
      names.push(...listFiles(full, `${prefix}${entry.name}/`));
    } else if (entry.isFile() || (entry.isSymbolicLink() && statSync(full, { throwIfNoEntry: false })?.isFile())) {
      names.push(`${prefix}${entry.name}`);
    }
  }
  return names;
}

/** Write, flush to disk and close a new file; 'wx' refuses to clobber anything already there. */
/** A file's content: bytes, text, or parts written one after another as they are made (a GGUF). */
export type FileContent = Uint8Array | string | AsyncIterable<Uint8Array>;

async function writeDurably(path: string, content: FileContent): Promise<void> {
  const fh = await open(path, 'wx');
  try {
    if (typeof content === 'string' || content instanceof Uint8Array) await fh.writeFile(content);
    else for await (const part of content) await fh.write(part);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Cleanup after a failure must not replace the failure's own error with its own. */
async function removeQuietly(path: string): Promise<void> {
  await rm(path, { recursive: true, force: true }).catch(() => undefined);
}

/** Write a temporary file beside `path`, then rename it over `path`: readers see the old file or the new one. */
export async function writeFileAtomic(path: string, content: FileContent): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.${randomUUID()}.tmp`);
  try {
    await writeDurably(tmp, content);
    await rename(tmp, path);
  } catch (e) {
    await removeQuietly(tmp);
    throw e;
  }
}

/**
 * Replace the folder `dir` with exactly `files` (names may contain '/').
 * Everything is written into a temporary sibling first; only then is the old folder moved aside,
 * the new one renamed in, and the old one deleted. A failed write leaves `dir` untouched. POSIX has
 * no portable atomic swap of two directories, so between the two renames `dir` is briefly absent;
 * a crash in that instant leaves the old content in the `.<name>.old-*` sibling.
 */
export async function writeFolderAtomic(dir: string, files: Record<string, Uint8Array | string>): Promise<void> {
  const target = resolve(dir);
  const parent = dirname(target);
  await mkdir(parent, { recursive: true });
  const tmp = await mkdtemp(join(parent, `.${basename(target)}.new-`));
  try {
    for (const [name, content] of Object.entries(files)) {
      const p = resolve(tmp, name);
      if (!p.startsWith(tmp + sep)) throw new Error(`${dir}: file name ${JSON.stringify(name)} leaves the folder`);
      await mkdir(dirname(p), { recursive: true });
      await writeDurably(p, content);
    }
  } catch (e) {
    await removeQuietly(tmp);
    throw e;
  }

  const old = existsSync(target) ? join(parent, `.${basename(target)}.old-${randomUUID()}`) : null;
  let movedAside = false;
  try {
    if (old !== null) {
      await rename(target, old);
      movedAside = true;
    }
    await rename(tmp, target);
  } catch (e) {
    if (movedAside) await rename(old as string, target);
    await removeQuietly(tmp);
    throw e;
  }
  if (old !== null) await rm(old, { recursive: true, force: true });
}
