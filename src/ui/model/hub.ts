/**
 * Model and dataset downloads from the Hugging Face Hub (or any server with the Hub's URL layout:
 * `/api/models/{repo}/tree/{revision}` and `/{repo}/resolve/{revision}/{file}` for models,
 * `/api/datasets/…` and `/datasets/{repo}/resolve/…` for datasets), through @huggingface/hub.
 * Every file lands in Cache Storage, so a second visit loads with no network; large files are
 * fetched in parts that are cached as they arrive, so an interrupted download resumes where it
 * stopped.
 */
import { downloadFile, listFiles, type ListFileEntry } from '@huggingface/hub';
import type { FolderFiles } from '../../worker/protocol.ts';
import { keepsAsBlob } from '../lib/files.ts';

export const DEFAULT_HUB_URL = 'https://huggingface.co';
export const MODEL_CACHE = 'studio-models-v1';
export const DATASET_CACHE = 'studio-datasets-v1';
/** Bytes fetched per request for large files; each part is cached on its own. */
export const PART_BYTES = 32 * 1024 * 1024;

/** The kinds of Hub repo the studio reads: models (the Model view) and datasets (the Data view). */
export type RepoType = 'model' | 'dataset';

/** An error whose message is a full sentence for the page. */
export class HubError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'HubError';
  }
}

/** The Hub address without trailing slashes; throws a HubError for anything but http(s). */
export function normalizeHubUrl(input: string): string {
  const trimmed = input.trim().replace(/\/+$/, '');
  let url: URL;
  try {
    url = new URL(trimmed);
  } catch {
    throw new HubError(`"${input}" is not a web address; the Hub address looks like https://huggingface.co.`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new HubError(`The Hub address must start with http:// or https:// (got "${input}").`);
  }
  return trimmed;
}

/** The Hub address to use: `?hub=` in the page's address wins over the saved setting. */
export function chooseHubUrl(search: string, saved: string | null): string {
  const fromQuery = new URLSearchParams(search).get('hub');
  for (const candidate of [fromQuery, saved]) {
    if (!candidate) continue;
    try {
      return normalizeHubUrl(candidate);
    } catch {
      // An unusable value falls through to the next source.
    }
  }
  return DEFAULT_HUB_URL;
}

const EXAMPLE_ID: Record<RepoType, string> = { model: 'HuggingFaceTB/SmolLM2-135M-Instruct', dataset: 'trl-lib/Capybara' };

/** "owner/name" with the Hub's allowed characters. */
export function checkRepoId(repo: string, type: RepoType = 'model'): string {
  const id = repo.trim();
  if (!/^[A-Za-z0-9][\w.-]*\/[\w.-]+$/.test(id)) {
    throw new HubError(`"${repo}" is not a Hub ${type} id; it looks like "${EXAMPLE_ID[type]}".`);
  }
  return id;
}

/** The address a file is served from, which is also its key in Cache Storage. */
export function resolveUrl(hubUrl: string, repo: string, revision: string, file: string, type: RepoType = 'model'): string {
  return `${hubUrl}/${type === 'dataset' ? 'datasets/' : ''}${repo}/resolve/${encodeURIComponent(revision)}/${file}`;
}

/** Where the list of a repo's files is kept in Cache Storage (the Hub's tree endpoint). */
export function treeUrl(hubUrl: string, repo: string, revision: string, type: RepoType = 'model'): string {
  return `${hubUrl}/api/${type}s/${repo}/tree/${encodeURIComponent(revision)}`;
}

function partUrl(fileUrl: string, index: number, count: number): string {
  return `${fileUrl}?part=${index + 1}-of-${count}`;
}

export interface RemoteFile {
  path: string;
  size: number;
}

const CONFIG_FILES = [
  'config.json',
  'generation_config.json',
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'chat_template.jinja',
];

/**
 * The files a model folder needs, from the repo's top-level listing: configs, tokenizer, chat
 * template and safetensors weights (one file, or the index and its shards). Other formats
 * (`original/`, ONNX, GGUF, pickles) are left on the Hub.
 */
export function pickModelFiles(entries: Pick<ListFileEntry, 'path' | 'size' | 'type'>[], repo: string): RemoteFile[] {
  const files = entries.filter((e) => e.type === 'file' && !e.path.includes('/'));
  const byPath = new Map(files.map((e) => [e.path, e]));
  const out: RemoteFile[] = [];
  for (const name of CONFIG_FILES) {
    const e = byPath.get(name);
    if (e) out.push({ path: e.path, size: e.size });
  }
  if (byPath.has('model.safetensors')) {
    out.push({ path: 'model.safetensors', size: byPath.get('model.safetensors')!.size });
  } else if (byPath.has('model.safetensors.index.json')) {
    out.push({ path: 'model.safetensors.index.json', size: byPath.get('model.safetensors.index.json')!.size });
    for (const e of files) {
      if (/^model-\d+-of-\d+\.safetensors$/.test(e.path)) out.push({ path: e.path, size: e.size });
    }
  } else {
    const other = files.some((e) => /\.(bin|pt|pth|gguf|onnx)$/.test(e.path))
      ? ' (it has other weight formats; the studio reads safetensors only)'
      : '';
    throw new HubError(`${repo} has no model.safetensors${other}; pick a model stored in safetensors.`);
  }
  if (!byPath.has('config.json')) throw new HubError(`${repo} has no config.json, so it is not a transformers model folder.`);
  if (!byPath.has('tokenizer.json')) throw new HubError(`${repo} has no tokenizer.json; the studio needs a fast (tokenizers) tokenizer.`);
  return out;
}

/** What the sentences of `hubErrorMessage` say for each kind of repo. */
const ERROR_WORDS: Record<RepoType, { accept: string; settings: string; instead: string }> = {
  model: { accept: 'Accept its licence on the model page', settings: 'Settings', instead: 'load the model from a folder on your disk (From your disk, below)' },
  dataset: { accept: 'Accept its conditions on the dataset page', settings: 'Model › Settings', instead: 'drop the dataset file here instead' },
};

/**
 * A sentence for a failed Hub request. `cached` says whether any of the repo's bytes were kept
 * (then trying again continues from them); a download that never started promises nothing.
 */
export function hubErrorMessage(e: unknown, repo: string, hubUrl: string, cached = false, type: RepoType = 'model'): string {
  const resumes = cached ? ' What has arrived stays cached, so trying again continues from there.' : '';
  const words = ERROR_WORDS[type];
  if (e instanceof HubError) return e.message;
  const err = e as { statusCode?: number; message?: string; name?: string };
  // A failure inside a streamed body reaches us as the message alone ("Api error with status 503…").
  const status = err?.statusCode ?? Number(/Api error with status (\d+)/.exec(String(err?.message ?? e))?.[1] ?? Number.NaN);
  if (status === 401 || status === 403) {
    return `${repo} needs permission: it is gated or private. ${words.accept}, then paste an access token with read access.`;
  }
  if (status === 404) return `${hubUrl} has no ${type} ${repo} (check the spelling, or the Hub address in ${words.settings}).`;
  if (Number.isFinite(status)) return `${hubUrl} answered ${status} for ${repo}; try again later.${resumes}`;
  const message = String(err?.message ?? e);
  if (/access token must start with 'hf_'/.test(message)) return 'An access token starts with "hf_"; copy it again from huggingface.co/settings/tokens.';
  if (err?.name === 'AbortError' || /aborted/i.test(message)) return 'Download cancelled; start it again to continue where it stopped.';
  return `Could not reach ${hubUrl} to download ${repo} (${message}). Check your connection, or ${words.instead}.${resumes}`;
}

export interface DownloadProgress {
  /** The file being fetched now. */
  file: string;
  /** Bytes of all files that are in hand (cached or downloaded). */
  loaded: number;
  total: number;
  /** True while nothing needs the network. */
  fromCache: boolean;
}

export interface DownloadOptions {
  repo: string;
  revision?: string;
  hubUrl?: string;
  accessToken?: string;
  onProgress?: (p: DownloadProgress) => void;
  signal?: AbortSignal;
  /** Cache Storage to use; `globalThis.caches` by default, none where the browser has none. */
  cacheStorage?: CacheStorage | null;
  partBytes?: number;
}

/** One repo at one revision, where its files are kept, and how they are fetched. */
interface FileSource {
  type: RepoType;
  repo: string;
  revision: string;
  hubUrl: string;
  accessToken: string | undefined;
  cache: Cache | null;
  partBytes: number;
  fetchFn: typeof fetch;
  signal: AbortSignal | undefined;
  /** Set once any of the repo's bytes are in the cache, so that trying again continues from them. */
  kept: boolean;
}

async function openSource(opts: DownloadOptions, type: RepoType, cacheName: string): Promise<FileSource> {
  const storage = opts.cacheStorage !== undefined ? opts.cacheStorage : (globalThis.caches ?? null);
  return {
    type,
    repo: checkRepoId(opts.repo, type),
    revision: opts.revision ?? 'main',
    hubUrl: normalizeHubUrl(opts.hubUrl ?? DEFAULT_HUB_URL),
    accessToken: opts.accessToken || undefined,
    cache: storage ? await storage.open(cacheName) : null,
    partBytes: opts.partBytes ?? PART_BYTES,
    // The HTTP cache would keep a second copy of every byte that Cache Storage already holds.
    fetchFn: (input, init) => fetch(input, { ...init, cache: 'no-store', signal: opts.signal }),
    signal: opts.signal,
    kept: false,
  };
}

/**
 * Each file as a Blob, from Cache Storage where present and from the Hub otherwise, with progress
 * over all of them. A downloaded file is fetched in parts, each held in memory only while it is
 * fetched and cached; the file is then assembled as a Blob of the parts, never concatenated into
 * one buffer, cached whole, and handed out as the cache's own (disk-backed) copy.
 */
async function fetchFiles(src: FileSource, files: RemoteFile[], onProgress?: (p: DownloadProgress) => void): Promise<Record<string, Blob>> {
  const { cache, partBytes } = src;
  const total = files.reduce((a, f) => a + f.size, 0);
  let loaded = 0;
  let fromCache = true;
  const report = (file: string) => onProgress?.({ file, loaded, total, fromCache });
  const out: Record<string, Blob> = {};
  for (const f of files) {
    const url = resolveUrl(src.hubUrl, src.repo, src.revision, f.path, src.type);
    const hit = await cache?.match(url);
    if (hit) {
      out[f.path] = await hit.blob();
      src.kept = true;
      loaded += f.size;
      report(f.path);
      continue;
    }
    fromCache = false;
    report(f.path);
    const blob = await downloadFile({ repo: { type: src.type, name: src.repo }, path: f.path, revision: src.revision, hubUrl: src.hubUrl, accessToken: src.accessToken, fetch: src.fetchFn });
    if (!blob) throw new HubError(`${src.repo} lists ${f.path} but the Hub has no such file; try again later.`);
    const size = blob.size;
    const count = Math.max(1, Math.ceil(size / partBytes));
    const parts: Blob[] = [];
    for (let i = 0; i < count; i++) {
      const key = partUrl(url, i, count);
      const cachedPart = count > 1 ? await cache?.match(key) : undefined;
      if (cachedPart) {
        const part = await cachedPart.blob();
        loaded += part.size;
        report(f.path);
        parts.push(part);
        continue;
      }
      const slice = count > 1 ? blob.slice(i * partBytes, Math.min(size, (i + 1) * partBytes)) : blob;
      const bytes = await readAll(slice.stream(), (n) => {
        loaded += n;
        report(f.path);
      }, src.signal);
      if (count > 1 && cache) {
        await cache.put(key, binaryResponse(bytes));
        src.kept = true;
        // The cached copy (disk-backed in a browser) stands in for the bytes from here on.
        const stored = await cache.match(key);
        parts.push(stored ? await stored.blob() : new Blob([bytes as Uint8Array<ArrayBuffer>]));
      } else {
        parts.push(new Blob([bytes as Uint8Array<ArrayBuffer>]));
      }
    }
    const whole = parts.length === 1 ? parts[0] : new Blob(parts);
    let file = whole;
    if (cache) {
      await cache.put(url, binaryResponse(whole));
      src.kept = true;
      // Hand out the cache's own copy, so the parts can go.
      const stored = await cache.match(url);
      if (stored) file = await stored.blob();
      if (count > 1) for (let i = 0; i < count; i++) await cache.delete(partUrl(url, i, count));
    }
    out[f.path] = file;
  }
  return out;
}

/** The model's files, from Cache Storage where present and from the Hub otherwise. */
export async function downloadModel(opts: DownloadOptions): Promise<FolderFiles> {
  const src = await openSource(opts, 'model', MODEL_CACHE);
  try {
    const listingKey = treeUrl(src.hubUrl, src.repo, src.revision);
    let files: RemoteFile[] | null = null;
    const cachedListing = await src.cache?.match(listingKey);
    if (cachedListing) files = (await cachedListing.json()) as RemoteFile[];
    if (!files) {
      const entries: ListFileEntry[] = [];
      for await (const e of listFiles({ repo: src.repo, revision: src.revision, hubUrl: src.hubUrl, accessToken: src.accessToken, fetch: src.fetchFn })) entries.push(e);
      files = pickModelFiles(entries, src.repo);
      await src.cache?.put(listingKey, jsonResponse(files));
    }
    const blobs = await fetchFiles(src, files, opts.onProgress);
    const out: FolderFiles = {};
    for (const f of files) out[f.path] = await asFolderFile(f.path, blobs[f.path]);
    return out;
  } catch (e) {
    throw new HubError(hubErrorMessage(e, src.repo, src.hubUrl, src.kept));
  }
}

/**
 * Every file of a dataset repo (recursively), from the Hub: the listing is asked for afresh, as a
 * dataset may have gained files, and kept in Cache Storage; without the network, the listing kept
 * last time is used, so a dataset fetched before can be chosen again offline.
 */
export async function listDatasetFiles(opts: Omit<DownloadOptions, 'onProgress' | 'partBytes'>): Promise<RemoteFile[]> {
  const src = await openSource(opts, 'dataset', DATASET_CACHE);
  const listingKey = treeUrl(src.hubUrl, src.repo, src.revision, 'dataset');
  try {
    const files: RemoteFile[] = [];
    for await (const e of listFiles({ repo: { type: 'dataset', name: src.repo }, recursive: true, revision: src.revision, hubUrl: src.hubUrl, accessToken: src.accessToken, fetch: src.fetchFn })) {
      if (e.type === 'file') files.push({ path: e.path, size: e.size });
    }
    await src.cache?.put(listingKey, jsonResponse(files));
    return files;
  } catch (e) {
    const kept = await src.cache?.match(listingKey);
    if (kept && e instanceof TypeError) return (await kept.json()) as RemoteFile[];
    throw new HubError(hubErrorMessage(e, src.repo, src.hubUrl, false, 'dataset'));
  }
}

/** A dataset's files as Blobs, from Cache Storage where present and from the Hub otherwise. */
export async function downloadDatasetFiles(opts: DownloadOptions & { files: RemoteFile[] }): Promise<Record<string, Blob>> {
  const src = await openSource(opts, 'dataset', DATASET_CACHE);
  try {
    return await fetchFiles(src, opts.files, opts.onProgress);
  } catch (e) {
    throw new HubError(hubErrorMessage(e, src.repo, src.hubUrl, src.kept, 'dataset'));
  }
}

/** Whether every file of a model is in Cache Storage (so it loads offline). */
export async function isCached(repo: string, hubUrl: string, revision = 'main', storage: CacheStorage | null = globalThis.caches ?? null): Promise<boolean> {
  if (!storage) return false;
  const cache = await storage.open(MODEL_CACHE);
  const listing = await cache.match(treeUrl(hubUrl, repo, revision));
  if (!listing) return false;
  const files = (await listing.json()) as RemoteFile[];
  for (const f of files) if (!(await cache.match(resolveUrl(hubUrl, repo, revision, f.path)))) return false;
  return true;
}

/** Forgets every downloaded model. */
export async function clearModelCache(storage: CacheStorage | null = globalThis.caches ?? null): Promise<void> {
  await storage?.delete(MODEL_CACHE);
}

/** Forgets every downloaded dataset file (a dataset in use stays loaded until the page reloads). */
export async function clearDatasetCache(storage: CacheStorage | null = globalThis.caches ?? null): Promise<void> {
  await storage?.delete(DATASET_CACHE);
}

async function readAll(stream: ReadableStream<Uint8Array>, onBytes: (n: number) => void, signal?: AbortSignal): Promise<Uint8Array> {
  const reader = stream.getReader();
  const chunks: Uint8Array[] = [];
  try {
    for (;;) {
      if (signal?.aborted) throw new DOMException('The download was aborted.', 'AbortError');
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      onBytes(value.length);
    }
  } catch (e) {
    await reader.cancel().catch(() => {});
    // WebBlob reports a failed fetch by aborting its stream with the message alone.
    throw typeof e === 'string' ? new Error(e) : e;
  }
  return concat(chunks);
}

function concat(chunks: Uint8Array[]): Uint8Array {
  const n = chunks.reduce((a, c) => a + c.length, 0);
  const out = new Uint8Array(n);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

function binaryResponse(body: Uint8Array | Blob): Response {
  const length = body instanceof Blob ? body.size : body.length;
  return new Response(body as Uint8Array<ArrayBuffer> | Blob, { headers: { 'content-type': 'application/octet-stream', 'content-length': String(length) } });
}

/** A downloaded file for the folder: weights and other large files as a Blob, small files as bytes. */
async function asFolderFile(path: string, blob: Blob): Promise<Uint8Array | Blob> {
  return keepsAsBlob(path, blob.size) ? blob : new Uint8Array(await blob.arrayBuffer());
}

function jsonResponse(value: unknown): Response {
  return new Response(JSON.stringify(value), { headers: { 'content-type': 'application/json' } });
}
