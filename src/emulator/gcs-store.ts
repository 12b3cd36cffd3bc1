/**
 * On-disk object store behind the Cloud Storage emulator.
 *
 * Layout under dataDir:
 *   buckets/<encoded bucket>/<sha256(name)>.json              object metadata (source of truth on restart)
 *   buckets/<encoded bucket>/<sha256(name)>.<generation>.data  object bytes
 *   uploads/<id>.json, uploads/<id>.part                       resumable upload sessions
 *   tmp/                                                       bytes being received
 * Object names may contain slashes and be up to 1024 bytes, so they are hashed
 * into file names. The data file name carries the generation: a new version is
 * a new file, so a reader that opened the old one keeps reading consistent bytes.
 * Metadata is also kept in memory (one Map per bucket) for listing.
 */
import { createHash, randomUUID } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { copyFile, mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Crc32c } from '../storage/crc32c.ts';
import { HttpError } from './http-util.ts';

export interface ObjectMeta {
  bucket: string;
  name: string;
  generation: string;
  metageneration: string;
  contentType: string;
  size: number;
  md5Hash: string;
  crc32c: string;
  timeCreated: string;
  updated: string;
  metadata?: Record<string, string>;
  cacheControl?: string;
  contentDisposition?: string;
  contentEncoding?: string;
  contentLanguage?: string;
}

/** The client's precondition options, as query parameters. */
export interface Preconditions {
  ifGenerationMatch?: string;
  ifGenerationNotMatch?: string;
  ifMetagenerationMatch?: string;
  ifMetagenerationNotMatch?: string;
}

/** Streaming CRC32C + MD5 over bytes as they pass. */
export class ObjectHasher {
  private readonly crc = new Crc32c();
  private readonly md5 = createHash('md5');
  bytes = 0;
  update(chunk: Buffer): void {
    this.crc.update(chunk);
    this.md5.update(chunk);
    this.bytes += chunk.length;
  }
  digest(): { crc32c: string; md5Hash: string } {
    return { crc32c: this.crc.toBase64(), md5Hash: this.md5.digest('base64') };
  }
}

export async function hashFile(file: string): Promise<{ crc32c: string; md5Hash: string; size: number }> {
  const hasher = new ObjectHasher();
  for await (const chunk of createReadStream(file)) hasher.update(chunk as Buffer);
  return { ...hasher.digest(), size: hasher.bytes };
}

const BUCKET_NAME = /^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$/;

export function checkBucketName(bucket: string): void {
  if (!BUCKET_NAME.test(bucket)) throw new HttpError(400, `Invalid bucket name: '${bucket}'`);
}

function checkObjectName(name: string): void {
  if (!name || Buffer.byteLength(name) > 1024 || name.includes('\r') || name.includes('\n')) {
    throw new HttpError(400, `Invalid object name: '${name}'`);
  }
}

export class GcsStore {
  private readonly root: string;
  private readonly buckets = new Map<string, Map<string, ObjectMeta>>();
  /** The creation of each bucket's directory, awaited by every user of the bucket. */
  private readonly bucketDirs = new Map<string, Promise<void>>();
  private lastGeneration = 0;

  constructor(dataDir: string) {
    this.root = dataDir;
  }

  get tmpDir(): string {
    return path.join(this.root, 'tmp');
  }

  get uploadsDir(): string {
    return path.join(this.root, 'uploads');
  }

  /** Loads every bucket's metadata from disk (restart-safe) and clears leftovers in tmp/. */
  async open(): Promise<void> {
    await rm(this.tmpDir, { recursive: true, force: true });
    await mkdir(this.tmpDir, { recursive: true });
    await mkdir(this.uploadsDir, { recursive: true });
    const bucketsDir = path.join(this.root, 'buckets');
    await mkdir(bucketsDir, { recursive: true });
    for (const entry of await readdir(bucketsDir)) {
      const bucket = decodeURIComponent(entry);
      const objects = new Map<string, ObjectMeta>();
      for (const file of await readdir(path.join(bucketsDir, entry))) {
        if (!file.endsWith('.json')) continue;
        const meta = JSON.parse(await readFile(path.join(bucketsDir, entry, file), 'utf8')) as ObjectMeta;
        objects.set(meta.name, meta);
        this.lastGeneration = Math.max(this.lastGeneration, Number(meta.generation));
      }
      this.buckets.set(bucket, objects);
    }
  }

  /** Buckets spring into existence on first use, as if created beforehand. */
  async bucket(bucket: string): Promise<Map<string, ObjectMeta>> {
    checkBucketName(bucket);
    let objects = this.buckets.get(bucket);
    if (!objects) {
      objects = new Map();
      this.buckets.set(bucket, objects);
      this.bucketDirs.set(
        bucket,
        mkdir(this.bucketDir(bucket), { recursive: true }).then(() => {}),
      );
    }
    // Every caller waits for the directory, not only the first: concurrent first uploads race.
    await this.bucketDirs.get(bucket);
    return objects;
  }

  async bucketCreated(bucket: string): Promise<string> {
    await this.bucket(bucket);
    return (await stat(this.bucketDir(bucket))).birthtime.toISOString();
  }

  private bucketDir(bucket: string): string {
    return path.join(this.root, 'buckets', encodeURIComponent(bucket));
  }

  private baseFile(bucket: string, name: string): string {
    return path.join(this.bucketDir(bucket), createHash('sha256').update(name).digest('hex'));
  }

  dataFile(meta: ObjectMeta): string {
    return `${this.baseFile(meta.bucket, meta.name)}.${meta.generation}.data`;
  }

  async get(bucket: string, name: string, pre: Preconditions = {}): Promise<ObjectMeta> {
    checkObjectName(name);
    const meta = (await this.bucket(bucket)).get(name);
    if (!meta) throw new HttpError(404, `No such object: ${bucket}/${name}`);
    checkPreconditions(meta, pre);
    return meta;
  }

  /** A fresh temp file path for bytes being received. */
  tempFile(): string {
    return path.join(this.tmpDir, randomUUID());
  }

  /** Generations are microsecond timestamps, like Google's, kept strictly increasing. */
  private nextGeneration(): string {
    this.lastGeneration = Math.max(this.lastGeneration + 1, Date.now() * 1000);
    return String(this.lastGeneration);
  }

  /**
   * Makes a fully received temp file the object's new generation. The
   * precondition is checked again here: another upload may have finished
   * while this one was streaming.
   */
  async commit(
    bucket: string,
    name: string,
    tempFile: string,
    received: { size: number; crc32c: string; md5Hash: string },
    fields: Partial<ObjectMeta>,
    pre: Preconditions,
  ): Promise<ObjectMeta> {
    checkObjectName(name);
    const objects = await this.bucket(bucket);
    const previous = objects.get(name);
    checkPreconditions(previous, pre);
    const now = new Date().toISOString();
    const meta: ObjectMeta = {
      bucket,
      name,
      generation: this.nextGeneration(),
      metageneration: '1',
      contentType: fields.contentType || 'application/octet-stream',
      size: received.size,
      md5Hash: received.md5Hash,
      crc32c: received.crc32c,
      timeCreated: now,
      updated: now,
      ...pickCustom(fields),
    };
    objects.set(name, meta);
    await rename(tempFile, this.dataFile(meta));
    await this.writeMeta(meta);
    if (previous) await rm(this.dataFile(previous), { force: true });
    return meta;
  }

  /**
   * Server-side copy (rewrite, copy, move): the bytes are copied file to file,
   * the hashes carried over. Metadata comes from the source unless overridden.
   */
  async copy(
    src: { bucket: string; name: string; pre: Preconditions },
    dst: { bucket: string; name: string; pre: Preconditions },
    overrides: Partial<ObjectMeta>,
  ): Promise<ObjectMeta> {
    const source = await this.get(src.bucket, src.name, src.pre);
    const temp = this.tempFile();
    try {
      await copyFile(this.dataFile(source), temp);
      const fields: Partial<ObjectMeta> = {
        ...source,
        ...pickCustom(overrides),
        contentType: overrides.contentType ?? source.contentType,
      };
      return await this.commit(dst.bucket, dst.name, temp, source, fields, dst.pre);
    } finally {
      await rm(temp, { force: true });
    }
  }

  async patch(bucket: string, name: string, fields: Partial<ObjectMeta>, pre: Preconditions): Promise<ObjectMeta> {
    const current = await this.get(bucket, name, pre);
    const merged: ObjectMeta = {
      ...current,
      ...pickCustom(fields),
      contentType: fields.contentType ?? current.contentType,
      metadata:
        fields.metadata === undefined ? current.metadata : dropNulls({ ...current.metadata, ...fields.metadata }),
      metageneration: String(Number(current.metageneration) + 1),
      updated: new Date().toISOString(),
    };
    (await this.bucket(bucket)).set(name, merged);
    await this.writeMeta(merged);
    return merged;
  }

  async delete(bucket: string, name: string, pre: Preconditions): Promise<void> {
    const meta = await this.get(bucket, name, pre);
    (await this.bucket(bucket)).delete(name);
    await rm(`${this.baseFile(bucket, name)}.json`, { force: true });
    await rm(this.dataFile(meta), { force: true });
  }

  private async writeMeta(meta: ObjectMeta): Promise<void> {
    const target = `${this.baseFile(meta.bucket, meta.name)}.json`;
    const temp = this.tempFile();
    await writeFile(temp, JSON.stringify(meta));
    await rename(temp, target);
  }

  /**
   * One page of a listing in name order. With a delimiter, names that have
   * the delimiter after the prefix are rolled up into `prefixes`; both kinds
   * of entries count toward maxResults, as in the JSON API.
   */
  async list(
    bucket: string,
    opts: {
      prefix?: string;
      delimiter?: string;
      pageToken?: string;
      maxResults?: number;
      startOffset?: string;
      endOffset?: string;
    },
  ): Promise<{ items: ObjectMeta[]; prefixes: string[]; nextPageToken?: string }> {
    const objects = await this.bucket(bucket);
    const prefix = opts.prefix ?? '';
    const max = Math.min(Math.max(opts.maxResults ?? 1000, 1), 1000);
    const after = opts.pageToken ? decodePageToken(opts.pageToken) : undefined;
    const names = [...objects.keys()].filter((n) => n.startsWith(prefix)).sort(compareNames);
    const items: ObjectMeta[] = [];
    const prefixes: string[] = [];
    let last: string | undefined;
    for (const name of names) {
      if (opts.startOffset && compareNames(name, opts.startOffset) < 0) continue;
      if (opts.endOffset && compareNames(name, opts.endOffset) >= 0) continue;
      let key = name;
      if (opts.delimiter) {
        const cut = name.indexOf(opts.delimiter, prefix.length);
        if (cut >= 0) key = name.slice(0, cut + opts.delimiter.length);
      }
      // A rolled-up prefix sorts as the prefix; skip everything it covers.
      if (after !== undefined && compareNames(key, after) <= 0) continue;
      if (key === last) continue;
      if (items.length + prefixes.length >= max) {
        return { items, prefixes, nextPageToken: encodePageToken(last!) };
      }
      if (key !== name) prefixes.push(key);
      else items.push(objects.get(name)!);
      last = key;
    }
    return { items, prefixes };
  }
}

/** Byte order of UTF-8, as Cloud Storage sorts names. */
function compareNames(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

function encodePageToken(last: string): string {
  return Buffer.from(JSON.stringify({ after: last })).toString('base64url');
}

function decodePageToken(token: string): string {
  try {
    const parsed = JSON.parse(Buffer.from(token, 'base64url').toString('utf8')) as { after?: unknown };
    if (typeof parsed.after === 'string') return parsed.after;
  } catch {
    // fall through
  }
  throw new HttpError(400, 'Invalid pageToken');
}

function checkPreconditions(meta: ObjectMeta | undefined, pre: Preconditions): void {
  const generation = meta ? meta.generation : '0';
  const failed = (what: string) =>
    new HttpError(
      412,
      `At least one of the pre-conditions you specified did not hold. (${what})`,
      'FAILED_PRECONDITION',
    );
  if (pre.ifGenerationMatch !== undefined && pre.ifGenerationMatch !== generation) throw failed('ifGenerationMatch');
  if (pre.ifGenerationNotMatch !== undefined && pre.ifGenerationNotMatch === generation)
    throw failed('ifGenerationNotMatch');
  if (pre.ifMetagenerationMatch !== undefined) {
    if (!meta || meta.metageneration !== pre.ifMetagenerationMatch) throw failed('ifMetagenerationMatch');
  }
  if (pre.ifMetagenerationNotMatch !== undefined && meta && meta.metageneration === pre.ifMetagenerationNotMatch) {
    throw failed('ifMetagenerationNotMatch');
  }
}

/** The writable metadata fields a client may set. */
function pickCustom(fields: Partial<ObjectMeta>): Partial<ObjectMeta> {
  const out: Partial<ObjectMeta> = {};
  if (fields.metadata && typeof fields.metadata === 'object') out.metadata = dropNulls(fields.metadata);
  for (const key of ['cacheControl', 'contentDisposition', 'contentEncoding', 'contentLanguage'] as const) {
    if (typeof fields[key] === 'string') out[key] = fields[key];
  }
  return out;
}

function dropNulls(record: Record<string, string | null>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(record)) if (v !== null && v !== undefined) out[k] = String(v);
  return out;
}
