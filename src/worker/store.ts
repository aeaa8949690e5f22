/**
 * The studio's IndexedDB: runs, their latest checkpoint, their metrics and the training file they
 * read, so that a reload or a crashed tab can resume a run exactly without asking for anything
 * but the base model. Every function takes the database explicitly; `openStudioDb` accepts any
 * IDBFactory so Node tests can pass fake-indexeddb's.
 */
import { wrap, type DBSchema, type IDBPDatabase, type IDBPTransaction, type StoreNames } from 'idb';
import { UserError } from '../engine/errors.ts';
import { logKind, type LogEntry } from '../engine/train/trainer.ts';
import type { CompletionRecord, FolderBytes, RunRecord } from './protocol.ts';

export interface StoredCheckpoint {
  runId: string;
  step: number;
  /** checkpoint-<step> as the Trainer writes it: the model part, optimizer.safetensors, trainer_state.json. */
  files: FolderBytes;
  bytes: number;
}

/** The training file a run read, kept so that resuming needs no file from the person. */
export interface RunData {
  file: string;
  text: string;
  /** GRPO: each JavaScript reward function's text by the path reward_funcs names it with. */
  reward_scripts?: Record<string, string>;
}

/** Train and eval logs of one step get separate keys, so a resumed run re-logging a step overwrites it. */
type MetricKey = [runId: string, step: number, kind: 0 | 1];

interface StudioSchema extends DBSchema {
  runs: { key: string; value: RunRecord };
  checkpoints: { key: [string, number]; value: StoredCheckpoint };
  metrics: { key: MetricKey; value: LogEntry };
  data: { key: string; value: RunData };
  /** GRPO's rollouts: the records of one step under [runId, step] (completions.jsonl's lines). */
  completions: { key: [string, number]; value: CompletionRecord[] };
}

export type StudioDb = IDBPDatabase<StudioSchema>;

/** 2 added `completions` (GRPO); a version-1 database gains it on open, its runs untouched. */
const VERSION = 2;

export async function openStudioDb(name = 'finetune-studio', idbFactory: IDBFactory = indexedDB): Promise<StudioDb> {
  const request = idbFactory.open(name, VERSION);
  request.onupgradeneeded = () => {
    const db = request.result;
    const has = (store: string) => db.objectStoreNames.contains(store);
    if (!has('runs')) db.createObjectStore('runs', { keyPath: 'id' });
    if (!has('checkpoints')) db.createObjectStore('checkpoints', { keyPath: ['runId', 'step'] });
    if (!has('metrics')) db.createObjectStore('metrics');
    if (!has('data')) db.createObjectStore('data');
    if (!has('completions')) db.createObjectStore('completions');
  };
  const db = (await wrap(request)) as unknown as StudioDb;
  // A newer version of the app in another tab must not wait forever for this one to let go.
  db.addEventListener('versionchange', () => db.close());
  return db;
}

/**
 * Every key [runId, …] of one run: arrays compare element by element and a shorter prefix sorts
 * first, and an array sorts after every number, so [runId] … [runId, []] spans them all.
 */
function runKeys(runId: string, fromStep = -Infinity): IDBKeyRange {
  return IDBKeyRange.bound(fromStep === -Infinity ? [runId] : [runId, fromStep], [runId, []]);
}

/** Creates a run together with its training file, in one transaction. */
export async function createRun(db: StudioDb, record: RunRecord, data: RunData): Promise<void> {
  const tx = db.transaction(['runs', 'data'], 'readwrite');
  await commit(
    tx,
    (issue) => {
      issue(tx.objectStore('runs').put(record));
      issue(tx.objectStore('data').put(data, record.id));
    },
    (e) => storageFailure(e, 'the new run and its training file were not saved', null),
  );
}

/**
 * Updates a run's record, refusing with a sentence to move it backwards: a finished run back to
 * another status, or to a checkpoint older than the stored one (what a second tab training the
 * same run would do). A resume may lower global_step to its checkpoint's step.
 */
export async function putRun(db: StudioDb, record: RunRecord): Promise<void> {
  const tx = db.transaction('runs', 'readwrite');
  let refusal: UserError | null = null;
  await commit(
    tx,
    async (issue) => {
      const stored = await tx.store.get(record.id);
      refusal = stored ? regression(stored, record, 'this update', false) : null;
      if (refusal) throw refusal;
      issue(tx.store.put(record));
    },
    (e) => refusal ?? storageFailure(e, `run "${record.name}" was not updated`, null),
  );
}

/**
 * Why writing `next` over `stored` would move the run backwards, or null. A run trained in two
 * tabs at once (or a tab lagging behind another) must never undo what the other recorded.
 */
function regression(stored: RunRecord, next: RunRecord, what: string, checkStep: boolean): UserError | null {
  const run = `Run "${stored.name}"`;
  if (stored.status === 'finished' && next.status !== 'finished') {
    return new UserError(`${run} has already finished all ${stored.total_steps} steps (it was trained in another tab); ${what} was not saved, so the finished run and its checkpoint stay as they are.`);
  }
  if ((stored.checkpoint_step ?? -1) > (next.checkpoint_step ?? -1)) {
    return new UserError(`${run} already has a newer checkpoint, from step ${stored.checkpoint_step} (it was trained in another tab); ${what} was not saved and that checkpoint is kept.`);
  }
  if (checkStep && stored.global_step > next.global_step) {
    return new UserError(`${run} has already reached step ${stored.global_step} (it was trained in another tab); ${what} was not saved, so the run does not go back to step ${next.global_step}.`);
  }
  return null;
}

/** Sets a run's name in the stored record as it is now (a run training meanwhile keeps its progress). */
export async function renameRun(db: StudioDb, id: string, name: string): Promise<void> {
  const tx = db.transaction('runs', 'readwrite');
  await commit(
    tx,
    async (issue) => {
      const stored = await tx.store.get(id);
      if (stored) issue(tx.store.put({ ...stored, name }));
    },
    (e) => storageFailure(e, `the run was not renamed`, null),
  );
}

export async function getRun(db: StudioDb, id: string): Promise<RunRecord | undefined> {
  return db.get('runs', id);
}

/** Newest first. */
export async function listRuns(db: StudioDb): Promise<RunRecord[]> {
  return (await db.getAll('runs')).sort((a, b) => b.created - a.created);
}

export async function getRunData(db: StudioDb, id: string): Promise<RunData | undefined> {
  return db.get('data', id);
}

/**
 * Writes checkpoint `step` and the run record that points at it in one transaction, and only once
 * that has committed deletes the run's older checkpoints: a failed or aborted write leaves the
 * previous checkpoint and record exactly as they were. A write that would move the run backwards
 * (a newer checkpoint is stored, the run has finished or gone further) is refused with a sentence
 * and changes nothing. Returns the record as stored.
 */
export async function saveCheckpoint(db: StudioDb, runId: string, step: number, files: FolderBytes, record: RunRecord): Promise<RunRecord> {
  const bytes = Object.values(files).reduce((n, f) => n + f.byteLength, 0);
  const updated: RunRecord = { ...record, checkpoint_step: step, size_bytes: bytes, updated: Date.now() };
  const tx = db.transaction(['checkpoints', 'runs'], 'readwrite');
  let older: [string, number][] = [];
  let refusal: UserError | null = null;
  const what = `the checkpoint at step ${step}`;
  await commit(
    tx,
    async (issue) => {
      const keys = await tx.objectStore('checkpoints').getAllKeys(runKeys(runId));
      const stored = await tx.objectStore('runs').get(runId);
      const newest = Math.max(-1, ...keys.map(([, s]) => s));
      if (newest > step) {
        refusal = new UserError(`Run "${record.name}" already has a newer checkpoint, from step ${newest} (it was trained in another tab); ${what} was not saved and that checkpoint is kept.`);
      } else if (stored) {
        refusal = regression(stored, updated, what, true);
      }
      if (refusal) throw refusal;
      older = keys.filter(([, s]) => s < step);
      issue(tx.objectStore('checkpoints').put({ runId, step, files, bytes }));
      issue(tx.objectStore('runs').put(updated));
    },
    (e) => refusal ?? storageFailure(e, `checkpoint at step ${step} was not saved`, older.length ? Math.max(...older.map(([, s]) => s)) : null),
  );
  if (older.length > 0) {
    const del = db.transaction('checkpoints', 'readwrite');
    // Only space is at stake here: a leftover older checkpoint is deleted by the next save.
    await commit(del, (issue) => older.forEach((key) => issue(del.store.delete(key))), (e) => e).catch(() => undefined);
  }
  return updated;
}

export async function latestCheckpoint(db: StudioDb, runId: string): Promise<StoredCheckpoint | null> {
  const cursor = await db.transaction('checkpoints').store.openCursor(runKeys(runId), 'prev');
  return cursor?.value ?? null;
}

/** Removes the run, its checkpoints, metrics and training file together. */
export async function deleteRun(db: StudioDb, id: string): Promise<void> {
  const tx = db.transaction(['runs', 'checkpoints', 'metrics', 'completions', 'data'], 'readwrite');
  await commit(
    tx,
    (issue) => {
      issue(tx.objectStore('runs').delete(id));
      issue(tx.objectStore('checkpoints').delete(runKeys(id)));
      issue(tx.objectStore('metrics').delete(runKeys(id)));
      issue(tx.objectStore('completions').delete(runKeys(id)));
      issue(tx.objectStore('data').delete(id));
    },
    (e) => storageFailure(e, 'the run was not deleted', null),
  );
}

export async function appendMetrics(db: StudioDb, runId: string, entries: LogEntry[]): Promise<void> {
  const tx = db.transaction('metrics', 'readwrite');
  await commit(tx, (issue) => entries.forEach((e) => issue(tx.store.put(e, metricKey(runId, e)))), (e) => storageFailure(e, 'metrics were not saved', null));
}

/** In step order, each step's training log before its evaluation log. */
export async function getMetrics(db: StudioDb, runId: string): Promise<LogEntry[]> {
  return db.getAll('metrics', runKeys(runId));
}

/** Drops logs after `step`: a run resumed from that checkpoint logs those steps again. */
export async function truncateMetrics(db: StudioDb, runId: string, step: number): Promise<void> {
  await db.delete('metrics', runKeys(runId, step + 1));
}

/** One GRPO step's rollout; a resumed run rolling out the same step again overwrites it. */
export async function putCompletions(db: StudioDb, runId: string, step: number, records: CompletionRecord[]): Promise<void> {
  const tx = db.transaction('completions', 'readwrite');
  await commit(tx, (issue) => issue(tx.store.put(records, [runId, step])), (e) => storageFailure(e, 'the step\'s completions were not saved', null));
}

/** Every stored rollout of a run, in step order (completions.jsonl); `lastOnly` reads the newest alone. */
export async function getCompletions(db: StudioDb, runId: string, lastOnly = false): Promise<CompletionRecord[]> {
  if (lastOnly) {
    const cursor = await db.transaction('completions').store.openCursor(runKeys(runId), 'prev');
    return cursor?.value ?? [];
  }
  return (await db.getAll('completions', runKeys(runId))).flat();
}

/** Drops rollouts after `step`, as truncateMetrics does for a resumed run. */
export async function truncateCompletions(db: StudioDb, runId: string, step: number): Promise<void> {
  await db.delete('completions', runKeys(runId, step + 1));
}

function metricKey(runId: string, e: LogEntry): MetricKey {
  return [runId, e.step, logKind(e) === 'eval' ? 1 : 0];
}

/**
 * Issues a transaction's requests and waits for it to commit. Any failure, including a request
 * that throws before it is queued, aborts the whole transaction, so nothing of it is written.
 */
async function commit<S extends StoreNames<StudioSchema>[]>(
  tx: IDBPTransaction<StudioSchema, S, 'readwrite'>,
  requests: (issue: (request: Promise<unknown>) => void) => void | Promise<void>,
  describe: (e: unknown) => unknown,
): Promise<void> {
  const issued: Promise<unknown>[] = [];
  // Once aborted, every request and tx.done reject; the caught error reports it once, below.
  const issue = (request: Promise<unknown>) => {
    request.catch(() => undefined);
    issued.push(request);
  };
  issue(tx.done);
  try {
    await requests(issue);
    await Promise.all(issued);
  } catch (e) {
    try {
      tx.abort();
    } catch {
      // Already aborted or finished by the failure itself.
    }
    throw describe(tx.error ?? e);
  }
}

function isQuotaError(e: unknown): boolean {
  return (e as { name?: unknown } | null)?.name === 'QuotaExceededError';
}

/** One sentence for a write the browser refused, naming what is still safe. */
function storageFailure(e: unknown, what: string, keptStep: number | null): UserError {
  const kept = keptStep === null ? '' : `; the checkpoint from step ${keptStep} is kept`;
  if (isQuotaError(e)) return new UserError(`Browser storage is full: ${what}${kept}. Free space by deleting old runs.`);
  const reason = e instanceof Error ? `${e.name}: ${e.message.replace(/\.$/, '')}` : String(e);
  return new UserError(`Browser storage failed: ${what} (${reason})${kept}.`);
}

export interface StorageUse {
  usage: number;
  quota: number;
  persisted: boolean;
}

/**
 * How much this origin stores and may store, asking for persistent storage (so the browser does
 * not evict checkpoints under pressure) where the context can: persist() exists in pages only, so
 * in a Worker this reports whether the page's request was granted.
 */
export async function storageEstimate(storage: StorageManager | undefined = globalThis.navigator?.storage): Promise<StorageUse> {
  if (!storage?.estimate) return { usage: 0, quota: 0, persisted: false };
  const { usage = 0, quota = 0 } = await storage.estimate();
  let persisted = (await storage.persisted?.()) ?? false;
  if (!persisted && typeof storage.persist === 'function') persisted = await storage.persist();
  return { usage, quota, persisted };
}
