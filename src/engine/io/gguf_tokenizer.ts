/**
 * A model's tokenizer as llama.cpp's convert_hf_to_gguf.py writes it into a GGUF file
 * (`tokenizer.ggml.*`, `tokenizer.chat_template`), from tokenizer.json, tokenizer_config.json and
 * config.json alone, where convert asks transformers' AutoTokenizer. Two forms, as convert picks
 * them:
 *
 * - "llama" (llama.cpp's SentencePiece tokenizer) for a BPE tokenizer.json with byte fallback and a
 *   Sequence decoder, the form SentencePiece models take in transformers (stories260K, Llama 2):
 *   convert's `_set_vocab_llama_hf` / gguf-py's LlamaHfVocab, with scores that keep BPE's order.
 * - "gpt2" (llama.cpp's byte-level BPE) with its merges and `tokenizer.ggml.pre`, the name of the
 *   pre-tokenizer llama.cpp re-implements: Llama 3 ("llama-bpe"), SmolLM2 ("smollm"),
 *   Qwen2/Qwen3 ("qwen2"): convert's `_set_vocab_gpt2` / `get_vocab_base`.
 *
 * The special token ids, add_bos/add_eos and the chat template follow gguf-py's SpecialVocab.
 */
import { UserError } from '../errors.ts';
import type { GGUFMetadata } from './gguf.ts';

/** gguf-py's TokenType. */
const TOKEN_TYPE = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6 } as const;

export interface TokenizerFiles {
  tokenizerJson: Record<string, unknown>;
  /** tokenizer_config.json, its `chat_template` taken from chat_template.jinja where it has none. */
  tokenizerConfig: Record<string, unknown>;
  /** config.json: its `*_token_id` fill in special tokens tokenizer_config.json does not name. */
  config: Record<string, unknown>;
  /** The folder, for messages. */
  location: string;
}

interface AddedToken {
  id: number;
  content: string;
  special: boolean;
}

interface BpeModel {
  vocab: Record<string, number>;
  merges: (string | [string, string])[];
  byte_fallback?: boolean;
}

/**
 * The pre-tokenizers llama.cpp re-implements, by the name convert writes. convert recognises one
 * by hashing the token ids of a test text; the same models are recognised here by the
 * pre-tokenizer tokenizer.json declares.
 */
const SPLIT_REGEX_PRE: Record<string, string> = {
  // Llama 3's (tiktoken's cl100k pattern): numbers in groups of up to three digits.
  [String.raw`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`]: 'llama-bpe',
  // Qwen2's: the same, one digit at a time.
  [String.raw`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`]: 'qwen2',
};

/** Writes the tokenizer's keys into `md`; `vocabSize` is the model's (config.json's vocab_size). */
export function addTokenizerMetadata(md: GGUFMetadata, files: TokenizerFiles, architecture: string, vocabSize: number): void {
  const file = `${files.location.replace(/\/$/, '')}/tokenizer.json`;
  const tj = files.tokenizerJson;
  const model = (tj.model ?? {}) as Record<string, unknown>;
  if (model.type !== 'BPE' || typeof model.vocab !== 'object' || model.vocab === null || !Array.isArray(model.merges)) {
    throw new UserError(`${file}: the tokenizer is ${String(model.type ?? 'of no known type')}, but a GGUF export writes BPE tokenizers only (llama.cpp's "llama" and "gpt2" tokenizers).`, { file, field: 'model.type' });
  }
  const bpe = model as unknown as BpeModel;
  const added = addedTokens(tj);
  for (const [token, id] of [...Object.entries(bpe.vocab), ...added.map((a): [string, number] => [a.content, a.id])]) {
    if (id >= vocabSize) {
      throw new UserError(`${file}: token ${JSON.stringify(token)} has id ${id}, but config.json's vocab_size is ${vocabSize}.`, { file, field: 'vocab_size' });
    }
  }

  // LlamaModel.set_vocab: tokenizer_config.json's add_prefix_space, before the vocabulary.
  const addPrefixSpace = files.tokenizerConfig.add_prefix_space;
  if (architecture === 'llama' && typeof addPrefixSpace === 'boolean') md.bool('tokenizer.ggml.add_space_prefix', addPrefixSpace);

  const decoder = tj.decoder as { type?: unknown } | null | undefined;
  // convert takes this form for Llama only (Qwen2Model goes from tokenizer.model straight to
  // gpt2), but llama.cpp's SentencePiece tokenizer serves any architecture, and a tokenizer.json of
  // this form has no byte-level pre-tokenizer for the gpt2 form to name.
  const sentencePiece = bpe.byte_fallback === true && decoder?.type === 'Sequence';
  let nVocab: number | null = null;
  if (sentencePiece) {
    const { tokens, scores, types } = llamaHfVocab(bpe, added, files.tokenizerConfig, vocabSize);
    md.string('tokenizer.ggml.model', 'llama');
    md.string('tokenizer.ggml.pre', 'default');
    md.array('tokenizer.ggml.tokens', 'STRING', tokens);
    md.array('tokenizer.ggml.scores', 'FLOAT32', scores);
    md.array('tokenizer.ggml.token_type', 'INT32', types);
    nVocab = tokens.length;
  } else {
    const { tokens, types } = gpt2Vocab(bpe, added, vocabSize);
    md.string('tokenizer.ggml.model', 'gpt2');
    md.string('tokenizer.ggml.pre', bpePre(tj, file));
    md.array('tokenizer.ggml.tokens', 'STRING', tokens);
    md.array('tokenizer.ggml.token_type', 'INT32', types);
    md.array('tokenizer.ggml.merges', 'STRING', mergeStrings(bpe.merges));
  }
  addSpecialVocab(md, files, added, nVocab);
  // LlamaModel.set_vocab: SmolLM2's and Granite's 49,152-token vocabularies start without BOS.
  if (architecture === 'llama' && vocabSize === 49152) md.bool('tokenizer.ggml.add_bos_token', false);
}

function addedTokens(tj: Record<string, unknown>): AddedToken[] {
  const list = Array.isArray(tj.added_tokens) ? (tj.added_tokens as Record<string, unknown>[]) : [];
  return list
    .filter((t) => Number.isInteger(t.id) && typeof t.content === 'string')
    .map((t) => ({ id: t.id as number, content: t.content as string, special: t.special === true }));
}

/** Special tokens' contents named in tokenizer_config.json (transformers' all_special_tokens). */
function namedSpecialTokens(tokenizerConfig: Record<string, unknown>): Set<string> {
  const out = new Set<string>();
  const add = (v: unknown) => {
    const content = tokenContent(v);
    if (content !== null) out.add(content);
  };
  for (const typ of ['bos', 'eos', 'unk', 'sep', 'pad', 'cls', 'mask']) add(tokenizerConfig[`${typ}_token`]);
  const extra = tokenizerConfig.additional_special_tokens;
  if (Array.isArray(extra)) extra.forEach(add);
  return out;
}

function tokenContent(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (v !== null && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string') return (v as { content: string }).content;
  return null;
}

/**
 * gguf-py's LlamaHfVocab: every token of the vocabulary in id order, `<0xXX>` pieces as BYTE,
 * special tokens as CONTROL, added tokens beyond the base vocabulary as USER_DEFINED; the model's
 * vocab_size is filled with `[PAD<id>]` UNUSED entries as `_create_vocab_sentencepiece` does.
 *
 * Scores: LlamaHfVocab gives every token -1000, with which llama.cpp's SentencePiece tokenizer,
 * which merges the adjacent pair whose merged token scores highest, merges left to right instead
 * of in BPE order, and tokenises differently from tokenizer.json. A SentencePiece BPE model's
 * scores order its pieces as its merges do, so the token of merge k (0-based, the first merge
 * producing it) scores -(k + 1), and tokens no merge produces (single characters, bytes, specials,
 * never the product of two symbols) score 0.
 */
function llamaHfVocab(bpe: BpeModel, added: AddedToken[], tokenizerConfig: Record<string, unknown>, vocabSize: number) {
  const byId: (string | undefined)[] = new Array(vocabSize);
  for (const [token, id] of Object.entries(bpe.vocab)) byId[id] = token;
  const base = new Set(Object.values(bpe.vocab));
  const specials = namedSpecialTokens(tokenizerConfig);
  const addedBeyondBase = new Set<number>();
  for (const a of added) {
    if (base.has(a.id)) continue;
    byId[a.id] = a.content;
    addedBeyondBase.add(a.id);
  }
  const rank = new Map<string, number>();
  bpe.merges.forEach((m, k) => {
    const [left, right] = typeof m === 'string' ? splitMerge(m) : m;
    const merged = left + right;
    if (!rank.has(merged)) rank.set(merged, k);
  });

  const tokens: string[] = [];
  const scores: number[] = [];
  const types: number[] = [];
  for (let id = 0; id < vocabSize; id++) {
    const token = byId[id];
    if (token === undefined) {
      tokens.push(`[PAD${id}]`);
      scores.push(-1000);
      types.push(TOKEN_TYPE.UNUSED);
      continue;
    }
    tokens.push(token);
    const k = rank.get(token);
    scores.push(k === undefined ? 0 : -(k + 1));
    if (/^<0x[0-9A-Fa-f]{2}>$/.test(token)) types.push(TOKEN_TYPE.BYTE);
    else if (specials.has(token)) types.push(TOKEN_TYPE.CONTROL);
    else if (addedBeyondBase.has(id)) types.push(TOKEN_TYPE.USER_DEFINED);
    else types.push(TOKEN_TYPE.NORMAL);
  }
  return { tokens, scores, types };
}

/** A merge of the older "left right" form; the first space separates, as llama.cpp reads it. */
function splitMerge(m: string): [string, string] {
  const at = m.indexOf(' ', 1);
  return at < 0 ? [m, ''] : [m.slice(0, at), m.slice(at + 1)];
}

/**
 * convert's `get_vocab_base`: every id below vocab_size, `[PAD<id>]` UNUSED where no token has it;
 * added tokens are CONTROL when special or when they look special (`<|…|>`), else USER_DEFINED
 * with SentencePiece's "▁" written as a space. (convert also re-encodes an added token marked
 * not normalized through the tokenizer; the tokenizers written here give such tokens back as they
 * are, so that step is left out.)
 */
function gpt2Vocab(bpe: BpeModel, added: AddedToken[], vocabSize: number) {
  const byId: (string | undefined)[] = new Array(vocabSize);
  for (const [token, id] of Object.entries(bpe.vocab)) byId[id] = token;
  const addedById = new Map<number, AddedToken>();
  for (const a of added) {
    byId[a.id] = a.content;
    addedById.set(a.id, a);
  }
  const tokens: string[] = [];
  const types: number[] = [];
  for (let id = 0; id < vocabSize; id++) {
    const token = byId[id];
    const a = addedById.get(id);
    if (token === undefined) {
      tokens.push(`[PAD${id}]`);
      types.push(TOKEN_TYPE.UNUSED);
    } else if (a && (a.special || looksSpecial(token))) {
      tokens.push(token);
      types.push(TOKEN_TYPE.CONTROL);
    } else if (a) {
      tokens.push(token.replaceAll('\u2581', ' '));
      types.push(TOKEN_TYPE.USER_DEFINED);
    } else {
      tokens.push(token);
      types.push(TOKEN_TYPE.NORMAL);
    }
  }
  return { tokens, types };
}

/** convert's `does_token_look_special`. */
function looksSpecial(token: string): boolean {
  return (
    ['<pad>', '<mask>', '<2mass>', '[@BOS@]'].includes(token) ||
    (token.startsWith('<|') && token.endsWith('|>')) ||
    (token.startsWith('<｜') && token.endsWith('｜>')) ||
    (token.startsWith('<unused') && token.endsWith('>'))
  );
}

/**
 * Merges as "left right" strings, as gguf-py's SpecialVocab stores them; the pair form of newer
 * tokenizer.json files has its spaces written as U+0120, as there.
 */
function mergeStrings(merges: BpeModel['merges']): string[] {
  return merges.map((m) => (typeof m === 'string' ? m : m.map((part) => part.replaceAll(' ', '\u0120')).join(' ')));
}

/** `tokenizer.ggml.pre` for a byte-level BPE tokenizer.json, or a refusal naming what it is. */
export function bpePre(tj: Record<string, unknown>, file: string): string {
  const pre = tj.pre_tokenizer as Record<string, unknown> | null | undefined;
  const steps = pre?.type === 'Sequence' && Array.isArray(pre.pretokenizers) ? (pre.pretokenizers as Record<string, unknown>[]) : pre ? [pre] : [];
  for (const step of steps) {
    const regex = step.type === 'Split' ? (step.pattern as { Regex?: unknown } | undefined)?.Regex : undefined;
    if (typeof regex === 'string' && SPLIT_REGEX_PRE[regex]) return SPLIT_REGEX_PRE[regex];
  }
  // SmolLM's (and SmolLM2's): each digit apart, then GPT-2's byte-level split.
  const [digits, byteLevel] = steps;
  if (steps.length === 2 && digits.type === 'Digits' && digits.individual_digits === true && byteLevel.type === 'ByteLevel' && byteLevel.use_regex === true) return 'smollm';
  throw new UserError(
    `${file}: its pre-tokenizer is not one llama.cpp is known here to implement (those of Llama 3, SmolLM2 and Qwen2/Qwen3), so llama.cpp would split text differently; the GGUF export is refused rather than written with a wrong tokenizer.`,
    { file, field: 'pre_tokenizer' },
  );
}

/** The special tokens SpecialVocab writes, in its order; `cls` has no GGUF key and is left out. */
const SPECIAL_KEYS: [typ: string, key: string][] = [
  ['bos', 'tokenizer.ggml.bos_token_id'],
  ['eos', 'tokenizer.ggml.eos_token_id'],
  ['unk', 'tokenizer.ggml.unknown_token_id'],
  ['sep', 'tokenizer.ggml.seperator_token_id'],
  ['pad', 'tokenizer.ggml.padding_token_id'],
  ['mask', 'tokenizer.ggml.mask_token_id'],
];

/**
 * gguf-py's SpecialVocab: each special token's id, from tokenizer_config.json's `<typ>_token`
 * looked up among tokenizer.json's added tokens, else config.json's `<typ>_token_id` (ids past
 * `nVocab`, when given, are skipped); whether BOS/EOS are added, from the post-processor's
 * template and then tokenizer_config.json's add_bos_token/add_eos_token; and the chat template.
 * (SpecialVocab's BERT-style cases, cls standing in for bos and a separator between two texts,
 * concern no model exported here.)
 */
function addSpecialVocab(md: GGUFMetadata, files: TokenizerFiles, added: AddedToken[], nVocab: number | null): void {
  const tc = files.tokenizerConfig;
  const ids = new Map<string, number>();
  const set = (typ: string, id: unknown) => {
    if (!Number.isInteger(id) || (id as number) < 0 || ids.has(typ)) return;
    if (nVocab === null || (id as number) < nVocab) ids.set(typ, id as number);
  };
  const add = new Map<string, boolean>();
  const post = files.tokenizerJson.post_processor as Record<string, unknown> | null | undefined;
  const processors = post ? ((post.processors as Record<string, unknown>[] | undefined) ?? [post]) : [];
  for (const p of processors) {
    if (p.type !== 'TemplateProcessing' || !Array.isArray(p.single) || p.single.length < 2) continue;
    const single = p.single as { SpecialToken?: { id?: string } }[];
    const first = single[0].SpecialToken?.id;
    const last = single[single.length - 1].SpecialToken?.id;
    if (first) add.set('bos', first === tokenContent(tc.bos_token));
    if (last) add.set('eos', last === tokenContent(tc.eos_token));
  }
  for (const [typ] of SPECIAL_KEYS) {
    const flag = tc[`add_${typ}_token`];
    if (typeof flag === 'boolean') add.set(typ, flag);
    const content = tokenContent(tc[`${typ}_token`]);
    if (content !== null) set(typ, added.find((a) => a.content === content)?.id);
  }
  for (const [typ] of SPECIAL_KEYS) set(typ, files.config[`${typ}_token_id`]);

  for (const [typ, key] of SPECIAL_KEYS) if (ids.has(typ)) md.uint32(key, ids.get(typ)!);
  for (const [typ, value] of add) md.bool(`tokenizer.ggml.add_${typ}_token`, value);
  addChatTemplate(md, tc.chat_template);
}

/** GGUFWriter.add_chat_template: a string, or named templates ("default" as the main one). */
function addChatTemplate(md: GGUFMetadata, template: unknown): void {
  if (typeof template === 'string') {
    md.string('tokenizer.chat_template', template);
    return;
  }
  if (!Array.isArray(template)) return;
  const names: string[] = [];
  for (const choice of template as { name?: unknown; template?: unknown }[]) {
    if (typeof choice?.name !== 'string' || typeof choice.template !== 'string') continue;
    const name = choice.name.replace(/[^A-Za-z0-9]/g, '_');
    if (name === 'default') md.string('tokenizer.chat_template', choice.template);
    else if (name) {
      names.push(name);
      md.string(`tokenizer.chat_template.${name}`, choice.template);
    }
  }
  md.array('tokenizer.chat_templates', 'STRING', names);
}
