// The TypeScript model against an independent PyTorch implementation (tests/reference/make_golden.py):
// logits, the SFT loss, LoRA gradients and three AdamW steps, for Llama (tied embeddings, llama3
// RoPE scaling, GQA), Qwen2 (q/k/v bias) and Qwen3 (q_norm/k_norm, head_dim ≠ hidden/heads), in F32
// and BF16, on the CPU backend (golden_wasm and golden_webgpu run the same on the other backends).
import { goldenSuite } from './helpers/golden_suite.ts';

goldenSuite('cpu');
