/**
 * One tab at a time per run: a Web Lock named after the run, held while a tab trains the run or
 * keeps it paused for training, so that two tabs never write one run's checkpoints. The browser
 * lets go of it when the Worker ends with its tab. The lock manager is injected, so Node tests
 * can give two studios one shared manager; where there is none (Node), every lock is granted.
 */

/** The part of the Web Locks API (navigator.locks) a studio uses. */
export interface LockManagerLike {
  request(name: string, options: { ifAvailable: true }, callback: (lock: unknown) => Promise<unknown> | unknown): Promise<unknown>;
  query?(): Promise<{ held?: { name?: string }[] }>;
}

export interface RunLock {
  readonly runId: string;
  release(): void;
}

export interface RunLocks {
  /** The run's lock, or null when another tab holds it. */
  acquire(runId: string): Promise<RunLock | null>;
  /** Ids of the runs some tab (this one included) holds; empty where locks cannot be queried. */
  held(): Promise<Set<string>>;
}

const PREFIX = 'finetune-studio-run:';

export function runLocks(manager: LockManagerLike | undefined = (globalThis.navigator as { locks?: LockManagerLike } | undefined)?.locks): RunLocks {
  return {
    async acquire(runId) {
      if (!manager) return { runId, release: () => undefined };
      return new Promise<RunLock | null>((resolve, reject) => {
        manager
          .request(PREFIX + runId, { ifAvailable: true }, (lock) => {
            if (!lock) {
              resolve(null);
              return undefined;
            }
            // The lock lasts as long as this promise is pending.
            return new Promise<void>((release) => resolve({ runId, release: () => release() }));
          })
          .catch(reject);
      });
    },
    async held() {
      const state = manager?.query ? await manager.query() : { held: [] };
      return new Set((state.held ?? []).flatMap((l) => (l.name?.startsWith(PREFIX) ? [l.name.slice(PREFIX.length)] : [])));
    },
  };
}

/**
 * Exclusive locks with `ifAvailable` inside one JavaScript realm, the way browsers keep them
 * across the tabs of an origin: for studios that share one process (Node tests, the CLI).
 */
export function memoryLockManager(): LockManagerLike {
  const held = new Set<string>();
  return {
    async request(name, _options, callback) {
      if (held.has(name)) return callback(null);
      held.add(name);
      try {
        return await callback({ name, mode: 'exclusive' });
      } finally {
        held.delete(name);
      }
    },
    async query() {
      return { held: [...held].map((name) => ({ name })) };
    },
  };
}
