import { UserError } from '../errors.ts';

/**
 * The architectures we run. All three are the Llama decoder with small differences:
 * Qwen2 adds a bias to q/k/v, Qwen3 adds a per-head RMSNorm on q and k before RoPE.
 */
export const SUPPORTED_ARCHITECTURES = ['LlamaForCausalLM', 'Qwen2ForCausalLM', 'Qwen3ForCausalLM'] as const;
export type Architecture = (typeof SUPPORTED_ARCHITECTURES)[number];

export type RopeScaling =
  | { rope_type: 'llama3'; factor: number; low_freq_factor: number; high_freq_factor: number; original_max_position_embeddings: number }
  | { rope_type: 'linear'; factor: number };

/** The fields of a transformers config.json that the forward pass reads, with defaults filled in. */
export interface ModelConfig {
  architecture: Architecture;
  model_type: string;
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads: number;
  head_dim: number;
  vocab_size: number;
  max_position_embeddings: number;
  rms_norm_eps: number;
  rope_theta: number;
  rope_scaling: RopeScaling | null;
  tie_word_embeddings: boolean;
  /** Bias on q_proj, k_proj, v_proj. */
  qkv_bias: boolean;
  /** Bias on o_proj. */
  o_bias: boolean;
  /** Bias on gate_proj, up_proj, down_proj. */
  mlp_bias: boolean;
  /** Qwen3's q_norm / k_norm. */
  qk_norm: boolean;
  torch_dtype: string;
  /** The original JSON, written back unchanged when a merged model is saved. */
  raw: Record<string, unknown>;
}

const MODEL_TYPES: Record<Architecture, string> = {
  LlamaForCausalLM: 'llama',
  Qwen2ForCausalLM: 'qwen2',
  Qwen3ForCausalLM: 'qwen3',
};

export function parseModelConfig(raw: Record<string, unknown>, file = 'config.json'): ModelConfig {
  const archs = raw.architectures;
  const arch = Array.isArray(archs) && typeof archs[0] === 'string' ? archs[0] : undefined;
  const supported = SUPPORTED_ARCHITECTURES.join(', ');
  if (!arch) {
    throw new UserError(`${file}: "architectures" is missing; supported architectures are ${supported}.`, { file, field: 'architectures' });
  }
  if (!(SUPPORTED_ARCHITECTURES as readonly string[]).includes(arch)) {
    throw new UserError(`${file}: architecture ${arch} is not supported; supported architectures are ${supported}.`, { file, field: 'architectures' });
  }
  const architecture = arch as Architecture;

  const int = (key: string, fallback?: number): number => {
    const v = raw[key];
    if (v === undefined || v === null) {
      if (fallback !== undefined) return fallback;
      throw new UserError(`${file}: "${key}" is missing; ${arch} needs it.`, { file, field: key });
    }
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) {
      throw new UserError(`${file}: "${key}" must be a positive integer (got ${JSON.stringify(v)}).`, { file, field: key });
    }
    return v;
  };
  const num = (key: string, fallback: number): number => {
    const v = raw[key] ?? fallback;
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
      throw new UserError(`${file}: "${key}" must be a positive number (got ${JSON.stringify(v)}).`, { file, field: key });
    }
    return v;
  };
  const bool = (key: string, fallback: boolean): boolean => {
    const v = raw[key] ?? fallback;
    if (typeof v !== 'boolean') throw new UserError(`${file}: "${key}" must be true or false (got ${JSON.stringify(v)}).`, { file, field: key });
    return v;
  };

  const hidden_size = int('hidden_size');
  const num_attention_heads = int('num_attention_heads');
  const num_key_value_heads = int('num_key_value_heads', num_attention_heads);
  if (num_attention_heads % num_key_value_heads !== 0) {
    throw new UserError(`${file}: "num_attention_heads" (${num_attention_heads}) must be a multiple of "num_key_value_heads" (${num_key_value_heads}).`, { file, field: 'num_key_value_heads' });
  }
  const head_dim = int('head_dim', Math.floor(hidden_size / num_attention_heads));
  if (head_dim % 2 !== 0) throw new UserError(`${file}: "head_dim" must be even for rotary embeddings (got ${head_dim}).`, { file, field: 'head_dim' });

  const act = raw.hidden_act ?? 'silu';
  if (act !== 'silu') throw new UserError(`${file}: "hidden_act" ${JSON.stringify(act)} is not supported; only "silu" is.`, { file, field: 'hidden_act' });

  const attention_bias = bool('attention_bias', false);
  return {
    architecture,
    model_type: typeof raw.model_type === 'string' ? raw.model_type : MODEL_TYPES[architecture],
    hidden_size,
    intermediate_size: int('intermediate_size'),
    num_hidden_layers: int('num_hidden_layers'),
    num_attention_heads,
    num_key_value_heads,
    head_dim,
    vocab_size: int('vocab_size'),
    max_position_embeddings: int('max_position_embeddings', 2048),
    rms_norm_eps: num('rms_norm_eps', 1e-6),
    rope_theta: num('rope_theta', 10000),
    rope_scaling: parseRopeScaling(raw.rope_scaling, file),
    tie_word_embeddings: bool('tie_word_embeddings', false),
    qkv_bias: architecture === 'Qwen2ForCausalLM' ? true : attention_bias,
    o_bias: architecture === 'Qwen2ForCausalLM' ? false : attention_bias,
    mlp_bias: architecture === 'LlamaForCausalLM' ? bool('mlp_bias', false) : false,
    qk_norm: architecture === 'Qwen3ForCausalLM',
    torch_dtype: typeof raw.torch_dtype === 'string' ? raw.torch_dtype : typeof raw.dtype === 'string' ? (raw.dtype as string) : 'float32',
    raw,
  };
}

function parseRopeScaling(v: unknown, file: string): RopeScaling | null {
  if (v === undefined || v === null) return null;
  if (typeof v !== 'object') throw new UserError(`${file}: "rope_scaling" must be an object or null.`, { file, field: 'rope_scaling' });
  const r = v as Record<string, unknown>;
  const type = r.rope_type ?? r.type;
  const need = (key: string): number => {
    const x = r[key];
    if (typeof x !== 'number' || !(x > 0)) {
      throw new UserError(`${file}: "rope_scaling.${key}" must be a positive number for rope_type ${String(type)}.`, { file, field: `rope_scaling.${key}` });
    }
    return x;
  };
  if (type === 'default') return null;
  if (type === 'llama3') {
    return {
      rope_type: 'llama3',
      factor: need('factor'),
      low_freq_factor: need('low_freq_factor'),
      high_freq_factor: need('high_freq_factor'),
      original_max_position_embeddings: need('original_max_position_embeddings'),
    };
  }
  if (type === 'linear') return { rope_type: 'linear', factor: need('factor') };
  throw new UserError(`${file}: rope_scaling type ${JSON.stringify(type)} is not supported; supported types are llama3 and linear.`, { file, field: 'rope_scaling' });
}

/** The names of the linear layers LoRA can target, as PEFT names them. */
export const LINEAR_MODULES = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;
export type LinearModule = (typeof LINEAR_MODULES)[number];

/** [out_features, in_features] of each linear layer, as nn.Linear stores its weight. */
export function linearShape(c: ModelConfig, m: LinearModule): [number, number] {
  const q = c.num_attention_heads * c.head_dim;
  const kv = c.num_key_value_heads * c.head_dim;
  switch (m) {
    case 'q_proj': return [q, c.hidden_size];
    case 'k_proj': return [kv, c.hidden_size];
    case 'v_proj': return [kv, c.hidden_size];
    case 'o_proj': return [c.hidden_size, q];
    case 'gate_proj': return [c.intermediate_size, c.hidden_size];
    case 'up_proj': return [c.intermediate_size, c.hidden_size];
    case 'down_proj': return [c.hidden_size, c.intermediate_size];
  }
}

/** The module path of a linear layer, as in transformers' state dict. */
export function linearPath(layer: number, m: LinearModule): string {
  const block = m === 'gate_proj' || m === 'up_proj' || m === 'down_proj' ? 'mlp' : 'self_attn';
  return `model.layers.${layer}.${block}.${m}`;
}
