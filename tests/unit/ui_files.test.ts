import { describe, expect, it } from 'vitest';
import { zipSync, strToU8 } from 'fflate';
import { commonFolder, fileSafe, readFolder, relativeTo, unzipFolder } from '../../src/ui/lib/files.ts';
import { memoryFiles } from '../../src/engine/io/files.ts';
import { histogramBars, tokenText } from '../../src/ui/data/report.ts';

describe('picked folders', () => {
  it('finds the folder every path is in', () => {
    expect(commonFolder(['SmolLM2/config.json', 'SmolLM2/tokenizer.json'])).toBe('SmolLM2');
    expect(commonFolder(['config.json', 'tokenizer.json'])).toBe('');
    expect(commonFolder(['a/config.json', 'b/tokenizer.json'])).toBe('');
    expect(commonFolder([])).toBe('');
  });

  it('makes paths relative to it and names the model after it', () => {
    expect(relativeTo(['m/config.json', 'm/sub/x.json'], 'fallback')).toEqual({ name: 'm', paths: ['config.json', 'sub/x.json'] });
    expect(relativeTo(['config.json'], 'fallback')).toEqual({ name: 'fallback', paths: ['config.json'] });
  });

  it('makes a name safe for a downloaded file', () => {
    expect(fileSafe('HuggingFaceTB/SmolLM2-135M-Instruct')).toBe('SmolLM2-135M-Instruct');
    expect(fileSafe('run 3: pirate')).toBe('run-3-pirate');
    expect(fileSafe('///')).toBe('studio');
  });
});

describe('reading a picked folder', () => {
  it('keeps weights as their File (a Blob) and reads small files as bytes, skipping hidden files', async () => {
    const weights = new File([new Uint8Array([1, 2, 3, 4, 5])], 'model.safetensors');
    const picked = [
      { path: 'm/config.json', file: new File(['{"a": 1}'], 'config.json') },
      { path: 'm/model.safetensors', file: weights },
      { path: 'm/.DS_Store', file: new File(['x'], '.DS_Store') },
    ];
    const { name, files } = await readFolder(picked, 'fallback');
    expect(name).toBe('m');
    expect(Object.keys(files).sort()).toEqual(['config.json', 'model.safetensors']);
    expect(files['model.safetensors']).toBe(weights);
    expect(files['config.json']).toBeInstanceOf(Uint8Array);
    // The engine reads both kinds, and ranges of the Blob without reading it whole.
    const source = memoryFiles(name, files);
    expect(await source.size('model.safetensors')).toBe(5);
    expect([...(await source.readRange('model.safetensors', 1, 4))]).toEqual([2, 3, 4]);
    expect(new TextDecoder().decode(await source.read('config.json'))).toBe('{"a": 1}');
  });
});

describe('adapter zips', () => {
  it('reads a zip with or without a top folder, skipping directories and macOS metadata', () => {
    const flat = zipSync({ 'adapter_config.json': strToU8('{}'), 'adapter_model.safetensors': new Uint8Array([1, 2, 3]) });
    expect(Object.keys(unzipFolder(flat)).sort()).toEqual(['adapter_config.json', 'adapter_model.safetensors']);
    const nested = zipSync({
      'my-adapter/': {},
      'my-adapter/adapter_config.json': strToU8('{"r": 8}'),
      'my-adapter/adapter_model.safetensors': new Uint8Array([4, 5]),
      'my-adapter/.DS_Store': new Uint8Array([0]),
    });
    const files = unzipFolder(nested);
    expect(Object.keys(files).sort()).toEqual(['adapter_config.json', 'adapter_model.safetensors']);
    expect([...files['adapter_model.safetensors']]).toEqual([4, 5]);
  });
});

describe('data report display', () => {
  it('puts histogram bars at their left bin edges', () => {
    expect(histogramBars({ bin_edges: [10, 20, 30], counts: [3, 1] })).toEqual({ x: [10, 20], counts: [3, 1] });
    expect(histogramBars({ bin_edges: [], counts: [] })).toBeNull();
  });
  it('makes whitespace tokens visible', () => {
    expect(tokenText('\n')).toBe('↵\n');
    expect(tokenText('')).toBe('∅');
    expect(tokenText('Hello')).toBe('Hello');
  });
});
