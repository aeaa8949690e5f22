/**
 * Reading a Hugging Face model folder: the JSON configs and the weights, from one
 * `model.safetensors` or from shards listed by `model.safetensors.index.json`.
 * Every weight comes out as f32; `weightsDType` remembers what the folder stored.
 */
import { UserError } from '../errors.ts';
import { type FileSource, pathIn, readJsonObject } from './files.ts';
import { type SafetensorsFile, type TensorInfo, parseSafetensors, tensorToFloat32 } from './safetensors.ts';

export interface WeightTensor {
  /** The dtype the tensor is stored in (F32, F16 or BF16); `data` is always f32. */
  dtype: string;
  shape: number[];
  data: Float32Array;
}

export interface ModelFolder {
  source: FileSource;
  config: Record<string, unknown>;
  tokenizerJson: Record<string, unknown>;
  tokenizerConfig: Record<string, unknown>;
  generationConfig: Record<string, unknown> | null;
  weights: Map<string, WeightTensor>;
  /** The dtype most weight values are stored in, e.g. 'BF16'; exports write this dtype back. */
  weightsDType: string;
}

const SINGLE = 'model.safetensors';
const INDEX = 'model.safetensors.index.json';
const REQUIRED = ['config.json', 'tokenizer.json', 'tokenizer_config.json'];
const NEEDS =
  'a model folder needs config.json, tokenizer.json, tokenizer_config.json and model.safetensors (or model.safetensors.index.json with its shards)';

export async function loadModelFolder(source: FileSource): Promise<ModelFolder> {
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

  // transformers looks for the single file first, so a folder with both loads the same here.
  const weights = source.has(SINGLE) ? await readSingle(source) : await readSharded(source);
  return {
    source,
    config,
    tokenizerJson,
    tokenizerConfig,
    generationConfig,
    weights,
    weightsDType: dominantDType(weights),
  };
}

function requireFile(source: FileSource, name: string): void {
  if (!source.has(name)) {
    throw new UserError(`${pathIn(source, name)} is missing: ${NEEDS}.`, { file: pathIn(source, name) });
  }
}

async function readSingle(source: FileSource): Promise<Map<string, WeightTensor>> {
  const file = pathIn(source, SINGLE);
  const st = parseSafetensors(await source.read(SINGLE), file);
  if (st.tensors.size === 0) throw new UserError(`${file} holds no tensors.`, { file });
  return weightsFromSafetensors(st, [...st.tensors.keys()]);
}

/** Shards are read one at a time so only one shard's bytes are held beside the converted weights. */
async function readSharded(source: FileSource): Promise<Map<string, WeightTensor>> {
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

  const weights = new Map<string, WeightTensor>();
  for (const [shard, tensors] of byShard) {
    const file = pathIn(source, shard);
    const st = parseSafetensors(await source.read(shard), file);
    const absent = tensors.find((t) => !st.tensors.has(t));
    if (absent !== undefined) {
      throw new UserError(`${file} has no tensor "${absent}", which ${INDEX} says it holds.`, {
        file,
        field: absent,
      });
    }
    for (const [name, w] of weightsFromSafetensors(st, tensors)) weights.set(name, w);
  }
  return weights;
}

/** The named tensors of a parsed safetensors file, converted to f32. */
export function weightsFromSafetensors(st: SafetensorsFile, names: string[]): Map<string, WeightTensor> {
  const weights = new Map<string, WeightTensor>();
  for (const name of names) {
    // Converting first means a missing name is refused by tensorToFloat32 with its own message.
    const data = tensorToFloat32(st, name);
    const { dtype, shape } = st.tensors.get(name) as TensorInfo;
    weights.set(name, { dtype, shape, data });
  }
  return weights;
}

function dominantDType(weights: Map<string, WeightTensor>): string {
  const counts = new Map<string, number>();
  for (const w of weights.values()) counts.set(w.dtype, (counts.get(w.dtype) ?? 0) + w.data.length);
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
