/**
 * Reading a Hugging Face model folder: the JSON configs and the weights, from one
 * `model.safetensors` or from shards listed by `model.safetensors.index.json`.
 * `openModelFolder` reads the configs and only the safetensors headers, then streams the weights
 * one tensor at a time (16-bit floats as their raw bit patterns), so that loading holds about one
 * tensor's bytes at a time. `weightsDType` remembers what the folder stored.
 */
import { UserError } from '../errors.ts';
import { type FileSource, pathIn, readJsonObject } from './files.ts';
import {
  type FloatDType,
  type SafetensorsHeader,
  type TensorInfo,
  isFloatDType,
  readSafetensorsHeader,
  tensorValues,
} from './safetensors.ts';

const SINGLE = 'model.safetensors';
const INDEX = 'model.safetensors.index.json';
const REQUIRED = ['config.json', 'tokenizer.json', 'tokenizer_config.json'];
const NEEDS =
  'a model folder needs config.json, tokenizer.json, tokenizer_config.json and model.safetensors (or model.safetensors.index.json with its shards)';

/** One weight as stored: F32 values, or the raw 16-bit patterns of an F16/BF16 tensor. */
export interface RawWeight {
  name: string;
  dtype: FloatDType;
  shape: number[];
  data: Float32Array | Uint16Array;
}

/** Reported after each weight has been handed over: `index` of `count` weights, `bytes` of `totalBytes` read. */
export interface LoadProgress {
  /** The weight just handed over. */
  name: string;
  /** How many weights have been handed over, 1 … count. */
  index: number;
  count: number;
  /** Tensor bytes read so far. */
  bytes: number;
  /** The stored size of every weight together (headers not counted). */
  totalBytes: number;
}

/** A weight's dtype and shape, from the safetensors headers. */
export interface WeightInfo {
  dtype: FloatDType;
  shape: number[];
}

/** A model folder whose configs and safetensors headers are read and checked, weights not yet. */
export interface OpenModelFolder {
  source: FileSource;
  config: Record<string, unknown>;
  tokenizerJson: Record<string, unknown>;
  tokenizerConfig: Record<string, unknown>;
  generationConfig: Record<string, unknown> | null;
  /** The dtype most weight values are stored in, e.g. 'BF16'; exports write this dtype back. */
  weightsDType: string;
  /**
   * Every weight the folder provides: model.safetensors' tensors in header order, or the index's
   * tensors grouped by shard, shards in the order the index first names them.
   */
  tensors: Map<string, WeightInfo>;
  /**
   * Reads the weights shard by shard, one tensor's bytes at a time, handing each to `onWeight`
   * and awaiting it before reading the next; nothing is kept once `onWeight` returns.
   */
  readWeights(onWeight: (w: RawWeight) => void | Promise<void>, onProgress?: (p: LoadProgress) => void): Promise<void>;
}

/** One safetensors file to stream and the weights to take from it, in file order. */
interface ShardPlan {
  name: string;
  file: string;
  weights: [name: string, info: TensorInfo][];
}

/**
 * Open a model folder: check its files, read its JSON files and only the headers of its
 * safetensors (one file, or every shard the index lists), refusing a bad folder with one
 * sentence naming the file before any tensor data is read. transformers looks for the single file
 * first, so a folder with both is read from model.safetensors.
 */
export async function openModelFolder(source: FileSource): Promise<OpenModelFolder> {
  const configs = await readConfigs(source);
  const plans: ShardPlan[] = [];
  const tensors = new Map<string, WeightInfo>();
  const take = (header: SafetensorsHeader, shard: string, names: string[]): void => {
    const weights: ShardPlan['weights'] = [];
    for (const name of names) {
      const info = header.tensors.get(name) as TensorInfo;
      if (!isFloatDType(info.dtype)) {
        throw new UserError(
          `${header.file}: tensor "${name}" is stored as ${info.dtype}; only F32, F16 and BF16 tensors are supported.`,
          { file: header.file, field: name },
        );
      }
      tensors.set(name, { dtype: info.dtype, shape: [...info.shape] });
      weights.push([name, info]);
    }
    // Reading in file order keeps disk and Blob reads sequential.
    weights.sort(([, a], [, b]) => a.begin - b.begin);
    plans.push({ name: shard, file: header.file, weights });
  };

  if (source.has(SINGLE)) {
    const file = pathIn(source, SINGLE);
    const header = await readSafetensorsHeader(source, SINGLE, file);
    if (header.tensors.size === 0) throw new UserError(`${file} holds no tensors.`, { file });
    take(header, SINGLE, [...header.tensors.keys()]);
  } else {
    for (const [shard, names] of await readIndex(source)) {
      const file = pathIn(source, shard);
      const header = await readSafetensorsHeader(source, shard, file);
      requireListed(header.tensors, names, file);
      take(header, shard, names);
    }
  }

  const count = tensors.size;
  let totalBytes = 0;
  for (const plan of plans) for (const [, info] of plan.weights) totalBytes += info.end - info.begin;

  const readWeights: OpenModelFolder['readWeights'] = async (onWeight, onProgress) => {
    let index = 0;
    let bytes = 0;
    for (const plan of plans) {
      for (const [name, info] of plan.weights) {
        const stored = await source.readRange(plan.name, info.begin, info.end);
        // readRange's buffer is ours alone, so the values can reuse it rather than be copied.
        const data = tensorValues(info.dtype, stored, plan.file, name, true);
        await onWeight({ name, dtype: info.dtype as FloatDType, shape: [...info.shape], data });
        index++;
        bytes += info.end - info.begin;
        onProgress?.({ name, index, count, bytes, totalBytes });
      }
    }
  };

  return {
    source,
    ...configs,
    weightsDType: mostValues([...tensors.values()].map((t) => [t.dtype, t.shape.reduce((a, d) => a * d, 1)])),
    tensors,
    readWeights,
  };
}

interface FolderConfigs {
  config: Record<string, unknown>;
  tokenizerJson: Record<string, unknown>;
  tokenizerConfig: Record<string, unknown>;
  generationConfig: Record<string, unknown> | null;
}

/** The folder's required files are checked (pickles explained) and its JSON files read. */
async function readConfigs(source: FileSource): Promise<FolderConfigs> {
  const names = source.list();
  const hasSafetensors = source.has(SINGLE) || source.has(INDEX);
  if (!hasSafetensors) {
    // Pickle files can run code when loaded and need a Python unpickler; only the top level counts,
    // since repos such as Llama 3.2 keep an `original/*.pth` beside their safetensors.
    const pickle = names.find((n) => !n.includes('/') && /\.(bin|pt|pth)$/.test(n));
    if (pickle !== undefined) {
      throw new UserError(
        `${pathIn(source, pickle)}: PyTorch pickle weights are not supported; convert the model to safetensors (model.safetensors or sharded with model.safetensors.index.json).`,
        { file: pathIn(source, pickle) },
      );
    }
  }
  for (const name of REQUIRED) requireFile(source, name);
  if (!hasSafetensors) requireFile(source, SINGLE);

  const config = await readJsonObject(source, 'config.json');
  const tokenizerJson = await readJsonObject(source, 'tokenizer.json');
  const tokenizerConfig = await readJsonObject(source, 'tokenizer_config.json');
  const generationConfig = source.has('generation_config.json')
    ? await readJsonObject(source, 'generation_config.json')
    : null;
  return { config, tokenizerJson, tokenizerConfig, generationConfig };
}

function requireFile(source: FileSource, name: string): void {
  if (!source.has(name)) {
    throw new UserError(`${pathIn(source, name)} is missing: ${NEEDS}.`, { file: pathIn(source, name) });
  }
}

/** The index's weight_map grouped by shard (in the order shards first appear); every shard must exist. */
async function readIndex(source: FileSource): Promise<Map<string, string[]>> {
  const indexFile = pathIn(source, INDEX);
  const index = await readJsonObject(source, INDEX);
  const weightMap = index.weight_map;
  if (typeof weightMap !== 'object' || weightMap === null || Array.isArray(weightMap)) {
    throw new UserError(`${indexFile} has no "weight_map" object (tensor name → shard file).`, {
      file: indexFile,
      field: 'weight_map',
    });
  }
  const byShard = new Map<string, string[]>();
  for (const [tensor, shard] of Object.entries(weightMap)) {
    if (typeof shard !== 'string') {
      throw new UserError(`${indexFile}: "weight_map" entry "${tensor}" is not a shard file name.`, {
        file: indexFile,
        field: tensor,
      });
    }
    const list = byShard.get(shard) ?? [];
    list.push(tensor);
    byShard.set(shard, list);
  }
  if (byShard.size === 0) throw new UserError(`${indexFile} lists no tensors in "weight_map".`, { file: indexFile });
  for (const [shard, tensors] of byShard) {
    if (!source.has(shard)) {
      throw new UserError(
        `${pathIn(source, shard)} is missing: ${INDEX} lists it as the shard holding "${tensors[0]}".`,
        { file: pathIn(source, shard) },
      );
    }
  }
  return byShard;
}

/** Every tensor the index puts in this shard must be in it. */
function requireListed(have: Map<string, TensorInfo>, listed: string[], file: string): void {
  const absent = listed.find((t) => !have.has(t));
  if (absent !== undefined) {
    throw new UserError(`${file} has no tensor "${absent}", which ${INDEX} says it holds.`, {
      file,
      field: absent,
    });
  }
}

/** The dtype holding the most values; on a tie, the one seen first. */
function mostValues(entries: Iterable<[dtype: string, values: number]>): string {
  const counts = new Map<string, number>();
  for (const [dtype, n] of entries) counts.set(dtype, (counts.get(dtype) ?? 0) + n);
  let best = '';
  let bestCount = -1;
  for (const [dtype, count] of counts) {
    if (count > bestCount) {
      best = dtype;
      bestCount = count;
    }
  }
  return best;
}
