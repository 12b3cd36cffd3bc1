import type { Readable, Writable } from 'node:stream';
import { type Bucket, Storage } from '@google-cloud/storage';

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
    });
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

  readStream(key: string, range?: { start: number; end: number }): Readable {
    // Whole-object reads are checked against the stored CRC32C; ranges cannot be.
    return this.bucket.file(key).createReadStream(range ? { ...range, validation: false } : { validation: 'crc32c' });
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
