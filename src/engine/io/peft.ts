/**
 * PEFT adapter folders, read and written as PEFT's save_pretrained leaves them:
 * adapter_config.json and adapter_model.safetensors.
 */
import { UserError } from '../errors.ts';
import { pathIn, readJsonObject, type FileSource } from './files.ts';
import { parseSafetensors } from './safetensors.ts';
import type { CausalLM } from '../model/llama.ts';
import { LoraAdapter, parseAdapterConfig } from '../model/lora.ts';

/** A PEFT adapter folder (adapter_config.json + adapter_model.safetensors) for this model. */
export async function loadAdapter(model: CausalLM, source: FileSource): Promise<LoraAdapter> {
  for (const name of ['adapter_config.json', 'adapter_model.safetensors']) {
    if (!source.has(name)) {
      const hint = source.has('adapter_model.bin') ? ' (adapter_model.bin pickles are not supported; save with safetensors)' : '';
      throw new UserError(`${pathIn(source, name)} is missing: an adapter folder needs adapter_config.json and adapter_model.safetensors${hint}.`, { file: pathIn(source, name) });
    }
  }
  const raw = await readJsonObject(source, 'adapter_config.json');
  const config = parseAdapterConfig(raw, pathIn(source, 'adapter_config.json'));
  const st = parseSafetensors(await source.read('adapter_model.safetensors'), pathIn(source, 'adapter_model.safetensors'));
  return LoraAdapter.fromSafetensors(model.config, config, st);
}

export async function adapterFiles(adapter: LoraAdapter, baseModel: string): Promise<Record<string, Uint8Array>> {
  return {
    'adapter_model.safetensors': await adapter.toSafetensors(),
    'adapter_config.json': new TextEncoder().encode(JSON.stringify(adapter.adapterConfigJson(baseModel), null, 2)),
  };
}
