import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import pg from 'pg';
import { sweep } from '../../src/pipeline/sweep.ts';
import { eventually, waitForBatch } from '../support/batches.ts';
import { call, form, imageLine, jsonl, PNG_1x1 } from '../support/http.ts';
import { startTestService, type TestService } from '../support/service.ts';

/**
 * Retention: every file has `expires_at`; past it the file answers 404 at once, and the sweep
 * deletes its objects and marks the row. The batch keeps its history; the input of an
 * unfinished batch waits for the batch.
 */
let svc: TestService;
let db: pg.Pool;
let user: { id: number; apiKey: string };

beforeAll(async () => {
  // A line marked [emulate:slow] keeps its Vertex job running for a minute.
  svc = await startTestService({ VERTEX_EMULATOR_SLOW_MS: '60000', FILE_RETENTION: '2d' });
  db = new pg.Pool({ connectionString: svc.databaseUrl, max: 2 });
  user = await svc.createUser(10_000_000);
});
afterAll(async () => {
  await db.end();
  await svc.stop();
});

const upload = (purpose: string, data: Buffer | string, filename: string) =>
  call(`${svc.url}/v1/files`, {
    method: 'POST',
    key: user.apiKey,
    body: form([
      ['purpose', purpose],
      ['file', { data, filename }],
    ]),
  });
const getFile = (id: string, suffix = '') => call(`${svc.url}/v1/files/${id}${suffix}`, { key: user.apiKey });
const expireNow = (id: string) =>
  db.query(`UPDATE files SET expires_at = now() - interval '1 second' WHERE id = $1`, [id]);
const objectKey = async (id: string) =>
  (await db.query('SELECT object_key FROM files WHERE id = $1', [id])).rows[0].object_key;

describe('file retention', () => {
  it('defaults: batch inputs and outputs live FILE_RETENTION, vision files until deleted', async () => {
    const input = await upload('batch', jsonl([imageLine('a')]), 'a.jsonl');
    expect(input.body.expires_at - input.body.created_at).toBe(2 * 86400);
    const vision = await upload('vision', PNG_1x1, 'v.png');
    expect(vision.body.expires_at).toBeNull();
  });

  it('an expired file answers 404 at once; the sweep removes its object; the batch keeps its history', async () => {
    const input = (await upload('batch', jsonl([imageLine('a')]), 'a.jsonl')).body;
    const created = await call(`${svc.url}/v1/batches`, {
      method: 'POST',
      key: user.apiKey,
      json: { input_file_id: input.id, endpoint: '/v1/images/generations', completion_window: '24h' },
    });
    const batch = await waitForBatch(svc, user.apiKey, created.body.id);
    expect(batch.status).toBe('completed');
    const outputKey = await objectKey(batch.output_file_id);
    expect(await svc.runtime.services.store.exists(outputKey)).toBe(true);

    await expireNow(batch.output_file_id);
    expect((await getFile(batch.output_file_id)).status).toBe(404);
    expect((await getFile(batch.output_file_id, '/content')).status).toBe(404);
    const listed = await call(`${svc.url}/v1/files?purpose=batch_output`, { key: user.apiKey });
    expect(listed.body.data.map((f: { id: string }) => f.id)).not.toContain(batch.output_file_id);

    await sweep(svc.runtime.services);
    expect(await svc.runtime.services.store.exists(outputKey)).toBe(false);
    const row = (await db.query('SELECT deleted_at FROM files WHERE id = $1', [batch.output_file_id])).rows[0];
    expect(row.deleted_at).not.toBeNull();
    const after = await call(`${svc.url}/v1/batches/${batch.id}`, { key: user.apiKey });
    expect(after.body).toMatchObject({ status: 'completed', output_file_id: batch.output_file_id });
    expect(after.body.request_counts).toEqual(batch.request_counts);
  }, 30_000);

  it('the input of an unfinished batch outlives its expiry until the batch has finished', async () => {
    const input = (await upload('batch', jsonl([imageLine('s', 'a slow cube [emulate:slow]')]), 's.jsonl')).body;
    const created = await call(`${svc.url}/v1/batches`, {
      method: 'POST',
      key: user.apiKey,
      json: { input_file_id: input.id, endpoint: '/v1/images/generations', completion_window: '24h' },
    });
    await waitForBatch(svc, user.apiKey, created.body.id, (b) => b.status === 'in_progress');
    await expireNow(input.id);
    await sweep(svc.runtime.services);
    expect(await svc.runtime.services.store.exists(await objectKey(input.id))).toBe(true);

    await call(`${svc.url}/v1/batches/${created.body.id}/cancel`, { method: 'POST', key: user.apiKey });
    const ended = await waitForBatch(svc, user.apiKey, created.body.id);
    expect(ended.status).toBe('cancelled');
    await sweep(svc.runtime.services);
    expect(await svc.runtime.services.store.exists(await objectKey(input.id))).toBe(false);
  }, 30_000);

  it('a deleted file takes the objects that go with it', async () => {
    const input = (await upload('batch', jsonl([imageLine('c')]), 'c.jsonl')).body;
    const key = await objectKey(input.id);
    const companion = `tenants/${user.id}/companions-${input.id}/`;
    await svc.runtime.services.store.writeStream(`${companion}one.png`, 'image/png').end(PNG_1x1);
    await db.query('UPDATE files SET companion_prefix = $2 WHERE id = $1', [input.id, companion]);
    await eventually(async () => ((await svc.runtime.services.store.list(companion)).length === 1 ? true : null));
    const deleted = await call(`${svc.url}/v1/files/${input.id}`, { method: 'DELETE', key: user.apiKey });
    expect(deleted.body).toEqual({ id: input.id, object: 'file', deleted: true });
    expect(await svc.runtime.services.store.exists(key)).toBe(false);
    expect(await svc.runtime.services.store.list(companion)).toEqual([]);
    expect((await call(`${svc.url}/v1/files/${input.id}`, { method: 'DELETE', key: user.apiKey })).status).toBe(404);
  });
});
