import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseSafetensors, tensorToFloat32, tensorValues, type FloatDType, type SafetensorsFile } from '../../../src/engine/io/safetensors.ts';
import type { RawWeight } from '../../../src/engine/io/model_folder.ts';
import { CausalLM } from '../../../src/engine/model/llama.ts';

export const GOLDEN_CASES = ['llama_f32', 'llama_bf16', 'qwen2_f32', 'qwen2_bf16', 'qwen3_f32', 'qwen3_bf16'] as const;

export interface Golden {
  input_ids: number[][];
  attention_mask: number[][];
  labels: number[][];
  pad_token_id: number;
  loss: number;
  num_items: number;
  lora: { r: number; lora_alpha: number; lora_dropout: number; target_modules: string[]; scaling: number };
  lora_grad_loss: number;
  train: {
    lr: number;
    betas: [number, number];
    eps: number;
    weight_decay: number;
    max_grad_norm: number;
    steps: number;
    micro_batches: number[][];
    losses: number[];
    grad_norms: number[];
  };
}

export function goldenDir(name: string): string {
  return fileURLToPath(new URL(`../../fixtures/golden/${name}/`, import.meta.url));
}

export function readGoldenSafetensors(name: string, file: string): SafetensorsFile {
  return parseSafetensors(new Uint8Array(readFileSync(goldenDir(name) + file)), file);
}

/** A golden case's model; `storage` "auto" keeps a BF16 case's matrices 16-bit, "float32" widens them. */
export async function loadGolden(name: string, storage: 'auto' | 'float32' = 'auto'): Promise<{ golden: Golden; model: CausalLM }> {
  const dir = goldenDir(name);
  const golden = JSON.parse(readFileSync(dir + 'golden.json', 'utf8')) as Golden;
  const config = JSON.parse(readFileSync(dir + 'config.json', 'utf8')) as Record<string, unknown>;
  const st = readGoldenSafetensors(name, 'model.safetensors');
  const tensors = new Map([...st.tensors].map(([k, t]) => [k, { dtype: t.dtype as FloatDType, shape: t.shape }]));
  const readWeights = async (onWeight: (w: RawWeight) => void | Promise<void>) => {
    for (const [k, t] of st.tensors) await onWeight({ name: k, dtype: t.dtype as FloatDType, shape: t.shape, data: tensorValues(t.dtype, st.bytes.subarray(t.begin, t.end), st.file, k) });
  };
  const model = await CausalLM.load(config, { tensors, readWeights }, dir, { storage });
  return { golden, model };
}

export function allTensors(st: SafetensorsFile): Map<string, Float32Array> {
  return new Map([...st.tensors.keys()].map((k) => [k, tensorToFloat32(st, k)]));
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}
