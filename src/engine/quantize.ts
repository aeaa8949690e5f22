/**
 * `finetune quantize`: a model folder rewritten as transformers saves a bitsandbytes 4-bit model
 * (`model.save_pretrained` after `load_in_4bit`), the layout pre-quantised Hub checkpoints such as
 * unsloth/Qwen2.5-0.5B-Instruct-bnb-4bit have. The decoder's projections become 4-bit codes with
 * their quantisation state (`io/bnb.ts`); every other weight is copied byte for byte in its stored
 * dtype; config.json gains `quantization_config`. Weights stream in one at a time, so the float32
 * values of only one weight exist at once.
 */
import { UserError } from './errors.ts';
import { bnb4bitTensors, quantizationConfigJson, type PrequantizedConfig } from './io/bnb.ts';
import { floatValues, type LoadProgress, type OpenModelFolder } from './io/model_folder.ts';
import { writeSafetensors, type TensorToWrite } from './io/safetensors.ts';
import { parseModelConfig } from './model/config.ts';
import { bnb4bitWeight, isQuantizedProjection } from './model/quantized.ts';

const TORCH_NAMES: Record<string, string> = { F32: 'float32', F16: 'float16', BF16: 'bfloat16' };

/** Files of a model folder that are weights (rewritten or dropped), not copied across. */
const WEIGHT_FILE = /\.(safetensors|bin|pt|pth|gguf|onnx|h5|msgpack)$|^model\.safetensors\.index\.json$/;

/**
 * The files of the quantised folder: model.safetensors (tensors in name order), config.json with
 * quantization_config, and the folder's other top-level files (tokenizer, generation config,
 * licence) as they are. Sub-folders (such as Llama's `original/`) are left out.
 */
export async function quantizedFolderFiles(folder: OpenModelFolder, q: PrequantizedConfig, onProgress?: (p: LoadProgress) => void): Promise<Record<string, Uint8Array>> {
  const where = folder.source.location;
  if (folder.prequantized) {
    throw new UserError(`${where} is already quantised to 4 bits (config.json has a bitsandbytes quantization_config); quantise the original model instead.`, { file: where });
  }
  // The architecture must be one the engine loads, so the folder written here loads too.
  parseModelConfig(folder.config, `${where}/config.json`);
  const tensors: TensorToWrite[] = [];
  let quantized = 0;
  await folder.readWeights((w) => {
    if (isQuantizedProjection(w.name)) {
      const values = floatValues(w, where);
      const weight = bnb4bitWeight(values, [w.shape[0], w.shape[1]], q.quant_type, q.double_quant, TORCH_NAMES[w.dtype]);
      tensors.push(...bnb4bitTensors(w.name, weight));
      quantized++;
    } else {
      // The stored bytes: on a little-endian host the values are a view of them.
      const data = w.data as Float32Array | Uint16Array;
      tensors.push({ name: w.name, dtype: w.dtype as 'F32' | 'F16' | 'BF16', shape: w.shape, bytes: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) });
    }
  }, onProgress);
  if (quantized === 0) {
    throw new UserError(`${where}/model.safetensors has no decoder projections (model.layers.N.self_attn/mlp.*_proj.weight) to quantise.`, { file: `${where}/model.safetensors` });
  }
  tensors.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const computeDtype = TORCH_NAMES[folder.weightsDType] ?? 'float32';
  const outConfig = { ...folder.config, quantization_config: quantizationConfigJson(q, computeDtype) };
  const files: Record<string, Uint8Array> = {};
  for (const name of folder.source.list()) {
    if (name.includes('/') || WEIGHT_FILE.test(name) || name === 'config.json') continue;
    files[name] = await folder.source.read(name);
  }
  files['config.json'] = new TextEncoder().encode(JSON.stringify(outConfig, null, 2) + '\n');
  files['model.safetensors'] = writeSafetensors(tensors, { format: 'pt' });
  return files;
}
