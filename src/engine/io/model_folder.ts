/**
 * Reading a Hugging Face model folder: the JSON configs and the weights, from one
 * `model.safetensors` or from shards listed by `model.safetensors.index.json`.
 * `openModelFolder` reads the configs and only the safetensors headers, then streams the weights
 * one tensor at a time (16-bit floats as their raw bit patterns), so that loading holds about one
 * tensor's bytes at a time. `weightsDType` remembers what the folder stored.
 */
import { UserError } from '../errors.ts';
import { type FileSource, pathIn, readJsonObject } from './files.ts';
import { type Bnb4bitWeight, type Companion, type PrequantizedConfig, companionNames, parseQuantState, prequantizedConfig, quantizedWeights } from './bnb.ts';
import type { QuantStateInfo } from '../model/quant.ts';
import {
  type FloatDType,
  type SafetensorsHeader,
  type TensorInfo,
  isFloatDType,
  readSafetensorsHeader,
  tensorValues,
  valuesToFloat32,
} from './safetensors.ts';

const SINGLE = 'model.safetensors';
const INDEX = 'model.safetensors.index.json';
const REQUIRED = ['config.json', 'tokenizer.json', 'tokenizer_config.json'];
const NEEDS =
  'a model folder needs config.json, tokenizer.json, tokenizer_config.json and model.safetensors (or model.safetensors.index.json with its shards)';

/** How a weight is stored: float values, or 4-bit codes as bitsandbytes saved them. */
export type StoredDType = FloatDType | 'NF4' | 'FP4';

/**
 * One weight as stored: F32 values, the raw 16-bit patterns of an F16/BF16 tensor, or a
 * pre-quantised 4-bit weight with its quantisation state (`shape` is then the logical [out, in]).
 */
export type RawWeight =
  | { name: string; dtype: FloatDType; shape: number[]; data: Float32Array | Uint16Array }
  | { name: string; dtype: 'NF4' | 'FP4'; shape: number[]; data: Bnb4bitWeight };

/**
 * A float weight's values as float32 (16-bit patterns widened); a 4-bit weight is refused with
 * one sentence, for readers that take only float weights (`where` names the file).
 */
export function floatValues(w: RawWeight, where: string): Float32Array {
  if (w.dtype === 'NF4' || w.dtype === 'FP4') {
    throw new UserError(`${where}: weight ${w.name} is stored 4-bit (bitsandbytes); only float weights can be read here.`, { file: where, field: w.name });
  }
  const data = w.data as Float32Array | Uint16Array;
  return data instanceof Float32Array ? data : valuesToFloat32(w.dtype, data);
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
  dtype: StoredDType;
  shape: number[];
}

/** A model folder whose configs and safetensors headers are read and checked, weights not yet. */
export interface OpenModelFolder {
  source: FileSource;
  config: Record<string, unknown>;
  tokenizerJson: Record<string, unknown>;
  tokenizerConfig: Record<string, unknown>;
  generationConfig: Record<string, unknown> | null;
  /**
   * The dtype most weight values are stored in, e.g. 'BF16'; exports write this dtype back. A
   * pre-quantised weight counts as the dtype it was quantised from.
   */
  weightsDType: string;
  /** config.json's bitsandbytes 4-bit quantization_config, or null for an unquantised checkpoint. */
  prequantized: PrequantizedConfig | null;
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

/** Where one tensor's bytes are: a file of the folder and the byte range. */
interface TensorPlace {
  shard: string;
  file: string;
  info: TensorInfo;
}

/** One weight to hand over: a float tensor, or a 4-bit weight with the places of its parts. */
interface WeightPlan {
  name: string;
  place: TensorPlace;
  quantized?: { state: QuantStateInfo; parts: Partial<Record<Companion, TensorPlace>> };
}

const TORCH_DTYPES: Record<string, FloatDType> = { float32: 'F32', float16: 'F16', bfloat16: 'BF16' };

/**
 * Open a model folder: check its files, read its JSON files and only the headers of its
 * safetensors (one file, or every shard the index lists), refusing a bad folder with one
 * sentence naming the file before any tensor data is read. transformers looks for the single file
 * first, so a folder with both is read from model.safetensors. A pre-quantised bitsandbytes
 * checkpoint's small quant_state tensors are read here too: they give each 4-bit weight's shape.
 */
export async function openModelFolder(source: FileSource): Promise<OpenModelFolder> {
  const configs = await readConfigs(source);
  const prequantized = prequantizedConfig(configs.config, pathIn(source, 'config.json'));
  const places = new Map<string, TensorPlace>();
  const order: string[] = [];
  const take = (header: SafetensorsHeader, shard: string, names: string[]): void => {
    for (const name of names) {
      places.set(name, { shard, file: header.file, info: header.tensors.get(name) as TensorInfo });
      order.push(name);
    }
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

  const quantized = quantizedWeights(order);
  if (quantized.size > 0 && !prequantized) {
    const [weight] = quantized.keys();
    const file = pathIn(source, 'config.json');
    throw new UserError(`${file} has no bitsandbytes "quantization_config", but the weights hold 4-bit tensors such as ${weight}; the folder is incomplete.`, { file, field: 'quantization_config' });
  }
  const companions = new Set<string>();
  for (const [weight, stateName] of quantized) for (const c of companionNames(weight, stateName)) companions.add(c);

  const plans: WeightPlan[] = [];
  const tensors = new Map<string, WeightInfo>();
  const valueCounts: [string, number][] = [];
  for (const name of order) {
    if (companions.has(name)) continue;
    const place = places.get(name) as TensorPlace;
    const stateName = quantized.get(name);
    if (stateName !== undefined) {
      const plan = await quantizedPlan(source, name, place, stateName, places);
      const shape = [...plan.quantized!.state.shape];
      tensors.set(name, { dtype: plan.quantized!.state.quant_type === 'nf4' ? 'NF4' : 'FP4', shape });
      valueCounts.push([TORCH_DTYPES[plan.quantized!.state.dtype] ?? plan.quantized!.state.dtype, shape[0] * shape[1]]);
      plans.push(plan);
      continue;
    }
    const { info } = place;
    if (!isFloatDType(info.dtype)) {
      const scb = name.endsWith('.weight') && places.has(`${name.slice(0, -'.weight'.length)}.SCB`);
      throw new UserError(
        scb
          ? `${place.file}: tensor "${name}" is a bitsandbytes 8-bit weight; 8-bit checkpoints do not load here, so load the unquantised model with quantization.load_in_8bit (or --load_in_8bit).`
          : `${place.file}: tensor "${name}" is stored as ${info.dtype}; only F32, F16 and BF16 tensors are supported.`,
        { file: place.file, field: name },
      );
    }
    tensors.set(name, { dtype: info.dtype, shape: [...info.shape] });
    valueCounts.push([info.dtype, info.shape.reduce((a, d) => a * d, 1)]);
    plans.push({ name, place });
  }
  // Reading shard by shard, in file order, keeps disk and Blob reads sequential.
  const shardOrder = new Map<string, number>();
  for (const name of order) if (!shardOrder.has(places.get(name)!.shard)) shardOrder.set(places.get(name)!.shard, shardOrder.size);
  plans.sort((x, y) => shardOrder.get(x.place.shard)! - shardOrder.get(y.place.shard)! || x.place.info.begin - y.place.info.begin);

  const count = plans.length;
  const planBytes = (p: WeightPlan): number => {
    let n = p.place.info.end - p.place.info.begin;
    for (const part of Object.values(p.quantized?.parts ?? {})) n += part.info.end - part.info.begin;
    return n;
  };
  const totalBytes = plans.reduce((a, p) => a + planBytes(p), 0);

  const read = async (p: TensorPlace): Promise<Uint8Array> => source.readRange(p.shard, p.info.begin, p.info.end);
  const readF32 = async (p: TensorPlace, name: string): Promise<Float32Array> => tensorValues('F32', await read(p), p.file, name, true) as Float32Array;

  const readWeights: OpenModelFolder['readWeights'] = async (onWeight, onProgress) => {
    let index = 0;
    let bytes = 0;
    for (const plan of plans) {
      const { name, place } = plan;
      if (plan.quantized) {
        const { state, parts } = plan.quantized;
        const nested = state.nested
          ? {
              codes: await read(parts.absmax!),
              absmax: await readF32(parts.nested_absmax!, `${name}.nested_absmax`),
              map: await readF32(parts.nested_quant_map!, `${name}.nested_quant_map`),
              offset: state.nested.offset,
              blocksize: state.nested.blocksize,
            }
          : null;
        const data: Bnb4bitWeight = {
          quant_type: state.quant_type,
          dtype: state.dtype,
          shape: [state.shape[0], state.shape[1]],
          blocksize: state.blocksize,
          packed: await read(place),
          quant_map: await readF32(parts.quant_map!, `${name}.quant_map`),
          absmax: nested ? null : await readF32(parts.absmax!, `${name}.absmax`),
          nested,
        };
        await onWeight({ name, dtype: state.quant_type === 'nf4' ? 'NF4' : 'FP4', shape: [...state.shape], data });
      } else {
        const stored = await read(place);
        // readRange's buffer is ours alone, so the values can reuse it rather than be copied.
        const data = tensorValues(place.info.dtype, stored, place.file, name, true);
        await onWeight({ name, dtype: place.info.dtype as FloatDType, shape: [...place.info.shape], data });
      }
      index++;
      bytes += planBytes(plan);
      onProgress?.({ name, index, count, bytes, totalBytes });
    }
  };

  return {
    source,
    ...configs,
    weightsDType: mostValues(valueCounts),
    prequantized,
    tensors,
    readWeights,
  };
}

/**
 * The plan for one 4-bit weight: its quant_state read and checked, and each part it needs
 * present with the dtype and length that state implies.
 */
async function quantizedPlan(source: FileSource, name: string, place: TensorPlace, stateName: string, places: Map<string, TensorPlace>): Promise<WeightPlan> {
  const statePlace = places.get(stateName)!;
  if (statePlace.info.dtype !== 'U8') {
    throw new UserError(`${statePlace.file}: tensor "${stateName}" is stored as ${statePlace.info.dtype}; a quant_state is U8 bytes of JSON.`, { file: statePlace.file, field: stateName });
  }
  const state = parseQuantState(await source.readRange(statePlace.shard, statePlace.info.begin, statePlace.info.end), statePlace.file, stateName);
  if (!stateName.endsWith(state.quant_type)) {
    throw new UserError(`${statePlace.file}: tensor "${stateName}" says quant_type "${state.quant_type}", which its name contradicts.`, { file: statePlace.file, field: stateName });
  }
  const n = state.shape[0] * state.shape[1];
  const blocks = Math.ceil(n / state.blocksize);
  const expect = (part: string, dtype: string, length: number): TensorPlace => {
    const full = part === '' ? name : `${name}.${part}`;
    const p = full === name ? place : places.get(full);
    if (!p) {
      throw new UserError(`${place.file}: the 4-bit weight ${name} has no "${full}" tensor; a bitsandbytes checkpoint saves it beside the weight.`, { file: place.file, field: full });
    }
    const values = p.info.shape.reduce((a, d) => a * d, 1);
    if (p.info.dtype !== dtype || values !== length) {
      throw new UserError(`${p.file}: tensor "${full}" is ${p.info.dtype} [${p.info.shape.join(', ')}] but its quant_state (shape [${state.shape.join(', ')}], blocksize ${state.blocksize}) needs ${dtype} with ${length} values.`, { file: p.file, field: full });
    }
    return p;
  };
  expect('', 'U8', Math.ceil(n / 2));
  const parts: Partial<Record<Companion, TensorPlace>> = { quant_map: expect('quant_map', 'F32', 16) };
  if (state.nested) {
    parts.absmax = expect('absmax', 'U8', blocks);
    parts.nested_absmax = expect('nested_absmax', 'F32', Math.ceil(blocks / state.nested.blocksize));
    parts.nested_quant_map = expect('nested_quant_map', 'F32', 256);
  } else {
    parts.absmax = expect('absmax', 'F32', blocks);
  }
  return { name, place, quantized: { state, parts } };
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
