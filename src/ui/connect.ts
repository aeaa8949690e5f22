/** The training Worker and its comlink proxy: every tensor lives over there, never on the page's thread. */
import * as Comlink from 'comlink';
import type { StudioApi } from '../worker/protocol.ts';

export interface WorkerConnection {
  api: Comlink.Remote<StudioApi>;
  worker: Worker;
}

export function connectWorker(): WorkerConnection {
  const worker = new Worker(new URL('../worker/index.ts', import.meta.url), { type: 'module', name: 'studio-trainer' });
  return { api: Comlink.wrap<StudioApi>(worker), worker };
}

export const { proxy, transfer } = Comlink;
