// The golden comparisons against an independent PyTorch implementation
// (tests/reference/make_golden.py), run on one backend per test file: logits, the SFT loss, LoRA
// gradients and three AdamW steps, with gradient checkpointing on and off, and BF16 cases with
// their matrices kept 16-bit as well as widened to float32. Values are read with `await data()`
// (dataSync throws on WebGPU in Node).
import { describe, expect, it, beforeAll } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { initBackend, type BackendName } from '../../../src/engine/backend/index.ts';
import { GOLDEN_CASES, loadGolden, readGoldenSafetensors, allTensors, maxAbsDiff, type Golden } from './golden.ts';
import { LoraAdapter, parseAdapterConfig } from '../../../src/engine/model/lora.ts';
import { collate, type Example } from '../../../src/engine/train/batch.ts';
import { sftLossSum, sftMethod } from '../../../src/engine/train/methods/sft.ts';
import { trainStep } from '../../../src/engine/train/step.ts';
import { AdamW } from '../../../src/engine/train/optim.ts';

function examples(g: Golden): Example[] {
  return g.input_ids.map((ids, b) => {
    const n = g.attention_mask[b].reduce((a, x) => a + x, 0);
    return { input_ids: ids.slice(0, n), labels: g.labels[b].slice(0, n) };
  });
}

function adapterFrom(name: string, file: string, g: Golden, model: Awaited<ReturnType<typeof loadGolden>>['model']): LoraAdapter {
  const config = parseAdapterConfig({ peft_type: 'LORA', ...g.lora });
  return LoraAdapter.fromSafetensors(model.config, config, readGoldenSafetensors(name, file));
}


type StorageCase = [string, 'auto' | 'float32'];

/** Every golden case, BF16 ones twice: matrices kept 16-bit (read by our kernels) and widened to float32. */
export const ALL_CASES: StorageCase[] = GOLDEN_CASES.flatMap((name) => (name.endsWith('bf16') ? [[name, 'auto'], [name, 'float32']] : [[name, 'auto']]) as StorageCase[]);

export function goldenSuite(backend: BackendName, cases: StorageCase[] = ALL_CASES): void {
  beforeAll(async () => {
    const info = await initBackend(backend);
    if (info.name !== backend) throw new Error(`${backend} is not available: ${info.fallbackReason}`);
  });

  describe.each(cases)(`%s (storage %s) matches PyTorch on ${backend}`, (name, storage) => {
    it('logits within 1e-4 at every real token', async () => {
      const { golden: g, model } = await loadGolden(name, storage);
      if (storage === 'auto' && name.endsWith('bf16')) expect(model.frozenStorage().bytes / model.frozenStorage().parameters).toBeLessThan(2.1);
      const expected = allTensors(readGoldenSafetensors(name, 'logits.safetensors')).get('logits')!;
      const logits = tf.tidy(() =>
        model.logits(model.forward(tf.tensor2d(g.input_ids, undefined, 'int32'), { attentionMask: tf.tensor2d(g.attention_mask, undefined, 'int32') })),
      );
      const got = (await logits.data()) as Float32Array;
      const V = model.config.vocab_size;
      const T = g.input_ids[0].length;
      let worst = 0;
      g.attention_mask.forEach((row, b) =>
        row.forEach((m, t) => {
          if (!m) return;
          const o = (b * T + t) * V;
          worst = Math.max(worst, maxAbsDiff(got.subarray(o, o + V), expected.subarray(o, o + V)));
        }),
      );
      logits.dispose();
      model.dispose();
      expect(worst).toBeLessThanOrEqual(1e-4);
    });

    it('SFT loss within 1e-5 relative, right-padded and bucketed', async () => {
      const { golden: g, model } = await loadGolden(name, storage);
      for (const bucket of [false, true]) {
        const batch = collate(examples(g), g.pad_token_id, bucket);
        expect(batch.targets.length).toBe(g.num_items);
        const loss = tf.tidy(() => sftLossSum(model, batch, {}));
        const sum = (await loss.data())[0];
        loss.dispose();
        expect(Math.abs(sum / g.num_items - g.loss) / g.loss).toBeLessThanOrEqual(1e-5);
      }
      model.dispose();
    });

    it.each([false, true])('LoRA gradients within 1e-4 (base weights frozen), gradient_checkpointing %s', async (gradientCheckpointing) => {
      const { golden: g, model } = await loadGolden(name, storage);
      const adapter = adapterFrom(name, 'lora_grad_init.safetensors', g, model);
      const expected = allTensors(readGoldenSafetensors(name, 'lora_grad_expected.safetensors'));
      const vars = adapter.variables();
      const batch = collate(examples(g), g.pad_token_id);
      const { value, grads } = tf.variableGrads(() => tf.div(sftLossSum(model, batch, { adapter, gradientCheckpointing }), batch.targets.length) as tf.Scalar, [...vars.values()]);
      expect(Math.abs((await value.data())[0] - g.lora_grad_loss) / g.lora_grad_loss).toBeLessThanOrEqual(1e-5);
      // Only adapter tensors get gradients: nothing was computed for the frozen base weights.
      expect(Object.keys(grads).length).toBe(vars.size);
      for (const [key, v] of vars) {
        const got = await grads[v.name].data();
        expect(maxAbsDiff(got, expected.get(key)!), key).toBeLessThanOrEqual(1e-4);
      }
      tf.dispose([value, ...Object.values(grads)]);
      adapter.dispose();
      model.dispose();
    });

    it.each([false, true])('adapter after 3 AdamW steps (2 micro-batches each, clipped) within 1e-5, gradient_checkpointing %s', async (gradientCheckpointing) => {
      const { golden: g, model } = await loadGolden(name, storage);
      const adapter = adapterFrom(name, 'lora_init.safetensors', g, model);
      const expected = allTensors(readGoldenSafetensors(name, 'lora_after_3_steps.safetensors'));
      const t = g.train;
      const params = adapter.variables();
      const optimizer = new AdamW(params, { betas: t.betas, eps: t.eps, weight_decay: t.weight_decay });
      const ex = examples(g);
      const micro = t.micro_batches.map((rows) => collate(rows.map((r) => ex[r]), g.pad_token_id));
      let after1 = 0;
      for (let s = 0; s < t.steps; s++) {
        const r = await trainStep(params, micro, sftMethod({ padTokenId: g.pad_token_id }), { model, adapter, gradientCheckpointing }, optimizer, t.lr, t.max_grad_norm);
        expect(Math.abs(r.loss - t.losses[s])).toBeLessThanOrEqual(1e-5);
        expect(Math.abs(r.grad_norm - t.grad_norms[s])).toBeLessThanOrEqual(1e-5);
        // No tensor leaks across steps.
        if (s === 0) after1 = tf.memory().numTensors;
        else expect(tf.memory().numTensors).toBe(after1);
      }
      for (const [key, v] of params) {
        expect(maxAbsDiff(await v.data(), expected.get(key)!), key).toBeLessThanOrEqual(1e-5);
      }
      optimizer.dispose();
      adapter.dispose();
      model.dispose();
    });
  });
}
