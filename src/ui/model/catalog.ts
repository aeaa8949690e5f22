/** Starting points offered in the model view: real Hub repos with their download sizes. */

export interface CatalogModel {
  id: string;
  /** Parameter count as the model card gives it. */
  params: string;
  /**
   * Bytes of the safetensors weights, what the download mostly is: bf16, or for the pre-quantised
   * 4-bit repos the size their layout gives (NF4 codes, 8-bit absmax with double quantisation,
   * bf16 embeddings and norms), computed from the model's configuration.
   */
  bytes: number;
  /** Needs an access token and an accepted licence on huggingface.co. */
  gated: boolean;
  note: string;
}

export const DEFAULT_MODEL = 'HuggingFaceTB/SmolLM2-135M-Instruct';

export const CATALOG: readonly CatalogModel[] = [
  { id: DEFAULT_MODEL, params: '135M', bytes: 269_060_552, gated: false, note: 'Smallest; trains quickly on most GPUs. Apache 2.0.' },
  { id: 'HuggingFaceTB/SmolLM2-360M-Instruct', params: '362M', bytes: 723_674_912, gated: false, note: 'Better answers, still light. Apache 2.0.' },
  { id: 'Qwen/Qwen2.5-0.5B-Instruct', params: '494M', bytes: 988_097_824, gated: false, note: 'Multilingual, 151k-word vocabulary. Apache 2.0.' },
  { id: 'Qwen/Qwen3-0.6B', params: '596M', bytes: 1_503_300_328, gated: false, note: 'Hybrid thinking / non-thinking chat. Apache 2.0.' },
  { id: 'meta-llama/Llama-3.2-1B-Instruct', params: '1.24B', bytes: 2_471_645_608, gated: true, note: 'Gated: accept the licence on huggingface.co and paste a token.' },
  { id: 'unsloth/Qwen2.5-0.5B-Instruct-bnb-4bit', params: '494M', bytes: 457_219_472, gated: false, note: 'Qwen2.5-0.5B pre-quantised to 4 bits (NF4): under half the download; QLoRA only. Apache 2.0.' },
  { id: 'unsloth/Llama-3.2-1B-Instruct-bnb-4bit', params: '1.24B', bytes: 1_027_596_512, gated: false, note: 'Llama 3.2 1B pre-quantised to 4 bits (NF4), no token needed; QLoRA only. Llama 3.2 licence.' },
  { id: 'unsloth/Llama-3.2-3B-Instruct-bnb-4bit', params: '3.21B', bytes: 2_242_620_808, gated: false, note: 'Llama 3.2 3B in 4 bits (NF4): about 3.9 GB to train at 512 tokens; QLoRA only. Llama 3.2 licence.' },
];
