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
import { attention, checkpoint, frozenLinear, gatherRows, reshape, residualAdd, rmsNorm, rope, siluMul, trainedLinear, type LoraBranch } from './ops.ts';
import { matMul } from '../backend/kernels/matmul.ts';
import { disposeFrozenWeight, frozenWeightF32, gatherWeightRows, linearForward, packWeight16, unpackWeight, type FrozenWeight } from '../backend/kernels/linear.ts';
import type { AttentionOptions } from '../backend/kernels/attention.ts';
import { writeKVCache } from '../backend/kernels/kv_cache.ts';
import { floatValues, type LoadProgress, type OpenModelFolder } from '../io/model_folder.ts';
import { frozenFromBnb, isQuantizedProjection, quantizeWeight, type SharedQuantState, type StorageQuantization } from './quantized.ts';

/**
 * Keys and values of one generation call, as transformers' StaticCache: each layer's entry is
 * allocated once at its final length S, [batch, kv_heads, S, head_dim], and each forward pass
 * writes its seq new positions at slots `length` .. `length + seq - 1` (in place where the backend
 * allows). Shapes never change while decoding, so WebGPU compiles no pipeline and pools no buffer
 * per token. Slots from `length` on are not written yet: the causal rule (query t sees slots up
 * to length + t) keeps attention off them. Make one with `allocateKVCache`.
 */
export interface KVCache {
  keys: tf.Tensor4D[];
  values: tf.Tensor4D[];
  /** Slots written so far, padding included: where the next forward pass writes. */
  length: number;
}

/** A zeroed cache of `slots` positions for `batch` rows; the caller disposes it (`disposeKVCache`). */
export function allocateKVCache(c: ModelConfig, batch: number, slots: number): KVCache {
  // Zeros, not whatever a pooled buffer held: a left-padding query row that sees no key reads
  // every slot (see attention.ts), and a NaN there would reach its keys and values.
  const entry = () => tf.fill([batch, c.num_key_value_heads, slots, c.head_dim], 0, 'float32') as tf.Tensor4D;
  return {
    keys: Array.from({ length: c.num_hidden_layers }, entry),
    values: Array.from({ length: c.num_hidden_layers }, entry),
    length: 0,
  };
}

/** The cache with its batch rows picked by `rows` (a prompt's prefill shared by its completions). */
export function selectKVCacheRows(cache: KVCache, rows: number[]): KVCache {
  const pick = (t: tf.Tensor4D) => tf.tidy(() => tf.gather(t, tf.tensor1d(rows, 'int32'), 0) as tf.Tensor4D);
  return { keys: cache.keys.map(pick), values: cache.values.map(pick), length: cache.length };
}

export function disposeKVCache(cache: KVCache): void {
  tf.dispose([...cache.keys, ...cache.values]);
}

export interface ForwardOptions {
  /**
   * 1 for real tokens, 0 for padding: [batch, seq], or with a cache [batch, cache slots] over
   * every slot (0 or 1 for those not written yet: the causal rule excludes them anyway).
   * Omitted: every position is real.
   */
  attentionMask?: tf.Tensor2D;
  /** [batch, seq] positions for RoPE. Omitted: length .. length + seq - 1 (0 .. seq - 1 without a cache). */
  positionIds?: tf.Tensor2D;
  /** Keys and values of earlier positions; this pass writes its own at `cache.length` and advances it. */
  cache?: KVCache;
  /** LoRA adapter to apply; null or omitted runs the base model (the DPO/KTO reference). */
  adapter?: LoraAdapter | null;
  /** A seed per dropout mask while training; omitted means no dropout (evaluation, generation). */
  dropoutSeed?: () => number;
  /**
   * Recompute each decoder layer in the backward pass instead of keeping its activations
   * (transformers' gradient_checkpointing): the tape keeps one hidden state per layer.
   */
  gradientCheckpointing?: boolean;
}

/** What every decoder layer of one forward pass shares. */
interface LayerContext {
  B: number;
  T: number;
  /** [B, T, head_dim / 2] */
  cos: tf.Tensor3D;
  sin: tf.Tensor3D;
  attn: AttentionOptions;
  opts: ForwardOptions;
  /** Draws the next dropout seed (replayed when a checkpointed layer is recomputed). */
  seed?: () => number;
}

/** Where a model's weights come from: their names, dtypes and shapes first, then their values one at a time. */
export type WeightSource = Pick<OpenModelFolder, 'tensors' | 'readWeights'>;

export interface LoadOptions {
  /**
   * "auto" keeps the weight matrices of a 16-bit checkpoint 16-bit (two values per 32-bit word,
   * widened by our kernels as they read them); "float32" widens everything on load.
   */
  storage?: 'auto' | 'float32';
  /**
   * Quantise the decoder's projections as they stream in (bitsandbytes' NF4/FP4 blocks, or int8
   * rows), as transformers' load_in_4bit / load_in_8bit do; null or omitted keeps them as stored.
   * A pre-quantised checkpoint ignores it: its weights keep the quantisation they were saved with.
   */
  quantization?: StorageQuantization | null;
  onProgress?: (p: LoadProgress) => void;
}

export class CausalLM {
  readonly config: ModelConfig;
  /** Float32 weights by their Hugging Face name (norms, biases, float32 matrices, trained weights). */
  readonly params: Map<string, tf.Tensor>;
  /** Matrices kept 16-bit, by name; a name is in `params` or here, never both. */
  readonly packed: Map<string, FrozenWeight>;
  private readonly invFreq: Float32Array;
  /** cos and sin of the rotary angles of positions 0 .. length-1, [length, head_dim / 2]; see `rope`. */
  private ropeTable: { length: number; cos: tf.Tensor2D; sin: tf.Tensor2D } | null = null;

  constructor(config: ModelConfig, params: Map<string, tf.Tensor>, packed: Map<string, FrozenWeight> = new Map()) {
    this.config = config;
    this.params = params;
    this.packed = packed;
    this.invFreq = ropeInverseFrequencies(config);
  }

  static fromFolder(folder: OpenModelFolder, opts: LoadOptions = {}): Promise<CausalLM> {
    return CausalLM.load(folder.config, folder, folder.source.location, opts);
  }

  /**
   * A model from a parsed config.json and its weights; `location` names the folder in messages.
   * Every name and shape is checked against the config before a value is read; then each weight
   * goes to the backend as it arrives, so the host never holds more than one.
   */
  static async load(rawConfig: Record<string, unknown>, weights: WeightSource, location: string, opts: LoadOptions = {}): Promise<CausalLM> {
    const dir = location ? `${location.replace(/\/$/, '')}/` : '';
    const config = parseModelConfig(rawConfig, `${dir}config.json`);
    const where = `${dir}model.safetensors`;
    const expected = new Map(expectedWeights(config));
    for (const [name, shape] of expected) {
      const w = weights.tensors.get(name);
      if (!w) {
        throw new UserError(`${where}: weight ${name} is missing; a ${config.architecture} with this config.json needs it.`, { file: where, field: name });
      }
      if (w.shape.length !== shape.length || w.shape.some((d, i) => d !== shape[i])) {
        throw new UserError(`${where}: weight ${name} has shape [${w.shape}] but config.json implies [${shape}].`, { file: where, field: name });
      }
    }
    const params = new Map<string, tf.Tensor>();
    const packed = new Map<string, FrozenWeight>();
    const keep16 = (opts.storage ?? 'auto') === 'auto';
    // A pre-quantised checkpoint keeps the quantisation it was saved with, as transformers does:
    // its 4-bit weights load as stored and the weights it left unquantised stay so.
    const prequantized = [...weights.tensors.values()].some((t) => t.dtype === 'NF4' || t.dtype === 'FP4');
    const quantization = prequantized ? null : (opts.quantization ?? null);
    const shared: SharedQuantState = {};
    try {
      await weights.readWeights((w) => {
        const shape = expected.get(w.name);
        if (!shape) return; // not part of the model (e.g. rotary buffers some exporters save)
        if (w.dtype === 'NF4' || w.dtype === 'FP4') {
          if (!isQuantizedProjection(w.name)) {
            throw new UserError(`${where}: weight ${w.name} is stored 4-bit; only the decoder's projections may be (transformers keeps embeddings, norms and the LM head unquantised).`, { file: where, field: w.name });
          }
          packed.set(w.name, frozenFromBnb(w.name, w.data, where, shared));
        } else if (quantization && isQuantizedProjection(w.name)) {
          packed.set(w.name, quantizeWeight(floatValues(w, where), shape as [number, number], quantization, shared));
        } else if (keep16 && shape.length === 2 && w.data instanceof Uint16Array) {
          packed.set(w.name, packWeight16(w.data, shape as [number, number], w.dtype === 'BF16' ? 'bfloat16' : 'float16'));
        } else {
          params.set(w.name, tf.tensor(floatValues(w, where), shape, 'float32'));
        }
      }, opts.onProgress);
    } catch (e) {
      for (const t of params.values()) t.dispose();
      for (const w of packed.values()) disposeFrozenWeight(w);
      throw e;
    }
    return new CausalLM(config, params, packed);
  }

  /** Bytes the frozen weights take on the backend, and how many values they hold. */
  frozenStorage(): { bytes: number; parameters: number } {
    let bytes = 0;
    let parameters = 0;
    for (const t of this.params.values()) {
      if (t instanceof tf.Variable) continue;
      bytes += t.size * 4;
      parameters += t.size;
    }
    const maps = new Set<tf.Tensor>();
    for (const w of this.packed.values()) {
      bytes += frozenWeightBytes(w);
      parameters += w.shape[0] * w.shape[1];
      if (w.nested) maps.add(w.nested.map);
    }
    // Double quantisation's map is one tensor shared by every weight.
    for (const m of maps) bytes += m.size * 4;
    return { bytes, parameters };
  }

  /** How the decoder's projections are quantised (the first quantised one tells), or null. */
  quantization(): StorageQuantization | null {
    for (const w of this.packed.values()) {
      if (w.dtype === 'int8') return { kind: 'int8' };
      if (w.dtype === 'nf4' || w.dtype === 'fp4') return { kind: w.dtype, double_quant: w.nested !== undefined };
    }
    return null;
  }

  /** A weight widened to float32, as a new tensor the caller disposes (for exports and merges). */
  float32(name: string): tf.Tensor {
    const w = this.packed.get(name);
    return w ? unpackWeight(w) : tf.clone(this.weight(name));
  }

  /** The output projection [vocab, hidden]: the embedding when tied. */
  get lmHead(): FrozenWeight | tf.Variable {
    return this.matrix(this.config.tie_word_embeddings ? 'model.embed_tokens.weight' : 'lm_head.weight');
  }

  /** A weight matrix as the linear kernels read it, or the variable when it is being trained. */
  matrix(name: string): FrozenWeight | tf.Variable {
    const w = this.packed.get(name);
    if (w) return w;
    const t = this.weight(name);
    return t instanceof tf.Variable ? t : frozenWeightF32(t as tf.Tensor2D);
  }

  /** A float32 weight (a 16-bit matrix is read through `matrix` or `float32` instead). */
  weight(name: string): tf.Tensor {
    const t = this.params.get(name);
    if (!t) throw new Error(this.packed.has(name) ? `weight ${name} is stored 16-bit; read it with matrix() or float32()` : `no weight ${name}`);
    return t;
  }

  /** Turns the named weights into variables (full or partial fine-tuning); returns them by name. */
  makeTrainable(names: string[]): Map<string, tf.Variable> {
    const out = new Map<string, tf.Variable>();
    for (const name of names) {
      const packed = this.packed.get(name);
      if (packed) {
        this.packed.delete(name);
        this.params.set(name, tf.tidy(() => unpackWeight(packed)));
        disposeFrozenWeight(packed);
      }
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
    const cache = opts.cache;
    const past = cache ? cache.length : 0;
    const slots = cache ? cache.keys[0].shape[2] : T;
    if (past + T > slots) throw new Error(`${T} positions do not fit a KV cache of ${slots} slots with ${past} written`);
    const positions = opts.positionIds ?? tf.tidy(() => tf.tile(tf.expandDims(tf.range(past, past + T, 1, 'int32'), 0), [B, 1]) as tf.Tensor2D);
    // Positions count real tokens only, so none reaches the slot count; sizing the table by the
    // cache's slots builds it once per generation rather than as positions grow.
    const [cos, sin] = this.rope(positions, slots);
    const ctx: LayerContext = { B, T, cos, sin, attn: { scale: 1 / Math.sqrt(c.head_dim), past, keyMask: opts.attentionMask }, opts, seed: opts.dropoutSeed };

    let h = reshape<tf.Tensor3D>(this.embed(tf.reshape(inputIds, [-1]) as tf.Tensor1D), [B, T, c.hidden_size]);
    for (let i = 0; i < c.num_hidden_layers; i++) {
      if (!opts.gradientCheckpointing) {
        // The tape keeps what each op saved; the tidy frees the rest of the layer now rather than
        // at the end of the whole forward pass.
        const input = h;
        h = tf.tidy(() => this.decoderLayer(i, input, ctx));
        continue;
      }
      // The recomputation in the backward pass must draw the same dropout masks: the layer's
      // seeds are drawn once and replayed.
      const seeds: number[] = [];
      let next = 0;
      const seed = opts.dropoutSeed ? () => (next < seeds.length ? seeds[next++] : (seeds.push(opts.dropoutSeed!()), seeds[next++])) : undefined;
      const layer = (x: tf.Tensor3D, [cos, sin, keyMask]: tf.Tensor[]) => {
        next = 0;
        return this.decoderLayer(i, x, { ...ctx, cos: cos as tf.Tensor3D, sin: sin as tf.Tensor3D, attn: { ...ctx.attn, keyMask: keyMask as tf.Tensor2D | undefined }, seed });
      };
      const context = opts.attentionMask ? [cos, sin, opts.attentionMask] : [cos, sin];
      h = checkpoint(layer, h, context, this.layerVariables(i, opts.adapter ?? null));
    }
    if (cache) cache.length += T;
    return rmsNorm(h, this.weight('model.norm.weight') as tf.Tensor1D, c.rms_norm_eps);
  }

  /** Scores over the vocabulary for hidden states of any leading shape. */
  logits(hidden: tf.Tensor): tf.Tensor {
    const H = this.config.hidden_size;
    const flat = tf.reshape(hidden, [-1, H]) as tf.Tensor2D;
    const head = this.lmHead;
    const out = head instanceof tf.Variable ? matMul(flat, head, false, true) : linearForward(flat, head);
    return tf.reshape(out, [...hidden.shape.slice(0, -1), this.config.vocab_size]);
  }

  /** Embedding rows for token ids [N] → [N, hidden]. */
  private embed(ids: tf.Tensor1D): tf.Tensor2D {
    const name = 'model.embed_tokens.weight';
    const trained = this.params.get(name);
    return trained instanceof tf.Variable ? gatherRows(trained, ids) : gatherWeightRows(this.matrix(name) as FrozenWeight, ids);
  }

  /** One decoder layer: h + attention(norm(h)), then + mlp(norm(·)). */
  private decoderLayer(i: number, h: tf.Tensor3D, ctx: LayerContext): tf.Tensor3D {
    const c = this.config;
    const p = `model.layers.${i}`;
    const x = rmsNorm(h, this.weight(`${p}.input_layernorm.weight`) as tf.Tensor1D, c.rms_norm_eps);
    const h2 = residualAdd(h, this.attention(i, x, ctx));
    const y = rmsNorm(h2, this.weight(`${p}.post_attention_layernorm.weight`) as tf.Tensor1D, c.rms_norm_eps);
    return residualAdd(h2, this.mlp(i, y, ctx));
  }

  /** What one layer's gradient is taken for: its LoRA matrices, or its weights being trained. */
  private layerVariables(i: number, adapter: LoraAdapter | null): tf.Variable[] {
    const prefix = `model.layers.${i}.`;
    const out: tf.Variable[] = [];
    for (const [name, t] of this.params) if (name.startsWith(prefix) && t instanceof tf.Variable) out.push(t);
    if (adapter) {
      for (const [path, pair] of adapter.modules) if (path.startsWith(prefix)) out.push(pair.A, pair.B);
    }
    return out;
  }

  private attention(i: number, x: tf.Tensor3D, ctx: LayerContext): tf.Tensor3D {
    const c = this.config;
    const { B, T, opts } = ctx;
    const D = c.head_dim;
    const nKV = c.num_key_value_heads;
    const p = `model.layers.${i}.self_attn`;

    // [B, T, heads·D] → [B, heads, T, D]
    const heads = (t: tf.Tensor3D, n: number) => tf.transpose(reshape<tf.Tensor4D>(t, [B, T, n, D]), [0, 2, 1, 3]) as tf.Tensor4D;
    let q = heads(this.linear(i, 'q_proj', x, ctx), c.num_attention_heads);
    let k = heads(this.linear(i, 'k_proj', x, ctx), nKV);
    let v = heads(this.linear(i, 'v_proj', x, ctx), nKV);
    if (c.qk_norm) {
      q = rmsNorm(q, this.weight(`${p}.q_norm.weight`) as tf.Tensor1D, c.rms_norm_eps);
      k = rmsNorm(k, this.weight(`${p}.k_norm.weight`) as tf.Tensor1D, c.rms_norm_eps);
    }
    q = rope(q, ctx.cos, ctx.sin);
    k = rope(k, ctx.cos, ctx.sin);
    if (opts.cache) {
      const { keys, values, length } = opts.cache;
      // The write hands back the entry's buffer (or, without an in-place kernel, its successor)
      // under a new handle; kept, since the cache outlives this layer's tidy.
      const write = (entries: tf.Tensor4D[], update: tf.Tensor4D) => {
        const old = entries[i];
        entries[i] = tf.keep(writeKVCache(old, update, length));
        old.dispose();
        return entries[i];
      };
      k = write(keys, k);
      v = write(values, v);
    }
    const out = attention(q, k, v, ctx.attn);
    const merged = reshape<tf.Tensor3D>(tf.transpose(out, [0, 2, 1, 3]) as tf.Tensor4D, [B, T, c.num_attention_heads * D]);
    return this.linear(i, 'o_proj', merged, ctx);
  }

  private mlp(i: number, x: tf.Tensor3D, ctx: LayerContext): tf.Tensor3D {
    const gate = this.linear(i, 'gate_proj', x, ctx);
    const up = this.linear(i, 'up_proj', x, ctx);
    return this.linear(i, 'down_proj', siluMul(gate, up), ctx);
  }

  /** nn.Linear (y = x Wᵀ + b) plus, where the adapter has this layer, LoRA's dropout(x) Aᵀ Bᵀ · scale. */
  private linear(layer: number, m: LinearModule, x: tf.Tensor3D, ctx: LayerContext): tf.Tensor3D {
    const path = linearPath(layer, m);
    const [B, T, inp] = x.shape;
    const x2 = reshape<tf.Tensor2D>(x, [B * T, inp]);
    const W = this.matrix(`${path}.weight`);
    const bias = this.params.get(`${path}.bias`) as tf.Tensor1D | undefined;
    const adapter = ctx.opts.adapter;
    const pair = adapter?.modules.get(path);
    const p = adapter?.config.lora_dropout ?? 0;
    const lora: LoraBranch | null = pair && adapter ? { A: pair.A, B: pair.B, scale: adapter.scale, dropout: p, seed: p > 0 && ctx.seed ? ctx.seed() : undefined } : null;
    const y = W instanceof tf.Variable ? trainedLinear(x2, W, bias, lora) : frozenLinear(x2, W, bias, lora);
    return reshape<tf.Tensor3D>(y, [B, T, y.shape[1]]);
  }

  /**
   * cos and sin of the rotary angles for each position, [B, T, head_dim / 2], for positions below
   * `length`. They come from tables computed on the host, as torch computes them (the float32
   * angle, then its cos and sin): GPU sin and cos are approximations (WGSL promises only 2^-11
   * absolute, and SwiftShader's are off by 2e-4 at a few radians), which left every layer's
   * attention 1e-4 away from the CPU's. The tables grow by doubling, so only a few sizes are ever made.
   */
  private rope(positions: tf.Tensor2D, length: number): [tf.Tensor3D, tf.Tensor3D] {
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
      const flat = tf.reshape(positions, [-1]);
      const at = (t: tf.Tensor2D) => tf.reshape(tf.gather(t, flat), [B, T, -1]) as tf.Tensor3D;
      return [at(table.cos), at(table.sin)];
    });
  }

  dispose(): void {
    for (const t of this.params.values()) t.dispose();
    this.params.clear();
    for (const w of this.packed.values()) disposeFrozenWeight(w);
    this.packed.clear();
    this.ropeTable?.cos.dispose();
    this.ropeTable?.sin.dispose();
    this.ropeTable = null;
  }
}

/**
 * Bytes a packed weight takes on the backend: every stored tensor is 32-bit (words of codes,
 * float32 scales); double quantisation's map is shared by all weights and counted by the model.
 */
export function frozenWeightBytes(w: FrozenWeight): number {
  const parts = [w.data, w.absmax, w.nested?.codes, w.nested?.absmax];
  return parts.reduce((n, t) => n + (t ? t.size * 4 : 0), 0);
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
