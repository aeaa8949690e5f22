/**
 * A model's tokenizer and chat template as transformers presents them: `tokenizer.json` through
 * @huggingface/tokenizers, `chat_template` through @huggingface/jinja, and the special tokens of
 * `tokenizer_config.json` and `generation_config.json`.
 */
import { Template } from '@huggingface/jinja';
import { Tokenizer } from '@huggingface/tokenizers';
import { UserError } from '../errors.ts';

export type ChatMessage = { role: string; content: string };

const SPECIAL_TOKEN_KEYS = ['bos_token', 'eos_token', 'pad_token', 'unk_token'] as const;
type SpecialTokenKey = (typeof SPECIAL_TOKEN_KEYS)[number];

export class TextTokenizer {
  readonly eosToken: string;
  readonly eosTokenId: number;
  /** Every id that ends generation: the tokenizer's eos and `generation_config.eos_token_id` (a number or a list). */
  readonly eosTokenIds: number[];
  readonly bosTokenId: number | null;
  /** The pad token if the tokenizer defines one, else eos, as TRL's SFTTrainer falls back. */
  readonly padTokenId: number;
  /** One past the highest token id, i.e. how many rows an embedding matrix needs at least. */
  readonly vocabSize: number;
  /**
   * The model's context length, `max_position_embeddings` of its config.json, when given to
   * `fromFiles`; SFT data is cut to it (see `SftOptions.max_position_embeddings`). null: unknown.
   */
  readonly maxPositionEmbeddings: number | null;

  private constructor(
    private readonly tokenizer: Tokenizer,
    private readonly specialTokens: Partial<Record<SpecialTokenKey, string>>,
    private readonly chatTemplate: Template | null,
    private readonly file: string,
    ids: { eos: number; eosAll: number[]; bos: number | null; pad: number; vocabSize: number },
    maxPositionEmbeddings: number | null,
  ) {
    this.maxPositionEmbeddings = maxPositionEmbeddings;
    this.eosToken = specialTokens.eos_token as string;
    this.eosTokenId = ids.eos;
    this.eosTokenIds = ids.eosAll;
    this.bosTokenId = ids.bos;
    this.padTokenId = ids.pad;
    this.vocabSize = ids.vocabSize;
  }

  static fromFiles(
    tokenizerJson: object,
    tokenizerConfig: object,
    generationConfig: object | null,
    file = 'tokenizer_config.json',
    /** The model's config.json, for its `max_position_embeddings`; null when only the tokenizer is at hand. */
    modelConfig: object | null = null,
  ): TextTokenizer {
    const config = tokenizerConfig as Record<string, unknown>;
    let tokenizer: Tokenizer;
    try {
      tokenizer = new Tokenizer(tokenizerJson, config);
    } catch (e) {
      throw new UserError(`${file}: the tokenizer could not be built (${(e as Error).message}).`, { file });
    }

    const specialTokens: Partial<Record<SpecialTokenKey, string>> = {};
    for (const key of SPECIAL_TOKEN_KEYS) {
      const token = tokenContent(config[key]);
      if (token !== null) specialTokens[key] = token;
    }

    const generationEos = generationEosIds(generationConfig);
    // Some repos leave eos out of tokenizer_config.json and name it only in generation_config.json.
    if (specialTokens.eos_token === undefined && generationEos.length > 0) {
      const token = tokenizer.id_to_token(generationEos[0]);
      if (token !== undefined) specialTokens.eos_token = token;
    }
    if (specialTokens.eos_token === undefined) {
      throw new UserError(
        `${file}: the tokenizer defines no eos_token, which training needs to mark where a text or an answer ends.`,
        { file, field: 'eos_token' },
      );
    }
    const eos = requireId(tokenizer, specialTokens.eos_token, 'eos_token', file);
    const eosAll = [...new Set([eos, ...generationEos])];
    const bos = specialTokens.bos_token === undefined ? null : requireId(tokenizer, specialTokens.bos_token, 'bos_token', file);
    const pad = specialTokens.pad_token === undefined ? eos : requireId(tokenizer, specialTokens.pad_token, 'pad_token', file);

    let vocabSize = 0;
    for (const id of tokenizer.get_vocab(true).values()) vocabSize = Math.max(vocabSize, id + 1);

    return new TextTokenizer(tokenizer, specialTokens, parseChatTemplate(config.chat_template, file), file, {
      eos,
      eosAll,
      bos,
      pad,
      vocabSize,
    }, positionLimit(modelConfig));
  }

  /** `add_special_tokens` defaults to true, as in transformers, so a Llama tokenizer prepends BOS. */
  encode(text: string, opts: { add_special_tokens?: boolean } = {}): number[] {
    return this.tokenizer.encode(text, { add_special_tokens: opts.add_special_tokens ?? true }).ids;
  }

  decode(ids: number[], opts: { skip_special_tokens?: boolean } = {}): string {
    return this.tokenizer.decode(ids, { skip_special_tokens: opts.skip_special_tokens ?? false });
  }

  get hasChatTemplate(): boolean {
    return this.chatTemplate !== null;
  }

  /** Renders the chat template with the variables transformers' `apply_chat_template` passes. */
  applyChatTemplate(messages: ChatMessage[], opts: { add_generation_prompt?: boolean } = {}): string {
    if (this.chatTemplate === null) {
      throw new UserError(
        `${this.file} has no chat_template, so this model cannot read conversational data or chat; use a model with a chat template (an instruct model) or plain "text" / "prompt" and "completion" strings.`,
        { file: this.file, field: 'chat_template' },
      );
    }
    try {
      return this.chatTemplate.render({
        messages,
        add_generation_prompt: opts.add_generation_prompt ?? false,
        ...this.specialTokens,
      });
    } catch (e) {
      const reason = (e as Error).message.replace(/\.$/, '');
      throw new UserError(`The chat template in ${this.file} failed on this conversation (${reason}).`, {
        file: this.file,
        field: 'chat_template',
      });
    }
  }
}

function positionLimit(modelConfig: object | null): number | null {
  const value = (modelConfig as { max_position_embeddings?: unknown } | null)?.max_position_embeddings;
  return typeof value === 'number' && Number.isInteger(value) && value > 0 ? value : null;
}

/** Special tokens in tokenizer_config.json are strings or serialised AddedTokens `{content, ...}`. */
function tokenContent(value: unknown): string | null {
  if (typeof value === 'string') return value;
  if (value !== null && typeof value === 'object' && typeof (value as { content?: unknown }).content === 'string') {
    return (value as { content: string }).content;
  }
  return null;
}

function generationEosIds(generationConfig: object | null): number[] {
  const value = (generationConfig as { eos_token_id?: unknown } | null)?.eos_token_id;
  const ids = Array.isArray(value) ? value : [value];
  return ids.filter((id): id is number => Number.isInteger(id));
}

function requireId(tokenizer: Tokenizer, token: string, key: string, file: string): number {
  const id = tokenizer.token_to_id(token);
  if (id === undefined) {
    throw new UserError(`${file}: ${key} "${token}" is not in the tokenizer's vocabulary.`, { file, field: key });
  }
  return id;
}

/** `chat_template` is a string, or a list of named templates of which transformers uses "default". */
function parseChatTemplate(value: unknown, file: string): Template | null {
  let source: unknown = value;
  if (Array.isArray(value)) {
    const named = value.find((t) => (t as { name?: unknown })?.name === 'default');
    if (named === undefined) {
      throw new UserError(`${file}: chat_template lists several templates but none is named "default".`, {
        file,
        field: 'chat_template',
      });
    }
    source = (named as { template?: unknown }).template;
  }
  if (source === undefined || source === null) return null;
  if (typeof source !== 'string') {
    throw new UserError(`${file}: chat_template must be a string or a list of {name, template}.`, {
      file,
      field: 'chat_template',
    });
  }
  try {
    return new Template(source);
  } catch (e) {
    throw new UserError(`${file}: chat_template is not a valid Jinja template (${(e as Error).message}).`, {
      file,
      field: 'chat_template',
    });
  }
}
