import { describe, expect, it } from 'vitest';
import { summarizeBackend } from '../../src/ui/lib/backend.ts';
import { describeError } from '../../src/ui/lib/errors.ts';
import { UserError } from '../../src/engine/errors.ts';

const limits = {
  maxBufferSize: 4_294_967_296,
  maxStorageBufferBindingSize: 2_147_483_648,
  maxStorageBuffersPerShaderStage: 10,
  maxComputeWorkgroupStorageSize: 32768,
  maxComputeInvocationsPerWorkgroup: 1024,
  maxComputeWorkgroupSizeX: 1024,
  maxComputeWorkgroupsPerDimension: 65535,
};

describe('summarizeBackend', () => {
  it('names a hardware GPU and its limits', () => {
    const s = summarizeBackend({ name: 'webgpu', adapter: { vendor: 'nvidia', architecture: 'ampere', device: '', description: 'NVIDIA GeForce RTX 3080' }, limits, features: ['shader-f16'] });
    expect(s.name).toBe('WebGPU');
    expect(s.adapter).toBe('NVIDIA GeForce RTX 3080');
    expect(s.warning).toBeNull();
    expect(s.limits).toContainEqual(['max buffer', '4.29 GB']);
    expect(s.limits).toContainEqual(['features', 'shader-f16']);
  });

  it('marks SwiftShader as a software adapter', () => {
    const s = summarizeBackend({ name: 'webgpu', adapter: { vendor: 'google', architecture: 'swiftshader', device: '', description: '' }, limits });
    expect(s.adapter).toBe('SwiftShader (software)');
    expect(s.warning).toMatch(/software GPU/);
  });

  it('says plainly when there is no WebGPU', () => {
    expect(summarizeBackend({ name: 'wasm' }).warning).toBe('WebGPU is not available in this browser; training runs on WASM, much slower.');
    expect(summarizeBackend({ name: 'cpu' }).warning).toMatch(/CPU backend/);
  });
});

describe('describeError', () => {
  it('shows a UserError message as it is, with its field', () => {
    const shown = describeError(new UserError('train.jsonl, line 3: not valid JSON.', { field: 'train_file' }));
    expect(shown).toEqual({ message: 'train.jsonl, line 3: not valid JSON.', field: 'train_file', user: true });
  });

  it('shows what comlink hands over for a UserError thrown in the Worker', () => {
    // comlink rethrows Object.assign(new Error(message), {name, message, stack}).
    const err = Object.assign(new Error('x'), { name: 'UserError', message: 'model: unsupported architecture.', stack: 'UserError: …\n    at foo (worker.js:1:1)' });
    expect(describeError(err).message).toBe('model: unsupported architecture.');
  });

  it('never shows a stack trace and explains device loss and memory', () => {
    const bug = describeError(new TypeError('x is undefined\n    at foo (a.js:1:2)'));
    expect(bug.message).toBe('Something went wrong: x is undefined');
    expect(describeError(new Error('GPU device was lost: reason unknown')).message).toMatch(/GPU device was lost.*Reload/);
    expect(describeError(new Error('Failed to allocate buffer of 1 GB')).message).toMatch(/ran out of memory/);
  });
});
