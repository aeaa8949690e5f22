/**
 * The Llama-family decoder (Llama 3.x / SmolLM2, Qwen2, Qwen3), readable top to bottom against
 * transformers' modeling_llama.py. Tensor names are Hugging Face's. Frozen weights are plain
 * tensors; only what is being trained is a tf.Variable, so the tape never computes a gradient
 * for a frozen weight.
 */
import * as tf from '@tensorflow/tfjs';
import { UserError } from '../errors.ts';
import { LINEAR_MODULES, linearPath, linearShape, parseModelConfig, type LinearModule, type ModelConfig } from './config.ts';
import type { LoraAdapter } from './lora.ts';
import { frozenLinear, gatherRows } from './ops.ts';
import type { ModelFolder, WeightTensor } from '../io/model_folder.ts';

/** Keys and values of past positions, one entry per layer, each [batch, kv_heads, past, head_dim]. */
export interface KVCache {
  keys: tf.Tensor4D[];
  values: tf.Tensor4D[];
}

export interface ForwardOptions {
  /** [batch, past + seq]: 1 for real tokens, 0 for padding. Omitted: every position is real. */
  attentionMask?: tf.Tensor2D;
  /** [batch, seq] positions for RoPE. Omitted: past .. past + seq - 1. */
  positionIds?: tf.Tensor2D;
  /** Past keys and values; the new ones are appended to it (the caller keeps and disposes them). */
  cache?: KVCache;
  /** LoRA adapter to apply; null or omitted runs the base model (the DPO/KTO reference). */
  adapter?: LoraAdapter | null;
  /** A seed per dropout mask while training; omitted means no dropout (evaluation, generation). */
  dropoutSeed?: () => number;
}

export class CausalLM {
  readonly config: ModelConfig;
  /** Every weight by its Hugging Face name; `lm_head.weight` is absent when tied. */
  readonly params: Map<string, tf.Tensor>;
  private readonly invFreq: Float32Array;
  /** cos and sin of the rotary angles of positions 0 .. length-1, [length, head_dim / 2]; see `rope`. */
  private ropeTable: { length: number; cos: tf.Tensor2D; sin: tf.Tensor2D } | null = null;

  constructor(config: ModelConfig, params: Map<string, tf.Tensor>) {
    this.config = config;
    this.params = params;
    this.invFreq = ropeInverseFrequencies(config);
  }

  static fromFolder(folder: ModelFolder): CausalLM {
    return CausalLM.fromWeights(folder.config, folder.weights, folder.source.location);
  }

  /** A model from a parsed config.json and its weights; `location` names the folder in messages. */
  static fromWeights(rawConfig: Record<string, unknown>, weights: Map<string, WeightTensor>, location: string): CausalLM {
    const dir = location ? `${location.replace(/\/$/, '')}/` : '';
    const config = parseModelConfig(rawConfig, `${dir}config.json`);
    const where = `${dir}model.safetensors`;
    const params = new Map<string, tf.Tensor>();
    try {
      for (const [name, shape] of expectedWeights(config)) {
        const w = weights.get(name);
        if (!w) {
          throw new UserError(`${where}: weight ${name} is missing; a ${config.architecture} with this config.json needs it.`, { file: where, field: name });
        }
        if (w.shape.length !== shape.length || w.shape.some((d, i) => d !== shape[i])) {
          throw new UserError(`${where}: weight ${name} has shape [${w.shape}] but config.json implies [${shape}].`, { file: where, field: name });
        }
        params.set(name, tf.tensor(w.data, shape, 'float32'));
      }
    } catch (e) {
      for (const t of params.values()) t.dispose();
      throw e;
    }
    return new CausalLM(config, params);
  }

  get lmHead(): tf.Tensor2D {
    return this.weight(this.config.tie_word_embeddings ? 'model.embed_tokens.weight' : 'lm_head.weight') as tf.Tensor2D;
  }

  weight(name: string): tf.Tensor {
    const t = this.params.get(name);
    if (!t) throw new Error(`no weight ${name}`);
    return t;
  }

  /** Turns the named weights into variables (full or partial fine-tuning); returns them by name. */
  makeTrainable(names: string[]): Map<string, tf.Variable> {
    const out = new Map<string, tf.Variable>();
    for (const name of names) {
      const t = this.weight(name);
      const v = t instanceof tf.Variable ? t : tf.variable(t, true);
      if (v !== t) t.dispose();
      this.params.set(name, v);
      out.set(name, v);
    }
    return out;
  }

  /** Final hidden states [batch, seq, hidden] (after the last norm); `logits` turns them into scores. */
  forward(inputIds: tf.Tensor2D, opts: ForwardOptions = {}): tf.Tensor3D {
    const c = this.config;
    const [B, T] = inputIds.shape;
    const past = opts.cache && opts.cache.keys.length > 0 ? opts.cache.keys[0].shape[2] : 0;
    const positions = opts.positionIds ?? tf.tidy(() => tf.tile(tf.expandDims(tf.range(past, past + T, 1, 'int32'), 0), [B, 1]) as tf.Tensor2D);
    // Positions count real tokens only, so none reaches past + T.
    const [cos, sin] = this.rope(positions, past + T);
    const bias = attentionBias(B, T, past, opts.attentionMask, c.num_attention_heads / c.num_key_value_heads);

    let h = tf.reshape(gatherRows(this.weight('model.embed_tokens.weight') as tf.Tensor2D, tf.reshape(inputIds, [-1])), [B, T, c.hidden_size]) as tf.Tensor3D;
    for (let i = 0; i < c.num_hidden_layers; i++) {
      const p = `model.layers.${i}`;
      const x = rmsNorm(h, this.weight(`${p}.input_layernorm.weight`), c.rms_norm_eps);
      h = tf.add(h, this.attention(i, x, cos, sin, bias, opts));
      const y = rmsNorm(h, this.weight(`${p}.post_attention_layernorm.weight`), c.rms_norm_eps);
      h = tf.add(h, this.mlp(i, y, opts));
    }
    return rmsNorm(h, this.weight('model.norm.weight'), c.rms_norm_eps);
  }

  /** Scores over the vocabulary for hidden states of any leading shape. */
  logits(hidden: tf.Tensor): tf.Tensor {
    const H = this.config.hidden_size;
    const flat = tf.reshape(hidden, [-1, H]);
    const out = tf.matMul(flat, this.lmHead, false, true);
    return tf.reshape(out, [...hidden.shape.slice(0, -1), this.config.vocab_size]);
  }

  private attention(i: number, x: tf.Tensor3D, cos: tf.Tensor4D, sin: tf.Tensor4D, bias: tf.Tensor4D, opts: ForwardOptions): tf.Tensor3D {
    const c = this.config;
    const [B, T] = x.shape;
    const D = c.head_dim;
    const nKV = c.num_key_value_heads;
    const groups = c.num_attention_heads / nKV;
    const p = `model.layers.${i}.self_attn`;

    // [B, T, heads·D] → [B, heads, T, D]
    const heads = (t: tf.Tensor, n: number) => tf.transpose(tf.reshape(t, [B, T, n, D]), [0, 2, 1, 3]) as tf.Tensor4D;
    let q = heads(this.linear(i, 'q_proj', x, opts), c.num_attention_heads);
    let k = heads(this.linear(i, 'k_proj', x, opts), nKV);
    let v = heads(this.linear(i, 'v_proj', x, opts), nKV);
    if (c.qk_norm) {
      q = rmsNorm(q, this.weight(`${p}.q_norm.weight`), c.rms_norm_eps);
      k = rmsNorm(k, this.weight(`${p}.k_norm.weight`), c.rms_norm_eps);
    }
    q = applyRope(q, cos, sin);
    k = applyRope(k, cos, sin);
    if (opts.cache) {
      if (opts.cache.keys[i]) {
        k = tf.concat([opts.cache.keys[i], k], 2);
        v = tf.concat([opts.cache.values[i], v], 2);
      }
      opts.cache.keys[i] = k;
      opts.cache.values[i] = v;
    }
    // Grouped-query attention without copying keys: the query heads that share a kv head are
    // stacked along the sequence axis, [B, kv, groups·T, D], head h reading kv head ⌊h / groups⌋.
    const qg = tf.reshape(q, [B, nKV, groups * T, D]);
    const scores = tf.add(tf.mul(tf.matMul(qg, k, false, true), 1 / Math.sqrt(D)), bias);
    const probs = tf.softmax(scores);
    const out = tf.reshape(tf.matMul(probs, v), [B, c.num_attention_heads, T, D]);
    const merged = tf.reshape(tf.transpose(out, [0, 2, 1, 3]), [B, T, c.num_attention_heads * D]) as tf.Tensor3D;
    return this.linear(i, 'o_proj', merged, opts);
  }

  private mlp(i: number, x: tf.Tensor3D, opts: ForwardOptions): tf.Tensor3D {
    const gate = this.linear(i, 'gate_proj', x, opts);
    const up = this.linear(i, 'up_proj', x, opts);
    return this.linear(i, 'down_proj', tf.mul(tf.mul(gate, tf.sigmoid(gate)), up) as tf.Tensor3D, opts);
  }

  /** nn.Linear (y = x Wᵀ + b) plus, where the adapter has this layer, LoRA's dropout(x) Aᵀ Bᵀ · scale. */
  private linear(layer: number, m: LinearModule, x: tf.Tensor3D, opts: ForwardOptions): tf.Tensor3D {
    const path = linearPath(layer, m);
    const [B, T, inp] = x.shape;
    const x2 = tf.reshape(x, [B * T, inp]) as tf.Tensor2D;
    const W = this.weight(`${path}.weight`) as tf.Tensor2D;
    let y: tf.Tensor2D = W instanceof tf.Variable ? tf.matMul(x2, W, false, true) : frozenLinear(x2, W);
    const b = this.params.get(`${path}.bias`);
    if (b) y = tf.add(y, b);
    const lora = opts.adapter?.modules.get(path);
    if (lora && opts.adapter) {
      const p = opts.adapter.config.lora_dropout;
      const xd = p > 0 && opts.dropoutSeed ? tf.dropout(x2, p, undefined, opts.dropoutSeed()) : x2;
      const delta = tf.matMul(tf.matMul(xd, lora.A, false, true), lora.B, false, true);
      y = tf.add(y, tf.mul(delta, opts.adapter.scale));
    }
    return tf.reshape(y, [B, T, W.shape[0]]);
  }

  /**
   * cos and sin of the rotary angles for each position, [B, 1, T, head_dim], for positions below
   * `length`. They come from tables computed on the host, as torch computes them (the float32
   * angle, then its cos and sin): GPU sin and cos are approximations (WGSL promises only 2^-11
   * absolute, and SwiftShader's are off by 2e-4 at a few radians), which left every layer's
   * attention 1e-4 away from the CPU's. The tables grow by doubling, so only a few sizes are ever made.
   */
  private rope(positions: tf.Tensor2D, length: number): [tf.Tensor4D, tf.Tensor4D] {
    if (this.ropeTable === null || this.ropeTable.length < length) {
      const n = Math.max(64, 2 ** Math.ceil(Math.log2(length)));
      const half = this.invFreq.length;
      const cos = new Float32Array(n * half);
      const sin = new Float32Array(n * half);
      for (let p = 0; p < n; p++) {
        for (let i = 0; i < half; i++) {
          const angle = Math.fround(p * this.invFreq[i]);
          cos[p * half + i] = Math.cos(angle);
          sin[p * half + i] = Math.sin(angle);
        }
      }
      this.ropeTable?.cos.dispose();
      this.ropeTable?.sin.dispose();
      this.ropeTable = { length: n, cos: tf.keep(tf.tensor2d(cos, [n, half])), sin: tf.keep(tf.tensor2d(sin, [n, half])) };
    }
    const table = this.ropeTable;
    return tf.tidy(() => {
      const [B, T] = positions.shape;
      const at = (t: tf.Tensor2D) => {
        const rows = tf.reshape(tf.gather(t, tf.reshape(positions, [-1])), [B, 1, T, -1]);
        return tf.concat([rows, rows], 3) as tf.Tensor4D;
      };
      return [at(table.cos), at(table.sin)];
    });
  }

  dispose(): void {
    for (const t of this.params.values()) t.dispose();
    this.params.clear();
    this.ropeTable?.cos.dispose();
    this.ropeTable?.sin.dispose();
    this.ropeTable = null;
  }
}

/** Every weight a model with this config has, with its shape, in the order transformers lists them. */
export function expectedWeights(c: ModelConfig): [string, number[]][] {
  const out: [string, number[]][] = [['model.embed_tokens.weight', [c.vocab_size, c.hidden_size]]];
  for (let i = 0; i < c.num_hidden_layers; i++) {
    const p = `model.layers.${i}`;
    out.push([`${p}.input_layernorm.weight`, [c.hidden_size]]);
    for (const m of LINEAR_MODULES) {
      const path = linearPath(i, m);
      const shape = linearShape(c, m);
      out.push([`${path}.weight`, shape]);
      const hasBias = m === 'o_proj' ? c.o_bias : m === 'q_proj' || m === 'k_proj' || m === 'v_proj' ? c.qkv_bias : c.mlp_bias;
      if (hasBias) out.push([`${path}.bias`, [shape[0]]]);
      if (m === 'v_proj' && c.qk_norm) {
        out.push([`${p}.self_attn.q_norm.weight`, [c.head_dim]]);
        out.push([`${p}.self_attn.k_norm.weight`, [c.head_dim]]);
      }
    }
    out.push([`${p}.post_attention_layernorm.weight`, [c.hidden_size]]);
  }
  out.push(['model.norm.weight', [c.hidden_size]]);
  if (!c.tie_word_embeddings) out.push(['lm_head.weight', [c.vocab_size, c.hidden_size]]);
  return out;
}

/** LlamaRMSNorm: w · x / √(mean(x²) + ε) over the last axis. */
function rmsNorm<T extends tf.Tensor>(x: T, w: tf.Tensor, eps: number): T {
  const variance = tf.mean(tf.square(x), -1, true);
  return tf.mul(tf.mul(x, tf.rsqrt(tf.add(variance, eps))), w) as T;
}

/** q·cos + rotate_half(q)·sin, with rotate_half(x) = [-x₂, x₁] over the two halves of head_dim. */
function applyRope(x: tf.Tensor4D, cos: tf.Tensor4D, sin: tf.Tensor4D): tf.Tensor4D {
  const half = x.shape[3] / 2;
  const [x1, x2] = tf.split(x, [half, half], 3);
  const rotated = tf.concat([tf.neg(x2), x1], 3);
  return tf.add(tf.mul(x, cos), tf.mul(rotated, sin));
}

/**
 * Additive attention bias [B, 1, groups·T, past+T]: 0 where query t may see key s (causal, and
 * the key is not padding), a large negative number elsewhere. Tiled over the query groups to
 * match the grouped-query layout in `attention`.
 */
function attentionBias(B: number, T: number, past: number, mask: tf.Tensor2D | undefined, groups: number): tf.Tensor4D {
  return tf.tidy(() => {
    const S = past + T;
    const q = tf.reshape(tf.range(past, past + T, 1, 'int32'), [T, 1]);
    const k = tf.reshape(tf.range(0, S, 1, 'int32'), [1, S]);
    let allowed = tf.reshape(tf.lessEqual(k, q), [1, 1, T, S]) as tf.Tensor4D; // [1, 1, T, S]
    if (mask) allowed = tf.logicalAnd(allowed, tf.reshape(tf.cast(mask, 'bool'), [B, 1, 1, S]));
    const bias = tf.mul(tf.sub(1, tf.cast(allowed, 'float32')), -1e30) as tf.Tensor4D;
    return tf.tile(bias, [bias.shape[0] === 1 ? B : 1, 1, groups, 1]);
  });
}

/**
 * RoPE inverse frequencies as transformers computes them in float32, with llama3 or linear scaling
 * (`_compute_llama3_parameters` in modeling_rope_utils.py).
 */
export function ropeInverseFrequencies(c: ModelConfig): Float32Array {
  const D = c.head_dim;
  const f = Math.fround;
  const inv = new Float32Array(D / 2);
  for (let i = 0; i < D / 2; i++) inv[i] = f(1 / f(Math.pow(c.rope_theta, f((2 * i) / D))));
  const s = c.rope_scaling;
  if (!s) return inv;
  if (s.rope_type === 'linear') return inv.map((x) => x / s.factor);
  const lowWavelen = s.original_max_position_embeddings / s.low_freq_factor;
  const highWavelen = s.original_max_position_embeddings / s.high_freq_factor;
  return inv.map((x) => {
    const wavelen = (2 * Math.PI) / x;
    if (wavelen < highWavelen) return x;
    if (wavelen > lowWavelen) return x / s.factor;
    const smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
    return (1 - smooth) * (x / s.factor) + smooth * x;
  });
}
