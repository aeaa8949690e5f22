import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { STORIES_260K as STORIES } from '../e2e/fixtures.ts';
import { startHubServer, type HubServer } from '../e2e/hub_server.ts';
import {
  DEFAULT_HUB_URL,
  HubError,
  chooseHubUrl,
  downloadModel,
  hubErrorMessage,
  isCached,
  normalizeHubUrl,
  pickModelFiles,
  resolveUrl,
  treeUrl,
  type DownloadProgress,
} from '../../src/ui/model/hub.ts';
import { memoryFiles } from '../../src/engine/io/files.ts';
import { openModelFolder } from '../../src/engine/io/model_folder.ts';


async function bytesOf(file: Uint8Array | Blob): Promise<Buffer> {
  return Buffer.from(file instanceof Blob ? new Uint8Array(await file.arrayBuffer()) : file);
}

/** Cache Storage as the browser has it, in memory: enough of the API for the downloader. */
class MemoryCacheStorage {
  caches = new Map<string, Map<string, { body: Uint8Array; headers: [string, string][] }>>();
  async open(name: string) {
    if (!this.caches.has(name)) this.caches.set(name, new Map());
    const store = this.caches.get(name)!;
    return {
      match: async (key: string) => {
        const hit = store.get(key);
        return hit ? new Response(hit.body.slice(), { headers: hit.headers }) : undefined;
      },
      put: async (key: string, res: Response) => {
        store.set(key, { body: new Uint8Array(await res.arrayBuffer()), headers: [...res.headers] });
      },
      delete: async (key: string) => store.delete(key),
      keys: async () => [...store.keys()],
    };
  }
  async delete(name: string) {
    return this.caches.delete(name);
  }
}

function storage(m: MemoryCacheStorage): CacheStorage {
  return m as unknown as CacheStorage;
}

describe('hub addresses', () => {
  it('normalises the Hub address and rejects what is not one', () => {
    expect(normalizeHubUrl(' http://localhost:8080/ ')).toBe('http://localhost:8080');
    expect(() => normalizeHubUrl('huggingface.co')).toThrow(HubError);
    expect(() => normalizeHubUrl('ftp://x.org')).toThrow(/http:\/\/ or https:\/\//);
  });

  it('takes ?hub= over the saved setting over the default', () => {
    expect(chooseHubUrl('?hub=http://localhost:9000/', 'https://mirror.example')).toBe('http://localhost:9000');
    expect(chooseHubUrl('', 'https://mirror.example/')).toBe('https://mirror.example');
    expect(chooseHubUrl('?hub=nonsense', null)).toBe(DEFAULT_HUB_URL);
    expect(chooseHubUrl('', null)).toBe(DEFAULT_HUB_URL);
  });

  it('builds the Hub layout URLs', () => {
    expect(resolveUrl('https://huggingface.co', 'Qwen/Qwen3-0.6B', 'main', 'config.json')).toBe('https://huggingface.co/Qwen/Qwen3-0.6B/resolve/main/config.json');
    expect(resolveUrl('http://h', 'a/b', 'refs/pr/1', 'x')).toBe('http://h/a/b/resolve/refs%2Fpr%2F1/x');
    expect(treeUrl('http://h', 'a/b', 'main')).toBe('http://h/api/models/a/b/tree/main');
  });
});

describe('pickModelFiles', () => {
  const f = (path: string, size = 1) => ({ type: 'file' as const, path, size });

  it('takes configs, tokenizer, chat template and one safetensors file', () => {
    const picked = pickModelFiles(
      [f('config.json'), f('tokenizer.json'), f('tokenizer_config.json'), f('chat_template.jinja'), f('model.safetensors', 99), f('README.md'), f('onnx/model.onnx'), f('original/consolidated.pth'), { type: 'directory', path: 'onnx', size: 0 }],
      'a/b',
    );
    expect(picked.map((p) => p.path)).toEqual(['config.json', 'tokenizer.json', 'tokenizer_config.json', 'chat_template.jinja', 'model.safetensors']);
    expect(picked.at(-1)!.size).toBe(99);
  });

  it('takes the index and every shard of a sharded model', () => {
    const picked = pickModelFiles([f('config.json'), f('tokenizer.json'), f('model.safetensors.index.json'), f('model-00001-of-00002.safetensors'), f('model-00002-of-00002.safetensors')], 'a/b');
    expect(picked.map((p) => p.path)).toEqual(['config.json', 'tokenizer.json', 'model.safetensors.index.json', 'model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']);
  });

  it('explains a repo without safetensors or without a fast tokenizer', () => {
    expect(() => pickModelFiles([f('config.json'), f('tokenizer.json'), f('pytorch_model.bin')], 'a/b')).toThrow('a/b has no model.safetensors (it has other weight formats; the studio reads safetensors only); pick a model stored in safetensors.');
    expect(() => pickModelFiles([f('config.json'), f('model.safetensors')], 'a/b')).toThrow(/no tokenizer\.json/);
  });
});

describe('hubErrorMessage', () => {
  it('puts Hub answers in words', () => {
    expect(hubErrorMessage({ statusCode: 401 }, 'meta-llama/Llama-3.2-1B-Instruct', DEFAULT_HUB_URL)).toMatch(/gated or private.*access token/);
    expect(hubErrorMessage({ statusCode: 404 }, 'x/y', 'http://h')).toBe('http://h has no model x/y (check the spelling, or the Hub address in Settings).');
    expect(hubErrorMessage(new TypeError("Your access token must start with 'hf_'"), 'x/y', 'http://h')).toMatch(/starts with "hf_"/);
    // Offline before anything arrived: names the model and promises no resuming.
    const offline = hubErrorMessage(new TypeError('fetch failed'), 'x/y', 'http://h');
    expect(offline).toMatch(/^Could not reach http:\/\/h to download x\/y \(fetch failed\)/);
    expect(offline).not.toMatch(/resum|continues/);
    expect(hubErrorMessage(new TypeError('fetch failed'), 'x/y', 'http://h', true)).toMatch(/continues from there\.$/);
    expect(hubErrorMessage({ statusCode: 503 }, 'x/y', 'http://h')).toBe('http://h answered 503 for x/y; try again later.');
  });
});

describe('downloadModel against a server in the Hub layout', () => {
  let hub: HubServer | null = null;
  afterEach(async () => {
    await hub?.close();
    hub = null;
  });

  it('downloads with progress, caches, and loads offline the second time', async () => {
    hub = await startHubServer({ 'karpathy/stories260K': STORIES });
    const cache = new MemoryCacheStorage();
    const progress: DownloadProgress[] = [];
    const files = await downloadModel({ repo: 'karpathy/stories260K', hubUrl: hub.url, cacheStorage: storage(cache), onProgress: (p) => progress.push(p) });
    expect(Object.keys(files).sort()).toEqual(['config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);
    // The weights arrive as a Blob (read a range at a time by the Worker), the configs as bytes.
    expect(files['model.safetensors']).toBeInstanceOf(Blob);
    expect(files['config.json']).toBeInstanceOf(Uint8Array);
    expect((await bytesOf(files['model.safetensors'])).equals(readFileSync(join(STORIES, 'model.safetensors')))).toBe(true);
    expect((await bytesOf(files['config.json'])).equals(readFileSync(join(STORIES, 'config.json')))).toBe(true);
    const last = progress.at(-1)!;
    expect(last.loaded).toBe(last.total);
    expect(last.fromCache).toBe(false);
    expect(progress.some((p) => p.loaded > 0 && p.loaded < p.total)).toBe(true);
    expect(await isCached('karpathy/stories260K', hub.url, 'main', storage(cache))).toBe(true);

    const url = hub.url;
    await hub.close();
    hub = null;
    const again: DownloadProgress[] = [];
    const offline = await downloadModel({ repo: 'karpathy/stories260K', hubUrl: url, cacheStorage: storage(cache), onProgress: (p) => again.push(p) });
    expect(Object.keys(offline).sort()).toEqual(Object.keys(files).sort());
    expect(again.every((p) => p.fromCache)).toBe(true);
    expect(offline['model.safetensors']).toBeInstanceOf(Blob);
    expect((await bytesOf(offline['model.safetensors'])).equals(readFileSync(join(STORIES, 'model.safetensors')))).toBe(true);
    // The folder streams straight from the Blobs.
    const folder = await openModelFolder(memoryFiles('karpathy/stories260K', offline));
    let count = 0;
    await folder.readWeights(() => {
      count++;
    });
    expect(count).toBe(folder.tensors.size);
  });

  it('resumes an interrupted download from the parts already cached', async () => {
    hub = await startHubServer({ 'karpathy/stories260K': STORIES });
    const cache = new MemoryCacheStorage();
    const partBytes = 256 * 1024;
    // The configs and two parts of the 1 MB weights get through, then the server fails.
    hub.failAfterBytes = 40_000 + 2 * partBytes;
    await expect(downloadModel({ repo: 'karpathy/stories260K', hubUrl: hub.url, cacheStorage: storage(cache), partBytes })).rejects.toThrow(/answered 503/);
    hub.failAfterBytes = undefined;
    hub.requests.length = 0;
    const files = await downloadModel({ repo: 'karpathy/stories260K', hubUrl: hub.url, cacheStorage: storage(cache), partBytes });
    expect(files['model.safetensors']).toBeInstanceOf(Blob);
    const weights = await bytesOf(files['model.safetensors']);
    expect(weights.equals(readFileSync(join(STORIES, 'model.safetensors')))).toBe(true);
    // Only the weights are fetched again, and not the parts already cached: a probe plus the missing parts.
    const gets = hub.requests.filter((r) => r.startsWith('GET /karpathy/stories260K/resolve/'));
    expect(gets.every((r) => r.endsWith('model.safetensors'))).toBe(true);
    const parts = Math.ceil(weights.length / partBytes);
    expect(gets.length).toBe(1 + parts - 2);
  });

  it('assembles a download in parts as one Blob when there is no Cache Storage', async () => {
    hub = await startHubServer({ 'karpathy/stories260K': STORIES });
    const files = await downloadModel({ repo: 'karpathy/stories260K', hubUrl: hub.url, cacheStorage: null, partBytes: 100_000 });
    expect(files['model.safetensors']).toBeInstanceOf(Blob);
    expect((await bytesOf(files['model.safetensors'])).equals(readFileSync(join(STORIES, 'model.safetensors')))).toBe(true);
    expect(files['tokenizer.json']).toBeInstanceOf(Uint8Array);
    expect((await bytesOf(files['tokenizer.json'])).equals(readFileSync(join(STORIES, 'tokenizer.json')))).toBe(true);
  });

  it('says when the repo does not exist', async () => {
    hub = await startHubServer({});
    await expect(downloadModel({ repo: 'nobody/nothing', hubUrl: hub.url, cacheStorage: new MemoryCacheStorage() as unknown as CacheStorage })).rejects.toThrow(`${hub.url} has no model nobody/nothing`);
  });

  it('says when a repo has no safetensors weights', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'hub-'));
    writeFileSync(join(dir, 'config.json'), '{}');
    writeFileSync(join(dir, 'tokenizer.json'), '{}');
    writeFileSync(join(dir, 'pytorch_model.bin'), 'x');
    hub = await startHubServer({ 'old/model': dir });
    await expect(downloadModel({ repo: 'old/model', hubUrl: hub.url, cacheStorage: null })).rejects.toThrow(/old\/model has no model\.safetensors/);
  });
});
