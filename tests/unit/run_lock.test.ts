// The per-run lock: one holder at a time, released on demand, and granted to everyone where the
// Web Locks API is missing (Node), so the studio keeps working without it.
import { describe, expect, it } from 'vitest';
import { memoryLockManager, runLocks } from '../../src/worker/run_lock.ts';

describe('run locks', () => {
  it('a run is held by one studio at a time, and free again once released', async () => {
    const manager = memoryLockManager();
    const [a, b] = [runLocks(manager), runLocks(manager)];
    const lock = await a.acquire('run-1');
    expect(lock?.runId).toBe('run-1');
    expect(await b.acquire('run-1')).toBeNull();
    expect([...(await b.held())]).toEqual(['run-1']);
    const other = await b.acquire('run-2');
    expect(other).not.toBeNull();
    lock!.release();
    await new Promise((resolve) => setTimeout(resolve, 0));
    expect([...(await a.held())]).toEqual(['run-2']);
    expect(await b.acquire('run-1')).not.toBeNull();
  });

  it('without a lock manager every lock is granted and none is reported held', async () => {
    const locks = runLocks(undefined);
    expect(await locks.acquire('run-1')).not.toBeNull();
    expect(await locks.acquire('run-1')).not.toBeNull();
    expect((await locks.held()).size).toBe(0);
  });

  it('asks the Web Locks API for the run with ifAvailable, and reads only its own locks back', async () => {
    const asked: unknown[] = [];
    const manager = {
      request: async (name: string, options: object, callback: (lock: unknown) => unknown) => {
        asked.push([name, options]);
        return callback(null);
      },
      query: async () => ({ held: [{ name: 'finetune-studio-run:abc' }, { name: 'something-else' }] }),
    };
    const locks = runLocks(manager);
    expect(await locks.acquire('abc')).toBeNull();
    expect(asked).toEqual([['finetune-studio-run:abc', { ifAvailable: true }]]);
    expect([...(await locks.held())]).toEqual(['abc']);
  });
});
