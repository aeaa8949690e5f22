/**
 * What the page remembers per origin in localStorage. Storage can be off (private windows,
 * blocked cookies): then reads give null and writes are dropped, and settings last for the visit.
 */
export const SETTINGS = {
  hub: 'studio.hubUrl',
  token: 'studio.hfToken',
  lastModel: 'studio.lastModel',
  recipe: 'studio.recipe',
  dataset: 'studio.dataset',
} as const;

export function readSetting(key: string): string | null {
  try {
    return localStorage.getItem(key);
  } catch {
    return null;
  }
}

export function writeSetting(key: string, value: string | null): void {
  try {
    if (value === null) localStorage.removeItem(key);
    else localStorage.setItem(key, value);
  } catch {
    // Storage is off or full; the setting lasts for this visit.
  }
}

/** A JSON setting, or null when it is missing or not valid JSON (an older page may have written it). */
export function readJsonSetting(key: string): unknown {
  const text = readSetting(key);
  if (text === null) return null;
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

export function writeJsonSetting(key: string, value: unknown): void {
  writeSetting(key, value === null ? null : JSON.stringify(value));
}
