/**
 * Files the person hands to the page: picked with an <input type="file"> (one file, several, or a
 * folder with `webkitdirectory`) or dropped (files, or a folder walked through the entries API).
 * Everything comes out as paths relative to the dropped folder.
 */
import { unzipSync } from 'fflate';
import type { FolderFiles } from '../../worker/protocol.ts';

export interface PickedFile {
  /** Path with '/' separators, including the picked folder's name when there is one. */
  path: string;
  file: File;
}

/** The folder every path starts with ("SmolLM2/config.json", "SmolLM2/tokenizer.json" → "SmolLM2"), or ''. */
export function commonFolder(paths: string[]): string {
  if (paths.length === 0) return '';
  const first = paths[0].split('/');
  if (first.length < 2) return '';
  const top = first[0];
  return paths.every((p) => p.startsWith(`${top}/`)) ? top : '';
}

/** Paths relative to their common folder; `name` is that folder (or `fallback`). */
export function relativeTo(paths: string[], fallback: string): { name: string; paths: string[] } {
  const top = commonFolder(paths);
  return { name: top || fallback, paths: top ? paths.map((p) => p.slice(top.length + 1)) : paths };
}

export function fromInput(list: FileList | null): PickedFile[] {
  return Array.from(list ?? [], (file) => ({ path: file.webkitRelativePath || file.name, file }));
}

/** Dropped files, walking into dropped folders. */
export async function fromDrop(dt: DataTransfer): Promise<PickedFile[]> {
  const entries = Array.from(dt.items ?? [])
    .map((item) => (item.kind === 'file' ? item.webkitGetAsEntry?.() : null))
    .filter((e): e is FileSystemEntry => e != null);
  if (entries.length === 0) return fromInput(dt.files);
  const out: PickedFile[] = [];
  for (const entry of entries) await walk(entry, out);
  return out;
}

async function walk(entry: FileSystemEntry, out: PickedFile[]): Promise<void> {
  const path = entry.fullPath.replace(/^\//, '');
  if (entry.isFile) {
    const file = await new Promise<File>((resolve, reject) => (entry as FileSystemFileEntry).file(resolve, reject));
    out.push({ path, file });
    return;
  }
  const reader = (entry as FileSystemDirectoryEntry).createReader();
  // readEntries hands out a directory in batches until it returns an empty one.
  for (;;) {
    const batch = await new Promise<FileSystemEntry[]>((resolve, reject) => reader.readEntries(resolve, reject));
    if (batch.length === 0) break;
    for (const child of batch) await walk(child, out);
  }
}

/** Files up to this size are read into bytes; larger ones stay Blobs. */
export const SMALL_FILE_BYTES = 16 * 1024 * 1024;

/** Whether a picked file is handed over as its File (a Blob, read a range at a time) rather than read whole. */
export function keepsAsBlob(path: string, size: number): boolean {
  return path.endsWith('.safetensors') || size > SMALL_FILE_BYTES;
}

/**
 * The picked files as a folder: its name and each file by relative path. Hidden files are skipped.
 * Weights (safetensors) and other large files stay the File itself, a Blob the Worker reads one
 * tensor at a time, so a multi-gigabyte model is never copied into memory whole; small files
 * (configs, tokenizer) are read as bytes.
 */
export async function readFolder(picked: PickedFile[], fallbackName: string): Promise<{ name: string; files: FolderFiles }> {
  const visible = picked.filter((p) => !p.path.split('/').some((part) => part.startsWith('.')));
  const { name, paths } = relativeTo(visible.map((p) => p.path), fallbackName);
  const files: FolderFiles = {};
  for (let i = 0; i < visible.length; i++) {
    const file = visible[i].file;
    files[paths[i]] = keepsAsBlob(paths[i], file.size) ? file : new Uint8Array(await file.arrayBuffer());
  }
  return { name, files };
}

/**
 * A zip (such as a downloaded adapter) as a folder: entries relative to their common folder,
 * without directories or macOS metadata.
 */
export function unzipFolder(bytes: Uint8Array): Record<string, Uint8Array> {
  const entries = unzipSync(bytes);
  const names = Object.keys(entries).filter((n) => !n.endsWith('/') && !n.startsWith('__MACOSX/') && !n.split('/').some((p) => p.startsWith('.')));
  const { paths } = relativeTo(names, '');
  const out: Record<string, Uint8Array> = {};
  names.forEach((n, i) => (out[paths[i]] = entries[n]));
  return out;
}

/** Saves bytes as a file download through a Blob URL and an <a download>. */
export function saveBytes(bytes: Uint8Array, fileName: string, type = 'application/zip'): void {
  saveBlob(new Blob([bytes as Uint8Array<ArrayBuffer>], { type }), fileName);
}

/** Saves a Blob (a large export the Worker made from parts) as a file download. */
export function saveBlob(blob: Blob, fileName: string): void {
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = fileName;
  a.style.display = 'none';
  document.body.append(a);
  a.click();
  a.remove();
  // The download has its own reference once started; the URL can go a little later.
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

/** A name safe for a downloaded file: "HuggingFaceTB/SmolLM2 run 3" → "SmolLM2-run-3". */
export function fileSafe(name: string): string {
  const last = name.split('/').pop() ?? name;
  return last.replace(/[^\w.-]+/g, '-').replace(/^-+|-+$/g, '') || 'studio';
}
