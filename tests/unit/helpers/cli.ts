/** The `finetune` command as a person runs it: a real process, in a folder, its output as text. */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const STORIES = fileURLToPath(new URL('../../../../shared/models/stories260K', import.meta.url));
export const BIN = join(ROOT, 'bin/finetune.js');

export function finetune(args: string[], cwd: string): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { cwd, encoding: 'utf8', env: { ...process.env, FORCE_COLOR: '0' } });
  return { code: r.status, stdout: r.stdout.trim(), stderr: r.stderr.trim() };
}
