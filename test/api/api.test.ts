import { spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import pg from 'pg';
import { encodeJpeg } from '../../src/emulator/jpeg.ts';
import { encodeWebp } from '../../src/emulator/webp.ts';
import { call, expectEnvelope, form, imageLine, jsonl, PNG_1x1 } from '../support/http.ts';
import { ADMIN_TOKEN, startTestService, type TestService } from '../support/service.ts';

// ROLE=api: no pipeline workers, so batches stay where the API alone puts them.
let svc: TestService;
let db: pg.Pool;
let alice: { id: number; apiKey: string };
let bob: { id: number; apiKey: string };

beforeAll(async () => {
  svc = await startTestService({ ROLE: 'api' });
  db = new pg.Pool({ connectionString: svc.databaseUrl, max: 2 });
  alice = await svc.createUser(1_000_000);
  bob = await svc.createUser(500_000);
});
afterAll(async () => {
  await db?.end();
  await svc?.stop();
});

const upload = (key: string, fields: Parameters<typeof form>[0]) =>
  call(`${svc.url}/v1/image-files`, { method: 'POST', key, body: form(fields) });
const batchFile = (content: string) => ({ data: content, filename: 'batch.jsonl', type: 'application/jsonl' });
const createBatch = (key: string, lines = [imageLine('a')]) =>
  upload(key, [
    ['purpose', 'image_batch'],
    ['file', batchFile(jsonl(lines))],
  ]);

describe('authentication', () => {
  it('refuses a missing key with 401 in the envelope', async () => {
    const a = await call(`${svc.url}/v1/image-batches`);
    expect(a.status).toBe(401);
    expect(expectEnvelope(a).code).toBe('missing_api_key');
  });
  it('refuses a wrong key', async () => {
    const a = await call(`${svc.url}/v1/image-batches`, { key: 'sk-doesnotexist0000000000000000' });
    expect(a.status).toBe(401);
    expect(expectEnvelope(a).code).toBe('invalid_api_key');
  });
  it('refuses a revoked key', async () => {
    const u = await svc.createUser(0);
    const user = await svc.admin('GET', `/admin/users/${u.id}`);
    const keyId = user.body.api_keys[0].id;
    expect((await svc.admin('DELETE', `/admin/users/${u.id}/keys/${keyId}`)).status).toBe(200);
    const a = await call(`${svc.url}/v1/models`, { key: u.apiKey });
    expect(a.status).toBe(401);
    const fresh = await svc.admin('POST', `/admin/users/${u.id}/keys`);
    expect(fresh.status).toBe(201);
    expect((await call(`${svc.url}/v1/models`, { key: fresh.body.api_key })).status).toBe(200);
  });
  it('stores keys hashed only', async () => {
    const { rows } = await db.query('SELECT key_hash FROM api_keys');
    expect(rows.every((r) => !String(r.key_hash).startsWith('sk-'))).toBe(true);
  });
});

describe('privacy', () => {
  it('accepts once, idempotently, and says when', async () => {
    const u = await svc.createUser(0, { privacy: false });
    const before = await call(`${svc.url}/api/image-batch-privacy`, { key: u.apiKey });
    expect(before.body).toEqual({ accepted: false, accepted_at: null });
    const first = await call(`${svc.url}/api/image-batch-privacy`, {
      method: 'PUT',
      key: u.apiKey,
      json: { accept: true },
    });
    expect(first.body).toEqual({ success: true });
    const at = (await call(`${svc.url}/api/image-batch-privacy`, { key: u.apiKey })).body.accepted_at;
    await call(`${svc.url}/api/image-batch-privacy`, { method: 'PUT', key: u.apiKey, json: { accept: true } });
    const after = await call(`${svc.url}/api/image-batch-privacy`, { key: u.apiKey });
    expect(after.body).toEqual({ accepted: true, accepted_at: at });
  });
  it('refuses anything but accept: true', async () => {
    for (const json of [{}, { accept: false }, { accept: 'true' }]) {
      const a = await call(`${svc.url}/api/image-batch-privacy`, { method: 'PUT', key: alice.apiKey, json });
      expect(a.status).toBe(400);
      expect(expectEnvelope(a).param).toBe('accept');
    }
  });
  it('gates image_batch uploads with 403 privacy_not_accepted, storing nothing', async () => {
    const u = await svc.createUser(1000, { privacy: false });
    const a = await createBatch(u.apiKey);
    expect(a.status).toBe(403);
    expect(expectEnvelope(a).code).toBe('privacy_not_accepted');
    expect(await svc.runtime.services.store.list(`tenants/${u.id}/`)).toEqual([]);
    // the file part before the purpose field: refused after the upload, and removed again
    const late = await upload(u.apiKey, [
      ['file', batchFile(jsonl([imageLine('a')]))],
      ['purpose', 'image_batch'],
    ]);
    expect(late.status).toBe(403);
    expect(await svc.runtime.services.store.list(`tenants/${u.id}/`)).toEqual([]);
  });
});

describe('vision files', () => {
  it('stores a PNG and serves it back with Range support', async () => {
    const a = await upload(alice.apiKey, [
      ['purpose', 'vision'],
      ['file', { data: PNG_1x1, filename: 'ref.png', type: 'image/png' }],
    ]);
    expect(a.status).toBe(200);
    expect(a.body).toMatchObject({ object: 'file', purpose: 'vision', filename: 'ref.png', bytes: PNG_1x1.length });
    expect(a.body.id).toMatch(/^file_[A-Za-z0-9]{24,}$/);
    const meta = await call(`${svc.url}/v1/files/${a.body.id}`, { key: alice.apiKey });
    expect(meta.body.id).toBe(a.body.id);
    const res = await fetch(`${svc.url}/v1/files/${a.body.id}/content`, {
      headers: { authorization: `Bearer ${alice.apiKey}` },
    });
    expect(res.headers.get('content-type')).toBe('image/png');
    expect(res.headers.get('content-length')).toBe(String(PNG_1x1.length));
    expect(Buffer.from(await res.arrayBuffer()).equals(PNG_1x1)).toBe(true);
    const part = await fetch(`${svc.url}/v1/files/${a.body.id}/content`, {
      headers: { authorization: `Bearer ${alice.apiKey}`, range: 'bytes=1-3' },
    });
    expect(part.status).toBe(206);
    expect(part.headers.get('content-range')).toBe(`bytes 1-3/${PNG_1x1.length}`);
    expect(Buffer.from(await part.arrayBuffer()).equals(PNG_1x1.subarray(1, 4))).toBe(true);
    const bad = await call(`${svc.url}/v1/files/${a.body.id}/content`, {
      key: alice.apiKey,
      headers: { range: 'bytes=999-' },
    });
    expect(bad.status).toBe(416);
    expect(bad.headers.get('content-range')).toBe(`bytes */${PNG_1x1.length}`);
  });
  it('accepts JPEG and WebP by their content, whatever the declared type, and reads their size', async () => {
    const rgba = (width: number, height: number) => {
      const pixels = new Uint8ClampedArray(width * height * 4);
      for (let i = 0; i < pixels.length; i++) pixels[i] = i % 4 === 3 ? 255 : (i * 37) & 0xff;
      return pixels;
    };
    const jpeg = encodeJpeg(5, 3, rgba(5, 3), 80);
    const webp = await encodeWebp(7, 4, rgba(7, 4), 75);
    for (const [data, width, height] of [
      [jpeg, 5, 3],
      [webp, 7, 4],
    ] as const) {
      const a = await upload(alice.apiKey, [
        ['purpose', 'vision'],
        ['file', { data, filename: 'x.bin', type: 'application/octet-stream' }],
      ]);
      expect(a.status).toBe(200);
      expect(a.body).toMatchObject({ object: 'file', purpose: 'vision', bytes: data.length, width, height });
      const meta = await call(`${svc.url}/v1/files/${a.body.id}`, { key: alice.apiKey });
      expect(meta.body).toMatchObject({ width, height });
    }
  });
});

describe('batches', () => {
  it('creates a batch in validating with the full batch object', async () => {
    const a = await createBatch(alice.apiKey);
    expect(a.status).toBe(200);
    expect(a.body).toMatchObject({
      object: 'batch',
      status: 'validating',
      endpoint: '/v1/images/generations',
      output_file_id: null,
      error_file_id: null,
      errors: null,
      request_counts: { total: 0, completed: 0, failed: 0 },
      billing: { pre_deducted: 0, settled: null, refunded: null },
    });
    expect(a.body.id).toMatch(/^batch_[A-Za-z0-9]{24,}$/);
    expect(a.body.input_file_id).toMatch(/^file_/);
    for (const k of [
      'created_at',
      'in_progress_at',
      'finalizing_at',
      'completed_at',
      'failed_at',
      'expired_at',
      'cancelling_at',
      'cancelled_at',
      'expires_at',
      'metadata',
      'model',
    ]) {
      expect(a.body).toHaveProperty(k);
    }
    expect(a.body.expires_at - a.body.created_at).toBe(24 * 3600);
    const got = await call(`${svc.url}/v1/image-batches/${a.body.id}`, { key: alice.apiKey });
    expect(got.body).toEqual(a.body);
    const input = await call(`${svc.url}/v1/files/${a.body.input_file_id}`, { key: alice.apiKey });
    expect(input.body.purpose).toBe('image_batch');
  });
  it('keeps metadata', async () => {
    const a = await upload(alice.apiKey, [
      ['purpose', 'image_batch'],
      ['metadata', '{"project":"x"}'],
      ['file', batchFile(jsonl([imageLine('a')]))],
    ]);
    expect(a.body.metadata).toEqual({ project: 'x' });
  });
  it('lists newest first with cursor pagination and a status filter', async () => {
    const u = await svc.createUser(1000);
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await createBatch(u.apiKey)).body.id);
    const page1 = await call(`${svc.url}/v1/image-batches?limit=2`, { key: u.apiKey });
    expect(page1.body.object).toBe('list');
    expect(page1.body.data.map((b: { id: string }) => b.id)).toEqual([ids[4], ids[3]]);
    expect(page1.body).toMatchObject({ first_id: ids[4], last_id: ids[3], has_more: true });
    const page2 = await call(`${svc.url}/v1/image-batches?limit=2&after=${page1.body.last_id}`, { key: u.apiKey });
    expect(page2.body.data.map((b: { id: string }) => b.id)).toEqual([ids[2], ids[1]]);
    const page3 = await call(`${svc.url}/v1/image-batches?limit=2&after=${page2.body.last_id}`, { key: u.apiKey });
    expect(page3.body.data.map((b: { id: string }) => b.id)).toEqual([ids[0]]);
    expect(page3.body.has_more).toBe(false);
    const all = await call(`${svc.url}/v1/image-batches`, { key: u.apiKey });
    expect(all.body.data).toHaveLength(5);
    await call(`${svc.url}/v1/image-batches/${ids[2]}/cancel`, { method: 'POST', key: u.apiKey });
    const cancelled = await call(`${svc.url}/v1/image-batches?status=cancelled`, { key: u.apiKey });
    expect(cancelled.body.data.map((b: { id: string }) => b.id)).toEqual([ids[2]]);
    const empty = await call(`${svc.url}/v1/image-batches?status=completed`, { key: u.apiKey });
    expect(empty.body).toEqual({ object: 'list', data: [], first_id: null, last_id: null, has_more: false });
  });
  it('cancels a validating batch straight to cancelled, idempotently', async () => {
    const b = (await createBatch(alice.apiKey)).body;
    const a = await call(`${svc.url}/v1/image-batches/${b.id}/cancel`, { method: 'POST', key: alice.apiKey });
    expect(a.status).toBe(200);
    expect(a.body.status).toBe('cancelled');
    expect(a.body.cancelled_at).not.toBeNull();
    expect(a.body.billing).toEqual({ pre_deducted: 0, settled: 0, refunded: 0 });
    const again = await call(`${svc.url}/v1/image-batches/${b.id}/cancel`, { method: 'POST', key: alice.apiKey });
    expect(again.body.status).toBe('cancelled');
  });
  it('refuses to delete an unfinished batch (409) and deletes a finished one with its files', async () => {
    const b = (await createBatch(alice.apiKey)).body;
    const early = await call(`${svc.url}/v1/image-batches/${b.id}`, { method: 'DELETE', key: alice.apiKey });
    expect(early.status).toBe(409);
    expect(expectEnvelope(early).code).toBe('batch_not_finished');
    await call(`${svc.url}/v1/image-batches/${b.id}/cancel`, { method: 'POST', key: alice.apiKey });
    const { rows } = await db.query('SELECT object_key FROM files WHERE id = $1', [b.input_file_id]);
    expect(await svc.runtime.services.store.exists(rows[0].object_key)).toBe(true);
    const del = await call(`${svc.url}/v1/image-batches/${b.id}`, { method: 'DELETE', key: alice.apiKey });
    expect(del.body).toEqual({ id: b.id, object: 'batch.deleted', deleted: true });
    expect((await call(`${svc.url}/v1/image-batches/${b.id}`, { key: alice.apiKey })).status).toBe(404);
    expect((await call(`${svc.url}/v1/files/${b.input_file_id}`, { key: alice.apiKey })).status).toBe(404);
    expect(await svc.runtime.services.store.exists(rows[0].object_key)).toBe(false);
    expect((await call(`${svc.url}/v1/image-batches/${b.id}`, { method: 'DELETE', key: alice.apiKey })).status).toBe(
      404,
    );
  });
});

describe('tenancy', () => {
  it("answers 404 for another user's batch and file on every endpoint", async () => {
    const b = (await createBatch(alice.apiKey)).body;
    const f = (
      await upload(alice.apiKey, [
        ['purpose', 'vision'],
        ['file', { data: PNG_1x1, filename: 'a.png' }],
      ])
    ).body;
    const attempts = [
      call(`${svc.url}/v1/image-batches/${b.id}`, { key: bob.apiKey }),
      call(`${svc.url}/v1/image-batches/${b.id}/cancel`, { method: 'POST', key: bob.apiKey }),
      call(`${svc.url}/v1/image-batches/${b.id}`, { method: 'DELETE', key: bob.apiKey }),
      call(`${svc.url}/v1/files/${f.id}`, { key: bob.apiKey }),
      call(`${svc.url}/v1/files/${f.id}/content`, { key: bob.apiKey }),
      call(`${svc.url}/v1/files/${b.input_file_id}/content`, { key: bob.apiKey }),
    ];
    for (const a of await Promise.all(attempts)) {
      expect(a.status).toBe(404);
      expect(expectEnvelope(a).type).toBe('not_found_error');
    }
    const list = await call(`${svc.url}/v1/image-batches?after=${b.id}`, { key: bob.apiKey });
    expect(list.status).toBe(400);
    const bobs = await call(`${svc.url}/v1/image-batches`, { key: bob.apiKey });
    expect(bobs.body.data.find((x: { id: string }) => x.id === b.id)).toBeUndefined();
    // still Alice's, untouched
    expect((await call(`${svc.url}/v1/image-batches/${b.id}`, { key: alice.apiKey })).body.status).toBe('validating');
  });
  it('prefixes object keys by tenant', async () => {
    const { rows } = await db.query('SELECT user_id, object_key FROM files');
    expect(rows.length).toBeGreaterThan(0);
    for (const r of rows) expect(r.object_key.startsWith(`tenants/${r.user_id}/`)).toBe(true);
  });
});

describe('models', () => {
  it('lists the Gemini image models with prices', async () => {
    const a = await call(`${svc.url}/v1/models`, { key: alice.apiKey });
    const flash = a.body.data.find((m: { id: string }) => m.id === 'gemini-2.5-flash-image');
    expect(flash).toMatchObject({ object: 'model', vertex_model: 'publishers/google/models/gemini-2.5-flash-image' });
    expect(flash.pricing).toEqual({
      unit: 'quota_per_image',
      sync: { '1K': 5000, '2K': 5000, '4K': 12500 },
      batch_ratio: 0.5,
    });
  });
  it('are editable through the admin API', async () => {
    const put = await svc.admin('PUT', '/admin/models/test-image-model', {
      price_multiplier: 1.5,
      batch_ratio: 0.4,
      image_sizes: ['1K', '4K'],
    });
    expect(put.status).toBe(200);
    expect(put.body.pricing).toEqual({
      unit: 'quota_per_image',
      sync: { '1K': 7500, '2K': 7500, '4K': 18750 },
      batch_ratio: 0.4,
    });
    const off = await svc.admin('PUT', '/admin/models/test-image-model', { enabled: false });
    expect(off.body.enabled).toBe(false);
    const listed = await call(`${svc.url}/v1/models`, { key: alice.apiKey });
    expect(listed.body.data.map((m: { id: string }) => m.id)).not.toContain('test-image-model');
  });
});

describe('admin and the ledger', () => {
  it('creates users with keys, tops up, and logs every change', async () => {
    const created = await svc.admin('POST', '/admin/users', { name: 'carol', quota: 1000 });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ name: 'carol', quota: 1000, used_quota: 0 });
    expect(created.body.api_key).toMatch(/^sk-/);
    const id = created.body.id;
    for (const q of [250, 1, 99_999])
      expect((await svc.admin('POST', `/admin/users/${id}/topup`, { quota: q })).status).toBe(200);
    const user = await svc.admin('GET', `/admin/users/${id}`);
    expect(user.body.quota).toBe(1000 + 250 + 1 + 99_999);
    const logs = await svc.admin('GET', `/admin/logs?user_id=${id}`);
    expect(logs.body.data.map((l: { type: string }) => l.type)).toEqual(['topup', 'topup', 'topup', 'topup']);
    const sum = logs.body.data.reduce((s: number, l: { quota_delta: number }) => s + l.quota_delta, 0);
    expect(sum).toBe(user.body.quota); // started at 0: quota change = Σ log deltas
  });
  it('keeps the invariant under concurrent top-ups', async () => {
    const { body } = await svc.admin('POST', '/admin/users', { name: 'dave', quota: 0 });
    await Promise.all(
      Array.from({ length: 20 }, (_, i) => svc.admin('POST', `/admin/users/${body.id}/topup`, { quota: i + 1 })),
    );
    const { rows } = await db.query(
      'SELECT u.quota, (SELECT sum(quota_delta) FROM billing_logs WHERE user_id = u.id)::bigint AS s FROM users u WHERE id = $1',
      [body.id],
    );
    expect(rows[0].quota).toBe(210);
    expect(Number(rows[0].s)).toBe(210);
  });
  it('has a CLI over the admin API', async () => {
    const run = (...args: string[]) =>
      new Promise<{ code: number | null; out: string }>((resolve) => {
        const child = spawn(process.execPath, ['scripts/admin.ts', ...args], {
          env: { ...process.env, GATEWAY_URL: svc.url, ADMIN_TOKEN },
        });
        let out = '';
        child.stdout.on('data', (d) => (out += d));
        child.on('close', (code) => resolve({ code, out }));
      });
    const created = await run('create-user', 'erin', '700');
    expect(created.code).toBe(0);
    const user = JSON.parse(created.out);
    expect(user).toMatchObject({ name: 'erin', quota: 700 });
    expect((await run('topup', String(user.id), '300')).code).toBe(0);
    expect(JSON.parse((await run('user', String(user.id))).out).quota).toBe(1000);
    const logs = JSON.parse((await run('logs', String(user.id))).out);
    expect(logs.data.map((l: { quota_delta: number }) => l.quota_delta)).toEqual([700, 300]);
    expect((await run('topup', String(user.id), '-1')).code).toBe(1);
  });

  it('guards the admin API with ADMIN_TOKEN', async () => {
    const none = await call(`${svc.url}/admin/users/1`);
    expect(none.status).toBe(401);
    const wrong = await call(`${svc.url}/admin/users/1`, { key: 'not-the-token-at-all' });
    expect(wrong.status).toBe(401);
    expect(expectEnvelope(wrong).code).toBe('invalid_admin_token');
    const ok = await call(`${svc.url}/admin/users/1`, { key: ADMIN_TOKEN });
    expect(ok.status).toBe(200);
  });
});
