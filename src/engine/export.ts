/**
 * A model folder as transformers saves it, from the weights on the backend: a freeze/full run's
 * trained model, or a LoRA adapter merged into its base.
 */
import * as tf from '@tensorflow/tfjs';
import type { OpenModelFolder } from './io/model_folder.ts';
import { writeSafetensors, type TensorToWrite } from './io/safetensors.ts';
import { expectedWeights, type CausalLM } from './model/llama.ts';
import type { LoraAdapter } from './model/lora.ts';

const DTYPE_NAMES: Record<string, string> = { F32: 'float32', F16: 'float16', BF16: 'bfloat16' };

/**
 * A complete model folder as transformers saves it: config.json, generation_config.json,
 * tokenizer files and model.safetensors in `dtype`. With an adapter, its product is merged
 * into each target weight first: W' = W + scale·B·A.
 */
export async function modelFiles(folder: OpenModelFolder, model: CausalLM, dtype: 'F32' | 'F16' | 'BF16', adapter: LoraAdapter | null = null): Promise<Record<string, Uint8Array>> {
  const enc = new TextEncoder();
  const tensors: TensorToWrite[] = [];
  for (const [name, shape] of expectedWeights(model.config)) {
    tensors.push({ name, dtype, shape, data: await mergedWeight(model, adapter, name) });
  }
  // The merged weights are plain floats: a pre-quantised base's quantization_config goes.
  const { quantization_config: _, ...rest } = folder.config;
  const config = { ...rest, torch_dtype: DTYPE_NAMES[dtype] };
  const files: Record<string, Uint8Array> = {
    'config.json': enc.encode(JSON.stringify(config, null, 2)),
    'model.safetensors': writeSafetensors(tensors, { format: 'pt' }),
    'tokenizer.json': enc.encode(JSON.stringify(folder.tokenizerJson)),
    'tokenizer_config.json': enc.encode(JSON.stringify(folder.tokenizerConfig, null, 2)),
  };
  if (folder.generationConfig) files['generation_config.json'] = enc.encode(JSON.stringify(folder.generationConfig, null, 2));
  return files;
}

/**
 * A weight's values in float32 (a 16-bit or quantised one widened), with the adapter's product
 * merged in where the adapter has that layer: W' = W + scale·B·A. Every export of a merged model
 * (safetensors folder, GGUF) takes its weights from here.
 */
export async function mergedWeight(model: CausalLM, adapter: LoraAdapter | null, name: string): Promise<Float32Array> {
  const lora = adapter?.modules.get(name.replace(/\.weight$/, ''));
  const merged = tf.tidy(() => {
    const w = model.float32(name);
    return lora && adapter ? tf.add(w, tf.mul(tf.matMul(lora.B, lora.A), adapter.scale)) : w;
  });
  const data = (await merged.data()) as Float32Array;
  merged.dispose();
  // A copy: a backend may hand back its own storage, which the dispose above frees.
  return Float32Array.from(data);
}

/** The dtype a merged model is saved in: the base model's own (bfloat16 stays bfloat16). */
export function savedDType(folder: OpenModelFolder): 'F32' | 'F16' | 'BF16' {
  return folder.weightsDType === 'BF16' || folder.weightsDType === 'F16' ? folder.weightsDType : 'F32';
}
