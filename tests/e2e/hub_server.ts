/**
 * A stand-in for the Hugging Face Hub serving model and dataset folders from disk in the Hub's URL
 * layout, with the two endpoints @huggingface/hub's `listFiles` and `downloadFile` call:
 *   GET /api/models/{owner}/{name}/tree/{revision}[/{path}]     a model's file listing (JSON)
 *   GET /{owner}/{name}/resolve/{revision}/{file}              a model's file, with Range support and an ETag
 *   GET /api/datasets/{owner}/{name}/tree/{revision}[/{path}]   a dataset's file listing
 *   GET /datasets/{owner}/{name}/resolve/{revision}/{file}     a dataset's file
 * Pages on another localhost port reach it through CORS, as they reach huggingface.co.
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';

export interface HubServer {
  url: string;
  /** Every request as "METHOD path", in order. */
  requests: string[];
  /** Makes file requests fail with 503 after this many more bytes of file content (undefined: never). */
  failAfterBytes: number | undefined;
  close(): Promise<void>;
}

const CORS = {
  'access-control-allow-origin': '*',
  'access-control-allow-headers': 'Range, Authorization, Accept, Content-Type',
  'access-control-expose-headers': 'Content-Range, Content-Length, ETag, X-Linked-ETag, X-Linked-Size, X-Error-Code, Accept-Ranges',
};

function listDir(dir: string, recursive: boolean, prefix = ''): { type: 'file' | 'directory'; path: string; size: number; oid: string }[] {
  const out: { type: 'file' | 'directory'; path: string; size: number; oid: string }[] = [];
  for (const name of readdirSync(dir).sort()) {
    const full = join(dir, name);
    const path = prefix + name;
    const st = statSync(full);
    if (st.isDirectory()) {
      out.push({ type: 'directory', path, size: 0, oid: '0'.repeat(40) });
      if (recursive) out.push(...listDir(full, true, `${path}/`));
    } else {
      out.push({ type: 'file', path, size: st.size, oid: createHash('sha1').update(path).digest('hex') });
    }
  }
  return out;
}

/** `repos` (models) and `datasets` map "owner/name" to a folder on disk. */
export async function startHubServer(repos: Record<string, string>, datasets: Record<string, string> = {}): Promise<HubServer> {
  const server: HubServer = { url: '', requests: [], failAfterBytes: undefined, close: async () => {} };

  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const path = decodeURIComponent(url.pathname);
    server.requests.push(`${req.method} ${path}`);
    if (req.method === 'OPTIONS') {
      res.writeHead(204, CORS).end();
      return;
    }
    const tree = /^\/api\/(models|datasets)\/([^/]+\/[^/]+)\/tree\/([^/]+)(?:\/(.*))?$/.exec(path);
    if (tree) {
      const dir = (tree[1] === 'datasets' ? datasets : repos)[tree[2]];
      if (!dir) {
        res.writeHead(404, { ...CORS, 'content-type': 'application/json', 'x-error-code': 'RepoNotFound' }).end(JSON.stringify({ error: 'Repository not found' }));
        return;
      }
      const entries = listDir(tree[4] ? join(dir, tree[4]) : dir, url.searchParams.get('recursive') === 'true', tree[4] ? `${tree[4]}/` : '');
      res.writeHead(200, { ...CORS, 'content-type': 'application/json' }).end(JSON.stringify(entries));
      return;
    }
    const resolve = /^\/(datasets\/)?([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(path);
    const dir = resolve ? (resolve[1] ? datasets : repos)[resolve[2]] : undefined;
    let bytes: Buffer | null = null;
    if (resolve && dir) {
      try {
        bytes = readFileSync(join(dir, resolve[4]));
      } catch {
        bytes = null;
      }
    }
    if (!resolve || !bytes) {
      res.writeHead(404, { ...CORS, 'content-type': 'application/json', 'x-error-code': dir ? 'EntryNotFound' : 'RepoNotFound' }).end(JSON.stringify({ error: 'Entry not found' }));
      return;
    }
    const etag = `"${createHash('sha256').update(bytes).digest('hex')}"`;
    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    let start = 0;
    let end = bytes.length - 1;
    if (range) {
      start = Number(range[1]);
      end = range[2] ? Math.min(Number(range[2]), bytes.length - 1) : bytes.length - 1;
    }
    const body = bytes.subarray(start, end + 1);
    if (server.failAfterBytes !== undefined) {
      if (server.failAfterBytes < body.length) {
        server.failAfterBytes = 0;
        res.writeHead(503, { ...CORS, 'content-type': 'text/plain' }).end('temporarily unavailable');
        return;
      }
      server.failAfterBytes -= body.length;
    }
    const headers: Record<string, string> = {
      ...CORS,
      'content-type': 'application/octet-stream',
      'content-length': String(body.length),
      'accept-ranges': 'bytes',
      etag,
    };
    if (range) headers['content-range'] = `bytes ${start}-${end}/${bytes.length}`;
    res.writeHead(range ? 206 : 200, headers);
    res.end(req.method === 'HEAD' ? undefined : body);
  };

  const http = createServer(handle);
  await new Promise<void>((ok) => http.listen(0, ok));
  const { port } = http.address() as AddressInfo;
  server.url = `http://localhost:${port}`;
  server.close = () =>
    new Promise<void>((ok) => {
      http.closeAllConnections();
      http.close(() => ok());
    });
  return server;
}
