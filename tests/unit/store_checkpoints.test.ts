// The IndexedDB checkpoint store over fake-indexeddb: only the newest checkpoint is kept, a write
// the browser refuses (quota, abort) loses nothing, and deleting a run leaves nothing behind.
import 'fake-indexeddb/auto';
import { IDBFactory } from 'fake-indexeddb';
import { afterEach, describe, expect, it } from 'vitest';
import type { RunRecord } from '../../src/worker/protocol.ts';
import {
  appendMetrics,
  createRun,
  deleteRun,
  getMetrics,
  getRun,
  getRunData,
  latestCheckpoint,
  listRuns,
  openStudioDb,
  saveCheckpoint,
  storageEstimate,
  truncateMetrics,
  type StudioDb,
} from '../../src/worker/store.ts';

function record(id: string, created = 1): RunRecord {
  return {
    id,
    name: 'train.jsonl',
    model: 'stories260K',
    method: 'sft',
    created,
    updated: created,
    status: 'running',
    recipe: { model: 'stories260K', train_file: 'train.jsonl' },
    final_loss: null,
    global_step: 0,
    total_steps: 10,
    size_bytes: 0,
    checkpoint_step: null,
  };
}

function files(step: number): Record<string, Uint8Array> {
  return { 'adapter_model.safetensors': new Uint8Array(16).fill(step), 'trainer_state.json': new TextEncoder().encode(`{"global_step":${step}}`) };
}

async function freshDb(): Promise<StudioDb> {
  const db = await openStudioDb('test', new IDBFactory());
  await createRun(db, record('run-1'), { file: 'train.jsonl', text: '{"text":"hi"}\n' });
  return db;
}

async function checkpointKeys(db: StudioDb): Promise<[string, number][]> {
  return db.getAllKeys('checkpoints');
}

const ObjectStore = globalThis.IDBObjectStore;
const originalPut = ObjectStore.prototype.put;
afterEach(() => {
  ObjectStore.prototype.put = originalPut;
});

/** Makes the next put into `store` fail as `fail` says, as a browser with a full disk or a dying tab would. */
function failNextPut(store: string, fail: (self: IDBObjectStore) => void): void {
  ObjectStore.prototype.put = function (this: IDBObjectStore, ...args: Parameters<IDBObjectStore['put']>) {
    if (this.name === store) {
      ObjectStore.prototype.put = originalPut;
      fail(this);
    }
    return originalPut.apply(this, args);
  };
}

describe('checkpoint store', () => {
  it('keeps only the newest checkpoint, and the run record points at it', async () => {
    const db = await freshDb();
    let r = await saveCheckpoint(db, 'run-1', 2, files(2), { ...record('run-1'), global_step: 2 });
    expect(r.checkpoint_step).toBe(2);
    expect(r.size_bytes).toBe(16 + '{"global_step":2}'.length);
    r = await saveCheckpoint(db, 'run-1', 4, files(4), { ...r, global_step: 4 });
    expect(await checkpointKeys(db)).toEqual([['run-1', 4]]);
    const latest = await latestCheckpoint(db, 'run-1');
    expect(latest?.step).toBe(4);
    expect(latest?.files['adapter_model.safetensors'][0]).toBe(4);
    expect((await getRun(db, 'run-1'))?.checkpoint_step).toBe(4);
  });

  it('a quota error keeps the previous checkpoint and record intact and says so in one sentence', async () => {
    const db = await freshDb();
    const r = await saveCheckpoint(db, 'run-1', 2, files(2), record('run-1'));
    failNextPut('checkpoints', () => {
      throw new DOMException('The quota has been exceeded.', 'QuotaExceededError');
    });
    await expect(saveCheckpoint(db, 'run-1', 4, files(4), { ...r, global_step: 4 })).rejects.toThrow(
      'Browser storage is full: checkpoint at step 4 was not saved; the checkpoint from step 2 is kept. Free space by deleting old runs.',
    );
    expect(await checkpointKeys(db)).toEqual([['run-1', 2]]);
    expect((await latestCheckpoint(db, 'run-1'))?.files['adapter_model.safetensors'][0]).toBe(2);
    const stored = await getRun(db, 'run-1');
    expect(stored?.checkpoint_step).toBe(2);
    expect(stored?.global_step).toBe(0);
  });

  it('a transaction aborted after the checkpoint was written rolls it back and keeps the previous one', async () => {
    const db = await freshDb();
    const r = await saveCheckpoint(db, 'run-1', 2, files(2), record('run-1'));
    // The checkpoint put has gone through; the run record's put finds its transaction aborted.
    failNextPut('runs', (self) => self.transaction.abort());
    await expect(saveCheckpoint(db, 'run-1', 4, files(4), r)).rejects.toThrow(/^Browser storage failed: checkpoint at step 4 was not saved \(.*\); the checkpoint from step 2 is kept\.$/);
    expect(await checkpointKeys(db)).toEqual([['run-1', 2]]);
    expect((await getRun(db, 'run-1'))?.checkpoint_step).toBe(2);
  });

  it('a quota error on the first checkpoint says there is no earlier one', async () => {
    const db = await freshDb();
    failNextPut('checkpoints', () => {
      throw new DOMException('The quota has been exceeded.', 'QuotaExceededError');
    });
    await expect(saveCheckpoint(db, 'run-1', 2, files(2), record('run-1'))).rejects.toThrow(
      'Browser storage is full: checkpoint at step 2 was not saved. Free space by deleting old runs.',
    );
    expect(await checkpointKeys(db)).toEqual([]);
  });

  it('metrics come back in step order, a re-logged step replaces its line, and truncation drops later steps', async () => {
    const db = await freshDb();
    await appendMetrics(db, 'run-1', [{ step: 1, epoch: 0.5, loss: 2 }, { step: 2, epoch: 1, loss: 1.5 }, { step: 2, epoch: 1, eval_loss: 1.7 }]);
    await appendMetrics(db, 'run-1', [{ step: 3, epoch: 1.5, loss: 1.2 }]);
    expect((await getMetrics(db, 'run-1')).map((m) => [m.step, m.loss ?? m.eval_loss])).toEqual([[1, 2], [2, 1.5], [2, 1.7], [3, 1.2]]);
    await truncateMetrics(db, 'run-1', 2);
    await appendMetrics(db, 'run-1', [{ step: 2, epoch: 1, loss: 1.4 }]);
    expect((await getMetrics(db, 'run-1')).map((m) => [m.step, m.loss ?? m.eval_loss])).toEqual([[1, 2], [2, 1.4], [2, 1.7]]);
  });

  it('deleteRun removes the run, its checkpoints, metrics and data, and nothing of other runs', async () => {
    const db = await freshDb();
    await createRun(db, record('run-2', 2), { file: 'other.jsonl', text: '{"text":"b"}\n' });
    for (const [id, created] of [['run-1', 1], ['run-2', 2]] as const) {
      await saveCheckpoint(db, id, 2, files(2), record(id, created));
      await appendMetrics(db, id, [{ step: 1, epoch: 0, loss: 1 }]);
    }
    expect((await listRuns(db)).map((r) => r.id)).toEqual(['run-2', 'run-1']);
    await deleteRun(db, 'run-1');
    expect(await getRun(db, 'run-1')).toBeUndefined();
    expect(await latestCheckpoint(db, 'run-1')).toBeNull();
    expect(await getMetrics(db, 'run-1')).toEqual([]);
    expect(await getRunData(db, 'run-1')).toBeUndefined();
    expect(await checkpointKeys(db)).toEqual([['run-2', 2]]);
    expect(await getMetrics(db, 'run-2')).toHaveLength(1);
    expect((await getRunData(db, 'run-2'))?.file).toBe('other.jsonl');
  });

  it('storageEstimate reports usage and asks for persistence where it can, and zeros where there is no StorageManager', async () => {
    expect(await storageEstimate(undefined)).toEqual({ usage: 0, quota: 0, persisted: false });
    let asked = 0;
    const manager = {
      estimate: async () => ({ usage: 1234, quota: 10_000 }),
      persisted: async () => false,
      persist: async () => {
        asked++;
        return true;
      },
    } as unknown as StorageManager;
    expect(await storageEstimate(manager)).toEqual({ usage: 1234, quota: 10_000, persisted: true });
    expect(asked).toBe(1);
    // In a Worker persist() does not exist: the answer is whether the page's request was granted.
    const inWorker = { estimate: manager.estimate, persisted: async () => true } as unknown as StorageManager;
    expect(await storageEstimate(inWorker)).toEqual({ usage: 1234, quota: 10_000, persisted: true });
  });
});
