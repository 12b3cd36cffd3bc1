import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import pg from 'pg';
import { LinkSigner, linkSigningSecret } from '../../src/storage/signed-links.ts';
import { decodePng, download, uploadBatch, waitForBatch } from '../support/batches.ts';
import { call, expectEnvelope, imageLine } from '../support/http.ts';
import { createTestDatabase, startTestService, type TestService } from '../support/service.ts';

// Two lines per shard: the url and b64_json lines of one batch go through several Vertex jobs.
let svc: TestService;
let db: pg.Pool;
let user: { id: number; apiKey: string };
/** The finished batch of the first test, its output lines, and the output file's raw text. */
let batch: any;
let out: any[];
let rawLines: string[];

const PNG = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
const JPEG = Buffer.from([0xff, 0xd8, 0xff]);
const WEEK_SECONDS = 7 * 86_400;

beforeAll(async () => {
  svc = await startTestService({ SHARD_MAX_REQUESTS: '2' });
  db = new pg.Pool({ connectionString: svc.databaseUrl, max: 2 });
  user = await svc.createUser(1_000_000);
});
afterAll(async () => {
  await db?.end();
  await svc?.stop();
});

/** A link fetched the way a browser would: no Authorization header. */
async function fetchLink(url: string) {
  const res = await fetch(url);
  return { status: res.status, headers: res.headers, bytes: Buffer.from(await res.arrayBuffer()) };
}

async function expectRefused(url: string) {
  const a = await call(url);
  expect(a.status).toBe(403);
  const e = expectEnvelope(a);
  expect(e).toEqual({
    message: 'This link is invalid or has expired.',
    type: 'permission_error',
    code: 'invalid_link',
    param: null,
  });
}

/** The object key a link points at. */
const keyOf = (url: string) => decodeURIComponent(new URL(url).pathname.replace(/^\/links\//, ''));

describe('image links (response_format: url)', () => {
  it('runs a batch mixing url and b64_json lines: small url lines, links that serve the images without auth', async () => {
    const lines = [
      imageLine('b64-cube', 'a red cube'),
      imageLine('url-cube', 'a red cube', { response_format: 'url' }),
      imageLine('url-two', 'two blue spheres', { response_format: 'url', n: 2 }),
      imageLine('url-jpeg', 'a jpeg please', { response_format: 'url', output_format: 'jpeg' }),
      imageLine('url-fails', 'nothing [emulate:fail]', { response_format: 'url' }),
      imageLine('b64-explicit', 'a green pyramid', { response_format: 'b64_json' }),
    ];
    const created = await uploadBatch(svc, user.apiKey, lines);
    expect(created.status).toBe(200);
    batch = await waitForBatch(svc, user.apiKey, created.body.id);
    expect(batch.status).toBe('completed');
    expect(batch.request_counts).toEqual({ total: 6, completed: 5, failed: 1 });

    const content = await call(`${svc.url}/v1/files/${batch.output_file_id}/content`, { key: user.apiKey });
    rawLines = content.text.split('\n').filter(Boolean);
    out = await download(svc, user.apiKey, batch.output_file_id);
    expect(out.map((l) => l.custom_id)).toEqual(['b64-cube', 'url-cube', 'url-two', 'url-jpeg', 'b64-explicit']);
    const errors = await download(svc, user.apiKey, batch.error_file_id);
    expect(errors.map((l) => [l.custom_id, l.error.code])).toEqual([['url-fails', 'image_generation_failed']]);

    // b64_json lines as ever; url lines: same shape, links instead of bytes, well under 1 KB.
    for (const i of [0, 4]) expect(Object.keys(out[i].response.body.data[0])).toEqual(['b64_json']);
    for (const i of [1, 2, 3]) {
      const line = out[i];
      expect(line.id).toMatch(/^batch_req_/);
      expect(line.error).toBeNull();
      expect(line.response.status_code).toBe(200);
      expect(line.response.request_id).toBe(`vertex_${line.id}`);
      expect(line.response.body.usage.total_tokens).toBeGreaterThan(0);
      for (const d of line.response.body.data) {
        expect(Object.keys(d)).toEqual(['url']);
        expect(d.url.startsWith(`${svc.url}/links/tenants/${user.id}/batches/${batch.id}/images-`)).toBe(true);
      }
      expect(Buffer.byteLength(rawLines[i])).toBeLessThan(1024);
    }
    expect(Buffer.byteLength(rawLines[0])).toBeGreaterThan(10_000); // the inline image, for scale
    expect(out[2].response.body.data).toHaveLength(2);

    // Each link, without any Authorization header: the image, typed, cacheable until it expires.
    const cube = await fetchLink(out[1].response.body.data[0].url);
    expect(cube.status).toBe(200);
    expect(cube.headers.get('content-type')).toBe('image/png');
    expect(cube.headers.get('x-content-type-options')).toBe('nosniff');
    const maxAge = Number(/^private, max-age=(\d+)$/.exec(cube.headers.get('cache-control') ?? '')?.[1]);
    expect(maxAge).toBeGreaterThan(WEEK_SECONDS - 120);
    expect(maxAge).toBeLessThanOrEqual(WEEK_SECONDS);
    expect(Number(cube.headers.get('content-length'))).toBe(cube.bytes.length);
    expect(cube.bytes.subarray(0, 8)).toEqual(PNG);
    // The emulator makes the same bytes for the same prompt: exactly what the b64_json line carries.
    expect(cube.bytes.equals(Buffer.from(out[0].response.body.data[0].b64_json, 'base64'))).toBe(true);
    expect(decodePng(cube.bytes.toString('base64'))).toEqual({ width: 1024, height: 1024 });

    const two = await Promise.all(out[2].response.body.data.map((d: { url: string }) => fetchLink(d.url)));
    for (const image of two) {
      expect(image.status).toBe(200);
      expect(image.headers.get('content-type')).toBe('image/png');
      expect(decodePng(image.bytes.toString('base64'))).toEqual({ width: 1024, height: 1024 });
    }
    const jpeg = await fetchLink(out[3].response.body.data[0].url);
    expect(jpeg.status).toBe(200);
    expect(jpeg.headers.get('content-type')).toBe('image/jpeg');
    expect(jpeg.bytes.subarray(0, 3)).toEqual(JPEG);
    expect(keyOf(out[3].response.body.data[0].url)).toMatch(/\.jpg$/);

    // The link expires IMAGE_URL_TTL (7 days by default) after it was made.
    const expires = Number(new URL(out[1].response.body.data[0].url).searchParams.get('expires'));
    expect(Math.abs(expires - (Date.now() / 1000 + WEEK_SECONDS))).toBeLessThan(120);
  });

  it('keeps the images under the run’s own prefix, recorded as the output file’s companion objects', async () => {
    const { rows } = await db.query('SELECT companion_prefix FROM files WHERE id = $1', [batch.output_file_id]);
    const prefix: string = rows[0].companion_prefix;
    expect(prefix).toMatch(new RegExp(`^tenants/${user.id}/batches/${batch.id}/images-[a-z0-9]+/$`));
    const objects = await svc.runtime.services.store.list(prefix);
    const linked = out.flatMap((l) => l.response.body.data.filter((d: any) => d.url).map((d: any) => keyOf(d.url)));
    expect(linked).toHaveLength(4);
    expect(objects.map((o) => o.key).sort()).toEqual([...linked].sort());
    // Named after the output line and the image's index.
    expect(linked[1]).toBe(`${prefix}${out[2].id}-0.png`);
    expect(linked[2]).toBe(`${prefix}${out[2].id}-1.png`);
    const { rows: errorFile } = await db.query('SELECT companion_prefix FROM files WHERE id = $1', [
      batch.error_file_id,
    ]);
    expect(errorFile[0].companion_prefix).toBeNull();
  });

  it('answers 403 invalid_link, and nothing more, to a tampered or expired link', async () => {
    const url = out[1].response.body.data[0].url as string;
    const u = new URL(url);
    expect((await fetchLink(url)).status).toBe(200);
    const otherImage = new URL(url);
    otherImage.pathname = u.pathname.replace(/-0\.png$/, '-1.png');
    await expectRefused(otherImage.toString());
    const otherTenant = new URL(url);
    otherTenant.pathname = u.pathname.replace(`/tenants/${user.id}/`, `/tenants/${user.id + 1}/`);
    await expectRefused(otherTenant.toString());
    const later = new URL(url);
    later.searchParams.set('expires', String(Number(u.searchParams.get('expires')) + 86_400));
    await expectRefused(later.toString());
    const forged = new URL(url);
    const signature = u.searchParams.get('signature')!;
    forged.searchParams.set('signature', (signature[0] === 'A' ? 'B' : 'A') + signature.slice(1));
    await expectRefused(forged.toString());
    const bare = new URL(url);
    bare.search = '';
    await expectRefused(bare.toString());

    // Expired: signed as the gateway signs, with an expiry in the past.
    const links = svc.runtime.services.links;
    const past = Math.floor(Date.now() / 1000) - 1;
    await expectRefused(links.sign(keyOf(url), past));
    // Valid and not expired, but the image is gone: 404, not 403.
    const gone = await call(links.sign(`tenants/${user.id}/batches/${batch.id}/images-none/nothing-0.png`));
    expect(gone.status).toBe(404);
    expect(expectEnvelope(gone).code).toBe('file_not_found');
    // An API key changes nothing: the link is the credential.
    const withKey = await call(later.toString(), { key: user.apiKey });
    expect(withKey.status).toBe(403);
  });

  it('signs with one key per database, made once however many processes start at the same time', async () => {
    const { rows } = await db.query(`SELECT value FROM service_secrets WHERE name = 'image_link_signing_key'`);
    expect(rows).toHaveLength(1);
    const stored = rows[0].value as string;
    expect(stored.length).toBeGreaterThanOrEqual(32);
    // The key the running service signs with is the stored one.
    const url = out[1].response.body.data[0].url as string;
    const u = new URL(url);
    const check = new LinkSigner({ secret: stored, baseUrl: () => svc.url, ttlMs: 1000 });
    expect(check.verify(u.pathname, Object.fromEntries(u.searchParams))?.objectKey).toBe(keyOf(url));

    // A fresh database: concurrent first starts agree on one key.
    const fresh = new pg.Pool({ connectionString: await createTestDatabase(), max: 8 });
    try {
      const secrets = await Promise.all(Array.from({ length: 8 }, () => linkSigningSecret(fresh, null)));
      expect(new Set(secrets).size).toBe(1);
      expect(secrets[0]).not.toBe(stored);
      expect(await linkSigningSecret(fresh, null)).toBe(secrets[0]);
    } finally {
      await fresh.end();
    }
  });

  it('gives a worker-only process without PUBLIC_URL links to HOST:PORT, signed with the shared key', async () => {
    const worker = await startTestService({ ROLE: 'worker', PORT: '48123', DATABASE_URL: svc.databaseUrl });
    try {
      const key = keyOf(out[1].response.body.data[0].url);
      const link = worker.runtime.services.links.sign(key);
      expect(link.startsWith(`http://127.0.0.1:48123/links/${key}?expires=`)).toBe(true);
      // Served by the API process: same key, so the worker's link works there.
      const served = await fetchLink(link.replace('http://127.0.0.1:48123', svc.url));
      expect(served.status).toBe(200);
      expect(served.bytes.subarray(0, 8)).toEqual(PNG);
    } finally {
      await worker.stop();
    }
  });
});
