import { EventEmitter } from 'node:events';
import type { Readable, Writable } from 'node:stream';
import { type Bucket, Storage } from '@google-cloud/storage';
import { crc32cGenerator } from './crc32c.ts';

/**
 * The object store: Cloud Storage through the official client. Offline it points at the
 * local GCS emulator, in production at Google; the code path is the same.
 */
export class ObjectStore {
  readonly bucketName: string;
  private readonly bucket: Bucket;

  constructor(opts: { bucket: string; projectId: string; apiEndpoint?: string | null }) {
    const storage = new Storage({
      projectId: opts.projectId,
      ...(opts.apiEndpoint ? { apiEndpoint: opts.apiEndpoint } : {}),
      retryOptions: { autoRetry: true, maxRetries: 4 },
      // Every upload and whole-object read is checked; the client's own CRC32C goes a byte at a time.
      crc32cGenerator,
    });
    // A read that ends early (a client gone mid-download, a gallery page that has what it
    // needs) ends in an error inside the client, which then destroys the HTTP agent of that
    // request to free its socket. On the client's default keep-alive pool that agent is shared
    // by every request of the process, so one abandoned read reset all others in flight.
    // Without `forever`, each request uses Node's own global agent (also keep-alive), which the
    // client never destroys; the abandoned read closes only its own socket.
    // (The client types an interceptor's argument as its own options; it is the request's.)
    const ownSockets = { request: (reqOpts: object) => ({ ...reqOpts, forever: false }) };
    storage.interceptors.push(ownSockets as unknown as (typeof storage.interceptors)[number]);
    this.bucketName = opts.bucket;
    this.bucket = storage.bucket(opts.bucket);
  }

  uri(key: string): string {
    return `gs://${this.bucketName}/${key}`;
  }

  /** `gs://bucket/a/b` → `a/b` (only for our own bucket). */
  keyOf(uri: string): string {
    const prefix = `gs://${this.bucketName}/`;
    if (!uri.startsWith(prefix)) throw new Error(`${uri} is not in bucket ${this.bucketName}`);
    return uri.slice(prefix.length);
  }

  /**
   * A write stream for a new object. Resumable uploads survive transient errors on large
   * objects; small staging files go in one request.
   */
  writeStream(key: string, contentType: string, opts: { resumable?: boolean } = {}): Writable {
    return this.bucket.file(key).createWriteStream({
      resumable: opts.resumable ?? true,
      contentType,
      metadata: { contentType },
      validation: 'crc32c',
    });
  }

  /** The object's bytes, or those of `range` (inclusive; without `end`, from `start` to the end). */
  readStream(key: string, range?: { start: number; end?: number }): Readable {
    // Whole-object reads are checked against the stored CRC32C; ranges cannot be.
    const stream = this.bucket
      .file(key)
      .createReadStream(range ? { ...range, validation: false } : { validation: 'crc32c' });
    return stream.once('response', allowDownloadListeners);
  }

  async save(key: string, content: string | Buffer, contentType: string): Promise<void> {
    await this.bucket.file(key).save(content, { resumable: false, contentType, validation: 'crc32c' });
  }

  async size(key: string): Promise<number> {
    const [meta] = await this.bucket.file(key).getMetadata();
    return Number(meta.size);
  }

  /** Size and Content-Type of an object, or null when there is no such object. */
  async stat(key: string): Promise<{ size: number; contentType: string } | null> {
    try {
      const [meta] = await this.bucket.file(key).getMetadata();
      return { size: Number(meta.size), contentType: meta.contentType ?? 'application/octet-stream' };
    } catch (err) {
      if ((err as { code?: unknown }).code === 404) return null;
      throw err;
    }
  }

  async exists(key: string): Promise<boolean> {
    const [exists] = await this.bucket.file(key).exists();
    return exists;
  }

  async delete(key: string): Promise<void> {
    await this.bucket.file(key).delete({ ignoreNotFound: true });
  }

  async list(prefix: string): Promise<Array<{ key: string; size: number }>> {
    const out: Array<{ key: string; size: number }> = [];
    let pageToken: string | undefined;
    do {
      const [files, next] = await this.bucket.getFiles({ prefix, autoPaginate: false, maxResults: 1000, pageToken });
      for (const f of files) out.push({ key: f.name, size: Number(f.metadata.size ?? 0) });
      pageToken = (next as { pageToken?: string } | null)?.pageToken;
    } while (pageToken);
    return out;
  }

  async deletePrefix(prefix: string): Promise<void> {
    for (const { key } of await this.list(prefix)) await this.delete(key);
  }
}

/**
 * Listeners the client itself puts on the HTTP body of one download: its fetch library pipes the
 * socket into it (3), keeps an error handler (1); its request layer forwards errors (1) and pipes
 * the body into its retry stream (3); and the storage client pipes the same body into the stream
 * it returns (3). That is 11 for as long as the body flows, one over Node's leak warning
 * threshold, so every read of more than a chunk or two printed a MaxListenersExceededWarning
 * (googleapis/google-cloud-node#9185). Not a leak: they all go when the body ends, and the
 * download is the only user of that stream.
 */
const DOWNLOAD_BODY_LISTENERS = 16;

/**
 * The body (the client hands it over with 'response', before it pipes it itself) is allowed
 * its listeners: the upstream fix, applied to that one stream until the client carries it.
 */
function allowDownloadListeners(body: unknown) {
  if (body instanceof EventEmitter && body.getMaxListeners() < DOWNLOAD_BODY_LISTENERS) {
    body.setMaxListeners(DOWNLOAD_BODY_LISTENERS);
  }
}
