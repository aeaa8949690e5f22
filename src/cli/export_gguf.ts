/**
 * `finetune export-gguf --model DIR [--adapter DIR] --out FILE.gguf [--outtype f32|f16|bf16|q8_0] [--lora]`:
 * the model, with the adapter merged in, as one GGUF file for llama.cpp (what its
 * convert_hf_to_gguf.py writes); with --lora, the adapter alone as a GGUF LoRA (what
 * convert_lora_to_gguf.py writes), for llama.cpp to apply to the base model's GGUF.
 */
import { existsSync, statSync } from 'node:fs';
import { mkdir, stat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { initBackend } from '../engine/backend/index.ts';
import { UserError } from '../engine/errors.ts';
import { savedDType } from '../engine/export.ts';
import { GGUF_OUTTYPES, ggufLoraFile, ggufModelFile, type GGUFOutType } from '../engine/export_gguf.ts';
import { loadAdapter } from '../engine/io/peft.ts';
import { checkFiniteAdapter } from '../engine/model/check.ts';
import type { LoraAdapter } from '../engine/model/lora.ts';
import { loadModel } from '../engine/run.ts';
import { checkFlags, parseArgs, required } from './args.ts';
import { nodeFolder, writeFileAtomic } from './fs_files.ts';
import { loadProgress } from './progress.ts';

const COMMAND = 'export-gguf';

function folder(dir: string, what: string) {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new UserError(`${dir}: no such folder (the ${what}).`, { file: dir });
  return nodeFolder(dir);
}

/**
 * Without --outtype the model keeps its own dtype (f32, f16 or bf16, the base's as `finetune merge`
 * writes it): nothing is rounded that was not rounded before, and bf16 is not squeezed into f16's
 * narrower range. A LoRA GGUF is F32, convert_lora_to_gguf.py's default, whatever the base.
 */
export async function exportGgufCommand(argv: string[]): Promise<void> {
  const args = parseArgs(argv, COMMAND, ['lora']);
  checkFlags(args, COMMAND, ['model', 'adapter', 'out', 'outtype', 'lora']);
  if (args.positionals.length > 0) throw new UserError(`finetune ${COMMAND}: unexpected argument "${args.positionals[0]}".`);
  const modelDir = required(args, COMMAND, 'model');
  const out = required(args, COMMAND, 'out');
  const adapterDir = args.flags.get('adapter');
  const lora = args.flags.has('lora');
  const outtypeFlag = args.flags.get('outtype');
  if (outtypeFlag !== undefined && !(GGUF_OUTTYPES as readonly string[]).includes(outtypeFlag)) {
    throw new UserError(`finetune ${COMMAND}: --outtype must be ${GGUF_OUTTYPES.join(', ')} (got "${outtypeFlag}").`, { field: 'outtype' });
  }
  if (lora && adapterDir === undefined) throw new UserError(`finetune ${COMMAND}: --lora writes the adapter alone, so it needs --adapter DIR.`, { field: 'adapter' });
  if (lora && outtypeFlag !== undefined && outtypeFlag !== 'f32') {
    throw new UserError(`finetune ${COMMAND}: a GGUF LoRA is written in f32 (as convert_lora_to_gguf.py writes it); --outtype ${outtypeFlag} applies to a merged model, without --lora.`, { field: 'outtype' });
  }
  if (existsSync(out) && statSync(out).isDirectory()) throw new UserError(`finetune ${COMMAND}: --out ${out} is a folder; give the GGUF file to write, e.g. ${out.replace(/\/+$/, '')}/model.gguf.`, { field: 'out' });
  const modelSource = folder(modelDir, 'model');
  const adapterSource = adapterDir === undefined ? null : folder(adapterDir, 'adapter');

  await initBackend('cpu');
  const { folder: opened, model } = await loadModel(modelSource, { onProgress: loadProgress(process.stderr) });
  let adapter: LoraAdapter | null = null;
  try {
    if (adapterSource) {
      adapter = await loadAdapter(model, adapterSource);
      await checkFiniteAdapter(adapter, adapterSource.location);
    }
    const outtype = (outtypeFlag ?? savedDType(opened).toLowerCase()) as GGUFOutType;
    const parts = lora && adapter ? await ggufLoraFile(opened, model, adapter) : await ggufModelFile(opened, model, adapter, outtype);
    await mkdir(dirname(resolve(out)), { recursive: true });
    await writeFileAtomic(out, parts);
    const size = `${((await stat(out)).size / 2 ** 20).toFixed(1)} MiB`;
    console.log(lora ? `GGUF LoRA adapter written to ${out} (f32, ${size}); load it beside the base model's GGUF.` : `GGUF model written to ${out} (${outtype}${adapter ? ', adapter merged' : ''}, ${size}).`);
    const q = model.quantization();
    if (q && !lora) console.log(`the base was quantised (${q.kind}): the GGUF holds its dequantised weights${adapter ? ' plus the LoRA delta' : ''}.`);
  } finally {
    adapter?.dispose();
    model.dispose();
  }
}
