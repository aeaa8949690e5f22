/**
 * The training run's output folder: checked before anything is trained (it can be created and
 * written, and holds nothing of the user's that a checkpoint would replace), cleared of what a
 * crashed run left behind, and its metrics.jsonl cut back to the step a resumed run starts from.
 */
import { statSync } from 'node:fs';
import { open, readFile, readdir, rename, rm } from 'node:fs/promises';
import { randomUUID } from 'node:crypto';
import { dirname, join, resolve } from 'node:path';
import { UserError } from '../engine/errors.ts';
import { fsErrorSentence, isFsError } from './failure.ts';
import { writeFileAtomic } from './fs_files.ts';

const CHECKPOINT = /^checkpoint-(\d+)$/;

function statOrNull(path: string) {
  try {
    return statSync(path);
  } catch (e) {
    if (isFsError(e) && (e.code === 'ENOENT' || e.code === 'ENOTDIR')) return null;
    throw e;
  }
}

/**
 * Refuses an output_dir that cannot be written — it is a file, lies below a file, or its folder
 * (or nearest existing parent) refuses a new file — or that holds a `checkpoint-N` which this tool
 * did not write. Writes nothing that outlives the check. `replacedWhole`: the folder is replaced as
 * a whole (merge --out), so it is its parent that must take new files, and its content is not ours to check.
 */
export async function checkOutputDir(out: string, label = 'output_dir', opts: { replacedWhole?: boolean } = {}): Promise<void> {
  const own = statOrNull(out);
  if (own && !own.isDirectory()) throw new UserError(`${label} ${out} is a file, not a folder; choose another ${label}.`, { field: label });
  // A folder replaced whole (merge --out) is written as a sibling and renamed: its parent must take files.
  let base = own && opts.replacedWhole ? dirname(resolve(out)) : out;
  if (!own) {
    let parent = dirname(resolve(out));
    for (;;) {
      const s = statOrNull(parent);
      if (s) {
        if (!s.isDirectory()) throw new UserError(`${label} ${out} cannot be created: ${parent} is a file, not a folder.`, { field: label });
        break;
      }
      const up = dirname(parent);
      if (up === parent) break;
      parent = up;
    }
    base = parent;
  }
  const probe = join(base, `.finetune-probe-${randomUUID()}`);
  try {
    const fh = await open(probe, 'wx');
    try {
      await fh.writeFile('probe');
    } finally {
      await fh.close();
    }
  } catch (e) {
    await rm(probe, { force: true }).catch(() => undefined);
    const reason = fsErrorSentence(e);
    if (reason === null) throw e;
    throw new UserError(`${label} ${out} is not writable: ${reason.replace(/^Cannot \w+ [^:]*: /, '').replace(/\.$/, '')} (${base}).`, { field: label });
  }
  await rm(probe, { force: true });

  if (!own || opts.replacedWhole) return;
  for (const name of await readdir(out)) {
    if (!CHECKPOINT.test(name)) continue;
    const path = join(out, name);
    const s = statOrNull(path);
    const ours = s?.isDirectory() && statOrNull(join(path, 'trainer_state.json'))?.isFile();
    if (!ours) {
      const what = s?.isDirectory() ? 'a folder without trainer_state.json' : 'a file';
      throw new UserError(`${path} is ${what}, not a checkpoint of a training run, and a checkpoint would replace it; move it or choose another output_dir.`, { field: 'output_dir' });
    }
  }
}

/**
 * Removes what a crashed run left in `out`: half-written `.checkpoint-N.new-*` folders and the
 * `.NAME.<uuid>.tmp` files of atomic writes. A `.checkpoint-N.old-*` folder is the only copy of a
 * checkpoint when the crash fell between its two renames: it is put back if `checkpoint-N` is
 * missing, and removed otherwise. Returns how many entries it cleared.
 */
export async function cleanLeftovers(out: string): Promise<number> {
  let names: string[];
  try {
    names = await readdir(out);
  } catch (e) {
    if (isFsError(e) && e.code === 'ENOENT') return 0;
    throw e;
  }
  let cleared = 0;
  for (const name of names) {
    const old = /^\.(checkpoint-\d+)\.old-[0-9a-f-]{36}$/.exec(name);
    if (old && statOrNull(join(out, old[1])) === null) {
      await rename(join(out, name), join(out, old[1]));
      cleared++;
      continue;
    }
    if (old || /^\.checkpoint-\d+\.new-[A-Za-z0-9]{6}$/.test(name) || /^\..+\.[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.tmp$/.test(name)) {
      await rm(join(out, name), { recursive: true, force: true });
      cleared++;
    }
  }
  return cleared;
}

/**
 * Keeps the lines of metrics.jsonl (or GRPO's completions.jsonl) up to and including `step`, so a
 * resumed run does not log its steps twice; a line cut short by a crash is dropped. Nothing happens when the file is absent.
 */
export async function truncateMetrics(path: string, step: number): Promise<void> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if (isFsError(e) && e.code === 'ENOENT') return;
    throw e;
  }
  const kept = text.split('\n').filter((line) => {
    if (line.trim() === '') return false;
    try {
      const entry = JSON.parse(line) as { step?: unknown };
      return typeof entry.step === 'number' && entry.step <= step;
    } catch {
      return false;
    }
  });
  const next = kept.length ? kept.join('\n') + '\n' : '';
  if (next !== text) await writeFileAtomic(path, next);
}
