/**
 * What the CLI prints when a command fails for a reason outside the engine's own checks: the file
 * system refusing a read or a write, or the backend running out of memory. Each becomes one
 * sentence naming the path (or what ran out) and what to do, printed alone with exit status 2.
 */
import { isAllocationError, isUserError } from '../engine/errors.ts';

/** Why each file-system error code happens, in words. */
const FS_REASONS: Record<string, string> = {
  EACCES: 'permission denied',
  EPERM: 'the operation is not permitted',
  EROFS: 'the file system is read-only',
  ENOTDIR: 'a part of the path is a file, not a folder',
  EEXIST: 'something else already exists there',
  ENOSPC: 'no space is left on the device',
  EDQUOT: 'the disk quota is used up',
  ELOOP: 'it is a symbolic link that loops back on itself',
  EISDIR: 'it is a folder, not a file',
  ENAMETOOLONG: 'the name is too long',
  EMFILE: 'too many files are open',
  EIO: 'the device reported an input/output error',
  ENOENT: 'no such file or folder',
};

const WRITES = new Set(['mkdir', 'mkdtemp', 'rename', 'rmdir', 'unlink', 'rm', 'write', 'writev', 'fsync', 'fdatasync', 'ftruncate', 'truncate', 'copyfile', 'symlink', 'link', 'chmod', 'utime']);
const READS = new Set(['read', 'readv', 'scandir', 'opendir', 'stat', 'lstat', 'fstat', 'readlink', 'realpath', 'access']);

interface FsError extends Error {
  code: string;
  syscall?: string;
  path?: string;
  dest?: string;
}

export function isFsError(e: unknown): e is FsError {
  return e instanceof Error && typeof (e as FsError).code === 'string' && (e as FsError).code in FS_REASONS && typeof (e as FsError).syscall === 'string';
}

/** "Cannot write out/checkpoint-4: no space is left on the device." — or null for any other error. */
export function fsErrorSentence(e: unknown): string | null {
  if (!isFsError(e)) return null;
  const verb = e.syscall && WRITES.has(e.syscall) ? 'write' : e.syscall && READS.has(e.syscall) ? 'read' : 'open';
  const path = e.path ?? 'a file';
  const to = e.dest && e.syscall === 'rename' ? ` to ${e.dest}` : '';
  const what = e.syscall === 'rename' ? `move ${path}${to}` : `${verb} ${path}`;
  return `Cannot ${what}: ${FS_REASONS[e.code]}.`;
}

export interface FailureContext {
  command: string;
  backend: string;
  /** The recipe's values, for a training run: the advice names what to lower. */
  recipe?: { max_length?: number | null; per_device_train_batch_size?: number; gradient_checkpointing?: boolean };
  /** The command's flags, for the advice (eval's --batch_size, generate's --max_new_tokens). */
  flags?: Map<string, string>;
  /** Set once training has written into output_dir: what the failure leaves there. */
  kept?: () => string | null;
}

/** Out of memory: what ran out, and how to make the job smaller. */
export function outOfMemorySentence(ctx: FailureContext): string {
  const memory = ctx.backend === 'wasm' ? 'the WASM backend’s memory' : ctx.backend === 'webgpu' ? 'GPU memory' : 'memory';
  const now = (v: unknown) => (typeof v === 'number' || typeof v === 'string' ? ` (now ${v})` : '');
  const r = ctx.recipe;
  const f = ctx.flags;
  let advice: string[];
  switch (ctx.command) {
    case 'train':
      advice = [`a shorter max_length${now(r?.max_length)}`, `a smaller per_device_train_batch_size${now(r?.per_device_train_batch_size)}`];
      if (r?.gradient_checkpointing !== true) advice.push('gradient_checkpointing: true');
      break;
    case 'eval':
      advice = [`a shorter --max_length${now(f?.get('max_length'))}`, `a smaller --batch_size (now ${f?.get('batch_size') ?? 8})`];
      break;
    case 'generate':
      advice = ['a shorter --prompt', `a smaller --max_new_tokens (now ${f?.get('max_new_tokens') ?? 128})`, `a smaller --num_return_sequences${now(f?.get('num_return_sequences'))}`];
      break;
    default:
      advice = ['the cpu backend (--backend cpu)', 'a machine with more memory'];
  }
  const kept = ctx.kept?.();
  const list = advice.length > 1 ? `${advice.slice(0, -1).join(', ')} or ${advice[advice.length - 1]}` : advice[0];
  return `finetune ${ctx.command} ran out of ${memory}${kept ? ` (${kept})` : ''}; try ${list}.`;
}

/** The one line to print and the exit status, for any failure. */
export function describeFailure(e: unknown, ctx: FailureContext): { message: string; code: number } {
  if (isUserError(e)) return { message: e.message, code: 2 };
  const fs = fsErrorSentence(e);
  if (fs !== null) {
    const kept = ctx.kept?.();
    return { message: kept ? `${fs.slice(0, -1)} (${kept}).` : fs, code: 2 };
  }
  if (isAllocationError(e)) return { message: outOfMemorySentence(ctx), code: 2 };
  return { message: `finetune: internal error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`, code: 1 };
}
