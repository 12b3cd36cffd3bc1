/**
 * Cloud Storage emulator: the subset of the JSON API that
 * `@google-cloud/storage` uses for objects (simple, multipart and resumable
 * uploads, media downloads with Range, metadata, listing, delete), over plain
 * HTTP on loopback. Bytes go to and from files on disk as streams.
 */

import { randomUUID } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer } from 'node:http';
import path from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { parseRange } from '../files/byte-range.ts';
import type { ObjectMeta, Preconditions } from './gcs-store.ts';
import { GcsStore, hashFile, ObjectHasher } from './gcs-store.ts';
import { closeServer, drain, HttpError, listen, readJsonBody, sendError, sendJson } from './http-util.ts';
import { boundaryOf, readMultipart } from './multipart.ts';

export interface GcsEmulatorOptions {
  host?: string;
  port?: number;
  dataDir: string;
}

export interface RunningEmulator {
  url: string;
  host: string;
  port: number;
  close(): Promise<void>;
}

interface UploadSession {
  id: string;
  bucket: string;
  name: string;
  fields: Partial<ObjectMeta> & { crc32c?: string; md5Hash?: string };
  pre: Preconditions;
  /** Set once the object is committed, so a repeated final PUT answers the same object. */
  done?: ObjectMeta;
}

/** Per-process state of a session: a running hash while bytes arrive in order. */
interface LiveSession {
  session: UploadSession;
  hasher?: ObjectHasher;
}

export async function startGcsEmulator(opts: GcsEmulatorOptions): Promise<RunningEmulator> {
  const store = new GcsStore(opts.dataDir);
  await store.open();
  const sessions = new Map<string, LiveSession>();
  const handler = new GcsHandler(store, sessions);
  const server = createServer((req, res) => {
    handler.handle(req, res).catch((err: unknown) => {
      const httpErr = err instanceof HttpError ? err : new HttpError(500, (err as Error)?.message ?? String(err));
      // A client that hangs up mid-request (an aborted upload) is routine, not a fault.
      const hungUp = (err as { code?: string })?.code === 'ECONNRESET' || res.socket?.destroyed === true;
      if (!(err instanceof HttpError) && !hungUp) console.error('[gcs-emulator]', err);
      sendError(res, httpErr, reasonFor(httpErr.httpStatus));
      // An unread request body would poison the keep-alive connection.
      if (!req.complete) req.resume();
    });
  });
  // Longer than the clients' idle-socket timeout, so a client never reuses a socket the server is closing.
  server.keepAliveTimeout = 65_000;
  const address = await listen(server, opts.host ?? '127.0.0.1', opts.port ?? 0);
  return { ...address, close: () => closeServer(server) };
}

function reasonFor(status: number): string {
  if (status === 404) return 'notFound';
  if (status === 412) return 'conditionNotMet';
  if (status === 400) return 'invalid';
  if (status === 416) return 'requestedRangeNotSatisfiable';
  return 'backendError';
}

function preconditionsFrom(q: URLSearchParams): Preconditions {
  const pre: Preconditions = {};
  for (const key of [
    'ifGenerationMatch',
    'ifGenerationNotMatch',
    'ifMetagenerationMatch',
    'ifMetagenerationNotMatch',
  ] as const) {
    const value = q.get(key);
    if (value !== null) pre[key] = value;
  }
  return pre;
}

/** Splits `/storage/v1/b/{bucket}/o/{object}` style paths without decoding `%2F` inside names too early. */
function matchPath(
  pathname: string,
): { api: 'json' | 'upload' | 'download'; bucket?: string; object?: string; rest?: string } | undefined {
  const m = /^\/(upload\/|download\/)?storage\/v1\/b(?:\/([^/]+)(?:\/o(?:\/(.+))?)?)?\/?$/.exec(pathname);
  if (!m) return undefined;
  const api = m[1] === 'upload/' ? 'upload' : m[1] === 'download/' ? 'download' : 'json';
  return {
    api,
    bucket: m[2] === undefined ? undefined : decodeURIComponent(m[2]),
    object: m[3] === undefined ? undefined : decodeURIComponent(m[3]),
    rest: pathname.endsWith('/o') || pathname.endsWith('/o/') ? 'o' : undefined,
  };
}

interface CopyRoute {
  kind: 'rewriteTo' | 'copyTo' | 'moveTo';
  bucket: string;
  object: string;
  destBucket: string;
  destObject: string;
}

/** `/b/B/o/O/rewriteTo/b/B2/o/O2`, `/copyTo/b/B2/o/O2`, `/moveTo/o/O2` (names are %-encoded, so `/` separates). */
function matchCopyPath(pathname: string): CopyRoute | undefined {
  const m = /^\/storage\/v1\/b\/([^/]+)\/o\/([^/]+)\/(rewriteTo|copyTo|moveTo)(?:\/b\/([^/]+))?\/o\/([^/]+)$/.exec(
    pathname,
  );
  if (!m) return undefined;
  const kind = m[3] as CopyRoute['kind'];
  if ((kind === 'moveTo') !== (m[4] === undefined)) return undefined;
  const bucket = decodeURIComponent(m[1]);
  return {
    kind,
    bucket,
    object: decodeURIComponent(m[2]),
    destBucket: m[4] === undefined ? bucket : decodeURIComponent(m[4]),
    destObject: decodeURIComponent(m[5]),
  };
}

class GcsHandler {
  private readonly store: GcsStore;
  private readonly sessions: Map<string, LiveSession>;

  constructor(store: GcsStore, sessions: Map<string, LiveSession>) {
    this.store = store;
    this.sessions = sessions;
  }

  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const method = req.method ?? 'GET';
    const q = url.searchParams;
    const base = `http://${req.headers.host ?? 'localhost'}`;
    const copy = matchCopyPath(url.pathname);
    if (copy && method === 'POST') return this.copy(req, res, copy, q, base);
    const route = matchPath(url.pathname);
    if (!route) throw new HttpError(404, `Not Found: ${method} ${url.pathname}`);

    if (route.api === 'upload') {
      if (!route.bucket || route.object !== undefined) throw new HttpError(404, 'Not Found');
      if (method === 'POST') return this.startUpload(req, res, route.bucket, q, base);
      if (method === 'PUT') return this.resumableChunk(req, res, q, base);
      if (method === 'DELETE') return this.cancelUpload(req, res, q);
      throw new HttpError(405, `Method not allowed: ${method}`);
    }
    if (route.bucket === undefined) {
      // POST /storage/v1/b?project=… creates a bucket: they all exist already.
      const body = (await readJsonBody(req)) as { name?: string };
      if (method !== 'POST' || !body.name) throw new HttpError(400, 'Bucket name required');
      return sendJson(res, 200, await this.bucketResource(body.name, base));
    }
    if (route.object === undefined && route.rest !== 'o') {
      await drain(req);
      if (method === 'GET') return sendJson(res, 200, await this.bucketResource(route.bucket, base));
      if (method === 'DELETE') {
        const { items } = await this.store.list(route.bucket, { maxResults: 1 });
        if (items.length > 0)
          throw new HttpError(409, 'The bucket you tried to delete is not empty.', 'FAILED_PRECONDITION');
        res.writeHead(204).end();
        return;
      }
      throw new HttpError(405, `Method not allowed: ${method}`);
    }
    if (route.object === undefined) {
      await drain(req);
      if (method !== 'GET') throw new HttpError(405, `Method not allowed: ${method}`);
      return this.list(res, route.bucket, q, base);
    }
    const { bucket, object } = route;
    if (method === 'GET' && (q.get('alt') === 'media' || route.api === 'download'))
      return this.download(req, res, bucket, object, q);
    if (method === 'GET') {
      await drain(req);
      const meta = await this.store.get(bucket, object, preconditionsFrom(q));
      checkGeneration(meta, q);
      return sendJson(res, 200, objectResource(meta, base));
    }
    if (method === 'PATCH' || method === 'PUT') {
      const body = (await readJsonBody(req)) as Partial<ObjectMeta>;
      return sendJson(
        res,
        200,
        objectResource(await this.store.patch(bucket, object, body, preconditionsFrom(q)), base),
      );
    }
    if (method === 'DELETE') {
      await drain(req);
      const meta = await this.store.get(bucket, object);
      checkGeneration(meta, q);
      await this.store.delete(bucket, object, preconditionsFrom(q));
      res.writeHead(204).end();
      return;
    }
    throw new HttpError(405, `Method not allowed: ${method}`);
  }

  /** rewriteTo (answers a finished rewrite), copyTo and moveTo (copy, then delete the source). */
  private async copy(
    req: IncomingMessage,
    res: ServerResponse,
    c: CopyRoute,
    q: URLSearchParams,
    base: string,
  ): Promise<void> {
    const body = (await readJsonBody(req)) as Partial<ObjectMeta>;
    const sourcePre: Preconditions = {};
    for (const key of [
      'ifSourceGenerationMatch',
      'ifSourceGenerationNotMatch',
      'ifSourceMetagenerationMatch',
      'ifSourceMetagenerationNotMatch',
    ] as const) {
      const value = q.get(key);
      if (value !== null) sourcePre[key.replace('Source', '') as keyof Preconditions] = value;
    }
    const meta = await this.store.copy(
      { bucket: c.bucket, name: c.object, pre: sourcePre },
      { bucket: c.destBucket, name: c.destObject, pre: preconditionsFrom(q) },
      body ?? {},
    );
    if (c.kind === 'moveTo' && (c.bucket !== c.destBucket || c.object !== c.destObject))
      await this.store.delete(c.bucket, c.object, {});
    const resource = objectResource(meta, base);
    if (c.kind === 'rewriteTo') {
      return sendJson(res, 200, {
        kind: 'storage#rewriteResponse',
        totalBytesRewritten: String(meta.size),
        objectSize: String(meta.size),
        done: true,
        resource,
      });
    }
    sendJson(res, 200, resource);
  }

  private async bucketResource(bucket: string, base: string): Promise<Record<string, unknown>> {
    const created = await this.store.bucketCreated(bucket);
    return {
      kind: 'storage#bucket',
      id: bucket,
      name: bucket,
      selfLink: `${base}/storage/v1/b/${encodeURIComponent(bucket)}`,
      projectNumber: '0',
      metageneration: '1',
      location: 'US',
      storageClass: 'STANDARD',
      etag: 'CAE=',
      timeCreated: created,
      updated: created,
    };
  }

  private async list(res: ServerResponse, bucket: string, q: URLSearchParams, base: string): Promise<void> {
    // Parameters that would change the answer but are not emulated: refuse rather than ignore.
    for (const unsupported of ['matchGlob', 'versions']) {
      if (q.get(unsupported) && q.get(unsupported) !== 'false')
        throw new HttpError(400, `The emulator does not support ${unsupported} in listings.`);
    }
    const maxResults = q.get('maxResults');
    const page = await this.store.list(bucket, {
      prefix: q.get('prefix') ?? undefined,
      delimiter: q.get('delimiter') || undefined,
      pageToken: q.get('pageToken') || undefined,
      maxResults: maxResults ? Number(maxResults) : undefined,
      startOffset: q.get('startOffset') || undefined,
      endOffset: q.get('endOffset') || undefined,
    });
    sendJson(res, 200, {
      kind: 'storage#objects',
      ...(page.nextPageToken ? { nextPageToken: page.nextPageToken } : {}),
      ...(page.prefixes.length ? { prefixes: page.prefixes } : {}),
      ...(page.items.length ? { items: page.items.map((m) => objectResource(m, base)) } : {}),
    });
  }

  private async download(
    req: IncomingMessage,
    res: ServerResponse,
    bucket: string,
    object: string,
    q: URLSearchParams,
  ): Promise<void> {
    await drain(req);
    const meta = await this.store.get(bucket, object, preconditionsFrom(q));
    checkGeneration(meta, q);
    const headers: Record<string, string | number> = {
      'content-type': meta.contentType,
      'accept-ranges': 'bytes',
      etag: `"${meta.md5Hash}"`,
      'last-modified': new Date(meta.updated).toUTCString(),
      // With these two the client verifies what it downloads (crc32c and md5).
      'x-goog-hash': `crc32c=${meta.crc32c},md5=${meta.md5Hash}`,
      'x-goog-stored-content-encoding': meta.contentEncoding ?? 'identity',
      'x-goog-stored-content-length': meta.size,
      'x-goog-generation': meta.generation,
      'x-goog-metageneration': meta.metageneration,
      'x-goog-storage-class': 'STANDARD',
    };
    const range = parseRange(req.headers.range, meta.size);
    if (range === 'unsatisfiable') {
      throw new HttpError(416, 'The requested range cannot be satisfied.', 'OUT_OF_RANGE');
    }
    const file = this.store.dataFile(meta);
    if (range) {
      res.writeHead(206, {
        ...headers,
        'content-length': range.end - range.start + 1,
        'content-range': `bytes ${range.start}-${range.end}/${meta.size}`,
      });
      if (req.method === 'HEAD') return void res.end();
      await pipeline(createReadStream(file, { start: range.start, end: range.end }), res);
      return;
    }
    res.writeHead(200, { ...headers, 'content-length': meta.size });
    if (meta.size === 0) return void res.end();
    await pipeline(createReadStream(file), res);
  }

  // ---- uploads -------------------------------------------------------------

  private async startUpload(
    req: IncomingMessage,
    res: ServerResponse,
    bucket: string,
    q: URLSearchParams,
    base: string,
  ): Promise<void> {
    const uploadType = q.get('uploadType') ?? 'media';
    const pre = preconditionsFrom(q);
    if (uploadType === 'resumable') return this.createSession(req, res, bucket, q, base, pre);
    let fields: Partial<ObjectMeta> & { crc32c?: string; md5Hash?: string } = {};
    const temp = this.store.tempFile();
    const hasher = new ObjectHasher();
    try {
      if (uploadType === 'multipart') {
        const boundary = boundaryOf(req.headers['content-type']);
        if (!boundary) throw new HttpError(400, 'multipart upload without a boundary');
        fields = await receiveMultipart(req, boundary, temp, hasher);
      } else if (uploadType === 'media') {
        fields = { contentType: req.headers['content-type'] };
        await pipeline(req, hashingTransform(hasher), createWriteStream(temp));
      } else {
        throw new HttpError(400, `Unsupported uploadType: ${uploadType}`);
      }
      const name = q.get('name') ?? (fields as { name?: string }).name;
      if (!name) throw new HttpError(400, 'Object name required');
      const received = { ...hasher.digest(), size: hasher.bytes };
      checkClientHashes(fields, received, req.headers['x-goog-hash']);
      const meta = await this.store.commit(bucket, name, temp, received, fields, pre);
      sendJson(res, 200, objectResource(meta, base));
    } finally {
      await rm(temp, { force: true });
    }
  }

  private sessionFile(id: string, ext: 'json' | 'part'): string {
    if (!/^[0-9a-f-]{36}$/.test(id)) throw new HttpError(404, 'No such upload session');
    return path.join(this.store.uploadsDir, `${id}.${ext}`);
  }

  private async createSession(
    req: IncomingMessage,
    res: ServerResponse,
    bucket: string,
    q: URLSearchParams,
    base: string,
    pre: Preconditions,
  ): Promise<void> {
    const fields = (await readJsonBody(req)) as UploadSession['fields'] & { name?: string };
    const name = q.get('name') ?? fields.name;
    if (!name) throw new HttpError(400, 'Object name required');
    if (!fields.contentType && typeof req.headers['x-upload-content-type'] === 'string') {
      fields.contentType = req.headers['x-upload-content-type'];
    }
    // Fail early on a precondition that already does not hold (checked again at the end).
    await this.store.bucket(bucket);
    const existing = await this.store.get(bucket, name).catch(() => undefined);
    if (pre.ifGenerationMatch !== undefined && pre.ifGenerationMatch !== (existing?.generation ?? '0')) {
      throw new HttpError(
        412,
        'At least one of the pre-conditions you specified did not hold. (ifGenerationMatch)',
        'FAILED_PRECONDITION',
      );
    }
    const session: UploadSession = { id: randomUUID(), bucket, name, fields, pre };
    await writeFile(this.sessionFile(session.id, 'part'), '');
    await writeFile(this.sessionFile(session.id, 'json'), JSON.stringify(session));
    this.sessions.set(session.id, { session, hasher: new ObjectHasher() });
    const location = `${base}/upload/storage/v1/b/${encodeURIComponent(bucket)}/o?uploadType=resumable&name=${encodeURIComponent(name)}&upload_id=${session.id}`;
    res.writeHead(200, { location, 'x-guploader-uploadid': session.id, 'content-length': 0 });
    res.end();
  }

  private async loadSession(id: string): Promise<LiveSession> {
    const live = this.sessions.get(id);
    if (live) return live;
    let session: UploadSession;
    try {
      session = JSON.parse(await readFile(this.sessionFile(id, 'json'), 'utf8')) as UploadSession;
    } catch {
      throw new HttpError(404, 'No such upload session');
    }
    // A session from before a restart: the running hash is gone, rehash at the end.
    const loaded: LiveSession = { session };
    this.sessions.set(id, loaded);
    return loaded;
  }

  private async cancelUpload(req: IncomingMessage, res: ServerResponse, q: URLSearchParams): Promise<void> {
    await drain(req);
    const id = q.get('upload_id') ?? '';
    await this.loadSession(id);
    this.sessions.delete(id);
    await rm(this.sessionFile(id, 'json'), { force: true });
    await rm(this.sessionFile(id, 'part'), { force: true });
    res.writeHead(499, { 'content-length': 0 }).end();
  }

  /**
   * One PUT of a resumable upload. `Content-Range: bytes a-b/total`,
   * `bytes a-* /total|*` (the rest of the object in this request), or
   * `bytes * /total|*` (a status query). Answers 308 with `Range` while
   * incomplete and 200 with the object once complete.
   */
  private async resumableChunk(
    req: IncomingMessage,
    res: ServerResponse,
    q: URLSearchParams,
    base: string,
  ): Promise<void> {
    const id = q.get('upload_id') ?? '';
    const live = await this.loadSession(id);
    const { session } = live;
    if (session.done) {
      await drain(req);
      return sendJson(res, 200, objectResource(session.done, base));
    }
    const part = this.sessionFile(id, 'part');
    let size = (await stat(part)).size;
    const range = parseContentRange(req.headers['content-range']);
    let final = false;
    if (range.start === undefined) {
      await drain(req);
      final = range.total !== undefined && range.total === size;
    } else {
      if (range.start > size) {
        await drain(req);
        return sendIncomplete(res, size);
      }
      if (range.start < size) {
        // The client resends bytes we already have: keep ours up to its offset.
        await truncate(part, range.start);
        size = range.start;
        live.hasher = undefined;
      }
      const hasher = live.hasher && live.hasher.bytes === size ? live.hasher : undefined;
      if (!hasher) live.hasher = undefined;
      const counter = { bytes: 0 };
      try {
        await pipeline(req, countingTransform(counter, hasher), createWriteStream(part, { flags: 'r+', start: size }));
      } catch (err) {
        // A cut connection: keep what arrived, the client asks where to resume.
        live.hasher = undefined;
        size = (await stat(part)).size;
        throw err;
      }
      size += counter.bytes;
      final = range.total !== undefined ? size === range.total : range.end === undefined;
    }
    if (!final) return sendIncomplete(res, size);

    const received =
      live.hasher && live.hasher.bytes === size ? { ...live.hasher.digest(), size } : await hashFile(part);
    live.hasher = undefined;
    checkClientHashes(session.fields, received, req.headers['x-goog-hash']);
    const meta = await this.store.commit(session.bucket, session.name, part, received, session.fields, session.pre);
    session.done = meta;
    await writeFile(this.sessionFile(id, 'json'), JSON.stringify(session));
    sendJson(res, 200, objectResource(meta, base));
  }
}

function sendIncomplete(res: ServerResponse, size: number): void {
  const headers: Record<string, string | number> = { 'content-length': 0 };
  if (size > 0) headers.range = `bytes=0-${size - 1}`;
  res.writeHead(308, headers).end();
}

function parseContentRange(header: string | undefined): { start?: number; end?: number; total?: number } {
  if (!header) return { start: 0 }; // whole object in one request
  const m = /^bytes (\*|(\d+)-(\d+|\*))\/(\d+|\*)$/.exec(header.trim());
  if (!m) throw new HttpError(400, `Invalid Content-Range: ${header}`);
  const total = m[4] === '*' ? undefined : Number(m[4]);
  if (m[1] === '*') return { total };
  return { start: Number(m[2]), end: m[3] === '*' ? undefined : Number(m[3]), total };
}

function checkGeneration(meta: ObjectMeta, q: URLSearchParams): void {
  const generation = q.get('generation');
  if (generation && generation !== meta.generation) {
    throw new HttpError(404, `No such object: ${meta.bucket}/${meta.name}#${generation}`);
  }
}

/** Rejects an upload whose bytes do not match the hashes the client declared. */
function checkClientHashes(
  fields: { crc32c?: string; md5Hash?: string },
  received: { crc32c: string; md5Hash: string },
  hashHeader: string | string[] | undefined,
): void {
  const declared: { crc32c?: string; md5?: string } = { crc32c: fields.crc32c, md5: fields.md5Hash };
  for (const header of [hashHeader ?? []].flat()) {
    for (const part of header.split(',')) {
      const eq = part.indexOf('=');
      const key = part.slice(0, eq).trim();
      if (key === 'crc32c' || key === 'md5') declared[key] = part.slice(eq + 1).trim();
    }
  }
  if (declared.crc32c && declared.crc32c !== received.crc32c) {
    throw new HttpError(
      400,
      `Provided CRC32C "${declared.crc32c}" doesn't match calculated CRC32C "${received.crc32c}".`,
    );
  }
  if (declared.md5 && declared.md5 !== received.md5Hash) {
    throw new HttpError(
      400,
      `Provided MD5 hash "${declared.md5}" doesn't match calculated MD5 hash "${received.md5Hash}".`,
    );
  }
}

function hashingTransform(hasher: ObjectHasher): Transform {
  return new Transform({
    transform(chunk: Buffer, _enc, done) {
      hasher.update(chunk);
      done(null, chunk);
    },
  });
}

function countingTransform(counter: { bytes: number }, hasher: ObjectHasher | undefined): Transform {
  return new Transform({
    transform(chunk: Buffer, _enc, done) {
      counter.bytes += chunk.length;
      hasher?.update(chunk);
      done(null, chunk);
    },
  });
}

/** Streams a multipart/related upload: JSON metadata first, then the media to `temp`. */
async function receiveMultipart(
  req: IncomingMessage,
  boundary: string,
  temp: string,
  hasher: ObjectHasher,
): Promise<Partial<ObjectMeta> & { name?: string }> {
  let index = -1;
  let metadataText = '';
  let mediaType: string | undefined;
  const out = createWriteStream(temp);
  const finished = new Promise<void>((resolve, reject) => {
    out.once('finish', resolve);
    out.once('error', reject);
  });
  try {
    for await (const event of readMultipart(req as AsyncIterable<Buffer>, boundary)) {
      if (event.type === 'part') {
        index++;
        if (index === 1) mediaType = event.headers['content-type'];
      } else if (event.type === 'data') {
        if (index === 0) {
          metadataText += event.chunk.toString('utf8');
          if (metadataText.length > 1024 * 1024) throw new HttpError(400, 'Metadata part too large');
        } else if (index === 1) {
          hasher.update(event.chunk);
          if (!out.write(event.chunk)) await new Promise<void>((resolve) => out.once('drain', () => resolve()));
        }
      }
    }
  } catch (err) {
    out.destroy();
    if (err instanceof HttpError) throw err;
    throw new HttpError(400, `Malformed multipart body: ${(err as Error).message}`);
  }
  out.end();
  await finished;
  if (index < 1) throw new HttpError(400, 'Multipart upload needs a metadata part and a media part');
  let metadata: Partial<ObjectMeta> & { name?: string } = {};
  try {
    metadata = metadataText.trim() ? JSON.parse(metadataText) : {};
  } catch {
    throw new HttpError(400, 'Invalid JSON in the metadata part');
  }
  if (!metadata.contentType && mediaType) metadata.contentType = mediaType;
  return metadata;
}

/** The JSON API's object resource (int64 fields as strings). */
function objectResource(meta: ObjectMeta, base: string): Record<string, unknown> {
  const encodedName = encodeURIComponent(meta.name);
  const encodedBucket = encodeURIComponent(meta.bucket);
  return {
    kind: 'storage#object',
    id: `${meta.bucket}/${meta.name}/${meta.generation}`,
    selfLink: `${base}/storage/v1/b/${encodedBucket}/o/${encodedName}`,
    mediaLink: `${base}/download/storage/v1/b/${encodedBucket}/o/${encodedName}?generation=${meta.generation}&alt=media`,
    name: meta.name,
    bucket: meta.bucket,
    generation: meta.generation,
    metageneration: meta.metageneration,
    contentType: meta.contentType,
    storageClass: 'STANDARD',
    size: String(meta.size),
    md5Hash: meta.md5Hash,
    crc32c: meta.crc32c,
    etag: `${meta.md5Hash}/${meta.generation}`,
    timeCreated: meta.timeCreated,
    updated: meta.updated,
    timeStorageClassUpdated: meta.timeCreated,
    ...(meta.metadata ? { metadata: meta.metadata } : {}),
    ...(meta.cacheControl ? { cacheControl: meta.cacheControl } : {}),
    ...(meta.contentDisposition ? { contentDisposition: meta.contentDisposition } : {}),
    ...(meta.contentEncoding ? { contentEncoding: meta.contentEncoding } : {}),
    ...(meta.contentLanguage ? { contentLanguage: meta.contentLanguage } : {}),
  };
}
