/**
 * Which checkpoint `resume_from_checkpoint` means. Like transformers' `Trainer.train`, it may be
 * a checkpoint folder itself or an output folder (or `true`, meaning output_dir), in which case
 * the newest complete `checkpoint-<step>` inside it is resumed.
 */
import { UserError } from '../errors.ts';
import { pathIn, type FileSource } from '../io/files.ts';

/** The files every checkpoint has, besides its model part. */
const CHECKPOINT_FILES = ['trainer_state.json', 'optimizer.safetensors'];
/** The model part: a PEFT adapter, or a model folder's weights. */
const MODEL_PARTS = [['adapter_config.json', 'adapter_model.safetensors'], ['model.safetensors']];

/** True when `names` (file names inside one folder) make a checkpoint that can be resumed. */
export function isCompleteCheckpoint(has: (name: string) => boolean): boolean {
  return CHECKPOINT_FILES.every(has) && MODEL_PARTS.some((part) => part.every(has));
}

/** The files under `prefix/` of a source, as a folder of their own. */
export function subFolder(source: FileSource, prefix: string): FileSource {
  const p = `${prefix.replace(/\/$/, '')}/`;
  return {
    location: pathIn(source, p.slice(0, -1)),
    list: () => source.list().filter((n) => n.startsWith(p)).map((n) => n.slice(p.length)),
    has: (name) => source.has(p + name),
    read: (name) => source.read(p + name),
    size: (name) => source.size(p + name),
    readRange: (name, begin, end) => source.readRange(p + name, begin, end),
  };
}

/**
 * The checkpoint to resume: `source` itself when it holds a checkpoint's files (or no
 * checkpoint-<step> folder, so that restoring names what is missing), otherwise its newest
 * complete checkpoint-<step>. An output folder without one is refused.
 */
export function resolveCheckpoint(source: FileSource): FileSource {
  const steps = new Set<number>();
  for (const name of source.list()) {
    const m = /^checkpoint-(\d+)\//.exec(name);
    if (m) steps.add(Number(m[1]));
  }
  const looksLikeCheckpoint = source.has('optimizer.safetensors') || (steps.size === 0 && source.has('trainer_state.json'));
  if (looksLikeCheckpoint) return source;
  const newestFirst = [...steps].sort((a, b) => b - a);
  for (const step of newestFirst) {
    const folder = subFolder(source, `checkpoint-${step}`);
    if (isCompleteCheckpoint(folder.has)) return folder;
  }
  const where = source.location || 'the folder';
  const incomplete = newestFirst.length ? ` (${newestFirst.map((s) => `checkpoint-${s}`).join(', ')} ${newestFirst.length > 1 ? 'are' : 'is'} incomplete)` : '';
  throw new UserError(
    `${where} holds no complete checkpoint-<step> folder to resume from${incomplete}; set resume_from_checkpoint to a checkpoint folder, or leave it out to start afresh.`,
    { file: where, field: 'resume_from_checkpoint' },
  );
}
