/** The training Worker and its comlink proxy: every tensor lives over there, never on the page's thread. */
import * as Comlink from 'comlink';
import type { FolderFiles, StudioApi } from '../worker/protocol.ts';

export interface WorkerConnection {
  api: Comlink.Remote<StudioApi>;
  worker: Worker;
}

export function connectWorker(): WorkerConnection {
  const worker = new Worker(new URL('../worker/index.ts', import.meta.url), { type: 'module', name: 'studio-trainer' });
  return { api: Comlink.wrap<StudioApi>(worker), worker };
}

/** The byte buffers of a folder to transfer; Blobs cross by reference and need none. */
export function buffersOf(files: FolderFiles): ArrayBuffer[] {
  return [...new Set(Object.values(files).flatMap((b) => (b instanceof Uint8Array ? [b.buffer as ArrayBuffer] : [])))];
}

export const { proxy, transfer } = Comlink;
