import * as tf from '@tensorflow/tfjs';
import { UserError } from '../errors.ts';
import type { Rng } from '../rng.ts';
import { LINEAR_MODULES, linearPath, linearShape, type LinearModule, type ModelConfig } from './config.ts';
import { compileModulePattern, ModulePatternError, type ModulePattern } from './module_pattern.ts';
import { tensorToFloat32, writeSafetensors, type SafetensorsFile, type TensorToWrite } from '../io/safetensors.ts';

/** PEFT's LoraConfig fields that change the computation. */
export interface LoraConfig {
  r: number;
  lora_alpha: number;
  lora_dropout: number;
  target_modules: LinearModule[];
  use_rslora: boolean;
  /** Only these decoder layers get adapters (PEFT's layers_to_transform); null means all. */
  layers_to_transform: number[] | null;
}

export interface LoraPair {
  /** [r, in_features] */
  A: tf.Variable;
  /** [out_features, r] */
  B: tf.Variable;
}

/** `base_model.model.<module path>.lora_A.weight`, as PEFT saves it (adapter name stripped). */
export function peftKey(path: string, which: 'A' | 'B'): string {
  return `base_model.model.${path}.lora_${which}.weight`;
}

export function resolveTargetModules(target: readonly string[] | string): LinearModule[] {
  if (target === 'all-linear') return [...LINEAR_MODULES];
  const list = typeof target === 'string' ? [target] : target;
  return LINEAR_MODULES.filter((m) => list.includes(m));
}

/**
 * A LoRA adapter over the linear layers of one model: y = x Wᵀ + dropout(x) Aᵀ Bᵀ · scale,
 * with scale = lora_alpha / r (lora_alpha / √r with rsLoRA). A and B are the only variables.
 */
export class LoraAdapter {
  readonly config: LoraConfig;
  readonly scale: number;
  /** Keyed by module path, e.g. `model.layers.0.self_attn.q_proj`. */
  readonly modules: Map<string, LoraPair>;

  private constructor(config: LoraConfig, modules: Map<string, LoraPair>) {
    this.config = config;
    this.scale = config.use_rslora ? config.lora_alpha / Math.sqrt(config.r) : config.lora_alpha / config.r;
    this.modules = modules;
  }

  /** PEFT's default initialisation: A Kaiming-uniform (a = √5, so U(±1/√in)), B zero. */
  static init(model: ModelConfig, config: LoraConfig, rng: Rng): LoraAdapter {
    const modules = new Map<string, LoraPair>();
    for (const [path, m] of targetPaths(model, config)) {
      const [out, inp] = linearShape(model, m);
      const bound = 1 / Math.sqrt(inp);
      const A = tf.tidy(() => tf.variable(tf.tensor2d(rng.uniform(config.r * inp, -bound, bound), [config.r, inp]), true));
      const B = tf.tidy(() => tf.variable(tf.zeros([out, config.r]), true));
      modules.set(path, { A, B });
    }
    return new LoraAdapter(config, modules);
  }

  /** An adapter from PEFT tensors (adapter_model.safetensors); every expected key must be there with its shape. */
  static fromSafetensors(model: ModelConfig, config: LoraConfig, st: SafetensorsFile): LoraAdapter {
    const modules = new Map<string, LoraPair>();
    const expected = new Set<string>();
    try {
      for (const [path, m] of targetPaths(model, config)) {
        const [out, inp] = linearShape(model, m);
        const load = (which: 'A' | 'B', shape: [number, number]) => {
          const key = peftKey(path, which);
          expected.add(key);
          const info = st.tensors.get(key);
          if (!info) throw new UserError(`${st.file}: tensor ${key} is missing; adapter_config.json targets ${m} with r=${config.r}.`, { file: st.file, field: key });
          if (info.shape.length !== 2 || info.shape[0] !== shape[0] || info.shape[1] !== shape[1]) {
            throw new UserError(`${st.file}: tensor ${key} has shape [${info.shape}] but this model needs [${shape}] (r=${config.r}); was the adapter trained on another base model?`, { file: st.file, field: key });
          }
          return tf.tidy(() => tf.variable(tf.tensor2d(tensorToFloat32(st, key), shape), true));
        };
        modules.set(path, { A: load('A', [config.r, inp]), B: load('B', [out, config.r]) });
      }
      for (const key of st.tensors.keys()) {
        if (!expected.has(key)) {
          throw new UserError(`${st.file}: tensor ${key} does not belong to a LoRA layer this model and adapter_config.json describe.`, { file: st.file, field: key });
        }
      }
    } catch (e) {
      for (const p of modules.values()) { p.A.dispose(); p.B.dispose(); }
      throw e;
    }
    return new LoraAdapter(config, modules);
  }

  /** Trainable tensors keyed by their PEFT names. */
  variables(): Map<string, tf.Variable> {
    const out = new Map<string, tf.Variable>();
    for (const [path, p] of this.modules) {
      out.set(peftKey(path, 'A'), p.A);
      out.set(peftKey(path, 'B'), p.B);
    }
    return out;
  }

  /** adapter_model.safetensors as PEFT writes it: F32 tensors, metadata {"format": "pt"}. */
  async toSafetensors(): Promise<Uint8Array> {
    const tensors: TensorToWrite[] = [];
    for (const [name, v] of this.variables()) {
      tensors.push({ name, dtype: 'F32', shape: v.shape, data: (await v.data()) as Float32Array });
    }
    return writeSafetensors(tensors, { format: 'pt' });
  }

  /** adapter_config.json with the keys PEFT has written for many releases, so old and new PEFT both load it. */
  adapterConfigJson(base_model_name_or_path: string): Record<string, unknown> {
    const c = this.config;
    return {
      alpha_pattern: {},
      auto_mapping: null,
      base_model_name_or_path,
      bias: 'none',
      fan_in_fan_out: false,
      inference_mode: true,
      init_lora_weights: true,
      layers_pattern: null,
      layers_to_transform: c.layers_to_transform,
      lora_alpha: c.lora_alpha,
      lora_dropout: c.lora_dropout,
      modules_to_save: null,
      peft_type: 'LORA',
      r: c.r,
      rank_pattern: {},
      revision: null,
      target_modules: [...c.target_modules],
      task_type: 'CAUSAL_LM',
      use_dora: false,
      use_rslora: c.use_rslora,
    };
  }

  dispose(): void {
    for (const p of this.modules.values()) {
      p.A.dispose();
      p.B.dispose();
    }
    this.modules.clear();
  }
}

function* targetPaths(model: ModelConfig, config: LoraConfig): Generator<[string, LinearModule]> {
  for (let layer = 0; layer < model.num_hidden_layers; layer++) {
    if (config.layers_to_transform && !config.layers_to_transform.includes(layer)) continue;
    for (const m of config.target_modules) yield [linearPath(layer, m), m];
  }
}

/** Reads adapter_config.json; refuses what we cannot reproduce exactly rather than loading it wrong. */
export function parseAdapterConfig(raw: Record<string, unknown>, file = 'adapter_config.json'): LoraConfig {
  const fail = (field: string, what: string): never => {
    throw new UserError(`${file}: ${what}`, { file, field });
  };
  if (raw.peft_type !== undefined && raw.peft_type !== 'LORA') fail('peft_type', `peft_type ${JSON.stringify(raw.peft_type)} is not supported; only LORA adapters are.`);
  const r = raw.r;
  if (typeof r !== 'number' || !Number.isInteger(r) || r < 1) fail('r', `"r" must be a positive integer (got ${JSON.stringify(r)}).`);
  const alpha = raw.lora_alpha ?? 8;
  if (typeof alpha !== 'number' || !(alpha > 0)) fail('lora_alpha', `"lora_alpha" must be a positive number (got ${JSON.stringify(alpha)}).`);
  if (raw.use_dora === true) fail('use_dora', 'DoRA adapters (use_dora: true) are not supported.');
  for (const key of ['rank_pattern', 'alpha_pattern'] as const) {
    const v = raw[key];
    if (v && typeof v === 'object' && Object.keys(v).length > 0) fail(key, `a non-empty "${key}" is not supported; every layer must share r and lora_alpha.`);
  }
  if (raw.bias !== undefined && raw.bias !== 'none') fail('bias', `bias ${JSON.stringify(raw.bias)} is not supported; only "none" is.`);
  if (Array.isArray(raw.modules_to_save) && raw.modules_to_save.length > 0) fail('modules_to_save', '"modules_to_save" is not supported; only LoRA layers can be loaded.');
  const tm = raw.target_modules;
  let target_modules: LinearModule[];
  if (tm === 'all-linear') target_modules = [...LINEAR_MODULES];
  else if (Array.isArray(tm) && tm.every((x) => typeof x === 'string')) {
    const unknown = tm.filter((x) => !(LINEAR_MODULES as readonly string[]).includes(x));
    if (unknown.length) fail('target_modules', `target module ${unknown[0]} is not supported; LoRA can target ${LINEAR_MODULES.join(', ')}.`);
    target_modules = LINEAR_MODULES.filter((m) => tm.includes(m));
  } else if (typeof tm === 'string') {
    // PEFT matches a string as a regular expression against the full module path (re.fullmatch);
    // the pattern comes from the file, so it runs on a linear-time matcher, never on RegExp.
    let pattern: ModulePattern;
    try {
      pattern = compileModulePattern(tm);
    } catch (e) {
      if (!(e instanceof ModulePatternError)) throw e;
      return fail(
        'target_modules',
        `"target_modules" ${JSON.stringify(tm.length > 80 ? `${tm.slice(0, 80)}…` : tm)} cannot be used: it has ${e.reason}; give a list of module names, "all-linear", or a regular expression made of literals, ".", [classes], "|", groups and the quantifiers ?, *, + or {m,n}.`,
      );
    }
    target_modules = LINEAR_MODULES.filter((m) => pattern.fullMatch(linearPath(0, m)) || pattern.fullMatch(m));
  } else {
    return fail('target_modules', '"target_modules" must be a list of module names or "all-linear".');
  }
  if (target_modules.length === 0) fail('target_modules', '"target_modules" selects no linear layer of this model.');
  const ltt = raw.layers_to_transform;
  const layers_to_transform = ltt === null || ltt === undefined ? null : typeof ltt === 'number' ? [ltt] : Array.isArray(ltt) ? (ltt as number[]) : fail('layers_to_transform', '"layers_to_transform" must be a list of layer indices or null.');
  const dropout = raw.lora_dropout ?? 0;
  return {
    r: r as number,
    lora_alpha: alpha as number,
    lora_dropout: typeof dropout === 'number' ? dropout : 0,
    target_modules,
    use_rslora: raw.use_rslora === true,
    layers_to_transform,
  };
}
