/**
 * The page's own small IndexedDB (the Worker keeps runs in another): values the page restores
 * after a reload that are too big for localStorage, such as the dataset file a person dropped.
 * Every call fails soft: without IndexedDB the page simply remembers less.
 */
import { openDB, type IDBPDatabase } from 'idb';

let opening: Promise<IDBPDatabase> | null = null;

function db(): Promise<IDBPDatabase> {
  opening ??= openDB('finetune-studio-page', 1, {
    upgrade(d) {
      d.createObjectStore('kv');
    },
  });
  return opening;
}

export async function getPageValue<T>(key: string): Promise<T | undefined> {
  try {
    return (await (await db()).get('kv', key)) as T | undefined;
  } catch {
    return undefined;
  }
}

/** True when stored; false when the browser refused (quota, private mode). */
export async function putPageValue(key: string, value: unknown): Promise<boolean> {
  try {
    await (await db()).put('kv', value, key);
    return true;
  } catch {
    return false;
  }
}

export async function deletePageValue(key: string): Promise<void> {
  try {
    await (await db()).delete('kv', key);
  } catch {
    // Nothing stored, or nothing to delete it from.
  }
}
