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
  putRun,
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

  it('a lagging writer never deletes a newer checkpoint nor moves the run back (two tabs on one run)', async () => {
    const db = await freshDb();
    // Tab A trains to the end: checkpoint 24, finished.
    let a = await saveCheckpoint(db, 'run-1', 20, files(20), { ...record('run-1'), global_step: 20, total_steps: 24 });
    a = await saveCheckpoint(db, 'run-1', 24, files(24), { ...a, global_step: 24 });
    await putRun(db, { ...a, status: 'finished' });
    // Tab B resumed from checkpoint 20 earlier and now pauses at step 21.
    const lagging: RunRecord = { ...a, status: 'running', global_step: 21, checkpoint_step: 20 };
    await expect(saveCheckpoint(db, 'run-1', 21, files(21), lagging)).rejects.toThrow(
      'Run "train.jsonl" already has a newer checkpoint, from step 24 (it was trained in another tab); the checkpoint at step 21 was not saved and that checkpoint is kept.',
    );
    await expect(putRun(db, { ...lagging, status: 'paused' })).rejects.toThrow(
      'Run "train.jsonl" has already finished all 24 steps (it was trained in another tab); this update was not saved, so the finished run and its checkpoint stay as they are.',
    );
    expect(await checkpointKeys(db)).toEqual([['run-1', 24]]);
    expect((await latestCheckpoint(db, 'run-1'))?.files['adapter_model.safetensors'][0]).toBe(24);
    expect(await getRun(db, 'run-1')).toMatchObject({ status: 'finished', global_step: 24, checkpoint_step: 24 });
  });

  it('a checkpoint is refused on a finished run, or below the step the run reached, and a stray newer one is never deleted', async () => {
    const db = await freshDb();
    const r = await saveCheckpoint(db, 'run-1', 4, files(4), { ...record('run-1'), global_step: 4 });
    await putRun(db, { ...r, status: 'finished' });
    await expect(saveCheckpoint(db, 'run-1', 4, files(4), { ...r, status: 'running' })).rejects.toThrow(/^Run "train\.jsonl" has already finished all 10 steps .*; the checkpoint at step 4 was not saved, so the finished run and its checkpoint stay as they are\.$/);

    const db2 = await freshDb();
    await putRun(db2, { ...record('run-1'), global_step: 6 });
    await expect(saveCheckpoint(db2, 'run-1', 5, files(5), { ...record('run-1'), global_step: 5 })).rejects.toThrow(
      'Run "train.jsonl" has already reached step 6 (it was trained in another tab); the checkpoint at step 5 was not saved, so the run does not go back to step 5.',
    );
    expect(await checkpointKeys(db2)).toEqual([]);
    // A checkpoint stored without its record pointing at it (a record written by a lagging tab) still outranks an older write.
    await db2.put('checkpoints', { runId: 'run-1', step: 8, files: files(8), bytes: 1 });
    await expect(saveCheckpoint(db2, 'run-1', 7, files(7), { ...record('run-1'), global_step: 7 })).rejects.toThrow(/newer checkpoint, from step 8/);
    expect(await checkpointKeys(db2)).toEqual([['run-1', 8]]);
  });

  it('putRun lets a resume lower global_step to its checkpoint, but not drop below the stored checkpoint', async () => {
    const db = await freshDb();
    const r = await saveCheckpoint(db, 'run-1', 4, files(4), { ...record('run-1'), global_step: 4 });
    await putRun(db, { ...r, global_step: 5, status: 'failed' });
    await putRun(db, { ...r, global_step: 4, status: 'running' });
    expect(await getRun(db, 'run-1')).toMatchObject({ status: 'running', global_step: 4, checkpoint_step: 4 });
    await expect(putRun(db, { ...r, checkpoint_step: 2 })).rejects.toThrow(/already has a newer checkpoint, from step 4 .*; this update was not saved and that checkpoint is kept\.$/);
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
