// Whole-folder weight reads for tests: every weight of a model folder as f32.
// `readAllWeights` goes through the engine's streaming reader (openModelFolder + readWeights);
// `readEagerly` is a second, independent reader (each safetensors file parsed whole, shards found
// through the index JSON) that tests compare the streaming reader against.
import { type FileSource, pathIn } from '../../../src/engine/io/files.ts';
import { openModelFolder, type OpenModelFolder } from '../../../src/engine/io/model_folder.ts';
import { parseSafetensors, tensorToFloat32, valuesToFloat32 } from '../../../src/engine/io/safetensors.ts';

/** One weight as f32 values, with the dtype it is stored in (F32, F16 or BF16). */
export interface F32Weight {
  dtype: string;
  shape: number[];
  data: Float32Array;
}

/**
 * Open a folder and stream every weight, widened to f32. The map lists the weights in the order
 * of `folder.tensors`, not the file order they are read in.
 */
export async function readAllWeights(source: FileSource): Promise<{ folder: OpenModelFolder; weights: Map<string, F32Weight> }> {
  const folder = await openModelFolder(source);
  const read = new Map<string, F32Weight>();
  await folder.readWeights((w) => {
    if (read.has(w.name)) throw new Error(`readWeights handed over "${w.name}" twice`);
    // F32 values are copied so that nothing here aliases a buffer the reader handed over.
    if (w.dtype === 'NF4' || w.dtype === 'FP4') throw new Error(`readAllWeights reads float weights only (${w.name} is ${w.dtype})`);
    const data = w.dtype === 'F32' ? (w.data as Float32Array).slice() : valuesToFloat32(w.dtype, w.data as Uint16Array);
    read.set(w.name, { dtype: w.dtype, shape: [...w.shape], data });
  });
  const weights = new Map<string, F32Weight>();
  for (const name of folder.tensors.keys()) {
    const w = read.get(name);
    if (w === undefined) throw new Error(`readWeights never handed over "${name}"`);
    weights.set(name, w);
  }
  if (read.size !== weights.size) throw new Error('readWeights handed over a weight that folder.tensors does not list');
  return { folder, weights };
}

/** What a model folder holds, read eagerly and independently of `openModelFolder`. */
export interface EagerFolder {
  config: Record<string, unknown>;
  tokenizerJson: Record<string, unknown>;
  tokenizerConfig: Record<string, unknown>;
  generationConfig: Record<string, unknown> | null;
  /** model.safetensors' tensors in header order, or the index's tensors grouped by shard (shards in first-listed order). */
  weights: Map<string, F32Weight>;
  /** The dtype holding the most values; on a tie, the one seen first. */
  weightsDType: string;
}

async function json(source: FileSource, name: string): Promise<Record<string, unknown>> {
  return JSON.parse(new TextDecoder().decode(await source.read(name))) as Record<string, unknown>;
}

/**
 * Every weight of a folder read the eager way: each safetensors file read whole, parsed with
 * `parseSafetensors` and converted with `tensorToFloat32`; shards come from
 * model.safetensors.index.json. Only the refusals of those two functions are made (bad headers,
 * missing tensors, non-float dtypes); the folder-level checks are `openModelFolder`'s alone.
 */
export async function readEagerly(source: FileSource): Promise<EagerFolder> {
  const plan: [shard: string, names: string[] | null][] = [];
  if (source.has('model.safetensors')) plan.push(['model.safetensors', null]);
  else {
    const weightMap = (await json(source, 'model.safetensors.index.json')).weight_map as Record<string, string>;
    const byShard = new Map<string, string[]>();
    for (const [name, shard] of Object.entries(weightMap)) byShard.set(shard, [...(byShard.get(shard) ?? []), name]);
    plan.push(...byShard);
  }
  const weights = new Map<string, F32Weight>();
  for (const [shard, listed] of plan) {
    const st = parseSafetensors(await source.read(shard), pathIn(source, shard));
    for (const name of listed ?? [...st.tensors.keys()]) {
      const data = tensorToFloat32(st, name);
      const info = st.tensors.get(name)!;
      weights.set(name, { dtype: info.dtype, shape: [...info.shape], data });
    }
  }
  const counts = new Map<string, number>();
  for (const w of weights.values()) counts.set(w.dtype, (counts.get(w.dtype) ?? 0) + w.data.length);
  let weightsDType = '';
  for (const [dtype, n] of counts) if (n > (counts.get(weightsDType) ?? -1)) weightsDType = dtype;
  return {
    config: await json(source, 'config.json'),
    tokenizerJson: await json(source, 'tokenizer.json'),
    tokenizerConfig: await json(source, 'tokenizer_config.json'),
    generationConfig: source.has('generation_config.json') ? await json(source, 'generation_config.json') : null,
    weights,
    weightsDType,
  };
}
