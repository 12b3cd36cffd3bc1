import { createHash } from 'node:crypto';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Storage } from '@google-cloud/storage';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { RunningEmulator } from '../../src/emulator/gcs-emulator.ts';
import { startGcsEmulator } from '../../src/emulator/gcs-emulator.ts';
import { ObjectStore } from '../../src/storage/object-store.ts';

/** Deterministic pseudo-random bytes (incompressible, so corruption would show). */
function bytesOf(size: number, seed: string): Buffer {
  const out = Buffer.alloc(size);
  let block = createHash('sha256').update(seed).digest();
  for (let offset = 0; offset < size; offset += block.length) {
    block.copy(out, offset);
    block = createHash('sha256').update(block).digest();
  }
  return out;
}

async function upload(storage: Storage, bucket: string, name: string, data: Buffer, resumable: boolean): Promise<void> {
  const file = storage.bucket(bucket).file(name);
  // Small writes, so the body really streams in many chunks.
  await pipeline(
    Readable.from(chunks(data, 256 * 1024)),
    file.createWriteStream({ resumable, contentType: 'application/octet-stream' }),
  );
}

function* chunks(data: Buffer, size: number): Generator<Buffer> {
  for (let i = 0; i < data.length; i += size) yield data.subarray(i, i + size);
}

async function readAll(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const part of stream) parts.push(part as Buffer);
  return Buffer.concat(parts);
}

describe('Cloud Storage emulator through @google-cloud/storage', () => {
  let dataDir: string;
  let gcs: RunningEmulator;
  let storage: Storage;
  const bucket = 'emulator-test-bucket';

  beforeAll(async () => {
    dataDir = await mkdtemp(path.join(tmpdir(), 'gcs-emu-'));
    gcs = await startGcsEmulator({ dataDir, port: 0 });
    storage = new Storage({ apiEndpoint: gcs.url, projectId: 'test-project' });
  });

  afterAll(async () => {
    await gcs?.close();
    await rm(dataDir, { recursive: true, force: true });
  });

  it('round-trips several MB through a simple (multipart) upload with integrity checks', async () => {
    const data = bytesOf(5 * 1024 * 1024 + 123, 'simple');
    await upload(storage, bucket, 'dir/sub/simple.bin', data, false);
    const file = storage.bucket(bucket).file('dir/sub/simple.bin');
    const back = await readAll(file.createReadStream({ validation: 'crc32c' }));
    expect(back.equals(data)).toBe(true);
    const [meta] = await file.getMetadata();
    expect(Number(meta.size)).toBe(data.length);
    expect(meta.md5Hash).toBe(createHash('md5').update(data).digest('base64'));
    expect(meta.contentType).toBe('application/octet-stream');
  });

  it('round-trips several MB through a resumable upload, with md5 validation on download', async () => {
    const data = bytesOf(7 * 1024 * 1024 + 1, 'resumable');
    await upload(storage, bucket, 'dir/sub/resumable.bin', data, true);
    const back = await readAll(
      storage.bucket(bucket).file('dir/sub/resumable.bin').createReadStream({ validation: 'md5' }),
    );
    expect(createHash('sha256').update(back).digest('hex')).toBe(createHash('sha256').update(data).digest('hex'));
  });

  it('lets the client detect corruption of stored bytes', async () => {
    const data = bytesOf(1024 * 1024, 'corrupt');
    await upload(storage, bucket, 'corrupt/me.bin', data, false);
    const file = storage.bucket(bucket).file('corrupt/me.bin');
    const [meta] = await file.getMetadata();
    // Flip one byte in the stored file, behind the emulator's back.
    const stored = path.join(
      dataDir,
      'buckets',
      bucket,
      `${createHash('sha256').update('corrupt/me.bin').digest('hex')}.${meta.generation}.data`,
    );
    const handle = await open(stored, 'r+');
    await handle.write(Buffer.from([data[1000] ^ 0xff]), 0, 1, 1000);
    await handle.close();
    await expect(file.download()).rejects.toMatchObject({ code: 'CONTENT_DOWNLOAD_MISMATCH' });
  });

  it('takes a chunked resumable upload (308 + Range between chunks)', async () => {
    const data = bytesOf(3 * 256 * 1024 + 77, 'chunked');
    const file = storage.bucket(bucket).file('dir/chunked.bin');
    await pipeline(
      Readable.from(chunks(data, 100_000)),
      file.createWriteStream({ resumable: true, chunkSize: 256 * 1024 }),
    );
    const [back] = await file.download();
    expect(back.equals(data)).toBe(true);
  });

  it('serves a ranged read', async () => {
    const data = bytesOf(3 * 1024 * 1024, 'range');
    await upload(storage, bucket, 'range.bin', data, false);
    const file = storage.bucket(bucket).file('range.bin');
    const part = await readAll(file.createReadStream({ start: 1_000_000, end: 1_999_999 }));
    expect(part.equals(data.subarray(1_000_000, 2_000_000))).toBe(true);
  });

  it('saves strings, reports existence and deletes', async () => {
    const file = storage.bucket(bucket).file('small/hello.txt');
    await file.save('hello world', { contentType: 'text/plain' });
    expect((await file.exists())[0]).toBe(true);
    const [content] = await file.download();
    expect(content.toString()).toBe('hello world');
    await file.delete();
    expect((await file.exists())[0]).toBe(false);
    await file.delete({ ignoreNotFound: true });
  });

  it('answers 404 for a missing object as the client error', async () => {
    const file = storage.bucket(bucket).file('no/such/object');
    await expect(file.getMetadata()).rejects.toMatchObject({ code: 404 });
    await expect(file.delete()).rejects.toMatchObject({ code: 404 });
    await expect(file.download()).rejects.toMatchObject({ code: 404 });
  });

  it('enforces ifGenerationMatch with 412', async () => {
    const file = storage.bucket(bucket).file('precondition.txt');
    await file.save('v1', { resumable: false });
    const [meta] = await file.getMetadata();
    // 0 means "only if it does not exist yet".
    await expect(
      file.save('v2', { resumable: false, preconditionOpts: { ifGenerationMatch: 0 } }),
    ).rejects.toMatchObject({ code: 412 });
    await expect(
      file.save('v2', { resumable: true, preconditionOpts: { ifGenerationMatch: 0 } }),
    ).rejects.toMatchObject({ code: 412 });
    await file.save('v2', { resumable: false, preconditionOpts: { ifGenerationMatch: Number(meta.generation) } });
    const [content] = await file.download();
    expect(content.toString()).toBe('v2');
    await expect(file.delete({ ifGenerationMatch: Number(meta.generation) })).rejects.toMatchObject({ code: 412 });
  });

  it('lists with prefix, delimiter and page tokens', async () => {
    const b = storage.bucket('listing-bucket');
    const names = ['a/1.txt', 'a/2.txt', 'a/3.txt', 'a/sub/4.txt', 'a/sub/5.txt', 'a/tub/6.txt', 'b/7.txt'];
    await Promise.all(names.map((n) => b.file(n).save(n, { resumable: false })));

    const seen: string[] = [];
    let pageToken: string | undefined;
    let pages = 0;
    do {
      const [files, next] = await b.getFiles({ prefix: 'a/', autoPaginate: false, maxResults: 2, pageToken });
      seen.push(...files.map((f) => f.name));
      pageToken = (next as { pageToken?: string } | null)?.pageToken;
      pages++;
    } while (pageToken);
    expect(seen).toEqual(names.filter((n) => n.startsWith('a/')));
    expect(pages).toBe(3);

    const [all] = await b.getFiles();
    expect(all.map((f) => f.name)).toEqual(names);

    const [top, , raw] = await b.getFiles({ prefix: 'a/', delimiter: '/', autoPaginate: false });
    expect(top.map((f) => f.name)).toEqual(['a/1.txt', 'a/2.txt', 'a/3.txt']);
    expect((raw as { prefixes?: string[] }).prefixes).toEqual(['a/sub/', 'a/tub/']);

    // Prefixes count toward a page too and are not repeated across pages.
    const entries: string[] = [];
    pageToken = undefined;
    do {
      const [files, next, resp]: [Array<{ name: string }>, unknown, unknown] = await b.getFiles({
        delimiter: '/',
        prefix: 'a/',
        autoPaginate: false,
        maxResults: 2,
        pageToken,
      });
      entries.push(...files.map((f) => f.name), ...((resp as { prefixes?: string[] }).prefixes ?? []));
      pageToken = (next as { pageToken?: string } | null)?.pageToken;
    } while (pageToken);
    expect(entries.sort()).toEqual(['a/1.txt', 'a/2.txt', 'a/3.txt', 'a/sub/', 'a/tub/']);

    await b.deleteFiles({ prefix: 'a/' });
    const [left] = await b.getFiles();
    expect(left.map((f) => f.name)).toEqual(['b/7.txt']);
  });

  it('copies and moves objects server-side', async () => {
    const data = bytesOf(2 * 1024 * 1024, 'copy');
    await upload(storage, bucket, 'copy/src.bin', data, false);
    const src = storage.bucket(bucket).file('copy/src.bin');
    await src.copy(storage.bucket('other-bucket').file('copy/dst.bin'));
    const [copied] = await storage.bucket('other-bucket').file('copy/dst.bin').download();
    expect(copied.equals(data)).toBe(true);
    await src.move('copy/moved.bin');
    expect((await src.exists())[0]).toBe(false);
    await storage.bucket(bucket).file('copy/moved.bin').moveFileAtomic('copy/atomic.bin');
    const [moved] = await storage.bucket(bucket).file('copy/atomic.bin').download();
    expect(moved.equals(data)).toBe(true);
    expect((await storage.bucket(bucket).file('copy/moved.bin').exists())[0]).toBe(false);
  });

  it('lets the object store abandon a read without breaking the reads beside it', async () => {
    const store = new ObjectStore({ bucket, projectId: 'test-project', apiEndpoint: gcs.url });
    const data = bytesOf(3 * 1024 * 1024, 'abandon');
    await store.save('abandon/big.bin', data, 'application/octet-stream');
    // A client gone mid-download, or a gallery page that has its images: the read stops early.
    const abandon = async () => {
      const stream = store.readStream('abandon/big.bin');
      for await (const _chunk of stream) break;
    };
    const whole = () => readAll(store.readStream('abandon/big.bin'));
    const results = await Promise.allSettled([
      ...Array.from({ length: 12 }, whole),
      ...Array.from({ length: 6 }, abandon),
    ]);
    const failed = results.filter((r) => r.status === 'rejected');
    expect(failed.map((r) => String((r as PromiseRejectedResult).reason))).toEqual([]);
    for (const r of results.slice(0, 12)) expect((r as PromiseFulfilledResult<Buffer>).value.equals(data)).toBe(true);
  });

  it('keeps objects across a restart', async () => {
    await storage.bucket(bucket).file('persist/me.txt').save('still here', { resumable: false });
    await gcs.close();
    gcs = await startGcsEmulator({ dataDir, port: 0 });
    storage = new Storage({ apiEndpoint: gcs.url, projectId: 'test-project' });
    const [content] = await storage.bucket(bucket).file('persist/me.txt').download();
    expect(content.toString()).toBe('still here');
  });
});
